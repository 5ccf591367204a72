"""Laws of source selection (kvplan.planning.sources): `source_runs` is `choose_source`
applied index by index with equal neighbours merged; `choose_source` takes a holder in
the preferred ranks, else the lowest-numbered holder; `preferred_sources` are the
source ranks whose share of the TP axis overlaps the destination rank's share."""

from __future__ import annotations

from fractions import Fraction

import pytest
from _laws import holders_of, placed_axes
from hypothesis import given, settings
from hypothesis import strategies as st

from kvplan import ShardingError
from kvplan.planning import choose_source, preferred_sources, source_runs


def _merged(picks: list[tuple[int, int]]) -> list[tuple[int, int, int]]:
    """[(index, rank)] in index order -> maximal runs (rank, start, stop)."""
    runs: list[list[int]] = []
    for index, rank in picks:
        if runs and runs[-1][0] == rank and runs[-1][2] == index:
            runs[-1][2] = index + 1
        else:
            runs.append([rank, index, index + 1])
    return [tuple(r) for r in runs]


@st.composite
def source_cases(draw):
    """(lo, hi, holders, preferred, placement): holders of a real placement over tp_src
    ranks, a destination rank's preferred sources and a range of the axis."""
    axis, src_tp = draw(placed_axes())
    dst_tp = draw(st.integers(1, 24))
    preferred = preferred_sources(draw(st.integers(0, dst_tp - 1)), dst_tp, src_tp)
    lo = draw(st.integers(0, axis.extent - 1))
    hi = draw(st.integers(lo + 1, axis.extent))
    return lo, hi, holders_of(axis, src_tp), preferred


@settings(max_examples=200)
@given(source_cases())
def test_source_runs_is_choose_source_per_index_merged(case):
    """source_runs(lo, hi) = maximal runs of choose_source(i) for i in [lo, hi)."""
    lo, hi, holders, preferred = case
    picks = [(i, choose_source(i, holders, preferred)) for i in range(lo, hi)]
    assert source_runs(lo, hi, holders, preferred) == _merged(picks)


@settings(max_examples=200)
@given(source_cases())
def test_choose_source_prefers_the_preferred_ranks_then_the_lowest(case):
    """The chosen rank holds the index; it is the lowest preferred holder when one exists,
    else the lowest holder."""
    lo, hi, holders, preferred = case
    for i in range(lo, hi):
        owning = [rank for rank, a, b in holders if a <= i < b]
        wanted = min([r for r in owning if r in preferred], default=min(owning))
        assert choose_source(i, holders, preferred) == wanted


def test_choose_source_fallback_is_the_lowest_numbered_holder_whatever_the_list_order():
    holders = [(1, 0, 2), (0, 0, 2)]
    assert choose_source(0, holders, range(5, 6)) == 0


def test_no_holder_raises_sharding_error_naming_the_index():
    holders = [(0, 0, 2), (1, 4, 6)]
    with pytest.raises(ShardingError, match="index 3"):
        choose_source(3, holders, range(0, 1))
    with pytest.raises(ShardingError, match=r"indices \[\(2, 4\)\]"):
        source_runs(0, 6, holders, range(0, 1))


def test_source_runs_degenerate_cases():
    """One index, a replicated index held by every rank, and a range held by one rank."""
    every = [(p, 0, 1) for p in range(4)]
    assert source_runs(0, 1, every, range(2, 3)) == [(2, 0, 1)]
    assert source_runs(0, 1, every, range(7, 9)) == [(0, 0, 1)]
    assert source_runs(3, 5, [(0, 0, 8)], range(1, 2)) == [(0, 3, 5)]


@settings(max_examples=200)
@given(st.integers(1, 32), st.integers(1, 32), st.data())
def test_preferred_sources_overlap_the_destinations_share(dst_tp, src_tp, data):
    """p is preferred by decode rank r exactly when [p/src_tp, (p+1)/src_tp) and
    [r/dst_tp, (r+1)/dst_tp) overlap; the range is never empty and every source rank is
    preferred by some decode rank."""
    r = data.draw(st.integers(0, dst_tp - 1))
    lo, hi = Fraction(r, dst_tp), Fraction(r + 1, dst_tp)
    overlapping = [p for p in range(src_tp) if max(lo, Fraction(p, src_tp)) < min(hi, Fraction(p + 1, src_tp))]
    got = preferred_sources(r, dst_tp, src_tp)
    assert isinstance(got, range) and list(got) == overlapping and overlapping
    assert set().union(*(preferred_sources(d, dst_tp, src_tp) for d in range(dst_tp))) == set(range(src_tp))
