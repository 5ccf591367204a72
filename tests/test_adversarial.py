"""Adversarial input: every public entry point, fed invalid and extreme values of any type.

The contract (README, "Bad input"): kvplan answers bad input with a `KvplanError`
subclass naming the offending values, never another exception, never a hang, never a
wrong plan. Each test below draws values for every argument of one entry point from a
mix of valid values (so that deep paths are reached) and junk: wrong types, negatives,
zero, huge ints (2**40, 2**63), floats, NaN, strings, None, nested containers. It then
asserts that either a result comes back (a plan must pass `verify`; a lowered Transfer's
rows must lie inside the engines' regions for the blocks the request names) or a
`KvplanError` is raised; any other exception fails the test, and pytest-timeout fails a
hang. Examples per test are fixed (derandomized under the "ci" profile); together they
are over 5,000.
"""

from __future__ import annotations

import contextlib
import io

import attrs
import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from kvplan import (AttentionSpec, EngineSpec, GatedDeltaNetSpec, KvplanError, LayerGroup, Mamba1Spec, Mamba2Spec,
                    ModelSpec, PlanCache, ShortConvSpec, StoreSpec, Transfer, from_hf_config, get_model, plan,
                    plan_from_json, verify, vllm_engine)
from kvplan.cli import main
from kvplan.spec import engine_from_json, engine_to_json
from kvplan.layout import engine_memory
from kvplan.lowering import (RingCopies, StagingRing, check_bounds, copy_template, expand_step, positional,
                             request_blocks, ring_buffer_bytes, ring_chunks, staging_ring)
from kvplan.presets import hma_groups
from kvplan.spec.limits import LIMITS, MAX_LAYERS, MAX_PAGE_BYTES, MAX_TP
from kvplan.testing.strategies import engine_pairs, group_requests, hybrid_engine_pairs

# "thread": a hang ends the run with every thread's stack, whatever hypothesis does with
# an exception raised inside the test (the "signal" method's)
pytestmark = pytest.mark.timeout(120, method="thread")

# -- values -----------------------------------------------------------------------------------

HUGE = [2**31, 2**40, 2**53 + 1, 2**62, 2**63 - 1, 2**63, 2**64, 10**30, -(2**63), -(2**64)]
# one past each limit, so every limit is crossed somewhere
PAST_LIMITS = [limit.value + 1 for limit in LIMITS]
junk_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-3, 0), st.sampled_from(HUGE + PAST_LIMITS),
    st.floats(allow_nan=True, allow_infinity=True), st.sampled_from([1.5, 2.0, float("nan"), float("inf")]),
    st.text(max_size=6), st.sampled_from(["2", "True", "False", "false", "", "bfloat16", "NHD", "auto"]),
    st.binary(max_size=4), st.just(object()), st.sampled_from([np.int64(2), np.float64(2.0), np.uint64(2**64 - 1),
                                                               np.bool_(True)]),
)
junk = st.recursive(junk_scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=3), st.tuples(inner, inner), st.dictionaries(st.text(max_size=3), inner, max_size=2),
    st.frozensets(st.integers(-2, 3), max_size=3), st.builds(np.array, st.lists(st.integers(-2, 5), max_size=3))),
    max_leaves=6)


# examples per test (fixed: the "ci" profile derandomizes them); the total is over 5,000
EXAMPLES = {"layer_specs": 700, "models_and_groups": 500, "engine_spec": 700, "plan": 450, "verify": 300,
            "lower": 1000, "layers": 150, "serving": 150, "transfer": 500, "hf_config": 800, "vllm_engine": 400, "cli": 250, "steps": 300}


def mix(valid, weight: int = 3):
    """`valid` most of the time (`weight` to 1), else junk. (A one_of listing `valid`
    several times would not weigh it: hypothesis draws each distinct branch alike.)"""
    return st.integers(0, weight).flatmap(lambda i: valid if i else junk)


def attempt(fn, *args, **kwargs):
    """Call `fn`: its result, or None when it raised a KvplanError (anything else fails the test)."""
    try:
        return fn(*args, **kwargs)
    except KvplanError as error:
        assert str(error), f"{type(error).__name__} without a message"
        return None


