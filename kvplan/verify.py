"""verify(): the identity simulation of DESIGN.md §1.

For every decode rank and layer: fill the source ranks' pages (one span of logical
blocks) with element identity codes (`kvplan.identity`), apply the rank's reads, and
compare with the codes the decode rank must hold. Every non-padding destination byte
must be written exactly once, from a byte holding the same element, and every read
must stay inside the source region's blocks of the right layer and rank.
"""

from __future__ import annotations

import numpy as np

from .errors import PlanError
from .identity import block_codes


def verify(plan, *, max_problems: int = 20) -> None:
    """Raise `PlanError` if any decode byte would be wrong; return None otherwise.

    >>> from kvplan import AttentionSpec, ModelSpec, EngineSpec, plan, verify
    >>> m = ModelSpec(name="m", layers=(AttentionSpec(num_kv_heads=4, head_dim=8),) * 2)
    >>> verify(plan(EngineSpec(model=m, tp=4, kv_layout="NHD"), EngineSpec(model=m, tp=1)))
    """
    problems: list[str] = []
    seen: dict = {}
    src, dst = plan.src, plan.dst
    for dst_rank, table in enumerate(plan.tables):
        stage, dst_tp_rank = divmod(dst_rank, dst.tp)
        start, end = dst.stage_layers[stage]
        outside = np.flatnonzero((table.layer < start) | (table.layer >= end))
        if len(outside):
            problems.append(f"dst rank {dst_rank}: rows for layer {int(table.layer[outside[0]])} "
                            f"which its stage {stage} does not hold")
        by_layer = np.split(np.arange(len(table)), np.flatnonzero(np.diff(table.layer)) + 1) if len(table) else []
        rows_of = {int(table.layer[r[0]]): r for r in by_layer if len(r)}
        for layer in range(start, end):
            rows = rows_of.get(layer, np.zeros(0, np.int64))
            key = _dedup_key(plan, table, rows, layer, dst_tp_rank)
            if key not in seen:
                seen[key] = _check_layer(plan, table, rows, layer, dst_tp_rank)
            problems.extend(f"dst rank {dst_rank} layer {layer}: {p}" for p in seen[key])
            if len(problems) >= max_problems:
                break
        if len(problems) >= max_problems:
            break
    if problems:
        head = problems[:max_problems]
        raise PlanError(f"plan {src.model.name!r} P(tp={src.tp},pp={src.pp}) -> D(tp={dst.tp},pp={dst.pp}) "
                        f"is wrong:\n  " + "\n  ".join(head), tuple(head))


def _dedup_key(plan, table, rows, layer, dst_tp_rank):
    # Layers with one spec and the same block-relative rows give the same verdict:
    # key on the spec, the rank and the rows with layer-specific numbers made relative.
    src, dst = plan.src, plan.dst
    src_slot = [src.regions[int(r)].slot if 0 <= r < len(src.regions) else -1 for r in table.src_region[rows]]
    dst_slot = [dst.regions[int(r)].slot if 0 <= r < len(dst.regions) else -1 for r in table.dst_region[rows]]
    region_ok = all(0 <= r < len(src.regions) and src.regions[int(r)].layer == layer for r in table.src_region[rows]) and \
        all(0 <= r < len(dst.regions) and dst.regions[int(r)].layer == layer for r in table.dst_region[rows])
    rel_rank = table.src_rank[rows] - src.stage_of(layer) * src.tp
    body = np.stack([rel_rank, np.array(src_slot, np.int64), np.array(dst_slot, np.int64), table.src_block[rows],
                     table.dst_block[rows], table.src_offset[rows], table.dst_offset[rows], table.nbytes[rows]])
    return (dst.model.layers[layer], dst_tp_rank, region_ok, body.tobytes())


def _check_layer(plan, table, rows, layer, dst_tp_rank) -> list[str]:
    src, dst, span = plan.src, plan.dst, plan.span_tokens
    problems = []
    expected = block_codes(dst, layer, dst_tp_rank, span)
    got = [np.full(a.shape, -2, np.int64) for a in expected]
    count = [np.zeros(a.shape, np.int64) for a in expected]
    stage_ranks = range(src.stage_of(layer) * src.tp, (src.stage_of(layer) + 1) * src.tp)
    src_codes: dict[int, list[np.ndarray]] = {}
    for i in rows:
        p, sreg, dreg = int(table.src_rank[i]), int(table.src_region[i]), int(table.dst_region[i])
        sblk, dblk = int(table.src_block[i]), int(table.dst_block[i])
        soff, doff, n = int(table.src_offset[i]), int(table.dst_offset[i]), int(table.nbytes[i])
        where = f"row src r{p} reg {sreg} blk {sblk} +{soff} -> reg {dreg} blk {dblk} +{doff} ({n} B)"
        if p not in stage_ranks:
            problems.append(f"{where}: source rank {p} does not hold layer {layer}")
            continue
        if not (0 <= sreg < len(src.regions) and src.regions[sreg].layer == layer):
            problems.append(f"{where}: source region {sreg} is not a region of layer {layer}")
            continue
        if not (0 <= dreg < len(dst.regions) and dst.regions[dreg].layer == layer):
            problems.append(f"{where}: destination region {dreg} is not a region of layer {layer}")
            continue
        if p not in src_codes:
            src_codes[p] = block_codes(src, layer, p - stage_ranks.start, span)
        s_mem = src_codes[p][src.regions[sreg].slot]
        d_slot = dst.regions[dreg].slot
        if n <= 0 or not (0 <= sblk < s_mem.shape[0] and 0 <= soff and soff + n <= s_mem.shape[1]):
            problems.append(f"{where}: reads outside the source page ({s_mem.shape[0]} blocks of {s_mem.shape[1]} B)")
            continue
        if not (0 <= dblk < got[d_slot].shape[0] and 0 <= doff and doff + n <= got[d_slot].shape[1]):
            problems.append(f"{where}: writes outside the destination page "
                            f"({got[d_slot].shape[0]} blocks of {got[d_slot].shape[1]} B)")
            continue
        got[d_slot][dblk, doff:doff + n] = s_mem[sblk, soff:soff + n]
        count[d_slot][dblk, doff:doff + n] += 1
    for slot, (want, have, writes) in enumerate(zip(expected, got, count, strict=True)):
        real = want != -1
        for label, bad in (("missing", real & (writes == 0)), ("written twice", real & (writes > 1)),
                           ("wrong element", real & (writes == 1) & (have != want))):
            if bad.any():
                blk, off = np.unravel_index(np.flatnonzero(bad)[0], bad.shape)
                problems.append(f"slot {slot}: {int(bad.sum())} bytes {label}, first at block {blk} offset {off}")
    return problems
