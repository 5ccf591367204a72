"""Public core names no other test reached: layer specs and their parts, dtypes, the
component vocabulary, layer groups, field validators, model compatibility, the plan
wrappers and reports, models, transport values, the reference model's codes. Each test
states the rule the name implements and checks it on generated or hand-picked input."""

from __future__ import annotations

import attrs
import numpy as np
import pytest
from _laws import decode
from hypothesis import given, settings
from hypothesis import strategies as st

from kvplan import (AttentionSpec, EngineSpec, EngineTransferPlan, LayerGroup, ModelMismatchError, ModelSpec, Prepared,
                    RankError, ShortConvSpec, SpecError, TransportError, plan)
from kvplan.check import Cells, layer_cells, token_of
from kvplan.check.cells import code
from kvplan.layout import attention_layout, state_parts
from kvplan.models import interleaved_sliding
from kvplan.planning import PlanTables, check_compatible, plan_tables
from kvplan.planning.compat import check_same_groups, check_same_model, check_same_state_geometry
from kvplan.report import HEADER, PlanCost, compare_conv_strategies, describe, plan_cost
from kvplan.spec import (COMPONENT_CODE, COMPONENTS, CONV_COMPONENTS, CONV_LAYOUTS, KV_LAYOUTS, KV_STORAGES,
                         LAYER_SPECS, STATE_SPECS, StatePart, canonical_dtype, check_groups, default_groups,
                         dtype_bytes)
from kvplan.spec._validators import non_negative, one_of, optional_positive, positive
from kvplan.testing.strategies import DTYPES, hybrid_engine_pairs, state_layers
from kvplan.transport import GROUP, INSTALL_HINTS, Completion, Transport, known_backends

# -- layer specs -------------------------------------------------------------------------------------


@settings(max_examples=100)
@given(st.integers(1, 16), st.integers(1, 64), st.sampled_from([None, 1, 32]), st.sampled_from(DTYPES),
       st.booleans())
def test_attention_spec_sizes(heads, head_dim, head_dim_v, dtype, mla):
    """v_dim = head_dim_v or head_dim (0 for MLA), elem_bytes = dtype size, a token is
    heads x (head_dim + v_dim) x elem_bytes, and TP splits the one heads axis."""
    if mla:
        spec = AttentionSpec(1, head_dim, dtype=dtype, mla=True)
        assert spec.v_dim == 0 and spec.kind == "mla" and spec.heads.extent == 1
    else:
        spec = AttentionSpec(heads, head_dim, head_dim_v=head_dim_v, dtype=dtype)
        assert spec.v_dim == (head_dim if head_dim_v is None else head_dim_v) and spec.heads.extent == heads
    assert spec.elem_bytes == dtype_bytes(dtype)
    assert spec.bytes_per_token == spec.num_kv_heads * (spec.head_dim + spec.v_dim) * spec.elem_bytes
    assert spec.tp_axes() == (spec.heads,)


def test_mla_needs_one_latent_head():
    with pytest.raises(SpecError, match="num_kv_heads must be 1 and head_dim_v unset, got num_kv_heads=2"):
        AttentionSpec(2, 8, mla=True)


@settings(max_examples=150)
@given(st.data())
def test_state_parts_axes_and_channels(data):
    """A state layer's tp_axes are its parts' distinct axes in order; conv_channels sums
    extent x width over the conv parts; state_parts gives each conv part's channels
    (axis interval x width) in page order and the SSM part per index; parts name
    components of the vocabulary (conv ones in CONV_COMPONENTS)."""
    tp = data.draw(st.sampled_from([1, 2, 4]))
    spec = data.draw(state_layers(tps=(tp, tp)))
    parts = spec.parts()
    assert all(isinstance(p, StatePart) for p in parts) and type(spec) in STATE_SPECS
    assert spec.tp_axes() == tuple(dict.fromkeys(p.axis for p in parts))
    assert spec.conv_channels == sum(p.axis.extent * p.width for p in parts if p.component != "ssm")
    rank = data.draw(st.integers(0, tp - 1))
    conv, ssm = state_parts(spec, tp, rank)
    expected = [(p.component, p.axis.interval(tp, rank)[0] * p.width, p.axis.interval(tp, rank)[1] * p.width)
                for p in parts if p.component != "ssm"]
    assert conv == expected and all(c in CONV_COMPONENTS for c, _, _ in conv)
    ssm_parts = [p for p in parts if p.component == "ssm"]
    assert ssm == ((*ssm_parts[0].axis.interval(tp, rank), ssm_parts[0].width) if ssm_parts else None)


