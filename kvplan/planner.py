"""plan(): intersect what each destination rank needs with what each source rank holds.

For every destination rank, layer and component the planner walks the global indices
of the sharded axis the destination holds, picks one source rank holding each
(`sharding.choose_source`), lays out every (index, token, axis...) cell on both sides
with the fields of `kvplan.geometry`, and coalesces cells contiguous on both sides.
Identical layers share one template, so an 80-layer model costs a few templates.
"""

from __future__ import annotations

import math
from itertools import groupby

import numpy as np

from .compat import check_same_model
from .conv_strategy import STRATEGIES, apply_strategy
from .engine import EngineSpec, Region
from .errors import ModelMismatchError, SpecError
from .groups import is_token_layer
from .ranges import merged_nbytes, run_starts
from .sharding import choose_source, preferred_sources
from .state_geometry import state_natural_bytes
from .table import COMPONENT_CODE, ReadTable
from .transfer_plan import EngineTransferPlan

_TEMPLATE_COLUMNS = ("src_rank", "component", "src_slot", "dst_slot", "src_block", "dst_block",
                     "src_offset", "dst_offset", "nbytes")


def plan(src: EngineSpec, dst: EngineSpec, *, conv_strategy: str = "direct") -> EngineTransferPlan:
    """Plan every decode rank's reads from the prefill engine.

    `conv_strategy` picks how conv state crosses a TP change ("direct", "staged",
    "permuted"; see `kvplan.conv_strategy`); attention and SSM state are always direct.

    >>> from kvplan import AttentionSpec, ModelSpec, EngineSpec, plan
    >>> m = ModelSpec(name="m", layers=(AttentionSpec(num_kv_heads=8, head_dim=128),))
    >>> p = plan(EngineSpec(model=m, tp=2), EngineSpec(model=m, tp=4))
    >>> t = p.reads(dst_rank=3)       # heads 6,7 = second half of prefill rank 1's page
    >>> [(int(t.src_rank[0]), int(t.src_offset[0]), int(t.nbytes[0]))]
    [(1, 16384, 16384)]
    """
    if not isinstance(src, EngineSpec) or not isinstance(dst, EngineSpec):
        raise SpecError(f"plan() takes two EngineSpec, got {type(src).__name__} and {type(dst).__name__}")
    if conv_strategy not in STRATEGIES:
        raise SpecError(f"conv_strategy must be one of {', '.join(STRATEGIES)}, got {conv_strategy!r}")
    check_same_model(src, dst)
    check_same_groups(src, dst)
    check_same_state_geometry(src, dst)
    layer_parts = {}  # (dst_rank, layer) -> (reads, pre, post) templates
    templates: dict = {}
    src_scratch_bytes: dict[int, int] = {}
    dst_scratch_bytes: dict[int, int] = {}
    for dst_rank in range(dst.world_size):
        stage, dst_tp_rank = divmod(dst_rank, dst.tp)
        for layer in range(*dst.stage_layers[stage]):
            spec = dst.model.layers[layer]
            key = (spec, dst_tp_rank, src.layer_geometry(layer, 0), dst.layer_geometry(layer, dst_tp_rank),
                   src.layer_block_tokens(layer), dst.layer_block_tokens(layer))
            if key not in templates:
                direct = _layer_template(src, dst, layer, dst_tp_rank)
                if is_token_layer(spec) or conv_strategy == "direct":
                    templates[key] = (direct, None, None, 0, 0)
                else:
                    src_conv = state_natural_bytes(spec, src.tp, src.num_speculative_tokens)[0]
                    dst_conv = state_natural_bytes(spec, dst.tp, dst.num_speculative_tokens)[0]
                    templates[key] = apply_strategy(conv_strategy, direct, src_conv, dst_conv, dst_tp_rank, dst.tp)
            reads, pre, post, src_bytes, dst_bytes = templates[key]
            layer_parts[dst_rank, layer] = (reads, pre, post)
            if src_bytes:
                src_scratch_bytes[layer] = max(src_scratch_bytes.get(layer, 0), src_bytes)
            if dst_bytes:
                dst_scratch_bytes[layer] = max(dst_scratch_bytes.get(layer, 0), dst_bytes)
    src_scratch = _scratch_regions(src, src_scratch_bytes)
    dst_scratch = _scratch_regions(dst, dst_scratch_bytes)
    src_scratch_id = {r.layer: len(src.regions) + i for i, r in enumerate(src_scratch)}
    dst_scratch_id = {r.layer: len(dst.regions) + i for i, r in enumerate(dst_scratch)}
    tables, pre_tables, post_tables = [], [], []
    for dst_rank in range(dst.world_size):
        stage, _ = divmod(dst_rank, dst.tp)
        reads, pres, posts = [], [], []
        for layer in range(*dst.stage_layers[stage]):
            t_reads, t_pre, t_post = layer_parts[dst_rank, layer]
            src_slots = _slot_regions(src, layer, src_scratch_id.get(layer, -1))
            dst_slots = _slot_regions(dst, layer, dst_scratch_id.get(layer, -1))
            offset = src.stage_of(layer) * src.tp
            reads.append(_rows_for(t_reads, layer, offset, src_slots, dst_slots))
            if t_pre is not None and len(t_pre["nbytes"]):
                pres.append(_rows_for(t_pre, layer, offset, src_slots, src_slots))
            if t_post is not None and len(t_post["nbytes"]):
                posts.append(_rows_for(t_post, layer, None, dst_slots, dst_slots, rank=dst_rank))
        tables.append(_table(dst_rank, reads))
        pre_tables.append(_table(dst_rank, pres))
        post_tables.append(_table(dst_rank, posts))
    with_steps = conv_strategy != "direct" and (src_scratch or dst_scratch or any(len(t) for t in pre_tables))
    return EngineTransferPlan(
        src=src, dst=dst, tables=tuple(tables), conv_strategy=conv_strategy,
        pre_tables=tuple(pre_tables) if with_steps else (), post_tables=tuple(post_tables) if with_steps else (),
        src_scratch=src_scratch, dst_scratch=dst_scratch,
    )


