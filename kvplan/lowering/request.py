"""A request's block ids, validated and paired per layer group (`RequestBlocks`).

A request names its logical blocks on each engine, one list per layer group (a flat
list for a one-group engine), in token order. Token groups pair by tokens: both lists
must cover the same tokens (the last block of either side may be partly used); state
groups pair block for block. ``prefix="tail"`` applies vLLM's prefix-hit rules. The
paired lists are padded with -1 to whole spans (the lcm of the two block sizes), which
is what lowering and a device copy kernel index.

>>> from kvplan.spec import AttentionSpec, EngineSpec, ModelSpec
>>> from kvplan.planning import plan_tables
>>> m = ModelSpec(name="m", layers=(AttentionSpec(2, 8),))
>>> p = plan_tables(EngineSpec(model=m, block_tokens=48), EngineSpec(model=m, block_tokens=32))
>>> g = request_blocks(p, 0, [7, 8], [1, 2, 3]).groups[0]
>>> g.blocks_per_span, g.src_ids.tolist(), g.dst_ids.tolist(), g.spans
((2, 3), [7, 8], [1, 2, 3], 1)
"""

from __future__ import annotations

import weakref
from collections.abc import Mapping, Set
from functools import lru_cache

import attrs
import numpy as np

from ..errors import BlockError, RankError
from ..planning.rows import frozen, readonly_int64

PREFIX_RULES = ("exact", "tail")


_INT64_MAX = np.iinfo(np.int64).max


def block_ids(values, *, side: str, num_blocks: int | None, block_bytes: int = 1) -> np.ndarray:
    """Validate a request's logical block ids (1-D, integer, in range).

    With `num_blocks` unknown, ids are bounded by int64 instead: block `b` of a region of
    `block_bytes`-byte blocks ends at ``(b + 1) * block_bytes``, which must fit an int64
    offset (a larger id would wrap around onto other memory).

    >>> block_ids([3, 1], side="decode", num_blocks=4).tolist()
    [3, 1]
    >>> block_ids([3, 4], side="decode", num_blocks=4)
    Traceback (most recent call last):
    ...
    kvplan.errors.BlockError: decode block id 4 is out of range: the engine has 4 blocks
    >>> block_ids([2**62], side="prefill", num_blocks=None, block_bytes=65536)
    Traceback (most recent call last):
    ...
    kvplan.errors.BlockError: prefill block id 4611686018427387904 is too large: blocks of 65,536 bytes need ids below 140,737,488,355,327 for their offsets to fit int64
    """
    if isinstance(values, (str, bytes, bytearray, memoryview)):
        raise BlockError(f"{side} block ids must be a 1-D list of integers, got {values!r}"[:300])
    try:
        array = np.asarray(values)
    except (ValueError, TypeError, OverflowError):  # ragged or mixed nesting
        raise BlockError(f"{side} block ids must be a 1-D list of integers, got {values!r}"[:300]) from None
    if array.ndim != 1:
        raise BlockError(f"{side} block ids must be a 1-D list, got shape {array.shape}: {values!r}"[:300])
    if array.size and array.dtype.kind not in "iu":
        # bools, floats, strings, and Python ints too large for any numpy integer (object)
        raise BlockError(f"{side} block ids must be integers, got {array.dtype} values {array[:4].tolist()}"[:300])
    if array.size and array.dtype.kind == "u" and array.max() > _INT64_MAX:
        raise BlockError(f"{side} block id {int(array.max())} is out of range of int64")
    # a fresh array the caller does not hold: the request keeps it (read-only) as is
    array = array.astype(np.int64, copy=array is values)
    if not array.size:
        return array
    bound = _INT64_MAX // block_bytes
    limit = bound if num_blocks is None else min(num_blocks, bound)
    # one pass for both ends: seen unsigned, a negative id is larger than any limit
    if int(array.view(np.uint64).max()) < limit:
        return array
    low, high = int(array.min()), int(array.max())
    if low < 0:
        raise BlockError(f"{side} block ids must be >= 0, got {low}")
    if num_blocks is not None and high >= num_blocks:
        raise BlockError(f"{side} block id {high} is out of range: the engine has {num_blocks} blocks")
    raise BlockError(f"{side} block id {high} is too large: blocks of {block_bytes:,} bytes need ids below "
                     f"{bound:,} for their offsets to fit int64")