def test_layer_spec_families():
    """LAYER_SPECS = attention then the state specs; state layers hold no tokens."""
    assert LAYER_SPECS == (AttentionSpec, *STATE_SPECS)
    assert AttentionSpec.holds_tokens and not any(cls.holds_tokens for cls in STATE_SPECS)


def test_component_vocabulary():
    """COMPONENT_CODE inverts COMPONENTS; the conv components are those named conv*."""
    assert [COMPONENTS[COMPONENT_CODE[name]] for name in COMPONENTS] == list(COMPONENTS)
    assert CONV_COMPONENTS == {name for name in COMPONENTS if name.startswith("conv")}


# -- dtypes ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["float64", "float32", "float16", "int8", "uint8", "bfloat16", "float8_e4m3fn"])
def test_dtype_bytes_are_element_sizes(name):
    """dtype_bytes agrees with numpy's item size (bfloat16: 2, fp8: 1)."""
    size = {"bfloat16": 2, "float8_e4m3fn": 1}.get(name) or np.dtype(name).itemsize
    assert dtype_bytes(name) == size == dtype_bytes(name.upper()) == dtype_bytes("torch." + name)


@pytest.mark.parametrize("alias, name", [("bf16", "bfloat16"), ("fp16", "float16"), ("half", "float16"),
                                         ("fp32", "float32"), ("float", "float32"), ("fp8", "float8_e4m3fn"),
                                         ("FP8_E5M2", "float8_e5m2"), ("torch.bfloat16", "bfloat16")])
def test_canonical_dtype_resolves_engine_spellings(alias, name):
    assert canonical_dtype(alias) == name == canonical_dtype(name)


@pytest.mark.parametrize("bad", ["int4", "", 16, None])
def test_unknown_dtypes_raise_spec_error_quoting_them(bad):
    with pytest.raises(SpecError) as error:
        canonical_dtype(bad)
    assert repr(bad) in str(error.value)


# -- groups and validators -------------------------------------------------------------------------------

A, C = AttentionSpec(2, 8), ShortConvSpec(conv_dim=4, conv_kernel=3)


@settings(max_examples=100)
@given(st.lists(st.sampled_from([A, C]), min_size=1, max_size=10))
def test_default_groups_are_the_token_layers_then_the_state_layers(layers):
    model = ModelSpec(name="m", layers=layers)
    token = tuple(i for i, s in enumerate(layers) if s is A)
    state = tuple(i for i, s in enumerate(layers) if s is C)
    assert [g.layers for g in default_groups(model)] == [g for g in (token, state) if g]
    check_groups(model, default_groups(model))


@pytest.mark.parametrize("groups, message", [
    ((LayerGroup((0,)), LayerGroup((0, 2)), LayerGroup((1,))), "layer 0 is in groups 0 and 1"),
    ((LayerGroup((0,)), LayerGroup((1,))), r"layers \[2\] are in no group"),
    ((LayerGroup((0, 1)), LayerGroup((2,))), r"group 0 \(0, 1\) mixes attention and state layers"),
    ((LayerGroup((0, 2, 5)), LayerGroup((1,))), "group 0 names layer 5; the model has 3 layers"),
])
def test_check_groups_rejects_a_layer_twice_missing_mixed_or_unknown(groups, message):
    with pytest.raises(SpecError, match=message):
        check_groups(ModelSpec(name="m", layers=(A, C, A)), groups)


def test_layer_group_rejects_empty_and_repeated_layers():
    with pytest.raises(SpecError, match="holds no layer"):
        LayerGroup((None,))
    with pytest.raises(SpecError, match="lists a layer twice"):
        LayerGroup((1, 1))


