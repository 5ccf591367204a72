"""Golden rank-by-rank tables for hybrid models under vLLM 0.33's memory model
(`kvplan.presets.vllm_engine` on both sides: FlashInfer, DS conv state, HMA pools).
docs/golden-hybrid.md holds the same tables; `test_docs_hold_the_golden_tables`
re-renders them here and checks the file, so the two cannot drift.

Every expected number comes from the hand formulas below (vLLM 0.33's page layouts, source
ranks and conv 3-read, as stated in docs/vllm-memory-model.md), written from the models'
dimensions, never from kvplan:

* A rank of TP t holds x channels ``[r·I/t, (r+1)·I/t)``, SSM heads ``[r·H/t, ...)``,
  Mamba2 B/C groups ``[r·G/t, (r+1)·G/t)`` when ``G >= t``, else the one group its
  heads belong to, ``⌊r·G/t⌋`` (replicated); GDN Q/K over key heads, V over value heads.
* DS page: ``x | B | C`` (or ``Q | K | V``), each channel's R = conv_kernel − 1 taps
  contiguous (R·2 bytes per channel, bf16), then the SSM heads, then padding.
* KV heads: ``[r·K/t, (r+1)·K/t)`` for t <= K, else the single head ``⌊r·K/t⌋``;
  kernel page ``[heads][Nk tokens][K|V]``, one head's page is Nk·(dk+dv)·2 bytes.
* A destination element is read from the first source rank of its overlap group
  ``⌊r·Tp/Td⌋ … ⌈(r+1)·Tp/Td⌉−1`` that holds it (vLLM's source-rank rule), so a replicated
  head or B/C group is read once, whole, from one source.

Rows of a table are (component, P rank, P bytes, D bytes) as [start, end) inside one
logical block's page (state) or one kernel page (attention: P kernel page -> D kernel
page; when D's kernel page holds two of P's, the row is for the first one and the second
lands right after it). Numbers vLLM's own functions return for these pairs (the 3-read
offsets of Nemotron 1→2 and 1→4, the source ranks of Nemotron 8→4, the Q/K/V offsets of
Qwen3-Next 1→2) are asserted literally in `test_reference_worked_numbers`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from kvplan import plan, verify
from kvplan.presets import vllm_engine

from vllm_reference import canonical, clip

DOCS = Path(__file__).parents[2] / "docs/golden-hybrid.md"
R = 3  # conv taps kept: conv_kernel 4 - 1
BF16 = 2

NEMOTRON = dict(model="nemotron-3-nano-30b-a3b", family="mamba2", I=4096, G=8, ds=128, H=64, hd=64, ssm_e=4,
                K=2, head_dim=128)
GRANITE = dict(model="granite-4.0-h-small", family="mamba2", I=8192, G=1, ds=128, H=128, hd=64, ssm_e=2,
               K=8, head_dim=128)
QWEN3_NEXT = dict(model="qwen3-next-80b-a3b", family="gdn", Hk=16, Hv=32, dk=128, dv=128, ssm_e=2,
                  K=2, head_dim=256)

CASES = {
    "nemotron-1-2": (NEMOTRON, 1, 2),
    "nemotron-2-1": (NEMOTRON, 2, 1),
    "nemotron-1-4": (NEMOTRON, 1, 4),
    "nemotron-8-4": (NEMOTRON, 8, 4),
    "granite-1-2": (GRANITE, 1, 2),
    "granite-2-1": (GRANITE, 2, 1),
    "qwen3-next-1-2": (QWEN3_NEXT, 1, 2),
}


# -- hand formulas ---------------------------------------------------------------------------


def _shard(total: int, t: int, r: int) -> tuple[int, int]:
    if t <= total:
        return r * total // t, (r + 1) * total // t
    return r * total // t, r * total // t + 1


def _overlap(r: int, tp_p: int, tp_d: int) -> range:
    return range(r * tp_p // tp_d, max(-(-(r + 1) * tp_p // tp_d), r * tp_p // tp_d + 1))


def state_components(m: dict, t: int, r: int):
    """[(name, first global index, count, bytes per index, page offset)] of rank r's page."""
    if m["family"] == "mamba2":
        x = _shard(m["I"], t, r)
        groups = _shard(m["G"], t, r) if m["G"] >= t else (r * m["G"] // t, r * m["G"] // t + 1)
        b = (groups[0] * m["ds"], groups[1] * m["ds"])
        heads = _shard(m["H"], t, r)
        parts = [("x", x), ("B", b), ("C", b)]
        ssm_per = m["hd"] * m["ds"] * m["ssm_e"]
    else:  # GDN: Q | K over key heads, V over value heads
        qk = tuple(h * m["dk"] for h in _shard(m["Hk"], t, r))
        v = tuple(h * m["dv"] for h in _shard(m["Hv"], t, r))
        heads = _shard(m["Hv"], t, r)
        parts = [("Q", qk), ("K", qk), ("V", v)]
        ssm_per = m["dv"] * m["dk"] * m["ssm_e"]
    out, offset = [], 0
    for name, (lo, hi) in parts:
        out.append((name, lo, hi - lo, R * BF16, offset))
        offset += (hi - lo) * R * BF16
    out.append(("SSM", heads[0], heads[1] - heads[0], ssm_per, offset))
    return out


def state_rows(m: dict, tp_p: int, tp_d: int, r: int) -> list[tuple]:
    """Golden state rows of D rank r: (component, P rank, (P start, P end), (D start, D end))."""
    rows = []
    sources = list(_overlap(r, tp_p, tp_d))
    for name, lo, count, per, d_base in state_components(m, tp_d, r):
        index = lo
        while index < lo + count:
            # first overlapping P rank holding this index, else the lowest holder
            holders = [p for p in range(tp_p) for (n, plo, pc, _, _) in state_components(m, tp_p, p)
                       if n == name and plo <= index < plo + pc]
            p = next((h for h in holders if h in sources), holders[0])
            (_, plo, pc, _, p_base), = [c for c in state_components(m, tp_p, p) if c[0] == name]
            n = min(lo + count, plo + pc) - index
            s0 = p_base + (index - plo) * per
            d0 = d_base + (index - lo) * per
            rows.append((name, p, (s0, s0 + n * per), (d0, d0 + n * per)))
            index += n
    return rows


def attention_rows(m: dict, tp_p: int, tp_d: int, r: int, nk_p: int, nk_d: int) -> list[tuple]:
    """Golden attention rows of D rank r per P kernel page (the first one of a D kernel page)."""
    cell = 2 * m["head_dim"] * BF16
    d_lo, d_hi = _shard(m["K"], tp_d, r)
    sources = list(_overlap(r, tp_p, tp_d))
    rows = []
    for h in range(d_lo, d_hi):
        holders = [p for p in range(tp_p) if _shard(m["K"], tp_p, p)[0] <= h < _shard(m["K"], tp_p, p)[1]]
        p = next((x for x in holders if x in sources), holders[0])
        p_lo = _shard(m["K"], tp_p, p)[0]
        s0, d0 = (h - p_lo) * nk_p * cell, (h - d_lo) * nk_d * cell
        rows.append((f"KV head {h}", p, (s0, s0 + nk_p * cell), (d0, d0 + nk_p * cell)))
    return rows


def golden(case: str) -> dict:
    m, tp_p, tp_d = CASES[case]
    src, dst = vllm_engine(m["model"], tp_p), vllm_engine(m["model"], tp_d)
    return {r: {"attention": attention_rows(m, tp_p, tp_d, r, src.kernel_tokens, dst.kernel_tokens),
                "state": state_rows(m, tp_p, tp_d, r)} for r in range(tp_d)}


# -- comparing with kvplan ----------------------------------------------------------------------


def _span_runs(table, layer: int, src, dst) -> list[tuple]:
    """A layer's rows in span coordinates (block·page + offset), region ids dropped."""
    m = table.layer == layer
    s_page = src.page_bytes
    d_page = dst.page_bytes
    return canonical(zip(np.zeros(m.sum(), int), (table.dst_block[m] * d_page + table.dst_offset[m]).tolist(),
                         table.src_rank[m].tolist(), np.zeros(m.sum(), int),
                         (table.src_block[m] * s_page + table.src_offset[m]).tolist(), table.nbytes[m].tolist()))


def _expand_attention(rows, src, dst, span_tokens: int) -> list[tuple]:
    """Repeat per-kernel-page rows over every P kernel page of the span: P page k of
    nk_p tokens sits at block·page + page·stride; its tokens land in D's kernel page at
    token offset (k·nk_p mod nk_d)."""
    nk_p, nk_d = src.kernel_tokens, dst.kernel_tokens
    stride_p = src.page_bytes // src.kernel_pages_per_block
    stride_d = dst.page_bytes // dst.kernel_pages_per_block
    cell_d = None
    runs = []
    for k in range(span_tokens // nk_p):
        t0 = k * nk_p
        p_at = (t0 // src.block_tokens) * src.page_bytes + ((t0 % src.block_tokens) // nk_p) * stride_p
        d_at = (t0 // dst.block_tokens) * dst.page_bytes + ((t0 % dst.block_tokens) // nk_d) * stride_d
        for _, p, (s0, s1), (d0, d1) in rows:
            cell_d = (s1 - s0) // nk_p
            runs.append((0, d_at + d0 + (t0 % nk_d) * cell_d, p, 0, p_at + s0, s1 - s0))
    return canonical(runs)


@pytest.fixture(scope="module", params=sorted(CASES))
def case(request):
    m, tp_p, tp_d = CASES[request.param]
    src, dst = vllm_engine(m["model"], tp_p), vllm_engine(m["model"], tp_d)
    return request.param, src, dst, plan(src, dst)


def test_every_layer_matches_the_golden_table(case):
    name, src, dst, p = case
    table_by_rank = golden(name)
    model = src.model
    span = np.lcm(src.block_tokens, dst.block_tokens)
    for r, expected in table_by_rank.items():
        t = p.reads(r)
        want_state = canonical((0, d0, q, 0, s0, d1 - d0) for _, q, (s0, _), (d0, d1) in expected["state"])
        want_attention = _expand_attention(expected["attention"], src, dst, int(span))
        for layer, spec in enumerate(model.layers):
            got = _span_runs(t, layer, src, dst)
            want = want_attention if spec.kind == "attention" else want_state
            assert got == want, f"{name} D rank {r} layer {layer} ({spec.kind})"


def test_golden_plans_verify(case):
    verify(case[3])


def test_replicated_bc_read_whole_from_one_source():
    """Granite-4.0-H-Small has one B/C group (G = 1 < TP): every rank holds all of it.
    1→2: each D rank reads B and C whole (768 B each) from P0's own B/C; 2→1: D reads
    them once, from P0, not half from each P rank (vLLM sizes B/C as if TP-sharded and
    reads wrong bytes: docs/vllm-differences.md, item 1)."""
    for r, rows in golden("granite-1-2").items():
        b = [row for row in rows["state"] if row[0] in ("B", "C")]
        assert b == [("B", 0, (49152, 49920), (24576, 25344)), ("C", 0, (49920, 50688), (25344, 26112))]
    (rows,) = golden("granite-2-1").values()
    assert [row for row in rows["state"] if row[0] in ("B", "C")] == [
        ("B", 0, (24576, 25344), (49152, 49920)), ("C", 0, (25344, 26112), (49920, 50688))]
    e1, e2 = vllm_engine("granite-4.0-h-small", 1), vllm_engine("granite-4.0-h-small", 2)
    runs = _span_runs(plan(e2, e1).reads(0), 0, e2, e1)  # layer 0 is a Mamba layer
    bc = clip(runs, [(49152, 50688)])  # D's B|C bytes
    assert bc == [(0, 49152, 0, 0, 24576, 1536)]  # one read of P0's B|C, 768 + 768 B


def test_reference_worked_numbers():
    """Numbers vLLM 0.33's own functions return where vLLM is right: Nemotron 1→2 rank 1
    (vector worker_nemotron_d2r1_p1), 1→4 rank 3 (conv3read_nemotron_h_30b_d4_p1_r3), the
    sources of 8→4 rank 1 (attention from P2 only, SSM from P2 and P3) and Qwen3-Next 1→2
    rank 1 (conv3read_qwen3_next_80b_d2_p1_r1)."""
    by = {row[0]: row for row in golden("nemotron-1-2")[1]["state"]}
    assert by["x"][2] == (12288, 24576) and by["B"][2][0] == 27648 and by["C"][2][0] == 33792
    assert by["SSM"][2] == (1085440, 1085440 + 1048576)
    assert golden("nemotron-1-2")[1]["attention"] == [("KV head 1", 0, (8192, 16384), (0, 8192))]
    by = {row[0]: row for row in golden("nemotron-1-4")[3]["state"]}
    assert (by["x"][2], by["B"][2], by["C"][2]) == ((18432, 24576), (29184, 30720), (35328, 36864))
    assert by["SSM"][2] == (1609728, 1609728 + 524288)
    rows8 = golden("nemotron-8-4")[1]
    assert {row[1] for row in rows8["attention"]} == {2}  # FA from P2 only
    assert {row[1] for row in rows8["state"]} == {2, 3}  # SSM from P2 and P3
    by = {row[0]: row for row in golden("qwen3-next-1-2")[1]["state"]}
    assert (by["Q"][2][0], by["K"][2][0], by["V"][2][0], by["SSM"][2][0]) == (6144, 18432, 36864, 573440)


def render(case: str) -> str:
    """Markdown table of one case (docs/golden-hybrid.md)."""
    m, tp_p, tp_d = CASES[case]
    src, dst = vllm_engine(m["model"], tp_p), vllm_engine(m["model"], tp_d)
    lines = ["| D rank | component | P rank | P bytes | D bytes | bytes |", "|---|---|---|---|---|---|"]
    for r, rows in golden(case).items():
        for kind in ("attention", "state"):
            for comp, p, (s0, s1), (d0, d1) in rows[kind]:
                lines.append(f"| {r} | {comp} | {p} | [{s0:,}, {s1:,}) | [{d0:,}, {d1:,}) | {s1 - s0:,} |")
    head = (f"P TP{tp_p}: Nl {src.block_tokens}, Nk {src.kernel_tokens}, page {src.page_bytes:,} B; "
            f"D TP{tp_d}: Nl {dst.block_tokens}, Nk {dst.kernel_tokens}, page {dst.page_bytes:,} B.")
    return head + "\n\n" + "\n".join(lines)


def test_docs_hold_the_golden_tables():
    text = DOCS.read_text()
    for case in CASES:
        assert render(case) in text, f"docs/golden-hybrid.md is out of date for {case}"
