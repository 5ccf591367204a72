"""Where one layer's components sit inside one logical block of one rank.

A `ComponentLayout` is one component (K, V, MLA latent, conv x, SSM state, ...) of one
layer on one TP rank: the global indices of its TP-sharded axis the rank holds
(`held`), and an affine `Layout` from a cell's coordinate to its byte offset in the
page of one logical block of region slot `slot`. The coordinate is

    (index - held[0], token in block, further axes...)    token layers
    (index - held[0], further axes...)                    state layers

and each cell is `cell_bytes` contiguous bytes. Two ranks' layouts of one component
describe the same elements, so a copy plan is the intersection of what a destination
holds with what a source holds, cell by cell (`kvplan.planning.intersect`).

A `LayerLayout` gathers a layer's components with the kernel page of each region slot:
a logical block is `kernel_pages` consecutive kernel pages of `kernel_tokens` tokens.
"""

from __future__ import annotations

import attrs

from .affine import Layout


@attrs.frozen(kw_only=True)
class ComponentLayout:
    """One component of one layer on one rank (see the module docstring).

    >>> from kvplan.layout.affine import Layout
    >>> k = ComponentLayout(component="K", slot=0, held=(4, 8), cell_bytes=256, has_tokens=True,
    ...                     layout=Layout(shape=(4, (16, 1)), stride=(8192, (512, 32768))))
    >>> k.layout(1, 3)          # head 5 (4 + 1), token 3
    9728
    """

    component: str
    slot: int
    held: tuple[int, int]
    layout: Layout
    cell_bytes: int
    has_tokens: bool


@attrs.frozen(kw_only=True)
class LayerLayout:
    """All components of one layer on one rank, and each region slot's kernel page.

    >>> from kvplan.layout.attention import attention_layout
    >>> from kvplan.spec import AttentionSpec
    >>> lay = attention_layout(AttentionSpec(2, 64), 1, 0, 16, 2, "HND", "separate")
    >>> lay.page_bytes, lay.block_bytes, lay.component("V").slot
    ((4096, 4096), (8192, 8192), 1)
    """

    components: tuple[ComponentLayout, ...]
    page_bytes: tuple[int, ...]
    kernel_tokens: int
    kernel_pages: int

    @property
    def block_bytes(self) -> tuple[int, ...]:
        """Bytes of one logical block in each region slot."""
        return tuple(p * self.kernel_pages for p in self.page_bytes)

    def component(self, name: str) -> ComponentLayout:
        return next(c for c in self.components if c.component == name)
