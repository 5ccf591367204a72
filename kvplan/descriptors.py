"""Offset math that transports need, so backends compute none.

* `prepared_lists(plan, dst_rank)`: NIXL-style descriptor lists, built once per decode
  rank: one local list (every table row x every decode block) and one remote list per
  source rank (its rows x every prefill block). Each row's descriptors are consecutive
  and in block order, so a request's whole-page reads of consecutive blocks are
  consecutive indices on both sides, which NIXL merges into one descriptor.
* `PreparedLists.indices(plan, src_blocks, dst_blocks)`: per source rank, the two index
  arrays of one request.
* `staged(transfer)`: pack / unpack steps of a two-sided transport (gather a peer's
  ranges into one staging buffer, scatter on arrival), as `Transfer`s.
* `split_ranges(...)`: long ranges cut into pieces so one GPU thread block copies each.
"""

from __future__ import annotations

import attrs
import numpy as np

from ._arrays import column
from .engine import Region
from .backend_errors import TransportError
from .errors import SpecError
from .lowering import request_rows
from .transfer import Transfer


@attrs.frozen
class DescriptorList:
    """Byte ranges relative to region bases; ``bind(bases)`` gives absolute addresses.

    >>> d = DescriptorList(region=[0, 1], offset=[16, 0], nbytes=[8, 8])
    >>> d.bind([1000, 5000]).tolist()
    [1016, 5000]
    """

    region: np.ndarray = column()
    offset: np.ndarray = column()
    nbytes: np.ndarray = column()

    def __len__(self) -> int:
        return len(self.nbytes)

    def bind(self, bases) -> np.ndarray:
        """Absolute uint64 start address of every descriptor (`bases[region]`)."""
        base = np.asarray(bases, dtype=np.uint64)
        if len(self) and self.region.max() >= len(base):
            raise SpecError(f"{len(base)} region bases given, descriptors use region {int(self.region.max())}")
        return base[self.region] + self.offset.astype(np.uint64)


@attrs.frozen(eq=False)
class PreparedLists:
    """Descriptor lists of one decode rank (see `prepared_lists`).

    `position[r]` is table row r's place among the rows of its source rank;
    `local` holds row r, decode block b at index ``r * dst_blocks + b`` and
    `remote[s]` holds it at ``position[r] * src_blocks + b``.
    """

    dst_rank: int
    src_blocks: int
    dst_blocks: int
    position: np.ndarray = column()
    local: DescriptorList
    remote: dict

    def indices(self, plan, src_blocks, dst_blocks) -> dict[int, tuple[np.ndarray, np.ndarray]]:
        """{source rank: (local int32 indices, remote int32 indices)} for one request.

        Sorted by local index, so each row's consecutive blocks sit next to each other.
        """
        req = request_rows(plan, self.dst_rank, src_blocks, dst_blocks)
        src_rank = req.table.src_rank[req.row]
        local = req.row * self.dst_blocks + req.dst_block_id
        remote = self.position[req.row] * self.src_blocks + req.src_block_id
        out = {}
        for rank in np.unique(src_rank).tolist():
            mask = src_rank == rank
            order = np.argsort(local[mask], kind="stable")
            out[rank] = (local[mask][order].astype(np.int32), remote[mask][order].astype(np.int32))
        return out


def _blocks(engine, side: str) -> int:
    if engine.num_blocks is None:
        raise SpecError(f"the {side} engine's num_blocks is None: prepared descriptor lists need it")
    return engine.num_blocks


def _expand(region, offset, nbytes, stride, blocks: int) -> DescriptorList:
    """Each row repeated for blocks 0..blocks-1 (row-major: a row's blocks are consecutive)."""
    block = np.arange(blocks, dtype=np.int64)[None, :]
    return DescriptorList(np.repeat(region, blocks), (offset[:, None] + block * stride[:, None]).reshape(-1),
                          np.repeat(nbytes, blocks))


