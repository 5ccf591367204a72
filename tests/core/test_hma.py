"""Laws of vLLM's hybrid-allocator grouping (kvplan.presets.hma_groups): every layer in
exactly one group, one spec per group, equal group sizes padded with None at the end,
and each spec's layers dealt out strided over ceil(n / size) groups, size being the
smallest bucket (the largest when max < 1.5 * min)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from kvplan import AttentionSpec, EngineSpec, Mamba2Spec, ModelSpec, ShortConvSpec
from kvplan.presets import hma_groups

SPECS = (AttentionSpec(2, 8), AttentionSpec(2, 8, sliding_window=64),
         Mamba2Spec(num_heads=4, head_dim=2, n_groups=1, d_state=2, conv_kernel=4),
         ShortConvSpec(conv_dim=4, conv_kernel=3))

models = st.lists(st.sampled_from(SPECS), min_size=1, max_size=30).map(lambda layers: ModelSpec(name="m", layers=layers))


def _buckets(model) -> list[list[int]]:
    """Layer indices per distinct spec, specs in order of first appearance."""
    order = []
    for spec in model.layers:
        if spec not in order:
            order.append(spec)
    return [[i for i, s in enumerate(model.layers) if s == spec] for spec in order]


@settings(max_examples=150)
@given(models)
def test_every_layer_is_in_exactly_one_group_of_one_spec(model):
    groups = hma_groups(model)
    real = [layer for g in groups for layer in g.layers if layer is not None]
    assert sorted(real) == list(range(model.num_layers))
    for g in groups:
        assert len({model.layers[layer] for layer in g.layers if layer is not None}) == 1


@settings(max_examples=150)
@given(models)
def test_groups_have_one_size_padded_with_none_at_the_end(model):
    """All groups have `size` slots, size = smallest bucket, or the largest when
    max < 1.5 * min; unused slots (None) only trail."""
    sizes = [len(b) for b in _buckets(model)]
    size = max(sizes) if 2 * max(sizes) < 3 * min(sizes) else min(sizes)
    for g in hma_groups(model):
        assert len(g.layers) == size
        real = [layer for layer in g.layers if layer is not None]
        assert list(g.layers) == real + [None] * (size - len(real))


@settings(max_examples=150)
@given(models)
def test_each_specs_layers_are_dealt_strided_over_its_groups(model):
    """A bucket of n layers becomes c = ceil(n / size) consecutive groups, group i holding
    the bucket's layers i, i + c, i + 2c, ... (so its real counts differ by at most one)."""
    groups = [tuple(x for x in g.layers if x is not None) for g in hma_groups(model)]
    size = len(hma_groups(model)[0].layers)
    at = 0
    for bucket in _buckets(model):
        count = -(-len(bucket) // size)
        mine = groups[at:at + count]
        at += count
        for i, members in enumerate(mine):
            assert list(members) == [bucket[k] for k in range(i, len(bucket), count)]
        assert max(map(len, mine)) - min(map(len, mine)) <= 1
    assert at == len(groups)


@settings(max_examples=50)
@given(models)
def test_engines_accept_the_groups(model):
    """hma_groups pass EngineSpec's group checks; group_slots places each layer at its slot."""
    e = EngineSpec(model=model, groups=hma_groups(model))
    for layer, (g, s) in enumerate(e.group_slots):
        assert e.layer_groups[g].layers[s] == layer


def test_hma_degenerate_models():
    """One layer; one spec (a single group of every layer, in order); the docstring's
    mamba-heavy hybrid."""
    a, m = SPECS[0], SPECS[2]
    assert [g.layers for g in hma_groups(ModelSpec(name="1", layers=(a,)))] == [(0,)]
    assert [g.layers for g in hma_groups(ModelSpec(name="d", layers=(a,) * 5))] == [(0, 1, 2, 3, 4)]
    groups = hma_groups(ModelSpec(name="h", layers=(m, m, a, m, m, m, a)))
    assert [g.layers for g in groups] == [(0, 4), (1, 5), (3, None), (2, 6)]
