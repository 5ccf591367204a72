"""Which source rank a destination rank reads each global index from.

A destination rank needs the indices it holds of a TP-sharded axis; several source
ranks may hold each (replicated KV heads, an MLA latent, replicated Mamba groups).
Reading from the source ranks whose share of the TP axis overlaps the destination's
keeps each source's load even; among those, and otherwise, the lowest-numbered holder
wins, so a replicated index is read once, from a deterministic rank.
"""

from __future__ import annotations

from ..errors import ShardingError
from ..spec.placement import overlap


def preferred_sources(dst_rank: int, dst_tp: int, src_tp: int) -> range:
    """Source ranks whose share of the TP axis overlaps the destination rank's share.

    Decode rank r of 8 reads from prefill rank r//4 of 2; decode rank r of 2 reads
    from prefill ranks 4r..4r+3 of 8:

    >>> list(preferred_sources(5, 8, 2)), list(preferred_sources(1, 2, 8))
    ([1], [4, 5, 6, 7])
    """
    first = dst_rank * src_tp // dst_tp
    last = -(-(dst_rank + 1) * src_tp // dst_tp)  # ceil
    return range(first, max(last, first + 1))


def choose_source(index: int, holders: list[tuple[int, int, int]], preferred: range) -> int:
    """One source rank holding global `index` among ``holders`` = [(rank, lo, hi)]:
    the lowest-numbered holder inside `preferred`, else the lowest-numbered holder.

    >>> holders = [(0, 0, 1), (1, 0, 1), (2, 1, 2), (3, 1, 2)]   # 2 heads over TP 4
    >>> choose_source(1, holders, range(3, 4)), choose_source(0, holders, range(3, 4))
    (3, 0)
    """
    fallback = None
    for rank, lo, hi in sorted(holders):
        if lo <= index < hi:
            if rank in preferred:
                return rank
            if fallback is None:
                fallback = rank
    if fallback is None:
        raise ShardingError(f"no source rank holds index {index}; holders {holders}")
    return fallback


def source_runs(lo: int, hi: int, holders: list[tuple[int, int, int]], preferred: range) -> list[tuple[int, int, int]]:
    """The indices ``[lo, hi)`` as maximal runs ``(rank, start, stop)``, each read from
    the source `choose_source` picks for its indices, found by intersecting intervals:
    preferred holders claim what they overlap first, then any holder, lowest rank first.

    >>> source_runs(0, 4, [(0, 0, 2), (1, 2, 4)], range(0, 2))
    [(0, 0, 2), (1, 2, 4)]
    >>> source_runs(0, 2, [(0, 0, 2), (1, 0, 2)], range(1, 2))   # replicated: the preferred copy
    [(1, 0, 2)]
    """
    missing, claimed = [(lo, hi)], []
    ordered = sorted(holders)
    for pick in (lambda rank: rank in preferred, lambda rank: True):
        for rank, a, b in ordered:
            if not missing:  # everything claimed: the remaining holders cannot change the runs
                break
            if not pick(rank):
                continue
            left = []
            for piece in missing:
                common = overlap(piece, (a, b))
                if common is None:
                    left.append(piece)
                    continue
                claimed.append((rank, *common))
                left += [part for part in ((piece[0], common[0]), (common[1], piece[1])) if part[0] < part[1]]
            missing = left
    if missing:
        raise ShardingError(f"no source rank holds indices {missing}; holders {holders}")
    runs: list[tuple[int, int, int]] = []
    for rank, start, stop in sorted(claimed, key=lambda run: run[1]):
        if runs and runs[-1][0] == rank and runs[-1][2] == start:
            runs[-1] = (rank, runs[-1][1], stop)
        else:
            runs.append((rank, start, stop))
    return runs
