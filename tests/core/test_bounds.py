"""Laws of binding and bounds (kvplan.lowering.addresses / bounds): an address is its
region's base plus the row's offset, looked up per rank on the source side; check_bounds
raises exactly when some row leaves the memory it names (checked row by row)."""

from __future__ import annotations

import re

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kvplan import BoundsError, RankError, SpecError, Transfer
from kvplan.lowering import DescriptorList, bind, bind_ranked, check_bounds, check_descriptors, per_rank

_sizes = st.lists(st.integers(1, 64), min_size=1, max_size=3)


@st.composite
def _inside(draw, size: int):
    """(offset, nbytes) of a range inside a region of `size` bytes."""
    offset = draw(st.integers(0, size - 1))
    return offset, draw(st.integers(1, size - offset))


@st.composite
def bounded_transfers(draw):
    """(transfer, src_sizes by rank, dst_sizes): rows inside their regions, then perhaps
    one field of one row pushed anywhere (outside or not), or one row made a byte longer."""
    src_sizes = draw(st.dictionaries(st.integers(0, 3), _sizes, min_size=1, max_size=3))
    dst_sizes = draw(_sizes)
    rows = []
    for _ in range(draw(st.integers(1, 6))):
        rank = draw(st.sampled_from(sorted(src_sizes)))
        s_reg, d_reg = draw(st.integers(0, len(src_sizes[rank]) - 1)), draw(st.integers(0, len(dst_sizes) - 1))
        s_off, n = draw(_inside(src_sizes[rank][s_reg]))
        d_off = draw(st.integers(0, dst_sizes[d_reg] - n)) if n <= dst_sizes[d_reg] else 0
        rows.append([rank, s_reg, s_off, d_reg, d_off, n if n <= dst_sizes[d_reg] else dst_sizes[d_reg]])
    corrupt = draw(st.sampled_from(["none", "field", "one more byte"]))
    row = draw(st.integers(0, len(rows) - 1))
    if corrupt == "field":
        field = draw(st.integers(0, 5))
        rows[row][field] = draw(st.integers(-2, 70) if field in (2, 4, 5) else st.integers(-1, 5))
    elif corrupt == "one more byte":
        rows[row][5] += 1
    cols = np.array(rows, np.int64).T
    return dict(zip(("src_rank", "src_region", "src_offset", "dst_region", "dst_offset", "nbytes"), cols,
                    strict=True)), src_sizes, dst_sizes


def _outside(t: dict, src_sizes: dict, dst_sizes: list) -> set[int]:
    """Rows leaving registered memory on either side (unknown rank or region: size 0;
    a negative length is outside too)."""
    bad = set()
    for i in range(len(t["nbytes"])):
        rank, s_reg, s_off, d_reg, d_off, n = (int(t[c][i]) for c in ("src_rank", "src_region", "src_offset",
                                                                        "dst_region", "dst_offset", "nbytes"))
        regions = src_sizes.get(rank, [])
        s_size = regions[s_reg] if 0 <= s_reg < len(regions) else 0
        d_size = dst_sizes[d_reg] if 0 <= d_reg < len(dst_sizes) else 0
        if n < 0 or s_off < 0 or s_off + n > s_size or d_off < 0 or d_off + n > d_size:
            bad.add(i)
    return bad


@settings(max_examples=200)
@given(bounded_transfers())
def test_check_bounds_raises_exactly_when_a_row_leaves_its_memory(case):
    """BoundsError iff some row reads or writes outside its registered region (or names a
    rank or region nobody registered); a row it names is such a row. Negative values are
    refused when the Transfer is built, the rest by check_bounds."""
    cols, src_sizes, dst_sizes = case
    bad = _outside(cols, src_sizes, dst_sizes)
    if not bad:
        check_bounds(Transfer(dst_rank=0, **cols), src_sizes, dst_sizes)
        return
    with pytest.raises(BoundsError) as error:
        check_bounds(Transfer(dst_rank=0, **cols), src_sizes, dst_sizes)
    named = re.match(r"(?:Transfer )?row (\d+)", str(error.value))
    assert named is None or int(named.group(1)) in bad


def test_check_bounds_degenerate_cases():
    """No rows pass anything; a row ending exactly at the region end passes, one byte
    more does not and the message quotes the range and the size."""
    empty = Transfer(dst_rank=0, src_rank=[], src_region=[], src_offset=[], dst_region=[], dst_offset=[], nbytes=[])
    check_bounds(empty, {}, [])
    t = Transfer(dst_rank=0, src_rank=[0], src_region=[0], src_offset=[8], dst_region=[0], dst_offset=[0], nbytes=[8])
    check_bounds(t, {0: [16]}, [8])
    with pytest.raises(BoundsError, match=r"row 0 reads \[8, 16\) of source rank 0 region 0, which holds 15 bytes"):
        check_bounds(t, {0: [15]}, [8])
    with pytest.raises(BoundsError, match=r"row 0 writes \[0, 8\) of destination region 0, which holds 7 bytes"):
        check_bounds(t, {0: [16]}, [7])


