"""verify(): the identity simulation, the definition of a correct plan.

A plan is correct when, applied to the source ranks' memory, it reproduces exactly the
bytes the destination rank would hold for the same logical blocks. For every decode
rank and layer: enumerate the element cells of the source ranks' pages and of the
destination's pages over one span of logical blocks (`kvplan.check.cells`, an
independent statement of each layout), apply the rank's reads, and compare. Every destination cell must be written exactly once, by a read that
copies a source run of cells holding the same elements in the same order; reads must
start and end on cell boundaries (no padding, no split element), stay inside the
source region's blocks, and come from a rank and region holding that layer.
"""

from __future__ import annotations

import attrs
import numpy as np

from ..errors import PlanError, SpecError
from ..spec.engine import EngineSpec
from .cells import Cells, byte_codes, layer_cells, page_strides


_PLAN_PARTS = ("src", "dst", "tables", "src_regions", "dst_regions", "pre_tables", "post_tables", "blocks_per_span",
               "reads", "src_scratch", "dst_scratch")
_PLAN_FIELDS = _PLAN_PARTS[:7]
_TABLE_COLUMNS = ("src_rank", "layer", "component", "src_region", "dst_region", "src_block", "dst_block",
                  "src_offset", "dst_offset", "nbytes")
_REGION_FIELDS = ("layer", "slot", "block_bytes", "layers", "per_request")


def _check_input(plan, max_problems) -> None:
    """Refuse what is not a plan (`SpecError`) and a plan whose tables do not fit its
    engines (`PlanError`) before reading a row."""
    if isinstance(max_problems, bool) or not isinstance(max_problems, int) or max_problems < 1:
        raise SpecError(f"verify(max_problems=...) must be a positive int, got {max_problems!r}")
    # the class's methods and properties are looked up on the class: a property would run
    missing = [name for name in _PLAN_PARTS if not hasattr(plan if name in _PLAN_FIELDS else type(plan), name)]
    if missing or not isinstance(plan.src, EngineSpec) or not isinstance(plan.dst, EngineSpec):
        raise SpecError(f"verify() takes a plan from kvplan.plan(), got {type(plan).__name__}"
                        + (f" (it has no {', '.join(missing)})" if missing else ""))
    ranks = plan.dst.world_size
    for name in ("tables", "pre_tables", "post_tables"):
        tables = getattr(plan, name)
        if not isinstance(tables, (tuple, list)) or len(tables) != (ranks if name == "tables" or tables else 0):
            raise PlanError(f"plan.{name} must hold one table per decode rank ({ranks}), got {tables!r}"[:300])
        for rank, table in enumerate(tables):
            columns = [getattr(table, c, None) for c in _TABLE_COLUMNS]
            if not all(isinstance(c, np.ndarray) and c.ndim == 1 and c.dtype == np.int64 for c in columns) or \
                    len({len(c) for c in columns}) != 1:
                raise PlanError(f"plan.{name}[{rank}] is not a table of int64 columns {', '.join(_TABLE_COLUMNS)}: "
                                f"{table!r}"[:300])
    for name in ("src_regions", "dst_regions"):
        regions = getattr(plan, name)
        if not isinstance(regions, (tuple, list)) or not all(
                all(hasattr(r, f) for f in _REGION_FIELDS) for r in regions):
            raise PlanError(f"plan.{name} must be a tuple of Regions, got {regions!r}"[:300])


