"""Conformance with vLLM 0.33.0 for hybrid geometry (Mamba1/Mamba2/GDN state, hybrid
block sizes, page unification, HMA groups, kernel blocks, prefix trimming).

Each hybrid vector of tests/data/vllm-0.33-vectors.json is one test. Expected values come
from the vectors (what vLLM's own functions returned) or from hand formulas of vLLM's
memory model and reads (docs/vllm-memory-model.md) written below, never from kvplan.
Byte maps are compared as canonical runs
``(dst region, dst start, src rank, src region, src start, nbytes)`` merged where
contiguous on both sides, so row or descriptor granularity never matters.

Where a vector's note says vLLM reads the wrong bytes (Mamba2 ``n_groups < TP``:
Granite-4.0-H, Falcon-H1; docs/vllm-differences.md, item 1) the test asserts kvplan
*differs*, that its plan passes `verify()`, and that the replicated B/C are read whole
from one source.
Vectors outside kvplan's model skip with the reason named in `OUT_OF_MODEL`.
"""

from __future__ import annotations


import numpy as np
import pytest

from kvplan import AttentionSpec, BlockError, EngineSpec, ModelSpec, plan, verify
from kvplan.spec import LayerGroup
from kvplan.models.hybrid import HYBRID_MODELS
from kvplan.presets import select_kernel_block_tokens, state_page_bytes, vllm_engine
from kvplan.layout import engine_memory, state_layout, state_natural_bytes, state_parts
from kvplan.spec import conv_rows
from kvplan.spec import GatedDeltaNetSpec, Mamba1Spec, Mamba2Spec
from kvplan.spec import COMPONENT_CODE

from _vectors import HYBRID_OPS, VECTORS  # noqa: E402  (tests/ is on sys.path)
from vllm_reference import canonical, clip, table_runs  # noqa: E402
# Attention-only HMA desc-id vectors exercised here through pooled / grouped engines.
HMA_VECTORS = frozenset({"descids_hma_shared", "descids_region_groups"})

OUT_OF_MODEL = {
    "physical_ratio": "legacy helper compute_physical_blocks_per_logical: vLLM 0.33's worker no longer calls "
                      "it (ppl comes from the handshake); kvplan derives ppl from block sizes",
    "local_splits": "descriptor-handle layout (how vLLM carves local NIXL handles per source rank): kvplan has "
                    "no handles; the bytes those handles address are compared by the worker_* vectors",
}
# Vectors where vLLM 0.33 reads wrong bytes (the vector notes say so: n_groups < TP).
VLLM_WRONG = frozenset({
    "conv3read_granite4_h_small_d2_p1_r1", "conv3read_granite4_h_small_d1_p2_r0", "conv3read_falcon_h1_7b_d4_p2_r3",
})

BACKEND_OF_SIZES = {("x16",): "flash_attn", (16, 32, 64): "flashinfer", (64,): "flashmla"}
STATE_CODES = {COMPONENT_CODE[c] for c in ("conv", "conv_x", "conv_B", "conv_C", "conv_Q", "conv_K", "conv_V", "ssm")}
TOKEN_CODES = {COMPONENT_CODE[c] for c in ("K", "V", "KV", "latent")}


def is_hybrid(vector) -> bool:
    spec = vector["input"]
    return (spec["op"] in HYBRID_OPS or vector["id"] in HMA_VECTORS
            or (spec["op"] in ("worker", "desc_ids", "tp_mapping") and "mamba" in spec.get("group_types", [])))


HYBRID_VECTORS = [v for v in VECTORS if is_hybrid(v)]


# -- vLLM vocabulary -> kvplan specs ---------------------------------------------------------


