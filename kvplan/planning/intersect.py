"""Intersection: the rows one destination rank needs of one layer, from the layouts.

For each component the destination holds the global indices ``[lo, hi)`` of its
TP-sharded axis; each run of indices is read from one source rank
(`kvplan.planning.sources`). For the common indices every element cell is evaluated
in both layouts over one span of tokens (the smallest both block sizes tile), giving
(source block, source offset) -> (destination block, destination offset) pairs; pairs
contiguous on both sides are coalesced into rows. Identical layers share the result.
"""

from __future__ import annotations

import math

import numpy as np

from ..errors import SpecError
from ..layout.component import ComponentLayout
from ..layout.memory import EngineMemory
from ..spec.components import COMPONENT_CODE
from .ranges import merged_nbytes, run_starts
from .sources import preferred_sources, source_runs
from .tables import TemplateRows


def token_mode(component: ComponentLayout) -> tuple[int, int] | None:
    """(tokens per kernel page, byte stride between consecutive tokens of a page) of a
    component's layout, None without a plain token mode.

    >>> from kvplan.layout.affine import Layout
    >>> token_mode(ComponentLayout(component="K", slot=0, held=(0, 1), cell_bytes=256, has_tokens=True,
    ...                            layout=Layout(shape=(1, (16, 2)), stride=(0, (512, 8192)))))
    (16, 512)
    """
    if not component.has_tokens:
        return None
    extent, stride = component.layout.shape[1], component.layout.stride[1]
    if isinstance(extent, tuple):
        extent, stride = extent[0], stride[0]
    return None if isinstance(extent, tuple) else (extent, stride)


def cell_pairs(dst: ComponentLayout, src: ComponentLayout, lo: int, hi: int, span_tokens: int,
               dst_block_tokens: int, src_block_tokens: int, *, run_tokens: int = 1) -> dict[str, np.ndarray]:
    """Every element cell of indices ``[lo, hi)`` (both layouts must hold them) over a
    span of `span_tokens`: columns src_block, src_offset, dst_block, dst_offset; with
    `run_tokens`, only every run_tokens-th token (`_layer_rows` says when that is enough).

    >>> from kvplan.layout.affine import Layout
    >>> d = ComponentLayout(component="K", slot=0, held=(0, 2), cell_bytes=4, has_tokens=True,
    ...                     layout=Layout(shape=(2, (2, 1)), stride=(8, (4, 16))))
    >>> s = ComponentLayout(component="K", slot=0, held=(1, 2), cell_bytes=4, has_tokens=True,
    ...                     layout=Layout(shape=(1, (2, 1)), stride=(8, (4, 8))))
    >>> {k: v.tolist() for k, v in cell_pairs(d, s, 1, 2, 2, 2, 2).items()}
    {'src_block': [0, 0], 'src_offset': [0, 4], 'dst_block': [0, 0], 'dst_offset': [8, 12]}
    """
    if not (dst.held[0] <= lo < hi <= dst.held[1] and src.held[0] <= lo and hi <= src.held[1]):
        raise SpecError(f"indices [{lo}, {hi}) are not held by both layouts ({dst.held}, {src.held})")
    extra_dst, extra_src = dst.layout.shape[1 + dst.has_tokens:], src.layout.shape[1 + src.has_tokens:]
    if extra_dst != extra_src or dst.has_tokens != src.has_tokens:
        raise SpecError(f"layouts of {dst.component} disagree: {dst.layout} vs {src.layout}")
    ndim = 1 + dst.has_tokens + len(extra_dst)

    def along(values: np.ndarray, dim: int) -> np.ndarray:
        shape = [1] * ndim
        shape[dim] = len(values)
        return values.reshape(shape)

    # slice both layouts to the common indices: coordinate c is global index lo + c
    src_layout = src.layout.restrict(0, lo - src.held[0], hi - src.held[0])
    dst_layout = dst.layout.restrict(0, lo - dst.held[0], hi - dst.held[0])
    index = along(np.arange(hi - lo, dtype=np.int64), 0)
    axes = [along(np.arange(extent, dtype=np.int64), 1 + dst.has_tokens + k) for k, extent in enumerate(extra_dst)]
    if dst.has_tokens:
        tokens = np.arange(0, span_tokens, run_tokens, dtype=np.int64)
        s_blk, s_tok = np.divmod(tokens, src_block_tokens)
        d_blk, d_tok = np.divmod(tokens, dst_block_tokens)
        s_off = src_layout(index, along(s_tok, 1), *axes)
        d_off = dst_layout(index, along(d_tok, 1), *axes)
        s_blk, d_blk = along(s_blk, 1), along(d_blk, 1)
    else:
        s_off, d_off = src_layout(index, *axes), dst_layout(index, *axes)
        s_blk = d_blk = np.zeros(1, np.int64)
    shape = np.broadcast_shapes(np.shape(s_off), np.shape(d_off), s_blk.shape)
    return {name: np.broadcast_to(value, shape).reshape(-1).astype(np.int64, copy=False) for name, value in
            (("src_block", s_blk), ("src_offset", s_off), ("dst_block", d_blk), ("dst_offset", d_off))}