small = st.integers(1, 8)
dims = st.sampled_from([1, 2, 4, 8, 64, 128, 576, 65536])
dtypes = st.sampled_from(["bfloat16", "fp8", "float32", "int8", "torch.float16"])

# -- layer specs, models, groups, engines ----------------------------------------------------------


@st.composite
def layer_specs(draw):
    kind = draw(st.sampled_from(["attention", "mamba2", "mamba1", "gdn", "conv"]))
    if kind == "attention":
        return attempt(AttentionSpec, draw(mix(small)), draw(mix(dims)), head_dim_v=draw(mix(st.none() | dims)),
                       dtype=draw(mix(dtypes)), mla=draw(mix(st.booleans())),
                       sliding_window=draw(mix(st.none() | st.integers(1, 2**32))))
    conv = dict(conv_kernel=draw(mix(st.integers(1, 1024))), conv_dtype=draw(mix(dtypes)))
    if kind == "mamba2":
        return attempt(Mamba2Spec, num_heads=draw(mix(st.sampled_from([2, 4, 8]))), head_dim=draw(mix(dims)),
                       n_groups=draw(mix(st.sampled_from([1, 2]))), d_state=draw(mix(dims)),
                       ssm_dtype=draw(mix(dtypes)), **conv)
    if kind == "mamba1":
        return attempt(Mamba1Spec, intermediate_size=draw(mix(st.integers(1, 2**21))), d_state=draw(mix(dims)), **conv)
    if kind == "gdn":
        return attempt(GatedDeltaNetSpec, num_k_heads=draw(mix(small)), num_v_heads=draw(mix(small)),
                       head_k_dim=draw(mix(dims)), head_v_dim=draw(mix(dims)), **conv)
    return attempt(ShortConvSpec, conv_dim=draw(mix(st.integers(1, 2**21))), **conv)


@settings(max_examples=EXAMPLES["layer_specs"])
@given(layer=layer_specs())
def test_layer_specs(layer):
    """Each layer spec either builds with every field in range or raises."""
    if layer is not None:
        assert layer.tp_axes() and layer.kind
        if layer.holds_tokens:
            assert isinstance(layer.mla, bool) and layer.bytes_per_token > 0


@settings(max_examples=EXAMPLES["models_and_groups"])
@given(name=mix(st.just("m")), layers=mix(st.lists(layer_specs(), min_size=1, max_size=4)),
       group=mix(st.lists(mix(st.integers(0, 4) | st.none()), max_size=4)),
       block=mix(st.none() | st.integers(1, 2**21)), kernel=mix(st.none() | st.integers(1, 2**21)))
def test_models_and_groups(name, layers, group, block, kernel):
    if isinstance(layers, list):
        layers = [layer for layer in layers if layer is not None] or layers
    model = attempt(ModelSpec, name=name, layers=layers)
    if model is not None:
        assert 1 <= model.num_layers <= MAX_LAYERS.value and hash(model) is not None
    g = attempt(LayerGroup, group, block_tokens=block, kernel_block_tokens=kernel)
    if g is not None:
        assert all(x is None or type(x) is int for x in g.layers)


def test_endless_or_huge_layer_lists_stop_at_the_limit():
    layer = AttentionSpec(1, 8)
    for layers in (iter(lambda: layer, None), (layer,) * (MAX_LAYERS.value + 1)):
        with pytest.raises(KvplanError, match="MAX_LAYERS"):
            ModelSpec(name="m", layers=layers)


M = ModelSpec(name="m", layers=(AttentionSpec(4, 8), AttentionSpec(4, 8, sliding_window=16)))
HYBRID = ModelSpec(name="h", layers=(AttentionSpec(2, 8), Mamba2Spec(num_heads=4, head_dim=2, n_groups=2, d_state=4,
                                                                     conv_kernel=4)) * 2)

ENGINE_FIELDS = {
    "tp": st.sampled_from([1, 2, 4]), "pp": st.sampled_from([1, 2]), "block_tokens": st.sampled_from([4, 8, 16, 48]),
    "kernel_block_tokens": st.sampled_from([None, 4, 8]), "kv_layout": st.sampled_from(["HND", "NHD"]),
    "kv_storage": st.sampled_from(["packed", "separate", "blocks_first"]), "conv_layout": st.sampled_from(["DS", "SD"]),
    "num_speculative_tokens": st.sampled_from([0, 1, 2]), "pooled": st.booleans(),
    "groups": st.sampled_from([None, hma_groups(HYBRID), (LayerGroup((0, 2)), LayerGroup((1, 3)))]),
    "page_bytes": st.sampled_from([None, 4096, 2**20]), "num_blocks": st.sampled_from([None, 8, 2**32]),
}