class _Slots:
    """Which slot of a layer each region id holds, for one region table: the slot,
    -2, -3, ... for the layer's own per-request scratch areas (slot -1, -2, ... of a
    strategy), -1 where the region does not hold the layer (an id outside the table
    included). Built once per verify call: a lookup per row
    stays vectorised however many regions an engine has."""

    def __init__(self, regions):
        self.count = len(regions)
        self.by_layer: dict[int, dict[int, int]] = {}
        for index, region in enumerate(regions):
            if region.per_request:
                self.by_layer.setdefault(region.layer, {})[index] = region.slot - 1
                continue
            for layer in region.layers:
                self.by_layer.setdefault(layer, {})[index] = region.slot

    def of(self, ids: np.ndarray, layer: int) -> np.ndarray:
        """Slot (or -1 / -2) of `layer` held by each region id of `ids`."""
        known = self.by_layer.get(layer, {})
        if not len(ids):
            return np.zeros(0, np.int64)
        unique, inverse = np.unique(ids, return_inverse=True)
        return np.array([known.get(int(u), -1) for u in unique], np.int64)[inverse.reshape(-1)]

    def regions(self, layer: int) -> dict[int, int]:
        """Slot -> region id of `layer` (scratch left out)."""
        return {slot: index for index, slot in self.by_layer.get(layer, {}).items() if slot >= 0}


@attrs.frozen(kw_only=True)
class VerifyReport:
    """What `verify` checked, once every byte was right: the engines, the decode ranks and
    layers, the reads and bytes over all decode ranks (token layers per span, state layers
    per state block), the simulations run
    (layers alike in spec, sizes and rows share one) and the destination cells they
    checked (element cells; bytes for plans with local steps). Its str is one line."""

    model: str
    src: str
    dst: str
    decode_ranks: int
    layers: int
    token_rows: int  # reads of token layers per span, over all decode ranks
    token_bytes: int
    state_rows: int  # reads of state layers per state block
    state_bytes: int
    simulations: int
    cells: int

    def __str__(self) -> str:
        reads = ", ".join(f"{rows:,} reads ({nbytes:,} B) per {unit}" for rows, nbytes, unit in (
            (self.token_rows, self.token_bytes, "span"), (self.state_rows, self.state_bytes, "state block"))
            if rows) or "no reads"
        return (f"verified {self.model} P({self.src}) -> D({self.dst}): {self.decode_ranks} decode rank"
                f"{'s' * (self.decode_ranks != 1)} x {self.layers} layers, {reads}, {self.cells:,} cells in "
                f"{self.simulations:,} simulation{'s' * (self.simulations != 1)}: every byte right")


def verify(plan, *, max_problems: int = 20) -> VerifyReport:
    """Raise `PlanError` if any decode byte would be wrong; otherwise return a
    `VerifyReport` of what was checked.

    >>> from kvplan import AttentionSpec, ModelSpec, EngineSpec, plan, verify
    >>> m = ModelSpec(name="m", layers=(AttentionSpec(num_kv_heads=4, head_dim=8),) * 2)
    >>> print(verify(plan(EngineSpec(model=m, tp=4, kv_layout="NHD"), EngineSpec(model=m, tp=1))))
    verified m P(TP 4 x PP 1) -> D(TP 1 x PP 1): 1 decode rank x 2 layers, 8 reads (4,096 B) per span, 128 cells in 1 simulation: every byte right
    >>> verify(None)
    Traceback (most recent call last):
    ...
    kvplan.errors.SpecError: verify() takes a plan from kvplan.plan(), got NoneType (it has no src, dst, tables, src_regions, dst_regions, pre_tables, post_tables, blocks_per_span, reads, src_scratch, dst_scratch)
    """
    _check_input(plan, max_problems)
    problems: list[str] = []
    seen: dict = {}
    src, dst = plan.src, plan.dst
    slots = _Slots(plan.src_regions), _Slots(plan.dst_regions)
    for dst_rank, table in enumerate(plan.tables):
        stage, dst_tp_rank = divmod(dst_rank, dst.tp)
        start, end = dst.stage_layers[stage]
        outside = np.flatnonzero((table.layer < start) | (table.layer >= end))
        if len(outside):
            problems.append(f"dst rank {dst_rank}: rows for layer {int(table.layer[outside[0]])} "
                            f"which its stage {stage} does not hold")
        order = np.argsort(table.layer, kind="stable")
        bounds = np.searchsorted(table.layer[order], np.arange(start, end + 1))
        for layer in range(start, end):
            rows = order[bounds[layer - start]:bounds[layer - start + 1]]
            offset = src.stage_of(layer) * src.tp
            key = (dst.model.layers[layer], dst_tp_rank, src.layer_block_tokens(layer), dst.layer_block_tokens(layer),
                   _rows_key(table, rows, layer, offset, *slots))
            steps = _steps(plan, dst_rank, layer)
            if steps is not None:
                # the simulation also depends on the local steps and the layer's scratch sizes
                key = (key, _rows_key(plan.pre_tables[dst_rank], steps[0], layer, offset, slots[0], slots[0]),
                       _rows_key(plan.post_tables[dst_rank], steps[1], layer, dst_rank, slots[1], slots[1]),
                       _scratch_sizes(plan.src_regions, layer), _scratch_sizes(plan.dst_regions, layer))
            if key not in seen:
                if steps is None:
                    seen[key] = _check_layer(plan, table, rows, layer, dst_tp_rank, slots, max_problems)
                else:
                    seen[key] = _simulate_bytes(plan, dst_rank, layer, rows, *steps, slots)
            problems.extend(f"dst rank {dst_rank} layer {layer}: {p}" for p in seen[key][0])
            if len(problems) >= max_problems:
                break
        if len(problems) >= max_problems:
            break
    if problems:
        head = problems[:max_problems]
        raise PlanError(f"plan {src.model.name!r} P(tp={src.tp},pp={src.pp}) -> D(tp={dst.tp},pp={dst.pp}) "
                        f"is wrong:\n  " + "\n  ".join(head), tuple(head))
    return VerifyReport(model=src.model.name, src=f"TP {src.tp} x PP {src.pp}", dst=f"TP {dst.tp} x PP {dst.pp}",
                        decode_ranks=len(plan.tables), layers=dst.model.num_layers,
                        **_reads(plan), simulations=len(seen), cells=sum(cells for _, cells in seen.values()))