def _column():
    return attrs.field(converter=readonly_int64, eq=attrs.cmp_using(eq=np.array_equal), hash=False)


@attrs.frozen(kw_only=True)
class GroupRequest:
    """One layer group's paired block ids: `blocks_per_span` = (prefill, decode) blocks
    per span, `src_ids` / `dst_ids` padded with -1 to whole spans, `partial` when any
    pad is present, `decode_blocks` the decode list's length after pairing (see the
    module docstring for an example)."""

    blocks_per_span: tuple[int, int]
    src_ids: np.ndarray = _column()
    dst_ids: np.ndarray = _column()
    partial: bool
    decode_blocks: int

    @property
    def spans(self) -> int:
        return len(self.src_ids) // self.blocks_per_span[0]


@attrs.frozen(kw_only=True)
class RequestBlocks:
    """A request validated for one decode rank: each group's paired ids, and per layer
    the first decode block index it still needs (`first_kept`: 0 unless a sliding
    window drops the request's older blocks; `windowed` says whether any does).

    >>> from kvplan.spec import AttentionSpec, EngineSpec, ModelSpec
    >>> from kvplan.planning import plan_tables
    >>> m = ModelSpec(name="m", layers=(AttentionSpec(2, 8, sliding_window=16), AttentionSpec(2, 8)))
    >>> r = request_blocks(plan_tables(EngineSpec(model=m), EngineSpec(model=m)), 0, [1, 2, 3, 4], [5, 6, 7, 8])
    >>> r.first_kept.tolist(), r.windowed       # window 16 = 1 block, + 1: the last 2 of 4 blocks
    ([2, 0], True)
    """

    dst_rank: int
    groups: tuple[GroupRequest, ...]
    first_kept: np.ndarray = _column()
    windowed: bool

    @property
    def src_ids(self) -> tuple[np.ndarray, ...]:
        return tuple(g.src_ids for g in self.groups)

    @property
    def dst_ids(self) -> tuple[np.ndarray, ...]:
        return tuple(g.dst_ids for g in self.groups)

    @property
    def spans(self) -> tuple[int, ...]:
        return tuple(g.spans for g in self.groups)


def _per_group(values, groups: int, side: str) -> list:
    """One block list per group; a flat list is accepted for a one-group engine.

    Nested means the first element is itself a list of ids (a ragged or mixed list is
    refused by `block_ids`); looking at one element keeps this O(1) per request.
    """
    if isinstance(values, np.ndarray):
        flat = values.ndim == 1
    else:
        if isinstance(values, (str, bytes, bytearray, memoryview, Mapping, Set)):
            # these iterate as characters, byte values, keys or in no order: never as block ids
            raise BlockError(f"{side} block ids must be a list of integers, got {type(values).__name__} "
                             f"{values!r}"[:300])
        if not isinstance(values, (list, tuple)):
            try:
                values = list(values)
            except TypeError:
                raise BlockError(f"{side} block ids must be a list of integers, got {values!r}"[:300]) from None
        flat = not values or not isinstance(values[0], (list, tuple, np.ndarray, range))
    if flat:
        if groups != 1:
            raise BlockError(f"the engines have {groups} layer groups: pass {side} block ids as one list "
                             f"per group, got one flat list of {len(values)} ids")
        return [values]
    if len(values) != groups:
        raise BlockError(f"{side} block lists: {len(values)} lists given for {groups} layer groups")
    return list(values)


