"""The bounce transfer strategy: pack, a few large copies, unpack.

A head-sliced plan of scattered blocks makes one copy per (layer, block, run): 8 K to
262 K descriptors for one request, where a transport that posts a descriptor in a few
microseconds spends most of its time posting. Bounce trades those for local copies at
memory speed. For one decode rank and one layer:

* **pack** (pre steps, on each source rank): gather the runs this decode rank needs into
  the source's staging area *to that decode rank*, in destination order;
* **copy** (the reads): one row per source rank per span, staging to the destination's
  staging area *from that source rank*; spans follow each other in both staging areas,
  so a request's copies merge into one row per (layer, source rank) when lowered;
* **unpack** (post steps, on the destination): scatter staging into the pages.

Staging areas are per-request scratch regions indexed by the span's position in the
request (`allocate block_bytes x spans`): one per (layer, decode TP rank) on the source
side and one per (layer, source TP rank) on the destination side. A template row's slot
``-1 - k`` names the k-th staging area of its side (`staging_slot`).

A pack or unpack row keeps both block indices of the run it moves (the staging side's
is not an address: staging is indexed by span), so a request that lacks either block,
or a window that drops it, drops the row on both sides. The copies of a span are always made, whether or not the request fills the span (a
partial last span copies a few staging bytes nobody unpacks), except that a sliding
window which drops the span's last block drops them: `dst_block` of a copy row is the
last block of the span its layer's rows touch.
"""

from __future__ import annotations

import numpy as np

from .tables import StrategyRows, TemplateRows

TRANSFER_STRATEGIES = ("direct", "bounce")


def staging_slot(k: int) -> int:
    """Template slot of a side's k-th per-request scratch area (slot -1 is the first).

    >>> staging_slot(0), staging_slot(3)
    (-1, -4)
    """
    return -1 - k


def apply_bounce(rows: StrategyRows, dst_tp_rank: int, dst_tp: int, src_tp: int) -> StrategyRows:
    """Rewrite a layer's direct rows of decode TP rank `dst_tp_rank` as pack, copy, unpack.

    Source rank p's staging slot for this decode rank is ``staging_slot(dst_tp_rank)``
    (`dst_tp` slots per layer); the destination's slot for p is ``staging_slot(p)``.

    >>> from kvplan.planning.tables import direct
    >>> t = TemplateRows.from_columns(dict(src_rank=[1, 0, 1], component=[0, 0, 0], src_slot=[0, 0, 0],
    ...     dst_slot=[0, 0, 0], src_block=[0, 0, 0], dst_block=[0, 0, 0], src_offset=[0, 64, 512],
    ...     dst_offset=[32, 0, 0], nbytes=[32, 16, 16]))
    >>> b = apply_bounce(direct(t), dst_tp_rank=1, dst_tp=2, src_tp=2)
    >>> b.pre.src_offset.tolist(), b.pre.dst_offset.tolist(), b.pre.dst_slot.tolist()  # destination order
    ([64, 512, 0], [0, 0, 16], [-2, -2, -2])
    >>> b.reads.src_rank.tolist(), b.reads.nbytes.tolist(), b.src_scratch_bytes, b.dst_scratch_bytes
    ([0, 1], [16, 48], (0, 48), (16, 48))
    """
    if len(rows.pre) or len(rows.post):
        raise ValueError("bounce applies to direct rows")  # the planner refuses this pairing first
    t = rows.reads
    if not len(t):
        return rows
    # destination order within each source rank: the unpack then walks staging forwards
    order = np.lexsort((t.dst_offset, t.dst_block, t.dst_slot, t.src_rank))
    t = t.select(order)
    sources, first = np.unique(t.src_rank, return_index=True)
    ends = np.r_[first[1:], len(t)]
    total = np.add.reduceat(t.nbytes, first)
    position = np.cumsum(t.nbytes) - t.nbytes - np.repeat(np.cumsum(total) - total, ends - first)
    n = len(t)
    dst_area = staging_slot(t.src_rank)
    pre = TemplateRows.from_columns({
        "src_rank": t.src_rank, "component": t.component, "src_slot": t.src_slot,
        "dst_slot": np.full(n, staging_slot(dst_tp_rank)), "src_block": t.src_block, "dst_block": t.dst_block,
        "src_offset": t.src_offset, "dst_offset": position, "nbytes": t.nbytes})
    post = TemplateRows.from_columns({
        "src_rank": t.src_rank, "component": t.component, "src_slot": dst_area, "dst_slot": t.dst_slot,
        "src_block": t.src_block, "dst_block": t.dst_block, "src_offset": position,
        "dst_offset": t.dst_offset, "nbytes": t.nbytes})
    k = len(sources)
    reads = TemplateRows.from_columns({
        # the copy of a span belongs to the span's last decode block: a sliding window that
        # keeps any block of the span keeps its last one
        "src_rank": sources, "component": t.component[first], "src_slot": np.full(k, staging_slot(dst_tp_rank)),
        "dst_slot": staging_slot(sources), "src_block": np.zeros(k, np.int64),
        "dst_block": np.full(k, t.dst_block.max()), "src_offset": np.zeros(k, np.int64), "dst_offset": np.zeros(k, np.int64),
        "nbytes": total})
    src_bytes = np.zeros(dst_tp, np.int64)
    src_bytes[dst_tp_rank] = total.max()
    dst_bytes = np.zeros(src_tp, np.int64)
    dst_bytes[sources] = total
    return StrategyRows(reads=reads, pre=pre, post=post, src_scratch_bytes=_trimmed(src_bytes),
                        dst_scratch_bytes=_trimmed(dst_bytes))


def _trimmed(sizes: np.ndarray) -> tuple:
    """Sizes per slot without trailing unused slots."""
    used = np.flatnonzero(sizes)
    return tuple(int(s) for s in sizes[:used[-1] + 1]) if len(used) else ()