def _reads(plan) -> dict:
    """Reads and bytes of all decode ranks, token layers per span and state layers per
    state block (never one sum of both units)."""
    token = np.array([spec.holds_tokens for spec in plan.dst.model.layers], bool)
    out = dict(token_rows=0, token_bytes=0, state_rows=0, state_bytes=0)
    for table in plan.tables:
        is_token = token[table.layer]
        out["token_rows"] += int(is_token.sum())
        out["token_bytes"] += int(table.nbytes[is_token].sum())
        out["state_rows"] += int((~is_token).sum())
        out["state_bytes"] += int(table.nbytes[~is_token].sum())
    return out


def _rows_key(table, rows, layer: int, rank_offset: int, src_slots: _Slots, dst_slots: _Slots) -> bytes:
    # Layers with one spec, block sizes and block-relative rows give the same verdict: key
    # on the rows with the layer-specific numbers (stage ranks, region ids) made relative.
    body = np.stack([table.src_rank[rows] - rank_offset, src_slots.of(table.src_region[rows], layer),
                     dst_slots.of(table.dst_region[rows], layer), table.src_block[rows], table.dst_block[rows],
                     table.src_offset[rows], table.dst_offset[rows], table.nbytes[rows]])
    return body.tobytes()


def _scratch_sizes(regions, layer: int) -> tuple[int, ...]:
    return tuple(r.block_bytes for r in regions if r.per_request and r.layer == layer)