def _pair_group(facts: _Group, group: int, sb: np.ndarray, db: np.ndarray, prefix: str):
    """Apply the prefix-hit rules to one group's lists and check they can pair."""
    if not facts.token:
        # state is never token-trimmed: one state per block, pair block for block
        if prefix == "tail" and len(sb) > len(db):
            sb = sb[len(sb) - len(db):]
        elif prefix == "tail" and len(db) == len(sb) + 1:
            db = db[:-1]  # decode recomputes the last position itself
        if len(sb) != len(db):
            hint = "" if prefix == "tail" else " (prefix hits need prefix='tail')"
            raise BlockError(f"group {group} (state): {len(sb)} prefill blocks and {len(db)} decode blocks "
                             f"cannot pair{hint}")
        return sb, db
    src_block, dst_block = facts.src_block_tokens, facts.dst_block_tokens
    if prefix == "tail" and src_block == dst_block and len(sb) > len(db):
        sb = sb[len(sb) - len(db):]  # decode already holds the prefix: read only the tail
    tokens = min(len(sb) * src_block, len(db) * dst_block)
    if -(-tokens // src_block) != len(sb) or -(-tokens // dst_block) != len(db):
        hint = " (a decode prefix hit needs prefix='tail')" if len(sb) * src_block > len(db) * dst_block else ""
        raise BlockError(
            f"group {group}: block lists of unequal length: {len(sb)} prefill blocks of {src_block} tokens "
            f"and {len(db)} decode blocks of {dst_block} tokens do not cover the same tokens{hint}"
        )
    return sb, db


def _repeated(ids: np.ndarray, num_blocks: int | None) -> int | None:
    """The smallest id listed twice, or None. Counting into a table of the engine's
    blocks is linear where that table is not much larger than the list (the per-request
    path of a serving engine); otherwise one sort.

    >>> _repeated(np.array([4, 1, 4, 1]), 8), _repeated(np.array([4, 1]), None)
    (1, None)
    """
    if len(ids) < 2:
        return None
    if num_blocks is not None and num_blocks <= 16 * len(ids) + 4096:
        # a byte per block marks what is listed (an int64 count per block is 8x the
        # memory to touch); counts only to name the repeated id
        seen = np.zeros(num_blocks, bool)
        seen[ids] = True
        if np.count_nonzero(seen) == len(ids):
            return None
        twice = np.flatnonzero(np.bincount(ids, minlength=num_blocks) > 1)
    else:
        ordered = np.sort(ids)
        twice = ordered[1:][ordered[1:] == ordered[:-1]]
    return int(twice.min()) if len(twice) else None


def _check_distinct(lists: list[np.ndarray], *, pooled: bool, num_blocks: int | None) -> None:
    """A decode block is written once: no id twice in a group, and with pooled regions
    (a block id belongs to one group at a time) no id in two groups."""
    if pooled and len(lists) > 1 and _repeated(np.concatenate(lists), num_blocks) is None:
        return  # nothing repeats across the groups, so nothing within one either
    for group, db in enumerate(lists):
        block = _repeated(db, num_blocks)
        if block is not None:
            raise BlockError(f"decode group {group} lists block {block} twice: two prefill "
                             "blocks would be written into one page")
    if pooled and len(lists) > 1:
        block = _repeated(np.concatenate(lists), num_blocks)
        if block is not None:
            owners = [g for g, db in enumerate(lists) if block in db]
            raise BlockError(f"decode block {block} is listed by groups {owners}, which share pooled regions: "
                             "their pages would overwrite each other")


@attrs.frozen(kw_only=True)
class _Group:
    """What pairing a group's lists needs to know of the engines."""

    token: bool  # a token group (else state: one state per block)
    src_block_tokens: int
    dst_block_tokens: int
    blocks_per_span: tuple[int, int]


@attrs.frozen(kw_only=True)
class _Facts:
    """A plan's constants for pairing requests, worked out once per plan: its groups,
    and the (prefill, decode) bytes of the largest logical block among the engines'
    regions, what bounds a block id when the engine's block count is unknown
    (`block_ids`; scratch regions are indexed by position in the request, not by id)."""

    groups: tuple[_Group, ...]
    largest_block_bytes: tuple[int, int]


# per plan, weakly: the memo dies with the plan
_FACTS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _facts(plan) -> _Facts:
    found = _FACTS.get(plan)
    if found is None:
        src, dst = plan.src, plan.dst
        groups = tuple(_Group(token=src.group_is_token(g), src_block_tokens=src.group_block_tokens(g)[0],
                              dst_block_tokens=dst.group_block_tokens(g)[0], blocks_per_span=plan.blocks_per_span(g))
                       for g in range(len(dst.layer_groups)))
        largest = tuple(max((r.block_bytes for r in regions if not r.per_request), default=1)
                        for regions in (plan.src_regions, plan.dst_regions))
        found = _FACTS[plan] = _Facts(groups=groups, largest_block_bytes=largest)
    return found


@lru_cache(maxsize=256)
def _windows(dst) -> tuple[tuple[int, int, int], ...]:
    """(layer, group, blocks kept) of every sliding-window layer of an engine."""
    out = []
    for layer, spec in enumerate(dst.model.layers):
        group = dst.group_of(layer)
        kept = spec.kept_blocks(dst.group_block_tokens(group)[0]) if spec.holds_tokens else None
        if kept is not None:
            out.append((layer, group, kept))
    return tuple(out)


def _first_kept(dst, decode_blocks: list[int]) -> tuple[np.ndarray, bool]:
    """Per layer, the first decode block index a sliding-window layer still needs."""
    first = np.zeros(dst.model.num_layers, np.int64)
    windows = _windows(dst)
    for layer, group, kept in windows:
        first[layer] = decode_blocks[group] - kept
    return first, bool(windows)


def _padded(ids: np.ndarray, length: int) -> np.ndarray:
    """`ids` (block_ids' own array, or a slice of it) padded with -1 to `length`, read-only."""
    if len(ids) == length:
        return frozen(ids)
    out = np.full(length, -1, np.int64)
    out[: len(ids)] = ids
    return frozen(out)


def request_blocks(plan, dst_rank: int, src_blocks, dst_blocks, *, prefix: str = "exact") -> RequestBlocks:
    """Validate a request for `dst_rank` of `plan` and pair its lists (module docstring).

    >>> from kvplan.spec import AttentionSpec, EngineSpec, ModelSpec
    >>> from kvplan.planning import plan_tables
    >>> m = ModelSpec(name="m", layers=(AttentionSpec(2, 8),))
    >>> p = plan_tables(EngineSpec(model=m), EngineSpec(model=m))
    >>> request_blocks(p, 0, [1, 2, 3], [7, 8], prefix="tail").groups[0].src_ids.tolist()   # decode holds a prefix
    [2, 3]
    """
    src, dst = plan.src, plan.dst
    if isinstance(dst_rank, bool) or not isinstance(dst_rank, (int, np.integer)) or \
            not 0 <= dst_rank < dst.world_size:
        raise RankError(f"dst_rank {dst_rank} is outside the decode engine's {dst.world_size} ranks")
    if not isinstance(prefix, str) or prefix not in PREFIX_RULES:
        raise BlockError(f"prefix must be 'exact' or 'tail', got {prefix!r}")
    facts = _facts(plan)
    count = len(facts.groups)
    src_bytes, dst_bytes = facts.largest_block_bytes
    groups, decode_ids = [], []
    for g, (s_list, d_list) in enumerate(zip(_per_group(src_blocks, count, "prefill"),
                                             _per_group(dst_blocks, count, "decode"), strict=True)):
        sb = block_ids(s_list, side=f"prefill group {g}", num_blocks=src.num_blocks, block_bytes=src_bytes)
        db = block_ids(d_list, side=f"decode group {g}", num_blocks=dst.num_blocks, block_bytes=dst_bytes)
        decode_ids.append(db)
        sb, db = _pair_group(facts.groups[g], g, sb, db, prefix)
        ns, nd = facts.groups[g].blocks_per_span
        spans = max(-(-len(sb) // ns), -(-len(db) // nd))
        src_pad, dst_pad = _padded(sb, spans * ns), _padded(db, spans * nd)
        groups.append(GroupRequest(blocks_per_span=(ns, nd), src_ids=src_pad, dst_ids=dst_pad,
                                   partial=len(sb) < len(src_pad) or len(db) < len(dst_pad), decode_blocks=len(db)))
    _check_distinct(decode_ids, pooled=dst.pooled, num_blocks=dst.num_blocks)
    first, windowed = _first_kept(dst, [g.decode_blocks for g in groups])
    return RequestBlocks(dst_rank=int(dst_rank), groups=tuple(groups), first_kept=frozen(first), windowed=windowed)