def layer_rows(src: EngineMemory, dst: EngineMemory, layer: int, dst_tp_rank: int, *,
               src_memo: dict | None = None) -> TemplateRows:
    """Rows (block-relative, coalesced) that destination TP rank `dst_tp_rank` reads
    for `layer`, source ranks counted within the layer's stage.

    `src_memo` (a dict the caller keeps per source layout of the layer) holds what every
    destination rank asks of the source ranks, worked out once instead of once per rank.

    >>> from kvplan.layout import engine_memory
    >>> from kvplan.spec import AttentionSpec, EngineSpec, ModelSpec
    >>> m = ModelSpec(name="m", layers=(AttentionSpec(num_kv_heads=8, head_dim=128),))
    >>> rows = layer_rows(engine_memory(EngineSpec(model=m, tp=8)), engine_memory(EngineSpec(model=m, tp=2)), 0, 1)
    >>> rows.src_rank.tolist(), rows.src_offset.tolist(), rows.dst_offset.tolist(), rows.nbytes.tolist()
    ([4, 5, 6, 7], [0, 0, 0, 0], [0, 8192, 16384, 24576], [8192, 8192, 8192, 8192])
    """
    src_engine, dst_engine = src.engine, dst.engine
    dst_layout = dst.layer_layout(layer, dst_tp_rank)
    memo = {} if src_memo is None else src_memo
    preferred = preferred_sources(dst_tp_rank, dst_engine.tp, src_engine.tp)
    # the rows depend on the rank only through its layout and preferred sources: ranks
    # replicating one share of the heads (TP above the head count) compute them once
    key = ("rows", dst_layout, preferred.start, preferred.stop, dst_engine.layer_block_tokens(layer)[0])
    if key not in memo:
        memo[key] = _layer_rows(src, dst_layout, layer, memo, preferred, dst_engine.layer_block_tokens(layer)[0])
    return memo[key]


def _layer_rows(src: EngineMemory, dst_layout, layer: int, memo: dict, preferred: range, dst_block: int
                ) -> TemplateRows:
    src_engine = src.engine
    src_block = src_engine.layer_block_tokens(layer)[0]
    span = math.lcm(src_block, dst_block)
    pairs = []  # (destination component, source component, source rank, index range)
    for fd in dst_layout.components:
        if fd.component not in memo:
            if "layouts" not in memo:
                memo["layouts"] = [src.layer_layout(layer, p) for p in range(src_engine.tp)]
            found = [lay.component(fd.component) for lay in memo["layouts"]]
            memo[fd.component] = found, [(p, c.held[0], c.held[1]) for p, c in enumerate(found)]
        src_components, holders = memo[fd.component]
        pairs += [(fd, src_components[p], p, lo, hi) for p, lo, hi in source_runs(*fd.held, holders, preferred)]
    # The rows depend on where [lo, hi) sits in each side's share, not on which share:
    # ranks whose pairs differ only by a shift of head indices (and source rank numbers)
    # share one computation, with source ranks numbered by first appearance. A common
    # shift of k heads on a side whose pairs all step heads by one stride moves every
    # offset of that side by k strides, keeping their order and contiguity, so it is
    # taken out of the key and added back.
    ranks = list(dict.fromkeys(p for _, _, p, _, _ in pairs))
    ordinal = {p: i for i, p in enumerate(ranks)}
    shift = {}
    for side, get in (("src", lambda pair: pair[1]), ("dst", lambda pair: pair[0])):
        strides = {get(pair).layout.stride[0] for pair in pairs}
        first = pairs[0][3] - get(pairs[0]).held[0] if pairs and len(strides) == 1 else 0
        shift[side] = (first, next(iter(strides)) if len(strides) == 1 else 0)
    key = ("shifted", span, dst_block, src_block, tuple(
        (fd.component, fd.slot, fd.layout, fd.cell_bytes, lo - fd.held[0] - shift["dst"][0], hi - lo, fs.slot,
         fs.layout, fs.cell_bytes, lo - fs.held[0] - shift["src"][0], ordinal[p]) for fd, fs, p, lo, hi in pairs))
    if key not in memo:
        rows = _rows(pairs, ordinal, span, dst_block, src_block)
        memo[key] = rows.columns() | {"src_offset": rows.src_offset - shift["src"][0] * shift["src"][1],
                                      "dst_offset": rows.dst_offset - shift["dst"][0] * shift["dst"][1]}
    cols = memo[key]
    return TemplateRows.from_columns(cols | {"src_rank": np.array(ranks, np.int64)[cols["src_rank"]],
                                             "src_offset": cols["src_offset"] + shift["src"][0] * shift["src"][1],
                                             "dst_offset": cols["dst_offset"] + shift["dst"][0] * shift["dst"][1]})