@st.composite
def ranked_rows(draw):
    bases = draw(st.dictionaries(st.integers(0, 4), st.lists(st.integers(0, 2**48), min_size=1, max_size=3),
                                 min_size=1, max_size=3))
    rows = draw(st.lists(st.sampled_from(sorted(bases)).flatmap(
        lambda r: st.tuples(st.just(r), st.integers(0, len(bases[r]) - 1), st.integers(0, 2**32))), max_size=8))
    cols = np.array(rows, np.int64).reshape(-1, 3).T
    return bases, cols[0], cols[1], cols[2]


@settings(max_examples=100)
@given(ranked_rows())
def test_an_address_is_the_base_of_its_rank_and_region_plus_the_offset(case):
    """bind_ranked(rank, region, offset) = bases[rank][region] + offset row by row, as
    uint64, for bases given by rank in a dict or a list; bind and DescriptorList.bind
    are the one-rank case."""
    bases, rank, region, offset = case
    expected = [bases[int(r)][int(g)] + int(o) for r, g, o in zip(rank, region, offset, strict=True)]
    got = bind_ranked(rank, region, offset, bases)
    assert got.dtype == np.uint64 and got.tolist() == expected
    as_list = [bases.get(r, []) for r in range(max(bases) + 1)]
    assert bind_ranked(rank, region, offset, as_list).tolist() == expected
    for r in bases:
        mine = rank == r
        assert bind(region[mine], offset[mine], bases[r]).tolist() == [e for e, m in zip(expected, mine) if m]
        listed = DescriptorList(region=region[mine], offset=offset[mine], nbytes=np.ones(int(mine.sum())))
        assert np.array_equal(listed.bind(bases[r]), bind(region[mine], offset[mine], bases[r]))


def test_binding_unknown_ranks_or_regions_raises():
    rows = np.array([1, 0]), np.array([0, 2]), np.array([0, 0])
    with pytest.raises(RankError, match="no source base addresses \\(or sizes\\) for rank 1"):
        bind_ranked(*rows, {0: [0, 0, 0]})
    with pytest.raises(SpecError, match="values of 2 regions given, rows use region 2"):
        per_rank(rows[0], rows[1], {0: [0, 0], 1: [0]})
    with pytest.raises(SpecError, match="bases of 1 regions given, rows use region 2"):
        bind(np.array([2]), np.array([0]), [100])


@settings(max_examples=150)
@given(sizes=_sizes, data=st.data())
def test_check_descriptors_raises_exactly_when_a_descriptor_leaves_its_region(sizes, data):
    """A descriptor list is judged descriptor by descriptor against its regions' sizes."""
    rows = data.draw(st.lists(st.tuples(st.integers(-1, len(sizes)), st.integers(-2, 70), st.integers(-1, 70)),
                              min_size=1, max_size=6), label="descriptors")
    d = DescriptorList(region=[r for r, _, _ in rows], offset=[o for _, o, _ in rows], nbytes=[n for _, _, n in rows])
    outside = [i for i, (r, o, n) in enumerate(rows)
               if not (0 <= r < len(sizes) and o >= 0 and n >= 0 and o + n <= sizes[r])]
    if outside:
        with pytest.raises(BoundsError, match="descriptor"):
            check_descriptors(d, sizes, side="local")
    else:
        check_descriptors(d, sizes, side="local")


@pytest.mark.parametrize(("offset", "nbytes"), [(2**63 - 8, 16), (2**63 - 1, 2), (2**62, 2**62 + 1)])
def test_a_range_whose_end_passes_int64_is_refused(offset, nbytes):
    """offset + nbytes would wrap to a small number and pass a naive comparison."""
    t = Transfer(dst_rank=0, src_rank=[0], src_region=[0], src_offset=[0], dst_region=[0], dst_offset=[offset],
                 nbytes=[nbytes])
    with pytest.raises(BoundsError, match=f"writes \\[{offset}, {offset + nbytes}\\)"):
        check_bounds(t, {0: [64]}, [64])
    with pytest.raises(BoundsError, match=f"covers \\[{offset}, {offset + nbytes}\\)"):
        check_descriptors(DescriptorList(region=[0], offset=[offset], nbytes=[nbytes]), [64], side="local")
