"""kvplan.lowering.descriptors: prepared lists and staging reproduce `lower()` byte for byte."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from kvplan.lowering import prepared_lists, split_ranges, staged

from kvplan.testing.strategies import exchanges, hybrid_exchanges


def _pairs(src_rank, src_region, src_offset, dst_region, dst_offset, nbytes):
    """Every (src byte, dst byte) pair a set of rows copies."""
    out = set()
    for r, sr, so, dr, do, n in zip(src_rank, src_region, src_offset, dst_region, dst_offset, nbytes):
        out.update(((int(r), int(sr), int(so) + k), (int(dr), int(do) + k)) for k in range(int(n)))
    return out


@settings(max_examples=60)
@given(case=exchanges(max_blocks=4))
def test_prepared_indices_copy_exactly_the_lowered_bytes(case):
    p, dst_rank, src_blocks, dst_blocks = case
    t = p.lower(dst_rank, src_blocks, dst_blocks)
    lists = prepared_lists(p, dst_rank)
    rows = []
    for rank, (local, remote) in lists.indices(p, src_blocks, dst_blocks).items():
        rem, loc = lists.remote[rank], lists.local
        assert np.array_equal(rem.nbytes[remote], loc.nbytes[local])
        rows.append((np.full(len(local), rank), rem.region[remote], rem.offset[remote], loc.region[local],
                     loc.offset[local], loc.nbytes[local]))
    got = set().union(*(_pairs(*r) for r in rows)) if rows else set()
    assert got == _pairs(t.src_rank, t.src_region, t.src_offset, t.dst_region, t.dst_offset, t.nbytes)


@settings(max_examples=60)
@given(case=exchanges(max_blocks=4))
def test_pack_then_unpack_is_the_transfer(case):
    t = case[0].lower(*case[1:])
    for rank, part in staged(t).items():
        assert part.nbytes == t.for_source(rank).total_bytes
        # composing pack (source -> staging) with unpack (staging -> destination)
        to_staging = {int(o) + k: (int(r), int(s) + k) for r, o, s, n in
                      zip(part.pack.src_region, part.pack.dst_offset, part.pack.src_offset, part.pack.nbytes)
                      for k in range(int(n))}
        composed = {((rank, *to_staging[int(so) + k]), (int(dr), int(do) + k)) for so, dr, do, n in
                    zip(part.unpack.src_offset, part.unpack.dst_region, part.unpack.dst_offset, part.unpack.nbytes)
                    for k in range(int(n))}
        mine = t.for_source(rank)
        assert composed == _pairs(mine.src_rank, mine.src_region, mine.src_offset, mine.dst_region,
                                  mine.dst_offset, mine.nbytes)


@settings(max_examples=150)
@given(case=st.one_of(exchanges(max_blocks=4), hybrid_exchanges()))
def test_indices_by_arithmetic_equal_the_indices_of_request_rows(case):
    """The arithmetic path (groups pairing block for block) against the general one."""
    from kvplan import plan

    p, dst_rank, src_blocks, dst_blocks = case
    p = plan(p.src, p.dst)  # prepared lists take plans without local steps
    lists = prepared_lists(p, dst_rank)
    fast, slow = lists.indices(p, src_blocks, dst_blocks), lists._indices_of_rows(p, src_blocks, dst_blocks)
    assert fast.keys() == slow.keys()
    for rank in fast:
        assert all(np.array_equal(a, b) for a, b in zip(fast[rank], slow[rank], strict=True))


def test_prepared_lists_past_int32_indices_are_refused():
    import pytest

    from kvplan import AttentionSpec, EngineSpec, ModelSpec, SpecError, plan

    m = ModelSpec(name="m", layers=(AttentionSpec(num_kv_heads=1, head_dim=8),) * 4096)
    p = plan(EngineSpec(model=m, num_blocks=2**20), EngineSpec(model=m, num_blocks=2**20))
    with pytest.raises(SpecError, match="int32"):
        prepared_lists(p, 0)


def test_consecutive_whole_pages_get_consecutive_indices_on_both_sides():
    from kvplan import AttentionSpec, EngineSpec, ModelSpec, plan

    m = ModelSpec(name="m", layers=(AttentionSpec(num_kv_heads=4, head_dim=8),) * 2)
    p = plan(EngineSpec(model=m, tp=1, num_blocks=16), EngineSpec(model=m, tp=1, num_blocks=16))
    local, remote = prepared_lists(p, 0).indices(p, [3, 4, 5], [7, 8, 9])[0]
    assert np.all(np.diff(local)[[0, 1, 3, 4]] == 1) and np.all(np.diff(remote)[[0, 1, 3, 4]] == 1)


def test_split_ranges_covers_every_byte_once():
    src, dst, n = split_ranges([0, 1000], [5000, 9000], [10, 3], 4)
    assert n.tolist() == [4, 4, 2, 3] and src.tolist() == [0, 4, 8, 1000] and dst.tolist() == [5000, 5004, 5008, 9000]


@settings(max_examples=60)
@given(case=exchanges(max_blocks=4))
def test_bind_adds_each_rows_offset_to_its_regions_base(case):
    """The one binding rule (`Transfer.bind`, which every backend uses) against a row-by-row sum."""
    t = case[0].lower(*case[1:])
    src_bases = {r: [(r + 1) << 40 | (region + 1) << 32 for region in range(len(t.src_regions))] for r in range(4)}
    dst_bases = [(region + 7) << 32 for region in range(len(t.dst_regions))]
    src, dst = t.bind(src_bases, dst_bases)
    for i in range(len(t)):
        assert int(src[i]) == src_bases[int(t.src_rank[i])][int(t.src_region[i])] + int(t.src_offset[i])
        assert int(dst[i]) == dst_bases[int(t.dst_region[i])] + int(t.dst_offset[i])
