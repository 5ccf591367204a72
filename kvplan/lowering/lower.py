"""lower(): a plan's per-span reads + a request's block ids -> a `Transfer`.

Vectorised: the segments (one layer each) of a decode rank's table are grouped into
classes of identical block-relative rows; offsets, window masks and merge decisions
are worked out once on a class's representative, then broadcast to every member
layer. Rows contiguous on both sides (consecutive blocks, whole pages) are merged.
"""

from __future__ import annotations

import weakref

import attrs
import numpy as np

from ..planning.ranges import merged_nbytes, run_starts
from ..planning.rows import RowTable, column, frozen
from ..planning.tables import ReadTable
from ..errors import SpecError
from ..spec.limits import MAX_TRANSFER_ROWS
from .compact import CompactRows, OuterBlock
from .request import RequestBlocks, request_blocks
from .transfer import Transfer


@attrs.frozen(kw_only=True)
class RequestRows(RowTable):
    """A request's copies before coalescing: which table row, for which block ids.

    `row[i]` indexes `table` (the decode rank's `ReadTable`); `src_block_id[i]` /
    `dst_block_id[i]` are the request's logical block ids that row reads from and
    writes to. Order: by class of identical layers, then span, then table row
    (`request_rows` builds it).
    """

    table: ReadTable
    row: np.ndarray = column()
    src_block_id: np.ndarray = column()
    dst_block_id: np.ndarray = column()


def _array():
    return attrs.field(eq=False, converter=frozen)


def _readonly(array: np.ndarray) -> np.ndarray:
    array.setflags(write=False)
    return array


def _mask():
    return attrs.field(eq=False, converter=_readonly)


@attrs.frozen(kw_only=True)
class _Class:
    """Layer segments of a table whose rows are equal up to region ids: `rep` holds the
    representative's L table rows, `rows` the K x L rows of all members. The other
    fields are the representative's row constants, worked out once per plan (`of`):
    its columns, region strides, `key` one id per distinct (source rank, source region,
    destination region), regions relative to its first row's (`rel_*`), each member's
    first regions (`first_*`) and which rows touch scratch."""

    rep: np.ndarray = _array()
    rows: np.ndarray = attrs.field(eq=False, converter=_readonly)
    group: int
    src_stride: np.ndarray = _array()
    dst_stride: np.ndarray = _array()
    src_offset: np.ndarray = _array()
    dst_offset: np.ndarray = _array()
    src_block: np.ndarray = _array()
    dst_block: np.ndarray = _array()
    src_rank: np.ndarray = _array()
    nbytes: np.ndarray = _array()
    key: np.ndarray = _array()
    rel_src: np.ndarray = _array()
    rel_dst: np.ndarray = _array()
    first_src: np.ndarray = _array()
    first_dst: np.ndarray = _array()
    src_scratch: np.ndarray = _mask()
    dst_scratch: np.ndarray = _mask()

    @classmethod
    def of(cls, table, rows: np.ndarray, group: int, src_stride, dst_stride, src_real: int, dst_real: int) -> _Class:
        rep = rows[0]
        keys = np.stack([table.src_rank[rep], table.src_region[rep], table.dst_region[rep]])
        return cls(rep=rep, rows=rows, group=group,
                   src_stride=src_stride[table.src_region[rep]], dst_stride=dst_stride[table.dst_region[rep]],
                   src_offset=table.src_offset[rep], dst_offset=table.dst_offset[rep],
                   src_block=table.src_block[rep], dst_block=table.dst_block[rep],
                   src_rank=table.src_rank[rep], nbytes=table.nbytes[rep],
                   key=np.unique(keys, axis=1, return_inverse=True)[1].reshape(-1),
                   rel_src=table.src_region[rep] - table.src_region[rep[0]],
                   rel_dst=table.dst_region[rep] - table.dst_region[rep[0]],
                   first_src=table.src_region[rows[:, 0]], first_dst=table.dst_region[rows[:, 0]],
                   src_scratch=table.src_region[rep] >= src_real, dst_scratch=table.dst_region[rep] >= dst_real)


