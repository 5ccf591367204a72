"""Where a bounce request's time goes on a GPU host: per-request host work (lowering,
the bounds gate, binding, row upload) against the pack / unpack kernels themselves.

    python3 benchmarks/probe_bounce_host.py            (one GPU is enough)
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import cupy as cp
import numpy as np
from kvplan_backends import _gpucopy, _local
from kvplan_backends._memory import describe

from kvplan import AttentionSpec, EngineSpec, ModelSpec, plan
from kvplan.lowering import check_transfer, scratch_buffer_bytes

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "backends"))
from _pairing import allocate

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_transfer import wall_ms


def ms(fn) -> float:
    """Median wall milliseconds of 7 calls (after one warm-up)."""
    return wall_ms(fn, reps=7)

MODEL = ModelSpec(name="dense-gqa-8b", layers=(AttentionSpec(num_kv_heads=8, head_dim=128, dtype="bfloat16"),) * 32)


def main() -> None:
    rows = []
    for layout, tps in (("HND", (2, 4)), ("NHD", (1, 2)), ("NHD", (2, 1))):
        def engine(tp):
            return EngineSpec(model=MODEL, tp=tp, block_tokens=16, kv_layout=layout, num_blocks=512)

        p = plan(engine(tps[0]), engine(tps[1]), transfer_strategy="bounce")
        rng = np.random.default_rng(0)
        ids = rng.permutation(512)[:256].tolist(), rng.permutation(512)[:256].tolist()
        t = p.lower(0, *ids)
        pack = t.pre_steps.for_source(int(t.pre_steps.source_ranks[0]))
        extra = scratch_buffer_bytes(p, [t])[0]
        bufs = allocate(p.src, int(pack.src_rank[0]), device=0, extra=extra)
        memory = describe(bufs)
        sizes = {int(pack.src_rank[0]): memory.sizes}
        src, dst = pack.bind({int(pack.src_rank[0]): memory.bases}, memory.bases)
        stream = cp.cuda.get_current_stream()
        ranges = _gpucopy.device_ranges(cp, 0, src, dst, pack.nbytes)
        row = {"plan": f"{layout} {tps[0]}->{tps[1]}", "pack_rows": len(pack), "pack_bytes": pack.total_bytes,
               "lower_ms": ms(lambda: p.lower(0, *ids)),
               "gate_ms": ms(lambda: check_transfer(pack, sizes, memory.sizes, fingerprint=p.fingerprint,
                                                     dst_rank=None)),
               "bind_ms": ms(lambda: pack.bind({int(pack.src_rank[0]): memory.bases}, memory.bases)),
               "upload_ms": ms(lambda: (_gpucopy.device_ranges(cp, 0, src, dst, pack.nbytes),
                                        stream.synchronize())),
               "local_copy_ms": ms(lambda: _local.copy_ranges(0, src, dst, pack.nbytes)),
               "kernel_ms": ms(lambda: (_gpucopy.launch(cp, 0, ranges, stream), stream.synchronize()))}
        row["kernel_GBps"] = pack.total_bytes / row["kernel_ms"] / 1e6
        rows.append(row)
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
