"""Laws of byte-range coalescing (kvplan.planning.ranges): `run_starts` / `merged_nbytes`
merge exactly the neighbours contiguous on both sides with equal keys, keeping the byte
map; `cut_rows` is their inverse, re-assembling every row from pieces of at most
`max_bytes`."""

from __future__ import annotations

import numpy as np
from _laws import byte_map
from hypothesis import given, settings
from hypothesis import strategies as st

from kvplan.planning import cut_rows, merged_nbytes, run_starts


_row = st.tuples(st.integers(1, 6), st.booleans(), st.booleans(), st.integers(0, 200), st.integers(0, 200),
                 st.sampled_from([0, 0, 0, 1]), st.sampled_from([0, 0, 2]))


@st.composite
def copy_rows(draw, max_rows: int = 16):
    """Rows (keys, src_offset, dst_offset, nbytes) in copy order; each row continues the
    previous one on neither, one or both sides, with keys that may change."""
    src, dst, nbytes, key, other = [], [], [], [], []
    for i, (size, follow_src, follow_dst, s, d, k, o) in enumerate(draw(st.lists(_row, max_size=max_rows))):
        src.append(src[-1] + nbytes[-1] if i and follow_src else s)
        dst.append(dst[-1] + nbytes[-1] if i and follow_dst else d)
        nbytes.append(size)
        key.append(k)
        other.append(o)
    return ([np.array(key, np.int64), np.array(other, np.int64)], np.array(src, np.int64),
            np.array(dst, np.int64), np.array(nbytes, np.int64))


@settings(max_examples=150)
@given(copy_rows())
def test_run_starts_merge_exactly_rows_contiguous_on_both_sides_with_equal_keys(rows):
    """Row i starts a run unless it has row i-1's keys and follows it directly on both
    sides (checked row by row)."""
    keys, src, dst, nbytes = rows
    starts = set(run_starts(keys, src, dst, nbytes).tolist())
    for i in range(len(nbytes)):
        continues = i > 0 and all(k[i] == k[i - 1] for k in keys) and src[i] == src[i - 1] + nbytes[i - 1] \
            and dst[i] == dst[i - 1] + nbytes[i - 1]
        assert (i in starts) != continues


@settings(max_examples=150)
@given(copy_rows())
def test_merging_keeps_the_byte_map_and_leaves_nothing_mergeable(rows):
    """Merged rows (first row of each run, merged_nbytes) copy the same bytes in the same
    order, and running run_starts on them again merges nothing."""
    keys, src, dst, nbytes = rows
    starts = run_starts(keys, src, dst, nbytes)
    merged = merged_nbytes(nbytes, starts)
    assert merged.sum() == nbytes.sum() and (merged > 0).all()
    m_keys = [k[starts] for k in keys]
    assert byte_map(m_keys, src[starts], dst[starts], merged) == byte_map(keys, src, dst, nbytes)
    assert np.array_equal(run_starts(m_keys, src[starts], dst[starts], merged), np.arange(len(starts)))


def test_run_starts_degenerate_cases():
    """No rows; no key columns; one row."""
    empty = np.zeros(0, np.int64)
    assert run_starts([], empty, empty, empty).tolist() == [] and merged_nbytes(empty, empty).tolist() == []
    one = np.array([5])
    assert run_starts([], one, one, one).tolist() == [0]
    src, dst, n = np.array([0, 4, 8]), np.array([10, 14, 18]), np.array([4, 4, 4])
    assert run_starts([], src, dst, n).tolist() == [0] and merged_nbytes(n, np.array([0])).tolist() == [12]


@settings(max_examples=150)
@given(st.lists(st.integers(0, 40), max_size=20), st.integers(1, 12))
def test_cut_rows_reassemble_every_row_in_pieces_of_at_most_max_bytes(sizes, max_bytes):
    """Pieces of a row, in order, are consecutive and cover exactly [0, nbytes); all but
    the last are max_bytes long (so there are ceil(n / max_bytes) of them); a zero-length
    row keeps one empty piece."""
    nbytes = np.array(sizes, np.int64)
    row, within, size = cut_rows(nbytes, max_bytes)
    assert np.all(np.diff(row) >= 0) and (size <= max_bytes).all() and (size >= 0).all()
    for r, n in enumerate(sizes):
        mine = np.flatnonzero(row == r)
        if n == 0:
            assert within[mine].tolist() == [0] and size[mine].tolist() == [0]
            continue
        assert len(mine) == -(-n // max_bytes)
        ends = within[mine] + size[mine]
        assert within[mine][0] == 0 and ends[-1] == n and np.array_equal(within[mine][1:], ends[:-1])
        assert (size[mine][:-1] == max_bytes).all()


@settings(max_examples=150)
@given(copy_rows(), st.integers(1, 8))
def test_cutting_then_coalescing_gives_the_rows_back(rows, max_bytes):
    """cut_rows is the inverse of coalescing: pieces copy the same bytes, and merging the
    pieces of maximally merged rows restores them."""
    keys, src, dst, nbytes = rows
    starts = run_starts(keys, src, dst, nbytes)
    keys, src, dst, nbytes = [k[starts] for k in keys], src[starts], dst[starts], merged_nbytes(nbytes, starts)
    row, within, size = cut_rows(nbytes, max_bytes)
    p_keys, p_src, p_dst = [k[row] for k in keys], src[row] + within, dst[row] + within
    assert byte_map(p_keys, p_src, p_dst, size) == byte_map(keys, src, dst, nbytes)
    again = run_starts(p_keys, p_src, p_dst, size)
    assert np.array_equal(row[again], np.arange(len(nbytes)))
    assert np.array_equal(merged_nbytes(size, again), nbytes)
