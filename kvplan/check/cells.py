"""Reference memory model: every element cell of a rank's pages and its identity code.

A second statement of every layout, written from the specs alone and sharing no code
with `kvplan.layout` or `kvplan.planning`: cells are enumerated in memory order from
reshaped logical tensors and their offsets accumulated, instead of evaluated from
byte strides; which heads or channels a rank holds is restated by reshaping the index
range over the ranks. `verify()` checks the planner against it. A cell is one K or V
vector of one head and token, one MLA latent vector, one conv element (channel, tap)
or one SSM head's state; bytes no cell covers are padding.

Packed HND, 2 heads held, 2 tokens per kernel page, one kernel page, in memory order:

    K(h0,t0) V(h0,t0) K(h0,t1) V(h0,t1) K(h1,t0) V(h1,t0) K(h1,t1) V(h1,t1) [padding]
"""

from __future__ import annotations

from functools import lru_cache
from typing import NamedTuple

import numpy as np

from ..spec.components import COMPONENT_CODE
from ..spec.dtypes import dtype_bytes
from ..spec.placement import Replicate

# code = component | global index | token (or state block) | sub-index (conv tap)
_SUB_BITS, _TOKEN_BITS, _INDEX_BITS = 16, 22, 20


def code(component: str, index, token, sub=0) -> np.ndarray:
    """Identity code of one element cell: component, global index, token, sub-index.

    >>> int(token_of(code("K", 5, 300))), bool(code("K", 5, 300) != code("V", 5, 300))
    (300, True)
    """
    comp = np.int64(COMPONENT_CODE[component])
    return (((comp << _INDEX_BITS | index) << _TOKEN_BITS | token) << _SUB_BITS) | sub


def token_of(codes: np.ndarray) -> np.ndarray:
    """The token (state block for state layers) field of identity codes.

    >>> token_of(code("ssm", np.arange(3), 7)).tolist()
    [7, 7, 7]
    """
    return (codes >> _SUB_BITS) & ((1 << _TOKEN_BITS) - 1)


