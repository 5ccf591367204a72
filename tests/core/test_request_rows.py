"""Laws of a request's copies (kvplan.lowering): `request_rows` pairs table rows with block
ids so that its copies are the device template's formula (`expand(copy_template)`) and,
byte for byte, the coalesced `lower()`; the descriptor shapes built from a plan
(`PreparedLists`, `Staged`, `CopyTemplate` pieces) keep the same bytes."""

from __future__ import annotations

from collections import Counter

import numpy as np
from _laws import byte_map
from hypothesis import given, settings

from kvplan.lowering import (CopyTemplate, PreparedLists, RequestRows, Staged, copy_template, expand, lower,
                             prepared_lists, request_blocks, request_rows, staged)
from kvplan.testing.strategies import exchanges, planned_requests

_COPY = ("src_rank", "src_region", "src_offset", "dst_region", "dst_offset", "nbytes")


def _copies_of_rows(plan, rows: RequestRows) -> dict[str, np.ndarray]:
    """Each (table row, block ids) as one copy: offsets are block id x region block bytes
    plus the row's offset."""
    t = rows.table
    src_stride = np.array([r.block_bytes for r in plan.src_regions], np.int64)
    dst_stride = np.array([r.block_bytes for r in plan.dst_regions], np.int64)
    r = rows.row
    return {"src_rank": t.src_rank[r], "src_region": t.src_region[r],
            "src_offset": rows.src_block_id * src_stride[t.src_region[r]] + t.src_offset[r],
            "dst_region": t.dst_region[r], "dst_offset": rows.dst_block_id * dst_stride[t.dst_region[r]] + t.dst_offset[r],
            "nbytes": t.nbytes[r]}


def _multiset(cols) -> Counter:
    return Counter(zip(*(np.asarray(cols[c]).tolist() for c in _COPY), strict=True))


def _bytes(cols) -> list:
    return sorted(byte_map([cols["src_rank"], cols["src_region"], cols["dst_region"]], cols["src_offset"],
                           cols["dst_offset"], cols["nbytes"]))


@settings(max_examples=40)
@given(planned_requests(num_blocks=16))
def test_request_rows_are_the_template_formula_and_lower_byte_for_byte(case):
    """The copies of request_rows are those expand(copy_template) evaluates (as a
    multiset), and they move exactly the bytes of lower()'s coalesced transfer."""
    p, rank, src_blocks, dst_blocks = case
    rows = request_rows(p, rank, src_blocks, dst_blocks)
    assert isinstance(rows, RequestRows) and rows.table == p.reads(rank)
    copies = _copies_of_rows(p, rows)
    template = copy_template(p, rank)
    assert isinstance(template, CopyTemplate)
    assert _multiset(copies) == _multiset(expand(template, request_blocks(p, rank, src_blocks, dst_blocks)))
    transfer = lower(p, rank, src_blocks, dst_blocks)
    assert _bytes(copies) == _bytes(transfer.columns())


@settings(max_examples=40)
@given(exchanges(max_blocks=4))
def test_template_pieces_and_descriptor_lists_keep_the_bytes(case):
    """copy_template cut to max_piece_bytes copies the same bytes in pieces no longer than
    that; PreparedLists hold row r, block b at r * blocks + b (local) and
    position[r] * blocks + b (remote of its source rank); staged() splits a transfer into
    one Staged per source rank whose pack and unpack each move its bytes once."""
    p, rank, src_blocks, dst_blocks = case
    request = request_blocks(p, rank, src_blocks, dst_blocks)
    whole = expand(copy_template(p, rank), request)
    cut = expand(copy_template(p, rank, max_piece_bytes=8), request)
    assert (cut["nbytes"] <= 8).all() and _bytes(cut) == _bytes(whole)

    lists = prepared_lists(p, rank)
    table = p.reads(rank)
    assert isinstance(lists, PreparedLists) and len(lists.local) == len(table) * lists.dst_blocks
    stride = np.array([r.block_bytes for r in p.dst_regions], np.int64)
    for r in range(len(table)):
        b = np.arange(lists.dst_blocks)
        assert np.array_equal(lists.local.offset[r * lists.dst_blocks + b],
                              table.dst_offset[r] + b * stride[table.dst_region[r]])
        mine = np.flatnonzero(table.src_rank == table.src_rank[r])
        assert lists.position[r] == np.searchsorted(mine, r)
        remote = lists.remote[int(table.src_rank[r])]
        assert remote.nbytes[lists.position[r] * lists.src_blocks] == table.nbytes[r]

    transfer = lower(p, rank, src_blocks, dst_blocks)
    parts = staged(transfer)
    assert set(parts) == set(transfer.source_ranks)
    for source, part in parts.items():
        assert isinstance(part, Staged) and part.src_rank == source
        assert part.nbytes == part.pack.total_bytes == part.unpack.total_bytes == transfer.for_source(source).total_bytes
        assert part.pack.dst_regions[0].block_bytes == part.nbytes
