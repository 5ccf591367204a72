"""lower(): a plan's per-span templates + a request's block ids -> a `Transfer`.

Vectorised: for each group of destination regions whose template has the same row
count, one broadcast over (region, span, row) builds every offset; rows contiguous on
both sides (consecutive blocks, whole pages) are merged in one pass.
"""

from __future__ import annotations

import math

import attrs
import numpy as np

from ._arrays import column, frozen
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


@attrs.frozen
class _Group:
    """Destination regions whose template has the same row count, in broadcast form.

    `rows` (regions, L) indexes the table; `src_blk` / `dst_blk` broadcast to
    (regions, spans, L) and hold request block ids (-1 where the request has none);
    `keep` (same shape, or None) marks copies the request actually makes.
    """

    rows: np.ndarray = attrs.field(eq=False)
    src_blk: np.ndarray = attrs.field(eq=False)
    dst_blk: np.ndarray = attrs.field(eq=False)
    keep: np.ndarray | None = attrs.field(eq=False)


def _per_group(values, groups: int, side: str) -> list:
    """One block list per group; a flat list is accepted for a one-group engine."""
    flat = isinstance(values, np.ndarray) and values.ndim == 1
    if not flat and not isinstance(values, np.ndarray):
        values = list(values)
        flat = all(isinstance(v, (int, np.integer)) for v in values)
    if flat:
        if groups != 1:
            raise BlockError(f"the engines have {groups} layer groups: pass {side} block ids as one list "
                             f"per group, got one flat list of {len(values)} ids")
        return [values]
    if len(values) != groups:
        raise BlockError(f"{side} block lists: {len(values)} lists given for {groups} layer groups")
    return list(values)


