"""Laws of a request's block lists (kvplan.lowering.request_blocks): token groups pair
when both lists can cover one token count, padded with -1 to whole spans; state groups
pair block for block; prefix="tail" applies vLLM's prefix-hit trims; a sliding-window
layer keeps only its last ceil(W / block) + 1 decode blocks; bad input raises
BlockError / RankError quoting the values."""

from __future__ import annotations

import itertools
import math
from functools import lru_cache

import numpy as np
import pytest
from _laws import quotes
from hypothesis import given, settings
from hypothesis import strategies as st

from kvplan import AttentionSpec, BlockError, EngineSpec, LayerGroup, ModelSpec, RankError, ShortConvSpec
from kvplan.lowering import GroupRequest, RequestBlocks, block_ids, request_blocks
from kvplan.lowering.request import PREFIX_RULES
from kvplan.planning import plan_tables
from kvplan.presets import hma_groups

ATTENTION, CONV = AttentionSpec(2, 4), ShortConvSpec(conv_dim=4, conv_kernel=3)


@lru_cache(maxsize=None)
def token_plan(src_block: int, dst_block: int, window: int | None = None):
    """One token group: a full and (with `window`) a sliding-window layer."""
    layers = (ATTENTION,) if window is None else (ATTENTION, AttentionSpec(2, 4, sliding_window=window))
    m = ModelSpec(name="m", layers=layers)
    return plan_tables(EngineSpec(model=m, block_tokens=src_block), EngineSpec(model=m, block_tokens=dst_block))


@lru_cache(maxsize=None)
def hybrid_plan(pooled: bool = False, num_blocks: int | None = None):
    """Group 0: attention layer 0 (16-token blocks), group 1: conv-state layer 1."""
    m = ModelSpec(name="h", layers=(ATTENTION, CONV))
    groups = hma_groups(m) if pooled else None
    e = EngineSpec(model=m, groups=groups, pooled=pooled, num_blocks=num_blocks)
    return plan_tables(e, e)


def _can_cover(n_src: int, src_block: int, n_dst: int, dst_block: int) -> bool:
    """Is there a token count T >= 0 that needs exactly n_src and n_dst blocks?"""
    return max((n_src - 1) * src_block, (n_dst - 1) * dst_block) < min(n_src * src_block, n_dst * dst_block)


_ids = st.permutations(range(20))


