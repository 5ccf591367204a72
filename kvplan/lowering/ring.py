"""A staging ring: a bounce request moved chunk by chunk through bounded staging.

A bounce plan's staging areas are indexed by a span's position in the request, so
whole-request staging grows with the request (134 - 537 MiB per side for a 4,096-token
request of an 8B model). A ring bounds it: the request is cut into chunks of
`chunk_spans` spans of every layer group, and chunk j uses ring slot ``j % slots``,
i.e. staging positions ``[slot * chunk_spans, (slot + 1) * chunk_spans)``. Each chunk
is packed, copied and unpacked like a small request of its own; with two or more slots
a transport packs chunk j + 1 while chunk j moves and chunk j - 1 unpacks.

Staging per region is then ``slots * chunk_spans * block_bytes`` whatever the request's
length (`ring_buffer_bytes`), and one chunk of one (prefill rank, decode rank) pair
moves at most `chunk_bytes` (`staging_ring`; one span more when a single span is
larger).

A chunk is itself a `RequestBlocks` (`ring_chunks`): the request's paired ids of those
spans, with sliding-window limits rebased to the chunk's first block, so step templates
(`positional(..., first_position=)`) and `RingCopies` evaluate it unchanged.

>>> from kvplan import AttentionSpec, EngineSpec, ModelSpec, plan
>>> m = ModelSpec(name="m", layers=(AttentionSpec(num_kv_heads=8, head_dim=128),))
>>> p = plan(EngineSpec(model=m, tp=2), EngineSpec(model=m, tp=4), transfer_strategy="bounce")
>>> ring = staging_ring(p, chunk_bytes=2 * 16384, slots=2)    # a pair moves 16 KiB per span
>>> ring.chunk_spans, ring_buffer_bytes(p, ring)[1]           # 2 slots x 2 spans x 16 KiB
(2, (65536, 65536))
>>> ring_buffer_bytes(p, ring, dst_rank=3)[1]                 # decode rank 3 reads prefill rank 1 only
(0, 65536)
>>> blocks = request_blocks(p, 3, [7, 8, 9], [40, 41, 2])
>>> [c.groups[0].dst_ids.tolist() for c in ring_chunks(p, blocks, ring)]
[[40, 41], [2]]
"""

from __future__ import annotations

import attrs
import numpy as np

from ..errors import SpecError
from ..planning.rows import frozen
from ..spec.limits import check_count
from .request import GroupRequest, RequestBlocks, request_blocks  # noqa: F401  (request_blocks: doctest)
from .template import check_position
from .transfer import Transfer


def _positive(instance, attribute, value) -> None:
    check_count(value, f"StagingRing.{attribute.name}")


@attrs.frozen(kw_only=True)
class StagingRing:
    """`slots` ring slots of `chunk_spans` spans each (see the module docstring)."""

    chunk_spans: int = attrs.field(validator=_positive)
    slots: int = attrs.field(validator=_positive)

    def slot_position(self, chunk: int) -> int:
        """First staging position (in spans) of chunk `chunk`'s slot."""
        return (chunk % self.slots) * self.chunk_spans


def _require_bounce(plan, call: str) -> None:
    if getattr(plan, "transfer_strategy", None) != "bounce":
        raise SpecError(f"{call} needs a plan with transfer_strategy='bounce', got "
                        f"{getattr(plan, 'transfer_strategy', type(plan).__name__)!r}")


def pair_span_bytes(plan) -> int:
    """The most bytes one (prefill rank, decode rank) pair copies per span (one span of
    every layer group), over all pairs: what sizes a chunk.

    >>> from kvplan import AttentionSpec, EngineSpec, ModelSpec, plan
    >>> m = ModelSpec(name="m", layers=(AttentionSpec(num_kv_heads=8, head_dim=128),) * 2)
    >>> pair_span_bytes(plan(EngineSpec(model=m, tp=2), EngineSpec(model=m, tp=4), transfer_strategy="bounce"))
    32768
    """
    _require_bounce(plan, "pair_span_bytes")
    most = 0
    for table in plan.tables:
        if len(table):
            most = max(most, int(np.bincount(table.src_rank, weights=table.nbytes).max()))
    return most


