"""Request-level oracle: the bytes a decode rank must hold after one request.

Independent of the plan: fills the source ranks' whole regions with identity codes
(the blocks of each group's list carry that group's layers' elements in the request's
token order; every other byte carries -3) and derives the decode rank's expected
region contents from the memory model in `kvplan.check.cells`. `apply()` executes a
`Transfer` on numpy memories so a test can compare. Codes are (cell code, byte in
cell) pairs, stored as two int64 arrays per region.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np

from kvplan.check.cells import byte_codes, layer_cells, token_of
from kvplan.layout import engine_memory

UNTOUCHED = -7  # initial destination content: a byte nobody wrote


def _lists(engine, blocks) -> list[list[int]]:
    groups = len(engine.layer_groups)
    if groups == 1 and all(isinstance(b, (int, np.integer)) for b in blocks):
        return [list(blocks)]
    return [list(b) for b in blocks]


def _fill(engine, tp_rank: int, stage: int, lists, num_blocks: int, blocks_of, keep_of):
    """Per region: (code, byte) arrays with each layer's cells in its group's blocks."""
    out = []
    memory = engine_memory(engine)
    for index, region in enumerate(memory.regions):
        code = np.full((num_blocks, region.block_bytes), -3, np.int64)
        byte = np.full((num_blocks, region.block_bytes), -3, np.int64)
        for layer in region.layers:
            if engine.stage_of(layer) != stage:
                continue
            slots = [s for s, r in enumerate(memory.slot_regions[layer]) if r == index]
            group = engine.group_of(layer)
            ids = np.asarray(lists[group], np.int64)
            cells = layer_cells(engine, layer, tp_rank, blocks_of(group))[slots[0]]
            c, b = byte_codes(cells)
            c, b = c.reshape(-1, region.block_bytes)[: len(ids)], b.reshape(-1, region.block_bytes)[: len(ids)]
            keep = keep_of(layer, c)
            code[ids] = np.where(keep, c, code[ids])
            byte[ids] = np.where(keep, b, byte[ids])
        out.append((code.reshape(-1), byte.reshape(-1)))
    return out


class _Lazy(Mapping):
    """A mapping whose values are built on first access (only the source ranks a
    transfer reads are filled)."""

    def __init__(self, keys, build):
        self._keys, self._build, self._built = tuple(keys), build, {}

    def __getitem__(self, key):
        if key not in self._keys:
            raise KeyError(key)
        if key not in self._built:
            self._built[key] = self._build(key)
        return self._built[key]

    def __iter__(self):
        return iter(self._keys)

    def __len__(self) -> int:
        return len(self._keys)


def request_memories(src, dst, dst_rank: int, src_blocks, dst_blocks, num_blocks: int):
    """(src_mem, expected, must_write) for one decode rank and one request (exact pairing).

    src_mem[rank][region] (filled on first access) and expected[region] are (code, byte) array pairs of
    ``num_blocks * block_bytes``; must_write[region] marks the decode bytes the request
    has to deliver (elements of tokens both sides hold, restricted to the blocks a
    sliding window needs; states block for block).
    """
    s_lists, d_lists = _lists(src, src_blocks), _lists(dst, dst_blocks)

    def blocks_of(engine, lists):
        def count(group):
            if not engine.group_is_token(group):
                return max(len(lists[group]), 1)
            s_tok = len(s_lists[group]) * src.group_block_tokens(group)[0]
            d_tok = len(d_lists[group]) * dst.group_block_tokens(group)[0]
            span = math.lcm(src.group_block_tokens(group)[0], dst.group_block_tokens(group)[0])
            covered = -(-max(s_tok, d_tok) // span) * span
            return covered // engine.group_block_tokens(group)[0]
        return count

    def source(rank):
        stage, tp_rank = divmod(rank, src.tp)
        return _fill(src, tp_rank, stage, s_lists, num_blocks, blocks_of(src, s_lists),
                     lambda layer, c: np.ones(c.shape, bool))

    src_mem = _Lazy(range(src.world_size), source)

    def must_keep(layer, codes):
        group = dst.group_of(layer)
        ok = codes >= 0
        if dst.group_is_token(group):
            tokens = min(len(s_lists[group]) * src.group_block_tokens(group)[0],
                         len(d_lists[group]) * dst.group_block_tokens(group)[0])
            ok &= token_of(codes) < tokens
            kept = dst.model.layers[layer].kept_blocks(dst.group_block_tokens(group)[0])
            if kept is not None:
                first = len(d_lists[group]) - kept
                ok[: max(first, 0)] = False
        return ok

    stage, tp_rank = divmod(dst_rank, dst.tp)
    full = _fill(dst, tp_rank, stage, d_lists, num_blocks, blocks_of(dst, d_lists), must_keep)
    expected, must = [], []
    for code, byte in full:
        need = code >= 0
        expected.append((np.where(need, code, UNTOUCHED), np.where(need, byte, UNTOUCHED)))
        must.append(need)
    return src_mem, expected, must


def apply(transfer, src_mem, dst_sizes, *, max_states: int = 4) -> list[tuple[np.ndarray, np.ndarray]]:
    """Execute `transfer` (pre steps, reads, post steps) on numpy memories; a sequence
    of Transfers (a staging ring's chunks) runs one after the other on the same memories,
    scratch included, so a chunk that reuses a slot overwrites what an earlier one left.

    Returns the decode regions' (code, byte) arrays. Per-request scratch regions are
    allocated for `max_states` state blocks (or what the request uses, if more), filled
    with -5 so a read of scratch that nothing wrote shows up as a wrong byte.
    """
    transfers = list(transfer) if isinstance(transfer, (list, tuple)) else [transfer]
    used: tuple[dict, dict] = ({}, {})
    for t in transfers:
        for side, extents in zip(used, t.scratch_bytes(), strict=True):
            for region, size in extents.items():
                side[region] = max(side.get(region, 0), size)
    transfer = transfers[0]

    def scratch(regions, used):
        sizes = {i: max(r.block_bytes * max_states, used.get(i, 0)) for i, r in enumerate(regions) if r.per_request}
        return {i: (np.full(n, -5, np.int64), np.full(n, -5, np.int64)) for i, n in sizes.items()}

    src = _Lazy(src_mem, lambda rank: dict(enumerate(src_mem[rank])) | scratch(transfer.src_regions, used[0]))
    out = {i: (np.full(n, UNTOUCHED, np.int64), np.full(n, UNTOUCHED, np.int64)) for i, n in enumerate(dst_sizes)}
    out |= scratch(transfer.dst_regions, used[1])

    def run(t, source_of, target_of):
        # every byte gathered before any is written: rows of one step never read what
        # another row of it writes (transports run them concurrently), so this equals
        # copying row by row
        if not len(t):
            return
        n = t.nbytes
        row = np.repeat(np.arange(len(t)), n)
        within = np.arange(len(row)) - np.repeat(np.cumsum(n) - n, n)
        src_pos, dst_pos = t.src_offset[row] + within, t.dst_offset[row] + within
        code, byte = np.empty(len(row), np.int64), np.empty(len(row), np.int64)
        for rank, region in set(zip(t.src_rank.tolist(), t.src_region.tolist())):
            mine = (t.src_rank[row] == rank) & (t.src_region[row] == region)
            s_code, s_byte = source_of(rank)[region]
            code[mine], byte[mine] = s_code[src_pos[mine]], s_byte[src_pos[mine]]
        for rank, region in set(zip(t.src_rank.tolist(), t.dst_region.tolist())):
            mine = (t.src_rank[row] == rank) & (t.dst_region[row] == region)
            d_code, d_byte = target_of(rank)[region]
            d_code[dst_pos[mine]], d_byte[dst_pos[mine]] = code[mine], byte[mine]

    for t in transfers:
        if t.pre_steps is not None:
            run(t.pre_steps, src.__getitem__, src.__getitem__)
        run(t, src.__getitem__, lambda rank: out)
        if t.post_steps is not None:
            run(t.post_steps, lambda rank: out, lambda rank: out)
    return [out[i] for i in range(len(dst_sizes))]


def check_delivery(transfer, src_mem, expected, must) -> int:
    """Execute `transfer` (or a sequence of them, as `apply`) and raise AssertionError on any wrong or stray byte.

    Returns the number of bytes the request had to deliver.
    """
    got = apply(transfer, src_mem, [len(e[0]) for e in expected])
    for region, ((g_code, g_byte), (e_code, e_byte), m) in enumerate(zip(got, expected, must, strict=True)):
        wrong = m & ((g_code != e_code) | (g_byte != e_byte))
        if wrong.any():
            raise AssertionError(f"region {region}: {int(wrong.sum())} bytes wrong, first at {np.flatnonzero(wrong)[0]}")
        stray = ~m & (g_code != UNTOUCHED)
        if stray.any():
            raise AssertionError(f"region {region}: {int(stray.sum())} bytes written that the request does not "
                                 f"own, first at {np.flatnonzero(stray)[0]}")
    return sum(int(m.sum()) for m in must)
