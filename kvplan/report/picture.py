"""A plan as a picture: one decode rank's reads drawn as an SVG, because a map is quicker
to read than a table.

For each class of layers whose reads are alike (the same rows up to region ids), the
picture draws one representative layer: a bar per page the reads touch, first the
prefill pages of every source rank, then the decode rank's pages, each bar a logical
block of one region at scale. Every read is a rectangle on both its source and its
destination bar, coloured by source rank and labelled with its component (K, V, KV,
latent, conv_x / conv_B / conv_C, ssm, ...) and the heads or channels it holds; a read
of bytes that other prefill ranks hold too (replicated KV heads, MLA latents, replicated
state heads) is outlined dashed. A legend gives the source colours and what a request
of `request_tokens` tokens moves. Each rectangle carries its row as ``data-*``
attributes (side, class, row, region, block, offset, bytes), so tools and tests can
read the picture back; the SVG is self-contained and plain text (no library).

>>> from kvplan import AttentionSpec, EngineSpec, ModelSpec, plan
>>> m = ModelSpec(name="m", layers=(AttentionSpec(num_kv_heads=4, head_dim=64),) * 2)
>>> svg = plan_picture(plan(EngineSpec(model=m, tp=2), EngineSpec(model=m, tp=4)), 3)
>>> svg.startswith("<svg"), svg.count('class="copy"'), ">KV h3<" in svg   # K and V of head 3, both layers alike
(True, 2, True)
"""

from __future__ import annotations

from xml.sax.saxutils import escape

from .classes import class_text, layer_classes, layer_runs, replicas, row_label
from .cost import check_plan
from .request_cost import request_cost

PAGE_PX = 720  # width of one logical block's page
BAR_PX, GAP_PX, LEFT_PX = 22, 6, 230
COLOURS = ("#4e79a7", "#f28e2b", "#59a14f", "#e15759", "#76b7b2", "#edc948", "#b07aa1", "#ff9da7", "#9c755f",
           "#bab0ac")


def plan_picture(plan, dst_rank: int = 0, *, request_tokens: int = 4096) -> str:
    """An SVG of `dst_rank`'s reads (module docstring)."""
    check_plan(plan)
    table = plan.reads(dst_rank)  # RankError for a rank outside the decode engine
    cost = request_cost(plan, request_tokens, dst_rank).ranks[0]
    classes = layer_classes(table)
    parts, y = [], 54
    for index, (layers, rows) in enumerate(classes):
        drawn, y = _class(plan, table, index, layers, rows, y)
        parts.append(drawn)
    sources = sorted({int(s) for s in table.src_rank})
    legend = [f'<text x="10" y="{y + 24}" font-weight="bold">source ranks</text>']
    for i, s in enumerate(sources):
        x = 120 + 90 * i
        legend.append(f'<rect x="{x}" y="{y + 12}" width="14" height="14" fill="{_colour(s)}"/>'
                      f'<text x="{x + 18}" y="{y + 24}">P{s}</text>')
    legend.append(f'<text x="10" y="{y + 48}">a {request_tokens:,}-token request: {cost.bytes:,} bytes in '
                  f'{cost.descriptors:,} copies, {cost.local_copies:,} local copies (scattered blocks); dashed: '
                  f'bytes other prefill ranks hold too</text>')
    height, width = y + 64, LEFT_PX + PAGE_PX + 20
    title = (f"{plan.dst.model.name}: decode rank {table.dst_rank} of TP {plan.dst.tp} x PP {plan.dst.pp} reads "
             f"from prefill TP {plan.src.tp} x PP {plan.src.pp} ({plan.conv_strategy} conv, "
             f"{plan.transfer_strategy} transfer)")
    return "\n".join([
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}" '
        f'font-family="sans-serif" font-size="11" data-dst-rank="{table.dst_rank}">',
        f"<title>{escape(title)}</title>",
        f'<rect width="{width}" height="{height}" fill="white"/>',
        f'<text x="10" y="22" font-size="14" font-weight="bold">{escape(title)}</text>',
        f'<text x="10" y="40">one span of {plan.span_tokens:,} tokens per token layer, one block per state layer; '
        f'bars are logical blocks at scale</text>',
        *parts, *legend, "</svg>"])


