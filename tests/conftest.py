"""Test configuration: hypothesis profiles and GPU gating.

Profiles. The default, "ci", runs every property suite derandomized (a fixed seed) at
150 examples per test (300 for the two every-plan tests), so the README's test command
stays within a few minutes on two cores. "full" is the same seed at 1,000 (2,000
configurations for the every-plan tests); CI runs it over tests/plan and tests/core
after the README command. HYPOTHESIS_PROFILE=dev is quick and random, for local work.
GPU tests (markers gpu / multi_gpu) skip without CUDA devices, and fail instead when
KVPLAN_REQUIRE_GPU=1 so a GPU host cannot pass them silently.
"""

from __future__ import annotations

import functools
import os

import pytest
from hypothesis import HealthCheck, settings

_QUIET = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
_SEEDED = dict(derandomize=True, print_blob=True, **_QUIET)
settings.register_profile("ci", max_examples=150, **_SEEDED)
settings.register_profile("full", max_examples=1000, **_SEEDED)
settings.register_profile("dev", max_examples=150, **_QUIET)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


@functools.cache
def _cuda_devices() -> int:
    try:
        import cupy

        return cupy.cuda.runtime.getDeviceCount()
    except Exception:  # no cupy, no driver, no device: all mean zero usable GPUs
        return 0


NEEDS = {"gpu": 1, "multi_gpu": 2}


def pytest_runtest_setup(item):
    """A GPU test without its GPUs skips, or fails under KVPLAN_REQUIRE_GPU=1 (so a GPU
    host cannot pass it silently)."""
    need = max((n for marker, n in NEEDS.items() if marker in item.keywords), default=0)
    have = _cuda_devices() if need else 0
    if need > have:
        reason = f"needs {need} CUDA device(s), found {have}"
        if os.environ.get("KVPLAN_REQUIRE_GPU") == "1":
            pytest.fail(f"KVPLAN_REQUIRE_GPU=1 but the test {reason}")
        pytest.skip(reason)
