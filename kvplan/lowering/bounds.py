"""The gate before any byte moves: every row inside the memory it names, on both sides.

A transport that copies out of bounds corrupts memory silently, so every backend calls
`check_bounds` with the sizes it registered before it touches a byte: offsets and
lengths non-negative, regions known, ``offset + nbytes`` within the region.
"""

from __future__ import annotations

import numpy as np

from ..errors import BoundsError, KvplanError, PlanMismatchError
from .addresses import per_rank
from .transfer import Transfer


def _first_outside(offset: np.ndarray, nbytes: np.ndarray, size: np.ndarray) -> int | None:
    # `offset > size - nbytes`, not `offset + nbytes > size`: the sum wraps past 2**63
    # (an offset near 2**63 would pass); the difference cannot, for sizes >= 0 and
    # lengths >= 0, and a negative length is refused on its own
    with np.errstate(over="ignore"):
        bad = np.flatnonzero((offset < 0) | (nbytes < 0) | (offset > size - nbytes))
    return int(bad[0]) if len(bad) else None


def _sizes(region: np.ndarray, sizes, side: str, item: str = "row") -> np.ndarray:
    known = np.asarray(sizes, np.int64).reshape(-1)
    bad = np.flatnonzero((region < 0) | (region >= len(known)))
    if len(bad):
        raise BoundsError(f"{item} {int(bad[0])} names {side} region {int(region[bad[0]])}; "
                          f"{len(known)} regions are registered")
    return known[region]


def check_descriptors(descriptors, sizes, *, side: str) -> None:
    """Raise `BoundsError` unless every descriptor of a list (`region`, `offset`,
    `nbytes` columns, e.g. a `DescriptorList`) lies inside its region of `sizes` bytes;
    `side` names the list in the message.

    >>> from kvplan.lowering import DescriptorList
    >>> check_descriptors(DescriptorList(region=[0, 0], offset=[0, 60], nbytes=[8, 8]), [64], side="remote rank 1")
    Traceback (most recent call last):
    ...
    kvplan.errors.BoundsError: descriptor 1 covers [60, 68) of remote rank 1 region 0, which holds 64 bytes
    """
    if not len(descriptors):
        return
    size = _sizes(descriptors.region, sizes, side, "descriptor")
    i = _first_outside(descriptors.offset, descriptors.nbytes, size)
    if i is not None:
        raise BoundsError(f"descriptor {i} covers [{int(descriptors.offset[i])}, "
                          f"{int(descriptors.offset[i]) + int(descriptors.nbytes[i])}) of {side} region "
                          f"{descriptors.region[i]}, which holds {size[i]} bytes")


def check_bounds(transfer: Transfer, src_sizes, dst_sizes) -> None:
    """Raise `BoundsError` unless every row lies inside its registered source and
    destination buffer. `src_sizes[rank][region]` / `dst_sizes[region]` are buffer sizes
    in bytes (0 where the rank registered none).

    >>> t = Transfer(dst_rank=0, src_rank=[1], src_region=[0], src_offset=[60], dst_region=[0], dst_offset=[0],
    ...              nbytes=[8])
    >>> check_bounds(t, {1: [64]}, [8])
    Traceback (most recent call last):
    ...
    kvplan.errors.BoundsError: row 0 reads [60, 68) of source rank 1 region 0, which holds 64 bytes
    """
    if not len(transfer):
        return
    dst = _sizes(transfer.dst_region, dst_sizes, "destination")
    i = _first_outside(transfer.dst_offset, transfer.nbytes, dst)
    if i is not None:
        start, end = int(transfer.dst_offset[i]), int(transfer.dst_offset[i]) + int(transfer.nbytes[i])
        raise BoundsError(f"row {i} writes [{start}, {end}) "
                          f"of destination region {transfer.dst_region[i]}, which holds {dst[i]} bytes")
    if transfer.src_rank.min() < 0 or transfer.src_region.min() < 0:
        raise BoundsError(f"rows name source rank {int(transfer.src_rank.min())} / region "
                          f"{int(transfer.src_region.min())}: ranks and regions are >= 0")
    try:
        src = per_rank(transfer.src_rank, transfer.src_region, src_sizes, dtype=np.int64)
    except KvplanError as error:  # an unknown rank or region is memory nobody registered
        raise BoundsError(f"rows read memory that is not registered: {error}") from None
    i = _first_outside(transfer.src_offset, transfer.nbytes, src)
    if i is not None:
        start, end = int(transfer.src_offset[i]), int(transfer.src_offset[i]) + int(transfer.nbytes[i])
        raise BoundsError(f"row {i} reads [{start}, {end}) "
                          f"of source rank {transfer.src_rank[i]} region {transfer.src_region[i]}, which holds "
                          f"{src[i]} bytes")


def check_transfer(transfer: Transfer, src_sizes, dst_sizes, *, fingerprint: str | None = None,
                   dst_rank: int | None = None) -> None:
    """The gate every backend runs before a byte moves: the Transfer was lowered from
    the plan and for the decode rank the backend was prepared for (when it knows them;
    a hand-built Transfer has no fingerprint and passes that part), and every row lies
    inside registered memory on both sides (`check_bounds`).

    >>> t = Transfer(dst_rank=1, src_rank=[0], src_region=[0], src_offset=[0], dst_region=[0], dst_offset=[0],
    ...              nbytes=[8], plan_fingerprint="0123456789abcdef")
    >>> check_transfer(t, {0: [64]}, [64], fingerprint="0123456789abcdef", dst_rank=0)
    Traceback (most recent call last):
    ...
    kvplan.errors.PlanMismatchError: Transfer lowered for decode rank 1 handed to decode rank 0
    """
    if dst_rank is not None and transfer.dst_rank != dst_rank:
        raise PlanMismatchError(f"Transfer lowered for decode rank {transfer.dst_rank} handed to decode rank {dst_rank}")
    if fingerprint is not None and transfer.plan_fingerprint and transfer.plan_fingerprint != fingerprint:
        raise PlanMismatchError(f"Transfer lowered from plan {transfer.plan_fingerprint} handed to a backend prepared "
                                f"for plan {fingerprint}")
    check_bounds(transfer, src_sizes, dst_sizes)