def state_spec(spec: dict):
    """A kvplan state spec from a vector's mamba description (dtypes default to bf16)."""
    family = spec["family"]
    dtypes = dict(conv_dtype=spec.get("conv_dtype", "bfloat16"), ssm_dtype=spec.get("ssm_dtype", "bfloat16"))
    if family == "mamba2":
        # vLLM's Mamba2 x width I = nheads·head_dim for these models
        assert spec["intermediate_size"] == spec["num_heads"] * spec["head_dim"]
        return Mamba2Spec(num_heads=spec["num_heads"], head_dim=spec["head_dim"], n_groups=spec["n_groups"],
                          d_state=spec["state_size"], conv_kernel=spec["conv_kernel"], **dtypes)
    if family == "mamba1":
        return Mamba1Spec(intermediate_size=spec["intermediate_size"], d_state=spec["state_size"],
                          conv_kernel=spec["conv_kernel"], **dtypes)
    if family == "gdn":
        return GatedDeltaNetSpec(num_k_heads=spec["num_k_heads"], num_v_heads=spec["num_v_heads"],
                                 head_k_dim=spec["head_k_dim"], head_v_dim=spec["head_v_dim"],
                                 conv_kernel=spec["conv_kernel"], **dtypes)
    raise AssertionError(f"unknown family {family}")


def dtype_size(name: str) -> int:
    return {"bfloat16": 2, "float16": 2, "float32": 4}[name]


# -- byte maps ------------------------------------------------------------------------------


def transfer_runs(t) -> list[tuple]:
    return canonical(zip(t.dst_region.tolist(), t.dst_offset.tolist(), t.src_rank.tolist(),
                         t.src_region.tolist(), t.src_offset.tolist(), t.nbytes.tolist()))


def expand_rows(rows) -> list[tuple[int, int, int]]:
    """NIXL N×5 descriptor rows (addr, len, dev, stride, count: `count` descriptors of `len`
    bytes, `stride` apart) -> ordered descriptors (region, offset, len)."""
    return [(row["region"], row["offset"] + i * row["stride"], row["len"]) for row in rows for i in range(row["count"])]


# -- per-operation checks -----------------------------------------------------------------


def vllm_shape_bytes(shapes, spec):
    conv, temporal = shapes
    return int(np.prod(conv)) * dtype_size(spec.conv_dtype), int(np.prod(temporal)) * dtype_size(spec.ssm_dtype)


def check_shapes_against(spec, tp: int, layout: str, shapes, num_spec: int = 0) -> None:
    """vLLM's (conv, temporal) shapes vs kvplan's state parts, bytes and conv field layout."""
    conv_shape, temporal = shapes
    parts, ssm = state_parts(spec, tp, 0)
    channels = sum(hi - lo for _, lo, hi in parts)
    rows = conv_rows(spec, num_spec)
    assert tuple(conv_shape) == ((channels, rows) if layout == "DS" else (rows, channels))
    assert ssm[1] - ssm[0] == temporal[0], "SSM heads (channels for Mamba1) held per rank"
    assert state_natural_bytes(spec, tp, num_spec) == vllm_shape_bytes(shapes, spec)
    # every conv element sits where a row-major array of vLLM's shape puts it
    e = dtype_size(spec.conv_dtype)
    geom = state_layout(spec, tp, 0, layout, num_spec, None)
    before = 0
    for field, (_, lo, hi) in zip(geom.components, parts):
        ch = np.arange(hi - lo)[:, None] + before
        tap = np.arange(rows)[None, :]
        got = field.layout(ch - before, tap)
        want = (ch * rows + tap) * e if layout == "DS" else (tap * channels + ch) * e
        assert np.array_equal(got, want), field.component
        before += hi - lo
    assert geom.components[-1].component == "ssm" and geom.components[-1].layout.offset == channels * rows * e


def check_state_shapes(vector):
    spec = vector["input"]
    check_shapes_against(state_spec(spec), spec["tp"], spec["layout"], vector["expected"]["shapes"])


def local_split(spec, tp: int):
    """kvplan's local DS conv split: [(offset, size)] per sub-projection, (conv, ssm) bytes."""
    geom = state_layout(spec, tp, 0, "DS", 0, None)
    parts, _ = state_parts(spec, tp, 0)
    rows, e = conv_rows(spec, 0), dtype_size(spec.conv_dtype)
    offsets = [(f.layout.offset, (hi - lo) * rows * e) for f, (_, lo, hi) in zip(geom.components, parts)]
    return offsets, state_natural_bytes(spec, tp, 0), [hi - lo for _, lo, hi in parts]