@st.composite
def engines(draw, model=None, junk_weight: int = 3):
    """An EngineSpec (or None where it was refused), each field valid or junk."""
    model = draw(mix(st.sampled_from([M, HYBRID]), 6)) if model is None else model
    fields = {name: draw(mix(values, junk_weight)) for name, values in ENGINE_FIELDS.items()
              if draw(st.booleans())}
    return attempt(EngineSpec, model=model, **fields)


@settings(max_examples=EXAMPLES["engine_spec"])
@given(engine=engines(junk_weight=2))
def test_engine_spec(engine):
    """An engine built is one whose memory can be laid out, or refused with a KvplanError."""
    if engine is not None:
        assert 1 <= engine.tp <= MAX_TP.value and isinstance(engine.pooled, bool)
        memory = attempt(engine_memory, engine)
        if memory is not None:
            assert all(0 < r.block_bytes <= MAX_PAGE_BYTES.value for r in memory.regions)


# -- plan, verify, cost, describe, reads --------------------------------------------------------

ranks = mix(st.integers(-1, 8), 2)


@st.composite
def engine_pair(draw):
    """Mostly valid small pairs (from the property suites), sometimes one field replaced."""
    kind = draw(st.integers(0, 4))
    src, dst = draw(engine_pairs(max_layers=2) if kind < 2 else hybrid_engine_pairs(max_layers=3) if kind < 4 else
                    st.tuples(engines(junk_weight=12), engines(junk_weight=12)))
    if src is not None and dst is not None and draw(st.integers(0, 3)) == 0:
        name = draw(st.sampled_from(sorted(ENGINE_FIELDS)))
        side = draw(st.sampled_from(["src", "dst"]))
        value = draw(mix(ENGINE_FIELDS[name], 2))
        changed = attempt(attrs.evolve, src if side == "src" else dst, **{name: value})
        src, dst = (changed, dst) if side == "src" else (src, changed)
    return src, dst


@settings(max_examples=EXAMPLES["plan"])
@given(pair=engine_pair(), strategy=mix(st.sampled_from(["direct", "staged", "permuted"]), 8), rank=ranks,
       whole=st.integers(0, 7).flatmap(lambda i: junk if i == 0 else st.none()),
       transfer=mix(st.sampled_from(["auto", "direct", "bounce"]), 8),
       transport=mix(st.sampled_from([None, "nixl", "ucx", "cupy", "host"]), 8))
def test_plan_verify_cost_describe_reads(pair, strategy, rank, whole, transfer, transport):
    src, dst = pair
    if whole is not None:  # not an engine at all
        src = whole
    p = attempt(plan, src, dst, conv_strategy=strategy, transfer_strategy=transfer, transport=transport)
    if p is None:
        return
    event(f"planned and verified ({p.conv_strategy}, {p.transfer_strategy})")
    if transport in ("nixl", "ucx", "cupy"):  # a junk request size ends in a KvplanError too
        e = attempt(p.estimate, transport, request_tokens=rank)
        assert e is None or e.direct_s > 0 < e.bounce_s or e.bytes == 0
    verify(p)  # a plan kvplan returns is one it can back: PlanError here is a failure
    assert isinstance(p.describe(), str)
    valid = isinstance(rank, (int, np.integer)) and not isinstance(rank, bool) and 0 <= rank < p.dst.world_size
    assert (attempt(p.cost, rank) is not None) == (valid or rank is None)  # None: every rank
    assert (attempt(p.reads, rank) is not None) == valid


PLAN = plan(EngineSpec(model=M, tp=2, block_tokens=16, num_blocks=64),
            EngineSpec(model=M, tp=4, block_tokens=32, kernel_block_tokens=16, num_blocks=64))



