"""Descriptor shapes transports need, so backends compute no offsets.

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

Addresses come from the one binding rule of `kvplan.lowering.addresses`.
"""

from __future__ import annotations

import attrs
import numpy as np

from ..errors import SpecError
from ..layout.memory import Region
from ..planning.ranges import cut_rows
from ..planning.rows import RowTable, column
from ..spec.limits import check_count
from .addresses import bind
from .lower import request_rows
from .request import request_blocks
from .transfer import Transfer


@attrs.frozen(kw_only=True)
class DescriptorList(RowTable):
    """Byte ranges relative to region bases; ``bind(bases)`` gives absolute addresses.

    >>> d = DescriptorList(region=[0, 1], offset=[16, 0], nbytes=[8, 8])
    >>> d.bind([1000, 5000]).tolist()
    [1016, 5000]
    """

    region: np.ndarray = column()
    offset: np.ndarray = column()
    nbytes: np.ndarray = column()

    def bind(self, bases) -> np.ndarray:
        """Absolute uint64 start address of every descriptor (`bases[region] + offset`)."""
        return bind(self.region, self.offset, bases)


@attrs.frozen(eq=False, kw_only=True)
class PreparedLists:
    """Descriptor lists of one decode rank (see `prepared_lists`).

    `position[r]` is table row r's place among the rows of its source rank;
    `local` holds row r, decode block b at index ``r * dst_blocks + b`` and
    `remote[s]` holds it at ``position[r] * src_blocks + b`` (`prepared_lists` builds
    them, with an example).
    """

    dst_rank: int
    src_blocks: int
    dst_blocks: int
    position: np.ndarray = column()
    local: DescriptorList
    remote: dict
    # per source rank: ((layer group, int32 local index of block 0 of each of its rows in
    # ascending row order, int32 remote index of the same), ...)
    by_rank: dict = attrs.field(factory=dict)

    def indices(self, plan, src_blocks, dst_blocks) -> dict[int, tuple[np.ndarray, np.ndarray]]:
        """{source rank: (local int32 indices, remote int32 indices)} for one request.

        Row by row (rows of one layer group together), each row's blocks in request
        order: runs of consecutive ids (what a block allocator mostly hands out) are
        consecutive indices on both sides, which NIXL merges.

        A request whose groups pair block for block (one block per span on both sides,
        no window, no partial span) is computed by arithmetic, ``row * blocks + id`` for
        every row of the group, which is what a serving engine's own descriptor ids
        cost. Other requests go through `request_rows`.
        """
        request = request_blocks(plan, self.dst_rank, src_blocks, dst_blocks)
        if request.windowed or any(g.blocks_per_span != (1, 1) or g.partial for g in request.groups):
            return self._indices_of_rows(plan, src_blocks, dst_blocks)
        # int32 throughout: prepared_lists refused lists past int32 indices
        ids = [(g.dst_ids.astype(np.int32), g.src_ids.astype(np.int32)) for g in request.groups]
        out = {}
        for rank, parts in self.by_rank.items():
            local, remote = [], []
            for group, local_base, remote_base in parts:
                dst_ids, src_ids = ids[group]
                if len(dst_ids):
                    local.append((local_base[:, None] + dst_ids[None, :]).reshape(-1))
                    remote.append((remote_base[:, None] + src_ids[None, :]).reshape(-1))
            if local:
                out[rank] = (local[0], remote[0]) if len(local) == 1 else (np.concatenate(local),
                                                                           np.concatenate(remote))
        return out

    def _indices_of_rows(self, plan, src_blocks, dst_blocks) -> dict[int, tuple[np.ndarray, np.ndarray]]:
        """`indices` of any request, from its `request_rows`, in the same order."""
        req = request_rows(plan, self.dst_rank, src_blocks, dst_blocks)
        request = request_blocks(plan, self.dst_rank, src_blocks, dst_blocks)
        src_rank = req.table.src_rank[req.row]
        group = np.array([plan.dst.group_of(int(layer)) for layer in req.table.layer], np.int64)[req.row] \
            if len(req.row) else req.row
        # each copy's place in its group's decode list (ids of a group are distinct)
        place = np.zeros(len(req.row), np.int64)
        for g, paired in enumerate(request.groups):
            where = np.full(self.dst_blocks, -1, np.int64)
            where[paired.dst_ids[paired.dst_ids >= 0]] = np.flatnonzero(paired.dst_ids >= 0)
            mine = group == g
            place[mine] = where[req.dst_block_id[mine]]
        local = req.row * self.dst_blocks + req.dst_block_id
        remote = self.position[req.row] * self.src_blocks + req.src_block_id
        out = {}
        for rank in np.unique(src_rank).tolist():
            mask = src_rank == rank
            order = np.lexsort((place[mask], req.row[mask], group[mask]))
            out[rank] = (local[mask][order].astype(np.int32), remote[mask][order].astype(np.int32))
        return out