@attrs.frozen
class _Fields:
    size: int = attrs.field(default=1, validator=positive)
    maybe: int | None = attrs.field(default=None, validator=optional_positive)
    count: int = attrs.field(default=0, validator=non_negative)
    mode: str = attrs.field(default="a", validator=one_of("a", "b"))


@pytest.mark.parametrize("field, value, ok", [
    ("size", 1, True), ("size", 0, False), ("size", True, False), ("size", 2.0, False),
    ("maybe", None, True), ("maybe", 3, True), ("maybe", 0, False),
    ("count", 0, True), ("count", -1, False), ("count", False, False),
    ("mode", "b", True), ("mode", "c", False),
])
def test_field_validators_name_the_field_and_quote_the_value(field, value, ok):
    if ok:
        assert getattr(_Fields(**{field: value}), field) == value
        return
    with pytest.raises(SpecError) as error:
        _Fields(**{field: value})
    assert f"_Fields.{field}" in str(error.value) and repr(value) in str(error.value)


@pytest.mark.parametrize("field, choices", [("kv_layout", KV_LAYOUTS), ("kv_storage", KV_STORAGES),
                                            ("conv_layout", CONV_LAYOUTS)])
def test_engine_layout_fields_accept_exactly_their_choices(field, choices):
    model = ModelSpec(name="m", layers=(A,))
    for choice in choices:
        assert getattr(EngineSpec(model=model, **{field: choice}), field) == choice
    with pytest.raises(SpecError, match=f"EngineSpec.{field} must be one of " + ", ".join(map(repr, choices))):
        EngineSpec(model=model, **{field: "other"})


# -- compatibility, plans and reports ----------------------------------------------------------------

def test_compatible_engines_may_name_the_model_differently():
    """check_compatible passes two engines of one model under two names, and each check
    names the first difference otherwise."""
    a = EngineSpec(model=ModelSpec(name="a", layers=(A, C)), tp=1)
    check_compatible(a, EngineSpec(model=ModelSpec(name="b", layers=(A, C)), tp=2))
    with pytest.raises(ModelMismatchError, match="has 2 layers, decode model 'c' has 3"):
        check_same_model(a, EngineSpec(model=ModelSpec(name="c", layers=(A, C, C))))
    with pytest.raises(ModelMismatchError, match="layer 1 is ShortConvSpec on prefill but AttentionSpec"):
        check_same_model(a, EngineSpec(model=ModelSpec(name="d", layers=(A, A))))
    with pytest.raises(ModelMismatchError, match="layer 0 .AttentionSpec. differs: head_dim: prefill 8 vs decode 4"):
        check_same_model(a, EngineSpec(model=ModelSpec(name="e", layers=(AttentionSpec(2, 4), C))))
    two = EngineSpec(model=ModelSpec(name="g", layers=(A, A, C)))
    check_same_groups(two, attrs.evolve(two, groups=(LayerGroup((0, 1)), LayerGroup((2,)))))  # the defaults
    split = attrs.evolve(two, groups=(LayerGroup((0,)), LayerGroup((1,)), LayerGroup((2,))))
    with pytest.raises(SpecError, match=r"prefill groups \[\(0, 1\), \(2,\)\], decode groups \[\(0,\), \(1,\), \(2,\)\]"):
        check_same_groups(two, split)
    with pytest.raises(ModelMismatchError, match="num_speculative_tokens=0, decode num_speculative_tokens=1"):
        check_same_state_geometry(a, attrs.evolve(a, num_speculative_tokens=1))
    attention_only = EngineSpec(model=ModelSpec(name="f", layers=(A,)))
    check_same_state_geometry(attention_only, attrs.evolve(attention_only, num_speculative_tokens=2))


