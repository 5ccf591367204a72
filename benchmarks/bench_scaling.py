"""How planning and lowering scale: plan() over TP sizes, layers and block ratios, lower()
over request length, with fitted exponents; peak memory of the heaviest plans.

    python3 benchmarks/bench_scaling.py [--repeats 5] [--json out.json]

* plan() grid: an 80-layer model (8 and 64 KV heads x 128, bf16, 16-token blocks, vLLM's
  default layout), every pair of TP sizes in 1, 2, 4, 8, 16, 32, 64: the worst and the
  median pair (target: <= 20 ms each).
* Blocks that do not divide: Nemotron-3-Nano through `vllm_engine` at TP 1->4 and 4->1,
  and the 80-layer model at 2,096 / 1,056-token blocks (TP 2 both sides): time, and
  peak traced memory of a separate call (`tracemalloc`; target < 50 ms, < 64 MiB), and
  one `verify()` of each (target: under 5 s).
* plan() against layers (8 - 160, TP 2 -> 8) and against the block ratio (prefill
  block 16 x 1 - 64 tokens, decode 16): the exponent b of ``t = a * x**b`` fitted by
  least squares in log-log (flat: b near 0).
* lower() against request length (a 16-layer model, TP 1 -> 1, 64 - 262,144 blocks of a
  pool twice as large, random ids): exponent near 1 is linear.

Wall-clock medians of `--repeats` after one warm-up call, in one process, with glibc told
to keep freed memory (`bench_plan.keep_freed_memory`; `--system-malloc` for its defaults,
under which a lower() of 262,144 blocks also pays first-touch page faults of its output:
about 4x the time here).
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
import tracemalloc
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a clone without installing

from kvplan import AttentionSpec, EngineSpec, ModelSpec, plan, verify, vllm_engine  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_plan import keep_freed_memory, median_ms  # noqa: E402  (one warm-up call, then the median of the repeats)

TPS = (1, 2, 4, 8, 16, 32, 64)


def peak_mib(fn) -> float:
    tracemalloc.start()
    try:
        fn()
        return tracemalloc.get_traced_memory()[1] / 2**20
    finally:
        tracemalloc.stop()


def exponent(xs, ys) -> float:
    """b of the least-squares fit ``log y = log a + b log x``."""
    return float(np.polyfit(np.log(xs), np.log(ys), 1)[0])


def dense(layers: int, heads: int) -> ModelSpec:
    return ModelSpec(name=f"dense-{layers}x{heads}", layers=(AttentionSpec(num_kv_heads=heads, head_dim=128,
                                                                           dtype="bfloat16"),) * layers)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--json", default=None)
    parser.add_argument("--system-malloc", action="store_true", help="glibc defaults (page faults count)")
    args = parser.parse_args(argv)
    steady = not args.system_malloc and keep_freed_memory()
    print(f"malloc: {'keeps freed memory' if steady else 'system default'}\n")
    r = args.repeats
    out: dict = {}

    print("## plan(): 80 layers, every TP pair of 1-64\n\n| KV heads | pairs | median ms | worst ms | worst pair |")
    print("|---|---|---|---|---|")
    for heads in (8, 64):
        m = dense(80, heads)
        times = {(a, b): median_ms(lambda a=a, b=b: plan(EngineSpec(model=m, tp=a), EngineSpec(model=m, tp=b)), r)
                 for a in TPS for b in TPS}
        worst = max(times, key=times.get)
        out[f"grid_{heads}"] = {f"{a}->{b}": t for (a, b), t in times.items()}
        print(f"| {heads} | {len(times)} | {statistics.median(times.values()):.1f} | {times[worst]:.1f} | "
              f"{worst[0]}->{worst[1]} |")

    print("\n## plan() with blocks that do not divide\n\n| pair | longest span, tokens | ms | peak MiB |\n"
          "|---|---|---|---|")
    m80 = dense(80, 8)
    cases = {"nemotron-3-nano vllm_engine 1->4": (lambda: vllm_engine("nemotron-3-nano-30b-a3b", tp=1),
                                                  lambda: vllm_engine("nemotron-3-nano-30b-a3b", tp=4)),
             "nemotron-3-nano vllm_engine 4->1": (lambda: vllm_engine("nemotron-3-nano-30b-a3b", tp=4),
                                                  lambda: vllm_engine("nemotron-3-nano-30b-a3b", tp=1)),
             "80 layers 2096 / 1056 tokens, TP 2->2": (lambda: EngineSpec(model=m80, tp=2, block_tokens=2096),
                                                       lambda: EngineSpec(model=m80, tp=2, block_tokens=1056))}
    verified = {}
    for name, (src, dst) in cases.items():
        s, d = src(), dst()
        t = median_ms(lambda s=s, d=d: plan(s, d), r)
        peak = peak_mib(lambda s=s, d=d: plan(s, d))
        p = plan(s, d)
        start = time.perf_counter()
        verify(p)  # once: the identity simulation of every rank (target: under 5 s)
        verified[name] = (time.perf_counter() - start) * 1e3
        out[name] = {"ms": t, "peak_mib": peak, "verify_ms": verified[name]}
        span = max(math.lcm(s.group_block_tokens(g)[0], d.group_block_tokens(g)[0]) for g in range(len(d.layer_groups)))
        print(f"| {name} | {span:,} | {t:.1f} | {peak:.1f} |")

    print("\n`verify()` of each, once: " + "; ".join(f"{name} {ms / 1e3:.2f} s" for name, ms in verified.items()))
    print("\n## Scaling (fitted exponent b of t = a x^b)\n\n| what | x | ms | b |\n|---|---|---|---|")
    layers = (8, 20, 40, 80, 160)
    ts = [median_ms(lambda n=n: plan(EngineSpec(model=dense(n, 8), tp=2), EngineSpec(model=dense(n, 8), tp=8)), r)
          for n in layers]
    out["plan_vs_layers"] = dict(zip(layers, ts, strict=True))
    print(f"| plan() vs layers (TP 2->8) | {', '.join(map(str, layers))} | {', '.join(f'{t:.1f}' for t in ts)} | "
          f"{exponent(layers, ts):.2f} |")
    ratios = (1, 2, 4, 16, 64)
    ts = [median_ms(lambda k=k: plan(EngineSpec(model=m80, tp=2, block_tokens=16 * k),
                                     EngineSpec(model=m80, tp=2, block_tokens=16)), r) for k in ratios]
    out["plan_vs_block_ratio"] = dict(zip(ratios, ts, strict=True))
    print(f"| plan() vs block ratio (prefill 16k / decode 16 tokens) | {', '.join(map(str, ratios))} | "
          f"{', '.join(f'{t:.1f}' for t in ts)} | {exponent(ratios, ts):.2f} |")
    m16 = dense(16, 8)
    lengths = (64, 1024, 16384, 65536, 262144)
    rng = np.random.default_rng(0)
    ts = []
    for n in lengths:
        p = plan(EngineSpec(model=m16, num_blocks=2 * n), EngineSpec(model=m16, num_blocks=2 * n))
        src_ids, dst_ids = rng.permutation(2 * n)[:n], rng.permutation(2 * n)[:n]
        ts.append(median_ms(lambda p=p, s=src_ids, d=dst_ids: p.lower(0, s, d), r))
    out["lower_vs_blocks"] = dict(zip(lengths, ts, strict=True))
    print(f"| lower() vs request blocks (16 layers, TP 1->1) | {', '.join(map(str, lengths))} | "
          f"{', '.join(f'{t:.2f}' for t in ts)} | {exponent(lengths[2:], ts[2:]):.2f} (from 16,384 up) |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({**out, "malloc": "keeps freed memory" if steady else "system default"}, f, indent=1, default=str)
    return 0


if __name__ == "__main__":
    sys.exit(main())
