"""Laws of intersection (kvplan.planning.intersect) against the independent reference
cell model (kvplan.check.cells): `cell_pairs` pairs every common element's destination
cell with the source cell holding the same element, and `layer_rows` rows, expanded to
bytes, give every destination byte exactly once from a source byte of the same element,
maximally coalesced."""

from __future__ import annotations

import math

import numpy as np
from _laws import any_engine_pair, decode
from hypothesis import given, settings
from hypothesis import strategies as st

from kvplan.check import byte_codes, layer_cells
from kvplan.layout import engine_memory
from kvplan.planning import run_starts
from kvplan.planning.intersect import cell_pairs, layer_rows
from kvplan.spec import COMPONENT_CODE, overlap


@st.composite
def layer_cases(draw):
    """(src, dst, layer, dst TP rank, blocks per span (ns, nd), span tokens)."""
    src, dst = draw(any_engine_pair(), label="engines")
    stage = draw(st.integers(0, dst.pp - 1), label="stage")
    first, end = dst.stage_layers[stage]
    layer = draw(st.integers(first, end - 1), label="layer")
    rank = draw(st.integers(0, dst.tp - 1), label="dst_tp_rank")
    sb, db = src.layer_block_tokens(layer)[0], dst.layer_block_tokens(layer)[0]
    span = math.lcm(sb, db) if dst.model.layers[layer].holds_tokens else 1
    return src, dst, layer, rank, (max(span // sb, 1), max(span // db, 1)), span


class _Bytes:
    """Per-byte codes of a rank's pages of one layer over `blocks` logical blocks
    (reference model), cached per (engine side, rank)."""

    def __init__(self, engine, layer: int, blocks: int):
        self.engine, self.layer, self.blocks, self._cache = engine, layer, blocks, {}

    def slot(self, rank: int, slot: int):
        if rank not in self._cache:
            self._cache[rank] = [byte_codes(c) for c in layer_cells(self.engine, self.layer, rank, self.blocks)]
        codes, within = self._cache[rank][slot]
        return codes, within, len(codes) // self.blocks  # block b starts at b * block bytes


@settings(max_examples=100)
@given(case=layer_cases(), data=st.data())
def test_cell_pairs_pair_each_common_element_with_its_source_cell(case, data):
    """For a destination component and a source rank holding part of it: every pair's
    destination cell and source cell hold the same element (same code, whole cells), and
    the pairs are exactly the destination's cells of the common indices, once each."""
    src, dst, layer, rank, (ns, nd), span = case
    src_mem, dst_mem = engine_memory(src), engine_memory(dst)
    fd = data.draw(st.sampled_from(dst_mem.layer_layout(layer, rank).components), label="component")
    sharing = [p for p in range(src.tp)
               if overlap(fd.held, src_mem.layer_layout(layer, p).component(fd.component).held)]
    p = data.draw(st.sampled_from(sharing), label="src_tp_rank")
    fs = src_mem.layer_layout(layer, p).component(fd.component)
    common = overlap(fd.held, fs.held)
    lo = data.draw(st.integers(common[0], common[1] - 1), label="lo")
    hi = data.draw(st.integers(lo + 1, common[1]), label="hi")
    pairs = cell_pairs(fd, fs, lo, hi, span, dst.layer_block_tokens(layer)[0], src.layer_block_tokens(layer)[0])

    d_codes, d_within, d_block = _Bytes(dst, layer, nd).slot(rank, fd.slot)
    s_codes, s_within, s_block = _Bytes(src, layer, ns).slot(p, fs.slot)
    d_pos = pairs["dst_block"] * d_block + pairs["dst_offset"]
    s_pos = pairs["src_block"] * s_block + pairs["src_offset"]
    cell = np.arange(fd.cell_bytes)
    d_cell, s_cell = d_pos[:, None] + cell, s_pos[:, None] + cell
    assert np.array_equal(d_within[d_cell], np.broadcast_to(cell, d_cell.shape))
    assert np.array_equal(s_within[s_cell], np.broadcast_to(cell, s_cell.shape))
    assert np.array_equal(d_codes[d_cell], s_codes[s_cell])

    starts = np.flatnonzero(d_within == 0)
    component, index, _, _ = decode(d_codes[starts])
    wanted = starts[(component == COMPONENT_CODE[fd.component]) & (index >= lo) & (index < hi)]
    assert sorted(d_pos.tolist()) == wanted.tolist()


@settings(max_examples=80)
@given(layer_cases())
def test_layer_rows_write_every_destination_byte_once_from_the_same_element(case):
    """Rows expanded to bytes: each copies source bytes holding the same element byte as
    the destination bytes it writes; every destination byte of a cell is written exactly
    once, padding never; a row's component is its bytes' (or KV / mixed)."""
    src, dst, layer, rank, (ns, nd), _ = case
    rows = layer_rows(engine_memory(src), engine_memory(dst), layer, rank)
    dst_bytes, src_bytes = _Bytes(dst, layer, nd), _Bytes(src, layer, ns)
    slots = len(layer_cells(dst, layer, rank, 1))
    writes = [np.zeros(len(dst_bytes.slot(rank, s)[0]), np.int64) for s in range(slots)]
    for i in range(len(rows)):
        d_codes, d_within, d_block = dst_bytes.slot(rank, int(rows.dst_slot[i]))
        s_codes, s_within, s_block = src_bytes.slot(int(rows.src_rank[i]), int(rows.src_slot[i]))
        run = np.arange(int(rows.nbytes[i]))
        d = int(rows.dst_block[i]) * d_block + int(rows.dst_offset[i]) + run
        s = int(rows.src_block[i]) * s_block + int(rows.src_offset[i]) + run
        assert d[-1] < len(d_codes) and s[-1] < len(s_codes) and (d_codes[d] >= 0).all()
        assert np.array_equal(d_codes[d], s_codes[s]) and np.array_equal(d_within[d], s_within[s])
        writes[int(rows.dst_slot[i])][d] += 1
        kinds = set(decode(d_codes[d])[0].tolist())
        if len(kinds) == 1:
            assert rows.component[i] == kinds.pop()
        else:
            kv = kinds == {COMPONENT_CODE["K"], COMPONENT_CODE["V"]}
            assert rows.component[i] == COMPONENT_CODE["KV" if kv else "mixed"]
    for s in range(slots):
        codes = dst_bytes.slot(rank, s)[0]
        assert (writes[s][codes >= 0] == 1).all() and (writes[s][codes < 0] == 0).all()


@settings(max_examples=80)
@given(layer_cases())
def test_layer_rows_are_ordered_by_destination_and_maximally_coalesced(case):
    """Rows come in (dst slot, dst block, dst offset) order, no two neighbours could be
    merged, and cutting the rows into single bytes then coalescing gives them back."""
    src, dst, layer, rank, _, _ = case
    rows = layer_rows(engine_memory(src), engine_memory(dst), layer, rank)
    order = np.lexsort((rows.dst_offset, rows.dst_block, rows.dst_slot))
    assert np.array_equal(order, np.arange(len(rows)))
    keys = [rows.src_rank, rows.src_slot, rows.dst_slot, rows.src_block, rows.dst_block]
    assert np.array_equal(run_starts(keys, rows.src_offset, rows.dst_offset, rows.nbytes), np.arange(len(rows)))
    # bytes -> rows again: one byte per row, then the same merge
    n = rows.nbytes
    row_of = np.repeat(np.arange(len(rows)), n)
    step = np.arange(int(n.sum())) - np.repeat(np.cumsum(n) - n, n)
    starts = run_starts([k[row_of] for k in keys], rows.src_offset[row_of] + step, rows.dst_offset[row_of] + step,
                        np.ones(len(row_of), np.int64))
    assert np.array_equal(row_of[starts], np.arange(len(rows)))
