"""Bounce plans through every CPU backend: pack on the prefill ranks, one copy per
(layer, source rank), unpack on the decode rank leave the decode pages exactly as the
direct plan's rows copied by plain slicing do, request after request of one `Prepared`
and through plain `execute(transfer)`, dense and hybrid models."""

from __future__ import annotations

import numpy as np
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


def _check(kind, case, push: bool = False, apart: bool = False, ring=None):
    p, dst_rank, reqs = case
    assert p.transfer_strategy == "bounce"
    want = sliced(plan(p.src, p.dst), dst_rank, reqs)  # the direct plan, copied by slicing
    options = {"push": True} if push else None
    got = run(kind, p, dst_rank, reqs, tag=f"bounce-{kind}", options=options, source_options=options, apart=apart,
              ring=ring)
    for snapshots in (got.prepared, got.transfer) if ring is None else (got.prepared,):
        assert len(snapshots) == len(want)
        for have, expect in zip(_pages(p, snapshots), want, strict=True):
            assert all((a is None and b is None) or (a == b).all() for a, b in zip(have, expect, strict=True))
    # pack and unpack ran from step templates (only block ids per request); with push the
    # prefill ranks wrote the copies; one-sided reads keep a request's copies per shape
    pulled = "lowered reads, step templates" if kind == "ucx" else "kept reads, step templates"
    routes = ("staging ring, pushed", "staging ring") if ring else ("pushed, step templates", pulled)
    assert set(got.routes) == {routes[0] if push else routes[1]}
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


@settings(max_examples=10)
@given(data=st.data())
def test_nixl_push_writes_bounce_copies_from_the_prefill_side(data):
    need("nixl")
    case = data.draw(st.one_of(bounce_sessions(), hybrid_sessions("direct", "bounce")), label="session")
    _check("nixl", case, push=True)


def test_nixl_push_from_another_process():
    need("nixl")
    from kvplan import AttentionSpec, EngineSpec, ModelSpec

    m = ModelSpec(name="m", layers=(AttentionSpec(num_kv_heads=4, head_dim=8),) * 3)
    p = plan(EngineSpec(model=m, tp=2, num_blocks=16), EngineSpec(model=m, tp=4, num_blocks=16),
             transfer_strategy="bounce")
    _check("nixl", (p, 3, [([5, 2, 9], [1, 0, 7]), ([11], [3]), ([4, 8], [15, 6])]), push=True, apart=True)


@pytest.mark.parametrize("push", [False, True])
@settings(max_examples=6)
@given(data=st.data())
def test_nixl_staging_ring_moves_requests_longer_than_the_ring(push, data):
    """Pull and push through rings of 1 - 3 slots of 1 - 3 spans: longer requests reuse
    slots; the staging registered is the ring's, and every page matches (the property
    suite, tests/plan/test_ring.py, covers the chunking itself on many more requests)."""
    from kvplan.lowering import StagingRing

    need("nixl")
    case = data.draw(st.one_of(bounce_sessions(), hybrid_sessions("direct", "bounce")), label="session")
    ring = StagingRing(chunk_spans=data.draw(st.integers(1, 3), label="chunk_spans"),
                       slots=data.draw(st.integers(1, 3), label="slots"))
    _check("nixl", case, push=push, ring=ring)


@pytest.mark.parametrize("push", [False, True])
def test_nixl_staging_ring_from_another_process(push):
    from kvplan import AttentionSpec, EngineSpec, ModelSpec
    from kvplan.lowering import StagingRing

    need("nixl")
    m = ModelSpec(name="m", layers=(AttentionSpec(num_kv_heads=4, head_dim=8),) * 3)
    p = plan(EngineSpec(model=m, tp=2, num_blocks=16), EngineSpec(model=m, tp=4, num_blocks=16),
             transfer_strategy="bounce")
    reqs = [([5, 2, 9, 12, 0, 1, 3], [1, 0, 7, 8, 9, 10, 11]), ([11], [3]), ([4, 8, 6, 7, 13], [15, 6, 2, 3, 4])]
    _check("nixl", (p, 3, reqs), push=push, apart=True, ring=StagingRing(chunk_spans=2, slots=2))


@pytest.mark.parametrize("kind", ["host", "ucx"])
def test_a_staging_ring_needs_a_transport_whose_ranks_notify_each_other(kind):
    from kvplan import AttentionSpec, EngineSpec, ModelSpec, SpecError
    from kvplan.lowering import StagingRing
    from kvplan.transport import load_backend

    need(kind)
    m = ModelSpec(name="m", layers=(AttentionSpec(num_kv_heads=4, head_dim=8),))
    p = plan(EngineSpec(model=m, num_blocks=8), EngineSpec(model=m, num_blocks=8), transfer_strategy="bounce")
    backend = load_backend(kind)
    try:
        backend.register([np.zeros(1024, np.uint8)], rank=0)
        with pytest.raises(SpecError, match="staging ring"):
            backend.prepare(p, 0, ring=StagingRing(chunk_spans=1, slots=2))
        with pytest.raises(SpecError, match="StagingRing"):
            backend.prepare(p, 0, ring=(1, 2))
    finally:
        backend.close()


@pytest.mark.parametrize("kind", ["host", "nixl", "ucx"])
def test_staging_too_small_for_a_request_is_refused_before_any_byte_moves(kind):
    import numpy as np

    from kvplan import AttentionSpec, BoundsError, EngineSpec, ModelSpec
    from kvplan.lowering import scratch_buffer_bytes
    from kvplan.transport import load_backend

    from _pairing import allocate

    need(kind)
    m = ModelSpec(name="m", layers=(AttentionSpec(num_kv_heads=4, head_dim=8),) * 2)
    p = plan(EngineSpec(model=m, tp=2, num_blocks=8), EngineSpec(model=m, num_blocks=8), transfer_strategy="bounce")
    request = ([3, 1, 6], [0, 2, 5])
    # staging one byte short of what the 3-block request packs
    extra = tuple(max(n - 1, 0) for n in scratch_buffer_bytes(p, [p.lower(0, *request)])[0])
    buffers = allocate(p.src, 0, extra=extra)
    before = [None if b is None else b.copy() for b in buffers]
    backend = load_backend(kind)
    try:
        backend.register(buffers, rank=0)
        with pytest.raises(BoundsError, match="scratch region"):
            backend.serve(backend.prepare(p, 0), *request, rank=0)
    finally:
        backend.close()
    assert all((a is None and b is None) or np.array_equal(a, b) for a, b in zip(buffers, before, strict=True))
