"""`plan.cost(request_tokens=N)`: what a request of N tokens moves, counted in requests,
checked against the Transfer lowering builds for such a request (scattered block ids, so
nothing merges across blocks), and the bytes against the model's own arithmetic."""

from __future__ import annotations

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from kvplan import EngineSpec, SpecError, get_model, plan
from kvplan.testing.strategies import engine_pairs


@settings(max_examples=60)
@given(pair=engine_pairs(), spans=st.integers(1, 3), strategy=st.sampled_from(["direct", "bounce"]))
def test_a_request_costs_what_its_lowered_transfer_moves(pair, spans, strategy):
    src, dst = pair
    assume(not any(layer.sliding_window for layer in src.model.layers))  # windows need fewer blocks
    p = plan(src, dst, transfer_strategy=strategy)
    ns, nd = p.blocks_per_span(0)
    # every other block: no two of a request's blocks are neighbours, so nothing merges across them
    src_blocks, dst_blocks = list(range(0, 2 * ns * spans, 2)), list(range(1, 2 * nd * spans, 2))
    cost = p.cost(request_tokens=spans * p.span_tokens)
    for r in range(dst.world_size):
        t = p.lower(r, src_blocks, dst_blocks)
        pack = t.pre_steps if strategy == "bounce" else None
        assert cost.ranks[r].bytes == int((pack if pack is not None else t).nbytes.sum())
        if strategy == "direct":
            assert cost.ranks[r].descriptors == len(t)
            assert (cost.ranks[r].local_copies, cost.ranks[r].local_bytes) == (0, 0)
    assert cost.total_bytes == sum(c.bytes for c in cost.ranks)


def test_bytes_follow_the_model():
    """Llama-3.1-70B (80 layers, 8 KV heads of 128, bf16), TP 2 -> 8, an 8,192-token request:
    every decode rank holds one KV head: 8,192 x 80 x 1 x 128 x 2 (K, V) x 2 bytes."""
    m = get_model("llama-3.1-70b")
    cost = plan(EngineSpec(model=m, tp=2), EngineSpec(model=m, tp=8)).cost(request_tokens=8192)
    assert {r.bytes for r in cost.ranks} == {8192 * 80 * 128 * 2 * 2}
    assert {r.descriptors for r in cost.ranks} == {512 * 80}  # a copy per block and layer (HND pages)
    assert cost.seconds(bandwidth_GBps=100) == pytest.approx(8192 * 80 * 128 * 2 * 2 / 100e9)
    assert "| all | 2,684,354,560 | 327,680 |" in cost.table()  # 8 ranks


def test_a_partial_span_costs_a_whole_one():
    m = get_model("llama-3.1-8b")
    p = plan(EngineSpec(model=m, block_tokens=16), EngineSpec(model=m, tp=2, block_tokens=16))
    assert p.cost(request_tokens=1).ranks[0].bytes == p.cost(request_tokens=16).ranks[0].bytes


@pytest.mark.parametrize("tokens", [0, -1, 1.5, "8k", True, 1 << 41])
def test_request_tokens_are_checked(tokens):
    p = plan(EngineSpec(model=get_model("llama-3.1-8b")), EngineSpec(model=get_model("llama-3.1-8b"), tp=2))
    with pytest.raises(SpecError, match="request_tokens"):
        p.cost(request_tokens=tokens)
    with pytest.raises(SpecError, match="bandwidth"):
        p.cost(request_tokens=16).seconds(0)
