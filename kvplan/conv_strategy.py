"""Conv-state strategies (DESIGN.md §4): how a destination rank gets its conv slices.

With hetero TP a destination rank needs a slice of each sub-projection (x, B, C or
Q, K, V), which are not adjacent in the source page. Starting from the direct plan
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
they hold one request's states only. A template row whose slot is `SCRATCH` lives in
the scratch area of that side.
"""

from __future__ import annotations

import numpy as np

from .table import COMPONENT_CODE

STRATEGIES = ("direct", "staged", "permuted")
SCRATCH = -1
_CONV = np.array([COMPONENT_CODE[c] for c in ("conv", "conv_x", "conv_B", "conv_C", "conv_Q", "conv_K", "conv_V")])
_COLS = ("src_rank", "component", "src_slot", "dst_slot", "src_block", "dst_block", "src_offset", "dst_offset", "nbytes")


def _rows(template: dict, mask: np.ndarray) -> dict:
    return {c: template[c][mask] for c in _COLS}


def _make(entries: list[tuple]) -> dict:
    if not entries:
        return {c: np.zeros(0, np.int64) for c in _COLS}
    cols = np.array(entries, np.int64).T
    return dict(zip(_COLS, cols, strict=True))


def _concat(*parts: dict) -> dict:
    return {c: np.concatenate([p[c] for p in parts]) for c in _COLS}


def apply_strategy(strategy: str, template: dict, src_conv_bytes: int, dst_conv_bytes: int,
                   dst_tp_rank: int, dst_tp: int) -> tuple[dict, dict, dict, int, int]:
    """Rewrite a state layer's direct template for `strategy`.

    Returns (reads, pre, post, src_scratch_bytes, dst_scratch_bytes): pre rows run on
    the source ranks (src_rank), post rows on the destination rank; scratch sizes are
    per state block of a request (0 when unused). A permuted source's scratch holds one
    chunk slot per destination TP rank (`dst_tp` of them).

    >>> t = _make([(0, COMPONENT_CODE["conv_x"], 0, 0, 0, 0, 8, 0, 4), (0, COMPONENT_CODE["conv_B"], 0, 0, 0, 0, 20, 4, 2)])
    >>> reads, pre, post, _, dst = apply_strategy("staged", t, 24, 6, 0, 1)
    >>> reads["src_offset"].tolist(), reads["nbytes"].tolist(), post["src_offset"].tolist(), dst
    ([0], [24], [8, 20], 24)
    """
    empty = _make([])
    if strategy == "direct":
        return template, empty, empty, 0, 0
    is_conv = np.isin(template["component"], _CONV)
    conv, other = _rows(template, is_conv), _rows(template, ~is_conv)
    sources = [int(p) for p in np.unique(conv["src_rank"])]
    reads, pre, post = [], [], []
    if strategy == "staged":
        for k, p in enumerate(sources):
            reads.append((p, COMPONENT_CODE["conv"], 0, SCRATCH, 0, 0, 0, k * src_conv_bytes, src_conv_bytes))
        for i in range(len(conv["nbytes"])):
            k = sources.index(int(conv["src_rank"][i]))
            post.append((int(conv["src_rank"][i]), int(conv["component"][i]), SCRATCH, 0, 0, 0,
                         k * src_conv_bytes + int(conv["src_offset"][i]), int(conv["dst_offset"][i]),
                         int(conv["nbytes"][i])))
        return _concat(_make(reads), other), empty, _make(post), 0, len(sources) * src_conv_bytes
    # permuted: this rank's chunk sits at dst_tp_rank * dst_conv_bytes in each source's scratch
    scratch_used = 0
    for k, p in enumerate(sources):
        mine = np.flatnonzero(conv["src_rank"] == p)
        mine = mine[np.argsort(conv["dst_offset"][mine], kind="stable")]
        chunk = dst_tp_rank * dst_conv_bytes
        d_off, size = conv["dst_offset"][mine], conv["nbytes"][mine]
        packed = chunk + np.concatenate([[0], np.cumsum(size)[:-1]])
        for i, at in zip(mine, packed, strict=True):
            pre.append((p, int(conv["component"][i]), 0, SCRATCH, 0, 0, int(conv["src_offset"][i]), int(at),
                        int(conv["nbytes"][i])))
        total = int(size.sum())
        if np.all(d_off[1:] == d_off[:-1] + size[:-1]):
            # the runs are contiguous at the destination: one read straight into place
            reads.append((p, COMPONENT_CODE["conv"], SCRATCH, 0, 0, 0, chunk, int(d_off[0]), total))
            continue
        reads.append((p, COMPONENT_CODE["conv"], SCRATCH, SCRATCH, 0, 0, chunk, k * dst_conv_bytes, total))
        for i, at in zip(mine, packed - chunk + k * dst_conv_bytes, strict=True):
            post.append((p, int(conv["component"][i]), SCRATCH, 0, 0, 0, int(at), int(conv["dst_offset"][i]),
                         int(conv["nbytes"][i])))
        scratch_used = len(sources) * dst_conv_bytes
    return _concat(_make(reads), other), _make(pre), _make(post), dst_tp * dst_conv_bytes, scratch_used
