"""Hypothesis strategies that build valid configurations directly (no filtering).

`engine_pairs()` draws a model and two engines (prefill, decode) that can exchange it:
TP pairs from {1,2,4,8,16} in both directions, heads 1..64 with replication, MLA,
per-layer head counts, equal / dividing / non-dividing block sizes, every layout and
K/V storage on either side, and pipeline stages.
"""

from __future__ import annotations

from hypothesis import strategies as st

from kvplan import AttentionSpec, EngineSpec, ModelSpec
from kvplan.engine import KV_LAYOUTS, KV_STORAGES

TP_SIZES = (1, 2, 4, 8, 16)
DTYPES = ("bfloat16", "float16", "float32", "float8_e4m3fn", "float8_e5m2")


def shardable(heads: int, tp: int) -> bool:
    """Can `tp` ranks hold `heads` KV heads (split evenly or replicated evenly)?"""
    return heads % tp == 0 if tp <= heads else tp % heads == 0


@st.composite
def attention_layers(draw, *, tps: tuple[int, int]):
    """One attention or MLA layer shardable by both TP sizes in `tps`."""
    if draw(st.booleans().map(lambda b: b and draw(st.integers(0, 5)) == 0), label="mla"):
        return AttentionSpec(num_kv_heads=1, head_dim=draw(st.sampled_from([8, 16, 24]), label="latent"),
                             dtype=draw(st.sampled_from(DTYPES)), mla=True)
    heads_options = [h for h in range(1, 65) if all(shardable(h, t) for t in tps)]
    heads = draw(st.sampled_from(heads_options), label="num_kv_heads")
    head_dim = draw(st.sampled_from([1, 2, 4, 8, 16]), label="head_dim")
    head_dim_v = draw(st.sampled_from([None, None, 2, 8]), label="head_dim_v")
    window = draw(st.sampled_from([None, None, None, 8, 40]), label="sliding_window")
    return AttentionSpec(num_kv_heads=heads, head_dim=head_dim, head_dim_v=head_dim_v,
                         dtype=draw(st.sampled_from(DTYPES), label="dtype"), sliding_window=window)


@st.composite
def block_sizes(draw):
    """(logical block tokens, kernel block tokens) with kernel dividing logical."""
    kernel = draw(st.sampled_from([1, 2, 3, 4, 8, 16]), label="kernel_block")
    return kernel * draw(st.sampled_from([1, 1, 2, 3]), label="kernels_per_block"), kernel


@st.composite
def engine_pairs(draw, *, max_layers: int = 3, max_heads_total: int = 64):
    """(prefill EngineSpec, decode EngineSpec) for one random model."""
    src_tp = draw(st.sampled_from(TP_SIZES), label="src_tp")
    dst_tp = draw(st.sampled_from(TP_SIZES), label="dst_tp")
    num_layers = draw(st.integers(1, max_layers), label="num_layers")
    first = draw(attention_layers(tps=(src_tp, dst_tp)))
    layers = [first if draw(st.booleans(), label="repeat_layer") else draw(attention_layers(tps=(src_tp, dst_tp)))
              for _ in range(num_layers - 1)]
    model = ModelSpec(name="random", layers=(first, *layers))

    def engine(tp, side):
        block, kernel = draw(block_sizes(), label=f"{side}_blocks")
        return EngineSpec(
            model=model, tp=tp, pp=draw(st.integers(1, min(2, num_layers)), label=f"{side}_pp"),
            block_tokens=block, kernel_block_tokens=kernel,
            kv_layout=draw(st.sampled_from(KV_LAYOUTS), label=f"{side}_layout"),
            kv_storage=draw(st.sampled_from(KV_STORAGES), label=f"{side}_storage"),
        )

    return engine(src_tp, "src"), engine(dst_tp, "dst")


@st.composite
def requests(draw, src: EngineSpec, dst: EngineSpec, *, max_tokens: int = 200, num_blocks: int = 40):
    """(src_blocks, dst_blocks): distinct random block ids covering the same tokens."""
    max_tokens = min(max_tokens, num_blocks * min(src.block_tokens, dst.block_tokens))
    tokens = draw(st.integers(1, max_tokens), label="tokens")
    n_src = -(-tokens // src.block_tokens)
    n_dst = -(-tokens // dst.block_tokens)
    pool = st.permutations(range(num_blocks))
    src_ids = draw(pool, label="src_pool")[:n_src]
    dst_ids = draw(pool, label="dst_pool")[:n_dst]
    if draw(st.booleans(), label="consecutive"):
        src_ids = list(range(n_src))
        dst_ids = list(range(num_blocks - n_dst, num_blocks))
    return list(src_ids), list(dst_ids)
