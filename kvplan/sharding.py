"""Which global indices of a sharded axis a TP rank holds, and whom to read them from.

Conventions (DESIGN.md §1): with `total` heads (or channels, groups) over `tp` ranks,

* ``tp <= total``: rank r holds ``[r*total/tp, (r+1)*total/tp)`` (total must divide);
* ``tp > total``: the heads are replicated; rank r holds the single head
  ``r*total // tp`` (tp must be a multiple of total);
* replicated components (MLA latent) are held whole by every rank.

Rank-by-rank, 2 KV heads:

    tp=1: r0 [0,2)
    tp=2: r0 [0,1)  r1 [1,2)
    tp=4: r0 [0,1)  r1 [0,1)  r2 [1,2)  r3 [1,2)
"""

from __future__ import annotations

from .errors import ShardingError


def held_interval(total: int, tp: int, rank: int, *, what: str = "heads") -> tuple[int, int]:
    """Global ``[lo, hi)`` of a `total`-long axis held by `rank` of `tp`.

    >>> held_interval(8, 2, 1), held_interval(2, 4, 3)
    ((4, 8), (1, 2))
    """
    if tp <= total:
        if total % tp:
            raise ShardingError(f"{total} {what} cannot be split over TP {tp}: {total} % {tp} = {total % tp}")
        per_rank = total // tp
        return rank * per_rank, (rank + 1) * per_rank
    if tp % total:
        raise ShardingError(
            f"TP {tp} > {total} {what} replicates each of them, which needs TP to be a multiple of {total}"
        )
    head = rank * total // tp
    return head, head + 1


def preferred_sources(dst_rank: int, dst_tp: int, src_tp: int) -> range:
    """Source ranks whose share of the TP axis overlaps the destination rank's share.

    Reading from these keeps each source's load even (decode rank r of 8 reads from
    prefill rank r//4 of 2; decode rank r of 2 reads from prefill ranks 4r..4r+3 of 8).

    >>> list(preferred_sources(5, 8, 2)), list(preferred_sources(1, 2, 8))
    ([1], [4, 5, 6, 7])
    """
    first = dst_rank * src_tp // dst_tp
    last = -(-(dst_rank + 1) * src_tp // dst_tp)  # ceil
    return range(first, max(last, first + 1))


def choose_source(index: int, holders: list[tuple[int, int, int]], preferred: range) -> int:
    """Pick one source rank holding global `index` among ``holders`` = [(rank, lo, hi)].

    The first holder inside `preferred` wins, else the lowest-numbered holder. When a
    replicated head is held by several ranks this reads it once, from a deterministic
    rank (GQA de-duplication).
    """
    fallback = None
    for rank, lo, hi in holders:
        if lo <= index < hi:
            if rank in preferred:
                return rank
            if fallback is None:
                fallback = rank
    if fallback is None:
        raise ShardingError(f"no source rank holds index {index}; holders {holders}")
    return fallback


def pp_layer_ranges(num_layers: int, pp: int) -> tuple[tuple[int, int], ...]:
    """Layer window ``[start, end)`` of each pipeline stage, as vLLM's get_pp_indices.

    Even split; the remainder goes to stages -2, -3, ... (never the last, which also
    holds the LM head).

    >>> pp_layer_ranges(62, 4)
    ((0, 15), (15, 31), (31, 47), (47, 62))
    """
    if pp < 1:
        raise ShardingError(f"PP must be >= 1 stage, got {pp}")
    if pp > num_layers:
        raise ShardingError(f"PP {pp} exceeds the model's {num_layers} layers")
    sizes = [num_layers // pp] * pp
    for i in range(2, num_layers % pp + 2):
        sizes[-i] += 1
    bounds, start = [], 0
    for size in sizes:
        bounds.append((start, start + size))
        start += size
    return tuple(bounds)
