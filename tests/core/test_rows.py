"""Laws of the row-table schema (kvplan.planning.rows): columns are read-only 1-D int64
arrays that never alias their caller's data, of equal length; select / concat /
from_columns act column by column as numpy indexing and concatenation; tables compare
by content."""

from __future__ import annotations

import attrs
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kvplan import SpecError, Transfer
from kvplan.planning import CopyRows, ReadTable, RowTable, column
from kvplan.planning.rows import frozen, readonly_int64


@attrs.frozen(kw_only=True)
class Pairs(RowTable):
    name: str = "pairs"
    left: np.ndarray = column()
    right: np.ndarray = column()


_values = st.lists(st.integers(-2**40, 2**40), max_size=12)


@st.composite
def tables(draw):
    left = draw(_values)
    right = draw(st.lists(st.integers(-5, 5), min_size=len(left), max_size=len(left)))
    return Pairs(left=left, right=right)


def test_column_names_are_the_column_fields_in_declaration_order():
    assert Pairs.column_names() == ("left", "right")
    t = Pairs(left=[1], right=[2])
    assert list(t.columns()) == ["left", "right"] and t.name == "pairs"


@settings(max_examples=100)
@given(_values)
def test_columns_are_readonly_int64_copies(values):
    """Any integer sequence or array becomes a read-only 1-D int64 column; writable input is
    copied, so changing it later leaves the table alone."""
    source = np.array(values, np.int64)
    t = Pairs(left=source, right=list(values))
    for col in t.columns().values():
        assert col.dtype == np.int64 and col.ndim == 1 and not col.flags.writeable
        assert col.tolist() == values
    if len(values):
        with pytest.raises(ValueError):
            t.left[0] = 1
        source[0] += 1
        assert t.left.tolist() == values


def test_a_readonly_int64_array_is_taken_as_is_and_frozen_marks_arrays_readonly():
    """readonly_int64 does not copy what is already a read-only int64 vector; frozen()
    hands back a read-only contiguous int64 view of fresh data."""
    ready = np.arange(4, dtype=np.int64)
    ready.setflags(write=False)
    assert readonly_int64(ready) is ready
    assert readonly_int64([[1, 2], [3, 4]]).tolist() == [1, 2, 3, 4]
    out = frozen(np.arange(6, dtype=np.int32)[::2])
    assert out.dtype == np.int64 and not out.flags.writeable and out.flags.c_contiguous and out.tolist() == [0, 2, 4]


def test_columns_of_unequal_length_raise_spec_error_naming_the_lengths():
    with pytest.raises(SpecError, match=r"Pairs columns differ in length: \{'left': 2, 'right': 3\}"):
        Pairs(left=[1, 2], right=[1, 2, 3])


@settings(max_examples=100)
@given(t=tables(), data=st.data())
def test_select_is_numpy_indexing_of_every_column(t, data):
    """select(index array) and select(bool mask) index each column like numpy; other
    fields are kept."""
    index = np.array(data.draw(st.lists(st.integers(0, max(len(t) - 1, 0)), max_size=8) if len(t) else
                               st.just([])), np.int64)
    mask = np.array(data.draw(st.lists(st.booleans(), min_size=len(t), max_size=len(t))), bool)
    for rows in (index, mask):
        got = t.select(rows)
        assert got.name == t.name and len(got) == len(t.left[rows])
        assert all(np.array_equal(got.columns()[c], t.columns()[c][rows]) for c in Pairs.column_names())


@settings(max_examples=100)
@given(st.lists(tables(), max_size=4))
def test_concat_is_numpy_concatenation_and_accepts_mappings(parts):
    """concat(tables or column mappings) concatenates each column; [] gives an empty
    table; fields are passed through."""
    got = Pairs.concat(parts, name="joined")
    mixed = Pairs.concat([p.columns() if i % 2 else p for i, p in enumerate(parts)], name="joined")
    assert got == mixed and got.name == "joined"
    for c in Pairs.column_names():
        expected = np.concatenate([p.columns()[c] for p in parts]) if parts else np.zeros(0, np.int64)
        assert np.array_equal(got.columns()[c], expected)
    assert len(got) == sum(len(p) for p in parts)


@settings(max_examples=100)
@given(tables())
def test_from_columns_reads_the_columns_it_needs(t):
    """from_columns(mapping) takes every column (ignoring extra keys) and other fields as
    keywords; a missing column is a KeyError."""
    cols = dict(t.columns(), extra=np.zeros(3))
    assert Pairs.from_columns(cols, name=t.name) == t
    with pytest.raises(KeyError, match="right"):
        Pairs.from_columns({"left": t.left})


@settings(max_examples=100)
@given(tables(), tables())
def test_tables_are_equal_exactly_when_their_content_is(a, b):
    """Equality compares columns by value (new arrays of equal content are equal) and the
    other fields; equal tables hash alike."""
    copy = Pairs(left=a.left.copy(), right=list(a.right))
    assert copy == a and hash(copy) == hash(a)
    same = a.left.tolist() == b.left.tolist() and a.right.tolist() == b.right.tolist()
    assert (a == b) == same
    assert attrs.evolve(a, name="other") != a


@settings(max_examples=100)
@given(st.lists(st.tuples(st.integers(0, 7), st.integers(0, 99)), max_size=10))
def test_copy_rows_total_their_bytes_and_list_their_sources_once(rows):
    """Copy tables (Transfer, ReadTable): total_bytes = sum of nbytes, source_ranks = the
    distinct src_rank values ascending."""
    ranks, nbytes = [r for r, _ in rows], [n for _, n in rows]
    zeros = [0] * len(rows)
    transfer = Transfer(dst_rank=0, src_rank=ranks, src_region=zeros, src_offset=zeros, dst_region=zeros,
                        dst_offset=zeros, nbytes=nbytes)
    reads = ReadTable(dst_rank=0, src_rank=ranks, layer=zeros, component=zeros, src_region=zeros, dst_region=zeros,
                      src_block=zeros, dst_block=zeros, src_offset=zeros, dst_offset=zeros, nbytes=nbytes)
    for table in (transfer, reads):
        assert isinstance(table, CopyRows)
        assert table.total_bytes == sum(nbytes) and table.source_ranks == tuple(sorted(set(ranks)))