def vllm_conv_runs(exp, tp: int, remote_tp: int, rank: int) -> list[tuple]:
    """vLLM's 3-read (+SSM) of D rank `rank` as byte runs in one block (both TP directions:
    docs/vllm-memory-model.md, "State reads")."""
    local = exp["local_conv_offsets"]
    conv_d = exp["ssm_sizes"][0]
    runs = []
    if tp >= remote_tp:
        p = rank // (tp // remote_tp)
        for (lo, size), (ro, rlen) in zip(local, exp["remote_conv_offsets"]):
            assert size == rlen
            runs.append((0, lo, p, 0, ro, size))
        off, n = exp["remote_ssm_read"]
        runs.append((0, conv_d, p, 0, off, n))
    else:
        a = remote_tp // tp
        for k in range(a):
            p = rank * a + k
            for (lo, _), (ro, rlen) in zip(local, exp["remote_conv_offsets"]):
                runs.append((0, lo + k * rlen, p, 0, ro, rlen))
            off, n = exp["remote_ssm_read"]
            runs.append((0, conv_d + k * exp["remote_ssm_sizes"][1], p, 0, off, n))
    return canonical(runs)


def conv_split_plan(vector):
    spec = vector["input"]
    model = ModelSpec(name=vector["id"], layers=(state_spec(spec),))
    return plan(EngineSpec(model=model, tp=spec["remote_tp"]), EngineSpec(model=model, tp=spec["tp"]))


def check_conv_split(vector):
    spec, exp = vector["input"], vector["expected"]
    s = state_spec(spec)
    tp = spec["tp"]
    offsets, natural, dims = local_split(s, tp)
    assert dims == exp["local_proj_dims"]
    assert [size for _, size in offsets] == exp["proj_bytes"]
    assert [list(o) for o in offsets] == exp["local_conv_offsets"]
    assert list(natural) == exp["ssm_sizes"]
    assert sum(natural) == exp["page_size_bytes"] == state_page_bytes(s, tp)
    assert conv_rows(s, 0) == exp["conv_rows"]
    check_shapes_against(s, tp, "DS", exp["spec_shapes"])
    if "remote_tp" not in spec:
        return
    remote_offsets, remote_natural, _ = local_split(s, spec["remote_tp"])
    assert [list(o) for o in remote_offsets] == exp["remote_local_conv_offsets"]
    assert list(remote_natural) == exp["remote_ssm_sizes"]
    p = conv_split_plan(vector)
    got = table_runs(p.reads(spec["rank"]))
    want = vllm_conv_runs(exp, tp, spec["remote_tp"], spec["rank"])
    if vector["id"] not in VLLM_WRONG:
        assert got == want
        return
    # vLLM sizes B/C as if TP-sharded; they are replicated (n_groups < TP): kvplan differs ...
    assert got != want
    verify(p)
    # ... on B/C only: x and the SSM state are read exactly as vLLM reads them
    local = exp["local_conv_offsets"]
    x_ssm = [(0, local[0][1]), (exp["ssm_sizes"][0], exp["ssm_sizes"][0] + exp["ssm_sizes"][1])]
    if tp < spec["remote_tp"]:  # D gathers: its x is the a sources' x slices back to back
        x_ssm[0] = (0, local[0][1])
    assert clip(got, x_ssm) == clip(want, x_ssm)
    # ... and each replicated B/C is read whole, from one source, at that source's own B/C
    for j in (1, 2):
        d_off, d_size = local[j]
        r_off, r_size = exp["remote_local_conv_offsets"][j]
        assert r_size == d_size  # B/C bytes do not shrink with TP: replicated
        runs = clip(got, [(d_off, d_off + d_size)])
        assert len(runs) == 1, runs
        assert runs[0][1] == d_off and runs[0][4] == r_off and runs[0][5] == d_size
        assert clip(want, [(d_off, d_off + d_size)]) != runs


def hybrid_model(vector_input: dict, attention_layers: int = 1, state_layers: int = 1) -> ModelSpec:
    attention = AttentionSpec(num_kv_heads=vector_input["total_kv_heads"], head_dim=vector_input["head_dim"])
    return ModelSpec(name="vec", layers=(attention,) * attention_layers + (state_spec(vector_input["mamba"]),) * state_layers)


