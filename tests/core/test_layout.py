"""Laws of the affine `Layout` (kvplan.layout.affine): evaluate, size / cosize, offsets,
flatten, coalesce, mode and restrict, each checked against an independent statement of
its defining equation over generated (possibly nested) layouts."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kvplan import SpecError
from kvplan.layout import Layout

# -- generated layouts ---------------------------------------------------------------------------

_leaf = st.tuples(st.integers(1, 4), st.integers(0, 24))  # (extent, stride) of one flat mode


def _nest(children: list) -> tuple:
    return tuple(c[0] for c in children), tuple(c[1] for c in children)


_modes = st.recursive(_leaf, lambda inner: st.lists(inner, min_size=1, max_size=3).map(_nest), max_leaves=6)


def layouts(*, flat_mode: bool = False):
    """A layout of 1-3 top-level modes, each flat or nested, of at most 1024 coordinates;
    `flat_mode`: at least one top-level mode is a plain extent (what `restrict` takes)."""
    return _layouts(flat_mode=flat_mode).filter(lambda layout: layout.size <= 1024)


@st.composite
def _layouts(draw, *, flat_mode: bool):
    modes = draw(st.lists(_modes, min_size=1, max_size=3))
    if flat_mode and all(isinstance(m[0], tuple) for m in modes):
        modes.insert(draw(st.integers(0, len(modes))), draw(_leaf))
    return Layout(shape=tuple(m[0] for m in modes), stride=tuple(m[1] for m in modes),
                  offset=draw(st.integers(0, 40)))


# -- an independent statement of evaluation -------------------------------------------------------

def _leaves(shape, stride) -> list[tuple[int, int]]:
    if isinstance(shape, tuple):
        return [leaf for s, d in zip(shape, stride, strict=True) for leaf in _leaves(s, d)]
    return [(shape, stride)]


def _colex(index, leaves):
    """Offset of flat `index` over flat modes: colexicographic digits, the last mode
    taking whatever is left (no modulo on it)."""
    index, total = np.asarray(index, np.int64), 0
    for k, (extent, stride) in enumerate(leaves):
        digit = index if k + 1 == len(leaves) else index % extent
        total = total + digit * stride
        index = index // extent
    return total


def reference(layout: Layout, index):
    return layout.offset + _colex(index, _leaves(layout.shape, layout.stride))


def _mode_size(shape) -> int:
    return math.prod(e for e, _ in _leaves(shape, shape))


def _grid(layout: Layout) -> list[np.ndarray]:
    """One broadcastable coordinate array per top-level mode covering all its indices."""
    n = len(layout.shape)
    return [np.arange(_mode_size(s)).reshape([-1 if k == m else 1 for k in range(n)])
            for m, s in enumerate(layout.shape)]


# -- evaluate ---------------------------------------------------------------------------------------

@settings(max_examples=100)
@given(layouts())
def test_a_coordinate_per_mode_is_offset_plus_each_modes_colex_offset(layout):
    """L(c0, c1, ...) = offset + sum over modes of the mode's colex offset of c_m, which is
    also the offset of the flat index c0 + s0*(c1 + s1*(...)) (numpy grids broadcast)."""
    grid = _grid(layout)
    got = np.asarray(layout(*grid))
    expected = layout.offset + sum(_colex(c, _leaves(s, d)) for c, s, d in zip(grid, layout.shape, layout.stride,
                                                                                  strict=True))
    assert np.array_equal(np.broadcast_to(got, np.shape(expected)), expected)
    flat, scale = 0, 1
    for c, s in zip(grid, layout.shape, strict=True):
        flat, scale = flat + c * scale, scale * _mode_size(s)
    assert np.array_equal(np.broadcast_to(got, np.shape(flat)), reference(layout, flat))


@settings(max_examples=100)
@given(layout=layouts(), data=st.data())
def test_a_flat_index_is_split_colexicographically_the_last_mode_absorbing_the_rest(layout, data):
    """L(i) for i < size and beyond: the digits of i, last flat mode unbounded; scalars
    give the same as arrays."""
    index = np.arange(3 * layout.size)
    assert np.array_equal(layout(index), reference(layout, index))
    i = data.draw(st.integers(0, 3 * layout.size))
    assert layout(i) == int(reference(layout, i))


@settings(max_examples=100)
@given(layout=layouts(), data=st.data())
def test_a_congruent_coordinate_tuple_is_the_dot_product_with_the_strides(layout, data):
    """A coordinate with the shape's nesting maps to offset + sum(coord * stride) leaf by leaf."""
    def coordinate(shape):
        if isinstance(shape, tuple):
            return tuple(coordinate(s) for s in shape)
        return data.draw(st.integers(0, shape - 1))

    coord = tuple(coordinate(s) for s in layout.shape)
    leaves = _leaves(coord, coord)
    strides = [d for _, d in _leaves(layout.shape, layout.stride)]
    assert layout(*coord) == layout.offset + sum(c * d for (c, _), d in zip(leaves, strides, strict=True))


