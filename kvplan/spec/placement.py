"""Placements: which global indices of a TP-sharded axis each rank holds, and which
layers each pipeline stage holds.

An `Axis` is one axis a layer splits over tensor parallelism (KV heads, Mamba heads,
B/C groups, conv channels), with a placement in JAX / DTensor vocabulary:

* `Shard()`: rank r of tp holds ``[r*n/tp, (r+1)*n/tp)`` of the n indices (tp must
  divide n). With more ranks than indices the indices are replicated: rank r holds the
  single index ``r*n // tp`` (n must divide tp), unless ``replicate_excess=False``.
* `Replicate()`: every rank holds all n indices (an MLA latent).

Rank by rank, 2 KV heads under `Shard()`:

    tp=1: r0 [0,2)
    tp=2: r0 [0,1)  r1 [1,2)
    tp=4: r0 [0,1)  r1 [0,1)  r2 [1,2)  r3 [1,2)

The ranks fall into *replica groups* whose intervals tile ``[0, n)`` exactly once
(`replica_groups`); tp=4 above has the groups (0, 2) and (1, 3).

>>> heads = Axis(what="KV heads", extent=2, placement=Shard())
>>> [heads.interval(4, r) for r in range(4)], replica_groups(heads, 4)
([(0, 1), (0, 1), (1, 2), (1, 2)], ((0, 2), (1, 3)))
"""

from __future__ import annotations

import attrs

from ..errors import ShardingError
from .limits import MAX_TP


def _check_rank(tp, rank) -> None:
    """TP rank `rank` of `tp` ranks: ints with 0 <= rank < tp <= MAX_TP."""
    if isinstance(tp, bool) or not isinstance(tp, int) or not 1 <= tp <= MAX_TP.value:
        raise ShardingError(f"TP must be an int from 1 to {MAX_TP.value:,}, got {tp!r}"[:300])
    if isinstance(rank, bool) or not isinstance(rank, int) or not 0 <= rank < tp:
        raise ShardingError(f"rank must be an int from 0 to {tp - 1}, got {rank!r}"[:300])


@attrs.frozen
class Shard:
    """Split the axis evenly over the TP ranks (see the module docstring).

    >>> [Shard().interval(6, 3, r) for r in range(3)]
    [(0, 2), (2, 4), (4, 6)]
    >>> Shard(replicate_excess=False).interval(2, 4, 0)
    Traceback (most recent call last):
    ...
    kvplan.errors.ShardingError: 2 indices cannot be split over TP 4: 2 % 4 = 2
    """

    replicate_excess: bool = True

    def interval(self, extent: int, tp: int, rank: int, *, what: str = "indices") -> tuple[int, int]:
        """Global ``[lo, hi)`` held by `rank` of `tp`.

        >>> Shard().interval(8, 2, 1), Shard().interval(2, 4, 3)
        ((4, 8), (1, 2))
        """
        _check_rank(tp, rank)
        if tp <= extent or not self.replicate_excess:
            if extent % tp:
                raise ShardingError(f"{extent} {what} cannot be split over TP {tp}: {extent} % {tp} = {extent % tp}")
            per_rank = extent // tp
            return rank * per_rank, (rank + 1) * per_rank
        if tp % extent:
            raise ShardingError(
                f"TP {tp} > {extent} {what} replicates each of them, which needs TP to be a multiple of {extent}"
            )
        index = rank * extent // tp
        return index, index + 1


@attrs.frozen
class Replicate:
    """Every rank holds the whole axis.

    >>> Replicate().interval(1, 8, 5)
    (0, 1)
    """

    def interval(self, extent: int, tp: int, rank: int, *, what: str = "indices") -> tuple[int, int]:
        _check_rank(tp, rank)
        return 0, extent


@attrs.frozen(kw_only=True)
class Axis:
    """One TP-sharded axis of a layer: `extent` global indices placed by `placement`.

    `what` names the indices in error messages ("KV heads", "Mamba2 groups").

    >>> Axis(what="KV heads", extent=8, placement=Shard()).interval(3, 0, where=" of layer 2")
    Traceback (most recent call last):
    ...
    kvplan.errors.ShardingError: 8 KV heads of layer 2 cannot be split over TP 3: 8 % 3 = 2
    """

    what: str
    extent: int
    placement: Shard | Replicate

    def interval(self, tp: int, rank: int, *, where: str = "") -> tuple[int, int]:
        """Global ``[lo, hi)`` of this axis held by TP rank `rank` of `tp`; `where`
        (e.g. " of layer 3") is appended to the name in errors."""
        return self.placement.interval(self.extent, tp, rank, what=self.what + where)


def replica_groups(axis: Axis, tp: int) -> tuple[tuple[int, ...], ...]:
    """The TP ranks grouped so that each group's intervals tile ``[0, extent)`` once.

    Sharded axes with ``tp <= extent`` form one group; replicated excess ranks form
    ``tp / extent`` groups of strided ranks; a `Replicate` axis makes every rank a group.

    >>> replica_groups(Axis(what="heads", extent=8, placement=Shard()), 2)
    ((0, 1),)
    >>> replica_groups(Axis(what="latent", extent=1, placement=Replicate()), 2)
    ((0,), (1,))
    """
    _check_rank(tp, 0)
    lows = [axis.interval(tp, rank)[0] for rank in range(tp)]
    copies = lows.count(0)  # every group holds index 0 exactly once
    return tuple(tuple(rank for rank in range(tp) if rank % copies == group) for group in range(copies))


def overlap(a: tuple[int, int], b: tuple[int, int]) -> tuple[int, int] | None:
    """The intersection of two half-open index intervals, or None when they are disjoint.

    >>> overlap((0, 4), (2, 8)), overlap((0, 2), (2, 4))
    ((2, 4), None)
    """
    lo, hi = max(a[0], b[0]), min(a[1], b[1])
    return (lo, hi) if lo < hi else None


def pp_layer_ranges(num_layers: int, pp: int) -> tuple[tuple[int, int], ...]:
    """Layer window ``[start, end)`` of each pipeline stage, as vLLM's get_pp_indices.

    Even split; the remainder goes to stages -2, -3, ... (never the last, which also
    holds the LM head).

    >>> pp_layer_ranges(62, 4)
    ((0, 15), (15, 31), (31, 47), (47, 62))
    """
    if isinstance(pp, bool) or not isinstance(pp, int) or pp < 1:
        raise ShardingError(f"PP must be >= 1 stage, got {pp!r}")
    if isinstance(num_layers, bool) or not isinstance(num_layers, int) or num_layers < 1:
        raise ShardingError(f"num_layers must be a positive int, got {num_layers!r}")
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