def check_hybrid_block_size(vector):
    spec, exp = vector["input"], vector["expected"]
    backend = BACKEND_OF_SIZES[tuple(spec["backend_sizes"])]
    model = hybrid_model(spec)
    e = vllm_engine(model, spec["tp"], backend=backend, block_size=spec.get("block_size"))
    assert e.block_tokens == exp["attn_block_size"]
    assert e.group_block_tokens(0)[0] == exp["attn_block_size"]
    assert e.page_bytes == exp["mamba_page_size_padded"]
    # the state layer's page in its pooled region is the padded page
    assert engine_memory(e).layer_layout(1, 0).page_bytes == (exp["mamba_page_size_padded"],)
    assert state_page_bytes(model.layers[1], spec["tp"]) == exp["mamba_page_bytes"]
    check_shapes_against(model.layers[1], spec["tp"], "DS", exp["mamba_state_shapes"])


def check_select_kernel_block(vector):
    spec = vector["input"]
    backends = tuple(BACKEND_OF_SIZES[tuple(b)] for b in spec["backends"])
    assert select_kernel_block_tokens(spec["block_size"], backends) == vector["expected"]["kernel_block_size"]


def _layer_index(name: str) -> int:
    return int(name.split(".")[1])


def check_unify_pages(vector):
    layers = vector["input"]["layers"]
    assert [_layer_index(x["name"]) for x in layers] == list(range(len(layers)))
    assert {x["block_size"] for x in layers} == {16}
    model = ModelSpec(name=vector["id"], layers=tuple(
        AttentionSpec(num_kv_heads=x["num_kv_heads"], head_dim=x["head_size"],
                      sliding_window=x.get("sliding_window") if x["kind"] == "swa" else None) for x in layers))
    e = vllm_engine(model, tp=1, block_size=16)  # num_kv_heads in the vector are per rank
    exp = vector["expected"]
    for i, x in enumerate(layers):
        want = exp["layers"][x["name"]]
        assert e.layer_block_tokens(i)[0] == want["block_size"]
        assert engine_memory(e).layer_layout(i, 0).block_bytes == (want["page_size_bytes"],)
        assert ("SlidingWindowSpec" if model.layers[i].sliding_window else "FullAttentionSpec") == want["type"]
    groups = [([_layer_index(n) for n in g["layers"]], g["block_size"]) for g in exp["groups"]]
    assert [([x for x in g.layers if x is not None], e.group_block_tokens(i)[0])
            for i, g in enumerate(e.layer_groups)] == groups