def _check_layer(plan, table, rows, layer, dst_tp_rank, slots, limit: int) -> tuple[list[str], int]:
    """Check one layer's reads over one span, row checks vectorised per (source rank,
    region slot): each row's first failing check gives its message, in row order (the
    first `limit` rows each check flags: verify reports no more), and the number of
    destination cells checked."""
    src, dst = plan.src, plan.dst
    ns, nd = plan.blocks_per_span(dst.group_of(layer))
    want = layer_cells(dst, layer, dst_tp_rank, nd)
    writes = [np.zeros(len(c.code), np.int64) for c in want]
    stage = src.stage_of(layer)
    t = {name: getattr(table, name)[rows] for name in table.column_names()}
    rank, n = t["src_rank"], t["nbytes"]
    # a region table naming a slot the layer does not have holds no slot of it
    s_slot = slots[0].of(t["src_region"], layer)
    s_slot[s_slot >= len(page_strides(src, layer))] = -1
    d_slot = slots[1].of(t["dst_region"], layer)
    d_slot[d_slot >= len(want)] = -1
    found: list[tuple[int, str]] = []  # (position among rows, defect)

    def report(mask, text) -> np.ndarray:
        for k in np.flatnonzero(mask)[:limit]:
            found.append((int(k), f"{_where(t, k)}: {text(k) if callable(text) else text}"))
        return ~mask

    alive = report((rank // src.tp != stage) | (rank < 0) | (rank >= src.world_size),
                   lambda k: f"source rank {int(rank[k])} does not hold layer {layer}")
    alive &= report(alive & ((s_slot < 0) | (d_slot < 0)), f"region does not hold layer {layer}")
    for p, slot in sorted({(int(a), int(b)) for a, b in zip(rank[alive], s_slot[alive], strict=True)}):
        have = layer_cells(src, layer, p % src.tp, ns)[slot]
        s_block_bytes = have.total_bytes // ns
        mine = alive & (rank == p) & (s_slot == slot)
        ok = report(mine & ~_inside(t["src_block"], t["src_offset"], n, ns, s_block_bytes),
                    f"reads outside the source block ({ns} blocks of {s_block_bytes} B)")
        for d in sorted(set(d_slot[mine & ok].tolist())):
            cells = want[d]
            d_block_bytes = cells.total_bytes // nd
            rows_d = mine & ok & (d_slot == d)
            rows_d &= report(rows_d & ~_inside(t["dst_block"], t["dst_offset"], n, nd, d_block_bytes),
                             f"writes outside the destination block ({nd} blocks of {d_block_bytes} B)")
            s_start = t["src_block"] * s_block_bytes + t["src_offset"]
            d_start = t["dst_block"] * d_block_bytes + t["dst_offset"]
            s_first, s_last, s_err = _runs(have, s_start, n)
            d_first, d_last, d_err = _runs(cells, d_start, n)
            err = np.where(s_err != "", s_err, d_err)
            rows_d &= report(rows_d & (err != ""), lambda k: err[k])
            same = _same_elements(have, s_first, s_last, cells, d_first, d_last, rows_d)
            rows_d &= report(rows_d & ~same, "copies the wrong elements")
            # each good row writes cells d_first..d_last once: count them with a difference array
            k = np.flatnonzero(rows_d)
            k = k[d_last[k] >= d_first[k]]  # a 0-byte row writes nothing
            steps = np.zeros(len(writes[d]) + 1, np.int64)
            np.add.at(steps, d_first[k], 1)
            np.add.at(steps, d_last[k] + 1, -1)
            writes[d] += np.cumsum(steps[:-1])
    problems = [text for _, text in sorted(found, key=lambda item: item[0])]
    for slot, count in enumerate(writes):
        for label, bad in (("missing", count == 0), ("written more than once", count > 1)):
            if bad.any():
                first = int(np.flatnonzero(bad)[0])
                problems.append(f"slot {slot}: {int(bad.sum())} cells {label} "
                                f"({int(want[slot].size[bad].sum())} B), first at byte {int(want[slot].offset[first])}")
    return problems, sum(len(cells.offset) for cells in want)


def _where(t: dict, k: int) -> str:
    return (f"row src r{int(t['src_rank'][k])} reg {int(t['src_region'][k])} blk {int(t['src_block'][k])} "
            f"+{int(t['src_offset'][k])} -> reg {int(t['dst_region'][k])} blk {int(t['dst_block'][k])} "
            f"+{int(t['dst_offset'][k])} ({int(t['nbytes'][k])} B)")


def _inside(block, offset, nbytes, blocks: int, block_bytes: int) -> np.ndarray:
    return (block >= 0) & (block < blocks) & (offset >= 0) & (offset + nbytes <= block_bytes)


def _runs(cells: Cells, start: np.ndarray, nbytes: np.ndarray):
    """Per row: the first and last index of the cells exactly covering
    [start, start+nbytes), and an error text ("" when they do)."""
    count = len(cells.offset)
    ends = cells.offset + cells.size
    first = np.searchsorted(cells.offset, start)
    last = np.searchsorted(ends, start + nbytes)
    first_c, last_c = np.minimum(first, count - 1), np.minimum(last, count - 1)
    gaps = np.r_[0, np.cumsum(cells.offset[1:] != ends[:-1])]  # gaps[k]: padding gaps before cell k
    err = np.full(len(start), "", dtype=object)
    padding = (gaps[last_c] - gaps[first_c]) > 0
    err[padding] = [f"range at byte {int(b)} crosses padding" for b in start[padding]]
    bad_end = (last >= count) | (ends[last_c] != start + nbytes)
    err[bad_end] = [f"byte {int(b)} is not the end of an element" for b in (start + nbytes)[bad_end]]
    bad_start = (first >= count) | (cells.offset[first_c] != start)
    err[bad_start] = [f"byte {int(b)} is not the start of an element (padding or mid-element)"
                      for b in start[bad_start]]
    return first_c, last_c, err


def _same_elements(have: Cells, s_first, s_last, want: Cells, d_first, d_last, rows: np.ndarray) -> np.ndarray:
    """Per row: source and destination runs hold the same cells (codes and sizes) in order."""
    same = np.ones(len(rows), bool)
    k = np.flatnonzero(rows)
    s_len = np.maximum(s_last - s_first + 1, 0)  # an empty range (0 or fewer bytes) covers no cell
    same[k] = s_len[k] == np.maximum(d_last[k] - d_first[k] + 1, 0)
    k = k[same[k]]
    if not len(k):
        return same
    length = s_len[k]
    step = np.arange(length.sum()) - np.repeat(np.cumsum(length) - length, length)
    s_idx, d_idx = np.repeat(s_first[k], length) + step, np.repeat(d_first[k], length) + step
    bad = (have.code[s_idx] != want.code[d_idx]) | (have.size[s_idx] != want.size[d_idx])
    same[k] = np.bincount(np.repeat(np.arange(len(k)), length), weights=bad, minlength=len(k)) == 0
    return same


def _steps(plan, dst_rank: int, layer: int):
    """(pre rows, post rows) of `layer` for a plan with local steps touching it, else None."""
    if not plan.pre_tables and not plan.post_tables:
        return None
    pre = np.flatnonzero(plan.pre_tables[dst_rank].layer == layer)
    post = np.flatnonzero(plan.post_tables[dst_rank].layer == layer)
    reads = plan.reads(dst_rank)
    mine = reads.layer == layer
    scratch = ((reads.src_region[mine] >= len(plan.src_regions) - len(plan.src_scratch)).any()
               or (reads.dst_region[mine] >= len(plan.dst_regions) - len(plan.dst_scratch)).any())
    if not len(pre) and not len(post) and not scratch:
        return None
    return pre, post


def _simulate_bytes(plan, dst_rank: int, layer: int, read_rows, pre_rows, post_rows, slots) -> tuple[list[str], int]:
    """Byte-level simulation of pre steps, reads and post steps over one span of blocks
    (one state block for state layers). A row of a page region copies from or to block
    `src_block` / `dst_block` of the span; a per-request scratch area holds the span
    alone, so its rows' offsets are from its start."""
    src, dst = plan.src, plan.dst
    problems: list[str] = []
    stage = src.stage_of(layer)
    src_regions, dst_regions = plan.src_regions, plan.dst_regions
    dst_tp_rank = dst_rank % dst.tp
    ns, nd = plan.blocks_per_span(dst.group_of(layer))

    def memory(engine, regions, lookup, tp_rank, fill, blocks):
        mem, held = {}, lookup.regions(layer)
        for slot, cells in enumerate(layer_cells(engine, layer, tp_rank, blocks)):
            if slot not in held:
                problems.append(f"no region holds slot {slot} of layer {layer}")
                continue
            code, within = byte_codes(cells)
            mem[held[slot]] = [code, within, len(code) // blocks] if fill else \
                [np.full_like(code, -7), np.full_like(code, -7), len(code) // blocks]
        for index, region in enumerate(regions):
            if region.per_request and region.layer == layer:
                size = regions[index].block_bytes
                mem[index] = [np.full(size, -5, np.int64), np.full(size, -5, np.int64), None]
        return mem

    # the stage's source ranks that rows read or step on: a rank no row names changes nothing
    pre_table, post_table, reads = plan.pre_tables[dst_rank], plan.post_tables[dst_rank], plan.reads(dst_rank)
    named = set(pre_table.src_rank[pre_rows].tolist()) | set(reads.src_rank[read_rows].tolist())
    src_mem = {p: memory(src, src_regions, slots[0], p % src.tp, True, ns)
               for p in sorted(named) if stage * src.tp <= p < (stage + 1) * src.tp}
    got = memory(dst, dst_regions, slots[1], dst_tp_rank, False, nd)
    writes = {r: np.zeros(len(v[0]), np.int64) for r, v in got.items() if not dst_regions[r].per_request}

    def copy(table, i, source_mem, target_mem, label):
        sreg, dreg = int(table.src_region[i]), int(table.dst_region[i])
        so, do, n = int(table.src_offset[i]), int(table.dst_offset[i]), int(table.nbytes[i])
        where = f"{label} row r{int(table.src_rank[i])} reg {sreg} +{so} -> reg {dreg} +{do} ({n} B)"
        if source_mem is None or sreg not in source_mem or dreg not in target_mem:
            problems.append(f"{where}: region or rank does not hold layer {layer}")
            return
        s_code, s_within, s_block = source_mem[sreg]
        d_code, d_within, d_block = target_mem[dreg]
        # a page row must stay inside its block; scratch holds the span (block ignored)
        s_room = len(s_code) if s_block is None else s_block
        d_room = len(d_code) if d_block is None else d_block
        sb, db = int(table.src_block[i]), int(table.dst_block[i])
        if so < 0 or do < 0 or n <= 0 or so + n > s_room or do + n > d_room or \
                (s_block is not None and not 0 <= sb < len(s_code) // s_block) or \
                (d_block is not None and not 0 <= db < len(d_code) // d_block):
            problems.append(f"{where}: outside the page ({s_room} -> {d_room} B)")
            return
        so += 0 if s_block is None else sb * s_block
        do += 0 if d_block is None else db * d_block
        d_code[do:do + n] = s_code[so:so + n]
        d_within[do:do + n] = s_within[so:so + n]
        if target_mem is got and dreg in writes:
            writes[dreg][do:do + n] += 1

    for i in pre_rows:
        mem = src_mem.get(int(pre_table.src_rank[i]))
        copy(pre_table, i, mem, mem if mem is not None else {}, "pre")
    for i in read_rows:
        copy(reads, i, src_mem.get(int(reads.src_rank[i])), got, "read")
    for i in post_rows:
        copy(post_table, i, got, got, "post")
    dst_slots = slots[1].regions(layer)
    for slot, cells in enumerate(layer_cells(dst, layer, dst_tp_rank, nd)):
        if slot not in dst_slots:
            continue  # reported while laying out the memory
        region = dst_slots[slot]
        want_code, want_within = byte_codes(cells)
        have_code, have_within, _ = got[region]
        real = want_code != -1
        count = writes[region]
        for label, bad in (("missing", real & (count == 0)), ("written more than once", real & (count > 1)),
                           ("wrong element", real & (count == 1) & ((have_code != want_code) | (have_within != want_within))),
                           ("padding written", ~real & (count > 0))):
            if bad.any():
                problems.append(f"slot {slot}: {int(bad.sum())} bytes {label}, first at byte {int(np.flatnonzero(bad)[0])}")
    return problems, sum(len(v[0]) for r, v in got.items() if not dst_regions[r].per_request)