@pytest.mark.parametrize("junk_strategy", [np.array([]), np.array(["direct", "direct"]), ["direct"], None])
def test_auto_with_a_transport_refuses_a_conv_strategy_that_is_not_a_string(junk_strategy):
    # auto compares conv_strategy before plan_tables checks it: an array once escaped as ValueError
    with pytest.raises(KvplanError, match="conv_strategy"):
        plan(PLAN.src, PLAN.dst, conv_strategy=junk_strategy, transfer_strategy="auto", transport="nixl")

@settings(max_examples=EXAMPLES["verify"])
@given(target=junk, tables=st.one_of(st.none(), junk), regions=st.one_of(st.none(), junk),
       max_problems=st.one_of(st.just(20), junk))
def test_verify_refuses_what_is_not_a_plan(target, tables, regions, max_problems):
    attempt(verify, target)
    broken = PLAN
    if tables is not None:
        broken = attrs.evolve(broken, tables=tables)
    if regions is not None:
        broken = attrs.evolve(broken, src_regions=regions)
    attempt(verify, broken, max_problems=max_problems)


# -- lower: requests of block ids -------------------------------------------------------------------


def _plans():
    hybrid_src = EngineSpec(model=HYBRID, tp=1, block_tokens=8)
    return [
        PLAN,
        plan(EngineSpec(model=M, tp=4, pp=2, block_tokens=16), EngineSpec(model=M, tp=1, block_tokens=48)),
        plan(hybrid_src, EngineSpec(model=HYBRID, tp=2, block_tokens=16, conv_layout="SD"), conv_strategy="staged"),
        plan(hybrid_src, EngineSpec(model=HYBRID, tp=2, block_tokens=8), conv_strategy="permuted"),
        plan(vllm_engine(HYBRID, tp=1, num_blocks=32), vllm_engine(HYBRID, tp=2, num_blocks=32)),
    ]


PLANS = _plans()
block_id = st.one_of(st.integers(0, 40), st.sampled_from([2**31, 2**47, 2**51 - 1, 2**55, 2**62, 2**63 - 1, -1]))


@st.composite
def requests(draw):
    """(plan, rank, src_blocks, dst_blocks, prefix): a valid request, sometimes corrupted,
    sometimes junk outright."""
    p = draw(st.sampled_from(PLANS))
    src_lists, dst_lists = draw(group_requests(p.src, p.dst, num_blocks=30))
    if draw(st.integers(0, 2)) == 0:  # move one id anywhere, up to 2**63 - 1
        lists = draw(st.sampled_from([src_lists, dst_lists]))
        g = draw(st.integers(0, len(lists) - 1))
        if lists[g]:
            lists[g][draw(st.integers(0, len(lists[g]) - 1))] = draw(block_id)
    shape = lambda lists: lists[0] if len(lists) == 1 and draw(st.booleans()) else lists  # noqa: E731
    src_blocks, dst_blocks = shape(src_lists), shape(dst_lists)
    if draw(st.integers(0, 7)) == 0:
        src_blocks = draw(junk)
    if draw(st.integers(0, 7)) == 0:
        dst_blocks = draw(st.one_of(junk, st.lists(block_id, max_size=4)))
    rank = draw(mix(st.integers(0, p.dst.world_size - 1), 8))
    prefix = draw(mix(st.sampled_from(["exact", "tail"]), 8))
    return p, rank, src_blocks, dst_blocks, prefix


def _ids(blocks) -> list[int]:
    """Every id of a request side (one flat list, or one list per group)."""
    nested = len(blocks) and isinstance(blocks[0], (list, tuple, np.ndarray))
    return [int(b) for group in (blocks if nested else [blocks]) for b in group]


def _assert_inside(p, t, src_blocks, dst_blocks):
    """Every row of `t` (and of its local steps) inside the regions the request's blocks
    span: num_blocks blocks when the engine declares them, else up to the largest id."""
    def sizes(engine, regions, blocks):
        ids = _ids(blocks) or [0]
        count = engine.num_blocks if engine.num_blocks is not None else max(ids) + 1
        states = max(len(ids), 1)
        return [r.block_bytes * (states if r.per_request else count) for r in regions]

    src_sizes = sizes(p.src, p.src_regions, src_blocks)
    dst_sizes = sizes(p.dst, p.dst_regions, dst_blocks)
    by_rank = {r: src_sizes for r in range(p.src.world_size)}
    check_bounds(t, by_rank, dst_sizes)
    if t.pre_steps is not None:
        check_bounds(t.pre_steps, by_rank, src_sizes)
    if t.post_steps is not None:
        check_bounds(t.post_steps, {t.dst_rank: dst_sizes}, dst_sizes)