def test_evaluate_degenerate_layouts():
    """Extent 1, stride 0 and nesting one deep inside another."""
    assert Layout(shape=(1,), stride=(0,), offset=7)(0) == 7
    zero = Layout(shape=(4, 3), stride=(0, 5))
    assert [zero(i, 2) for i in range(4)] == [10] * 4
    nested = Layout(shape=((2, (2, 3)),), stride=((1, (10, 100)),))
    assert [nested(i) for i in range(12)] == [a + 10 * b + 100 * c for c in range(3) for b in range(2)
                                              for a in range(2)]
    with pytest.raises(SpecError, match="2 modes, got a coordinate of 3"):
        Layout(shape=(2, 2), stride=(1, 2))(0, 0, 0)


# -- size, cosize, offsets ------------------------------------------------------------------------

@settings(max_examples=100)
@given(layouts())
def test_size_counts_coordinates_cosize_is_one_past_the_largest_offset(layout):
    """size = number of coordinates; with strides >= 0, cosize = max offset + 1 and offsets()
    is every flat index evaluated, in order, as int64."""
    assert layout.size == math.prod(_mode_size(s) for s in layout.shape)
    offsets = layout.offsets()
    assert offsets.dtype == np.int64 and offsets.shape == (layout.size,)
    assert np.array_equal(offsets, reference(layout, np.arange(layout.size)))
    assert [int(x) for x in offsets[:16]] == [layout(i) for i in range(min(16, layout.size))]
    assert layout.cosize == int(offsets.max()) + 1


# -- flatten and coalesce -------------------------------------------------------------------------

@settings(max_examples=100)
@given(layouts())
def test_flatten_splices_nested_modes_and_keeps_the_map(layout):
    """flatten(): flat modes, the leaves in order, and the same offset for every flat index."""
    flat = layout.flatten()
    assert all(isinstance(s, int) for s in flat.shape)
    assert list(zip(flat.shape, flat.stride, strict=True)) == _leaves(layout.shape, layout.stride)
    index = np.arange(2 * layout.size)
    assert np.array_equal(flat(index), layout(index))
    assert (flat.size, flat.cosize, flat.offset) == (layout.size, layout.cosize, layout.offset)


@settings(max_examples=100)
@given(layouts())
def test_coalesce_keeps_the_map_and_is_minimal(layout):
    """coalesce(): the same offset for every flat index < size, flat modes, no extent-1 mode
    (unless the result is the single mode (1):(0)) and no two neighbours mergeable
    (stride[i+1] == shape[i] * stride[i]); coalescing again changes nothing."""
    c = layout.coalesce()
    assert np.array_equal(c.offsets(), layout.offsets())
    assert c.size == layout.size and c.offset == layout.offset
    assert all(isinstance(s, int) for s in c.shape)
    if c.shape == (1,):
        assert c.stride == (0,) and layout.size == 1
    else:
        assert 1 not in c.shape
    for i in range(len(c.shape) - 1):
        assert c.stride[i + 1] != c.shape[i] * c.stride[i], f"modes {i}, {i + 1} of {c} mergeable"
    assert c.coalesce() == c


