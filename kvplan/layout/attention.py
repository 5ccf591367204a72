"""Attention kernel pages: where each head's K and V (or the MLA latent) of each token sit.

One kernel page holds `Nk` tokens of the `H` KV heads a rank holds; a logical block is
`kernel_pages` consecutive kernel pages. K|V cells are `head_dim` and `v_dim` elements:

    packed HND   [H][Nk][K|V]          vLLM 0.33 default (a head subset is one range)
    packed NHD   [Nk][H][K|V]          token-major
    separate     slot 0: [H][Nk][K]  slot 1: [H][Nk][V]   (or [Nk][H][.] with NHD)
    blocks_first [K: H,Nk][V: H,Nk] in one page (FlashInfer legacy; NHD inside too)
    MLA          [Nk][latent]          the whole latent on every rank

A pooled region pads each kernel page to `kernel_stride_bytes`.
"""

from __future__ import annotations

from ..errors import SpecError
from ..spec.layers import AttentionSpec
from .affine import Layout
from .component import ComponentLayout, LayerLayout


def attention_layout(spec: AttentionSpec, tp: int, tp_rank: int, kernel_tokens: int, kernel_pages: int,
                     kv_layout: str, kv_storage: str, kernel_stride_bytes: int | None = None) -> LayerLayout:
    """The layout of an attention (or MLA) layer on TP rank `tp_rank`.

    >>> lay = attention_layout(AttentionSpec(8, 128), 2, 1, 16, 1, "HND", "packed")
    >>> [(c.component, c.held, str(c.layout)) for c in lay.components]
    [('K', (4, 8), '(4,(16,1)):(8192,(512,32768))'), ('V', (4, 8), '(4,(16,1)):(8192,(512,32768))+256')]
    >>> lay.page_bytes
    (32768,)
    """
    e = spec.elem_bytes
    nk = kernel_tokens
    held = spec.heads.interval(tp, tp_rank)
    heads = held[1] - held[0]
    if spec.mla:
        width = spec.head_dim * e
        pages = _padded((nk * width,), kernel_stride_bytes)
        latent = _component("latent", 0, held, pages[0], kernel_pages, nk, 0, width, nk * width, width)
        return LayerLayout(components=(latent,), page_bytes=pages, kernel_tokens=nk, kernel_pages=kernel_pages)
    ck, cv = spec.head_dim * e, spec.v_dim * e
    if kv_storage == "packed":
        pages = _padded((heads * nk * (ck + cv),), kernel_stride_bytes)
        slots, bases, pitches = (0, 0), (0, ck), (ck + cv, ck + cv)
    elif kv_storage == "separate":
        pages = _padded((heads * nk * ck, heads * nk * cv), kernel_stride_bytes)
        slots, bases, pitches = (0, 1), (0, 0), (ck, cv)
    else:  # blocks_first
        pages = _padded((heads * nk * (ck + cv),), kernel_stride_bytes)
        slots, bases, pitches = (0, 0), (0, heads * nk * ck), (ck, cv)
    components = []
    for name, slot, base, cell, pitch in zip(("K", "V"), slots, bases, (ck, cv), pitches, strict=True):
        # `pitch`: bytes between neighbouring tokens (HND) or heads (NHD) of one head row /
        # token row; packed K|V rows have pitch ck+cv, split rows their own cell
        if kv_layout == "HND":
            head_stride, token_stride = nk * pitch, pitch
        else:
            head_stride, token_stride = pitch, heads * pitch
        components.append(_component(name, slot, held, pages[slot], kernel_pages, nk, base, cell, head_stride,
                                     token_stride))
    return LayerLayout(components=tuple(components), page_bytes=pages, kernel_tokens=nk, kernel_pages=kernel_pages)


def _component(name, slot, held, page_bytes, kernel_pages, nk, base, cell, head_stride, token_stride):
    """Cells (held index, token in block): token t sits in kernel page t // nk."""
    layout = Layout(shape=(held[1] - held[0], (nk, kernel_pages)), stride=(head_stride, (token_stride, page_bytes)),
                    offset=base)
    return ComponentLayout(component=name, slot=slot, held=held, layout=layout, cell_bytes=cell, has_tokens=True)


def _padded(pages: tuple[int, ...], stride: int | None) -> tuple[int, ...]:
    if stride is None:
        return pages
    if len(pages) != 1 or stride < pages[0]:
        raise SpecError(f"kernel page stride {stride} B cannot hold pages of {pages} B in one region")
    return (stride,)


def attention_bytes_per_token(spec: AttentionSpec, tp: int) -> int:
    """Bytes of one token of one attention layer on a rank: held heads x (dk + dv) x e,
    or the whole MLA latent.

    >>> [attention_bytes_per_token(AttentionSpec(2, 128), tp) for tp in (1, 2, 4)]
    [1024, 512, 512]
    """
    lo, hi = spec.heads.interval(tp, 0)
    return (hi - lo) * (spec.head_dim + spec.v_dim) * spec.elem_bytes