@settings(max_examples=EXAMPLES["lower"])
@given(request=requests())
def test_lower(request):
    p, rank, src_blocks, dst_blocks, prefix = request
    t = attempt(p.lower, rank, src_blocks, dst_blocks, prefix=prefix)
    event("lowered" if t is not None else "refused")
    if t is not None:
        _assert_inside(p, t, src_blocks, dst_blocks)


layer_ranges = st.one_of(
    st.none(), st.builds(range, st.integers(-3, 12), st.integers(-3, 12), st.sampled_from([1, 1, 2, -1])),
    st.builds(slice, st.one_of(st.none(), st.integers(-12, 12), st.text(max_size=2)),
              st.one_of(st.none(), st.integers(-12, 12)), st.sampled_from([None, 1, 2, -1, 0])))


@settings(max_examples=EXAMPLES["layers"])
@given(request=requests(), layers=mix(layer_ranges))
def test_lower_layer_ranges(request, layers):
    """`lower(..., layers=...)`: junk and out-of-range layer ranges end in a KvplanError;
    what comes back stays inside the request's memory and is a subset of the whole."""
    p, rank, src_blocks, dst_blocks, prefix = request
    t = attempt(p.lower, rank, src_blocks, dst_blocks, prefix=prefix, layers=layers)
    event("lowered" if t is not None else "refused")
    if t is not None:
        _assert_inside(p, t, src_blocks, dst_blocks)
        assert t.total_bytes <= p.lower(rank, src_blocks, dst_blocks, prefix=prefix).total_bytes


# -- serving features: stores, plan JSON, push views, the plan cache, model-layer maps ---------------------


@settings(max_examples=EXAMPLES["serving"])
@given(which=st.sampled_from(["store", "store_like", "plan_json", "push", "writes", "cache", "model_layers"]),
       a=junk, b=mix(st.integers(0, 3)), c=mix(st.lists(st.integers(0, 40), max_size=4)))
def test_serving_entry_points(which, a, b, c):
    """The serving features' entry points: junk of any type or size ends in a KvplanError,
    and what comes back is usable (a store plans, a plan verifies, pushes stay inside)."""
    event(which)
    if which == "store":
        store = attempt(StoreSpec, model=M, block_tokens=a, num_blocks=b)
        if store is not None:
            verify(plan(EngineSpec(model=M, tp=2), store))
    elif which == "store_like":
        attempt(StoreSpec.like, a, block_tokens=b)
    elif which == "plan_json":
        got = attempt(plan_from_json, a if isinstance(a, (str, bytes)) else repr(a))
        assert got is None
    elif which == "push":
        views = attempt(PLAN.lower_push, b, c, a)
        if views is not None:
            for t in views:
                _assert_inside(PLAN, t, c, a)
    elif which == "writes":
        tables = attempt(PLAN.writes, a)
        assert tables is None or len(tables) == PLAN.dst.world_size
    elif which == "cache":
        cache = attempt(PlanCache, max_plans=b)
        if cache is not None:
            p = attempt(cache.plan, EngineSpec(model=M), EngineSpec(model=M, tp=2), transfer_strategy=a)
            assert p is None or p.transfer_strategy in ("direct", "bounce")
    else:
        model = attempt(ModelSpec, name="m", layers=M.layers, model_layers=a, num_model_layers=b)
        if model is not None:
            attempt(EngineSpec, model=model, pp=2)


# -- step templates (bounce pack and unpack) ------------------------------------------------------------

BOUNCE = plan(PLAN.src, PLAN.dst, transfer_strategy="bounce")


@settings(max_examples=EXAMPLES["steps"])
@given(step=mix(st.sampled_from(["pre", "post"])), src_rank=mix(st.one_of(st.none(), st.integers(0, 3))),
       side=mix(st.sampled_from(["src", "dst"])), rank=ranks,
       blocks=mix(st.lists(st.integers(0, 63), max_size=4)))