def held_indices(axis, tp: int, rank: int) -> np.ndarray:
    """The global indices of `axis` TP rank `rank` holds: the index range reshaped into
    `tp` equal rows (more ranks than indices: each index repeated for `tp / n` ranks).

    >>> from kvplan.spec.placement import Axis, Shard
    >>> heads = Axis(what="heads", extent=2, placement=Shard())
    >>> [held_indices(heads, 4, r).tolist() for r in range(4)]
    [[0], [0], [1], [1]]
    """
    n = axis.extent
    if isinstance(axis.placement, Replicate):
        return np.arange(n, dtype=np.int64)
    if tp > n and axis.placement.replicate_excess:
        return np.repeat(np.arange(n, dtype=np.int64), tp // n).reshape(tp, 1)[rank]
    return np.arange(n, dtype=np.int64).reshape(tp, n // tp)[rank]


class Cells(NamedTuple):
    """Cells of one region slot over several logical blocks, sorted by offset
    (`layer_cells`): offset, size and identity code of each, and the slot's bytes."""

    offset: np.ndarray
    size: np.ndarray
    code: np.ndarray
    total_bytes: int


def _attention_pages(spec, engine, layer: int, tp_rank: int, pages: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per region slot: (codes (pages, cells), sizes (cells,)) of consecutive kernel pages."""
    _, nk = engine.layer_block_tokens(layer)
    e = dtype_bytes(spec.dtype)
    # token of (page, position in page) in the request's order
    token = np.arange(pages, dtype=np.int64)[:, None] * nk + np.arange(nk)[None, :]
    if spec.mla:
        return [(code("latent", 0, token), np.full(nk, spec.head_dim * e))]
    heads = held_indices(spec.heads, engine.tp, tp_rank)
    ck, cv = spec.head_dim * e, spec.v_dim * e
    k = code("K", heads[None, :, None], token[:, None, :])  # (pages, heads, nk)
    v = code("V", heads[None, :, None], token[:, None, :])
    if engine.kv_layout == "NHD":
        k, v = k.transpose(0, 2, 1), v.transpose(0, 2, 1)
    per_page = k[0].size
    k, v = k.reshape(pages, per_page), v.reshape(pages, per_page)
    if engine.kv_storage == "packed":
        both = np.stack([k, v], axis=-1).reshape(pages, 2 * per_page)  # K|V per cell pair
        return [(both, np.tile([ck, cv], per_page))]
    if engine.kv_storage == "separate":
        return [(k, np.full(per_page, ck)), (v, np.full(per_page, cv))]
    both = np.concatenate([k, v], axis=1)  # blocks_first: all K cells, then all V cells
    return [(both, np.r_[np.full(per_page, ck), np.full(per_page, cv)])]


def _state_page(spec, engine, tp_rank: int, blocks: int) -> tuple[np.ndarray, np.ndarray]:
    """(codes (blocks, cells), sizes (cells,)) of consecutive state pages, unpadded."""
    rows = spec.conv_kernel - 1 + engine.num_speculative_tokens
    e = dtype_bytes(spec.conv_dtype)
    block = np.arange(blocks, dtype=np.int64)[:, None]
    columns, ssm = [], None  # conv elements as (part, channel) columns x tap rows
    for part in spec.parts():
        held = held_indices(part.axis, engine.tp, tp_rank)
        if part.component == "ssm":
            ssm = (held, part.width)
            continue
        channels = (held[:, None] * part.width + np.arange(part.width)[None, :]).reshape(-1)
        columns += [(part.component, int(c)) for c in channels]
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
        heads, per = ssm
        conv = np.concatenate([conv, code("ssm", heads[None, :], block)], axis=1)
        sizes = np.r_[sizes, np.full(len(heads), per)]
    return conv, sizes


def natural_page_bytes(engine, layer: int) -> list[int]:
    """Bytes of one unpadded page per region slot (a kernel page of token layers, a
    state page of state layers).

    >>> from kvplan.spec import AttentionSpec, EngineSpec, ModelSpec
    >>> m = ModelSpec(name="m", layers=(AttentionSpec(8, 128),))
    >>> natural_page_bytes(EngineSpec(model=m, tp=2, kv_storage="separate"), 0)   # 4 heads x 16 tokens x 256 B
    [16384, 16384]
    """
    spec = engine.model.layers[layer]
    if spec.holds_tokens:
        return [int(sizes.sum()) for _, sizes in _attention_pages(spec, engine, layer, 0, 1)]
    return [int(_state_page(spec, engine, 0, 1)[1].sum())]


def _block_pages(engine, layer: int) -> int:
    block, kernel = engine.layer_block_tokens(layer)
    return block // kernel if engine.model.layers[layer].holds_tokens else 1


@lru_cache(maxsize=64)
def _pool_page_bytes(engine) -> int:
    """The page every pooled region pads a logical block to: `page_bytes`, or the
    largest layer's natural block."""
    largest = max(sum(natural_page_bytes(engine, layer)) * _block_pages(engine, layer)
                  for layer in range(engine.model.num_layers))
    return largest if engine.page_bytes is None else engine.page_bytes


def page_strides(engine, layer: int) -> list[int]:
    """Bytes from one page of `layer` to the next, per region slot, padding included:
    a pooled region pads each logical block to the pool page (split evenly over its
    kernel pages), a state page pads to `page_bytes`.

    >>> from kvplan.spec import EngineSpec, ModelSpec, ShortConvSpec
    >>> m = ModelSpec(name="m", layers=(ShortConvSpec(conv_dim=4, conv_kernel=3),))
    >>> page_strides(EngineSpec(model=m), 0), page_strides(EngineSpec(model=m, page_bytes=64), 0)
    ([16], [64])
    """
    natural = natural_page_bytes(engine, layer)
    if engine.pooled:
        return [_pool_page_bytes(engine) // _block_pages(engine, layer)]
    if not engine.model.layers[layer].holds_tokens and engine.page_bytes is not None:
        return [engine.page_bytes]
    return natural


def _cells(codes_by_page: np.ndarray, sizes_in_page, pages: int, stride: int) -> Cells:
    """Cells laid out back to back from the start of each page of `stride` bytes."""
    sizes = np.asarray(sizes_in_page, np.int64)
    within = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    offsets = (np.arange(pages, dtype=np.int64)[:, None] * stride + within[None, :]).reshape(-1)
    return Cells(offsets, np.tile(sizes, pages), codes_by_page.reshape(-1), pages * stride)


def layer_cells(engine, layer: int, tp_rank: int, blocks: int) -> list[Cells]:
    """Cells of every region slot of `layer` on TP rank `tp_rank` for `blocks` logical
    blocks (state layers: `blocks` states), block b at ``b * block_bytes``.

    >>> from kvplan.spec import AttentionSpec, EngineSpec, ModelSpec
    >>> m = ModelSpec(name="m", layers=(AttentionSpec(2, 4, dtype="float32"),))
    >>> cells = layer_cells(EngineSpec(model=m, block_tokens=2), 0, 0, 1)[0]   # packed HND: K|V per head, token
    >>> cells.offset.tolist(), cells.size.tolist(), cells.total_bytes
    ([0, 16, 32, 48, 64, 80, 96, 112], [16, 16, 16, 16, 16, 16, 16, 16], 128)
    """
    spec = engine.model.layers[layer]
    strides = page_strides(engine, layer)
    if spec.holds_tokens:
        pages = blocks * _block_pages(engine, layer)
        return [_cells(codes, sizes, pages, stride) for (codes, sizes), stride in
                zip(_attention_pages(spec, engine, layer, tp_rank, pages), strides, strict=True)]
    codes, sizes = _state_page(spec, engine, tp_rank, blocks)
    return [_cells(codes, sizes, blocks, strides[0])]


def byte_codes(cells: Cells) -> tuple[np.ndarray, np.ndarray]:
    """Per byte: the code of its cell and its index inside the cell (-1, -1 for padding).

    >>> _, within = byte_codes(Cells(np.array([0, 4]), np.array([2, 2]), np.array([7, 8]), 6))
    >>> within.tolist()
    [0, 1, -1, -1, 0, 1]
    """
    codes = np.full(cells.total_bytes, -1, np.int64)
    within = np.full(cells.total_bytes, -1, np.int64)
    starts = np.repeat(cells.offset, cells.size)
    first = np.repeat(np.cumsum(cells.size) - cells.size, cells.size)
    position = np.arange(len(starts), dtype=np.int64) - first
    codes[starts + position] = np.repeat(cells.code, cells.size)
    within[starts + position] = position
    return codes, within