def _blocks(engine, side: str) -> int:
    if engine.num_blocks is None:
        raise SpecError(f"the {side} engine's num_blocks is None: prepared descriptor lists need it")
    return engine.num_blocks


def _expand(region, offset, nbytes, stride, blocks: int) -> DescriptorList:
    """Each row repeated for blocks 0..blocks-1 (row-major: a row's blocks are consecutive)."""
    block = np.arange(blocks, dtype=np.int64)[None, :]
    return DescriptorList(region=np.repeat(region, blocks), offset=(offset[:, None] + block * stride[:, None]).reshape(-1),
                          nbytes=np.repeat(nbytes, blocks))


def prepared_lists(plan, dst_rank: int) -> PreparedLists:
    """Descriptor lists for every read `dst_rank` can make, built once.

    >>> from kvplan.spec import AttentionSpec, EngineSpec, ModelSpec
    >>> from kvplan.planning import plan_tables
    >>> m = ModelSpec(name="m", layers=(AttentionSpec(num_kv_heads=8, head_dim=128),))
    >>> p = plan_tables(EngineSpec(model=m, tp=2, num_blocks=4), EngineSpec(model=m, tp=4, num_blocks=4))
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
    src_stride = np.array([r.block_bytes for r in plan.src_regions], np.int64)
    dst_stride = np.array([r.block_bytes for r in plan.dst_regions], np.int64)
    # NIXL takes int32 descriptor indices: a list longer than that cannot be indexed
    longest = max([len(table) * nd] + [int((table.src_rank == r).sum()) * ns for r in table.source_ranks])
    if longest > np.iinfo(np.int32).max:
        raise SpecError(f"prepared descriptor lists of decode rank {dst_rank} would hold {longest:,} descriptors "
                        f"({len(table):,} rows x {max(ns, nd):,} blocks), past int32 indices; lower requests instead")
    local = _expand(table.dst_region, table.dst_offset, table.nbytes, dst_stride[table.dst_region], nd)
    position = np.zeros(len(table), np.int64)
    group = np.array([plan.dst.group_of(int(layer)) for layer in table.layer], np.int64)
    remote, by_rank = {}, {}
    for rank in table.source_ranks:
        rows = np.flatnonzero(table.src_rank == rank)
        position[rows] = np.arange(len(rows))
        region = table.src_region[rows]
        remote[rank] = _expand(region, table.src_offset[rows], table.nbytes[rows], src_stride[region], ns)
        # per group: each row's first index in the local list and in this rank's remote list
        by_rank[rank] = tuple((int(g), (rows[group[rows] == g] * nd).astype(np.int32),
                               (position[rows[group[rows] == g]] * ns).astype(np.int32))
                              for g in np.unique(group[rows]).tolist())
    return PreparedLists(dst_rank=dst_rank, src_blocks=ns, dst_blocks=nd, position=position, local=local,
                         remote=remote, by_rank=by_rank)


@attrs.frozen(eq=False, kw_only=True)
class Staged:
    """One source rank's share of a transfer through a staging buffer of `nbytes`.

    `pack` copies the source's ranges into staging region 0 (on the source rank),
    `unpack` copies staging region 0 to the destination regions (on the destination);
    `staged` builds them, with an example.
    """

    src_rank: int
    nbytes: int
    pack: Transfer
    unpack: Transfer


def staged(transfer: Transfer) -> dict[int, Staged]:
    """Pack / unpack steps per source rank, ranges packed back to back in row order.

    >>> t = Transfer(dst_rank=0, src_rank=[1, 1], src_region=[0, 0], src_offset=[64, 8], dst_region=[2, 2],
    ...              dst_offset=[0, 100], nbytes=[16, 4])
    >>> s = staged(t)[1]
    >>> s.nbytes, s.pack.dst_offset.tolist(), s.unpack.src_offset.tolist()
    (20, [0, 16], [0, 16])
    """
    out = {}
    for rank in transfer.source_ranks:
        part = transfer.for_source(rank)
        packed = np.cumsum(part.nbytes) - part.nbytes
        size = int(part.nbytes.sum())
        staging = (Region(name="staging", layer=-1, slot=0, stage=0, block_bytes=size),)
        zeros = np.zeros(len(part), np.int64)
        pack = Transfer(dst_rank=rank, src_rank=part.src_rank, src_region=part.src_region,
                        src_offset=part.src_offset, dst_region=zeros, dst_offset=packed, nbytes=part.nbytes,
                        src_regions=part.src_regions, dst_regions=staging, plan_fingerprint=part.plan_fingerprint)
        unpack = Transfer(dst_rank=part.dst_rank, src_rank=np.full(len(part), part.dst_rank), src_region=zeros,
                          src_offset=packed, dst_region=part.dst_region, dst_offset=part.dst_offset,
                          nbytes=part.nbytes, src_regions=staging, dst_regions=part.dst_regions,
                          plan_fingerprint=part.plan_fingerprint)
        out[rank] = Staged(src_rank=rank, nbytes=size, pack=pack, unpack=unpack)
    return out


def split_ranges(src_addr, dst_addr, nbytes, max_bytes: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Cut every range longer than `max_bytes` into pieces of at most `max_bytes`.

    >>> [a.tolist() for a in split_ranges([100], [900], [10], 4)]
    [[100, 104, 108], [900, 904, 908], [4, 4, 2]]
    """
    check_count(max_bytes, "max_bytes")
    src = np.asarray(src_addr, np.uint64)
    dst = np.asarray(dst_addr, np.uint64)
    n = np.asarray(nbytes, np.int64)
    if not len(n) or n.max() <= max_bytes:
        return src, dst, n
    row, within, size = cut_rows(n, max_bytes)
    return src[row] + within.astype(np.uint64), dst[row] + within.astype(np.uint64), size


def source_ranks(transfer: Transfer) -> np.ndarray:
    """The source ranks a transfer reads, ascending (a count, not a sort: O(rows)).

    >>> t = Transfer(dst_rank=0, src_rank=[3, 1, 3], src_region=[0, 0, 0], src_offset=[0, 0, 0],
    ...              dst_region=[0, 0, 0], dst_offset=[0, 0, 0], nbytes=[1, 1, 1])
    >>> source_ranks(t).tolist()
    [1, 3]
    """
    if not isinstance(transfer, Transfer):
        raise SpecError(f"source_ranks() takes a Transfer, got {type(transfer).__name__}")
    if not len(transfer):
        return np.zeros(0, np.int64)
    if transfer.src_rank.max() > 4 * len(transfer) + 1024:  # a count would allocate up to the largest id
        return np.unique(transfer.src_rank)
    return np.flatnonzero(np.bincount(transfer.src_rank))
