"""`ReadTable`: the byte ranges one destination rank reads, per logical-block span."""

from __future__ import annotations

import attrs
import numpy as np

from ._arrays import column

# Component codes used in the `component` column.
COMPONENTS = ("K", "V", "latent", "conv", "conv_x", "conv_B", "conv_C", "conv_Q", "conv_K", "conv_V", "ssm",
              "KV", "mixed")
COMPONENT_CODE = {name: code for code, name in enumerate(COMPONENTS)}

COLUMNS = ("src_rank", "layer", "component", "src_region", "dst_region",
           "src_block", "dst_block", "src_offset", "dst_offset", "nbytes")


@attrs.frozen
class ReadTable:
    """Reads of one destination rank for one span of logical blocks.

    Each row copies `nbytes` from `src_offset` of source rank `src_rank`'s page of
    logical block `src_block` in region `src_region` to `dst_offset` of the destination
    page of block `dst_block` in `dst_region`. Offsets count bytes from the start of
    that region's page for one logical block; `src_block`/`dst_block` index the
    logical blocks inside the span (`EngineTransferPlan.span_tokens`), 0 when both
    engines use the same block size. Rows are ordered by (dst_region, dst_block,
    dst_offset) and never split a run that is contiguous on both sides.
    """

    dst_rank: int
    src_rank: np.ndarray = column()
    layer: np.ndarray = column()
    component: np.ndarray = column()
    src_region: np.ndarray = column()
    dst_region: np.ndarray = column()
    src_block: np.ndarray = column()
    dst_block: np.ndarray = column()
    src_offset: np.ndarray = column()
    dst_offset: np.ndarray = column()
    nbytes: np.ndarray = column()

    def __len__(self) -> int:
        return len(self.nbytes)

    @property
    def total_bytes(self) -> int:
        return int(self.nbytes.sum())

    @property
    def source_ranks(self) -> tuple[int, ...]:
        return tuple(int(r) for r in np.unique(self.src_rank))

    def columns(self) -> dict[str, np.ndarray]:
        return {name: getattr(self, name) for name in COLUMNS}

    def select(self, mask: np.ndarray) -> ReadTable:
        return ReadTable(self.dst_rank, **{name: col[mask] for name, col in self.columns().items()})

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
