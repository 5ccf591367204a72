"""Binding: region-relative rows to absolute addresses, the one rule every path uses.

A row's address is ``base[rank][region] + offset`` (a source side, several ranks) or
``base[region] + offset`` (this rank's side); bases are what a transport registered.
`Transfer.bind`, descriptor lists and every backend go through these two functions.
"""

from __future__ import annotations

import numpy as np

from ..errors import RankError, SpecError


def _values(values, dtype, what: str) -> np.ndarray:
    """`values` as a 1-D array of `dtype`: integers >= 0 that it holds exactly (a float
    would be truncated, a negative base wrap around to another address)."""
    try:
        given = np.asarray(values)
    except (ValueError, TypeError, OverflowError):
        given = None
    if given is None or (given.size and (given.dtype.kind not in "iu" or given.min() < 0
                                         or given.max() > np.iinfo(dtype).max)):
        raise SpecError(f"{what} must be integers >= 0, got {values!r}"[:300])
    return given.astype(dtype).reshape(-1)


def bind(region: np.ndarray, offset: np.ndarray, bases) -> np.ndarray:
    """Absolute uint64 address of every row: ``bases[region] + offset``.

    >>> bind(np.array([0, 1]), np.array([16, 0]), [1000, 5000]).tolist()
    [1016, 5000]
    """
    base = _values(bases, np.uint64, "bases")
    if len(region) and (region.min() < 0 or region.max() >= len(base)):
        bad = int(region.min()) if region.min() < 0 else int(region.max())
        raise SpecError(f"bases of {len(base)} regions given, rows use region {bad}")
    return base[region] + offset.astype(np.uint64)


def per_rank(rank: np.ndarray, region: np.ndarray, values_by_rank, *, dtype=np.uint64) -> np.ndarray:
    """``values_by_rank[rank][region]`` for every row, in one gather: region bases or
    sizes of several ranks (a dict or a 2-D sequence by rank).

    >>> per_rank(np.array([1, 0]), np.array([0, 1]), {0: [0, 500], 1: [1000]}).tolist()
    [1000, 500]
    """
    if not len(rank):
        return np.zeros(0, dtype)
    if not isinstance(values_by_rank, (dict, list, tuple, np.ndarray)):
        raise SpecError(f"source bases (or sizes) are a dict or a sequence by rank, got {values_by_rank!r}"[:300])
    # the ranks in use, not range(max rank): a rank id is a label, however large
    ranks = np.unique(rank)
    missing = [int(r) for r in ranks if int(r) not in values_by_rank] if isinstance(values_by_rank, dict) else \
        [int(r) for r in ranks if not 0 <= r < len(values_by_rank)]
    if missing:
        raise RankError(f"no source base addresses (or sizes) for rank {missing[0]}")
    rows = [_values(values_by_rank[int(r)], dtype, f"bases (or sizes) of rank {int(r)}") for r in ranks]
    width = max(len(row) for row in rows)
    table = np.zeros((len(ranks), width), dtype)
    for i, row in enumerate(rows):
        table[i, :len(row)] = row
    if region.min() < 0 or region.max() >= width:
        bad = int(region.min()) if region.min() < 0 else int(region.max())
        raise SpecError(f"values of {width} regions given, rows use region {bad}")
    return table[np.searchsorted(ranks, rank), region]


def bind_ranked(rank: np.ndarray, region: np.ndarray, offset: np.ndarray, bases_by_rank) -> np.ndarray:
    """Absolute uint64 address of every row of several ranks:
    ``bases_by_rank[rank][region] + offset``.

    >>> bind_ranked(np.array([1, 0]), np.array([0, 1]), np.array([64, 0]), {0: [0, 500], 1: [1000]}).tolist()
    [1064, 500]
    """
    return per_rank(rank, region, bases_by_rank) + offset.astype(np.uint64)
