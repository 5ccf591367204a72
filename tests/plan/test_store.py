"""A canonical, TP-independent store layout (`StoreSpec`): plans into and out of a store
verify, and a request written by one engine into the store and read from it by another
lands exactly as the direct engine-to-engine plan puts it (the identity oracle, byte for
byte, every decode rank), for attention and hybrid models, any TP, layouts and block
sizes on either side, vLLM-style pooled groups included."""

from __future__ import annotations

import math

import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st

from kvplan import AttentionSpec, EngineSpec, ModelSpec, PlanError, SpecError, StoreSpec, plan, verify
from kvplan.testing.oracle import apply, check_delivery, request_memories
from kvplan.testing.strategies import engine_pairs, hybrid_engine_pairs

NUM_BLOCKS = 48


@st.composite
def _three_way(draw, engines):
    """Per-group block lists for several engines covering the same tokens: a whole
    number of every engine's blocks (so no engine holds tokens another lacks), ids
    distinct across groups."""
    first = engines[0]
    pools = [list(draw(st.permutations(range(NUM_BLOCKS)), label=f"pool{i}")) for i in range(len(engines))]
    budget = NUM_BLOCKS // len(first.layer_groups)
    lists = [[] for _ in engines]
    for g in range(len(first.layer_groups)):
        if first.group_is_token(g):
            sizes = [e.group_block_tokens(g)[0] for e in engines]
            unit = math.lcm(*sizes)
            most = budget * min(sizes) // unit
            if most < 1:
                return None
            tokens = unit * draw(st.integers(1, most), label=f"units{g}")
            counts = [tokens // s for s in sizes]
        else:
            counts = [draw(st.integers(1, 2), label=f"states{g}")] * len(engines)
        for i, n in enumerate(counts):
            lists[i].append(pools[i][g * budget:g * budget + n])
    return lists


@settings(max_examples=settings().max_examples // 6, deadline=None)
@given(data=st.data())
def test_engine_to_store_to_engine_equals_engine_to_engine(data):
    hybrid = data.draw(st.booleans(), label="hybrid")
    a, b = data.draw(hybrid_engine_pairs() if hybrid else engine_pairs(), label="engines")
    store = StoreSpec.like(a, block_tokens=data.draw(st.sampled_from([4, 8, 16, 32, 64]), label="store_blocks"))
    into = plan(a, store)
    try:
        out_of = plan(store, b)
    except PlanError as error:  # a sliding window the store's blocks do not keep for b
        assert "sliding window" in str(error)
        event("refused: window")
        return
    verify(into)
    verify(out_of)
    lists = data.draw(_three_way([a, store.engine, b]), label="request")
    if lists is None:
        event("no request fits the block budget")
        return
    a_blocks, s_blocks, b_blocks = lists
    written = apply(into.lower(0, a_blocks, s_blocks), request_memories(a, b, 0, a_blocks, b_blocks, NUM_BLOCKS)[0],
                    [r.block_bytes * NUM_BLOCKS for r in into.dst_regions if not r.per_request])
    for d in range(b.world_size):
        src_mem, expected, must = request_memories(a, b, d, a_blocks, b_blocks, NUM_BLOCKS)
        check_delivery(out_of.lower(d, s_blocks, b_blocks), {0: written}, expected, must)


def test_store_layout_is_the_same_whatever_the_writer():
    m = ModelSpec(name="m", layers=(AttentionSpec(num_kv_heads=8, head_dim=64),) * 2)
    stores = {StoreSpec.like(EngineSpec(model=m, tp=tp, kv_layout=layout, block_tokens=bt), block_tokens=32)
              for tp in (1, 2, 8) for layout in ("HND", "NHD") for bt in (16, 64)}
    assert len(stores) == 1
    # each prefill rank of a TP 2 engine writes one contiguous half of every store page
    p = plan(EngineSpec(model=m, tp=2, kv_layout="NHD"), stores.pop())
    table = p.reads(0)
    assert sorted(set(table.src_rank.tolist())) == [0, 1]


@pytest.mark.parametrize("bad", [{"model": "m"}, {"block_tokens": 0}, {"block_tokens": 1.5},
                                 {"num_speculative_tokens": -1}, {"num_blocks": 0}])
def test_bad_store_specs_are_refused(bad):
    m = ModelSpec(name="m", layers=(AttentionSpec(num_kv_heads=8, head_dim=64),))
    with pytest.raises(SpecError):
        StoreSpec(**{"model": m, **bad})
    with pytest.raises(SpecError, match="takes an EngineSpec"):
        StoreSpec.like(m)
