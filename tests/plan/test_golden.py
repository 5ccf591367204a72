"""Golden rank-by-rank tables for real models (vLLM 0.33 default layout: HND, K|V packed,
one region per layer, 16-token blocks). The same tables are in docs/golden.md.

Every expected number below was worked out by hand from vLLM's attention page formula
(docs/vllm-memory-model.md, "Attention pages"), never from kvplan's output:

    byte of (head h, token n, K|V byte c) in a kernel page = h·Nk·C + n·C + c
    C = (dk + dv)·e = (128 + 128)·2 = 512 B       Nk = 16 tokens
    one head of one page: Nk·C = 8,192 B           MLA latent page: 16·576·2 = 18,432 B

A rank holding heads [lo, hi) stores head h at (h − lo)·8,192. A row of a table is
(source rank, source byte range in its page, destination byte range in its page), with
byte ranges as [start, end); adjacent ranges contiguous on both sides are one range
(rows are compared as byte maps, not at kvplan's row granularity).
`test_tables_match_vllm_formulas` re-derives the literal tables from vLLM's own
source-rank and head-offset formulas (docs/vllm-memory-model.md, "Attention reads across
TP sizes") as a check on the arithmetic.
"""

from __future__ import annotations

import numpy as np
import pytest

from kvplan import EngineSpec, plan, verify
from kvplan.models import get_model
from vllm_reference import vllm_attention_reads

HEAD_PAGE = 16 * (128 + 128) * 2  # 8,192 B: one KV head of one 16-token page
MLA_PAGE = 16 * 576 * 2  # 18,432 B

# dst rank -> [(src rank, (src start, src end), (dst start, dst end))]
LLAMA_70B_2_TO_8 = {  # P holds 4 heads (32,768 B page), D holds 1 (8,192 B)
    0: [(0, (0, 8192), (0, 8192))],
    1: [(0, (8192, 16384), (0, 8192))],
    2: [(0, (16384, 24576), (0, 8192))],
    3: [(0, (24576, 32768), (0, 8192))],
    4: [(1, (0, 8192), (0, 8192))],
    5: [(1, (8192, 16384), (0, 8192))],
    6: [(1, (16384, 24576), (0, 8192))],
    7: [(1, (24576, 32768), (0, 8192))],
}
LLAMA_70B_8_TO_2 = {  # P holds 1 head, D holds 4: one whole P page per head slot
    0: [(0, (0, 8192), (0, 8192)), (1, (0, 8192), (8192, 16384)),
        (2, (0, 8192), (16384, 24576)), (3, (0, 8192), (24576, 32768))],
    1: [(4, (0, 8192), (0, 8192)), (5, (0, 8192), (8192, 16384)),
        (6, (0, 8192), (16384, 24576)), (7, (0, 8192), (24576, 32768))],
}
DEEPSEEK_V3_8_TO_2 = {  # latent replicated: one whole page from the first P rank of the group
    0: [(0, (0, 18432), (0, 18432))],
    1: [(4, (0, 18432), (0, 18432))],
}
QWEN25_7B_1_TO_8 = {  # K=4 < TP 8: D rank r holds the replicated head r // 2
    0: [(0, (0, 8192), (0, 8192))],
    1: [(0, (0, 8192), (0, 8192))],
    2: [(0, (8192, 16384), (0, 8192))],
    3: [(0, (8192, 16384), (0, 8192))],
    4: [(0, (16384, 24576), (0, 8192))],
    5: [(0, (16384, 24576), (0, 8192))],
    6: [(0, (24576, 32768), (0, 8192))],
    7: [(0, (24576, 32768), (0, 8192))],
}
GEMMA3_27B_4_TO_2 = {  # P holds 4 of 16 heads (32,768 B), D holds 8 (65,536 B); every layer alike
    0: [(0, (0, 32768), (0, 32768)), (1, (0, 32768), (32768, 65536))],
    1: [(2, (0, 32768), (0, 32768)), (3, (0, 32768), (32768, 65536))],
}

