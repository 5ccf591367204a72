"""Hypothesis strategies that build valid configurations directly (no filtering).

`engine_pairs()` draws a model and two engines (prefill, decode) that can exchange it:
TP pairs from {1,2,4,8,16} in both directions, heads 1..64 with replication, MLA,
per-layer head counts, equal / dividing / non-dividing block sizes, every layout and
K/V storage on either side, and pipeline stages.
"""

from __future__ import annotations

import attrs
from hypothesis import strategies as st

from kvplan import AttentionSpec, EngineSpec, ModelSpec, plan
from kvplan.layout import natural_block_bytes
from kvplan.planning import STRATEGIES
from kvplan.presets import hma_groups
from kvplan.spec import CONV_LAYOUTS, KV_LAYOUTS, KV_STORAGES, GatedDeltaNetSpec, Mamba1Spec, Mamba2Spec, ShortConvSpec

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


# -- hybrid models ---------------------------------------------------------------------

CONV_DTYPES = ("bfloat16", "float16", "float32")
SSM_DTYPES = ("float32", "bfloat16")


def _divisors(n: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0]


@st.composite
def state_layers(draw, *, tps: tuple[int, int]):
    """A Mamba2 / Mamba1 / GDN / short-conv layer both TP sizes can shard."""
    big = max(tps)
    kind = draw(st.sampled_from(["mamba2", "mamba2", "mamba1", "gdn", "short_conv"]), label="state_kind")
    conv = dict(conv_kernel=draw(st.integers(2, 4), label="conv_kernel"),
                conv_dtype=draw(st.sampled_from(CONV_DTYPES), label="conv_dtype"))
    ssm_dtype = draw(st.sampled_from(SSM_DTYPES), label="ssm_dtype")
    if kind == "mamba2":
        heads = big * draw(st.sampled_from([1, 2, 3]), label="heads_per_rank")

        def whole_groups(groups: int) -> bool:  # every rank holds whole groups or part of one
            per_group = heads // groups
            return all((heads // t) % per_group == 0 or per_group % (heads // t) == 0 for t in tps)

        return Mamba2Spec(num_heads=heads, head_dim=draw(st.sampled_from([1, 2, 3]), label="m2_head_dim"),
                          n_groups=draw(st.sampled_from([g for g in _divisors(heads) if whole_groups(g)]),
                                        label="n_groups"),
                          d_state=draw(st.sampled_from([1, 2, 4]), label="d_state"), ssm_dtype=ssm_dtype, **conv)
    if kind == "mamba1":
        return Mamba1Spec(intermediate_size=big * draw(st.sampled_from([1, 2, 3]), label="m1_channels"),
                          d_state=draw(st.sampled_from([1, 2, 3]), label="m1_d_state"), ssm_dtype=ssm_dtype, **conv)
    if kind == "gdn":
        k_heads = big * draw(st.sampled_from([1, 2]), label="k_heads")
        return GatedDeltaNetSpec(num_k_heads=k_heads, num_v_heads=k_heads * draw(st.sampled_from([1, 2]), label="v_mult"),
                                 head_k_dim=draw(st.sampled_from([1, 2]), label="dk"),
                                 head_v_dim=draw(st.sampled_from([1, 3]), label="dv"), ssm_dtype=ssm_dtype, **conv)
    return ShortConvSpec(conv_dim=big * draw(st.sampled_from([1, 2, 5]), label="conv_dim"), **conv)


@st.composite
def hybrid_engine_pairs(draw, *, max_layers: int = 5, pooled: bool | None = None):
    """(prefill, decode) EngineSpecs for a hybrid model: attention + state layers, TP
    pairs from {1,2,4,8,16} both ways (incl. n_groups < TP), DS/SD conv on either side,
    speculative rows, padded state pages, and vLLM-style pooled HMA regions."""
    src_tp = draw(st.sampled_from(TP_SIZES[:4]), label="src_tp")
    dst_tp = draw(st.sampled_from(TP_SIZES[:4]), label="dst_tp")
    tps = (src_tp, dst_tp)
    attention = draw(attention_layers(tps=tps).filter(lambda s: s.sliding_window is None), label="attention")
    state = draw(state_layers(tps=tps), label="state")
    count = draw(st.integers(2, max_layers), label="num_layers")
    layers = [draw(st.sampled_from([attention, state, state]), label=f"layer{i}") for i in range(count)]
    if attention not in layers:
        layers[0] = attention
    if state not in layers:
        layers[-1] = state
    if draw(st.booleans(), label="second_state_kind"):
        layers.append(draw(state_layers(tps=tps), label="state2"))
    model = ModelSpec(name="hybrid", layers=tuple(layers))
    use_pool = draw(st.booleans(), label="pooled") if pooled is None else pooled
    spec_tokens = draw(st.sampled_from([0, 0, 1, 2]), label="num_speculative_tokens")

    def engine(tp, side):
        block, kernel = draw(block_sizes(), label=f"{side}_blocks")
        base = EngineSpec(model=model, tp=tp, block_tokens=block, kernel_block_tokens=kernel,
                          num_speculative_tokens=spec_tokens,
                          groups=hma_groups(model) if use_pool else None)
        pad = draw(st.sampled_from([0, 0, 8, 24]), label=f"{side}_padding")
        largest = max(natural_block_bytes(base, i) for i in range(model.num_layers))
        quantum = block // kernel  # a pooled page splits into whole kernel pages
        page = -(-(largest + pad) // quantum) * quantum
        return attrs.evolve(base, pooled=use_pool, page_bytes=page,
                            conv_layout=draw(st.sampled_from(CONV_LAYOUTS), label=f"{side}_conv_layout"),
                            kv_layout=draw(st.sampled_from(KV_LAYOUTS), label=f"{side}_layout"),
                            kv_storage="packed" if use_pool else draw(st.sampled_from(KV_STORAGES),
                                                                       label=f"{side}_storage"))

    return engine(src_tp, "src"), engine(dst_tp, "dst")


def conv_strategies():
    """The conv-state strategies of `kvplan.plan` (direct, staged, permuted)."""
    return st.sampled_from(STRATEGIES)


@st.composite
def group_requests(draw, src: EngineSpec, dst: EngineSpec, *, num_blocks: int = 40, max_state_blocks: int = 2):
    """Per-group (src_lists, dst_lists) with block ids disjoint across groups (a pooled
    block id belongs to one group at a time)."""
    groups = src.layer_groups
    src_pool = list(draw(st.permutations(range(num_blocks)), label="src_pool"))
    dst_pool = list(draw(st.permutations(range(num_blocks)), label="dst_pool"))
    budget = num_blocks // len(groups)
    src_lists, dst_lists = [], []
    for g in range(len(groups)):
        if src.group_is_token(g):
            s_tok, d_tok = src.group_block_tokens(g)[0], dst.group_block_tokens(g)[0]
            tokens = draw(st.integers(1, budget * min(s_tok, d_tok)), label=f"tokens{g}")
            n_src, n_dst = -(-tokens // s_tok), -(-tokens // d_tok)
        else:
            n_src = n_dst = draw(st.integers(1, max_state_blocks), label=f"states{g}")
        src_lists.append(src_pool[g * budget:g * budget + n_src])
        dst_lists.append(dst_pool[g * budget:g * budget + n_dst])
    return src_lists, dst_lists


@st.composite
def planned_requests(draw, *, num_blocks: int = 40):
    """(plan, dst_rank, src_blocks, dst_blocks) of an attention or a hybrid model
    (direct conv strategy): the request shapes a device copy path has to serve."""
    hybrid = draw(st.booleans(), label="hybrid")
    src, dst = draw(hybrid_engine_pairs() if hybrid else engine_pairs(), label="engines")
    dst_rank = draw(st.integers(0, dst.world_size - 1), label="dst_rank")
    draw_request = group_requests if hybrid else requests
    src_blocks, dst_blocks = draw(draw_request(src, dst, num_blocks=num_blocks), label="request")
    return plan(src, dst), dst_rank, src_blocks, dst_blocks


@st.composite
def strategy_plans(draw):
    """(plan, hybrid) of an attention or a hybrid model under a drawn transfer strategy
    (direct or bounce) and, for direct hybrid plans, a drawn conv strategy."""
    hybrid = draw(st.booleans(), label="hybrid")
    src, dst = draw(hybrid_engine_pairs() if hybrid else engine_pairs(), label="engines")
    options = {"transfer_strategy": draw(st.sampled_from(["direct", "bounce"]), label="transfer_strategy")}
    if hybrid and options["transfer_strategy"] == "direct":
        options["conv_strategy"] = draw(conv_strategies(), label="conv_strategy")
    return plan(src, dst, **options), hybrid


# -- small exchanges for transport tests ------------------------------------------------------
# Requests against engines with `num_blocks` set, small enough to run through a real
# transport many times: attention models with TP from {1, 2, 4} (`exchanges`), hybrid
# models under every conv strategy (`hybrid_exchanges`).

EXCHANGE_TPS = (1, 2, 4)


@st.composite
def exchanges(draw, max_blocks: int = 8):
    """(plan, dst_rank, src_blocks, dst_blocks) for one random request."""
    src_tp, dst_tp = draw(st.sampled_from(EXCHANGE_TPS)), draw(st.sampled_from(EXCHANGE_TPS))
    heads = draw(st.sampled_from([h for h in (1, 2, 4, 8) if shardable(h, src_tp) and shardable(h, dst_tp)]))
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
