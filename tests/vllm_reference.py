"""vLLM 0.33's attention reads and byte-map helpers, written from vLLM's formulas (never
from kvplan), shared by the conformance suites and the golden tables."""

from __future__ import annotations

import numpy as np

from kvplan.spec import COMPONENT_CODE


def vllm_attention_reads(k, tp_p, tp_d, r, page_d, mla=False):
    """vLLM 0.33's attention reads of D rank r as [(P rank, (P start, P end), (D start, D end))].

    vLLM's source-rank and head-offset rules (docs/vllm-memory-model.md, "Attention reads
    across TP sizes"), K total heads: Td >= Tp or MLA: one source ⌊r·Tp/Td⌋ at
    offset f·page_D, f = 0 (Td <= Tp or MLA), ⌊r·K/Td⌋ − ⌊⌊r·Tp/Td⌋·K/Tp⌋ (Td > K), else
    r mod (Td/Tp). Tp > Td: candidates r·a + j (a = Tp/Td), the first per distinct head
    ⌊p·K/Tp⌋ kept; source in slot s fills D bytes [s·page_D/n, (s+1)·page_D/n) from the
    start of its page.
    """
    if mla or tp_d >= tp_p:
        src = r * tp_p // tp_d
        if mla or tp_d <= tp_p:
            f = 0
        elif tp_d > k:
            f = r * k // tp_d - (r * tp_p // tp_d) * k // tp_p
        else:
            f = r % (tp_d // tp_p)
        return [(src, (f * page_d, (f + 1) * page_d), (0, page_d))]
    a = tp_p // tp_d
    sources, heads = [], []
    for j in range(a):
        p = r * a + j
        if p * k // tp_p not in heads:
            heads.append(p * k // tp_p)
            sources.append(p)
    unit = page_d // len(sources)
    return [(p, (0, unit), (slot * unit, (slot + 1) * unit)) for slot, p in enumerate(sources)]


def canonical(runs) -> list[tuple]:
    """[(dst region, dst start, src rank, src region, src start, nbytes)] merged where
    contiguous on both sides; raises if two runs write the same destination byte."""
    out: list[list[int]] = []
    for d_reg, d_off, s_rank, s_reg, s_off, n in sorted(tuple(int(x) for x in r) for r in runs):
        if n == 0:
            continue
        if out and out[-1][0] == d_reg:
            last = out[-1]
            assert d_off >= last[1] + last[5], f"destination byte {d_off} of region {d_reg} written twice"
            if (last[1] + last[5] == d_off and last[2] == s_rank and last[3] == s_reg
                    and last[4] + last[5] == s_off):
                last[5] += n
                continue
        out.append([d_reg, d_off, s_rank, s_reg, s_off, n])
    return [tuple(r) for r in out]


def table_runs(table, layer: int | None = None, components=None) -> list[tuple]:
    """Byte map of a ReadTable's rows (single-span tables: blocks are 0)."""
    m = np.ones(len(table), bool)
    if layer is not None:
        m &= table.layer == layer
    if components is not None:
        m &= np.isin(table.component, [COMPONENT_CODE[c] for c in components])
    assert not table.src_block[m].any() and not table.dst_block[m].any()
    return canonical(zip(table.dst_region[m].tolist(), table.dst_offset[m].tolist(), table.src_rank[m].tolist(),
                         table.src_region[m].tolist(), table.src_offset[m].tolist(), table.nbytes[m].tolist()))


def clip(runs, intervals) -> list[tuple]:
    """The parts of byte runs whose destination lies in the given [lo, hi) intervals."""
    out = []
    for d_reg, d_off, s_rank, s_reg, s_off, n in runs:
        for lo, hi in intervals:
            a, b = max(lo, d_off), min(hi, d_off + n)
            if a < b:
                out.append((d_reg, a, s_rank, s_reg, s_off + a - d_off, b - a))
    return canonical(out)