GOLDEN = [
    # (model, P tp, D tp, table, bytes per block per layer on each D rank)
    ("llama-3.1-70b", 2, 8, LLAMA_70B_2_TO_8, 8192),
    ("llama-3.1-70b", 8, 2, LLAMA_70B_8_TO_2, 32768),
    ("deepseek-v3", 8, 2, DEEPSEEK_V3_8_TO_2, 18432),
    ("qwen2.5-7b", 1, 8, QWEN25_7B_1_TO_8, 8192),
    ("gemma-3-27b", 4, 2, GEMMA3_27B_4_TO_2, 65536),
]
IDS = [f"{m}-{p}to{d}" for m, p, d, _, _ in GOLDEN]


def merged_runs(src_rank, src_region, src_off, dst_region, dst_off, nbytes):
    """Byte map as maximal runs: [(dst_region, src_rank, src_region, src start, src end, dst start, dst end)].

    Sorted by destination; a row continuing the previous one on both sides joins it,
    so two row lists describing the same bytes give the same runs.
    """
    cols = [np.asarray(c, np.int64) for c in (src_rank, src_region, src_off, dst_region, dst_off, nbytes)]
    order = np.lexsort((cols[4], cols[3]))
    runs = []
    for sr, sreg, so, dreg, do, n in zip(*(c[order].tolist() for c in cols)):
        if runs:
            last = runs[-1]
            if (last[0], last[1], last[2]) == (dreg, sr, sreg) and last[4] == so and last[6] == do:
                runs[-1] = (dreg, sr, sreg, last[3], so + n, last[5], do + n)
                continue
        runs.append((dreg, sr, sreg, so, so + n, do, do + n))
    return runs


@pytest.fixture(scope="module", params=GOLDEN, ids=IDS)
def golden(request):
    name, src_tp, dst_tp, table, per_block = request.param
    model = get_model(name)
    p = plan(EngineSpec(model=model, tp=src_tp), EngineSpec(model=model, tp=dst_tp))
    return model, p, table, per_block


def test_every_layer_matches_the_golden_table(golden):
    model, p, expected, per_block = golden
    assert p.span_tokens == 16
    assert sorted(expected) == list(range(p.dst.world_size))
    for dst_rank, rows in expected.items():
        t = p.reads(dst_rank=dst_rank)
        # equal 16-token blocks: every read pairs block 0 of the span with block 0
        assert set(t.src_block.tolist()) == {0} and set(t.dst_block.tolist()) == {0}
        # one region per layer, registered in layer order on both engines
        assert np.array_equal(t.src_region, t.layer) and np.array_equal(t.dst_region, t.layer)
        want = [(0, r, 0, s0, s1, d0, d1) for r, (s0, s1), (d0, d1) in rows]
        for layer in range(model.num_layers):
            m = t.layer == layer
            got = merged_runs(t.src_rank[m], np.zeros(m.sum()), t.src_offset[m],
                              np.zeros(m.sum()), t.dst_offset[m], t.nbytes[m])
            assert got == want, f"dst rank {dst_rank} layer {layer}"
            assert int(t.nbytes[m].sum()) == per_block
        assert sorted(set(t.layer.tolist())) == list(range(model.num_layers))
        assert t.source_ranks == tuple(sorted({r for r, _, _ in rows}))


def test_golden_plans_verify(golden):
    _, p, _, _ = golden
    verify(p)


