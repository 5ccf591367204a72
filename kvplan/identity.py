"""Reference memory model: every element cell of a rank's pages and its identity code.

Written independently of `kvplan.geometry` (cells are enumerated in memory order and
their offsets accumulated, instead of evaluated from byte strides), so `verify()`
checks the planner against a second statement of each layout. A cell is one K or V
vector of one head and token, one MLA latent vector, one conv element (channel, tap)
or one SSM head's state; bytes no cell covers are padding.

Packed HND, 2 heads held, 2 tokens per kernel page, one kernel page, in memory order:

    K(h0,t0) V(h0,t0) K(h0,t1) V(h0,t1) K(h1,t0) V(h1,t0) K(h1,t1) V(h1,t1) [padding]
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from .dtypes import dtype_bytes
from .groups import is_token_layer
from .sharding import held_interval
from .state_geometry import conv_rows, state_parts
from .table import COMPONENT_CODE

# code = component | global index | token (or state block) | sub-index (conv tap)
_SUB_BITS, _TOKEN_BITS, _INDEX_BITS = 16, 22, 20


def code(component: str, index, token, sub=0) -> np.ndarray:
    """Identity code of one element cell."""
    comp = np.int64(COMPONENT_CODE[component])
    return (((comp << _INDEX_BITS | index) << _TOKEN_BITS | token) << _SUB_BITS) | sub


def token_of(codes: np.ndarray) -> np.ndarray:
    """The token (state block for state layers) field of identity codes."""
    return (codes >> _SUB_BITS) & ((1 << _TOKEN_BITS) - 1)


class Cells(NamedTuple):
    """Cells of one region slot over several logical blocks, sorted by offset."""

    offset: np.ndarray
    size: np.ndarray
    code: np.ndarray
    total_bytes: int


def _attention_cells(spec, engine, layer: int, tp_rank: int, blocks: int, slot_stride: list[int]) -> list[Cells]:
    block_tokens, nk = engine.layer_block_tokens(layer)
    pages = blocks * (block_tokens // nk)
    e = spec.elem_bytes
    # token of (page, position in page) in the request's order
    token = np.arange(pages, dtype=np.int64)[:, None] * nk + np.arange(nk)[None, :]
    if spec.mla:
        codes = code("latent", 0, token)  # (pages, nk)
        sizes = np.full(nk, spec.head_dim * e)
        return [_cells(codes, sizes, pages, slot_stride[0])]
    lo, hi = held_interval(spec.num_kv_heads, engine.tp, tp_rank)
    heads = np.arange(lo, hi, dtype=np.int64)
    ck, cv = spec.head_dim * e, spec.v_dim * e
    k = code("K", heads[None, :, None], token[:, None, :])  # (pages, heads, nk)
    v = code("V", heads[None, :, None], token[:, None, :])
    if engine.kv_layout == "NHD":
        k, v = k.transpose(0, 2, 1), v.transpose(0, 2, 1)
    per_page = k[0].size
    k, v = k.reshape(pages, per_page), v.reshape(pages, per_page)
    if engine.kv_storage == "packed":
        both = np.stack([k, v], axis=-1).reshape(pages, 2 * per_page)  # K|V per cell pair
        return [_cells(both, np.tile([ck, cv], per_page), pages, slot_stride[0])]
    if engine.kv_storage == "separate":
        return [_cells(k, np.full(per_page, ck), pages, slot_stride[0]),
                _cells(v, np.full(per_page, cv), pages, slot_stride[1])]
    both = np.concatenate([k, v], axis=1)  # blocks_first: all K cells, then all V cells
    return [_cells(both, np.r_[np.full(per_page, ck), np.full(per_page, cv)], pages, slot_stride[0])]


def _state_cells(spec, engine, tp_rank: int, blocks: int, stride: int) -> list[Cells]:
    parts, ssm = state_parts(spec, engine.tp, tp_rank)
    rows = conv_rows(spec, engine.num_speculative_tokens)
    e = dtype_bytes(spec.conv_dtype)
    block = np.arange(blocks, dtype=np.int64)[:, None]
    # conv elements as (part, channel) columns x tap rows
    columns = [(comp, c) for comp, lo, hi in parts for c in range(lo, hi)]
    comp_codes = np.array([COMPONENT_CODE[comp] for comp, _ in columns], np.int64)
    channel = np.array([c for _, c in columns], np.int64)
    tap = np.arange(rows, dtype=np.int64)
    if engine.conv_layout == "DS":
        comp_grid, ch_grid, tap_grid = comp_codes[:, None], channel[:, None], tap[None, :]
    else:
        comp_grid, ch_grid, tap_grid = comp_codes[None, :], channel[None, :], tap[:, None]
    conv = ((((comp_grid << _INDEX_BITS | ch_grid) << _TOKEN_BITS) << _SUB_BITS) | tap_grid).reshape(-1)
    conv = conv[None, :] | (block << _SUB_BITS)  # (blocks, cells): token field = state block
    sizes = np.full(conv.shape[1], e, np.int64)
    if ssm is not None:
        lo, hi, per = ssm
        heads = code("ssm", np.arange(lo, hi, dtype=np.int64)[None, :], block)
        conv = np.concatenate([conv, heads], axis=1)
        sizes = np.r_[sizes, np.full(hi - lo, per)]
    return [_cells(conv, sizes, blocks, stride)]


def _cells(codes_by_page: np.ndarray, sizes_in_page, pages: int, stride: int) -> Cells:
    """Cells laid out back to back from the start of each page of `stride` bytes."""
    sizes = np.asarray(sizes_in_page, np.int64)
    within = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    offsets = (np.arange(pages, dtype=np.int64)[:, None] * stride + within[None, :]).reshape(-1)
    return Cells(offsets, np.tile(sizes, pages), codes_by_page.reshape(-1), pages * stride)


def layer_cells(engine, layer: int, tp_rank: int, blocks: int) -> list[Cells]:
    """Cells of every region slot of `layer` on TP rank `tp_rank` for `blocks` logical
    blocks (state layers: `blocks` states), block b at ``b * block_bytes``."""
    spec = engine.model.layers[layer]
    geom = engine.layer_geometry(layer, tp_rank)
    if is_token_layer(spec):
        return _attention_cells(spec, engine, layer, tp_rank, blocks, list(geom.page_bytes))
    return _state_cells(spec, engine, tp_rank, blocks, geom.page_bytes[0])


def byte_codes(cells: Cells) -> tuple[np.ndarray, np.ndarray]:
    """Per byte: the code of its cell and its index inside the cell (-1, -1 for padding)."""
    codes = np.full(cells.total_bytes, -1, np.int64)
    within = np.full(cells.total_bytes, -1, np.int64)
    starts = np.repeat(cells.offset, cells.size)
    first = np.repeat(np.cumsum(cells.size) - cells.size, cells.size)
    position = np.arange(len(starts), dtype=np.int64) - first
    codes[starts + position] = np.repeat(cells.code, cells.size)
    within[starts + position] = position
    return codes, within