def test_coalesce_degenerate_layouts():
    """All extent 1 -> (1):(0); stride-0 modes merge into one broadcast mode; nested
    contiguous modes collapse to one."""
    assert Layout(shape=(1, (1, 1)), stride=(3, (5, 7)), offset=2).coalesce() == \
        Layout(shape=(1,), stride=(0,), offset=2)
    assert Layout(shape=(2, 3), stride=(0, 0)).coalesce() == Layout(shape=(6,), stride=(0,))
    assert Layout(shape=((2, 2), 2), stride=((1, 2), 4)).coalesce() == Layout(shape=(8,), stride=(1,))
    assert Layout(shape=(2, 2), stride=(2, 1)).coalesce() == Layout(shape=(2, 2), stride=(2, 1))


# -- mode and restrict ------------------------------------------------------------------------------

@settings(max_examples=100)
@given(layout=layouts(), data=st.data())
def test_mode_is_one_mode_alone_without_the_offset(layout, data):
    """mode(m)(c) = L(0, .., c, .., 0) - offset for every index c of mode m."""
    m = data.draw(st.integers(0, len(layout.shape) - 1))
    alone = layout.mode(m)
    assert alone.size == _mode_size(layout.shape[m]) and alone.offset == 0
    c = np.arange(alone.size)
    coord = [c if k == m else 0 for k in range(len(layout.shape))]
    assert np.array_equal(alone(c), np.asarray(layout(*coord)) - layout.offset)


@settings(max_examples=100)
@given(layout=layouts(flat_mode=True), data=st.data())
def test_restrict_is_a_slice_of_one_mode(layout, data):
    """restrict(m, a, b)(.., c', ..) = L(.., a + c', ..) for 0 <= c' < b - a, every other
    mode unchanged."""
    m = data.draw(st.sampled_from([k for k, s in enumerate(layout.shape) if isinstance(s, int)]))
    extent = layout.shape[m]
    start = data.draw(st.integers(0, extent - 1))
    stop = data.draw(st.integers(start + 1, extent))
    r = layout.restrict(m, start, stop)
    assert r.shape[m] == stop - start and r.size == layout.size // extent * (stop - start)
    grid = _grid(r)
    shifted = [c + start if k == m else c for k, c in enumerate(grid)]
    assert np.array_equal(np.asarray(r(*grid)), np.asarray(layout(*shifted)))


@pytest.mark.parametrize("start, stop", [(2, 2), (3, 2), (-1, 2), (0, 5)])
def test_restrict_outside_the_mode_raises(start, stop):
    with pytest.raises(SpecError, match=rf"restrict mode 0 of .* to \[{start}, {stop}\)"):
        Layout(shape=(4, 2), stride=(1, 4)).restrict(0, start, stop)


def test_restrict_counts_a_negative_mode_from_the_end_as_mode_does():
    layout = Layout(shape=(4, 3), stride=(1, 4))
    assert layout.mode(-1) == layout.mode(1)
    assert layout.restrict(-1, 0, 2) == layout.restrict(1, 0, 2)


def test_restrict_of_a_nested_mode_raises():
    with pytest.raises(SpecError, match="restrict mode 1"):
        Layout(shape=(4, (2, 2)), stride=(1, (4, 8))).restrict(1, 0, 1)


# -- invalid layouts ----------------------------------------------------------------------------------

@pytest.mark.parametrize("shape, stride, offset", [
    ([2, 2], [1, 2], 0),          # lists, not tuples
    ((2, 2), (1,), 0),            # lengths differ
    ((2, (2, 2)), (1, 2), 0),     # nested shape, flat stride
    ((2, 2), (1, (2, 4)), 0),     # flat shape, nested stride
    ((0, 2), (1, 2), 0),          # extent 0
    ((2, -1), (1, 2), 0),         # negative extent
    ((2, 2.0), (1, 2), 0),        # float extent
    ((True, 2), (1, 2), 0),       # bool extent
    ((2, 2), (1, -2), 0),         # negative stride
    ((2, 2), (1, 2), -1),         # negative offset
    ((), 3, 0),                   # shape not a tuple of modes
])
def test_invalid_shape_stride_or_offset_raises_spec_error(shape, stride, offset):
    with pytest.raises(SpecError, match="Layout"):
        Layout(shape=shape, stride=stride, offset=offset)
