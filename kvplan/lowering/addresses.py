"""Binding: region-relative rows to absolute addresses, the one rule every path uses.

A row's address is ``base[rank][region] + offset`` (a source side, several ranks) or
``base[region] + offset`` (this rank's side); bases are what a transport registered.
`Transfer.bind`, descriptor lists and every backend go through these two functions.
"""

from __future__ import annotations

import numpy as np

from ..errors import RankError, SpecError


def bind(region: np.ndarray, offset: np.ndarray, bases) -> np.ndarray:
    """Absolute uint64 address of every row: ``bases[region] + offset``.

    >>> bind(np.array([0, 1]), np.array([16, 0]), [1000, 5000]).tolist()
    [1016, 5000]
    """
    base = np.asarray(bases, dtype=np.uint64).reshape(-1)
    if len(region) and region.max() >= len(base):
        raise SpecError(f"bases of {len(base)} regions given, rows use region {int(region.max())}")
    return base[region] + offset.astype(np.uint64)


def per_rank(rank: np.ndarray, region: np.ndarray, values_by_rank, *, dtype=np.uint64) -> np.ndarray:
    """``values_by_rank[rank][region]`` for every row, in one gather: region bases or
    sizes of several ranks (a dict or a 2-D sequence by rank).

    >>> per_rank(np.array([1, 0]), np.array([0, 1]), {0: [0, 500], 1: [1000]}).tolist()
    [1000, 500]
    """
    if not len(rank):
        return np.zeros(0, dtype)
    ranks = np.flatnonzero(np.bincount(rank))
    missing = [int(r) for r in ranks if r not in values_by_rank] if isinstance(values_by_rank, dict) else \
        [int(r) for r in ranks if r >= len(values_by_rank)]
    if missing:
        raise RankError(f"no source base addresses (or sizes) for rank {missing[0]}")
    width = max(len(values_by_rank[int(r)]) for r in ranks)
    table = np.zeros((int(ranks.max()) + 1, width), dtype)
    for r in ranks:
        row = np.asarray(values_by_rank[int(r)], dtype).reshape(-1)
        table[r, :len(row)] = row
    if region.max() >= width:
        raise SpecError(f"values of {width} regions given, rows use region {int(region.max())}")
    return table[rank, region]


def bind_ranked(rank: np.ndarray, region: np.ndarray, offset: np.ndarray, bases_by_rank) -> np.ndarray:
    """Absolute uint64 address of every row of several ranks:
    ``bases_by_rank[rank][region] + offset``.

    >>> bind_ranked(np.array([1, 0]), np.array([0, 1]), np.array([64, 0]), {0: [0, 500], 1: [1000]}).tolist()
    [1064, 500]
    """
    return per_rank(rank, region, bases_by_rank) + offset.astype(np.uint64)