def staging_ring(plan, *, chunk_bytes: int, slots: int = 2) -> StagingRing:
    """The ring whose chunks move at most `chunk_bytes` per (prefill rank, decode rank)
    pair (at least one span per chunk), with `slots` slots (module docstring)."""
    check_count(chunk_bytes, "chunk_bytes")
    check_count(slots, "slots")
    per_span = max(pair_span_bytes(plan), 1)
    return StagingRing(chunk_spans=max(1, int(chunk_bytes) // per_span), slots=int(slots))


def ring_buffer_bytes(plan, ring: StagingRing, dst_rank: int | None = None) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Bytes of each scratch buffer for `ring`, whatever the request: (prefill side in
    `plan.src_scratch` order, decode side in `plan.dst_scratch` order), like
    `scratch_buffer_bytes` for whole-request staging. With `dst_rank`, only what that
    decode rank's requests use (0 elsewhere): its own staging, and on a prefill rank the
    staging of that one pair (a prefill rank serving every decode rank needs them all)."""
    _require_bounce(plan, "ring_buffer_bytes")
    if not isinstance(ring, StagingRing):
        raise SpecError(f"ring_buffer_bytes takes a StagingRing, got {type(ring).__name__}")
    spans = ring.slots * ring.chunk_spans
    first_src, first_dst = len(plan.src_regions) - len(plan.src_scratch), len(plan.dst_regions) - len(plan.dst_scratch)
    used_src, used_dst = range(len(plan.src_regions)), range(len(plan.dst_regions))
    if dst_rank is not None:
        table = plan.reads(dst_rank)  # a bounce plan's reads are its staging-to-staging copies
        used_src, used_dst = set(table.src_region.tolist()), set(table.dst_region.tolist())
    return (tuple(spans * r.block_bytes if first_src + i in used_src else 0 for i, r in enumerate(plan.src_scratch)),
            tuple(spans * r.block_bytes if first_dst + i in used_dst else 0 for i, r in enumerate(plan.dst_scratch)))


def ring_chunks(plan, blocks: RequestBlocks, ring: StagingRing) -> tuple[RequestBlocks, ...]:
    """`blocks` cut into chunks of `ring.chunk_spans` spans of every group (a group with
    fewer spans is empty in the later chunks); a window's first kept block is rebased to
    each chunk's first block (module docstring)."""
    _require_bounce(plan, "ring_chunks")
    if not isinstance(blocks, RequestBlocks):
        raise SpecError(f"ring_chunks takes the RequestBlocks of request_blocks(), got {type(blocks).__name__}")
    if not isinstance(ring, StagingRing):
        raise SpecError(f"ring_chunks takes a StagingRing, got {type(ring).__name__}")
    span = ring.chunk_spans
    count = max((-(-g.spans // span) for g in blocks.groups), default=0)
    layer_group = np.array([plan.dst.group_of(layer) for layer in range(len(blocks.first_kept))], np.int64)
    chunks = []
    for j in range(count):
        groups, starts = [], []
        for g in blocks.groups:
            ns, nd = g.blocks_per_span
            src_ids, dst_ids = g.src_ids[j * span * ns:(j + 1) * span * ns], g.dst_ids[j * span * nd:(j + 1) * span * nd]
            groups.append(GroupRequest(blocks_per_span=g.blocks_per_span, src_ids=src_ids, dst_ids=dst_ids,
                                       partial=bool((src_ids < 0).any() or (dst_ids < 0).any()),
                                       decode_blocks=int(min(max(g.decode_blocks - j * span * nd, 0), len(dst_ids)))))
            starts.append(j * span * nd)
        first = blocks.first_kept - np.array(starts, np.int64)[layer_group] if len(layer_group) else blocks.first_kept
        chunks.append(attrs.evolve(blocks, groups=tuple(groups), first_kept=frozen(np.maximum(first, 0))))
    return tuple(chunks)


class RingCopies:
    """The copies of a bounce plan's decode rank, built once, made per chunk by
    arithmetic: a copy row moves one span of one (layer, source rank) staging area, and
    spans follow each other in both areas, so a chunk's copies are one row per entry,
    from its first kept span to the chunk's last (``RingCopies.chunk``).

    >>> from kvplan import AttentionSpec, EngineSpec, ModelSpec, plan
    >>> m = ModelSpec(name="m", layers=(AttentionSpec(num_kv_heads=8, head_dim=128),))
    >>> p = plan(EngineSpec(model=m, tp=2), EngineSpec(model=m, tp=4), transfer_strategy="bounce")
    >>> copies = RingCopies(p, 3)
    >>> t = copies.chunk(request_blocks(p, 3, [7, 8, 9], [40, 41, 2]), first_position=4)
    >>> t.src_offset.tolist(), t.dst_offset.tolist(), t.nbytes.tolist()    # spans 4-6 of the slot
    ([65536], [65536], [49152])
    """

    def __init__(self, plan, dst_rank: int):
        _require_bounce(plan, "RingCopies")
        table = plan.reads(dst_rank)
        self.plan, self.dst_rank = plan, int(dst_rank)
        self._cols = table.columns()
        self._group = np.array([plan.dst.group_of(int(layer)) for layer in table.layer], np.int64)
        self._src_stride = np.array([r.block_bytes for r in plan.src_regions], np.int64)[table.src_region]
        self._dst_stride = np.array([r.block_bytes for r in plan.dst_regions], np.int64)[table.dst_region]
        # a row filling its span on both sides runs on across spans: one row per chunk
        self._whole = (table.nbytes == self._src_stride) & (table.nbytes == self._dst_stride)
        self._decode_per_span = np.array([plan.blocks_per_span(int(g))[1] for g in self._group], np.int64)

    def chunk(self, blocks: RequestBlocks, *, first_position: int = 0, src_rank: int | None = None) -> Transfer:
        """The copies of one chunk (or a whole request) whose staging starts at span
        position `first_position`; only prefill rank `src_rank`'s if given."""
        if not isinstance(blocks, RequestBlocks) or blocks.dst_rank != self.dst_rank:
            raise SpecError(f"RingCopies.chunk takes the RequestBlocks of decode rank {self.dst_rank} "
                            f"(request_blocks or ring_chunks), got {type(blocks).__name__}"
                            + (f" of decode rank {blocks.dst_rank}" if isinstance(blocks, RequestBlocks) else ""))
        check_position(first_position, "RingCopies.chunk(first_position=...)")
        if src_rank is not None:
            check_count(src_rank, "RingCopies.chunk(src_rank=...)", minimum=0)
        cols, n = self._cols, len(self._group)
        spans = np.array(blocks.spans, np.int64)[self._group] if n else np.zeros(0, np.int64)
        # a window drops span j of a row when its last decode block is before the first kept one
        first_kept = blocks.first_kept[cols["layer"]] - cols["dst_block"]
        first = np.maximum(-(-first_kept // self._decode_per_span), 0)
        count = np.maximum(spans - first, 0)
        keep = count > 0
        if src_rank is not None:
            keep &= cols["src_rank"] == src_rank
        whole = self._whole & keep
        split = np.flatnonzero(~self._whole & keep)
        # rows that do not fill their span stay one per span
        row = np.concatenate([np.flatnonzero(whole), np.repeat(split, count[split])])
        span = np.concatenate([first[whole], _ranges(first[split], count[split])]) + first_position
        nbytes = np.concatenate([count[whole] * cols["nbytes"][whole], np.repeat(cols["nbytes"][split], count[split])])
        return Transfer(dst_rank=self.dst_rank, src_rank=cols["src_rank"][row], src_region=cols["src_region"][row],
                        src_offset=span * self._src_stride[row] + cols["src_offset"][row],
                        dst_region=cols["dst_region"][row],
                        dst_offset=span * self._dst_stride[row] + cols["dst_offset"][row], nbytes=nbytes,
                        src_regions=self.plan.src_regions, dst_regions=self.plan.dst_regions,
                        plan_fingerprint=self.plan.fingerprint)


def _ranges(starts: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Concatenated ``range(start, start + count)`` for each pair.

    >>> _ranges(np.array([2, 7]), np.array([3, 1])).tolist()
    [2, 3, 4, 7]
    """
    total = int(counts.sum())
    if not total:
        return np.zeros(0, np.int64)
    ends = np.cumsum(counts)
    return np.arange(total, dtype=np.int64) - np.repeat(ends - counts, counts) + np.repeat(starts, counts)
