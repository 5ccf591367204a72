"""`Transfer`: concrete, coalesced byte-range copies for one request on one rank."""

from __future__ import annotations

import attrs
import numpy as np

from ._arrays import column
from .errors import RankError, SpecError


@attrs.frozen
class Transfer:
    """Copies for one destination rank and one request, relative to region bases.

    Row i copies `nbytes[i]` bytes from ``base(src_rank[i], src_region[i]) + src_offset[i]``
    to ``base(dst_rank, dst_region[i]) + dst_offset[i]``. Rows contiguous on both sides
    are merged. `src_regions` / `dst_regions` are the engines' region tables (index =
    region id), which is what a backend registers and binds base addresses to;
    per-request scratch regions of a conv strategy follow the engine's own.

    `pre_steps` / `post_steps` (staged and permuted conv strategies) are Transfers whose
    both sides lie in one engine's memory: pre steps run on each `src_rank` before the
    reads, post steps on the destination after them.
    """

    dst_rank: int
    src_rank: np.ndarray = column()
    src_region: np.ndarray = column()
    src_offset: np.ndarray = column()
    dst_region: np.ndarray = column()
    dst_offset: np.ndarray = column()
    nbytes: np.ndarray = column()
    src_regions: tuple = ()
    dst_regions: tuple = ()
    pre_steps: Transfer | None = None   # local copies on the source ranks, before the reads
    post_steps: Transfer | None = None  # local copies on the destination, after the reads

    def __len__(self) -> int:
        return len(self.nbytes)

    @property
    def total_bytes(self) -> int:
        return int(self.nbytes.sum())

    @property
    def source_ranks(self) -> tuple[int, ...]:
        return tuple(int(r) for r in np.unique(self.src_rank))

    def for_source(self, src_rank: int) -> Transfer:
        """The rows read from one source rank (one peer of the transport)."""
        mask = self.src_rank == src_rank
        return attrs.evolve(self, **{c: getattr(self, c)[mask] for c in
                                     ("src_rank", "src_region", "src_offset", "dst_region", "dst_offset", "nbytes")})

    def bind(self, src_bases, dst_bases) -> tuple[np.ndarray, np.ndarray]:
        """Absolute (src_addr, dst_addr) uint64 arrays.

        `src_bases[rank][region]` and `dst_bases[region]` are base addresses (any
        integer sequences or a 2-D array for the sources).

        >>> t = Transfer(0, [1], [0], [64], [2], [8], [16])
        >>> [a.tolist() for a in t.bind({1: [1000]}, [0, 0, 5000])]
        [[1064], [5008]]
        """
        src_addr = np.empty(len(self), np.uint64)
        for rank in self.source_ranks:
            try:
                bases = np.asarray(src_bases[rank], dtype=np.uint64)
            except (KeyError, IndexError):
                raise RankError(f"no source base addresses for rank {rank}") from None
            mask = self.src_rank == rank
            src_addr[mask] = bases[self.src_region[mask]] + self.src_offset[mask].astype(np.uint64)
        dst = np.asarray(dst_bases, dtype=np.uint64)
        if len(self) and self.dst_region.max() >= len(dst):
            raise SpecError(f"dst_bases has {len(dst)} regions, transfer uses region {int(self.dst_region.max())}")
        return src_addr, dst[self.dst_region] + self.dst_offset.astype(np.uint64)

    def __str__(self) -> str:
        lines = [f"Transfer(dst_rank={self.dst_rank}, rows={len(self)}, bytes={self.total_bytes}, "
                 f"sources={list(self.source_ranks)})"]
        for i in range(min(len(self), 20)):
            lines.append(f"  src r{self.src_rank[i]} reg {self.src_region[i]} +{self.src_offset[i]} -> "
                         f"dst reg {self.dst_region[i]} +{self.dst_offset[i]}  {self.nbytes[i]} B")
        if len(self) > 20:
            lines.append(f"  ... {len(self) - 20} more rows")
        return "\n".join(lines)
