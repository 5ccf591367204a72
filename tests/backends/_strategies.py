"""Small random exchanges for the contract suite: attention models with TP from {1, 2, 4}
(`exchanges`), and hybrid models under every conv strategy (`hybrid_exchanges`, built
on the core's hybrid strategies)."""

from __future__ import annotations

import attrs
from hypothesis import strategies as st

from kvplan import AttentionSpec, EngineSpec, ModelSpec, plan
from kvplan.spec import KV_LAYOUTS, KV_STORAGES
from kvplan.testing.strategies import conv_strategies, group_requests, hybrid_engine_pairs

TPS = (1, 2, 4)


def _shardable(heads: int, tp: int) -> bool:
    return heads % tp == 0 if tp <= heads else tp % heads == 0


@st.composite
def exchanges(draw, max_blocks: int = 8):
    """(plan, dst_rank, src_blocks, dst_blocks) for one random request."""
    src_tp, dst_tp = draw(st.sampled_from(TPS)), draw(st.sampled_from(TPS))
    heads = draw(st.sampled_from([h for h in (1, 2, 4, 8) if _shardable(h, src_tp) and _shardable(h, dst_tp)]))
    layer = AttentionSpec(num_kv_heads=heads, head_dim=draw(st.sampled_from([1, 4, 8, 64])),
                          dtype=draw(st.sampled_from(["bfloat16", "float8_e4m3fn", "float32"])))
    model = ModelSpec(name="contract", layers=(layer,) * draw(st.integers(1, 2)))

    def engine(tp):
        kernel = draw(st.sampled_from([1, 2, 4, 16]))
        return EngineSpec(model=model, tp=tp, block_tokens=kernel * draw(st.sampled_from([1, 2])),
                          kernel_block_tokens=kernel, num_blocks=max_blocks,
                          kv_layout=draw(st.sampled_from(KV_LAYOUTS)), kv_storage=draw(st.sampled_from(KV_STORAGES)))

    src, dst = engine(src_tp), engine(dst_tp)
    p = plan(src, dst)
    limit = max_blocks * min(src.block_tokens, dst.block_tokens)
    tokens = draw(st.integers(1, limit))
    n_src, n_dst = -(-tokens // src.block_tokens), -(-tokens // dst.block_tokens)
    if draw(st.booleans()):
        src_blocks, dst_blocks = list(range(n_src)), list(range(max_blocks - n_dst, max_blocks))
    else:
        src_blocks = draw(st.permutations(range(max_blocks)))[:n_src]
        dst_blocks = draw(st.permutations(range(max_blocks)))[:n_dst]
    return p, draw(st.integers(0, dst.world_size - 1)), list(src_blocks), list(dst_blocks)


BLOCKS = 8


@st.composite
def hybrid_exchanges(draw):
    """(plan, dst_rank, src_lists, dst_lists): a hybrid plan with a random conv strategy."""
    src, dst = draw(hybrid_engine_pairs(max_layers=3))
    src, dst = attrs.evolve(src, num_blocks=BLOCKS), attrs.evolve(dst, num_blocks=BLOCKS)
    p = plan(src, dst, conv_strategy=draw(conv_strategies()))
    src_blocks, dst_blocks = draw(group_requests(src, dst, num_blocks=BLOCKS))
    return p, draw(st.integers(0, dst.world_size - 1)), src_blocks, dst_blocks
