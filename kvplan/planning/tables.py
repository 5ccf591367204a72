"""The row tables of a plan: `ReadTable` (what a decode rank reads, per span) and
`TemplateRows` (one layer's rows before region ids are bound)."""

from __future__ import annotations

import attrs
import numpy as np

from ..spec.components import COMPONENTS
from .rows import CopyRows, RowTable, column

# A template slot of -1 is the per-request scratch area of that side (conv strategies);
# a strategy with several scratch areas per layer uses -1, -2, ... (`planning.bounce`).
SCRATCH = -1


@attrs.frozen(kw_only=True)
class ReadTable(CopyRows):
    """Reads of one destination rank for one span of logical blocks.

    Each row copies `nbytes` from `src_offset` of source rank `src_rank`'s page of
    logical block `src_block` in region `src_region` to `dst_offset` of the destination
    page of block `dst_block` in `dst_region`. Offsets count bytes from the start of
    that region's page for one logical block; `src_block`/`dst_block` index the
    logical blocks inside the span (`EngineTransferPlan.span_tokens`), 0 when both
    engines use the same block size. Rows are ordered by (dst_region, dst_block,
    dst_offset) and never split a run that is contiguous on both sides.

    >>> t = ReadTable(dst_rank=3, src_rank=[1], layer=[0], component=[0], src_region=[0], dst_region=[0],
    ...               src_block=[0], dst_block=[0], src_offset=[16384], dst_offset=[0], nbytes=[16384])
    >>> len(t), t.total_bytes, t.source_ranks
    (1, 16384, (1,))
    """

    layer: np.ndarray = column()
    component: np.ndarray = column()
    src_block: np.ndarray = column()
    dst_block: np.ndarray = column()

    def __str__(self) -> str:
        head = f"{'src':>4} {'layer':>5} {'comp':>6} {'sreg':>5} {'dreg':>5} {'sblk':>4} {'dblk':>4} " \
               f"{'src_off':>10} {'dst_off':>10} {'nbytes':>9}"
        lines = [f"ReadTable(dst_rank={self.dst_rank}, rows={len(self)}, bytes={self.total_bytes})", head]
        for i in range(min(len(self), 40)):
            lines.append(
                f"{self.src_rank[i]:>4} {self.layer[i]:>5} {COMPONENTS[self.component[i]]:>6} "
                f"{self.src_region[i]:>5} {self.dst_region[i]:>5} {self.src_block[i]:>4} {self.dst_block[i]:>4} "
                f"{self.src_offset[i]:>10} {self.dst_offset[i]:>10} {self.nbytes[i]:>9}"
            )
        if len(self) > 40:
            lines.append(f"... {len(self) - 40} more rows")
        return "\n".join(lines)


@attrs.frozen(kw_only=True)
class TemplateRows(RowTable):
    """One layer's rows on one destination TP rank, relative to the layer: source
    ranks within the layer's stage, region *slots* of the layer (`SCRATCH` for a conv
    strategy's scratch area) instead of region ids. Identical layers share one
    (`kvplan.planning.intersect.layer_rows` builds them)."""

    src_rank: np.ndarray = column()
    component: np.ndarray = column()
    src_slot: np.ndarray = column()
    dst_slot: np.ndarray = column()
    src_block: np.ndarray = column()
    dst_block: np.ndarray = column()
    src_offset: np.ndarray = column()
    dst_offset: np.ndarray = column()
    nbytes: np.ndarray = column()


@attrs.frozen(kw_only=True)
class StrategyRows:
    """A layer's rows under a strategy: `reads`, `pre` (local copies on the source ranks,
    before the reads), `post` (on the destination, after them) and the bytes per block
    (per span, for token layers) of each per-request scratch area a side needs:
    `src_scratch_bytes[k]` for slot ``-1 - k``, 0 where a slot is unused."""

    reads: TemplateRows
    pre: TemplateRows
    post: TemplateRows
    src_scratch_bytes: tuple = ()
    dst_scratch_bytes: tuple = ()


def direct(template: TemplateRows) -> StrategyRows:
    """The rows as they are: no local steps, no scratch."""
    empty = TemplateRows.concat([])
    return StrategyRows(reads=template, pre=empty, post=empty)
