"""A bounce request through a bounded staging ring (`kvplan.lowering.ring`): chunk by
chunk, slots reused, it delivers exactly what the request must, and never touches
staging past the ring's bytes."""

from __future__ import annotations

import attrs
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kvplan import AttentionSpec, EngineSpec, ModelSpec, SpecError, Transfer, plan
from kvplan.lowering import (RingCopies, StagingRing, copy_template, expand_step, request_blocks, ring_buffer_bytes,
                             ring_chunks, staging_ring)
from kvplan.testing.oracle import check_delivery, request_memories
from kvplan.testing.strategies import engine_pairs, group_requests, hybrid_engine_pairs, requests

NUM_BLOCKS = 40


def _draw_request(data):
    src, dst = data.draw(st.one_of(engine_pairs(), hybrid_engine_pairs()), label="engines")
    p = plan(src, dst, transfer_strategy="bounce")
    dst_rank = data.draw(st.integers(0, dst.world_size - 1), label="dst_rank")
    hybrid = len(src.layer_groups) > 1 or not all(s.holds_tokens for s in src.model.layers)
    ids = data.draw((group_requests if hybrid else requests)(src, dst, num_blocks=NUM_BLOCKS), label="request")
    return p, dst_rank, ids


def _steps(p, dst_rank: int, chunk, first_position: int) -> tuple[Transfer, Transfer]:
    """A chunk's pack (every prefill rank) and unpack, evaluated from the step templates."""
    def step(name, regions, ranks):
        parts = [expand_step(copy_template(p, dst_rank, step=name, src_rank=r), chunk, name,
                             first_position=first_position) for r in ranks]
        cols = {k: np.concatenate([part[k] for part in parts]) for k in parts[0]}
        if name == "post":
            cols["src_rank"] = np.full(len(cols["nbytes"]), dst_rank)
        return Transfer(dst_rank=dst_rank, **cols, src_regions=regions, dst_regions=regions)

    return step("pre", p.src_regions, range(p.src.world_size)), step("post", p.dst_regions, [None])


@settings(max_examples=settings().max_examples // 3)  # chunk by chunk through the oracle: slow
@given(st.data())
def test_a_request_through_a_staging_ring_delivers_exactly_the_expected_bytes(data):
    p, dst_rank, (src_blocks, dst_blocks) = _draw_request(data)
    ring = StagingRing(chunk_spans=data.draw(st.integers(1, 4), label="chunk_spans"),
                       slots=data.draw(st.integers(1, 3), label="slots"))
    blocks = request_blocks(p, dst_rank, src_blocks, dst_blocks)
    copies = RingCopies(p, dst_rank)
    chunks = []
    for j, chunk in enumerate(ring_chunks(p, blocks, ring)):
        pre, post = _steps(p, dst_rank, chunk, ring.slot_position(j))
        chunks.append(attrs.evolve(copies.chunk(chunk, first_position=ring.slot_position(j)),
                                   pre_steps=pre, post_steps=post))
    assert len(chunks) == max((-(-s // ring.chunk_spans) for s in blocks.spans), default=0)
    if not chunks:
        return
    # run one after the other on one set of memories: a reused slot is overwritten
    check_delivery(chunks, *request_memories(p.src, p.dst, dst_rank, src_blocks, dst_blocks, NUM_BLOCKS))
    # staging stays inside the ring whatever the request's length
    first_src, first_dst = len(p.src_regions) - len(p.src_scratch), len(p.dst_regions) - len(p.dst_scratch)
    src_ring, dst_ring = ring_buffer_bytes(p, ring, dst_rank)  # only what this decode rank uses
    for t in chunks:
        used_src, used_dst = t.scratch_bytes()
        assert all(size <= src_ring[region - first_src] for region, size in used_src.items())
        assert all(size <= dst_ring[region - first_dst] for region, size in used_dst.items())


@settings(max_examples=settings().max_examples // 3)
@given(st.data())
def test_ring_copies_of_a_whole_request_equal_the_lowered_copies(data):
    """One chunk holding the whole request at position 0 is the request's lowered reads."""
    p, dst_rank, (src_blocks, dst_blocks) = _draw_request(data)
    lowered = p.lower(dst_rank, src_blocks, dst_blocks)
    made = RingCopies(p, dst_rank).chunk(request_blocks(p, dst_rank, src_blocks, dst_blocks))
    names = ("src_rank", "src_region", "src_offset", "dst_region", "dst_offset", "nbytes")

    def rows(t):
        return sorted(zip(*(getattr(t, n).tolist() for n in names), strict=True))

    assert rows(made) == rows(lowered)


def test_staging_ring_sizes_chunks_from_the_largest_pair():
    # 8 KV heads of 128 (bf16), 16-token blocks, P TP 2 -> D TP 4: a pair moves 2 heads
    # of K and V per layer and span = 16 x 128 x 2 B x 2 x 2 = 16 KiB, x 4 layers
    m = ModelSpec(name="m", layers=(AttentionSpec(num_kv_heads=8, head_dim=128),) * 4)
    p = plan(EngineSpec(model=m, tp=2), EngineSpec(model=m, tp=4), transfer_strategy="bounce")
    assert staging_ring(p, chunk_bytes=1 << 20).chunk_spans == (1 << 20) // (4 * 16384)
    assert staging_ring(p, chunk_bytes=1).chunk_spans == 1  # at least one span
    ring = staging_ring(p, chunk_bytes=256 * 1024, slots=3)
    # every staging area holds 3 slots x 4 spans of its 16 KiB per span
    assert set(ring_buffer_bytes(p, ring)[0]) == {3 * 4 * 16384}
    with pytest.raises(SpecError, match="transfer_strategy='bounce'"):
        staging_ring(plan(EngineSpec(model=m, tp=2), EngineSpec(model=m, tp=4)), chunk_bytes=1 << 20)
    for bad in (0, -1, 2.5, True, "4"):
        with pytest.raises(SpecError):
            StagingRing(chunk_spans=bad, slots=2)
        with pytest.raises(SpecError):
            staging_ring(p, chunk_bytes=1 << 20, slots=bad)
