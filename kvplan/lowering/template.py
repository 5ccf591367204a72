"""Copy templates: a plan's reads in a form a device can evaluate per request.

`lower()` expands a request on the host into one row per copy. A GPU copy kernel can
instead receive, once per plan and decode rank, the block-relative `CopyTemplate`
(one entry per read row of the rank's table, long rows cut into pieces) and, per
request, only the block ids (`RequestBlocks`). Copy (entry e, span j) of group g is

    src = base(src_rank[e], src_region[e]) + src_ids[g][j*ns + src_block[e]] * src_stride[e] + src_offset[e]
    dst = base(dst_region[e])               + dst_ids[g][j*nd + dst_block[e]] * dst_stride[e] + dst_offset[e]

for `nbytes[e]` bytes, skipped when either id is -1 (the request has no such block)
or ``j*nd + dst_block[e] < first_kept[layer[e]]`` (outside a sliding window).
`expand()` evaluates exactly this on the host; it is the reference a kernel is tested
against and, rows aside from merging, it equals `lower()`.

A plan's local steps (bounce pack and unpack, a conv strategy's) have templates too
(`copy_template(..., step="pre" | "post")`): a pre step writes, and a post step reads, a
per-request scratch area indexed by the span's position in the request rather than by
a block id. `positional(blocks, side)` gives the ids that formula needs on that side:
the span's position where the request has the block, -1 where it has none, so the same
formula (and the same kernel) evaluates the steps with only block ids uploaded per
request. The reads of a plan with local steps are lowered on the host.
"""

from __future__ import annotations

import attrs
import numpy as np

from ..errors import SpecError
from ..planning.ranges import cut_rows
from ..planning.rows import CopyRows, column
from ..spec.limits import check_count
from .request import RequestBlocks


@attrs.frozen(eq=False, kw_only=True)
class CopyTemplate(CopyRows):
    """Block-relative copies of one decode rank, entries sorted by layer group;
    `blocks_per_span[g]` = (prefill, decode) logical blocks per span of group g
    (`copy_template` builds one)."""

    group: np.ndarray = column()
    layer: np.ndarray = column()
    src_block: np.ndarray = column()
    dst_block: np.ndarray = column()
    src_stride: np.ndarray = column()
    dst_stride: np.ndarray = column()
    blocks_per_span: tuple = ()


def copy_template(plan, dst_rank: int, *, max_piece_bytes: int | None = None, step: str | None = None,
                  src_rank: int | None = None) -> CopyTemplate:
    """The `CopyTemplate` of `dst_rank`'s reads (or, with `step`, of its "pre" or "post"
    local steps, only those of prefill rank `src_rank` if given); rows longer than
    `max_piece_bytes` are cut so a kernel can spread one long run over several thread
    blocks.

    >>> from kvplan.spec import AttentionSpec, EngineSpec, ModelSpec
    >>> from kvplan.planning import plan_tables
    >>> m = ModelSpec(name="m", layers=(AttentionSpec(num_kv_heads=8, head_dim=128),))
    >>> t = copy_template(plan_tables(EngineSpec(model=m, tp=2), EngineSpec(model=m, tp=4)), 3, max_piece_bytes=8192)
    >>> t.src_offset.tolist(), t.dst_offset.tolist(), t.nbytes.tolist(), t.src_stride.tolist()
    ([16384, 24576], [0, 8192], [8192, 8192], [32768, 32768])
    """
    if not (step is None or isinstance(step, str)) or step not in (None, "pre", "post"):
        raise SpecError(f"copy_template(step=...) takes None, 'pre' or 'post', got {step!r}"[:300])
    if src_rank is not None and (isinstance(src_rank, bool) or not isinstance(src_rank, (int, np.integer))
                                 or src_rank < 0):
        raise SpecError(f"copy_template(src_rank=...) takes None or a prefill rank (an int >= 0), got {src_rank!r}"
                        [:300])
    if step is None and (plan.pre_tables or plan.post_tables):
        raise SpecError(f"plan with the {plan.conv_strategy!r} conv strategy has local steps; lower it on the host")
    if max_piece_bytes is not None:
        check_count(max_piece_bytes, "max_piece_bytes")
    table = plan.reads(dst_rank)
    src_regions, dst_regions = plan.src_regions, plan.dst_regions
    if step is not None:
        plan.reads(dst_rank)  # RankError for a rank the plan does not have
        tables = plan.pre_tables if step == "pre" else plan.post_tables
        table = tables[dst_rank] if tables else table.select(np.zeros(len(table), bool))
        # a step's both sides lie in one engine's memory
        src_regions = dst_regions = plan.src_regions if step == "pre" else plan.dst_regions
        if src_rank is not None:
            table = table.select(table.src_rank == src_rank)
    group = np.array([plan.dst.group_of(int(layer)) for layer in table.layer], np.int64)
    order = np.argsort(group, kind="stable")
    cols = table.columns() | {
        "group": group,
        "src_stride": np.array([r.block_bytes for r in src_regions], np.int64)[table.src_region],
        "dst_stride": np.array([r.block_bytes for r in dst_regions], np.int64)[table.dst_region],
    }
    cols = {name: cols[name][order] for name in CopyTemplate.column_names()}
    if max_piece_bytes is not None and len(order) and cols["nbytes"].max() > max_piece_bytes:
        row, within, size = cut_rows(cols["nbytes"], max_piece_bytes)
        cols = {name: col[row] for name, col in cols.items()}
        cols["src_offset"] = cols["src_offset"] + within
        cols["dst_offset"] = cols["dst_offset"] + within
        cols["nbytes"] = size
    spans = tuple(plan.blocks_per_span(g) for g in range(len(plan.dst.layer_groups)))
    return CopyTemplate.from_columns(cols, dst_rank=dst_rank, blocks_per_span=spans)


