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
        raise BlockError(f"{side} block ids must be a 1-D list, got shape {array.shape}: {values!r}")
    if array.size and (array.dtype == bool or not np.issubdtype(array.dtype, np.integer)):
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
class _Class:
    """Layer segments of a table whose rows are equal up to region ids.

    Identical layers share one template, so offsets, window masks and merge decisions
    are worked out once on the representative `rep` (L rows) and only broadcast to
    every member segment (`rows`, K x L table rows) when the output is written.
    """

    rep: np.ndarray = attrs.field(eq=False)
    rows: np.ndarray = attrs.field(eq=False)
    group: int


@attrs.frozen
class _Paired:
    """A class paired with a request: block ids (1, spans, L) of the representative,
    -1 where the request has none; `keep` marks copies the request makes (or None)."""

    cls: _Class
    src_blk: np.ndarray = attrs.field(eq=False)
    dst_blk: np.ndarray = attrs.field(eq=False)
    keep: np.ndarray | None = attrs.field(eq=False)


def _per_group(values, groups: int, side: str) -> list:
    """One block list per group; a flat list is accepted for a one-group engine."""
    flat = isinstance(values, np.ndarray) and values.ndim == 1
    if not flat and not isinstance(values, np.ndarray):
        values = list(values)
        # nested when any element is itself a list of ids; anything else is one list
        flat = not any(isinstance(v, (list, tuple, np.ndarray, range)) for v in values)
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


def _check_distinct(lists: list[np.ndarray], *, pooled: bool) -> None:
    """A decode block is written once: no id twice in a group, and with pooled regions
    (a block id belongs to one group at a time) no id in two groups."""
    for group, db in enumerate(lists):
        unique, counts = np.unique(db, return_counts=True)
        if (counts > 1).any():
            raise BlockError(f"decode group {group} lists block {int(unique[counts > 1][0])} twice: two prefill "
                             "blocks would be written into one page")
    if pooled and len(lists) > 1:
        every = np.concatenate(lists)
        unique, counts = np.unique(every, return_counts=True)
        if (counts > 1).any():
            block = int(unique[counts > 1][0])
            owners = [g for g, db in enumerate(lists) if block in db]
            raise BlockError(f"decode block {block} is listed by groups {owners}, which share pooled regions: "
                             "their pages would overwrite each other")