def prepared_lists(plan, dst_rank: int) -> PreparedLists:
    """Descriptor lists for every read `dst_rank` can make, built once.

    >>> from kvplan import AttentionSpec, ModelSpec, EngineSpec, plan
    >>> m = ModelSpec(name="m", layers=(AttentionSpec(num_kv_heads=8, head_dim=128),))
    >>> p = plan(EngineSpec(model=m, tp=2, num_blocks=4), EngineSpec(model=m, tp=4, num_blocks=4))
    >>> lists = prepared_lists(p, 3)
    >>> len(lists.local), {s: len(d) for s, d in lists.remote.items()}
    (4, {1: 4})
    >>> lists.remote[1].offset.tolist()          # head slice of blocks 0..3 of rank 1
    [16384, 49152, 81920, 114688]
    >>> [a.tolist() for a in lists.indices(p, [2, 3], [0, 1])[1]]
    [[0, 1], [2, 3]]
    """
    table = plan.reads(dst_rank)
    ns, nd = _blocks(plan.src, "prefill"), _blocks(plan.dst, "decode")
    src_stride = np.array([r.block_bytes for r in plan.src.regions], np.int64)
    dst_stride = np.array([r.block_bytes for r in plan.dst.regions], np.int64)
    local = _expand(table.dst_region, table.dst_offset, table.nbytes, dst_stride[table.dst_region], nd)
    position = np.zeros(len(table), np.int64)
    remote = {}
    for rank in table.source_ranks:
        rows = np.flatnonzero(table.src_rank == rank)
        position[rows] = np.arange(len(rows))
        region = table.src_region[rows]
        remote[rank] = _expand(region, table.src_offset[rows], table.nbytes[rows], src_stride[region], ns)
    return PreparedLists(dst_rank, ns, nd, position, local, remote)


@attrs.frozen(eq=False)
class Staged:
    """One source rank's share of a transfer through a staging buffer of `nbytes`.

    `pack` copies the source's ranges into staging region 0 (on the source rank),
    `unpack` copies staging region 0 to the destination regions (on the destination).
    """

    src_rank: int
    nbytes: int
    pack: Transfer
    unpack: Transfer


def staged(transfer: Transfer) -> dict[int, Staged]:
    """Pack / unpack steps per source rank, ranges packed back to back in row order.

    >>> t = Transfer(0, [1, 1], [0, 0], [64, 8], [2, 2], [0, 100], [16, 4])
    >>> s = staged(t)[1]
    >>> s.nbytes, s.pack.dst_offset.tolist(), s.unpack.src_offset.tolist()
    (20, [0, 16], [0, 16])
    """
    out = {}
    for rank in transfer.source_ranks:
        part = transfer.for_source(rank)
        packed = np.cumsum(part.nbytes) - part.nbytes
        size = int(part.nbytes.sum())
        staging = (Region("staging", -1, 0, 0, size),)
        zeros = np.zeros(len(part), np.int64)
        pack = Transfer(rank, part.src_rank, part.src_region, part.src_offset, zeros, packed, part.nbytes,
                        src_regions=part.src_regions, dst_regions=staging)
        unpack = Transfer(part.dst_rank, np.full(len(part), part.dst_rank), zeros, packed, part.dst_region,
                          part.dst_offset, part.nbytes, src_regions=staging, dst_regions=part.dst_regions)
        out[rank] = Staged(rank, size, pack, unpack)
    return out


