"""Push as the inverse of pull: `plan.writes(r)` is every decode rank's reads sourced by
prefill rank r, and `lower_push(r, ...)` a request's rows sourced by r, so the pushes
of all prefill ranks hold exactly the rows of all pulls and deliver the request byte for
byte (the identity oracle), for attention and hybrid plans without local steps."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kvplan import AttentionSpec, EngineSpec, ModelSpec, RankError, SpecError, plan
from kvplan.testing.oracle import check_delivery, request_memories
from kvplan.testing.strategies import engine_pairs, group_requests, hybrid_engine_pairs, requests

NUM_BLOCKS = 40
COLUMNS = ("src_rank", "src_region", "src_offset", "dst_region", "dst_offset", "nbytes")
TABLE_COLUMNS = (*COLUMNS, "layer", "component", "src_block", "dst_block")


def _rows(tables, columns) -> list[tuple]:
    return sorted(row for t in tables for row in zip(*(getattr(t, c).tolist() for c in columns), strict=True))


@settings(max_examples=settings().max_examples // 3)  # a third of the profile: each example lowers every rank
@given(st.data())
def test_pushes_of_every_prefill_rank_are_the_pulls_of_every_decode_rank(data):
    hybrid = data.draw(st.booleans(), label="hybrid")
    src, dst = data.draw(hybrid_engine_pairs() if hybrid else engine_pairs(), label="engines")
    p = plan(src, dst)  # direct conv strategy: no local steps
    src_blocks, dst_blocks = data.draw((group_requests if hybrid else requests)(src, dst, num_blocks=NUM_BLOCKS),
                                       label="request")
    writes = [p.writes(r) for r in range(src.world_size)]
    pushes = [p.lower_push(r, src_blocks, dst_blocks) for r in range(src.world_size)]
    for d in range(dst.world_size):
        # the plan's two views: decode rank d's reads are the union of what each prefill rank writes to it
        assert _rows([w[d] for w in writes], TABLE_COLUMNS) == _rows([p.reads(d)], TABLE_COLUMNS)
        pushed = [push[d] for push in pushes]
        assert all(set(t.src_rank.tolist()) <= {r} for r, t in enumerate(pushed))
        assert _rows(pushed, COLUMNS) == _rows([p.lower(d, src_blocks, dst_blocks)], COLUMNS)
        # written by each prefill rank in turn, they deliver decode rank d's request
        check_delivery(pushed, *request_memories(src, dst, d, src_blocks, dst_blocks, NUM_BLOCKS))


def test_push_views_refuse_bad_ranks_and_plans_with_local_steps():
    m = ModelSpec(name="m", layers=(AttentionSpec(num_kv_heads=8, head_dim=128),))
    src, dst = EngineSpec(model=m, tp=2), EngineSpec(model=m, tp=4)
    p = plan(src, dst)
    for bad in (2, -1, "0", 1.0, True, None):
        with pytest.raises(RankError, match="src_rank"):
            p.writes(bad)
        with pytest.raises(RankError, match="src_rank"):
            p.lower_push(bad, [1], [2])
    with pytest.raises(SpecError, match="local steps"):
        plan(src, dst, transfer_strategy="bounce").lower_push(0, [1], [2])
    # a layer range streams a push like a pull
    assert [len(t) for t in p.lower_push(1, [7, 8], [40, 41], layers=range(0, 1))] == [0, 0, 2, 2]
