"""Bounce plans through every CPU backend: pack on the prefill ranks, one copy per
(layer, source rank), unpack on the decode rank leave the decode pages exactly as the
direct plan's rows copied by plain slicing do, request after request of one `Prepared`
and through plain `execute(transfer)`, dense and hybrid models."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kvplan import plan

from _fabric import bounce_sessions, hybrid_sessions, run, sliced
from _need import need


def _pages(p, snapshots) -> list:
    """The decode engine's own regions of each snapshot (staging left out)."""
    own = len(p.dst_regions) - len(p.dst_scratch)
    return [s[:own] for s in snapshots]


def _check(kind, case):
    p, dst_rank, reqs = case
    assert p.transfer_strategy == "bounce"
    want = sliced(plan(p.src, p.dst), dst_rank, reqs)  # the direct plan, copied by slicing
    got = run(kind, p, dst_rank, reqs, tag=f"bounce-{kind}")
    for snapshots in (got.prepared, got.transfer):
        assert len(snapshots) == len(want)
        for have, expect in zip(_pages(p, snapshots), want, strict=True):
            assert all((a is None and b is None) or (a == b).all() for a, b in zip(have, expect, strict=True))
    # a request's copies are one row per (layer, source rank): far fewer than its runs
    for req in reqs:
        bounce, direct = p.lower(dst_rank, *req), plan(p.src, p.dst).lower(dst_rank, *req)
        layers = len(set(p.reads(dst_rank).layer.tolist()))
        assert len(bounce) <= layers * max(len(bounce.source_ranks), 1) <= max(len(direct), 1) * len(p.src_regions)


@pytest.mark.parametrize("kind", ["host", "nixl", "ucx"])
@settings(max_examples=15)
@given(data=st.data())
def test_bounce_sessions_match_the_direct_plan(kind, data):
    need(kind)
    _check(kind, data.draw(bounce_sessions(), label="session"))


@pytest.mark.parametrize("kind", ["host", "nixl", "ucx"])
@settings(max_examples=8)
@given(data=st.data())
def test_hybrid_bounce_sessions_match_the_direct_plan(kind, data):
    need(kind)
    _check(kind, data.draw(hybrid_sessions("direct", "bounce"), label="session"))
