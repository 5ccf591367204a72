"""Request-level oracle: the bytes a decode rank must hold after one request.

Independent of the plan: fills the source ranks' whole regions with identity codes
(block ids in the request's token order carry the request's tokens, all other blocks
carry -3), and derives the decode rank's expected region contents from the memory
model in `kvplan.identity`. `apply()` executes a `Transfer` on numpy memories so a
test can compare.
"""

from __future__ import annotations

import math

import numpy as np

from kvplan.identity import block_codes

UNTOUCHED = -7  # initial destination content: a byte nobody wrote


def request_memories(src, dst, dst_rank: int, src_blocks, dst_blocks, num_blocks: int):
    """(src_mem, expected, must_write) for one decode rank and one request.

    src_mem[rank][region] and expected[region] are int64 arrays of
    ``num_blocks * block_bytes`` codes; must_write[region] marks decode bytes the
    request has to deliver (non-padding bytes of tokens both sides hold, restricted to
    the blocks a sliding window needs).
    """
    tokens = min(len(src_blocks) * src.block_tokens, len(dst_blocks) * dst.block_tokens)
    span = math.lcm(src.block_tokens, dst.block_tokens)
    covered = -(-len(dst_blocks) * dst.block_tokens // span) * span
    covered = max(covered, -(-len(src_blocks) * src.block_tokens // span) * span)
    src_mem = {}
    stage_of = src.stage_of
    for rank in range(src.world_size):
        stage, tp_rank = divmod(rank, src.tp)
        regions = []
        for region in src.regions:
            mem = np.full((num_blocks, region.block_bytes), -3, np.int64)
            if stage_of(region.layer) == stage:
                codes = block_codes(src, region.layer, tp_rank, covered)[region.slot]
                mem[np.asarray(src_blocks)] = codes[: len(src_blocks)]
            regions.append(mem.reshape(-1))
        src_mem[rank] = regions
    stage, tp_rank = divmod(dst_rank, dst.tp)
    expected, must = [], []
    for region in dst.regions:
        want = np.full((num_blocks, region.block_bytes), UNTOUCHED, np.int64)
        need = np.zeros(want.shape, bool)
        if dst.stage_of(region.layer) == stage:
            codes = block_codes(dst, region.layer, tp_rank, covered)[region.slot][: len(dst_blocks)]
            token = (codes >> 20) & ((1 << 24) - 1)
            ok = (codes >= 0) & (token < tokens)
            window = getattr(dst.model.layers[region.layer], "sliding_window", None)
            if window:
                keep_from = len(dst_blocks) - (math.ceil(window / dst.block_tokens) + 1)
                ok[: max(keep_from, 0)] = False
            want[np.asarray(dst_blocks)] = np.where(ok, codes, UNTOUCHED)
            need[np.asarray(dst_blocks)] = ok
        expected.append(want.reshape(-1))
        must.append(need.reshape(-1))
    return src_mem, expected, must


def apply(transfer, src_mem, dst_shapes) -> list[np.ndarray]:
    """Execute `transfer` on numpy memories; returns the decode regions' contents."""
    out = [np.full(n, UNTOUCHED, np.int64) for n in dst_shapes]
    for i in range(len(transfer)):
        n = int(transfer.nbytes[i])
        s = src_mem[int(transfer.src_rank[i])][int(transfer.src_region[i])]
        so, do = int(transfer.src_offset[i]), int(transfer.dst_offset[i])
        out[int(transfer.dst_region[i])][do:do + n] = s[so:so + n]
    return out