def test_check_compatible_lists_every_difference_at_once_and_plan_names_them_all():
    import kvplan
    from kvplan import plan

    a = EngineSpec(model=ModelSpec(name="a", layers=(A, C, A)), tp=1)
    b = EngineSpec(model=ModelSpec(name="b", layers=(AttentionSpec(2, 4), C, AttentionSpec(2, 8, dtype="fp8"))),
                   tp=2, num_speculative_tokens=1)
    found = kvplan.check_compatible(a, b)
    assert len(found) == 3
    assert found[0].startswith("layer 0 (AttentionSpec) differs: head_dim: prefill 8 vs decode 4")
    assert found[1].startswith("layer 2 (AttentionSpec) differs: dtype: prefill 'bfloat16' vs decode")
    assert "num_speculative_tokens=0" in found[2] and "num_speculative_tokens=1" in found[2]
    assert kvplan.check_compatible(a, attrs.evolve(a, tp=2)) == ()
    with pytest.raises(ModelMismatchError, match=r"differ in 3 ways: \(1\) layer 0 .* \(2\) layer 2 .* \(3\) conv"):
        plan(a, b)
    with pytest.raises(SpecError, match="takes two EngineSpec"):
        kvplan.check_compatible(a, "b")
    # a fingerprint ignores the model's name and sees TP
    assert kvplan.fingerprint(a) == kvplan.fingerprint(attrs.evolve(a, model=attrs.evolve(a.model, name="z")))
    assert kvplan.fingerprint(a) != kvplan.fingerprint(attrs.evolve(a, tp=2))


@settings(max_examples=15)
@given(hybrid_engine_pairs(max_layers=3), st.sampled_from(["direct", "staged", "permuted"]))
def test_plan_is_plan_tables_with_its_consumers_bound(engines, strategy):
    """plan() returns an EngineTransferPlan holding plan_tables' data; has_local_steps says
    whether pre / post tables exist; cost() / describe() are plan_cost / describe."""
    tables = plan_tables(*engines, conv_strategy=strategy)
    p = plan(*engines, conv_strategy=strategy)
    assert isinstance(p, EngineTransferPlan) and isinstance(p, PlanTables)
    assert p.tables == tables.tables and p.pre_tables == tables.pre_tables and p.post_tables == tables.post_tables
    assert p.has_local_steps == bool(p.pre_tables or p.post_tables)
    assert not plan(*engines).has_local_steps
    assert p.cost() == plan_cost(p) and p.describe() == describe(p)


@settings(max_examples=30)
@given(hybrid_engine_pairs(max_layers=3), st.sampled_from(["direct", "staged", "permuted"]))
def test_plan_cost_counts_the_rows_and_bytes_of_the_tables(engines, strategy):
    """Descriptors and bytes split by token / state layer add up to the tables' rows and
    bytes; one rank's costs summed over ranks give the total; local copies are the pre
    and post rows."""
    p = plan(*engines, conv_strategy=strategy)
    total = plan_cost(p)
    assert isinstance(total, PlanCost) and total.conv_strategy == strategy
    assert total.attention_descriptors + total.state_descriptors == sum(len(t) for t in p.tables)
    assert total.attention_bytes + total.state_bytes == sum(t.total_bytes for t in p.tables)
    assert total.local_copies == sum(len(t) for t in p.pre_tables + p.post_tables)
    per_rank = [plan_cost(p, r) for r in range(len(p.tables))]
    for name in ("attention_descriptors", "attention_bytes", "state_descriptors", "state_bytes", "local_bytes"):
        assert sum(getattr(c, name) for c in per_rank) == getattr(total, name)
    with pytest.raises(RankError, match=f"dst_rank {len(p.tables)} is outside"):
        plan_cost(p, len(p.tables))


def test_compare_conv_strategies_is_a_markdown_table_of_one_row_per_strategy():
    src = EngineSpec(model=ModelSpec(name="h", layers=(AttentionSpec(4, 8), ShortConvSpec(conv_dim=8, conv_kernel=3))),
                     tp=1)
    table = compare_conv_strategies(src, attrs.evolve(src, tp=2)).splitlines()
    assert table[:2] == HEADER.splitlines() and [row.split(" | ")[0] for row in table[2:]] == \
        ["| direct", "| staged", "| permuted"]
    assert all(row.count("|") == HEADER.splitlines()[0].count("|") for row in table)


# -- layouts built directly ---------------------------------------------------------------------------------