def split_ranges(src_addr, dst_addr, nbytes, max_bytes: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Cut every range longer than `max_bytes` into pieces of at most `max_bytes`.

    >>> [a.tolist() for a in split_ranges([100], [900], [10], 4)]
    [[100, 104, 108], [900, 904, 908], [4, 4, 2]]
    """
    src = np.asarray(src_addr, np.uint64)
    dst = np.asarray(dst_addr, np.uint64)
    n = np.asarray(nbytes, np.int64)
    if not len(n) or n.max() <= max_bytes:
        return src, dst, n
    pieces = np.maximum(-(-n // max_bytes), 1)
    row = np.repeat(np.arange(len(n)), pieces)
    first = np.cumsum(pieces) - pieces
    within = (np.arange(len(row)) - first[row]).astype(np.int64) * max_bytes
    size = np.minimum(n[row] - within, max_bytes)
    return src[row] + within.astype(np.uint64), dst[row] + within.astype(np.uint64), size


def source_ranks(transfer: Transfer) -> np.ndarray:
    """The source ranks a transfer reads, ascending (a count, not a sort: O(rows)).

    >>> source_ranks(Transfer(0, [3, 1, 3], [0, 0, 0], [0, 0, 0], [0, 0, 0], [0, 0, 0], [1, 1, 1])).tolist()
    [1, 3]
    """
    if not len(transfer):
        return np.zeros(0, np.int64)
    return np.flatnonzero(np.bincount(transfer.src_rank))


def _table(per_rank, ranks) -> np.ndarray:
    """2-D [rank, region] table of `per_rank[rank][region]` (0 where missing)."""
    width = max((len(per_rank[r]) for r in ranks), default=0)
    table = np.zeros((int(ranks.max()) + 1 if len(ranks) else 0, width), np.uint64)
    for r in ranks:
        row = np.asarray(per_rank[r], np.uint64)
        table[r, :len(row)] = row
    return table


def addresses(transfer: Transfer, src_bases, dst_bases) -> tuple[np.ndarray, np.ndarray]:
    """Absolute (src, dst) uint64 addresses, like `Transfer.bind` but one gather per
    side (no per-rank masks): what backends use on transfers of 10^5 rows.

    >>> t = Transfer(0, [1, 0], [0, 1], [64, 0], [2, 0], [8, 0], [16, 4])
    >>> [a.tolist() for a in addresses(t, {0: [0, 500], 1: [1000]}, [0, 0, 5000])]
    [[1064, 500], [5008, 0]]
    """
    ranks = source_ranks(transfer)
    missing = [int(r) for r in ranks if r not in src_bases]
    if missing:
        raise TransportError(f"no source base addresses for rank {missing[0]}", peer=f"rank {missing[0]}")
    src = _table(src_bases, ranks)[transfer.src_rank, transfer.src_region] + transfer.src_offset.astype(np.uint64)
    dst = np.asarray(dst_bases, np.uint64)[transfer.dst_region] + transfer.dst_offset.astype(np.uint64)
    return src, dst


def check_bounds(transfer: Transfer, src_sizes, dst_sizes) -> None:
    """Raise unless every row lies inside its registered source and destination buffer.

    `src_sizes[rank][region]` / `dst_sizes[region]` are buffer sizes in bytes (0 where
    the rank registered none). A transport copying out of bounds corrupts memory
    silently, so backends call this before touching any byte.

    >>> t = Transfer(0, [1], [0], [60], [0], [0], [8])
    >>> check_bounds(t, {1: [64]}, [8])
    Traceback (most recent call last):
    ...
    kvplan.backend_errors.TransportError: row 0 reads [60, 68) of source rank 1 region 0, which holds 64 bytes
    """
    if not len(transfer):
        return
    dst = np.asarray(dst_sizes, np.int64)
    bad = np.flatnonzero(transfer.dst_offset + transfer.nbytes > dst[transfer.dst_region])
    if len(bad):
        i = int(bad[0])
        raise TransportError(f"row {i} writes [{transfer.dst_offset[i]}, {transfer.dst_offset[i] + transfer.nbytes[i]}) "
                             f"of destination region {transfer.dst_region[i]}, which holds {dst[transfer.dst_region[i]]} bytes")
    ranks = source_ranks(transfer)
    for rank in ranks:
        if rank not in src_sizes:
            raise TransportError(f"no memory known for source rank {rank}", peer=f"rank {rank}")
    sizes = _table(src_sizes, ranks).astype(np.int64)[transfer.src_rank, transfer.src_region]
    bad = np.flatnonzero(transfer.src_offset + transfer.nbytes > sizes)
    if len(bad):
        i = int(bad[0])
        raise TransportError(f"row {i} reads [{transfer.src_offset[i]}, {transfer.src_offset[i] + transfer.nbytes[i]}) "
                             f"of source rank {transfer.src_rank[i]} region {transfer.src_region[i]}, which holds "
                             f"{sizes[i]} bytes")