def test_tables_match_vllm_formulas():
    """Re-derive each literal table from vLLM 0.33's source-rank and head-offset formulas,
    as written out in `vllm_reference.vllm_attention_reads` (tests/vllm_reference.py)."""
    def heads(k, tp):
        return max(1, k // tp)

    for name, tp_p, tp_d, table, per_block in GOLDEN:
        mla = name == "deepseek-v3"
        k = 1 if mla else {"llama-3.1-70b": 8, "qwen2.5-7b": 4, "gemma-3-27b": 16}[name]
        page_d = MLA_PAGE if mla else heads(k, tp_d) * HEAD_PAGE
        assert per_block == page_d
        for r in range(tp_d):
            assert table[r] == vllm_attention_reads(k, tp_p, tp_d, r, page_d, mla), (name, r)


# -- lowered requests: offsets = block id · logical page + offset in the page ---------


def _transfer_runs(t):
    return merged_runs(t.src_rank, t.src_region, t.src_offset, t.dst_region, t.dst_offset, t.nbytes)


def _by_dst(runs):
    """Expected runs in `merged_runs` order: destination region, then destination byte."""
    return sorted(runs, key=lambda run: (run[0], run[5]))


def test_lower_llama_70b_2_to_8_rank_5():
    model = get_model("llama-3.1-70b")
    p = plan(EngineSpec(model=model, tp=2), EngineSpec(model=model, tp=8))
    t = p.lower(5, [7, 8, 3], [40, 41, 2])
    # P rank 1 page 32,768 B, head 5 at +8,192; D rank 5 page 8,192 B.
    # D blocks 40 and 41 are adjacent (327,680 | 335,872) but their sources are not.
    per_layer = [(1, 7 * 32768 + 8192, 40 * 8192), (1, 8 * 32768 + 8192, 41 * 8192), (1, 3 * 32768 + 8192, 2 * 8192)]
    want = _by_dst((layer, rank, layer, s, s + 8192, d, d + 8192)
                   for layer in range(80) for rank, s, d in per_layer)
    assert _transfer_runs(t) == want
    assert t.total_bytes == 80 * 3 * 8192


def test_lower_llama_70b_8_to_2_rank_1_contiguous_blocks_merge():
    model = get_model("llama-3.1-70b")
    p = plan(EngineSpec(model=model, tp=8), EngineSpec(model=model, tp=2))
    t = p.lower(1, [10, 11], [4, 5])
    # P rank 4+j: its blocks 10,11 are adjacent (81,920..98,304), landing at head slot j
    # of D blocks 4 and 5 (D page 32,768 B): different D pages, so one run per block.
    want = _by_dst((layer, 4 + j, layer, b_src * 8192, b_src * 8192 + 8192, b_dst * 32768 + j * 8192,
                    b_dst * 32768 + j * 8192 + 8192)
                   for layer in range(80) for j in range(4) for b_src, b_dst in ((10, 4), (11, 5)))
    assert _transfer_runs(t) == want


def test_lower_deepseek_v3_whole_pages_merge_across_blocks():
    model = get_model("deepseek-v3")
    p = plan(EngineSpec(model=model, tp=8), EngineSpec(model=model, tp=2))
    t = p.lower(1, [3, 4, 5], [20, 21, 22])
    # consecutive blocks on both sides: one 3-page run per layer from P rank 4
    want = [(layer, 4, layer, 3 * MLA_PAGE, 6 * MLA_PAGE, 20 * MLA_PAGE, 23 * MLA_PAGE) for layer in range(61)]
    assert _transfer_runs(t) == want
    assert len(t) == 61  # merged rows: one descriptor per layer


def test_lower_gemma3_27b_sliding_layers_keep_only_the_window():
    """Sliding layers (window 1024, 16-token blocks) need the last ⌈1024/16⌉ + 1 = 65
    blocks (vLLM's get_exchange_clipped_blocks keeps ceil(window / block) + 1); global layers
    (5, 11, ..., 59) need all of them."""
    model = get_model("gemma-3-27b")
    p = plan(EngineSpec(model=model, tp=4), EngineSpec(model=model, tp=2))
    n = 70
    src_blocks = list(range(100, 100 + n))
    dst_blocks = list(range(300, 300 + n))[::-1]  # reversed: no merging across blocks
    t = p.lower(0, src_blocks, dst_blocks)
    global_layers = {5, 11, 17, 23, 29, 35, 41, 47, 53, 59}
    want = []
    for layer in range(62):
        first = 0 if layer in global_layers else n - 65
        for i in range(first, n):
            s, d = src_blocks[i] * 32768, dst_blocks[i] * 65536
            want += [(layer, 0, layer, s, s + 32768, d, d + 32768),
                     (layer, 1, layer, s, s + 32768, d + 32768, d + 65536)]
    assert _transfer_runs(t) == _by_dst(want)
    assert t.total_bytes == (10 * 70 + 52 * 65) * 65536
