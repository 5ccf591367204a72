"""Conformance with vLLM 0.33.0's NIXL geometry (tests/data/vllm-0.33-vectors.json: values
vLLM's own functions returned, vendored here).

Every vector is collected as one test. For the attention vectors kvplan builds the
same configuration, plans it, and the test compares *bytes*: which source rank and
which source bytes land on which destination bytes, never row or descriptor
granularity. vLLM's descriptor rows and descriptor ids are expanded into such byte
maps by the helpers below, written from vLLM's descriptor rules (docs/vllm-memory-model.md,
"Attention reads across TP sizes" and "Descriptor lists and ids"), not from kvplan.

Scope: attention (full, sliding, MLA), including HMA layer groups over pooled or
group-owned regions. Vectors of hybrid operations (Mamba / GDN conv split, state
shapes, hybrid block sizes, page unification, ...) are checked in
`tests/conformance/test_conformance_hybrid.py` and not collected here; tp_mapping
vectors whose groups include "mamba" check their attention groups here. `test_scope_is_explicit`
keeps the classification exhaustive.

Unless a vector says otherwise: head_dim 128, bf16, 16-token kernel blocks (vLLM's
worker vectors' block lengths confirm these: 2 heads x 16 tokens x 512 B = 16,384).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from kvplan import AttentionSpec, EngineSpec, ModelSpec, ShardingError, plan, verify
from kvplan.layout import engine_memory
from kvplan.spec import LayerGroup
from kvplan.spec import pp_layer_ranges

from _vectors import HYBRID_OPS, VECTORS  # noqa: E402  (tests/ is on sys.path)
from vllm_reference import vllm_attention_reads  # noqa: E402

HEAD_DIM = 128
CELL_BYTES = (HEAD_DIM + HEAD_DIM) * 2  # K|V of one head and token, bf16
MLA_WIDTH = 576  # DeepSeek-style latent: kv_lora_rank 512 + rope 64


def _skip_reason(vector) -> str | None:
    spec = vector["input"]
    op, vid = spec["op"], vector["id"]
    groups = spec.get("group_types", [])
    if op in HYBRID_OPS or (op in ("worker", "desc_ids") and "mamba" in groups):
        return f"hybrid: issue 3 ({op} vector {vid})"
    return None


# -- building kvplan configurations from vLLM's vocabulary ---------------------------


def _layer(group_type: str, k: int, head_dim: int | None = None) -> AttentionSpec:
    if group_type == "mla":
        return AttentionSpec(num_kv_heads=1, head_dim=head_dim or MLA_WIDTH, mla=True)
    window = 1024 if group_type == "swa" else None
    return AttentionSpec(num_kv_heads=k, head_dim=head_dim or HEAD_DIM, sliding_window=window)


def _page_bytes(group_type: str, k: int, tp: int, tokens: int = 16) -> int:
    """vLLM's per-rank attention page: H(t)·Nk·C, or Nk·latent for MLA."""
    if group_type == "mla":
        return tokens * MLA_WIDTH * 2
    return max(1, k // tp) * tokens * CELL_BYTES


def _runs(src_rank, src_off, dst_off, nbytes):
    """Byte map of one layer's rows as maximal [(src rank, src start, src end, dst start, dst end)]."""
    order = np.argsort(np.asarray(dst_off), kind="stable")
    runs = []
    for p, s, d, n in zip(*(np.asarray(c)[order].tolist() for c in (src_rank, src_off, dst_off, nbytes))):
        if runs and runs[-1][0] == p and runs[-1][2] == s and runs[-1][4] == d:
            runs[-1] = (p, runs[-1][1], s + n, runs[-1][3], d + n)
        else:
            runs.append((p, s, s + n, d, d + n))
    return runs


def _layer_runs(table, layer):
    m = table.layer == layer
    assert set(table.src_block[m].tolist()) <= {0} and set(table.dst_block[m].tolist()) <= {0}
    return _runs(table.src_rank[m], table.src_offset[m], table.dst_offset[m], table.nbytes[m])


# -- per-operation checks --------------------------------------------------------------


def check_head_offset(vector):
    """compute_head_offset f: D rank r reads its page from P rank ⌊r·Tp/Td⌋ at f·page_D
    (vLLM's source-rank and head-offset rules, docs/vllm-memory-model.md)."""
    spec = vector["input"]
    k, r, td, tp = spec["total_kv_heads"], spec["tp_rank"], spec["tp_size"], spec["remote_tp"]
    model = ModelSpec(name="vec", layers=(_layer("full", k),))
    p = plan(EngineSpec(model=model, tp=tp), EngineSpec(model=model, tp=td))
    page = _page_bytes("full", k, td)
    f = vector["expected"]["head_offset"]
    assert _layer_runs(p.reads(dst_rank=r), 0) == [(r * tp // td, f * page, (f + 1) * page, 0, page)]


def check_tp_mapping(vector):
    """Attention sources, slots and offset factor, as bytes.

    Td >= Tp (or MLA): one source p, D page = P bytes [f·page_D, (f+1)·page_D).
    Tp > Td: source p (slot s of n sources) fills D bytes [s·page_D/n, (s+1)·page_D/n)
    from the start of its own page (vLLM's remote rows and local split handles). Mamba
    groups are not checked here.
    """
    spec, exp = vector["input"], vector["expected"]
    k, r, td, tp = spec["total_kv_heads"], spec["tp_rank"], spec["tp_size"], spec["remote_tp"]
    groups = spec["group_types"]
    attention = [(g, t) for g, t in enumerate(groups) if t != "mamba"]
    model = ModelSpec(name="vec", layers=tuple(_layer(t, k) for _, t in attention))
    p = plan(EngineSpec(model=model, tp=tp), EngineSpec(model=model, tp=td))
    table = p.reads(dst_rank=r)
    f = exp["rank_offset_factor"]
    slots = {int(rank): slot for rank, slot in exp["rank_to_attention_slot"].items()}
    for layer, (g, group_type) in enumerate(attention):
        sources = exp["source_ranks_per_group"][g]
        page = _page_bytes(group_type, k, td)
        if group_type == "mla" or td >= tp:
            assert len(sources) == 1
            want = [(sources[0], f * page, (f + 1) * page, 0, page)]
        else:
            unit = page // len(sources)
            want = sorted(((s, 0, unit, slots[s] * unit, (slots[s] + 1) * unit) for s in sources),
                          key=lambda run: run[3])
        assert _layer_runs(table, layer) == want, f"group {g} ({group_type})"
    if "mamba" not in groups:
        assert list(table.source_ranks) == exp["all_source_ranks"]


def _vllm_descriptors(rows):
    """Expand N×5 descriptor rows (addr, len, dev, stride, count) into the ordered list of
    (region, offset, length)."""
    return [(row["region"], row["offset"] + i * row["stride"], row["len"])
            for row in rows for i in range(row["count"])]


def _vllm_blocksize_postprocess(offset, page, ratio, heads, remote_tokens, cell):
    """Where a byte received into a D kernel page ends up after vLLM's receive-side
    permute for block_size_ratio > 1 (nixl connector, kv_postprocess_blksize_on_receive,
    HND): the page was filled as `ratio` P-shaped sub-blocks [heads][remote_tokens][cell]
    and is permuted to [heads][ratio·remote_tokens][cell]. Not part of the descriptors."""
    block, within = np.divmod(offset, page)
    sub, rest = np.divmod(within, heads * remote_tokens * cell)
    head, rest = np.divmod(rest, remote_tokens * cell)
    return block * page + head * (ratio * remote_tokens * cell) + sub * (remote_tokens * cell) + rest


def _vllm_byte_map(vector):
    """(dst region, dst byte) -> (src rank, src region, src byte) of vLLM's reads, sorted by dst."""
    spec, exp = vector["input"], vector["expected"]
    local, remote = _vllm_descriptors(exp["fa_local"]), _vllm_descriptors(exp["fa_remote"])
    parts = []
    for rank, read in exp["reads"].items():
        for li, ri in zip(read["local_desc_ids"], read["remote_desc_ids"], strict=True):
            (dreg, doff, dlen), (sreg, soff, slen) = local[li], remote[ri]
            assert dlen == slen
            a = np.arange(dlen, dtype=np.int64)
            parts.append(np.stack([np.full(dlen, dreg), doff + a, np.full(dlen, int(rank)),
                                   np.full(dlen, sreg), soff + a]))
    m = np.concatenate(parts, axis=1)
    ratio = exp["block_size_ratio"]
    if ratio > 1:
        heads = max(1, spec["total_kv_heads"] // spec["tp_size"])
        m[1] = _vllm_blocksize_postprocess(m[1], exp["local_block_len"], ratio, heads,
                                           spec["remote_kernel_block_tokens"], CELL_BYTES)
    return m[:, np.lexsort((m[1], m[0]))]


def _transfer_byte_map(t):
    parts = []
    for sr, sreg, so, dreg, do, n in zip(*(c.tolist() for c in (t.src_rank, t.src_region, t.src_offset,
                                                                 t.dst_region, t.dst_offset, t.nbytes))):
        a = np.arange(n, dtype=np.int64)
        parts.append(np.stack([np.full(n, dreg), do + a, np.full(n, sr), np.full(n, sreg), so + a]))
    m = np.concatenate(parts, axis=1)
    return m[:, np.lexsort((m[1], m[0]))]


def check_worker(vector):
    """Whole-rank dense geometry: vLLM's descriptor rows + desc ids as a byte map versus
    kvplan's lowered Transfer for the same logical block ids."""
    spec, exp = vector["input"], vector["expected"]
    k, r, td, tp = spec["total_kv_heads"], spec["tp_rank"], spec["tp_size"], spec["remote_tp"]
    mla = spec.get("is_mla", False)
    group_type = "mla" if mla else "full"
    local_tokens = spec.get("kernel_block_tokens", 16)
    remote_tokens = spec.get("remote_kernel_block_tokens", local_tokens)
    model = ModelSpec(name="vec", layers=(_layer(group_type, k, spec["head_dim"]),) * spec["num_regions"])
    src = EngineSpec(model=model, tp=tp, block_tokens=remote_tokens, num_blocks=spec["remote_num_blocks"])
    dst = EngineSpec(model=model, tp=td, block_tokens=local_tokens, num_blocks=spec["num_blocks"])
    # page sizes are bytes too: vLLM's registered block lengths
    assert engine_memory(dst).regions[0].block_bytes == exp["local_block_len"]
    assert engine_memory(src).regions[0].block_bytes == exp["remote_block_len"]
    (local_ids,), (remote_ids,) = spec["block_ids"]["local"], spec["block_ids"]["remote"]
    t = plan(src, dst).lower(r, remote_ids, local_ids)
    got, want = _transfer_byte_map(t), _vllm_byte_map(vector)
    assert got.shape == want.shape, f"kvplan moves {got.shape[1]} bytes, vLLM {want.shape[1]}"
    assert np.array_equal(got, want)


def _desc_id_engines(spec):
    """P and D engines for a desc_ids vector: one layer per (group, region) it addresses.

    Regions shared by every group (region_group_ids all -1) are vLLM's pooled HMA
    regions: slot s of every group lives in region s. Regions owned by one group each
    (uses_region_group_mapping) are that group's own layers. With a block_size_ratio, D
    blocks are `ratio` times P's 16 tokens.
    """
    regions, groups = spec["num_regions"], spec["group_types"]
    owners = spec.get("region_group_ids", [-1] * regions)
    pooled = all(owner == -1 for owner in owners)
    if pooled:
        layers = [_layer(t, 8) for t in groups for _ in range(regions)]
        members = [tuple(range(g * regions, (g + 1) * regions)) for g in range(len(groups))]
    else:
        layers = [_layer(groups[owner], 8) for owner in owners]
        members = [tuple(r for r, owner in enumerate(owners) if owner == g) for g in range(len(groups))]
    model = ModelSpec(name="vec", layers=tuple(layers))
    ratio = spec.get("block_size_ratio", 1)
    kw = {"groups": tuple(LayerGroup(m) for m in members), "pooled": pooled}
    return (EngineSpec(model=model, block_tokens=16, **kw),
            EngineSpec(model=model, block_tokens=16 * ratio, num_blocks=spec["num_blocks"], **kw))


def check_desc_ids(vector):
    """The D bytes vLLM's local descriptor ids address equal the D bytes kvplan writes.

    Id d addresses region d // (N·ratio), sub-block d mod (N·ratio): sub-block j of D
    block b is id b·ratio + j (vLLM numbers D's P-sized sub-blocks consecutively when the
    kernel block ratio is > 1); a sub-block is 1/ratio of the page
    (vLLM's receive-side permute moves bytes only inside the block, so the set of D
    bytes is what it is before the permute)."""
    spec, exp = vector["input"], vector["expected"]
    ratio, n = spec.get("block_size_ratio", 1), spec["num_blocks"]
    src, dst = _desc_id_engines(spec)
    page = engine_memory(dst).regions[0].block_bytes
    sub = page // ratio
    want = set()
    for d in exp["desc_ids"]:
        region, rest = divmod(d, n * ratio)
        block, j = divmod(rest, ratio)
        want |= {(region, x) for x in range(block * page + j * sub, block * page + (j + 1) * sub)}
    dst_blocks = [sorted({b // ratio for b in ids}) for ids in spec["block_ids"]]
    src_blocks = [list(range(len(ids))) for ids in spec["block_ids"]] if ratio > 1 else spec["block_ids"]
    t = plan(src, dst).lower(0, src_blocks, dst_blocks)
    got = [(reg, x) for reg, o, nb in zip(t.dst_region.tolist(), t.dst_offset.tolist(), t.nbytes.tolist())
           for x in range(o, o + nb)]
    assert len(got) == len(set(got)), "a destination byte is written twice"
    assert set(got) == want


def check_pp_indices(vector):
    spec = vector["input"]
    got = pp_layer_ranges(spec["num_layers"], spec["pp_size"])
    assert [list(r) for r in got] == vector["expected"]["per_rank"]


def check_tp_ratio(vector):
    """vLLM rejects TP sizes that do not divide (P 3 -> D 2). kvplan plans any pair whose
    sides each shard the model: 6 KV heads over P TP 3 (2 per rank) and D TP 2 (3 per
    rank) give a correct plan (bytes by hand below); 8 heads cannot be split over TP 3,
    which raises ShardingError naming both numbers."""
    spec = vector["input"]
    td, tp = spec["tp_size"], spec["remote_tp"]
    assert (tp, td) == (3, 2)
    six = ModelSpec(name="six-heads", layers=(_layer("full", 6),) * 2)
    p = plan(EngineSpec(model=six, tp=tp), EngineSpec(model=six, tp=td))
    verify(p)
    head = 16 * CELL_BYTES  # 8,192
    # D0 heads 0,1,2 = P0's heads 0,1 + P1's head 2 (its first); D1 = P1's head 3 + P2's 4,5
    assert _layer_runs(p.reads(dst_rank=0), 1) == [(0, 0, 2 * head, 0, 2 * head), (1, 0, head, 2 * head, 3 * head)]
    assert _layer_runs(p.reads(dst_rank=1), 1) == [(1, head, 2 * head, 0, head), (2, 0, 2 * head, head, 3 * head)]
    eight = ModelSpec(name="eight-heads", layers=(_layer("full", 8),))
    with pytest.raises(ShardingError, match=r"8 .*TP 3"):
        EngineSpec(model=eight, tp=tp)


CHECKS = {
    "head_offset": check_head_offset,
    "tp_mapping": check_tp_mapping,
    "worker": check_worker,
    "desc_ids": check_desc_ids,
    "pp_indices": check_pp_indices,
    "tp_ratio": check_tp_ratio,
}


ATTENTION_VECTORS = [v for v in VECTORS if not _skip_reason(v)]


@pytest.mark.parametrize("vector", ATTENTION_VECTORS, ids=[v["id"] for v in ATTENTION_VECTORS])
def test_vector(vector):
    CHECKS[vector["input"]["op"]](vector)


def test_hybrid_vectors_are_checked_elsewhere():
    """Each vector left out here is named by the hybrid conformance suite."""
    hybrid_suite = (Path(__file__).parent / "test_conformance_hybrid.py").read_text()
    for vector in VECTORS:
        if _skip_reason(vector):
            op = vector["input"]["op"]
            assert vector["id"] in hybrid_suite or f'"{op}"' in hybrid_suite, vector["id"]


def test_scope_is_explicit():
    """Every vector is either checked or skipped for a named reason; none slips through."""
    for vector in VECTORS:
        assert vector["input"]["op"] in CHECKS or _skip_reason(vector), vector["id"]
    checked = [v["id"] for v in VECTORS if not _skip_reason(v)]
    assert len(checked) >= 50  # head offsets, TP mappings, dense workers, desc ids, PP, ratio
    assert {"descids_hma_shared", "descids_region_groups", "descids_ratio_expand"} <= set(checked)


TP_SIZES = (1, 2, 4, 8, 16)


@pytest.mark.parametrize(("k", "group_type"), [(1, "mla"), (1, "full"), (2, "full"), (4, "full"), (8, "full"),
                                               (16, "full")])
def test_every_tp_pair_reads_what_vllm_reads(k, group_type):
    """Beyond the vectors: for every TP pair of {1..16}² (both directions, replication
    on either side), each D rank reads the same bytes from the same P ranks as vLLM's
    formulas say (`vllm_attention_reads`), including pairs vLLM itself refuses
    (P replicating KV with Tp > Td, where vLLM asserts), whose formulas still describe
    the only correct, de-duplicated reads."""
    model = ModelSpec(name="sweep", layers=(_layer(group_type, k),))
    for tp_p in TP_SIZES:
        for tp_d in TP_SIZES:
            p = plan(EngineSpec(model=model, tp=tp_p), EngineSpec(model=model, tp=tp_d))
            page = _page_bytes(group_type, k, tp_d)
            for r in range(tp_d):
                want = [(src, s0, s1, d0, d1) for src, (s0, s1), (d0, d1)
                        in vllm_attention_reads(k, tp_p, tp_d, r, page, group_type == "mla")]
                assert _layer_runs(p.reads(dst_rank=r), 0) == want, (k, tp_p, tp_d, r)


def _vllm_worker_by_rules(k, tp_p, tp_d, r, nk_p, nk_d, nb_p, nb_d, local_ids, remote_ids):
    """A `worker` vector built from vLLM's descriptor rules (one region, Td >= Tp, HND),
    for configurations the recorded vectors do not combine (TP ratio and kernel block
    ratio at once). Local ids expand b -> b·bsr ... b·bsr+bsr-1, clipped to the remote count."""
    bsr = nk_d // nk_p
    len_d = max(1, k // tp_d) * nk_d * CELL_BYTES
    len_p = max(1, k // tp_p) * nk_p * CELL_BYTES
    f = vllm_attention_reads(k, tp_p, tp_d, r, len_d // bsr)[0][1][0] // (len_d // bsr)
    unit = len_d // bsr
    local = [b * bsr + j for b in local_ids for j in range(bsr)][:len(remote_ids)]
    return {
        "input": {"tp_rank": r, "tp_size": tp_d, "remote_tp": tp_p, "total_kv_heads": k, "head_dim": HEAD_DIM,
                  "num_regions": 1, "kernel_block_tokens": nk_d, "remote_kernel_block_tokens": nk_p,
                  "num_blocks": nb_d, "remote_num_blocks": nb_p,
                  "block_ids": {"local": [local_ids], "remote": [remote_ids]}},
        "expected": {
            "local_block_len": len_d, "remote_block_len": len_p, "block_size_ratio": bsr,
            "fa_local": [{"region": 0, "offset": 0, "len": unit, "stride": unit, "count": nb_d * bsr}],
            "fa_remote": [{"region": 0, "offset": f * unit, "len": unit, "stride": len_p, "count": nb_p}],
            "reads": {str(r * tp_p // tp_d): {"local_desc_ids": local, "remote_desc_ids": list(remote_ids)}},
        },
    }


@pytest.mark.parametrize(("k", "tp_p", "tp_d", "r"), [(8, 2, 4, 3), (8, 1, 8, 5), (4, 2, 8, 6), (2, 1, 4, 3)])
def test_tp_ratio_and_block_ratio_together_match_vllm_rules(k, tp_p, tp_d, r):
    """P 16-token kernel blocks, D 64-token ones (bsr 4) and a TP ratio at once: kvplan's
    bytes equal vLLM's descriptor rules followed by its receive-side permute."""
    remote_ids = [9, 2, 3, 4, 5, 6, 11]  # 7 P blocks = 112 tokens -> 2 D blocks
    vector = _vllm_worker_by_rules(k, tp_p, tp_d, r, 16, 64, 40, 10, [7, 1], remote_ids)
    check_worker(vector)
