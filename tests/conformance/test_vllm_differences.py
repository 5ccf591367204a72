"""Where kvplan differs from vLLM 0.33 (docs/vllm-differences.md): one test per item,
each written so that it fails if kvplan behaved like vLLM (read vLLM's bytes, refused
the pair vLLM refuses, or accepted a mismatch vLLM lets through). vLLM's numbers come
from its source-rank, head-offset and 3-read formulas (docs/vllm-memory-model.md) and the
conformance vectors (tests/data/vllm-0.33-vectors.json), never from kvplan.
"""

from __future__ import annotations

import attrs
import numpy as np
import pytest

from kvplan import AttentionSpec, EngineSpec, ModelMismatchError, ModelSpec, PlanError, ReadTable, plan, verify
from kvplan.models.hybrid import HYBRID_MODELS
from kvplan.presets import vllm_engine
from kvplan.spec import Mamba2Spec
from kvplan.spec import COMPONENT_CODE

from vllm_reference import clip, table_runs

GRANITE_MAMBA = HYBRID_MODELS["granite-4.0-h-small"].layers[0]  # 128 heads x 64, G = 1, d_state 128
FALCON_MAMBA = HYBRID_MODELS["falcon-h1-7b"].layers[1]  # 24 heads x 128, G = 1, d_state 256


def _one_layer(spec) -> ModelSpec:
    return ModelSpec(name="one", layers=(spec,))


