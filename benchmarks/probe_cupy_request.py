"""Where the host time of one cupy request goes: `execute(prepared, src_blocks, dst_blocks)`
of a prepared plan (the template route), profiled call by call (GPU host, 1-2 GPUs).

    PYTHONPATH=.:backends python3 benchmarks/probe_cupy_request.py [--calls 200] [--top 25]

Same engines, request and buffers as `bench_transfer.py` (a 4,096-token request of
scattered blocks, decode rank 0): the dense HND packed TP 2 -> 4 plan and Nemotron's
hybrid TP 1 -> 2. Prints the median host time per call (the stream drained between
calls, as the benchmark's `cupy_request_host_us`), then cProfile's heaviest functions
over `--calls` calls, the profiler switched on only around each call.
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_transfer as bt  # noqa: E402  (cupy, the engines and the buffers of the benchmark)

from kvplan import EngineSpec, plan  # noqa: E402
from kvplan.transport import load_backend  # noqa: E402

cp = bt.cp


def setup(model, layout, tps):
    _, kv_layout, storage, block, kernel = layout
    blocks = bt.REQUEST_TOKENS // block
    hybrid = any(layer.kind != "attention" for layer in model.layers)
    num_blocks = blocks + 8 if hybrid else 2 * blocks
    engines = [EngineSpec(model=model, tp=tp, block_tokens=block, kernel_block_tokens=kernel, kv_layout=kv_layout,
                          kv_storage=storage, num_blocks=num_blocks) for tp in tps]
    p = plan(*engines)
    rng = np.random.default_rng(0)
    src_blocks, dst_blocks = (bt.request_blocks(e, rng.permutation(num_blocks), blocks) for e in (p.src, p.dst))
    with cp.cuda.Device(bt.DST):
        stream = cp.cuda.Stream(non_blocking=True)
    sources = {}
    b = load_backend("cupy", stream=stream, blocking=False)
    b.register(bt.allocate(p.dst, 0, device=bt.DST, fill=False))
    for r in p.reads(0).source_ranks:
        sources[r] = load_backend("cupy", stream=stream)
        sources[r].register(bt.allocate(p.src, r, device=bt.SRC))
        b.add_peer(r, sources[r].metadata())
    prepared = b.prepare(p, 0)
    return b, prepared, src_blocks, dst_blocks, stream


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--calls", type=int, default=200)
    parser.add_argument("--top", type=int, default=25)
    args = parser.parse_args(argv)
    hybrid = [m for m in bt.models() if m[0] is not bt.DENSE]
    cases = [(bt.DENSE, bt.LAYOUTS[0], (2, 4))] + [(m, layout, (1, 2)) for m, layout in hybrid]
    for model, layout, tps in cases:
        b, prepared, src_blocks, dst_blocks, stream = setup(model, layout, tps)
        call = lambda: b.execute(prepared, src_blocks, dst_blocks, request="probe")  # noqa: E731
        for _ in range(5):
            call()
        stream.synchronize()
        times = []
        for _ in range(args.calls):
            stream.synchronize()
            start = time.perf_counter()
            call()
            times.append(time.perf_counter() - start)
        stream.synchronize()
        print(f"\n## {model.name} {layout[0]} TP {tps[0]}->{tps[1]}: host us per call, median "
              f"{1e6 * statistics.median(times):.0f}, min {1e6 * min(times):.0f} ({b.route})")
        profile = cProfile.Profile()
        for _ in range(args.calls):
            stream.synchronize()
            profile.enable()
            call()
            profile.disable()
        stream.synchronize()
        stats = pstats.Stats(profile)
        stats.sort_stats("tottime").print_stats(args.top)
        stats.sort_stats("cumulative").print_stats(args.top)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