_TABLE_COLUMNS = ("src_rank", "layer", "component", "src_region", "dst_region",
                  "src_block", "dst_block", "src_offset", "dst_offset", "nbytes")


def _slot_regions(engine: EngineSpec, layer: int, scratch_id: int) -> np.ndarray:
    """Region id per template slot of `layer`; the last entry (slot -1) is its scratch."""
    slots = len(engine.layer_geometry(layer, 0).page_bytes)
    return np.array([engine.region_of(layer, s) for s in range(slots)] + [scratch_id], np.int64)


def _rows_for(t: dict, layer: int, rank_offset, src_slots, dst_slots, rank: int | None = None) -> dict:
    n = len(t["nbytes"])
    return {
        "src_rank": np.full(n, rank, np.int64) if rank is not None else t["src_rank"] + rank_offset,
        "layer": np.full(n, layer, np.int64),
        "component": t["component"],
        "src_region": src_slots[t["src_slot"]],
        "dst_region": dst_slots[t["dst_slot"]],
        **{c: t[c] for c in ("src_block", "dst_block", "src_offset", "dst_offset", "nbytes")},
    }


def _table(dst_rank: int, parts: list[dict]) -> ReadTable:
    return ReadTable(dst_rank, **{c: np.concatenate([p[c] for p in parts]) if parts else np.zeros(0, np.int64)
                                  for c in _TABLE_COLUMNS})


def _scratch_regions(engine: EngineSpec, sizes: dict[int, int]) -> tuple[Region, ...]:
    """Per-request scratch regions (one state block each, indexed by request position)."""
    return tuple(Region(f"scratch.layers.{layer}", layer, -1, engine.stage_of(layer), size, (layer,), per_request=True)
                 for layer, size in sorted(sizes.items()))


def check_same_state_geometry(src: EngineSpec, dst: EngineSpec) -> None:
    """State layers only pair when both sides keep the same conv rows."""
    if src.num_speculative_tokens != dst.num_speculative_tokens and any(
            not is_token_layer(spec) for spec in src.model.layers):
        raise ModelMismatchError(
            f"conv state rows differ: prefill num_speculative_tokens={src.num_speculative_tokens}, "
            f"decode num_speculative_tokens={dst.num_speculative_tokens} (rows = conv_kernel - 1 + these)"
        )