def request_lists(plan, dst_rank: int, src_blocks, dst_blocks, prefix: str = "exact") -> list[tuple]:
    """Validate a request: per group (ns, nd, src ids padded, dst ids padded, partial, decode count)."""
    src, dst = plan.src, plan.dst
    if not 0 <= dst_rank < dst.world_size:
        raise RankError(f"dst_rank {dst_rank} is outside the decode engine's {dst.world_size} ranks")
    if prefix not in ("exact", "tail"):
        raise BlockError(f"prefix must be 'exact' or 'tail', got {prefix!r}")
    groups = len(dst.layer_groups)
    lists, decode_ids = [], []
    for g, (s_list, d_list) in enumerate(zip(_per_group(src_blocks, groups, "prefill"),
                                             _per_group(dst_blocks, groups, "decode"), strict=True)):
        sb = block_ids(s_list, side=f"prefill group {g}", num_blocks=src.num_blocks)
        db = block_ids(d_list, side=f"decode group {g}", num_blocks=dst.num_blocks)
        decode_ids.append(db)
        sb, db = _pair_group(plan, g, sb, db, prefix)
        ns, nd = plan.blocks_per_span(g)
        spans = max(-(-len(sb) // ns), -(-len(db) // nd))
        src_pad = np.full(spans * ns, -1, np.int64)
        src_pad[: len(sb)] = sb
        dst_pad = np.full(spans * nd, -1, np.int64)
        dst_pad[: len(db)] = db
        lists.append((ns, nd, src_pad, dst_pad, len(sb) < len(src_pad) or len(db) < len(dst_pad), len(db)))
    _check_distinct(decode_ids, pooled=dst.pooled)
    return lists


def _classes(plan, table, src_regions, dst_regions, src_real: int, dst_real: int) -> tuple[_Class, ...]:
    """Segments (runs of one layer) of `table` grouped by identical block-relative rows.

    Region ids from `src_real` / `dst_real` on are per-request scratch. Cached per table
    on the plan: a plan is immutable and lowered many times.
    """
    key = id(table)
    cached = plan.lowering_cache.get(key)
    if cached is not None:
        return cached
    dst = plan.dst
    src_stride = np.array([r.block_bytes for r in src_regions], np.int64)
    dst_stride = np.array([r.block_bytes for r in dst_regions], np.int64)
    src_scratch, dst_scratch = table.src_region >= src_real, table.dst_region >= dst_real
    buckets: dict = {}
    if len(table):
        seg_start = np.flatnonzero(np.r_[True, table.layer[1:] != table.layer[:-1]])
        seg_end = np.r_[seg_start[1:], len(table)]
        for start, end in zip(seg_start.tolist(), seg_end.tolist(), strict=True):
            r = slice(start, end)
            layer = int(table.layer[start])
            body = np.stack([table.src_rank[r], table.src_region[r] - table.src_region[start],
                             table.dst_region[r] - table.dst_region[start], table.src_block[r], table.dst_block[r],
                             table.src_offset[r], table.dst_offset[r], table.nbytes[r],
                             src_stride[table.src_region[r]], dst_stride[table.dst_region[r]],
                             src_scratch[r], dst_scratch[r]])
            sig = (dst.group_of(layer), getattr(dst.model.layers[layer], "sliding_window", None), body.tobytes())
            buckets.setdefault(sig, []).append((start, end - start))
    out = []
    for (group, _, _), segments in buckets.items():
        length = segments[0][1]  # equal rows imply equal lengths
        rows = np.array([start for start, _ in segments], np.int64)[:, None] + np.arange(length)[None, :]
        out.append(_Class(rows[0], rows, group))
    result = tuple(out)
    plan.lowering_cache[key] = result
    return result


def _pairings(plan, table, lists, src_regions, dst_regions, src_real: int, dst_real: int) -> list[_Paired]:
    """Pair each class's representative rows with the request's block ids.

    Regions past the engine's own are per-request scratch: their block index is the
    state block's position in the request.
    """
    classes = _classes(plan, table, src_regions, dst_regions, src_real, dst_real)
    if not classes:
        return []
    first_kept = first_kept_blocks(plan, [entry[5] for entry in lists])
    out = []
    for cls in classes:
        ns, nd, src_pad, dst_pad, partial, _ = lists[cls.group]
        if len(src_pad) == 0:
            continue
        rep = cls.rep
        span_ids = np.arange(len(src_pad) // ns, dtype=np.int64)[None, :, None]
        d_idx = span_ids * nd + table.dst_block[rep][None, None, :]
        # one block per span: the span's block id broadcasts, no gather
        s_blk = src_pad[None, :, None] if ns == 1 else src_pad[span_ids * ns + table.src_block[rep][None, None, :]]
        d_blk = dst_pad[None, :, None] if nd == 1 else dst_pad[d_idx]
        keep = (s_blk >= 0) & (d_blk >= 0) if partial else None
        s_scr, d_scr = table.src_region[rep] >= src_real, table.dst_region[rep] >= dst_real
        if s_scr.any():
            s_blk = np.where(s_scr[None, None, :], span_ids, s_blk)
        if d_scr.any():
            d_blk = np.where(d_scr[None, None, :], span_ids, d_blk)
        if first_kept is not None:
            window = d_idx >= first_kept[table.layer[rep]][None, None, :]
            keep = window if keep is None else keep & window
        out.append(_Paired(cls, s_blk, d_blk, keep))
    return out


def _pair(plan, dst_rank: int, src_blocks, dst_blocks, prefix: str = "exact"):
    """Validate a request and pair its block ids with `dst_rank`'s read rows."""
    lists = request_lists(plan, dst_rank, src_blocks, dst_blocks, prefix)
    table = plan.reads(dst_rank)
    return table, _pairings(plan, table, lists, plan.src_regions, plan.dst_regions,
                            len(plan.src.regions), len(plan.dst.regions))


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
    table, pairings = _pair(plan, dst_rank, src_blocks, dst_blocks, prefix)
    parts = []
    for pr in pairings:
        members, length = pr.cls.rows.shape
        shape = (members, pr.src_blk.shape[1] if pr.src_blk.shape[1] > 1 else pr.dst_blk.shape[1], length)
        shape = np.broadcast_shapes(shape, pr.src_blk.shape, pr.dst_blk.shape)
        cols = [np.broadcast_to(a, shape) for a in (pr.cls.rows[:, None, :], pr.src_blk, pr.dst_blk)]
        keep = None if pr.keep is None else np.broadcast_to(pr.keep, shape)
        parts.append([c[keep] if keep is not None else c.reshape(-1) for c in cols])
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
    lists = request_lists(plan, dst_rank, src_blocks, dst_blocks, prefix)
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
    """Offsets and merge decisions on each class's representative, then one broadcast
    copy per output column to every member segment (the only work per layer)."""
    src_stride = np.array([r.block_bytes for r in src_regions], np.int64)
    dst_stride = np.array([r.block_bytes for r in dst_regions], np.int64)
    out = {name: [] for name in _TRANSFER_COLUMNS}
    for pr in _pairings(plan, table, lists, src_regions, dst_regions, src_real, dst_real):
        rep, rows = pr.cls.rep, pr.cls.rows
        length = len(rep)
        s_off = pr.src_blk * src_stride[table.src_region[rep]] + table.src_offset[rep]
        d_off = pr.dst_blk * dst_stride[table.dst_region[rep]] + table.dst_offset[rep]
        s_off, d_off = (a.reshape(-1) for a in np.broadcast_arrays(s_off, d_off))
        row_of = np.tile(np.arange(length), len(s_off) // length)
        if pr.keep is not None:
            kept = np.broadcast_to(pr.keep, (1, len(s_off) // length, length)).reshape(-1)
            s_off, d_off, row_of = s_off[kept], d_off[kept], row_of[kept]
        nbytes = table.nbytes[rep][row_of]
        keys = [table.src_rank[rep][row_of], table.src_region[rep][row_of], table.dst_region[rep][row_of]]
        starts = run_starts(keys, s_off, d_off, nbytes)
        if len(starts) != len(s_off):
            s_off, d_off, nbytes, row_of = s_off[starts], d_off[starts], merged_nbytes(nbytes, starts), row_of[starts]
        members = (len(rows), len(s_off))
        out["src_rank"].append(np.broadcast_to(table.src_rank[rep][row_of], members).reshape(-1))
        out["src_region"].append(_per_member(table.src_region[rows], row_of, members))
        out["src_offset"].append(np.broadcast_to(s_off, members).reshape(-1))
        out["dst_region"].append(_per_member(table.dst_region[rows], row_of, members))
        out["dst_offset"].append(np.broadcast_to(d_off, members).reshape(-1))
        out["nbytes"].append(np.broadcast_to(nbytes, members).reshape(-1))
    cols = {name: frozen(np.concatenate(parts)) if len(parts) != 1 else frozen(parts[0])
            for name, parts in out.items()} if out["nbytes"] else \
        {name: frozen(np.zeros(0, np.int64)) for name in out}
    return Transfer(dst_rank, **cols, src_regions=src_regions, dst_regions=dst_regions)


def _per_member(values: np.ndarray, row_of: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """(members, L) values spread over each member's copies; a one-row template
    broadcasts (a plain copy) instead of gathering."""
    if values.shape[1] == 1:
        return np.broadcast_to(values, shape).reshape(-1)
    return values[:, row_of].reshape(-1)


_TRANSFER_COLUMNS = ("src_rank", "src_region", "src_offset", "dst_region", "dst_offset", "nbytes")


def first_kept_blocks(plan, decode_counts: list[int]):
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