def _rows(pairs, ordinal: dict, span: int, dst_block: int, src_block: int) -> TemplateRows:
    """A layer's merged rows from its (destination, source component, source rank,
    index range) pairs, source ranks written as their `ordinal`."""
    pairs = [(fd, fs, ordinal[p], lo, hi) for fd, fs, p, lo, hi in pairs]
    # Blocks that do not divide make spans of 100 K+ tokens. Within a kernel page on both
    # sides (g tokens, g dividing every page), token t + 1's bytes are token t's shifted
    # by the token stride on each side. So rows worked out for every g-th token, each
    # exactly one token stride long on both sides, are runs that continue through the
    # next g - 1 tokens: g times as long, merged as the cells of every token would be.
    step = _token_step(pairs)
    if step > 1:
        rows = _merge(pairs, span, dst_block, src_block, step)
        strides: dict = {}  # token stride of each region slot (of each source rank), one per slot
        for fd, fs, p, _, _ in pairs:
            strides.setdefault(("src", fs.slot, p), set()).add(token_mode(fs)[1])
            strides.setdefault(("dst", fd.slot, 0), set()).add(token_mode(fd)[1])
        if all(len(v) == 1 for v in strides.values()):
            table = np.zeros((2, max(k[1] for k in strides) + 1, max(k[2] for k in strides) + 1), np.int64)
            for (side, slot, p), v in strides.items():
                table[int(side == "dst"), slot, p] = next(iter(v))
            src_stride = table[0, rows["src_slot"], rows["src_rank"]]
            dst_stride = table[1, rows["dst_slot"], 0]
            if len(rows["nbytes"]) and (rows["nbytes"] == src_stride).all() and (rows["nbytes"] == dst_stride).all():
                return TemplateRows.from_columns(_coalesce(rows | {"nbytes": rows["nbytes"] * step}))
    return TemplateRows.from_columns(_merge(pairs, span, dst_block, src_block, 1))


def _token_step(pairs) -> int:
    """Tokens between the evaluated ones: the gcd of every component's kernel page, on
    both sides (1 where a component has no plain token mode)."""
    pages = []
    for fd, fs, _, _, _ in pairs:
        for side in (fd, fs):
            mode = token_mode(side)
            if mode is None:
                return 1
            pages.append(mode[0])
    return math.gcd(*pages) if pages else 1


def _merge(pairs, span: int, dst_block: int, src_block: int, step: int) -> dict[str, np.ndarray]:
    """Cells of every pair (every `step`-th token), merged into rows."""
    pieces = []
    for fd, fs, p, lo, hi in pairs:
        cells = cell_pairs(fd, fs, lo, hi, span, dst_block, src_block, run_tokens=step)
        n = len(cells["src_offset"])
        cells.update(src_rank=np.full(n, p, np.int64), component=np.full(n, COMPONENT_CODE[fd.component], np.int64),
                     src_slot=np.full(n, fs.slot, np.int64), dst_slot=np.full(n, fd.slot, np.int64),
                     nbytes=np.full(n, fd.cell_bytes, np.int64))
        pieces.append(cells)
    return _coalesce({c: np.concatenate([piece[c] for piece in pieces]) for c in TemplateRows.column_names()})


def _coalesce(cols: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Rows in destination order, those contiguous on both sides merged."""
    order = np.lexsort((cols["dst_offset"], cols["dst_block"], cols["dst_slot"]))
    cols = {c: v[order] for c, v in cols.items()}
    starts = run_starts([cols[k] for k in ("src_rank", "src_slot", "dst_slot", "src_block", "dst_block")],
                        cols["src_offset"], cols["dst_offset"], cols["nbytes"])
    merged = {c: v[starts] for c, v in cols.items()}
    merged["nbytes"] = merged_nbytes(cols["nbytes"], starts)
    merged["component"] = _merged_component(cols["component"], starts)
    return merged


def _merged_component(component: np.ndarray, starts: np.ndarray) -> np.ndarray:
    """Component code of each merged run: its own, "KV" for a K|V run, else "mixed"."""
    if len(starts) == 0:
        return component[:0]
    low = np.minimum.reduceat(component, starts)
    high = np.maximum.reduceat(component, starts)
    kv = (low == COMPONENT_CODE["K"]) & (high == COMPONENT_CODE["V"])
    return np.where(low == high, low, np.where(kv, COMPONENT_CODE["KV"], COMPONENT_CODE["mixed"]))