def _worker_engines(vector):
    """The vector's two engines via vllm_engine on a model with 2 attention + 2 Mamba
    layers: vLLM registers 2 regions there (the real Nemotron has 6), and with equal
    attention and Mamba counts HMA pools exactly 2 regions, each shared by both groups."""
    spec = vector["input"]
    model = hybrid_model(spec, attention_layers=2, state_layers=2)
    ppl_d, ppl_p = spec["phys_per_logical"], spec["remote_phys_per_logical"]
    dst = vllm_engine(model, spec["tp_size"], num_blocks=spec["num_blocks"] // ppl_d)
    src = vllm_engine(model, spec["remote_tp"], num_blocks=spec["remote_num_blocks"] // ppl_p)
    assert len(engine_memory(dst).regions) == len(engine_memory(src).regions) == spec["num_regions"]
    assert [g.layers for g in dst.layer_groups] == [(0, 1), (2, 3)]  # group 0 attention, 1 mamba
    assert dst.kernel_pages_per_block == ppl_d and src.kernel_pages_per_block == ppl_p
    assert dst.kernel_tokens == spec["kernel_block_tokens"]
    assert src.kernel_tokens == spec.get("remote_kernel_block_tokens", spec["kernel_block_tokens"])
    return src, dst


def vllm_worker_runs(vector) -> list[tuple]:
    """vLLM's descriptor rows + descriptor ids as byte runs.

    Descriptor lists are the FA rows then the Mamba rows, expanded in order, so a
    descriptor id indexes the expanded list directly. With block_size_ratio > 1 D
    receives P-sized sub-blocks; D holds one KV head here, so vLLM's receive-side
    permute ([heads][sub-blocks][tokens] -> [heads][tokens]) is the identity.
    """
    spec, exp = vector["input"], vector["expected"]
    assert exp["block_size_ratio"] == 1 or max(1, spec["total_kv_heads"] // spec["tp_size"]) == 1
    local = expand_rows(exp["fa_local"]) + expand_rows(exp["mamba_local"])
    remote = expand_rows(exp["fa_remote"]) + expand_rows(exp["mamba_remote"])
    runs = []
    for rank, read in exp["reads"].items():
        for li, ri in zip(read["local_desc_ids"], read["remote_desc_ids"], strict=True):
            (d_reg, d_off, d_len), (s_reg, s_off, s_len) = local[li], remote[ri]
            assert d_len == s_len
            runs.append((d_reg, d_off, int(rank), s_reg, s_off, d_len))
    return canonical(runs)


def check_worker(vector):
    spec, exp = vector["input"], vector["expected"]
    src, dst = _worker_engines(vector)
    # vLLM registers kernel-page lengths: the unified page over ppl
    assert dst.page_bytes // dst.kernel_pages_per_block == exp["local_block_len"]
    assert src.page_bytes // src.kernel_pages_per_block == exp["remote_block_len"]
    assert exp["mamba_local"][0]["stride"] == dst.page_bytes and exp["mamba_remote"][0]["stride"] == src.page_bytes
    local, remote = spec["block_ids"]["local"], spec["block_ids"]["remote"]
    p = plan(src, dst)
    t = p.lower(spec["tp_rank"], remote, local)
    assert transfer_runs(t) == vllm_worker_runs(vector)
    assert list(t.source_ranks) == exp["mapping"]["all_source_ranks"]


def _small_mamba():
    # conv (16 + 8 + 8) ch x 3 taps x 2 B = 192 B; SSM 4 x 4 x 4 x fp32 = 256 B
    return Mamba2Spec(num_heads=4, head_dim=4, n_groups=2, d_state=4, conv_kernel=4)


def _mamba_parts(spec):
    """Hand formula of the DS Mamba2 page at TP1: x | B | C | SSM (3 conv taps, bf16; fp32 SSM)."""
    x = spec.num_heads * spec.head_dim * 3 * 2
    b = spec.n_groups * spec.d_state * 3 * 2
    ssm = spec.num_heads * spec.head_dim * spec.d_state * 4
    return [("x", 0, x), ("B", x, x + b), ("C", x + b, x + 2 * b), ("ssm", x + 2 * b, x + 2 * b + ssm)]


def _pages_touched(t, page_bytes: int, kernel_bytes: int | None = None, parts=None) -> set:
    """(region, block, what) for every destination byte range of a Transfer; `what` is the
    kernel page (attention, `kernel_bytes` given) or the state sub-part (`parts`)."""
    out = set()
    for reg, off, n in zip(t.dst_region.tolist(), t.dst_offset.tolist(), t.nbytes.tolist()):
        # coalesced runs may span consecutive blocks: walk them block by block
        while n > 0:
            block, within = divmod(off, page_bytes)
            step = min(n, page_bytes - within)
            if parts is None:
                first, last = within // kernel_bytes, (within + step - 1) // kernel_bytes
                out |= {(reg, block * (page_bytes // kernel_bytes) + k, "fa") for k in range(first, last + 1)}
            else:
                out |= {(reg, block, name) for name, lo, hi in parts if lo < within + step and within < hi}
            off, n = off + step, n - step
    return out


def _vllm_pages(ids, spec, ppl: int) -> set:
    """Desc ids -> (region, block, what): FA ids r·N + k at kernel granularity, Mamba ids
    F + s·LB + b with s = SSM-region-index·4 + sub-part (F = regions·N: the attention ids
    come first; LB = N / ppl logical blocks)."""
    n = spec["num_blocks"]
    regions = spec["num_regions"]
    lb = n // ppl
    f = regions * n
    out = set()
    for d in ids:
        if d < f:
            out.add((d // n, d % n, "fa"))
        else:
            s, b = divmod(d - f, lb)
            ssm_index, part = divmod(s, 4)
            out.add((spec["ssm_regions"][ssm_index], b, ("x", "B", "C", "ssm")[part]))
    return out


def check_desc_ids(vector):
    spec, exp = vector["input"], vector["expected"]
    vid = vector["id"]
    if vid == "descids_hma_shared":
        # full + sliding layers, 2 pooled regions shared by both groups, via the preset
        full, swa = AttentionSpec(8, 128), AttentionSpec(8, 128, sliding_window=1024)
        e = vllm_engine(ModelSpec(name=vid, layers=(full, full, swa, swa)), tp=1, num_blocks=spec["num_blocks"])
        assert [g.layers for g in e.layer_groups] == [(0, 1), (2, 3)] and len(engine_memory(e).regions) == spec["num_regions"]
    elif vid == "descids_region_groups":
        # region_group_ids [0, 1, 1]: group 0 owns region 0, group 1 regions 1 and 2
        a = AttentionSpec(8, 128)
        model = ModelSpec(name=vid, layers=(a, AttentionSpec(8, 128, sliding_window=1024),
                                            AttentionSpec(8, 128, sliding_window=1024)))
        e = EngineSpec(model=model, groups=(LayerGroup((0,)), LayerGroup((1, 2))), num_blocks=spec["num_blocks"])
        assert [r.layers for r in engine_memory(e).regions] == [(0,), (1,), (2,)]
    else:
        return check_hybrid_desc_ids(vector)
    page = engine_memory(e).regions[0].block_bytes
    n = spec["num_blocks"]
    want = {(d // n, d % n, "fa") for d in exp["desc_ids"]}
    t = plan(e, e).lower(0, spec["block_ids"], spec["block_ids"])
    assert _pages_touched(t, page, page) == want


def check_hybrid_desc_ids(vector):
    """ut_desc_ids_*: 2 attention regions, one Mamba layer sharing region 0."""
    spec, exp = vector["input"], vector["expected"]
    ppl = spec.get("phys_per_logical", 1)
    mamba = _small_mamba()
    attention = AttentionSpec(num_kv_heads=1, head_dim=16)  # 64 B/token
    kernel_tokens = 16
    page = 64 * kernel_tokens * ppl  # >= the 448 B Mamba page
    e = EngineSpec(model=ModelSpec(name=vector["id"], layers=(attention, attention, mamba)),
                   block_tokens=kernel_tokens * ppl, kernel_block_tokens=kernel_tokens,
                   groups=(LayerGroup((0, 1)), LayerGroup((2, None))), pooled=True, page_bytes=page,
                   num_blocks=spec["num_blocks"] // ppl)
    assert [r.layers for r in engine_memory(e).regions] == [(0, 2), (1,)]  # ssm_regions [0]
    assert spec["ssm_regions"] == [0]
    want = _vllm_pages(exp["desc_ids"], spec, ppl)
    p = plan(e, e)
    fa_ids, ssm_ids = spec["block_ids"]
    # vLLM's FA ids are kernel ids; kvplan moves whole logical blocks (kernel id // ppl)
    logical = sorted({k // ppl for k in fa_ids})
    got_fa = _pages_touched(p.lower(0, [logical, []], [logical, []]), page, page // ppl)
    got_ssm = _pages_touched(p.lower(0, [[], ssm_ids], [[], ssm_ids]), page, parts=_mamba_parts(mamba))
    want_fa = {x for x in want if x[2] == "fa"}
    assert want_fa <= got_fa
    assert got_fa == {(r, b * ppl + j, "fa") for r in (0, 1) for b in logical for j in range(ppl)}
    assert got_ssm == {x for x in want if x[2] != "fa"}


def check_tp_mapping(vector):
    """SSM source ranks (every P rank of the group when Tp > Td) and attention sources."""
    spec, exp = vector["input"], vector["expected"]
    groups = spec["group_types"]
    mla = spec.get("is_mla", False) or "mla" in groups
    attention = (AttentionSpec(1, 576, mla=True) if mla else AttentionSpec(spec["total_kv_heads"], 128))
    model = ModelSpec(name=vector["id"], layers=(attention, HYBRID_MODELS["nemotron-3-nano-30b-a3b"].layers[0]))
    p = plan(EngineSpec(model=model, tp=spec["remote_tp"]), EngineSpec(model=model, tp=spec["tp_size"]))
    table = p.reads(spec["tp_rank"])
    g_state = groups.index("mamba")
    g_attn = 1 - g_state
    state_rows = np.isin(table.component, list(STATE_CODES))
    assert sorted(set(table.src_rank[state_rows].tolist())) == exp["source_ranks_per_group"][g_state]
    token_rows = np.isin(table.component, list(TOKEN_CODES))
    assert sorted(set(table.src_rank[token_rows].tolist())) == sorted(exp["source_ranks_per_group"][g_attn])
    assert list(table.source_ranks) == exp["all_source_ranks"]
    verify(p)


def check_block_size_ratio(vector):
    """vLLM asserts on kernel blocks that do not divide (Nemotron FlashAttention 1056 vs
    2096); kvplan plans the pair at the lcm span and the plan verifies."""
    spec = vector["input"]
    assert "expected_error" in vector
    m = HYBRID_MODELS["nemotron-3-nano-30b-a3b"]
    tp_of = {2096: 1, 1056: 4}  # FlashAttention keeps the logical block as the kernel block
    dst = vllm_engine(m, tp_of[spec["local_block"]], backend="flash_attn")
    src = vllm_engine(m, tp_of[spec["remote_block"]], backend="flash_attn")
    assert (dst.kernel_tokens, src.kernel_tokens) == (spec["local_block"], spec["remote_block"])
    p = plan(src, dst)
    verify(p)
    # a request of 4,192 prefill tokens: 2 blocks of 2096 = 4 of 1056 (+ 32 tokens); the
    # side with 1056-token blocks needs 4 (the last one partly used)
    n_src, n_dst = (2, 4) if src.block_tokens == 2096 else (4, 3)
    attn = next(g for g in range(len(src.layer_groups)) if src.group_is_token(g))
    # pooled groups share regions, so each group owns distinct block ids
    src_blocks = [list(range(n_src)) if g == attn else [100 + g] for g in range(len(src.layer_groups))]
    dst_blocks = [list(range(n_dst)) if g == attn else [100 + g] for g in range(len(dst.layer_groups))]
    t = p.lower(0, src_blocks, dst_blocks)
    tokens = min(n_src * src.block_tokens, n_dst * dst.block_tokens)
    heads_d = 2 if dst.tp == 1 else 1  # K = 2: TP1 holds both heads, TP4 one
    attn_bytes = tokens * heads_d * (128 + 128) * 2 * 6  # 6 attention layers
    state_bytes = 23 * sum(state_natural_bytes(m.layers[0], dst.tp, 0))  # 23 Mamba layers, one state each
    assert t.total_bytes == attn_bytes + state_bytes


def check_block_size_ratio_map(vector):
    """D kernel block 4x P's: vLLM expands D ids to P-sized sub-blocks, clipped to P's
    count. Same bytes with kvplan's logical blocks of 64 (D) and 16 (P) tokens."""
    spec, exp = vector["input"], vector["expected"]
    ratio = spec["ratio"]
    attention = AttentionSpec(num_kv_heads=1, head_dim=64)  # 256 B/token; one head: no permute
    mamba = _small_mamba()
    model = ModelSpec(name=vector["id"], layers=(attention, mamba))
    groups = (LayerGroup((0,)), LayerGroup((1,)))
    sub = 16 * 256
    src = EngineSpec(model=model, block_tokens=16, groups=groups, pooled=True, page_bytes=sub)
    dst = EngineSpec(model=model, block_tokens=16 * ratio, groups=groups, pooled=True, page_bytes=sub * ratio)
    t = plan(src, dst).lower(0, spec["remote"], spec["local"])
    (l_fa, l_ssm), (r_fa, r_ssm) = exp["local"], exp["remote"]
    state = sum(state_natural_bytes(mamba, 1, 0))
    want = [(0, d * sub, 0, 0, s * sub, sub) for d, s in zip(l_fa, r_fa, strict=True)]
    want += [(0, d * sub * ratio, 0, 0, s * sub, state) for d, s in zip(l_ssm, r_ssm, strict=True)]
    assert transfer_runs(t) == canonical(want)


def _trim_engines(vector):
    spec = vector["input"]
    types = spec["group_types"]
    if "mamba" not in types:
        full, swa = AttentionSpec(8, 128), AttentionSpec(8, 128, sliding_window=1024)
        e = vllm_engine(ModelSpec(name=vector["id"], layers=(full, swa)), tp=1)
        return e, e
    attention = AttentionSpec(num_kv_heads=1, head_dim=16)  # 64 B/token
    mamba = _small_mamba()
    model = ModelSpec(name=vector["id"], layers=(attention, mamba))
    groups = (LayerGroup((0,)), LayerGroup((1,)))

    def engine(ppl):
        # logical block = ppl kernel blocks of 16 tokens
        return EngineSpec(model=model, block_tokens=16 * ppl, kernel_block_tokens=16, groups=groups,
                          pooled=True, page_bytes=max(16 * ppl * 64, 448))

    return engine(spec["prefill_ppl"]), engine(spec["decode_ppl"])


def check_prefix_trim(vector):
    """vLLM trims P's lists before reading (prefix-cache rules, docs/vllm-memory-model.md,
    "Block ids of one request"); kvplan's lower(prefix="tail")
    reads the same bytes as an exact lower of vLLM's trimmed lists, and raises where
    vLLM asserts. Lists are logical blocks (the vectors' ppl are equal, or the kernel
    counts are divided by ppl)."""
    spec = vector["input"]
    src, dst = _trim_engines(vector)
    p = plan(src, dst)
    prefill, decode = spec["prefill"], spec["decode"]
    if "expected_error" in vector:
        if "decode_ppl" in spec and spec["decode_ppl"] != spec["prefill_ppl"]:
            # kernel ids -> logical blocks (counts divided by ppl)
            prefill = [list(range(len(prefill[0]) // spec["prefill_ppl"])), prefill[1]]
            decode = [list(range(len(decode[0]) // spec["decode_ppl"])), decode[1]]
        with pytest.raises(BlockError):
            p.lower(0, prefill, decode, prefix="tail")
        return
    exp = vector["expected"]
    tail = p.lower(0, prefill, decode, prefix="tail")
    exact = p.lower(0, exp["prefill"], exp["decode"])
    assert transfer_runs(tail) == transfer_runs(exact) and len(tail) > 0


def check_logical_to_kernel(vector):
    """Logical block b of an attention group covers kernel pages b·ppl ... b·ppl+ppl−1:
    the kernel pages kvplan writes are vLLM's kernel ids."""
    spec, exp = vector["input"], vector["expected"]
    ratio = spec["ratio"]
    full, swa = AttentionSpec(8, 128), AttentionSpec(8, 128, sliding_window=1024)
    # FlashInfer turns a 128-token block into 2 kernel pages of 64
    e = vllm_engine(ModelSpec(name=vector["id"], layers=(full, swa)), tp=1, block_size=64 * ratio)
    assert e.kernel_pages_per_block == ratio
    p = plan(e, e)
    page = e.page_bytes
    for g, (ids, kernel_ids) in enumerate(zip(spec["block_ids"], exp["kernel_block_ids"], strict=True)):
        lists = [ids if i == g else [] for i in range(2)]
        got = _pages_touched(p.lower(0, lists, lists), page, page // ratio)
        assert {k for _, k, _ in got} == set(kernel_ids)


CHECKS = {
    "state_shapes": check_state_shapes,
    "conv_split": check_conv_split,
    "hybrid_block_size": check_hybrid_block_size,
    "select_kernel_block": check_select_kernel_block,
    "unify_pages": check_unify_pages,
    "worker": check_worker,
    "desc_ids": check_desc_ids,
    "tp_mapping": check_tp_mapping,
    "block_size_ratio": check_block_size_ratio,
    "block_size_ratio_map": check_block_size_ratio_map,
    "prefix_trim": check_prefix_trim,
    "logical_to_kernel": check_logical_to_kernel,
}


@pytest.mark.parametrize("vector", HYBRID_VECTORS, ids=[v["id"] for v in HYBRID_VECTORS])
def test_hybrid_vector(vector):
    op = vector["input"]["op"]
    if op in OUT_OF_MODEL:
        pytest.skip(f"{vector['id']}: {OUT_OF_MODEL[op]}")
    CHECKS[op](vector)


def test_scope_is_explicit():
    """Every hybrid vector is checked or skipped for a named reason; the vLLM-wrong set
    is exactly the vectors whose note says n_groups < TP."""
    assert len(HYBRID_VECTORS) >= 60
    for v in HYBRID_VECTORS:
        assert v["input"]["op"] in CHECKS or v["input"]["op"] in OUT_OF_MODEL, v["id"]
    wrong = {v["id"] for v in VECTORS if "n_groups=1 < TP" in v.get("note", "")}
    assert wrong == VLLM_WRONG