def expand(template: CopyTemplate, blocks: RequestBlocks) -> dict[str, np.ndarray]:
    """Host evaluation of the template formula (module docstring): one row per copy.

    Returns columns src_rank, src_region, src_offset, dst_region, dst_offset, nbytes
    (offsets relative to region bases), in (entry, span) order.

    >>> from kvplan.spec import AttentionSpec, EngineSpec, ModelSpec
    >>> from kvplan.planning import plan_tables
    >>> from kvplan.lowering import request_blocks
    >>> m = ModelSpec(name="m", layers=(AttentionSpec(num_kv_heads=8, head_dim=128),))
    >>> p = plan_tables(EngineSpec(model=m, tp=2), EngineSpec(model=m, tp=4))
    >>> rows = expand(copy_template(p, 3), request_blocks(p, 3, [7, 8], [40, 41]))
    >>> rows["src_offset"].tolist(), rows["dst_offset"].tolist()
    ([245760, 278528], [655360, 671744])
    """
    out = {name: [] for name in ("src_rank", "src_region", "src_offset", "dst_region", "dst_offset", "nbytes")}
    for g, (ns, nd) in enumerate(template.blocks_per_span):
        entries = np.flatnonzero(template.group == g)
        spans = blocks.spans[g]
        if not len(entries) or not spans:
            continue
        j = np.arange(spans, dtype=np.int64)[None, :]
        d_index = j * nd + template.dst_block[entries][:, None]
        s_id = blocks.src_ids[g][j * ns + template.src_block[entries][:, None]]
        d_id = blocks.dst_ids[g][d_index]
        keep = (s_id >= 0) & (d_id >= 0) & (d_index >= blocks.first_kept[template.layer[entries]][:, None])
        e = np.broadcast_to(entries[:, None], keep.shape)[keep]
        out["src_rank"].append(template.src_rank[e])
        out["src_region"].append(template.src_region[e])
        out["src_offset"].append(s_id[keep] * template.src_stride[e] + template.src_offset[e])
        out["dst_region"].append(template.dst_region[e])
        out["dst_offset"].append(d_id[keep] * template.dst_stride[e] + template.dst_offset[e])
        out["nbytes"].append(template.nbytes[e])
    return {name: np.concatenate(parts) if parts else np.zeros(0, np.int64) for name, parts in out.items()}


# a staging position times a staging area's bytes per span must stay an int64 offset
MAX_POSITION = 2**40


def check_position(value, what: str) -> None:
    """Refuse a staging position that is not an int in [0, MAX_POSITION] (`SpecError`).

    >>> check_position(2**41, "first_position")
    Traceback (most recent call last):
    ...
    kvplan.errors.SpecError: first_position must be at most 1,099,511,627,776 (a staging position), got 2,199,023,255,552
    """
    check_count(value, what, minimum=0)
    if value > MAX_POSITION:
        raise SpecError(f"{what} must be at most {MAX_POSITION:,} (a staging position), got {value:,}")


def positional(blocks: RequestBlocks, side: str, *, first_position: int = 0) -> RequestBlocks:
    """`blocks` with one side's ids replaced by span positions (-1 where the request has
    no block): what a step template's scratch side is indexed by (module docstring).
    Positions start at `first_position` (a staging ring's slot, `kvplan.lowering.ring`).

    >>> from kvplan.spec import AttentionSpec, EngineSpec, ModelSpec
    >>> from kvplan.planning import plan_tables
    >>> from kvplan.lowering import request_blocks
    >>> m = ModelSpec(name="m", layers=(AttentionSpec(num_kv_heads=8, head_dim=128),))
    >>> p = plan_tables(EngineSpec(model=m, tp=2, block_tokens=16), EngineSpec(model=m, tp=4, block_tokens=32))
    >>> positional(request_blocks(p, 3, [7, 8, 9], [40, 41]), "src").src_ids[0].tolist()  # 2 blocks per span
    [0, 0, 1, -1]
    """
    if not isinstance(side, str) or side not in ("src", "dst"):
        raise SpecError(f"positional(side=...) takes 'src' or 'dst', got {side!r}"[:300])
    if not isinstance(blocks, RequestBlocks):
        raise SpecError(f"positional() takes the RequestBlocks of request_blocks(), got {type(blocks).__name__}")
    check_position(first_position, "positional(first_position=...)")
    groups = []
    for g in blocks.groups:
        per_span = g.blocks_per_span[0 if side == "src" else 1]
        ids = g.src_ids if side == "src" else g.dst_ids
        place = np.where(ids >= 0, np.arange(len(ids), dtype=np.int64) // per_span + first_position, -1)
        groups.append(attrs.evolve(g, **{f"{side}_ids": place}))
    return attrs.evolve(blocks, groups=tuple(groups))


def expand_step(template: CopyTemplate, blocks: RequestBlocks, step: str, *,
                first_position: int = 0) -> dict[str, np.ndarray]:
    """`expand` of a "pre" or "post" step template: the scratch side (a pre step's
    destination, a post step's source) indexed by span position from `first_position`."""
    if not isinstance(step, str) or step not in ("pre", "post"):
        raise SpecError(f"expand_step(step=...) takes 'pre' or 'post', got {step!r}"[:300])
    return expand(template, positional(blocks, "dst" if step == "pre" else "src", first_position=first_position))