def _check_padded(group, sb, db) -> None:
    """Paired lists padded with -1 to whole spans of the lcm of the block sizes."""
    ns, nd = group.blocks_per_span
    assert group.src_ids.tolist() == list(sb) + [-1] * (len(group.src_ids) - len(sb))
    assert group.dst_ids.tolist() == list(db) + [-1] * (len(group.dst_ids) - len(db))
    assert len(group.src_ids) == group.spans * ns and len(group.dst_ids) == group.spans * nd
    assert group.spans == max(-(-len(sb) // ns), -(-len(db) // nd))
    assert group.partial == (len(sb) < len(group.src_ids) or len(db) < len(group.dst_ids))
    assert group.decode_blocks == len(db)


@settings(max_examples=300)
@given(st.integers(1, 12), st.integers(1, 12), st.integers(0, 6), st.integers(0, 6), _ids, _ids,
       st.sampled_from(PREFIX_RULES))
def test_token_lists_pair_when_they_cover_one_token_count(src_block, dst_block, n_src, n_dst, s_pool, d_pool,
                                                          prefix):
    """exact: accepted iff some token count needs exactly both lengths, then padded to
    spans of lcm(blocks) tokens. tail with equal block sizes first keeps the prefill
    list's last len(decode) blocks; with different sizes it is exact."""
    p = token_plan(src_block, dst_block)
    sb, db = list(s_pool[:n_src]), list(d_pool[:n_dst])
    if prefix == "tail" and src_block == dst_block and n_src > n_dst:
        sb = sb[n_src - n_dst:]
    if not _can_cover(len(sb), src_block, n_dst, dst_block):
        with pytest.raises(BlockError, match="do not cover the same tokens") as error:
            request_blocks(p, 0, s_pool[:n_src], db, prefix=prefix)
        assert quotes(str(error.value), len(sb), src_block, n_dst, dst_block)
        return
    got = request_blocks(p, 0, s_pool[:n_src], db, prefix=prefix)
    span = math.lcm(src_block, dst_block)
    group = got.groups[0]
    assert isinstance(got, RequestBlocks) and isinstance(group, GroupRequest)
    assert group.blocks_per_span == (span // src_block, span // dst_block)
    _check_padded(group, sb, db)
    assert got.src_ids == (group.src_ids,) and got.dst_ids == (group.dst_ids,) and got.spans == (group.spans,)
    assert got.dst_rank == 0 and not got.windowed and (got.first_kept == 0).all()


@settings(max_examples=200)
@given(st.integers(0, 5), st.integers(0, 5), _ids, st.sampled_from(PREFIX_RULES))
def test_state_lists_pair_block_for_block_with_the_tail_trims(n_src, n_dst, pool, prefix):
    """A state group pairs equal lengths; with tail a longer prefill list keeps its last
    len(decode) states, and a decode list one longer drops its last block (decode
    recomputes it); anything else is a BlockError naming both lengths."""
    p = hybrid_plan()
    sb, db = list(pool[:n_src]), list(pool[10:10 + n_dst])
    want_s, want_d = sb, db
    if prefix == "tail" and n_src > n_dst:
        want_s = sb[n_src - n_dst:]
    elif prefix == "tail" and n_dst == n_src + 1:
        want_d = db[:-1]
    if len(want_s) != len(want_d):
        with pytest.raises(BlockError, match="state") as error:
            request_blocks(p, 0, [[1], sb], [[2], db], prefix=prefix)
        assert quotes(str(error.value), n_src, n_dst)
        return
    got = request_blocks(p, 0, [[1], sb], [[2], db], prefix=prefix).groups[1]
    assert got.blocks_per_span == (1, 1)
    _check_padded(got, want_s, want_d)


def _kept(window: int, block: int) -> int:
    """Blocks a window of W tokens reads: the fewest blocks covering W, plus one."""
    return next(k for k in itertools.count() if k * block >= window) + 1


@settings(max_examples=200)
@given(st.integers(1, 12), st.integers(1, 40), st.integers(0, 12))
def test_sliding_window_layers_keep_their_last_blocks(block, window, n_dst):
    """first_kept of a windowed layer = decode blocks - kept_blocks(block) with
    kept_blocks = ceil(W / block) + 1; other layers keep everything (0)."""
    spec = AttentionSpec(2, 4, sliding_window=window)
    assert spec.kept_blocks(block) == _kept(window, block) and ATTENTION.kept_blocks(block) is None
    got = request_blocks(token_plan(block, block, window), 0, list(range(n_dst)), list(range(n_dst)))
    assert got.windowed and got.first_kept.tolist() == [0, n_dst - _kept(window, block)]


def test_first_kept_uses_each_groups_own_block_size():
    """A group whose block size is overridden counts the window in its own blocks."""
    m = ModelSpec(name="w", layers=(AttentionSpec(2, 4, sliding_window=20), AttentionSpec(2, 4, sliding_window=20)))
    e = EngineSpec(model=m, block_tokens=4, groups=(LayerGroup((0,), block_tokens=8), LayerGroup((1,), block_tokens=16)))
    got = request_blocks(plan_tables(e, e), 0, [[0, 1, 2, 3], [4, 5]], [[0, 1, 2, 3], [4, 5]])
    assert got.first_kept.tolist() == [4 - _kept(20, 8), 2 - _kept(20, 16)]


@pytest.mark.parametrize("rank", [-1, 2, True, 1.0, "0"])
def test_a_rank_outside_the_decode_engine_raises_rank_error(rank):
    with pytest.raises(RankError) as error:
        request_blocks(hybrid_plan(), rank, [[0], [1]], [[0], [1]])
    assert str(rank) in str(error.value) and "1 ranks" in str(error.value)


@pytest.mark.parametrize("src, dst, message", [
    ([[[0]], [1]], [[0], [1]], r"prefill group 0 block ids must be a 1-D list"),
    ([[0.5], [1]], [[0], [1]], r"must be integers, got float64"),
    ([[0], [1]], [[-1], [1]], r"decode group 0 block ids must be >= 0, got -1"),
    ([[0], [1]], [[9], [1]], r"decode group 0 block id 9 is out of range: the engine has 8 blocks"),
    ([[0, 1], [2]], [[3, 3], [2]], r"decode group 0 lists block 3 twice"),
    ([0, 1], [[0], [1]], r"2 layer groups: pass prefill block ids as one list per group, got one flat list of 2"),
    ([[0], [1], [2]], [[0], [1]], r"prefill block lists: 3 lists given for 2 layer groups"),
])
def test_bad_block_lists_raise_block_error_quoting_the_values(src, dst, message):
    with pytest.raises(BlockError, match=message):
        request_blocks(hybrid_plan(num_blocks=8), 0, src, dst)


def test_bad_prefix_rule_and_shared_pooled_blocks_raise_block_error():
    with pytest.raises(BlockError, match="prefix must be 'exact' or 'tail', got 'head'"):
        request_blocks(hybrid_plan(), 0, [[0], [1]], [[0], [1]], prefix="head")
    request_blocks(hybrid_plan(), 0, [[0], [1]], [[5], [5]])  # separate regions: the same id is fine
    with pytest.raises(BlockError, match=r"decode block 5 is listed by groups \[0, 1\]"):
        request_blocks(hybrid_plan(pooled=True), 0, [[0], [1]], [[5], [5]])


def test_block_ids_validates_and_returns_int64():
    """block_ids: any 1-D integer sequence in range, as int64; empty is allowed."""
    assert block_ids(np.array([3, 1], np.int32), side="x", num_blocks=4).dtype == np.int64
    assert block_ids([], side="x", num_blocks=None).tolist() == []
    with pytest.raises(BlockError, match="x block ids must be integers"):
        block_ids([True], side="x", num_blocks=None)


def test_a_request_never_holds_or_freezes_the_callers_arrays():
    """Block ids given as int64 arrays are copied: the caller's arrays stay writable, and
    changing them afterwards changes nothing in the validated request (its ids are
    read-only)."""
    src, dst = np.array([3, 1], np.int64), np.array([2, 0], np.int64)
    request = request_blocks(token_plan(16, 16), 0, src, dst)
    assert src.flags.writeable and dst.flags.writeable
    src[:], dst[:] = 7, 7
    group = request.groups[0]
    assert group.src_ids.tolist() == [3, 1] and group.dst_ids.tolist() == [2, 0]
    assert not group.src_ids.flags.writeable and not group.dst_ids.flags.writeable