def test_step_templates(step, src_rank, side, rank, blocks):
    template = attempt(copy_template, BOUNCE, rank, step=step, src_rank=src_rank)
    request = attempt(request_blocks, BOUNCE, rank, blocks, blocks)
    attempt(positional, blocks, side)  # block ids are not a RequestBlocks
    if request is not None:
        attempt(positional, request, side)
        if template is not None:
            rows = attempt(expand_step, template, request, step)
            assert rows is None or all((col >= 0).all() for col in rows.values())


@settings(max_examples=EXAMPLES["steps"])
@given(chunk_bytes=mix(st.integers(1, 2**40)), slots=mix(st.integers(1, 4)), chunk_spans=mix(st.integers(1, 4)),
       first=mix(st.integers(0, 8)), rank=ranks, blocks=mix(st.lists(st.integers(0, 63), max_size=4)),
       target=mix(st.just(BOUNCE), 1), src_rank=mix(st.none()))
def test_staging_ring(chunk_bytes, slots, chunk_spans, first, rank, blocks, target, src_rank):
    """Staging-ring entry points (`kvplan.lowering.ring`): junk ends in a KvplanError; a
    ring's chunks stay inside its slots."""
    ring = attempt(staging_ring, target, chunk_bytes=chunk_bytes, slots=slots)
    made = attempt(StagingRing, chunk_spans=chunk_spans, slots=slots)
    attempt(ring_buffer_bytes, target, made if made is not None else chunk_spans)
    request = attempt(request_blocks, BOUNCE, rank, blocks, blocks)
    attempt(ring_chunks, BOUNCE, blocks, made)  # block ids are not a RequestBlocks
    if request is not None:
        attempt(ring_chunks, target, request, made)
    if request is not None:
        attempt(positional, request, "dst", first_position=first)
        copies = attempt(RingCopies, target, rank)
        if copies is not None:
            t = attempt(copies.chunk, request, first_position=first, src_rank=src_rank)
            assert t is None or (t.nbytes > 0).all()
        if ring is not None:
            sizes = ring_buffer_bytes(BOUNCE, ring, rank)[1]
            own = len(BOUNCE.dst_regions) - len(BOUNCE.dst_scratch)
            for j, chunk in enumerate(ring_chunks(BOUNCE, request, ring)):
                t = RingCopies(BOUNCE, rank).chunk(chunk, first_position=ring.slot_position(j))
                assert all(end <= sizes[region - own] for region, end in t.scratch_bytes()[1].items())


@settings(max_examples=EXAMPLES["steps"])
@given(value=junk, text=st.one_of(st.text(max_size=40), junk.map(lambda v: repr(v))))
def test_engine_json(value, text):
    """Engine JSON entry points: junk in, a KvplanError out (or, for text, an engine)."""
    attempt(engine_to_json, value)
    attempt(engine_from_json, value)
    back = attempt(engine_from_json, text)
    assert back is None or isinstance(back, EngineSpec)


# -- Transfer -------------------------------------------------------------------------------------------

column = mix(st.lists(st.integers(0, 2**40), min_size=1, max_size=1), 4)


@settings(max_examples=EXAMPLES["transfer"])
@given(columns=st.fixed_dictionaries({name: column for name in Transfer.column_names()}),
       dst_rank=mix(st.integers(0, 3)), regions=mix(st.just(PLAN.dst_regions)),
       fingerprint=mix(st.just("")), steps=mix(st.none()), bases=mix(st.lists(st.integers(0, 2**40), max_size=4)),
       src_bases=mix(st.dictionaries(st.integers(0, 2**40), st.lists(st.integers(0, 2**40), max_size=4), max_size=2)),
       rank=junk | st.integers(0, 3), rows=junk | st.just([0]))
def test_transfer(columns, dst_rank, regions, fingerprint, steps, bases, src_bases, rank, rows):
    t = attempt(Transfer, dst_rank=dst_rank, **columns, dst_regions=regions, plan_fingerprint=fingerprint,
                post_steps=steps)
    if t is None:
        return
    assert all((col >= 0).all() for col in t.columns().values())
    attempt(t.bind, src_bases, bases)
    attempt(t.for_source, rank)
    attempt(t.select, rows)
    assert str(t)


