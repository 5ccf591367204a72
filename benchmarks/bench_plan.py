"""CPU cost of planning: plan() and lower() for an 80-layer model, next to plain numpy;
plan() for a hybrid model across TP pairs and conv strategies.

    python3 benchmarks/bench_plan.py [--blocks 4096] [--repeats 7]

Model: Llama-3.1-70B (80 layers, 8 KV heads x 128, bf16), vLLM default layout, 16-token
blocks on both sides. For each TP pair (P -> D):

* plan ms: median wall time of `plan(P, D)` (every decode rank). Geometry is cached per
  layer spec inside kvplan, so repeats after the first reuse it; the first call of
  each pair is excluded from the median like any other warm-up.
* lower ms: median of `plan.lower(0, src_blocks, dst_blocks)` for one request of
  `--blocks` logical blocks on decode rank 0, with block ids drawn at random without
  replacement from a 65,536-block pool (a fragmented cache: consecutive ids would let
  whole requests merge into a few rows and flatter lower()).
* lower + columns ms: the same call with the Transfer's columns read
  (`.columns()`): `lower()` keeps a request's copies compact and expands the six int64
  columns on first read, so this is what a consumer of rows pays, and what the numpy
  baseline below is a floor of.
* rows: rows of the resulting `Transfer` (after merging).
* numpy ms: the baseline. The median time plain vectorised numpy needs to materialise
  the same number of rows as six contiguous int64 columns (src_rank, src_region,
  src_offset, dst_region, dst_offset, nbytes), laid out as (layers, blocks, T) with
  T = rows / (layers * blocks) rows per block and layer, each offset computed as
  ``blocks[None, :, None] * stride + template_offset[None, None, :]`` and the other
  columns broadcast from a per-row template and copied out. It does no validation, no
  pairing and no merging: a floor for any lowering that writes these rows, not a
  competing implementation.
* ratio: lower + columns ms / numpy ms (target: <= 3). Targets: plan() < 20 ms.

All figures are steady state: one untimed pass over every pair runs first, then each
figure is timed after one more untimed call, in the same process, so the allocator
already holds the memory these sizes need (the first touch of fresh pages alone can
cost more than the numpy arithmetic at these sizes, and would make a figure depend on
the pairs timed before it).
"""

from __future__ import annotations

import argparse
import ctypes
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a clone without installing

from kvplan import EngineSpec, engine_memory, plan, vllm_engine  # noqa: E402
from kvplan.planning import STRATEGIES  # noqa: E402
from kvplan.models import get_model  # noqa: E402

PAIRS = ((1, 1), (2, 8), (8, 2), (4, 4), (1, 8), (8, 1))
POOL_BLOCKS = 65536


def keep_freed_memory() -> bool:
    """Make glibc keep what is freed (no mmap'd blocks, no heap trimming), so a call
    reuses pages the process already touched. Otherwise each figure includes first-touch
    page faults of its output whose count depends on what ran and was freed before it
    (seen: vLLM's `_compute_desc_ids` 1.0 ms or 3.3 ms, kvplan's lower() 3 ms or 10 ms,
    for the same call). Both libraries get the same allocator."""
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return False
    return bool(libc.mallopt(-4, 0) and libc.mallopt(-1, 2**31 - 1))  # M_MMAP_MAX, M_TRIM_THRESHOLD


def median_ms(fn, repeats: int) -> float:
    fn()  # warm-up: caches, allocator
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3


def numpy_rows(layers: int, src_blocks: np.ndarray, dst_blocks: np.ndarray, per_block: int,
               src_stride: int, dst_stride: int) -> list[np.ndarray]:
    """Six int64 columns of layers * len(blocks) * per_block rows (see module docstring)."""
    shape = (layers, len(src_blocks), per_block)
    rank = np.arange(per_block, dtype=np.int64) % 8
    src_off = np.arange(per_block, dtype=np.int64) * 8192
    dst_off = np.arange(per_block, dtype=np.int64) * 4096
    nbytes = np.full(per_block, 8192, np.int64)
    region = np.arange(layers, dtype=np.int64)[:, None, None]
    return [
        np.broadcast_to(rank, shape).ravel(),  # ravel of a broadcast view copies
        np.broadcast_to(region, shape).ravel(),
        np.broadcast_to(src_blocks[None, :, None] * src_stride + src_off[None, None, :], shape).ravel(),
        np.broadcast_to(region, shape).ravel(),
        np.broadcast_to(dst_blocks[None, :, None] * dst_stride + dst_off[None, None, :], shape).ravel(),
        np.broadcast_to(nbytes, shape).ravel(),
    ]


