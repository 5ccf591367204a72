"""Byte-identity guard: 50 fixed configurations (attention and hybrid, every layout,
block-size relation and conv strategy) plan and lower to exactly the bytes recorded
before the architecture rework (`tests/data/plan_digests.json`, see `plan_digests.py`)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from plan_digests import configurations, digests

RECORDED = json.loads((Path(__file__).parents[1] / "data" / "plan_digests.json").read_text())
NOW = digests()


def test_every_recorded_configuration_is_still_planned():
    assert sorted(NOW) == sorted(RECORDED) and len(RECORDED) == len(configurations()) == 50


@pytest.mark.parametrize("name", sorted(RECORDED))
def test_plan_and_lowered_requests_are_byte_identical(name):
    assert NOW[name] == RECORDED[name]
