"""Fixed configurations whose plans and lowered requests must stay byte-identical.

`digests()` plans ~50 configurations (attention and hybrid, every KV layout and
storage, block sizes equal / dividing / not dividing, MLA, sliding windows, per-layer
heads, replication, PP, every conv strategy and conv layout, pooled and padded pages),
lowers one request on two decode ranks of each, and hashes every column. The digests
in `tests/data/plan_digests.json` were recorded with kvplan before its architecture
rework (issue 7); `tests/plan/test_plan_digests.py` compares today's code with them.

    python3 tests/plan/plan_digests.py > tests/data/plan_digests.json   # re-record (never casually)
"""

from __future__ import annotations

import hashlib
import json
import sys

import numpy as np

from kvplan import AttentionSpec, EngineSpec, ModelSpec, plan

TABLE_COLUMNS = ("src_rank", "layer", "component", "src_region", "dst_region", "src_block", "dst_block",
                 "src_offset", "dst_offset", "nbytes")
TRANSFER_COLUMNS = ("src_rank", "src_region", "src_offset", "dst_region", "dst_offset", "nbytes")


def _hash_columns(h, obj, columns) -> None:
    h.update(f"{len(obj.nbytes)}|".encode())
    for name in columns:
        h.update(np.ascontiguousarray(getattr(obj, name), dtype=np.int64).tobytes())


def _hash_regions(h, regions) -> None:
    h.update(repr([(r.block_bytes, r.stage, bool(r.per_request), tuple(r.layers)) for r in regions]).encode())


def plan_digest(p) -> str:
    """sha256 of every table (reads, pre and post steps) and both region tables."""
    h = hashlib.sha256()
    for tables in (p.tables, p.pre_tables, p.post_tables):
        h.update(f"tables {len(tables)}|".encode())
        for table in tables:
            h.update(f"rank {table.dst_rank}|".encode())
            _hash_columns(h, table, TABLE_COLUMNS)
    _hash_regions(h, p.src_regions)
    _hash_regions(h, p.dst_regions)
    return h.hexdigest()


def transfer_digest(t) -> str:
    """sha256 of a lowered Transfer with its pre and post steps."""
    h = hashlib.sha256()
    for part in (t, t.pre_steps, t.post_steps):
        if part is None:
            h.update(b"none|")
            continue
        h.update(f"rank {part.dst_rank}|".encode())
        _hash_columns(h, part, TRANSFER_COLUMNS)
    return h.hexdigest()


# -- configurations -------------------------------------------------------------------------

A = AttentionSpec


def _model(name, *layers) -> ModelSpec:
    return ModelSpec(name=name, layers=layers)


DENSE = _model("dense", *(A(8, 16),) * 3)
GQA2 = _model("gqa2", *(A(2, 8),) * 2)
MLA = _model("mla", *(A(1, 24, mla=True),) * 2)
MIXED = _model("mixed", A(8, 16, sliding_window=40), A(4, 32, head_dim_v=16), A(8, 16, sliding_window=40),
               A(4, 32, head_dim_v=16))
FP8 = _model("fp8", *(A(4, 16, dtype="float8_e4m3fn"),) * 2)


def _attention_cases():
    cases = []
    for i, (layout, storage) in enumerate([(lay, sto) for lay in ("HND", "NHD")
                                           for sto in ("packed", "separate", "blocks_first")]):
        for tps in ((2, 4), (4, 2)):
            cases.append((f"dense-{layout}-{storage}-{tps[0]}to{tps[1]}", DENSE,
                           dict(tp=tps[0], kv_layout=layout, kv_storage=storage, block_tokens=16),
                           dict(tp=tps[1], kv_layout=("NHD", "HND")[i % 2], kv_storage=storage, block_tokens=16)))
    cases += [
        ("dense-kernel-16-32-1to8", DENSE, dict(tp=1, block_tokens=16), dict(tp=8, block_tokens=32,
                                                                           kernel_block_tokens=16)),
        ("dense-nondividing-48-32-8to1", DENSE, dict(tp=8, block_tokens=48, kernel_block_tokens=16),
         dict(tp=1, block_tokens=32, kernel_block_tokens=8, kv_layout="NHD")),
        ("dense-pp2-2to4", DENSE, dict(tp=2, pp=2, block_tokens=16), dict(tp=4, pp=3, block_tokens=16)),
        ("gqa2-replicated-1to8", GQA2, dict(tp=1), dict(tp=8)),
        ("gqa2-replicated-8to2", GQA2, dict(tp=8, kv_layout="NHD"), dict(tp=2, kv_storage="separate")),
        ("gqa2-replicated-16to4", GQA2, dict(tp=16, block_tokens=8), dict(tp=4, block_tokens=24,
                                                                        kernel_block_tokens=8)),
        ("mla-8to2", MLA, dict(tp=8), dict(tp=2)),
        ("mla-1to4-blocks", MLA, dict(tp=1, block_tokens=64), dict(tp=4, block_tokens=16)),
        ("mixed-heads-window-2to4", MIXED, dict(tp=2), dict(tp=4, kv_layout="NHD")),
        ("mixed-heads-window-4to1", MIXED, dict(tp=4, block_tokens=32, kernel_block_tokens=16),
         dict(tp=1, block_tokens=16, kv_storage="blocks_first")),
        ("fp8-2to1", FP8, dict(tp=2, kv_storage="separate"), dict(tp=1)),
    ]
    return cases