def run(blocks: int, repeats: int, seed: int) -> list[dict]:
    model = get_model("llama-3.1-70b")
    rng = np.random.default_rng(seed)
    src_blocks = rng.choice(POOL_BLOCKS, blocks, replace=False).astype(np.int64)
    dst_blocks = rng.choice(POOL_BLOCKS, blocks, replace=False).astype(np.int64)
    cases = []
    for src_tp, dst_tp in PAIRS:
        src, dst = EngineSpec(model=model, tp=src_tp), EngineSpec(model=model, tp=dst_tp)
        p = plan(src, dst)
        rows = len(p.lower(0, src_blocks, dst_blocks))
        per_block = -(-rows // (model.num_layers * blocks))
        cases.append((src, dst, p, rows, per_block,
                      lambda p=p: p.lower(0, src_blocks, dst_blocks),
                      lambda p=p: p.lower(0, src_blocks, dst_blocks).columns(),
                      lambda src=src, dst=dst, k=per_block: numpy_rows(
                          model.num_layers, src_blocks, dst_blocks, k,
                          engine_memory(src).regions[0].block_bytes,
                          engine_memory(dst).regions[0].block_bytes)))
    # One untimed pass over every case first: the largest requests grow the allocator's
    # heap, after which smaller ones no longer pay first-touch page faults. Without it a
    # figure depends on which pairs ran before it (seen: 4 ms vs 12 ms for one lower()).
    for *_, lower_fn, columns_fn, numpy_fn in cases:
        lower_fn()
        columns_fn()
        numpy_fn()
    results = []
    for src, dst, p, rows, per_block, lower_fn, columns_fn, numpy_fn in cases:
        plan_ms = median_ms(lambda: plan(src, dst), repeats)
        lower_ms = median_ms(lower_fn, repeats)
        columns_ms = median_ms(columns_fn, repeats)
        numpy_ms = median_ms(numpy_fn, repeats)
        results.append({"pair": f"{src.tp}→{dst.tp}", "plan_ms": plan_ms, "lower_ms": lower_ms,
                        "lower_columns_ms": columns_ms, "rows": rows,
                        "baseline_rows": model.num_layers * blocks * per_block, "numpy_ms": numpy_ms,
                        "ratio": columns_ms / numpy_ms})
    return results


def table(results: list[dict]) -> str:
    lines = ["| P→D TP | plan ms | lower ms | lower + columns ms | rows | numpy baseline ms | "
             "(lower + columns) / numpy |",
             "|---|---|---|---|---|---|---|"]
    for r in results:
        rows = f"{r['rows']:,}" + ("" if r["rows"] == r["baseline_rows"] else f" (numpy {r['baseline_rows']:,})")
        lines.append(f"| {r['pair']} | {r['plan_ms']:.2f} | {r['lower_ms']:.2f} | {r['lower_columns_ms']:.2f} | "
                     f"{rows} | "
                     f"{r['numpy_ms']:.2f} | {r['ratio']:.2f}× |")
    return "\n".join(lines)


HYBRID_PAIRS = ((1, 2), (2, 1), (1, 4), (4, 1), (2, 4), (4, 2), (8, 4), (4, 8))


def run_hybrid(repeats: int) -> list[dict]:
    """plan() of Nemotron-3-Nano between two vLLM 0.33 engines, per conv strategy.

    Descriptor counts and bytes are per decode logical block (attention rows of a span
    divided by the decode blocks in it; state rows per state block), summed over every
    decode rank: what one more block of a request costs the transport, before merging.
    """

    results = []
    for src_tp, dst_tp in HYBRID_PAIRS:
        src = vllm_engine("nemotron-3-nano-30b-a3b", src_tp)
        dst = vllm_engine("nemotron-3-nano-30b-a3b", dst_tp)
        for strategy in STRATEGIES:
            plan_ms = median_ms(lambda: plan(src, dst, conv_strategy=strategy), repeats)
            p = plan(src, dst, conv_strategy=strategy)
            cost = p.cost()
            attention_group = next(g for g in range(len(dst.layer_groups)) if dst.group_is_token(g))
            per_span = p.blocks_per_span(attention_group)[1]
            results.append({
                "pair": f"{src_tp}→{dst_tp}", "strategy": strategy, "plan_ms": plan_ms,
                "blocks": f"{src.block_tokens}/{dst.block_tokens}",
                "attn_desc": cost.attention_descriptors / per_span, "attn_bytes": cost.attention_bytes / per_span,
                "state_desc": cost.state_descriptors, "state_bytes": cost.state_bytes,
                "local": cost.local_copies, "scratch": cost.scratch_bytes,
            })
    return results


def hybrid_table(results: list[dict]) -> str:
    lines = ["| P→D TP | Nl P/D | conv strategy | plan ms | attention desc/block | attention B/block | "
             "state desc/block | state B/block | local copies/block | scratch B/block |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        lines.append(f"| {r['pair']} | {r['blocks']} | {r['strategy']} | {r['plan_ms']:.1f} | {r['attn_desc']:,.0f} | "
                     f"{r['attn_bytes']:,.0f} | {r['state_desc']} | {r['state_bytes']:,} | {r['local']} | "
                     f"{r['scratch']:,} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--blocks", type=int, default=4096, help="logical blocks per request (default 4096)")
    parser.add_argument("--repeats", type=int, default=7, help="timed repeats per figure (median; default 7)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random block ids")
    args = parser.parse_args(argv)
    results = run(args.blocks, args.repeats, args.seed)
    print(f"Llama-3.1-70B (80 layers), {args.blocks:,}-block request, median of {args.repeats}")
    print()
    print(table(results))
    worst_plan = max(r["plan_ms"] for r in results)
    worst_ratio = max(r["ratio"] for r in results)
    print()
    print(f"plan() worst {worst_plan:.2f} ms (target < 20): {'met' if worst_plan < 20 else 'MISSED'}; "
          f"lower() + columns worst {worst_ratio:.2f}x numpy (target <= 3): {'met' if worst_ratio <= 3 else 'MISSED'}")
    print()
    print(f"Nemotron-3-Nano-30B-A3B between vllm_engine(...) engines (FlashInfer), all decode ranks, "
          f"median of {args.repeats}")
    print()
    print(hybrid_table(run_hybrid(args.repeats)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