def _vllm_rows_rho_positive(spec, tp_p: int, tp_d: int, r: int):
    """vLLM's 3-read + SSM for ρ = Td/Tp >= 1 (offset of sub-projection j: Σ_{i<j} ρ·s_i +
    (r mod ρ)·s_j, SSM at conv_P + (r mod ρ)·ssm_D), sized from D's page as vLLM
    does: D's B/C assumed to be 1/ρ of P's. [(D start, P start, nbytes)]."""
    rho, q = tp_d // tp_p, r % (tp_d // tp_p)
    e, rows = 2, 3
    x_d = spec.num_heads * spec.head_dim // tp_d * rows * e
    g_d = max(spec.n_groups, tp_d)  # vLLM's G' (replicated groups counted per rank)
    b_d = g_d * spec.d_state // tp_d * rows * e
    ssm_d = spec.num_heads // tp_d * spec.head_dim * spec.d_state * 2
    conv_p = (spec.num_heads * spec.head_dim // tp_p + 2 * max(spec.n_groups, tp_p) * spec.d_state // tp_p) * rows * e
    sizes = [x_d, b_d, b_d]
    out, local = [], 0
    for j, s in enumerate(sizes):
        out.append((local, sum(sizes[:j]) * rho + q * s, s))
        local += s
    out.append((local, conv_p + q * ssm_d, ssm_d))
    return out


@pytest.mark.parametrize("spec,tp_p,tp_d,r", [(GRANITE_MAMBA, 1, 2, 1), (FALCON_MAMBA, 2, 4, 3)])
def test_mamba2_groups_below_tp_are_read_whole(spec, tp_p, tp_d, r):
    """n_groups < TP: every rank holds its heads' B/C group whole. vLLM reads "B" and "C"
    at TP-sharded offsets (Granite 1→2 rank 1: B at P+49,920, which is P's C; C at
    P+51,456, past P's conv state into SSM bytes). kvplan reads P's own B and C."""
    p = plan(EngineSpec(model=_one_layer(spec), tp=tp_p), EngineSpec(model=_one_layer(spec), tp=tp_d))
    verify(p)
    vllm = _vllm_rows_rho_positive(spec, tp_p, tp_d, r)
    got = table_runs(p.reads(r))
    b_dst, b_vllm_src, b_len = vllm[1]
    (b_run,) = clip(got, [(b_dst, b_dst + b_len)])
    assert b_run[4] != b_vllm_src, "kvplan read B where vLLM does"
    # P's own B: right after P's x (Granite TP1: 49,152; Falcon TP2: 9,216)
    assert b_run[4] == spec.num_heads * spec.head_dim // tp_p * 3 * 2
    # and vLLM's rows, planted as a plan, fail the identity check
    src_rank = r // (tp_d // tp_p)
    n = len(vllm)
    table = ReadTable(dst_rank=r, src_rank=np.full(n, src_rank), layer=np.zeros(n, int),
                      component=np.full(n, COMPONENT_CODE["mixed"]), src_region=np.zeros(n, int),
                      dst_region=np.zeros(n, int), src_block=np.zeros(n, int), dst_block=np.zeros(n, int),
                      src_offset=np.array([s for _, s, _ in vllm]), dst_offset=np.array([d for d, _, _ in vllm]),
                      nbytes=np.array([k for _, _, k in vllm]))
    tables = tuple(table if i == r else t for i, t in enumerate(p.tables))
    with pytest.raises(PlanError):
        verify(attrs.evolve(p, tables=tables))


def test_mamba2_groups_below_tp_gather_reads_each_group_once():
    """Granite 2→1: vLLM takes the first half of each P rank's B (vector
    conv3read_granite4_h_small_d1_p2_r0: (24,576, 384) from both); kvplan reads P0's B
    and C whole (768 B each) and nothing of B/C from P1."""
    p = plan(EngineSpec(model=_one_layer(GRANITE_MAMBA), tp=2), EngineSpec(model=_one_layer(GRANITE_MAMBA), tp=1))
    verify(p)
    bc = clip(table_runs(p.reads(0)), [(49152, 50688)])  # D's B | C
    assert bc == [(0, 49152, 0, 0, 24576, 1536)]


def test_per_layer_kv_heads_gemma4():
    """Gemma-4-31B global layers hold 4 KV heads (sliding: 16). vLLM uses the model-wide
    K = 16: for P TP4 → D TP8 it sets f = r mod (Td/Tp) = r mod 2, so D rank 1 would read
    at offset 1·page_D inside P rank 0's one-head global page. kvplan reads D rank 1's
    replicated global head 0 from the start of P rank 0's page, and plans the pair vLLM
    stops with a block-size assert (global blocks 32 tokens at TP4, 16 at TP8)."""
    src, dst = vllm_engine("gemma-4-31b", 4), vllm_engine("gemma-4-31b", 8)
    assert src.layer_block_tokens(5)[0] == 32 and dst.layer_block_tokens(5)[0] == 16
    p = plan(src, dst)
    verify(p)
    t = p.reads(1)
    m = (t.layer == 5) & (t.dst_block == 0)
    assert set(t.src_rank[m].tolist()) == {0}
    assert t.src_offset[m].min() == 0, "vLLM's model-wide K would start at f·page_D = 1·page_D"


@pytest.mark.parametrize("backend,tp_p,tp_d", [
    ("flash_attn", 1, 4), ("flash_attn", 4, 1), ("flash_attn", 8, 2), ("flashinfer", 4, 1), ("flashinfer", 4, 2),
])
def test_non_dividing_block_sizes_are_planned(backend, tp_p, tp_d):
    """vLLM asserts when kernel blocks do not divide or D's is smaller (vectors bsr_*:
    Nemotron FlashAttention 2096 vs 1056; FlashInfer kernel 32 at TP4 vs 16 at TP1/2).
    kvplan plans the pair over the lcm token span; the plan verifies and lowers."""
    m = HYBRID_MODELS["nemotron-3-nano-30b-a3b"]
    src, dst = vllm_engine(m, tp_p, backend=backend), vllm_engine(m, tp_d, backend=backend)
    ks, kd = src.kernel_tokens, dst.kernel_tokens
    assert kd % ks or kd < ks, "vLLM accepts this pair; pick one it refuses"
    p = plan(src, dst)
    verify(p)
    tokens = 2 * src.block_tokens
    n_dst = -(-tokens // dst.block_tokens)
    attn = next(g for g in range(len(src.layer_groups)) if src.group_is_token(g))
    # pooled groups share regions: each group gets its own block ids
    lists = lambda n: [list(range(n)) if g == attn else [100 + g] for g in range(len(src.layer_groups))]  # noqa: E731
    t = p.lower(0, lists(2), lists(n_dst))
    assert t.total_bytes > 0


@pytest.mark.parametrize("tp_p,tp_d", [(4, 1), (4, 2), (8, 2)])
def test_prefill_tp_above_decode_tp_for_mamba(tp_p, tp_d):
    """vLLM's 3-read supports P_TP > D_TP, but with default block sizes most such pairs are
    refused by the kernel-block assert (Nemotron with FlashInfer: kernel 32 at TP4, 16 at
    TP1/2). kvplan plans them: every P rank of the D rank's group contributes its SSM heads,
    as vLLM's own SSM source list says (all Tp/Td candidates, even when attention reads
    de-duplicate)."""
    m = HYBRID_MODELS["nemotron-3-nano-30b-a3b"]
    p = plan(vllm_engine(m, tp_p), vllm_engine(m, tp_d))
    verify(p)
    t = p.reads(0)
    ssm = (t.layer == 0) & np.isin(t.component, [COMPONENT_CODE["ssm"], COMPONENT_CODE["mixed"]])
    assert sorted(set(t.src_rank[ssm].tolist())) == list(range(tp_p // tp_d))


MAMBA = Mamba2Spec(num_heads=8, head_dim=4, n_groups=4, d_state=4, conv_kernel=4)
HYBRID = ModelSpec(name="h", layers=(AttentionSpec(4, 16), MAMBA))


@pytest.mark.parametrize("field,value", [("ssm_dtype", "bfloat16"), ("conv_kernel", 3), ("n_groups", 2),
                                         ("conv_dtype", "float32")])
def test_state_geometry_mismatch_is_rejected(field, value):
    """vLLM validates no SSM geometry (ssm_sizes are never compared): SSM dtype, conv kernel,
    n_groups are outside its compatibility hash. kvplan raises naming both sides' values."""
    other = ModelSpec(name="h", layers=(HYBRID.layers[0], attrs.evolve(MAMBA, **{field: value})))
    with pytest.raises(ModelMismatchError, match=rf"{field}: prefill {getattr(MAMBA, field)!r} vs decode {value!r}"):
        plan(EngineSpec(model=HYBRID, tp=1), EngineSpec(model=other, tp=2))


def test_speculative_rows_mismatch_is_rejected():
    """Different num_speculative_tokens changes conv rows (conv_kernel − 1 + spec); vLLM
    reads them with its own row count silently if the speculative config hash does not
    cover it. kvplan raises naming both counts."""
    with pytest.raises(ModelMismatchError, match=r"num_speculative_tokens=0.*num_speculative_tokens=2"):
        plan(EngineSpec(model=HYBRID, tp=1), EngineSpec(model=HYBRID, tp=2, num_speculative_tokens=2))


def test_hybrid_attention_mismatch_is_rejected():
    """vLLM skips the attention block_len check for Mamba hybrids (it runs only for models
    without Mamba layers)."""
    other = ModelSpec(name="h", layers=(AttentionSpec(8, 16), MAMBA))
    with pytest.raises(ModelMismatchError, match=r"num_kv_heads: prefill 4 vs decode 8"):
        plan(EngineSpec(model=HYBRID, tp=1), EngineSpec(model=other, tp=1))


def test_non_divisible_tp_pair_is_planned():
    """vLLM asserts unless one TP divides the other (vector tp_ratio_nondivisible: P 3,
    D 2). kvplan plans P TP3 → D TP2 when each side shards the model (6 KV heads, 12
    Mamba heads in 6 groups): D rank 0's x channels come from P0 (all of its 4 heads)
    and P1 (its first 2 heads)."""
    spec = Mamba2Spec(num_heads=12, head_dim=4, n_groups=6, d_state=4, conv_kernel=4)
    model = ModelSpec(name="six", layers=(AttentionSpec(6, 16), spec))
    p = plan(EngineSpec(model=model, tp=3), EngineSpec(model=model, tp=2))
    verify(p)
    x = clip(table_runs(p.reads(0), layer=1), [(0, 6 * 4 * 3 * 2)])  # D's x: 24 channels x 3 taps x 2 B
    assert [(run[2], run[4], run[5]) for run in x] == [(0, 0, 96), (1, 0, 48)]


def test_sd_conv_layout_is_planned():
    """vLLM's NIXL path asserts the DS conv layout; kvplan plans SD on either side."""
    for a, b in (("SD", "DS"), ("DS", "SD"), ("SD", "SD")):
        verify(plan(EngineSpec(model=HYBRID, tp=1, conv_layout=a), EngineSpec(model=HYBRID, tp=2, conv_layout=b)))


def test_docs_list_every_item():
    from pathlib import Path

    text = (Path(__file__).parents[2] / "docs/vllm-differences.md").read_text()
    assert "## Where kvplan differs from vLLM 0.33" in text
    for name in [n for n in globals() if n.startswith("test_") and n != "test_docs_list_every_item"]:
        assert name in text, f"docs/vllm-differences.md does not name {name}"