def _class(plan, table, index: int, layers, rows, y: int) -> tuple[str, int]:
    what = class_text(plan, layers)
    out = [f'<g class="layer-class" data-class="{index}" data-layers="{",".join(map(str, layers))}">',
           f'<text x="10" y="{y + 14}" font-weight="bold">{escape(layer_runs(layers))} ({escape(what)}): {len(rows)} '
           f'read{"s" * (len(rows) != 1)} per span</text>']
    y += 22
    bars: dict[tuple, list[int]] = {}  # (side, rank, region, block) -> the rows drawn on that page
    for i in rows:
        bars.setdefault(("src", int(table.src_rank[i]), int(table.src_region[i]), int(table.src_block[i])), []).append(i)
    for i in rows:
        bars.setdefault(("dst", int(table.dst_rank), int(table.dst_region[i]), int(table.dst_block[i])), []).append(i)
    # source pages first, then the decode rank's, each side in (rank, region, block) order
    for (side, rank, region, block), mine in sorted(bars.items(), key=lambda kv: (kv[0][0] == "dst", kv[0][1:])):
        regions = plan.src_regions if side == "src" else plan.dst_regions
        page = regions[region].block_bytes
        label = f"{'P' if side == 'src' else 'D'}{rank} {regions[region].name} blk {block}"
        out.append(f'<text x="{LEFT_PX - 6}" y="{y + 15}" text-anchor="end">{escape(label)}</text>'
                   f'<rect class="page" x="{LEFT_PX}" y="{y}" width="{PAGE_PX}" height="{BAR_PX}" fill="#f4f4f4" '
                   f'stroke="#999"/>')
        for i in mine:
            out.append(_copy(plan, table, side, index, i, page, y))
        y += BAR_PX + GAP_PX
    out.append("</g>")
    return "\n".join(out), y + 10


def _copy(plan, table, side: str, index: int, i: int, page: int, y: int) -> str:
    offset = int(table.src_offset[i] if side == "src" else table.dst_offset[i])
    nbytes, source = int(table.nbytes[i]), int(table.src_rank[i])
    region = int(table.src_region[i] if side == "src" else table.dst_region[i])
    block = int(table.src_block[i] if side == "src" else table.dst_block[i])
    x = LEFT_PX + PAGE_PX * offset / page
    width = max(PAGE_PX * nbytes / page, 0.5)
    label = row_label(plan, table, i)
    held_by = replicas(plan, table, i)
    dash = ' stroke-dasharray="3,2" stroke="black"' if len(held_by) > 1 else ' stroke="white"'
    tip = (f"P{source} -> D{int(table.dst_rank)}, layer {int(table.layer[i])} {label}: {nbytes:,} bytes, "
           f"source +{int(table.src_offset[i]):,}, destination +{int(table.dst_offset[i]):,}"
           + (f"; held alike by P ranks {', '.join(map(str, held_by))}" if len(held_by) > 1 else ""))
    text = (f'<text x="{x + 3:.1f}" y="{y + 15}" fill="white" pointer-events="none">{escape(label)}</text>'
            if width > 7 * len(label) + 6 else "")
    return (f'<rect class="copy" data-side="{side}" data-class="{index}" data-row="{i}" data-region="{region}" '
            f'data-block="{block}" data-offset="{offset}" data-nbytes="{nbytes}" data-src-rank="{source}" '
            f'x="{x:.2f}" y="{y}" width="{width:.2f}" height="{BAR_PX}" fill="{_colour(source)}"{dash}>'
            f"<title>{escape(tip)}</title></rect>{text}")


def _colour(rank: int) -> str:
    return COLOURS[rank % len(COLOURS)]
