"""lower(): a plan's per-span templates + a request's block ids -> a `Transfer`.

Vectorised: for each group of destination regions whose template has the same row
count, one broadcast over (region, span, row) builds every offset; rows contiguous on
both sides (consecutive blocks, whole pages) are merged in one pass.
"""

from __future__ import annotations

import math

import attrs
import numpy as np

from ._arrays import column
from .errors import BlockError, RankError
from .ranges import merged_nbytes, run_starts
from .table import ReadTable
from .transfer import Transfer


def block_ids(values, *, side: str, num_blocks: int | None) -> np.ndarray:
    """Validate a request's logical block ids (1-D, integer, in range)."""
    array = np.asarray(values)
    if array.ndim != 1:
        raise BlockError(f"{side} block ids must be a 1-D list, got shape {array.shape}")
    if array.size and not np.issubdtype(array.dtype, np.integer):
        raise BlockError(f"{side} block ids must be integers, got {array.dtype} values {array[:4].tolist()}")
    array = array.astype(np.int64, copy=False)
    if array.size and array.min() < 0:
        raise BlockError(f"{side} block ids must be >= 0, got {int(array.min())}")
    if num_blocks is not None and array.size and array.max() >= num_blocks:
        raise BlockError(f"{side} block id {int(array.max())} is out of range: the engine has {num_blocks} blocks")
    return array


@attrs.frozen
class RequestRows:
    """A request's copies before coalescing: which table row, for which block ids.

    `row[i]` indexes `plan.reads(dst_rank)`; `src_block_id[i]` / `dst_block_id[i]` are
    the request's logical block ids that row reads from and writes to. Order: by
    destination region, then span, then table row (the order `lower()` coalesces in).
    """

    table: ReadTable
    row: np.ndarray = column()
    src_block_id: np.ndarray = column()
    dst_block_id: np.ndarray = column()


def request_rows(plan, dst_rank: int, src_blocks, dst_blocks) -> RequestRows:
    """Pair a request's block ids with the rows of `dst_rank`'s table.

    `src_blocks` / `dst_blocks` are the request's logical block ids on each engine, in
    token order. With equal block sizes they pair one to one; otherwise they must
    cover the same tokens (the last block of either side may be partly used).
    Sliding-window layers keep only the blocks their window needs.
    """
    src, dst = plan.src, plan.dst
    if not 0 <= dst_rank < dst.world_size:
        raise RankError(f"dst_rank {dst_rank} is outside the decode engine's {dst.world_size} ranks")
    sb = block_ids(src_blocks, side="prefill", num_blocks=src.num_blocks)
    db = block_ids(dst_blocks, side="decode", num_blocks=dst.num_blocks)
    src_tokens, dst_tokens = len(sb) * src.block_tokens, len(db) * dst.block_tokens
    tokens = min(src_tokens, dst_tokens)
    if -(-tokens // src.block_tokens) != len(sb) or -(-tokens // dst.block_tokens) != len(db):
        raise BlockError(
            f"block lists of unequal length: {len(sb)} prefill blocks of {src.block_tokens} tokens "
            f"and {len(db)} decode blocks of {dst.block_tokens} tokens do not cover the same tokens"
        )
    table = plan.reads(dst_rank)
    ns, nd = plan.span_tokens // src.block_tokens, plan.span_tokens // dst.block_tokens
    spans = max(-(-len(sb) // ns), -(-len(db) // nd))
    src_pad = np.full(spans * ns, -1, np.int64)
    src_pad[: len(sb)] = sb
    dst_pad = np.full(spans * nd, -1, np.int64)
    dst_pad[: len(db)] = db
    partial = len(sb) < len(src_pad) or len(db) < len(dst_pad)
    first_kept = _first_kept_block(plan, table, len(db))

    seg_start = np.flatnonzero(np.r_[True, table.dst_region[1:] != table.dst_region[:-1]]) if len(table) else np.zeros(0, np.int64)
    seg_len = np.diff(np.r_[seg_start, len(table)])
    span_ids = np.arange(spans, dtype=np.int64)[None, :, None]
    parts = []
    for length in np.unique(seg_len):
        rows = seg_start[seg_len == length][:, None] + np.arange(length)[None, :]  # (regions, rows)
        d_idx = span_ids * nd + table.dst_block[rows][:, None, :]
        s_blk = src_pad[span_ids * ns + table.src_block[rows][:, None, :]]
        d_blk = dst_pad[d_idx]
        row = np.broadcast_to(rows[:, None, :], s_blk.shape)
        keep = (s_blk >= 0) & (d_blk >= 0) if partial else None
        if first_kept is not None:
            window = d_idx >= first_kept[rows][:, None, :]
            keep = window if keep is None else keep & window
        if keep is None:
            parts.append((row.reshape(-1), s_blk.reshape(-1), d_blk.reshape(-1)))
        else:
            parts.append((row[keep], s_blk[keep], d_blk[keep]))
    if not parts:
        empty = np.zeros(0, np.int64)
        return RequestRows(table, empty, empty, empty)
    if len(parts) == 1:
        return RequestRows(table, *parts[0])
    return RequestRows(table, *(np.concatenate(cols) for cols in zip(*parts, strict=True)))


def lower(plan, dst_rank: int, src_blocks, dst_blocks) -> Transfer:
    """Coalesced `Transfer` for `dst_rank` reading a request's blocks (see `request_rows`).

    >>> from kvplan import AttentionSpec, ModelSpec, EngineSpec, plan
    >>> m = ModelSpec(name="m", layers=(AttentionSpec(num_kv_heads=8, head_dim=128),))
    >>> t = plan(EngineSpec(model=m, tp=2), EngineSpec(model=m, tp=4)).lower(3, [7, 8], [40, 41])
    >>> t.src_offset.tolist(), t.dst_offset.tolist(), t.nbytes.tolist()
    ([245760, 278528], [655360, 671744], [16384, 16384])
    """
    src, dst = plan.src, plan.dst
    req = request_rows(plan, dst_rank, src_blocks, dst_blocks)
    table, row = req.table, req.row
    src_stride = np.array([r.block_bytes for r in src.regions], np.int64)
    dst_stride = np.array([r.block_bytes for r in dst.regions], np.int64)
    src_region, dst_region = table.src_region[row], table.dst_region[row]
    src_rank, nbytes = table.src_rank[row], table.nbytes[row]
    src_offset = req.src_block_id * src_stride[src_region] + table.src_offset[row]
    dst_offset = req.dst_block_id * dst_stride[dst_region] + table.dst_offset[row]
    starts = run_starts([src_rank, src_region, dst_region], src_offset, dst_offset, nbytes)
    return Transfer(dst_rank, src_rank[starts], src_region[starts], src_offset[starts], dst_region[starts],
                    dst_offset[starts], merged_nbytes(nbytes, starts),
                    src_regions=src.regions, dst_regions=dst.regions)


def _first_kept_block(plan, table, num_dst_blocks: int):
    """Per row, the first decode block index a sliding-window layer still needs.

    A window of W tokens needs the last ceil(W / block) + 1 blocks (vLLM's
    get_exchange_clipped_blocks); full-attention rows keep every block. None when the
    model has no sliding layers.
    """
    layers = plan.dst.model.layers
    windows = [getattr(spec, "sliding_window", None) for spec in layers]
    if not any(windows):
        return None
    first = np.zeros(len(layers), np.int64)
    for index, window in enumerate(windows):
        if window:
            first[index] = num_dst_blocks - (math.ceil(window / plan.dst.block_tokens) + 1)
    return first[table.layer]
