"""Laws of placements (kvplan.spec.placement): the ranks' intervals of a `Shard()`,
`Shard(replicate_excess=False)` or `Replicate()` axis tile the axis once per replica
group; they agree with an independent numpy statement (and with the reference cell
model's `held_indices`); `overlap` is set intersection; `pp_layer_ranges` is vLLM's
pipeline split."""

from __future__ import annotations

import numpy as np
import pytest
from _laws import placed_axes, quotes
from hypothesis import given, settings
from hypothesis import strategies as st

from kvplan import EngineSpec, ModelSpec, ShardingError, SpecError
from kvplan.check import held_indices
from kvplan.spec import AttentionSpec, Axis, Replicate, Shard, overlap, pp_layer_ranges, replica_groups


def _numpy_share(axis: Axis, tp: int, rank: int) -> list[int]:
    """Rank `rank`'s indices by numpy: equal consecutive parts, or each index repeated
    for tp / extent consecutive ranks, or everything."""
    n = axis.extent
    if isinstance(axis.placement, Replicate):
        return list(range(n))
    if tp > n:
        return np.repeat(np.arange(n), tp // n)[rank:rank + 1].tolist()
    return np.array_split(np.arange(n), tp)[rank].tolist()


@settings(max_examples=200)
@given(placed_axes())
def test_each_replica_group_tiles_the_axis_exactly_once(case):
    """Every rank is in exactly one replica group, and within a group the ranks'
    intervals are disjoint and cover [0, extent) exactly once."""
    axis, tp = case
    groups = replica_groups(axis, tp)
    assert sorted(r for g in groups for r in g) == list(range(tp))
    for group in groups:
        count = np.zeros(axis.extent, np.int64)
        for rank in group:
            lo, hi = axis.interval(tp, rank)
            assert 0 <= lo < hi <= axis.extent
            count[lo:hi] += 1
        assert (count == 1).all(), (group, count)
    # every copy of the axis is one group: held indices summed over ranks = groups x extent
    assert sum(np.subtract(*axis.interval(tp, r)[::-1]) for r in range(tp)) == len(groups) * axis.extent


@settings(max_examples=200)
@given(placed_axes())
def test_intervals_agree_with_numpy_and_the_reference_model(case):
    """Each rank's [lo, hi) is its numpy share (array_split / repeat / all) and the
    reference model's `held_indices`."""
    axis, tp = case
    for rank in range(tp):
        lo, hi = axis.interval(tp, rank)
        assert list(range(lo, hi)) == _numpy_share(axis, tp, rank) == held_indices(axis, tp, rank).tolist()


@settings(max_examples=150)
@given(extent=st.integers(1, 40), tp=st.integers(1, 40), excess=st.booleans())
def test_unshardable_extent_and_tp_raise_sharding_error_quoting_both(extent, tp, excess):
    """Shard() needs tp | extent (or extent | tp when replicating excess ranks); otherwise
    ShardingError names both numbers and the axis."""
    axis = Axis(what="widgets", extent=extent, placement=Shard(replicate_excess=excess))
    valid = extent % tp == 0 or (excess and tp > extent and tp % extent == 0)
    if valid:
        assert axis.interval(tp, tp - 1)[1] <= extent
        return
    with pytest.raises(ShardingError) as error:
        axis.interval(tp, 0, where=" of layer 5")
    assert quotes(str(error.value), extent, tp) and "widgets of layer 5" in str(error.value)


def test_placement_degenerate_cases():
    """Extent 1 over many ranks (every rank its own group), tp 1, and a replicated axis."""
    one = Axis(what="head", extent=1, placement=Shard())
    assert [one.interval(4, r) for r in range(4)] == [(0, 1)] * 4
    assert replica_groups(one, 4) == ((0,), (1,), (2,), (3,))
    assert replica_groups(Axis(what="h", extent=6, placement=Shard()), 1) == ((0,),)
    assert Replicate().interval(5, 3, 2) == (0, 5)
    with pytest.raises(ShardingError):
        Shard(replicate_excess=False).interval(1, 2, 0)


@settings(max_examples=200)
@given(st.integers(0, 12), st.integers(0, 12), st.integers(0, 12), st.integers(0, 12))
def test_overlap_is_the_intersection_of_two_ranges(a0, a1, b0, b1):
    """overlap(a, b) covers exactly range(a) & range(b), and is None when that is empty."""
    a, b = (min(a0, a1), max(a0, a1)), (min(b0, b1), max(b0, b1))
    common = set(range(*a)) & set(range(*b))
    got = overlap(a, b)
    assert (got is None) == (not common)
    if got is not None:
        assert set(range(*got)) == common and got[0] < got[1]


@settings(max_examples=200)
@given(st.integers(1, 130), st.data())
def test_pp_layer_ranges_is_vllms_even_split(layers, data):
    """pp contiguous windows partitioning [0, layers); sizes differ by at most one; the
    last stage (which also holds the LM head) is never larger than another, and the
    layers % pp extra layers go to the stages just before it (-2, -3, ...)."""
    pp = data.draw(st.integers(1, layers))
    ranges = pp_layer_ranges(layers, pp)
    assert len(ranges) == pp and ranges[0][0] == 0 and ranges[-1][1] == layers
    assert all(prev[1] == nxt[0] for prev, nxt in zip(ranges, ranges[1:]))
    sizes = [hi - lo for lo, hi in ranges]
    assert min(sizes) >= 1 and max(sizes) - min(sizes) <= 1 and sizes[-1] == min(sizes)
    bigger = [stage for stage, size in enumerate(sizes) if size > sizes[-1]]
    assert bigger == list(range(pp - 1 - layers % pp, pp - 1))


@pytest.mark.parametrize("layers, pp", [(4, 0), (4, -1), (3, 4), (1, 2)])
def test_impossible_pipeline_splits_raise_sharding_error(layers, pp):
    with pytest.raises(ShardingError) as error:
        pp_layer_ranges(layers, pp)
    assert quotes(str(error.value), pp) and (pp < 1 or quotes(str(error.value), layers))


@settings(max_examples=100)
@given(st.integers(1, 12), st.data())
def test_engine_stages_follow_pp_layer_ranges(layers, data):
    """EngineSpec.stage_layers is pp_layer_ranges, and stage_of(layer) names the window
    holding the layer (SpecError outside the model)."""
    pp = data.draw(st.integers(1, layers))
    e = EngineSpec(model=ModelSpec(name="m", layers=(AttentionSpec(2, 8),) * layers), pp=pp, tp=2)
    assert e.stage_layers == pp_layer_ranges(layers, pp) and e.world_size == 2 * pp
    for layer in range(layers):
        lo, hi = e.stage_layers[e.stage_of(layer)]
        assert lo <= layer < hi
    with pytest.raises(SpecError, match=f"layer {layers} is outside"):
        e.stage_of(layers)