def _pair_group(plan, group: int, sb: np.ndarray, db: np.ndarray, prefix: str):
    """Apply the prefix-hit rules to one group's lists and check they can pair."""
    src, dst = plan.src, plan.dst
    if not src.group_is_token(group):
        # state is never token-trimmed: one state per block, pair block for block
        if prefix == "tail" and len(sb) > len(db):
            sb = sb[len(sb) - len(db):]
        elif prefix == "tail" and len(db) == len(sb) + 1:
            db = db[:-1]  # decode recomputes the last position itself
        if len(sb) != len(db):
            hint = "" if prefix == "tail" else " (prefix hits need prefix='tail')"
            raise BlockError(f"group {group} (state): {len(sb)} prefill blocks and {len(db)} decode blocks "
                             f"cannot pair{hint}")
        return sb, db
    src_block, dst_block = src.group_block_tokens(group)[0], dst.group_block_tokens(group)[0]
    if prefix == "tail" and src_block == dst_block and len(sb) > len(db):
        sb = sb[len(sb) - len(db):]  # decode already holds the prefix: read only the tail
    tokens = min(len(sb) * src_block, len(db) * dst_block)
    if -(-tokens // src_block) != len(sb) or -(-tokens // dst_block) != len(db):
        hint = " (a decode prefix hit needs prefix='tail')" if len(sb) * src_block > len(db) * dst_block else ""
        raise BlockError(
            f"group {group}: block lists of unequal length: {len(sb)} prefill blocks of {src_block} tokens "
            f"and {len(db)} decode blocks of {dst_block} tokens do not cover the same tokens{hint}"
        )
    return sb, db


def _lists(plan, dst_rank: int, src_blocks, dst_blocks, prefix: str) -> list[tuple]:
    """Validate a request: per group (ns, nd, src ids padded, dst ids padded, partial, decode count)."""
    src, dst = plan.src, plan.dst
    if not 0 <= dst_rank < dst.world_size:
        raise RankError(f"dst_rank {dst_rank} is outside the decode engine's {dst.world_size} ranks")
    if prefix not in ("exact", "tail"):
        raise BlockError(f"prefix must be 'exact' or 'tail', got {prefix!r}")
    groups = len(dst.layer_groups)
    lists = []
    for g, (s_list, d_list) in enumerate(zip(_per_group(src_blocks, groups, "prefill"),
                                             _per_group(dst_blocks, groups, "decode"), strict=True)):
        sb = block_ids(s_list, side=f"prefill group {g}", num_blocks=src.num_blocks)
        db = block_ids(d_list, side=f"decode group {g}", num_blocks=dst.num_blocks)
        sb, db = _pair_group(plan, g, sb, db, prefix)
        ns, nd = plan.blocks_per_span(g)
        spans = max(-(-len(sb) // ns), -(-len(db) // nd))
        src_pad = np.full(spans * ns, -1, np.int64)
        src_pad[: len(sb)] = sb
        dst_pad = np.full(spans * nd, -1, np.int64)
        dst_pad[: len(db)] = db
        lists.append((ns, nd, src_pad, dst_pad, len(sb) < len(src_pad) or len(db) < len(dst_pad), len(db)))
    return lists


def _groups(plan, table, lists, src_real: int, dst_real: int) -> list[_Group]:
    """Pair `table`'s rows with the request's block ids, in broadcast form.

    Regions with ids past the engine's own (`src_real` / `dst_real`) are per-request
    scratch: their block index is the state block's position in the request.
    """
    if len(table) == 0:
        return []
    dst = plan.dst
    seg_start = np.flatnonzero(np.r_[True, table.layer[1:] != table.layer[:-1]])
    seg_len = np.diff(np.r_[seg_start, len(table)])
    seg_group = np.array([dst.group_of(int(layer)) for layer in table.layer[seg_start]], np.int64)
    first_kept = _first_kept_block(plan, [entry[5] for entry in lists])
    scratch = bool((table.src_region >= src_real).any() or (table.dst_region >= dst_real).any())
    out = []
    for group in np.unique(seg_group):
        ns, nd, src_pad, dst_pad, partial, _ = lists[group]
        if len(src_pad) == 0:
            continue
        span_ids = np.arange(len(src_pad) // ns, dtype=np.int64)[None, :, None]
        for length in np.unique(seg_len[seg_group == group]):
            chosen = (seg_group == group) & (seg_len == length)
            rows = seg_start[chosen][:, None] + np.arange(length)[None, :]  # (segments, L)
            d_idx = span_ids * nd + table.dst_block[rows][:, None, :]
            # one block per span: the span's block id broadcasts, no gather
            s_blk = src_pad[None, :, None] if ns == 1 else src_pad[span_ids * ns + table.src_block[rows][:, None, :]]
            d_blk = dst_pad[None, :, None] if nd == 1 else dst_pad[d_idx]
            keep = (s_blk >= 0) & (d_blk >= 0) if partial else None
            if scratch:
                s_blk = np.where((table.src_region[rows] >= src_real)[:, None, :], span_ids, s_blk)
                d_blk = np.where((table.dst_region[rows] >= dst_real)[:, None, :], span_ids, d_blk)
            if first_kept is not None:
                window = d_idx >= first_kept[table.layer[rows]][:, None, :]
                keep = window if keep is None else keep & window
            out.append(_Group(rows, s_blk, d_blk, keep))
    return out


def _pair(plan, dst_rank: int, src_blocks, dst_blocks, prefix: str = "exact"):
    """Validate a request and pair its block ids with `dst_rank`'s read rows."""
    lists = _lists(plan, dst_rank, src_blocks, dst_blocks, prefix)
    table = plan.reads(dst_rank)
    return table, _groups(plan, table, lists, len(plan.src.regions), len(plan.dst.regions))


def request_rows(plan, dst_rank: int, src_blocks, dst_blocks, *, prefix: str = "exact") -> RequestRows:
    """Pair a request's block ids with the rows of `dst_rank`'s table (no coalescing).

    `src_blocks` / `dst_blocks` are the request's logical block ids on each engine, in
    token order. With equal block sizes they pair one to one; otherwise they must
    cover the same tokens (the last block of either side may be partly used).
    Sliding-window layers keep only the blocks their window needs.

    Engines with several layer groups take one list per group. ``prefix="tail"``
    applies vLLM's prefix-hit rules: token groups read only the prefill tail matching
    the decode list (equal block sizes), state groups are never token-trimmed (the
    prefill tail, or the decode list minus the position it recomputes).
    """
    table, groups = _pair(plan, dst_rank, src_blocks, dst_blocks, prefix)
    parts = []
    for g in groups:
        shape = np.broadcast_shapes(g.src_blk.shape, g.dst_blk.shape, (g.rows.shape[0], 1, g.rows.shape[1]))
        cols = [np.broadcast_to(a, shape) for a in (g.rows[:, None, :], g.src_blk, g.dst_blk)]
        parts.append([c[g.keep] if g.keep is not None else c.reshape(-1) for c in cols])
    if not parts:
        empty = np.zeros(0, np.int64)
        return RequestRows(table, empty, empty, empty)
    return RequestRows(table, *(np.concatenate(cols) for cols in zip(*parts, strict=True)))


def lower(plan, dst_rank: int, src_blocks, dst_blocks, *, prefix: str = "exact") -> Transfer:
    """Coalesced `Transfer` for `dst_rank` reading a request's blocks (see `request_rows`).

    Plans with a staged or permuted conv strategy attach their local copies:
    `pre_steps` (run on the source ranks before the reads) and `post_steps` (run on
    the destination after them).

    >>> from kvplan import AttentionSpec, ModelSpec, EngineSpec, plan
    >>> m = ModelSpec(name="m", layers=(AttentionSpec(num_kv_heads=8, head_dim=128),))
    >>> t = plan(EngineSpec(model=m, tp=2), EngineSpec(model=m, tp=4)).lower(3, [7, 8], [40, 41])
    >>> t.src_offset.tolist(), t.dst_offset.tolist(), t.nbytes.tolist()
    ([245760, 278528], [655360, 671744], [16384, 16384])
    """
    src, dst = plan.src, plan.dst
    lists = _lists(plan, dst_rank, src_blocks, dst_blocks, prefix)
    src_regions, dst_regions = plan.src_regions, plan.dst_regions
    n_src, n_dst = len(src.regions), len(dst.regions)
    reads = _lower_table(plan, plan.reads(dst_rank), lists, src_regions, dst_regions, n_src, n_dst, dst_rank)
    if not plan.pre_tables and not plan.post_tables:
        return reads
    # pre steps copy within source memory (regions -> source scratch); post steps within
    # the destination (scratch -> regions): both sides of a step use one engine's table
    pre = _lower_table(plan, plan.pre_tables[dst_rank], lists, src_regions, src_regions, n_src, n_src, dst_rank)
    post = _lower_table(plan, plan.post_tables[dst_rank], lists, dst_regions, dst_regions, n_dst, n_dst, dst_rank)
    return attrs.evolve(reads, pre_steps=pre, post_steps=post)


def _lower_table(plan, table, lists, src_regions, dst_regions, src_real, dst_real, dst_rank) -> Transfer:
    src_stride = np.array([r.block_bytes for r in src_regions], np.int64)
    dst_stride = np.array([r.block_bytes for r in dst_regions], np.int64)
    out = {name: [] for name in _TRANSFER_COLUMNS}
    for g in _groups(plan, table, lists, src_real, dst_real):
        rows = g.rows
        s_off = g.src_blk * src_stride[table.src_region[rows]][:, None, :] + table.src_offset[rows][:, None, :]
        d_off = g.dst_blk * dst_stride[table.dst_region[rows]][:, None, :] + table.dst_offset[rows][:, None, :]
        s_off, d_off = np.broadcast_arrays(s_off, d_off)
        if g.keep is not None:
            # rare path (partial last span, sliding windows): flatten kept copies, merge generically
            flat_rows = np.broadcast_to(rows[:, None, :], s_off.shape)[g.keep]
            _merge_flat(table, flat_rows, s_off[g.keep], d_off[g.keep], out)
        else:
            _merge_broadcast(table, rows, s_off, d_off, out)
    cols = {name: frozen(np.concatenate(parts)) if parts else frozen(np.zeros(0, np.int64))
            for name, parts in out.items()}
    return Transfer(dst_rank, **cols, src_regions=src_regions, dst_regions=dst_regions)


_TRANSFER_COLUMNS = ("src_rank", "src_region", "src_offset", "dst_region", "dst_offset", "nbytes")


def _merge_flat(table, rows, s_off, d_off, out) -> None:
    nbytes = table.nbytes[rows]
    src_rank, src_region, dst_region = table.src_rank[rows], table.src_region[rows], table.dst_region[rows]
    starts = run_starts([src_rank, src_region, dst_region], s_off, d_off, nbytes)
    for name, col in (("src_rank", src_rank), ("src_region", src_region), ("src_offset", s_off),
                      ("dst_region", dst_region), ("dst_offset", d_off)):
        out[name].append(col[starts])
    out["nbytes"].append(merged_nbytes(nbytes, starts))


def _merge_broadcast(table, rows, s_off, d_off, out) -> None:
    """Coalesce copies laid out (regions, spans, L) in that order.

    Key columns (rank, regions) depend only on the template row, so whether a copy may
    continue its predecessor's run is decided on the small (regions, L) template and
    broadcast; the offset checks run on flat contiguous arrays (fast even when L is
    small). A run's size is its source end minus its start.
    """
    regions, spans, length = s_off.shape
    src_rank, src_region, dst_region = table.src_rank[rows], table.src_region[rows], table.dst_region[rows]
    nbytes = table.nbytes[rows]
    key_ok = np.empty((regions, length), bool)
    key_ok[:, 1:] = ((src_rank[:, 1:] == src_rank[:, :-1]) & (src_region[:, 1:] == src_region[:, :-1])
                     & (dst_region[:, 1:] == dst_region[:, :-1]))
    # first row of span j may continue the last row of span j-1
    key_ok[:, 0] = ((src_rank[:, 0] == src_rank[:, -1]) & (src_region[:, 0] == src_region[:, -1])
                    & (dst_region[:, 0] == dst_region[:, -1]))
    shape = s_off.shape
    s_flat, d_flat = s_off.reshape(-1), d_off.reshape(-1)
    nb_flat = np.broadcast_to(nbytes[:, None, :], shape).reshape(-1)
    cont = np.broadcast_to(key_ok[:, None, :], shape).flatten()  # flatten copies: safe to write
    cont[:: spans * length] = False  # a new layer segment always starts a run
    cont[1:] &= s_flat[1:] == s_flat[:-1] + nb_flat[:-1]
    cont[1:] &= d_flat[1:] == d_flat[:-1] + nb_flat[:-1]
    # Boolean compression beats index gathers here: most copies often start a run.
    start = ~cont
    end = np.empty_like(start)
    end[:-1] = start[1:]
    end[-1] = True
    start_3d = start.reshape(shape)
    out["src_rank"].append(np.broadcast_to(src_rank[:, None, :], shape)[start_3d])
    out["src_region"].append(np.broadcast_to(src_region[:, None, :], shape)[start_3d])
    out["dst_region"].append(np.broadcast_to(dst_region[:, None, :], shape)[start_3d])
    src_offset = s_flat[start]
    out["src_offset"].append(src_offset)
    out["dst_offset"].append(d_flat[start])
    out["nbytes"].append(s_flat[end] + nb_flat[end] - src_offset)


def _first_kept_block(plan, decode_counts: list[int]):
    """Per layer, the first decode block index a sliding-window layer still needs.

    A window of W tokens needs the last ceil(W / block) + 1 blocks of its group (vLLM's
    get_exchange_clipped_blocks); other layers keep every block. None when the model
    has no sliding layers.
    """
    dst = plan.dst
    windows = [getattr(spec, "sliding_window", None) for spec in dst.model.layers]
    if not any(windows):
        return None
    first = np.zeros(len(windows), np.int64)
    for layer, window in enumerate(windows):
        if window:
            group = dst.group_of(layer)
            first[layer] = decode_counts[group] - (math.ceil(window / dst.group_block_tokens(group)[0]) + 1)
    return first
