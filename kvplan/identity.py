"""Reference memory model: the element identity code of every byte of a rank's pages.

Written independently of `kvplan.geometry` (array reshapes and transposes of the
logical tensors, not stride arithmetic), so `verify()` checks the planner against a
second statement of each layout. A code says (component, global head or channel,
token of the span, byte inside the cell); -1 marks padding.

Packed HND for 2 heads held, 1 token, K and V of 2 bytes each, reads per kernel page:

    [K h0 b0, K h0 b1, V h0 b0, V h0 b1, K h1 b0, K h1 b1, V h1 b0, V h1 b1]
"""

from __future__ import annotations

import numpy as np

from .sharding import held_interval
from .table import COMPONENT_CODE

# Widths of the fields inside a code: up to 2**20 bytes per cell, 2**24 tokens,
# 2**12 heads/channels, ample for test and real configurations.
_BYTE_BITS, _TOKEN_BITS, _INDEX_BITS = 20, 24, 12


def code(component: str, index, token, byte) -> np.ndarray:
    """Identity code of (component, global index, span token, byte in cell)."""
    comp = np.int64(COMPONENT_CODE[component])
    return (((comp << _INDEX_BITS | index) << _TOKEN_BITS | token) << _BYTE_BITS) | byte


def attention_block_codes(spec, engine, tp_rank: int, span_tokens: int) -> list[np.ndarray]:
    """Per region slot, codes of shape (blocks in span, bytes per logical block)."""
    blocks = span_tokens // engine.block_tokens
    ppl, nk = engine.kernel_pages_per_block, engine.kernel_tokens
    e = spec.elem_bytes
    # token of the span for (block, kernel page, token in page)
    token = (np.arange(blocks)[:, None, None] * engine.block_tokens
             + np.arange(ppl)[None, :, None] * nk + np.arange(nk)[None, None, :])
    if spec.mla:
        width = spec.head_dim * e
        latent = code("latent", 0, token[..., None], np.arange(width))  # (blocks, ppl, nk, width)
        return [latent.reshape(blocks, -1)]
    lo, hi = held_interval(spec.num_kv_heads, engine.tp, tp_rank)
    heads = np.arange(lo, hi)
    ck, cv = spec.head_dim * e, spec.v_dim * e
    # logical tensors in head-major order: (blocks, ppl, heads, nk, cell bytes)
    k = code("K", heads[None, None, :, None, None], token[:, :, None, :, None], np.arange(ck))
    v = code("V", heads[None, None, :, None, None], token[:, :, None, :, None], np.arange(cv))
    if engine.kv_layout == "NHD":
        k, v = k.transpose(0, 1, 3, 2, 4), v.transpose(0, 1, 3, 2, 4)
    if engine.kv_storage == "packed":
        return [np.concatenate([k, v], axis=-1).reshape(blocks, -1)]
    if engine.kv_storage == "separate":
        return [k.reshape(blocks, -1), v.reshape(blocks, -1)]
    # blocks_first: each kernel page is [all K | all V]
    return [np.concatenate([k.reshape(blocks, ppl, -1), v.reshape(blocks, ppl, -1)], axis=-1).reshape(blocks, -1)]


def block_codes(engine, layer: int, tp_rank: int, span_tokens: int) -> list[np.ndarray]:
    """Codes of every region slot of `layer` on TP rank `tp_rank` for one span."""
    spec = engine.model.layers[layer]
    return attention_block_codes(spec, engine, tp_rank, span_tokens)