def test_attention_layout_pads_one_kernel_page_to_a_stride():
    """A kernel page stride pads the one page (pooled regions); it cannot hold less than the
    page, nor pad separate K and V pages into one region."""
    spec = AttentionSpec(4, 8)
    natural = attention_layout(spec, 2, 1, 16, 2, "HND", "packed")
    padded = attention_layout(spec, 2, 1, 16, 2, "HND", "packed", natural.page_bytes[0] + 64)
    assert padded.page_bytes == (natural.page_bytes[0] + 64,)
    assert padded.component("K").layout.stride[1][1] == natural.page_bytes[0] + 64  # next kernel page
    assert padded.component("V").layout(1, 3) == natural.component("V").layout(1, 3)  # within a page: unchanged
    with pytest.raises(SpecError, match=f"kernel page stride {natural.page_bytes[0] - 1} B cannot hold"):
        attention_layout(spec, 2, 1, 16, 2, "HND", "packed", natural.page_bytes[0] - 1)
    with pytest.raises(SpecError, match="cannot hold pages of"):
        attention_layout(spec, 2, 1, 16, 2, "HND", "separate", 10**6)


# -- models, transport values, reference codes ------------------------------------------------------------

@settings(max_examples=50)
@given(st.integers(1, 20), st.integers(1, 7))
def test_interleaved_sliding_puts_a_global_layer_every_n(layers, every):
    """Layer i is global (no window) exactly when (i + 1) % every == 0; others slide."""
    m = interleaved_sliding("m", layers, 2, 8, window_tokens=64, global_every=every)
    assert [s.sliding_window is None for s in m.layers] == [(i + 1) % every == 0 for i in range(layers)]
    assert {s.sliding_window for s in m.layers} <= {None, 64}


def test_transport_values():
    """Backends are the entry points of GROUP; install hints name known backends;
    Prepared carries what it was given; anything with wait() is a Completion, an object
    with every endpoint method a Transport; a TransportError names its peer and request."""
    assert GROUP == "kvplan.backends" and set(INSTALL_HINTS) <= set(known_backends())
    prepared = Prepared(plan=None, dst_rank=3, backend="host", state={"k": 1})
    assert (prepared.dst_rank, prepared.backend, prepared.state) == (3, "host", {"k": 1})

    class Done:
        def wait(self, timeout_s=None):
            return None

    assert isinstance(Done(), Completion) and not isinstance(object(), Completion)
    members = ("register", "metadata", "add_peer", "publish", "fetch_peer", "prepare", "execute", "serve",
               "copy_local", "close")
    endpoint = type("Endpoint", (), {"name": "x", **{m: lambda self, *a, **k: None for m in members}})
    assert isinstance(endpoint(), Transport)
    for missing in members:  # every method is part of the protocol
        partial = type("Partial", (), {"name": "x", **{m: lambda self: None for m in members if m != missing}})
        assert not isinstance(partial(), Transport)
    error = TransportError("boom", peer="rank 2", request="r1")
    assert str(error) == "boom [peer rank 2, request 'r1']" and (error.peer, error.request) == ("rank 2", "r1")


@settings(max_examples=100)
@given(st.sampled_from(COMPONENTS), st.integers(0, 2**20 - 1), st.integers(0, 2**22 - 1), st.integers(0, 2**16 - 1))
def test_reference_codes_hold_their_fields(component, index, token, sub):
    """code() packs (component, index, token, sub) so that token_of and the tests'
    decode() take them apart again."""
    c = code(component, index, token, sub)
    assert decode(c) == (COMPONENT_CODE[component], index, token, sub) and token_of(np.array([c]))[0] == token


def test_cells_are_sorted_offsets_of_whole_cells():
    """layer_cells gives Cells in memory order, back to back within a page."""
    e = EngineSpec(model=ModelSpec(name="m", layers=(A,)), block_tokens=4)
    (cells,) = layer_cells(e, 0, 0, 2)
    assert isinstance(cells, Cells) and np.all(np.diff(cells.offset) == cells.size[:-1])
    assert cells.total_bytes == 2 * 4 * A.bytes_per_token == int(cells.size.sum())
