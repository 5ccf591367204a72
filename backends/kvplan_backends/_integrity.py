"""Integrity mode: digests of copied ranges where the bytes are, and their comparison.

Every digest is `kvplan.lowering.range_digests`' formula: NumPy on host memory, one
CUDA kernel launch (`_gpucopy.digest_ranges`) on device memory. A source digests its
rows (`source_digests`) after its pre steps and before its bytes leave; the
destination digests the same rows' destination ranges after the copy (`verify`) and
raises `kvplan.TransferIntegrityError` naming the rows whose digests differ.

>>> import numpy as np
>>> from kvplan import Transfer
>>> from ._memory import Registration
>>> src = Registration([np.arange(16, dtype=np.uint8)])
>>> dst = Registration([np.zeros(16, np.uint8)])
>>> t = Transfer(dst_rank=0, src_rank=[1, 1], src_region=[0, 0], src_offset=[0, 8], dst_region=[0, 0],
...              dst_offset=[0, 8], nbytes=[4, 4])
>>> sent = {1: source_digests(src, t.for_source(1))}
>>> dst.buffers[0][:4] = src.buffers[0][:4]; dst.buffers[0][8:12] = 99   # row 1 arrives wrong
>>> verify(dst, t, expected(t, sent), request="r1")
Traceback (most recent call last):
...
kvplan.transport.TransferIntegrityError: integrity check: 1 of 2 copied rows differ from the source [peer rank 1, request 'r1', rows 1]
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from kvplan.errors import SpecError
from kvplan.lowering import range_digests
from kvplan.transport import TransferIntegrityError

from ._memory import HOST, Registration


def digests(registration: Registration, region, offset, nbytes, stream=None) -> np.ndarray:
    """Digests of ranges of a registration's buffers (host: NumPy; GPU: one launch)."""
    memory = registration.memory
    if memory.device == HOST:
        return range_digests(registration.buffers, region, offset, nbytes)
    import cupy

    from . import _gpucopy

    region, offset = np.asarray(region, np.int64), np.asarray(offset, np.int64)
    addr = np.asarray(memory.bases, np.uint64)[region] + offset.astype(np.uint64) if len(region) else \
        np.zeros(0, np.uint64)
    with cupy.cuda.Device(memory.device):
        stream = stream or cupy.cuda.get_current_stream()
        return _gpucopy.digest_ranges(cupy, memory.device, addr, nbytes, stream)


def source_digests(registration: Registration, rows, stream=None) -> np.ndarray:
    """A source rank's digests of its `rows` (a Transfer read from it), in row order.
    Tests wrap this function to flip a byte between the digest and the copy."""
    return digests(registration, rows.src_region, rows.src_offset, rows.nbytes, stream)


def merge(check) -> dict[int, np.ndarray]:
    """`execute(..., check=...)`'s digests: one mapping {source rank: digests} or one
    Completion (its ``digests``), or a sequence of them, merged."""
    if isinstance(check, Mapping) or hasattr(check, "digests"):
        parts = [check]
    else:
        try:
            parts = list(check)
        except TypeError:
            raise SpecError(f"check= takes True, or the digests of serve(..., check=True) (a mapping from source "
                            f"rank to digests, or Completions): got {type(check).__name__}") from None
    out: dict[int, np.ndarray] = {}
    for part in parts:
        part = getattr(part, "digests", part)
        if not isinstance(part, Mapping):
            raise SpecError(f"check= takes True, or the digests of serve(..., check=True) (a mapping from source "
                            f"rank to digests, or Completions): got {type(part).__name__}")
        for rank, values in part.items():
            out[int(rank)] = np.asarray(values, np.uint64).reshape(-1)
    return out


def expected(transfer, digests_by_rank: Mapping[int, np.ndarray]) -> np.ndarray:
    """Per row of `transfer`, the digest its source sent (rows in order per rank)."""
    out = np.zeros(len(transfer), np.uint64)
    for rank in transfer.source_ranks:
        rows = np.flatnonzero(transfer.src_rank == rank)
        got = digests_by_rank.get(int(rank))
        if got is None or len(got) != len(rows):
            have = "none" if got is None else f"{len(got)}"
            raise SpecError(f"check=: source rank {int(rank)} reads {len(rows)} rows of this Transfer but its digests "
                            f"number {have}; pass every source rank's serve(..., check=True).digests for this request")
        out[rows] = got
    return out


def verify(registration: Registration, transfer, want: np.ndarray, *, request: str, stream=None) -> None:
    """Digest `transfer`'s destination ranges in `registration` and compare with `want`."""
    if not len(transfer):
        return
    got = digests(registration, transfer.dst_region, transfer.dst_offset, transfer.nbytes, stream)
    bad = np.flatnonzero(got != want)
    if len(bad):
        ranks = sorted({int(r) for r in transfer.src_rank[bad]})
        raise TransferIntegrityError(
            f"integrity check: {len(bad)} of {len(transfer)} copied rows differ from the source",
            rows=bad, peer=", ".join(f"rank {r}" for r in ranks), request=request)