def _hybrid_cases():
    from kvplan.models.hybrid import HYBRID_MODELS
    from kvplan.presets import hma_groups, vllm_engine
    from kvplan.spec import GatedDeltaNetSpec, Mamba1Spec, Mamba2Spec, ShortConvSpec

    cases = []
    nemotron = HYBRID_MODELS["nemotron-3-nano-30b-a3b"]
    for strategy in ("direct", "staged", "permuted"):
        for tps in ((1, 2), (2, 1), (4, 2)):
            cases.append((f"nemotron-vllm-{tps[0]}to{tps[1]}-{strategy}", ("vllm", nemotron, tps), strategy))
    granite = HYBRID_MODELS["granite-4.0-h-small"]
    for tps in ((1, 2), (2, 1)):
        cases.append((f"granite-vllm-{tps[0]}to{tps[1]}", ("vllm", granite, tps), "direct"))
    qwen = HYBRID_MODELS["qwen3-next-80b-a3b"]
    cases.append(("qwen3next-vllm-1to2-staged", ("vllm", qwen, (1, 2)), "staged"))
    for name, tps, strategy in (("jamba-v0.1", (1, 2), "permuted"), ("falcon-h1-7b", (2, 1), "direct"),
                                ("gemma-4-31b", (2, 1), "direct")):
        cases.append((f"{name}-vllm-{tps[0]}to{tps[1]}-{strategy}", ("vllm", HYBRID_MODELS[name], tps), strategy))

    att = A(4, 8)
    m2 = Mamba2Spec(num_heads=8, head_dim=2, n_groups=2, d_state=4, conv_kernel=4, conv_dtype="float16",
                    ssm_dtype="float32")
    m1 = Mamba1Spec(intermediate_size=8, d_state=3, conv_kernel=3)
    gdn = GatedDeltaNetSpec(num_k_heads=4, num_v_heads=8, head_k_dim=2, head_v_dim=3, conv_kernel=4)
    sc = ShortConvSpec(conv_dim=12, conv_kernel=3, conv_dtype="float32")
    toy = _model("toy-hybrid", m2, att, m2, m1, gdn, att, sc)
    for strategy in ("direct", "staged", "permuted"):
        for (conv_src, conv_dst), tps in ((("DS", "SD"), (1, 4)), (("SD", "DS"), (4, 2)), (("SD", "SD"), (2, 1))):
            src = dict(tp=tps[0], conv_layout=conv_src, block_tokens=8, num_speculative_tokens=1)
            dst = dict(tp=tps[1], conv_layout=conv_dst, block_tokens=4, kernel_block_tokens=2,
                       num_speculative_tokens=1, kv_layout="NHD")
            cases.append((f"toy-{conv_src}{conv_dst}-{tps[0]}to{tps[1]}-{strategy}", ("engines", toy, src, dst),
                          strategy))
    pool = _model("pool-hybrid", m2, m2, att, m2, m2, att)
    groups = hma_groups(pool)
    for strategy in ("direct", "permuted"):
        src = dict(tp=2, groups=groups, pooled=True, page_bytes=4096, block_tokens=16)
        dst = dict(tp=1, groups=groups, pooled=True, page_bytes=8192, block_tokens=32, kernel_block_tokens=16,
                   conv_layout="SD")
        cases.append((f"pooled-2to1-{strategy}", ("engines", pool, src, dst), strategy))
    padded = _model("padded-hybrid", att, m1, att, m1)
    cases.append(("padded-1to2", ("engines", padded, dict(tp=1, page_bytes=512), dict(tp=2, page_bytes=1000)),
                  "direct"))
    return cases, vllm_engine


def _request(engine, rng, num_blocks: int, tokens: int, pool):
    """One block list per group (a flat list for one group), ids drawn from `pool`."""
    lists = []
    for g in range(len(engine.layer_groups)):
        if engine.group_is_token(g):
            count = -(-tokens // engine.group_block_tokens(g)[0])
        else:
            count = 2
        lists.append([int(b) for b in pool[:count]])
        pool = pool[count:]
    return lists[0] if len(lists) == 1 else lists


def configurations():
    """[(name, src EngineSpec, dst EngineSpec, conv_strategy)]."""
    out = []
    for name, model, src, dst in _attention_cases():
        out.append((name, EngineSpec(model=model, **src), EngineSpec(model=model, **dst), "direct"))
    hybrid, vllm_engine = _hybrid_cases()
    for name, how, strategy in hybrid:
        if how[0] == "vllm":
            _, model, tps = how
            src, dst = vllm_engine(model, tps[0]), vllm_engine(model, tps[1])
        else:
            _, model, s, d = how
            src, dst = EngineSpec(model=model, **s), EngineSpec(model=model, **d)
        out.append((name, src, dst, strategy))
    return out


def digests() -> dict[str, dict[str, str]]:
    out = {}
    for index, (name, src, dst, strategy) in enumerate(configurations()):
        p = plan(src, dst, conv_strategy=strategy)
        entry = {"plan": plan_digest(p)}
        rng = np.random.default_rng(index)
        tokens = 3 * max(src.block_tokens, dst.block_tokens) - 5
        for dst_rank in sorted({0, dst.world_size - 1}):
            src_pool, dst_pool = rng.permutation(400), rng.permutation(400)
            src_blocks = _request(src, rng, 400, tokens, src_pool)
            dst_blocks = _request(dst, rng, 400, tokens, dst_pool)
            entry[f"lower {dst_rank}"] = transfer_digest(p.lower(dst_rank, src_blocks, dst_blocks))
        out[name] = entry
    return out


if __name__ == "__main__":
    json.dump(digests(), sys.stdout, indent=1, sort_keys=True)
    sys.stdout.write("\n")
