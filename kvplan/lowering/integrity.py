"""Integrity digests: one 64-bit digest per copied range, computed where the bytes are.

A range's digest is the wrapping sum, over its bytes, of a 64-bit mix of (position in
the range, byte value):

    digest(b_0 .. b_{n-1}) = sum_i mix(256 * i + b_i)  mod 2**64
    mix(x) = splitmix64's finaliser of x + 0x9E3779B97F4A7C15

Any one changed, missing or misplaced byte changes the digest (the mix is a bijection of
64-bit words, and a sum of independent mixes is order-free, so a GPU computes it with one
parallel reduction as easily as NumPy here). Integrity mode digests every range on the
source and on the destination after the copy; ranges whose digests differ name the
corrupted rows. `range_digests` is the reference every backend's digest must equal.

>>> data = np.frombuffer(b"kvplan-kvplan", np.uint8)
>>> d = range_digests([data], np.array([0, 0]), np.array([0, 7]), np.array([6, 6]))
>>> bool(d[0] == d[1]), bool(range_digests([data], [0], [0], [5])[0] != d[0])
(True, True)
"""

from __future__ import annotations

import numpy as np

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_M1, _M2 = np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB)


def mix(x: np.ndarray) -> np.ndarray:
    """splitmix64's output function of x + golden ratio (uint64, wrapping).

    >>> int(mix(np.zeros(1, np.uint64))[0]) == 0xE220A8397B1DCDAF
    True
    """
    z = np.asarray(x, np.uint64) + _GOLDEN
    z = (z ^ (z >> np.uint64(30))) * _M1
    z = (z ^ (z >> np.uint64(27))) * _M2
    return z ^ (z >> np.uint64(31))


def range_digests(buffers, region, offset, nbytes) -> np.ndarray:
    """The digest of bytes ``[offset[i], offset[i] + nbytes[i])`` of ``buffers[region[i]]``
    for every row i (buffers: 1-D uint8 arrays or anything NumPy views as bytes)."""
    region, offset, nbytes = (np.asarray(a, np.int64).reshape(-1) for a in (region, offset, nbytes))
    out = np.zeros(len(nbytes), np.uint64)
    views = {}
    for i in np.flatnonzero(nbytes > 0):
        r = int(region[i])
        if r not in views:
            views[r] = np.asarray(buffers[r]).reshape(-1).view(np.uint8)
        chunk = views[r][offset[i]:offset[i] + nbytes[i]].astype(np.uint64)
        position = np.arange(len(chunk), dtype=np.uint64) << np.uint64(8)
        with np.errstate(over="ignore"):
            out[i] = np.add.reduce(mix(position | chunk), dtype=np.uint64)
    return out
