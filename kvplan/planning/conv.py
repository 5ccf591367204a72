"""Conv-state strategies: how a destination rank gets its conv slices across a TP change.

With hetero TP a destination rank needs a slice of each sub-projection (x, B, C or
Q, K, V), which are not adjacent in the source page. Starting from the direct rows
(one read per contiguous run), the other strategies trade descriptors for bytes,
memory and local copies:

* ``direct``   reads each run straight into place (DS: one range per sub-projection,
  vLLM's 3-read; SD: one per tap row and sub-projection).
* ``staged``   reads each source's whole conv state into a destination scratch area
  (one descriptor per source), then extracts the runs locally (post steps).
* ``permuted`` packs, on each source, the runs one destination needs into one chunk in
  destination order (pre steps), reads that chunk with one descriptor straight into
  place when its runs are contiguous at the destination, else into scratch and
  unpacks them (post steps).

Scratch areas are indexed by a state block's position in the request, not by its id:
they hold one request's states only. A row whose slot is `SCRATCH` lives in the
scratch area of that side.
"""

from __future__ import annotations

import numpy as np

from ..spec.components import COMPONENT_CODE, CONV_COMPONENTS
from .tables import SCRATCH, StrategyRows, TemplateRows, direct

STRATEGIES = ("direct", "staged", "permuted")
_CONV = np.array(sorted(COMPONENT_CODE[c] for c in CONV_COMPONENTS))


def _rows(entries: list[tuple]) -> TemplateRows:
    """TemplateRows from tuples in column order."""
    names = TemplateRows.column_names()
    if not entries:
        return TemplateRows.concat([])
    return TemplateRows.from_columns(dict(zip(names, np.array(entries, np.int64).T, strict=True)))


def apply_strategy(strategy: str, template: TemplateRows, src_conv_bytes: int, dst_conv_bytes: int,
                   dst_tp_rank: int, dst_tp: int) -> StrategyRows:
    """Rewrite a state layer's direct rows for `strategy`. A permuted source's scratch
    holds one chunk slot per destination TP rank (`dst_tp` of them).

    >>> x, b = COMPONENT_CODE["conv_x"], COMPONENT_CODE["conv_B"]
    >>> t = _rows([(0, x, 0, 0, 0, 0, 8, 0, 4), (0, b, 0, 0, 0, 0, 20, 4, 2)])
    >>> s = apply_strategy("staged", t, 24, 6, 0, 1)
    >>> s.reads.src_offset.tolist(), s.reads.nbytes.tolist(), s.post.src_offset.tolist(), s.dst_scratch_bytes
    ([0], [24], [8, 20], (24,))
    """
    if strategy == "direct":
        return direct(template)
    empty = _rows([])
    is_conv = np.isin(template.component, _CONV)
    conv, other = template.select(is_conv), template.select(~is_conv)
    sources = [int(p) for p in np.unique(conv.src_rank)]
    reads, pre, post = [], [], []
    if strategy == "staged":
        for k, p in enumerate(sources):
            reads.append((p, COMPONENT_CODE["conv"], 0, SCRATCH, 0, 0, 0, k * src_conv_bytes, src_conv_bytes))
        for i in range(len(conv)):
            k = sources.index(int(conv.src_rank[i]))
            post.append((int(conv.src_rank[i]), int(conv.component[i]), SCRATCH, 0, 0, 0,
                         k * src_conv_bytes + int(conv.src_offset[i]), int(conv.dst_offset[i]), int(conv.nbytes[i])))
        return StrategyRows(reads=TemplateRows.concat([_rows(reads), other]), pre=empty, post=_rows(post),
                            dst_scratch_bytes=(len(sources) * src_conv_bytes,))
    # permuted: this rank's chunk sits at dst_tp_rank * dst_conv_bytes in each source's scratch
    scratch_used = 0
    for k, p in enumerate(sources):
        mine = np.flatnonzero(conv.src_rank == p)
        mine = mine[np.argsort(conv.dst_offset[mine], kind="stable")]
        chunk = dst_tp_rank * dst_conv_bytes
        d_off, size = conv.dst_offset[mine], conv.nbytes[mine]
        packed = chunk + np.concatenate([[0], np.cumsum(size)[:-1]])
        for i, at in zip(mine, packed, strict=True):
            pre.append((p, int(conv.component[i]), 0, SCRATCH, 0, 0, int(conv.src_offset[i]), int(at),
                        int(conv.nbytes[i])))
        total = int(size.sum())
        if np.all(d_off[1:] == d_off[:-1] + size[:-1]):
            # the runs are contiguous at the destination: one read straight into place
            reads.append((p, COMPONENT_CODE["conv"], SCRATCH, 0, 0, 0, chunk, int(d_off[0]), total))
            continue
        reads.append((p, COMPONENT_CODE["conv"], SCRATCH, SCRATCH, 0, 0, chunk, k * dst_conv_bytes, total))
        for i, at in zip(mine, packed - chunk + k * dst_conv_bytes, strict=True):
            post.append((p, int(conv.component[i]), SCRATCH, 0, 0, 0, int(at), int(conv.dst_offset[i]),
                         int(conv.nbytes[i])))
        scratch_used = len(sources) * dst_conv_bytes
    return StrategyRows(reads=TemplateRows.concat([_rows(reads), other]), pre=_rows(pre), post=_rows(post),
                        src_scratch_bytes=(dst_tp * dst_conv_bytes,) if sources else (),
                       dst_scratch_bytes=(scratch_used,) if scratch_used else ())