# -- models, presets -----------------------------------------------------------------------------------

BASE_CONFIGS = [
    {"model_type": "llama", "num_hidden_layers": 4, "hidden_size": 256, "num_attention_heads": 4,
     "num_key_value_heads": 2},
    {"model_type": "mistral", "num_hidden_layers": 3, "hidden_size": 256, "num_attention_heads": 4,
     "sliding_window": 64},
    {"model_type": "qwen2", "num_hidden_layers": 4, "hidden_size": 256, "num_attention_heads": 4,
     "num_key_value_heads": 2, "use_sliding_window": True, "sliding_window": 64, "max_window_layers": 2},
    {"model_type": "gemma3", "text_config": {"num_hidden_layers": 6, "sliding_window_pattern": 3}},
    {"model_type": "gemma4_text", "num_hidden_layers": 6, "num_kv_shared_layers": 2, "attention_k_eq_v": True,
     "num_global_key_value_heads": 2},
    {"model_type": "deepseek_v3", "num_hidden_layers": 3, "kv_lora_rank": 64, "qk_rope_head_dim": 16},
    {"model_type": "nemotron_h", "hybrid_override_pattern": "M*ME", "num_attention_heads": 4,
     "num_key_value_heads": 2, "head_dim": 16, "mamba_num_heads": 8, "mamba_head_dim": 4, "n_groups": 2,
     "ssm_state_size": 8, "conv_kernel": 4},
    {"model_type": "granitemoehybrid", "num_hidden_layers": 3, "hidden_size": 64, "num_attention_heads": 4,
     "layer_types": ["mamba", "attention", "mamba"], "mamba_n_heads": 8, "mamba_d_head": "auto",
     "mamba_n_groups": 1, "mamba_d_state": 8, "mamba_d_conv": 4},
    {"model_type": "falcon_h1", "num_hidden_layers": 2, "hidden_size": 64, "num_attention_heads": 4,
     "mamba_n_heads": 8, "mamba_d_head": 16, "mamba_n_groups": 1, "mamba_d_state": 8, "mamba_d_conv": 4},
    {"model_type": "qwen3_next", "num_hidden_layers": 4, "hidden_size": 64, "num_attention_heads": 4,
     "linear_num_key_heads": 2, "linear_num_value_heads": 4, "linear_key_head_dim": 8, "linear_value_head_dim": 8,
     "linear_conv_kernel_dim": 4},
    {"model_type": "jamba", "num_hidden_layers": 8, "hidden_size": 64, "num_attention_heads": 4,
     "num_key_value_heads": 2},
]
CONFIG_KEYS = sorted({key for config in BASE_CONFIGS for key in config} | {
    "head_dim", "torch_dtype", "dtype", "layer_types", "mamba_expand", "mamba_d_ssm", "full_attention_interval",
    "attn_layer_period", "attn_layer_offset", "global_head_dim", "mamba_ssm_cache_dtype", "layers_block_type"})
config_values = st.one_of(st.integers(-2, 5), st.sampled_from([0, 4096, 4097, 10**12, 2**63]), junk,
                          st.lists(st.sampled_from(["mamba", "attention", "full_attention", "sliding_attention",
                                                    "linear_attention", "moe", "x"]), max_size=6))


@st.composite
def configs(draw):
    config = draw(st.sampled_from(BASE_CONFIGS))
    config = {**config, "text_config": dict(config["text_config"])} if "text_config" in config else dict(config)
    target = config["text_config"] if "text_config" in config and draw(st.booleans()) else config
    for _ in range(draw(st.integers(0, 3))):
        key = draw(st.sampled_from(CONFIG_KEYS))
        if draw(st.integers(0, 4)) == 0:
            target.pop(key, None)
        else:
            target[key] = draw(config_values)
    return config if draw(st.integers(0, 5)) else draw(junk)


@settings(max_examples=EXAMPLES["hf_config"])
@given(config=configs(), name=mix(st.none(), 4))
def test_from_hf_config(config, name):
    model = attempt(from_hf_config, config, name=name)
    event("read" if model is not None else "refused")
    if model is not None:
        assert 1 <= model.num_layers <= MAX_LAYERS.value and all(hasattr(layer, "tp_axes") for layer in model.layers)


