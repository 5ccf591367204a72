"""Coalescing of byte-range copies: rows contiguous on both sides become one (a transport pays per
descriptor, so fewer, longer rows are what makes a transfer fast)."""

from __future__ import annotations

import numpy as np


def run_starts(keys: list[np.ndarray], src_offset: np.ndarray, dst_offset: np.ndarray,
               nbytes: np.ndarray) -> np.ndarray:
    """Indices of rows that start a new run, for rows already in copy order.

    Row i continues row i-1 when every key column is equal and both its source and its
    destination bytes follow on directly. Merging such rows preserves the byte mapping.

    >>> import numpy as np
    >>> run_starts([np.zeros(3, np.int64)], np.array([0, 4, 9]), np.array([0, 4, 8]), np.array([4, 4, 4]))
    array([0, 2])
    """
    n = len(nbytes)
    if n == 0:
        return np.zeros(0, np.int64)
    cont = np.empty(n, dtype=bool)
    cont[0] = False
    prev_end_src = src_offset[:-1] + nbytes[:-1]
    np.equal(src_offset[1:], prev_end_src, out=cont[1:])
    cont[1:] &= dst_offset[1:] == dst_offset[:-1] + nbytes[:-1]
    for key in keys:
        cont[1:] &= key[1:] == key[:-1]
    return np.flatnonzero(~cont)


def merged_nbytes(nbytes: np.ndarray, starts: np.ndarray) -> np.ndarray:
    """Total bytes of each run beginning at `starts` (see `run_starts`).

    >>> merged_nbytes(np.array([4, 4, 4]), np.array([0, 2])).tolist()
    [8, 4]
    """
    if len(starts) == 0:
        return np.zeros(0, np.int64)
    return np.add.reduceat(nbytes, starts)


def cut_rows(nbytes: np.ndarray, max_bytes: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Cut rows longer than `max_bytes` into pieces (the inverse of coalescing): piece p
    is bytes ``[within[p], within[p] + size[p])`` of row ``row[p]``.

    >>> [a.tolist() for a in cut_rows(np.array([10, 3]), 4)]
    [[0, 0, 0, 1], [0, 4, 8, 0], [4, 4, 2, 3]]
    """
    n = np.asarray(nbytes, np.int64)
    pieces = np.maximum(-(-n // max_bytes), 1)
    row = np.repeat(np.arange(len(n)), pieces)
    within = (np.arange(len(row)) - np.repeat(np.cumsum(pieces) - pieces, pieces)).astype(np.int64) * max_bytes
    return row, within, np.minimum(n[row] - within, max_bytes)


def consecutive_runs(values) -> list[tuple[int, int]]:
    """(first, last) of each run of consecutive integers among `values` (sorted, duplicates
    once): what every "0-3, 8" in kvplan's messages and summaries is made of.

    >>> consecutive_runs([8, 0, 1, 2, 3, 3])
    [(0, 3), (8, 8)]
    """
    runs: list[list[int]] = []
    for v in sorted({int(v) for v in values}):
        if runs and v == runs[-1][1] + 1:
            runs[-1][1] = v
        else:
            runs.append([v, v])
    return [(a, b) for a, b in runs]
