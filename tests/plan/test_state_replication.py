"""State heads and channels replicated when TP exceeds them (Mamba1 channels, Mamba2
heads, GDN key and value heads, short-conv channels), as attention replicates KV heads:
each index lives on TP / extent ranks; plans between any two such TP sizes verify and
deliver requests byte for byte under every conv strategy. Counts that neither divide
TP nor are divided by it are refused with the reason."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kvplan import (AttentionSpec, EngineSpec, GatedDeltaNetSpec, Mamba1Spec, Mamba2Spec, ModelSpec, ShardingError,
                    ShortConvSpec, plan, verify)
from kvplan.testing.oracle import check_delivery, request_memories
from kvplan.testing.strategies import STRATEGIES

NUM_BLOCKS = 12


@st.composite
def _small_state(draw):
    """A state layer with 1, 2 or 4 heads (channels): fewer than the larger TP drawn."""
    n = draw(st.sampled_from([1, 2, 4]), label="extent")
    kind = draw(st.sampled_from(["mamba2", "mamba1", "gdn", "short_conv"]), label="kind")
    if kind == "mamba2":
        return Mamba2Spec(num_heads=n, head_dim=2, n_groups=1, d_state=2, conv_kernel=3)
    if kind == "mamba1":
        return Mamba1Spec(intermediate_size=n, d_state=2, conv_kernel=3)
    if kind == "gdn":
        return GatedDeltaNetSpec(num_k_heads=n, num_v_heads=2 * n, head_k_dim=2, head_v_dim=3, conv_kernel=3)
    return ShortConvSpec(conv_dim=n, conv_kernel=3)


@settings(max_examples=60, deadline=None)
@given(state=_small_state(), tps=st.tuples(st.sampled_from([1, 2, 4, 8]), st.sampled_from([1, 2, 4, 8])),
       conv=st.sampled_from(STRATEGIES), layouts=st.tuples(st.sampled_from(["DS", "SD"]), st.sampled_from(["DS", "SD"])),
       tokens=st.integers(1, 12))
def test_replicated_state_plans_verify_and_deliver(state, tps, conv, layouts, tokens):
    m = ModelSpec(name="m", layers=(AttentionSpec(num_kv_heads=2, head_dim=4), state, state))
    src, dst = (EngineSpec(model=m, tp=tp, block_tokens=4, conv_layout=layout) for tp, layout in zip(tps, layouts,
                                                                                                     strict=True))
    p = plan(src, dst, conv_strategy=conv)
    verify(p)
    blocks = -(-tokens // 4)
    src_blocks, dst_blocks = [list(range(blocks)), [blocks]], [list(range(2, 2 + blocks)), [0]]
    for d in range(dst.world_size):
        check_delivery(p.lower(d, src_blocks, dst_blocks),
                       *request_memories(src, dst, d, src_blocks, dst_blocks, NUM_BLOCKS))


def test_each_replicated_head_lives_on_tp_over_extent_ranks():
    gdn = GatedDeltaNetSpec(num_k_heads=1, num_v_heads=2, head_k_dim=2, head_v_dim=2, conv_kernel=3)
    keys, values = gdn.tp_axes()
    assert [keys.interval(4, r) for r in range(4)] == [(0, 1)] * 4
    assert [values.interval(4, r) for r in range(4)] == [(0, 1), (0, 1), (1, 2), (1, 2)]


def test_counts_that_neither_divide_nor_are_divided_by_tp_are_refused():
    m = ModelSpec(name="m", layers=(Mamba2Spec(num_heads=12, head_dim=2, n_groups=3, d_state=2, conv_kernel=3),))
    with pytest.raises(ShardingError, match="12 Mamba2 heads of layer 0 cannot be split over TP 8"):
        EngineSpec(model=m, tp=8)
    with pytest.raises(ShardingError, match="needs TP to be a multiple of 12"):
        EngineSpec(model=m, tp=20)
    with pytest.raises(ShardingError, match="3 Mamba2 groups of layer 0 cannot be split over TP 2"):
        EngineSpec(model=m, tp=2)