MODEL_NAMES = ["llama-3.1-8b", "deepseek-v3", "nemotron-3-nano-30b-a3b", "jamba-v0.1", "qwen3-next-80b-a3b", "gpt-9"]


@settings(max_examples=EXAMPLES["vllm_engine"])
@given(model=mix(st.sampled_from(MODEL_NAMES) | st.just(HYBRID)), tp=mix(st.sampled_from([1, 2, 4, 8])),
       backend=mix(st.sampled_from(["flashinfer", "flash_attn", "flashmla"])),
       block_size=mix(st.none() | st.sampled_from([16, 64, 4096])), spec_tokens=mix(st.integers(0, 2)),
       num_blocks=mix(st.none() | st.integers(1, 100)), pp=mix(st.sampled_from([1, 2])), lookup=junk)
def test_vllm_engine_and_get_model(model, tp, backend, block_size, spec_tokens, num_blocks, pp, lookup):
    engine = attempt(vllm_engine, model, tp, backend=backend, block_size=block_size,
                     num_speculative_tokens=spec_tokens, num_blocks=num_blocks, pp=pp)
    if engine is not None:
        assert attempt(engine_memory, engine) is not None or engine.pooled
    attempt(get_model, lookup)


# -- the command line --------------------------------------------------------------------------------------

# each option with values it takes, and values no option takes
TPS = ["1", "2", "4", "8"]
OPTIONS = {"--model": ["llama-3.1-8b", "qwen2.5-7b", "deepseek-v3", "jamba-v0.1", "gpt-9"],
           "--kv-dtype": ["fp8", "float32", "int3"], "--src-tp": TPS, "--dst-tp": TPS, "--src-pp": ["1", "2"],
           "--dst-pp": ["1", "2"], "--src-block": ["16", "32", "48"], "--dst-block": ["16", "32", "17"],
           "--src-kernel-block": ["16", "8"], "--dst-kernel-block": ["16", "8"], "--src-layout": ["HND", "NHD"],
           "--dst-storage": ["packed", "separate", "blocks_first"], "--dst-conv-layout": ["DS", "SD"],
           "--backend": ["flashinfer", "flash_attn"], "--spec-tokens": ["0", "1"],
           "--conv-strategy": ["direct", "staged", "permuted"], "--rank": ["0", "1"]}
FLAGS = ["--vllm", "--costs", "--verify", "--json", "--bogus", "-h"]
BAD_VALUES = st.one_of(st.sampled_from(["0", "-1", "1000003", "1099511627776", "1000000000000", "two", "", "1e3"]),
                       st.text(max_size=4))


@st.composite
def argvs(draw):
    head = draw(st.sampled_from([["plan"]] * 6 + [["models"], [], ["nope"]]))
    args = []
    for _ in range(draw(st.integers(0, 3))):
        if draw(st.integers(0, 3)) == 0:
            args.append(draw(st.sampled_from(FLAGS[:4] * 4 + FLAGS[4:])))
        else:
            option = draw(st.sampled_from(sorted(OPTIONS)))
            args += [option, draw(mix(st.sampled_from(OPTIONS[option]), 6) if draw(st.integers(0, 4)) else BAD_VALUES)]
    if draw(st.integers(0, 19)) == 0:
        return draw(junk)
    return head + [a if isinstance(a, str) else repr(a) for a in args]


@settings(max_examples=EXAMPLES["cli"], suppress_health_check=[HealthCheck.too_slow])
@given(argv=argvs())
def test_cli(argv):
    """Status 0, or 2 with exactly one line `kvplan: error: ...` on stderr (argparse's
    errors included); --verify of a plan the CLI made passes."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        status = main(argv)
    event(f"status {status}")
    if status == 2:
        lines = err.getvalue().splitlines()
        assert len(lines) == 1 and lines[0].startswith("kvplan: error: "), err.getvalue()
    else:
        assert status == 0, (status, err.getvalue())
        if isinstance(argv, list) and "--verify" in argv and "-h" not in argv:
            assert "every byte right" in out.getvalue() or '"verified": true' in out.getvalue()


def test_examples_total_at_least_5000():
    assert sum(EXAMPLES.values()) >= 5000
