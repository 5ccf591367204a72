"""Laws of compact Transfers: `lower()` keeps a request's copies as one layer's copies plus
a region id per layer (`kvplan.lowering.compact`) and expands them when first read. The
expanded columns must be exactly the copies of the uncoalesced reference
(`request_rows`, checked byte for byte in test_request_rows), pass the validating
constructor the lowering skips, and every shortcut a compact Transfer takes (`len`,
`for_source`, steps) must agree with the expanded rows."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
from _laws import byte_map
from hypothesis import given, settings
from hypothesis import strategies as st

from kvplan import plan
from kvplan.lowering import Transfer, lower, request_rows
from kvplan.lowering.compact import CompactRows, OuterBlock
from kvplan.testing.strategies import conv_strategies, planned_requests


def _replanned(case, transfer_strategy: str, conv_strategy: str):
    """The case's engines planned under a transfer strategy (and, for a direct hybrid
    plan, a conv strategy), so lowered Transfers carry pre and post steps too."""
    p, rank, src_blocks, dst_blocks = case
    options = {"transfer_strategy": transfer_strategy}
    if transfer_strategy == "direct" and any(not layer.holds_tokens for layer in p.dst.model.layers):
        options["conv_strategy"] = conv_strategy
    return plan(p.src, p.dst, **options), rank, src_blocks, dst_blocks


def _validated(t: Transfer) -> Transfer:
    """The same rows through the validating constructor (refuses negative columns and
    region ids past the tables)."""
    return Transfer(dst_rank=t.dst_rank, **t.columns(), src_regions=t.src_regions, dst_regions=t.dst_regions,
                    pre_steps=None if t.pre_steps is None else _validated(t.pre_steps),
                    post_steps=None if t.post_steps is None else _validated(t.post_steps),
                    plan_fingerprint=t.plan_fingerprint)


@settings(max_examples=60)
@given(planned_requests(num_blocks=16), st.sampled_from(["direct", "bounce"]), conv_strategies(), st.booleans())
def test_a_compact_transfer_is_its_expanded_rows(case, transfer_strategy, conv_strategy, half):
    p, rank, src_blocks, dst_blocks = _replanned(case, transfer_strategy, conv_strategy)
    layers = range(len(p.dst.model.layers) // 2, len(p.dst.model.layers)) if half else None
    t = lower(p, rank, src_blocks, dst_blocks, layers=layers)
    counted = len(t)  # before any column is read
    sources = {r: t.for_source(r) for r in range(p.src.world_size)}
    assert counted == len(t.nbytes) == len(_validated(t))
    assert _validated(t) == t and pickle.loads(pickle.dumps(t)) == t
    for r, part in sources.items():
        assert part == t.select(t.src_rank == r) and part.pre_steps == t.pre_steps
    if layers is None:
        # the reference pairs every (table row, block ids) without coalescing
        rows = request_rows(p, rank, src_blocks, dst_blocks)
        table = rows.table
        stride_src = np.array([r.block_bytes for r in p.src_regions], np.int64)
        stride_dst = np.array([r.block_bytes for r in p.dst_regions], np.int64)
        r = rows.row
        want = byte_map([table.src_rank[r], table.src_region[r], table.dst_region[r]],
                        rows.src_block_id * stride_src[table.src_region[r]] + table.src_offset[r],
                        rows.dst_block_id * stride_dst[table.dst_region[r]] + table.dst_offset[r], table.nbytes[r])
        got = byte_map([t.src_rank, t.src_region, t.dst_region], t.src_offset, t.dst_offset, t.nbytes)
        assert sorted(got) == sorted(want)


def test_expansion_is_member_major_outer_sums():
    """Written out by hand: two members (regions 4 and 7), three copies each."""
    rows = CompactRows(names=("src_rank", "src_region", "src_offset", "dst_region", "dst_offset", "nbytes"),
                       blocks=(OuterBlock(2, bases=(None, [4, 7], None, [0, 2], None, None),
                                          values=([1, 1, 0], [0, 1, 0], [0, 64, 128], [0, 0, 1], [8, 16, 24],
                                                  [8, 8, 8])),))
    t = Transfer.from_compact(rows, dst_rank=0, src_regions=(), dst_regions=())
    assert len(t) == 6
    assert t.src_region.tolist() == [4, 5, 4, 7, 8, 7]
    assert t.dst_region.tolist() == [0, 0, 1, 2, 2, 3]
    assert t.src_offset.tolist() == [0, 64, 128] * 2 and t.src_rank.tolist() == [1, 1, 0] * 2
    assert not t.src_offset.flags.writeable
    assert t.for_source(1).src_region.tolist() == [4, 5, 7, 8]
    with pytest.raises(AttributeError):
        t.no_such_column  # noqa: B018


def test_a_column_that_varies_by_member_is_filtered_after_expansion():
    """`for_source` on a block whose ranks differ per member cannot filter compactly; it
    selects from the expanded rows instead."""
    rows = CompactRows(names=("src_rank", "src_region", "src_offset", "dst_region", "dst_offset", "nbytes"),
                       blocks=(OuterBlock(2, bases=([0, 1], None, None, None, None, None),
                                          values=([0], [0], [0], [0], [8], [4])),))
    assert rows.where("src_rank", 1) is None
    t = Transfer.from_compact(rows, dst_rank=0, src_regions=(), dst_regions=())
    assert t.for_source(1).dst_offset.tolist() == [8] and t.src_rank.tolist() == [0, 1]