@attrs.frozen
class _Paired:
    """A class paired with a request: block ids (1, spans, L) of the representative,
    -1 where the request has none; `keep` marks copies the request makes (or None)."""

    cls: _Class
    src_blk: np.ndarray = attrs.field(eq=False)
    dst_blk: np.ndarray = attrs.field(eq=False)
    keep: np.ndarray | None = attrs.field(eq=False)
    copies_staging: bool = False  # some rows are bounce copies, staging to staging


# Classes are a pure function of a plan's table, worked out once and lowered many
# times: memoised per plan object (weakly, so the memo dies with the plan) and table.
_CLASSES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _classes(plan, table, src_regions, dst_regions, src_real: int, dst_real: int) -> tuple[_Class, ...]:
    """Segments (runs of one layer) of `table` grouped by identical block-relative rows.

    Region ids from `src_real` / `dst_real` on are per-request scratch.
    """
    memo = _CLASSES.setdefault(plan, {})
    cached = memo.get(id(table))
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
            spec = dst.model.layers[layer]
            body = np.stack([table.src_rank[r], table.src_region[r] - table.src_region[start],
                             table.dst_region[r] - table.dst_region[start], table.src_block[r], table.dst_block[r],
                             table.src_offset[r], table.dst_offset[r], table.nbytes[r],
                             src_stride[table.src_region[r]], dst_stride[table.dst_region[r]],
                             src_scratch[r], dst_scratch[r]])
            window = spec.sliding_window if spec.holds_tokens else None
            sig = (dst.group_of(layer), window, body.tobytes())
            buckets.setdefault(sig, []).append((start, end - start))
    out = []
    for (group, _, _), segments in buckets.items():
        length = segments[0][1]  # equal rows imply equal lengths
        rows = np.array([start for start, _ in segments], np.int64)[:, None] + np.arange(length)[None, :]
        out.append(_Class.of(table, rows, group, src_stride, dst_stride, src_real, dst_real))
    memo[id(table)] = result = tuple(out)
    return result