def check_same_groups(src: EngineSpec, dst: EngineSpec) -> None:
    """Block lists are given per group, so both engines must group layers alike."""
    a = [tuple(x for x in g.layers if x is not None) for g in src.layer_groups]
    b = [tuple(x for x in g.layers if x is not None) for g in dst.layer_groups]
    if a != b:
        raise SpecError(f"prefill and decode group layers differently: prefill groups {a}, decode groups {b}")


def _layer_template(src: EngineSpec, dst: EngineSpec, layer: int, dst_tp_rank: int) -> dict:
    """Rows (block-relative) for one layer on one destination TP rank, coalesced."""
    dst_geom = dst.layer_geometry(layer, dst_tp_rank)
    src_geoms = [src.layer_geometry(layer, p) for p in range(src.tp)]
    preferred = preferred_sources(dst_tp_rank, dst.tp, src.tp)
    pieces = []
    for fd in dst_geom.fields:
        src_fields = [(p, next(f for f in g.fields if f.component == fd.component)) for p, g in enumerate(src_geoms)]
        holders = [(p, f.shard_lo, f.shard_hi) for p, f in src_fields]
        owners = [choose_source(g, holders, preferred) for g in range(fd.shard_lo, fd.shard_hi)]
        g = fd.shard_lo
        for p, run in groupby(owners):
            count = len(list(run))
            fs = src_fields[p][1]
            pieces.append(_cells(p, fd, fs, g, g + count, dst_geom, src_geoms[p], dst, src, layer))
            g += count
    cols = {c: np.concatenate([piece[c] for piece in pieces]) for c in _TEMPLATE_COLUMNS}
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


def _token_offsets(field, geom, engine: EngineSpec, layer: int, span: int):
    """(logical block in span, byte offset in that block's page) for each token of the span."""
    t = np.arange(span, dtype=np.int64)
    block, within = np.divmod(t, engine.layer_block_tokens(layer)[0])
    page, token = np.divmod(within, geom.kernel_tokens)
    return block, page * geom.page_bytes[field.region_slot] + token * field.token_stride_bytes


def _cells(src_rank, fd, fs, g0, g1, dst_geom, src_geom, dst, src, layer) -> dict:
    """One row per (global index in [g0, g1), token, axis...) cell of a component."""
    g = np.arange(g0, g1, dtype=np.int64)
    src_off = fs.base_bytes + (g - fs.shard_lo) * fs.shard_stride_bytes
    dst_off = fd.base_bytes + (g - fd.shard_lo) * fd.shard_stride_bytes
    zeros = np.zeros_like(g)
    src_blk, dst_blk = zeros, zeros
    if fd.has_tokens:
        span = math.lcm(src.layer_block_tokens(layer)[0], dst.layer_block_tokens(layer)[0])
        s_blk, s_tok = _token_offsets(fs, src_geom, src, layer, span)
        d_blk, d_tok = _token_offsets(fd, dst_geom, dst, layer, span)
        src_off = (src_off[:, None] + s_tok[None, :]).ravel()
        dst_off = (dst_off[:, None] + d_tok[None, :]).ravel()
        src_blk = np.broadcast_to(s_blk, (len(g), span)).ravel()
        dst_blk = np.broadcast_to(d_blk, (len(g), span)).ravel()
    for (extent, s_stride), (_, d_stride) in zip(fs.axes, fd.axes, strict=True):
        a = np.arange(extent, dtype=np.int64)
        src_off = (src_off[:, None] + a * s_stride).ravel()
        dst_off = (dst_off[:, None] + a * d_stride).ravel()
        src_blk = np.repeat(src_blk, extent)
        dst_blk = np.repeat(dst_blk, extent)
    n = len(src_off)
    return {
        "src_rank": np.full(n, src_rank, np.int64),
        "component": np.full(n, COMPONENT_CODE[fd.component], np.int64),
        "src_slot": np.full(n, fs.region_slot, np.int64),
        "dst_slot": np.full(n, fd.region_slot, np.int64),
        "src_block": np.asarray(src_blk, np.int64),
        "dst_block": np.asarray(dst_blk, np.int64),
        "src_offset": src_off,
        "dst_offset": dst_off,
        "nbytes": np.full(n, fd.run_bytes, np.int64),
    }
