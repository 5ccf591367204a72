"""Where one component's bytes sit inside one logical block of one rank.

A `Field` is an affine byte layout (CuTe style: shape and byte strides) of one
component (K, V, MLA latent, conv x, SSM state, ...) of one layer on one rank:

    offset(g, t, a...) = kernel_page(t) * kernel_stride + base
                         + (g - shard_lo) * shard_stride
                         + (t % kernel_tokens) * token_stride
                         + sum(a_i * axis_stride_i)

`g` is the global index along the TP-sharded axis (a KV head, a conv channel, an SSM
head) and the rank holds ``[shard_lo, shard_hi)``; `t` is the token inside the logical
block (absent for per-block state); `a...` are further axes. Each cell is `run_bytes`
contiguous bytes. Two ranks' fields of the same component describe the same elements,
so a copy plan is found by intersecting fields and coalescing runs (`kvplan.planner`).

Attention page layouts (one kernel page of `Nk` tokens, `H` heads held, K|V cells):

    packed HND   [H][Nk][K|V]          vLLM 0.33 default (a head subset is one range)
    packed NHD   [Nk][H][K|V]          token-major
    separate     region 0: [H][Nk][K]  region 1: [H][Nk][V]   (or [Nk][H][.] with NHD)
    blocks_first [K: H,Nk,dk][V: H,Nk,dv] in one page (FlashInfer legacy; NHD inside too)
    MLA          [Nk][latent]          whole latent on every rank
"""

from __future__ import annotations

import attrs

from .errors import SpecError
from .sharding import held_interval


@attrs.frozen
class Field:
    """Affine byte layout of one component on one rank (see module docstring)."""

    component: str
    region_slot: int
    shard_lo: int
    shard_hi: int
    shard_stride_bytes: int
    run_bytes: int
    base_bytes: int = 0
    token_stride_bytes: int | None = None
    axes: tuple[tuple[int, int], ...] = ()  # (extent, stride_bytes) per further axis

    @property
    def has_tokens(self) -> bool:
        return self.token_stride_bytes is not None


@attrs.frozen
class LayerGeometry:
    """All fields of one layer on one rank, and the page size of each region slot.

    `page_bytes[s]` is one kernel page of slot `s`; a logical block is
    `kernel_pages` consecutive kernel pages (`block_bytes` in all).
    """

    fields: tuple[Field, ...]
    page_bytes: tuple[int, ...]
    kernel_tokens: int
    kernel_pages: int

    @property
    def block_bytes(self) -> tuple[int, ...]:
        return tuple(p * self.kernel_pages for p in self.page_bytes)


def attention_geometry(spec, tp: int, tp_rank: int, kernel_tokens: int, kernel_pages: int,
                       kv_layout: str, kv_storage: str, kernel_stride_bytes: int | None = None) -> LayerGeometry:
    """Fields of an attention (or MLA) layer on TP rank `tp_rank`.

    `kernel_stride_bytes` pads each kernel page (pooled regions with a unified page).

    >>> from kvplan.specs import AttentionSpec
    >>> g = attention_geometry(AttentionSpec(8, 128), 2, 1, 16, 1, "HND", "packed")
    >>> [(f.component, f.shard_lo, f.shard_hi, f.base_bytes, f.shard_stride_bytes) for f in g.fields]
    [('K', 4, 8, 0, 8192), ('V', 4, 8, 256, 8192)]
    >>> g.page_bytes
    (32768,)
    """
    e = spec.elem_bytes
    nk = kernel_tokens
    if spec.mla:
        width = spec.head_dim * e
        latent = Field("latent", 0, 0, 1, nk * width, width, 0, width)
        return LayerGeometry((latent,), _padded((nk * width,), kernel_stride_bytes), nk, kernel_pages)
    lo, hi = held_interval(spec.num_kv_heads, tp, tp_rank, what="KV heads")
    heads = hi - lo
    ck, cv = spec.head_dim * e, spec.v_dim * e
    head_major = kv_layout == "HND"

    def part(component, slot, base, cell, pitch):
        # `pitch` is the bytes between neighbouring tokens (HND) or heads (NHD) of one
        # head row / token row: K|V packed rows have pitch ck+cv, split rows their own cell.
        if head_major:
            return Field(component, slot, lo, hi, nk * pitch, cell, base, pitch)
        return Field(component, slot, lo, hi, pitch, cell, base, heads * pitch)

    if kv_storage == "packed":
        fields = (part("K", 0, 0, ck, ck + cv), part("V", 0, ck, cv, ck + cv))
        pages = (heads * nk * (ck + cv),)
    elif kv_storage == "separate":
        fields = (part("K", 0, 0, ck, ck), part("V", 1, 0, cv, cv))
        pages = (heads * nk * ck, heads * nk * cv)
    else:  # blocks_first
        fields = (part("K", 0, 0, ck, ck), part("V", 0, heads * nk * ck, cv, cv))
        pages = (heads * nk * (ck + cv),)
    return LayerGeometry(fields, _padded(pages, kernel_stride_bytes), nk, kernel_pages)


def _padded(pages: tuple[int, ...], stride: int | None) -> tuple[int, ...]:
    if stride is None:
        return pages
    if len(pages) != 1 or stride < pages[0]:
        raise SpecError(f"kernel page stride {stride} B cannot hold pages of {pages} B in one region")
    return (stride,)