def _pairings(plan, table, request: RequestBlocks, src_regions, dst_regions, src_real: int,
              dst_real: int) -> list[_Paired]:
    """Pair each class's representative rows with the request's block ids.

    Regions past the engine's own are per-request scratch: their block index is the
    state block's position in the request.
    """
    classes = _classes(plan, table, src_regions, dst_regions, src_real, dst_real)
    # every member layer copies its rows once per span: bounded before anything is built
    rows = sum(cls.rows.size * request.groups[cls.group].spans for cls in classes)
    MAX_TRANSFER_ROWS.check(rows, f"rows of one request for decode rank {request.dst_rank} (before merging)")
    out = []
    for cls in classes:
        group = request.groups[cls.group]
        ns, nd = group.blocks_per_span
        src_pad, dst_pad = group.src_ids, group.dst_ids
        if len(src_pad) == 0:
            continue
        span_ids = np.arange(len(src_pad) // ns, dtype=np.int64)[None, :, None]
        d_idx = span_ids * nd + cls.dst_block[None, None, :]
        # one block per span: the span's block id broadcasts, no gather
        s_blk = src_pad[None, :, None] if ns == 1 else src_pad[span_ids * ns + cls.src_block[None, None, :]]
        d_blk = dst_pad[None, :, None] if nd == 1 else dst_pad[d_idx]
        keep = (s_blk >= 0) & (d_blk >= 0) if group.partial else None
        s_scr, d_scr = cls.src_scratch, cls.dst_scratch
        if keep is not None and (s_scr & d_scr).any():
            # scratch to scratch (a bounce copy): made for every span of the request,
            # however many of the span's blocks it has (`kvplan.planning.bounce`)
            keep = keep | (s_scr & d_scr)[None, None, :]
        if s_scr.any():
            s_blk = np.where(s_scr[None, None, :], span_ids, s_blk)
        if d_scr.any():
            d_blk = np.where(d_scr[None, None, :], span_ids, d_blk)
        if request.windowed:
            window = d_idx >= request.first_kept[table.layer[cls.rep]][None, None, :]
            keep = window if keep is None else keep & window
        # bounce copies merge across spans (a conv strategy's scratch holds one state)
        staging = plan.transfer_strategy == "bounce" and bool((s_scr & d_scr).any())
        out.append(_Paired(cls, s_blk, d_blk, keep, staging))
    return out


def request_rows(plan, dst_rank: int, src_blocks, dst_blocks, *, prefix: str = "exact") -> RequestRows:
    """Pair a request's block ids with the rows of `dst_rank`'s table (no coalescing).

    `src_blocks` / `dst_blocks` are the request's logical block ids on each engine, in
    token order (see `kvplan.lowering.request`). Sliding-window layers keep only the
    blocks their window needs.

    >>> from kvplan.spec import AttentionSpec, EngineSpec, ModelSpec
    >>> from kvplan.planning import plan_tables
    >>> m = ModelSpec(name="m", layers=(AttentionSpec(2, 8),) * 2)
    >>> r = request_rows(plan_tables(EngineSpec(model=m), EngineSpec(model=m)), 0, [5, 6], [1, 2])
    >>> r.row.tolist(), r.src_block_id.tolist(), r.dst_block_id.tolist()     # 2 layers x 2 blocks
    ([0, 0, 1, 1], [5, 6, 5, 6], [1, 2, 1, 2])
    """
    request = request_blocks(plan, dst_rank, src_blocks, dst_blocks, prefix=prefix)
    table = plan.reads(dst_rank)
    parts = []
    for pr in _pairings(plan, table, request, plan.src_regions, plan.dst_regions, len(plan.src_regions) -
                        len(plan.src_scratch), len(plan.dst_regions) - len(plan.dst_scratch)):
        members, length = pr.cls.rows.shape
        shape = (members, pr.src_blk.shape[1] if pr.src_blk.shape[1] > 1 else pr.dst_blk.shape[1], length)
        shape = np.broadcast_shapes(shape, pr.src_blk.shape, pr.dst_blk.shape)
        cols = [np.broadcast_to(a, shape) for a in (pr.cls.rows[:, None, :], pr.src_blk, pr.dst_blk)]
        keep = None if pr.keep is None else np.broadcast_to(pr.keep, shape)
        parts.append({name: c[keep] if keep is not None else c.reshape(-1)
                      for name, c in zip(("row", "src_block_id", "dst_block_id"), cols, strict=True)})
    return RequestRows.concat(parts, table=table)


def lower(plan, dst_rank: int, src_blocks, dst_blocks, *, prefix: str = "exact", steps: bool = True,
          layers=None) -> Transfer:
    """Coalesced `Transfer` for `dst_rank` reading a request's blocks (see `request_rows`).

    `layers` (a `range` or `slice` of the model's cache layers, step 1): only those
    layers' copies and local steps, for streaming a request layer by layer as prefill
    produces it. Rows never merge across layers, so the transfers of ranges that
    partition the layers hold exactly the whole request's rows.

    Plans with local steps (bounce, a staged or permuted conv strategy) attach them:
    `pre_steps` (run on the source ranks before the reads) and `post_steps` (run on
    the destination after them); ``steps=False`` leaves them out, for a caller that
    runs them from step templates (`kvplan.lowering.template`).

    >>> from kvplan.spec import AttentionSpec, EngineSpec, ModelSpec
    >>> from kvplan.planning import plan_tables
    >>> m = ModelSpec(name="m", layers=(AttentionSpec(num_kv_heads=8, head_dim=128),))
    >>> t = lower(plan_tables(EngineSpec(model=m, tp=2), EngineSpec(model=m, tp=4)), 3, [7, 8], [40, 41])
    >>> t.src_offset.tolist(), t.dst_offset.tolist(), t.nbytes.tolist()
    ([245760, 278528], [655360, 671744], [16384, 16384])
    >>> m2 = ModelSpec(name="m2", layers=(AttentionSpec(num_kv_heads=8, head_dim=128),) * 3)
    >>> p2 = plan_tables(EngineSpec(model=m2, tp=2), EngineSpec(model=m2, tp=4))
    >>> [len(lower(p2, 3, [7, 8], [40, 41], layers=range(k, k + 1))) for k in range(3)]   # layer by layer
    [2, 2, 2]
    """
    if not isinstance(steps, bool):
        raise SpecError(f"lower(steps=...) must be True or False, got {steps!r}")
    request = request_blocks(plan, dst_rank, src_blocks, dst_blocks, prefix=prefix)
    span = layer_range(plan, layers)
    src_regions, dst_regions = plan.src_regions, plan.dst_regions
    n_src, n_dst = len(src_regions) - len(plan.src_scratch), len(dst_regions) - len(plan.dst_scratch)
    reads = _lower_table(plan, _of_layers(plan, plan.reads(dst_rank), span), request, src_regions, dst_regions,
                         n_src, n_dst)
    pre = post = None
    if steps and (plan.pre_tables or plan.post_tables):
        # pre steps copy within source memory (regions -> source scratch); post steps
        # within the destination (scratch -> regions): both sides of a step use one
        # engine's table
        pre = Transfer.from_compact(
            _lower_table(plan, _of_layers(plan, plan.pre_tables[dst_rank], span), request, src_regions,
                         src_regions, n_src, n_src),
            dst_rank=request.dst_rank, src_regions=src_regions, dst_regions=src_regions,
            plan_fingerprint=plan.fingerprint)
        post = Transfer.from_compact(
            _lower_table(plan, _of_layers(plan, plan.post_tables[dst_rank], span), request, dst_regions,
                         dst_regions, n_dst, n_dst),
            dst_rank=request.dst_rank, src_regions=dst_regions, dst_regions=dst_regions,
            plan_fingerprint=plan.fingerprint)
    return Transfer.from_compact(reads, dst_rank=request.dst_rank, src_regions=src_regions, dst_regions=dst_regions,
                                 pre_steps=pre, post_steps=post, plan_fingerprint=plan.fingerprint)


def lower_push(plan, src_rank: int, src_blocks, dst_blocks, *, prefix: str = "exact", layers=None) -> tuple:
    """What prefill rank `src_rank` writes for one request, pushed: one `Transfer` per
    decode rank (in rank order; empty where it writes nothing), the rows of that rank's
    `lower()` sourced here (`PlanTables.writes` is the plan's view). Plans with local
    steps are pushed by a backend that runs them (``NixlBackend(push=True)``): their
    unpack waits for every source, which one prefill rank's view cannot hold.

    >>> from kvplan.spec import AttentionSpec, EngineSpec, ModelSpec
    >>> from kvplan.planning import plan_tables
    >>> m = ModelSpec(name="m", layers=(AttentionSpec(num_kv_heads=8, head_dim=128),))
    >>> p = plan_tables(EngineSpec(model=m, tp=2), EngineSpec(model=m, tp=4))
    >>> [t.nbytes.tolist() for t in lower_push(p, 1, [7, 8], [40, 41])]
    [[], [], [16384, 16384], [16384, 16384]]
    """
    if plan.pre_tables or plan.post_tables:
        raise SpecError(f"lower_push: this plan has local steps ({plan.transfer_strategy} transfer, "
                        f"{plan.conv_strategy} conv strategy); push it through a backend that runs them "
                        "(serve / execute with NixlBackend(push=True))")
    src_rank = plan.check_src_rank(src_rank)
    return tuple(lower(plan, d, src_blocks, dst_blocks, prefix=prefix, layers=layers).for_source(src_rank)
                 for d in range(len(plan.tables)))


def layer_range(plan, layers) -> tuple[int, int] | None:
    """(start, stop) of a `range` or `slice` of `plan`'s cache layers with step 1 (a
    slice's bounds clipped like a list's, a range's checked), or None for all layers.

    >>> from kvplan.spec import AttentionSpec, EngineSpec, ModelSpec
    >>> from kvplan.planning import plan_tables
    >>> m = ModelSpec(name="m", layers=(AttentionSpec(num_kv_heads=8, head_dim=128),) * 4)
    >>> p = plan_tables(EngineSpec(model=m), EngineSpec(model=m))
    >>> layer_range(p, slice(-2, None)), layer_range(p, range(1, 3))
    ((2, 4), (1, 3))
    >>> layer_range(p, range(3, 9))
    Traceback (most recent call last):
    ...
    kvplan.errors.SpecError: lower(layers=range(3, 9)): the model has 4 cache layers (0 - 3)
    """
    if layers is None:
        return None
    count = len(plan.dst.model.layers)
    if isinstance(layers, slice):
        try:
            start, stop, step = layers.indices(count)
        except (TypeError, ValueError):  # bounds that are not integers; a step of 0
            raise SpecError(f"lower(layers={layers!r}): a slice of integer bounds and step 1"[:300]) from None
        if step != 1:
            raise SpecError(f"lower(layers={layers!r}): layers go in one contiguous range (step 1)")
        return start, max(start, stop)
    if not isinstance(layers, range):
        raise SpecError(f"lower(layers=...) takes a range or a slice of cache layers, got {layers!r}"[:300])
    if layers.step != 1:
        raise SpecError(f"lower(layers={layers!r}): layers go in one contiguous range (step 1)")
    if not 0 <= layers.start <= layers.stop <= count:
        raise SpecError(f"lower(layers={layers!r}): the model has {count} cache layers (0 - {count - 1})"[:300])
    return layers.start, layers.stop


# A table's rows of a layer range, kept per plan (weakly) so the class memo, keyed by
# table identity, serves every request streamed with the same ranges.
_LAYER_TABLES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _of_layers(plan, table, span: tuple[int, int] | None):
    if span is None:
        return table
    memo = _LAYER_TABLES.setdefault(plan, {})
    key = (id(table), span)
    if key not in memo:
        if len(memo) >= 4096:  # many distinct ranges: start over rather than grow without bound
            memo.clear()
        memo[key] = (table, table.select((table.layer >= span[0]) & (table.layer < span[1])))
    return memo[key][1]


_TRANSFER_COLUMNS = Transfer.column_names()


def _lower_table(plan, table, request: RequestBlocks, src_regions, dst_regions, src_real, dst_real) -> CompactRows:
    """Offsets and merge decisions on each class's representative; its member layers
    differ only by region ids, one per member, so each class is one `OuterBlock`
    (expanded when the Transfer's columns are first read)."""
    blocks = []
    for pr in _pairings(plan, table, request, src_regions, dst_regions, src_real, dst_real):
        c = pr.cls
        length = len(c.rep)
        s_off = pr.src_blk * c.src_stride + c.src_offset
        d_off = pr.dst_blk * c.dst_stride + c.dst_offset
        s_off, d_off = (a.reshape(-1) for a in np.broadcast_arrays(s_off, d_off))
        spans = len(s_off) // length
        row_of = np.tile(np.arange(length), spans) if length > 1 else np.zeros(spans, np.int64)
        if pr.keep is not None:
            kept = np.broadcast_to(pr.keep, (1, spans, length)).reshape(-1)
            s_off, d_off, row_of = s_off[kept], d_off[kept], row_of[kept]
        if pr.copies_staging:
            # bounce copies: a row's spans follow each other in staging, so order by row
            # (then span) for them to merge into one copy per row
            by_row = np.argsort(row_of, kind="stable")
            s_off, d_off, row_of = s_off[by_row], d_off[by_row], row_of[by_row]
        nbytes = c.nbytes[row_of]
        starts = run_starts([c.key[row_of]], s_off, d_off, nbytes)
        if len(starts) != len(s_off):
            s_off, d_off, nbytes, row_of = s_off[starts], d_off[starts], merged_nbytes(nbytes, starts), row_of[starts]
        # a class groups layers whose rows are equal up to region ids, counted from each
        # member's first row: region = member's first region + the representative's offset
        blocks.append(OuterBlock(len(c.rows), bases=(None, c.first_src, None, c.first_dst, None, None),
                                 values=(c.src_rank[row_of], c.rel_src[row_of], s_off, c.rel_dst[row_of], d_off,
                                         nbytes)))
    return CompactRows(names=_TRANSFER_COLUMNS, blocks=tuple(blocks))
