"""Transfer benchmark: prefill ranks on GPU 0, decode rank on GPU 1 (on a one-GPU host both
engines share GPU 0: the bytes are checked the same way, the rates are then local copies).

For each model layout and TP pair (1->2, 2->1, 2->4, 4->2) it lowers one request
(scattered block ids, as an allocator hands them out) for decode rank 0, identity-fills
the prefill ranks' memory laid out as the engines would, and moves it through each
backend: cupy (one process), nixl and ucx (prefill ranks in a second process). Every
result is compared on the GPU with a copy made by an independent path (one
cudaMemcpyPeerAsync per range). Rates are GB/s (1e9 bytes/s) of the transfer's bytes,
next to one bulk cudaMemcpyPeerAsync of the same byte count in the same run.

Backends run through the transport protocol (`kvplan.transport.Transport`): plain
`execute(transfer)` of the lowered request, and `prepare(plan, 0)` once then
`execute(prepared, src_blocks, dst_blocks)` (cupy: the copy template on the GPU; nixl:
descriptor lists prepared once; ucx: both sides lower the request from its block ids).
Integrity mode, cupy: `cupy_check_request_GBps` is a prepared request with
``check=digests`` (copy, then one kernel digesting the destination ranges, compared with
the sources' digests), `cupy_digest_GBps` the digest kernel alone over those ranges.
The prefill process is the test suite's harness, `tests/backends/_pairing.py`.

    PYTHONUNBUFFERED=1 python3 benchmarks/bench_transfer.py --backends cupy,nixl --json out.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import cupy as cp
import numpy as np
from kvplan_backends import _gpucopy
from kvplan_backends._memory import describe

from kvplan import AttentionSpec, EngineSpec, ModelSpec, plan
from kvplan.lowering import prepared_lists, ring_buffer_bytes, scratch_buffer_bytes, staging_ring
from kvplan.lowering import request_blocks as request_blocks_of
from kvplan.transport import load_backend

# the two-process harness (and the allocation the tests check against) lives with the tests
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "backends"))
from _pairing import SourceProcess, allocate

TP_PAIRS = ((1, 2), (2, 1), (2, 4), (4, 2))
SRC, DST = 0, 1  # prefill and decode GPU (DST becomes 0 on a one-GPU host)
DENSE = ModelSpec(name="dense-gqa-8b", layers=(AttentionSpec(num_kv_heads=8, head_dim=128, dtype="bfloat16"),) * 32)
# (label, kv_layout, kv_storage, logical block tokens, kernel block tokens)
LAYOUTS = (("HND packed b16", "HND", "packed", 16, 16), ("NHD packed b16", "NHD", "packed", 16, 16),
           ("HND separate b32/k16", "HND", "separate", 32, 16))
REQUEST_TOKENS = 4096
REPS = 5
RING_MIB: tuple = ()  # --ring-mib: staging ring chunk sizes for nixl bounce runs
RING_SLOTS = 2  # ring slots: chunk j + 1 packs while chunk j moves
BOUNCE_ONLY = False  # --bounce-only


def models():
    out = [(DENSE, layout) for layout in LAYOUTS]
    try:  # report and go on with the dense model if the hybrid one cannot be planned
        from kvplan.models import HYBRID_MODELS

        hybrid = HYBRID_MODELS["nemotron-3-nano-30b-a3b"]
        plan(EngineSpec(model=hybrid, tp=2, block_tokens=16, num_blocks=8),
             EngineSpec(model=hybrid, tp=4, block_tokens=16, num_blocks=8))
        out.append((hybrid, ("nemotron-3-nano hybrid b16", "HND", "packed", 16, 16)))
    except Exception as error:  # report and go on with the dense model
        print(f"# hybrid model not benchmarked: {type(error).__name__}: {error}", flush=True)
    return out


def events_ms(fn, device: int, stream, reps: int = REPS) -> float:
    with cp.cuda.Device(device):
        fn()
        stream.synchronize()
        times = []
        for _ in range(reps):
            start, end = cp.cuda.Event(), cp.cuda.Event()
            start.record(stream)
            fn()
            end.record(stream)
            end.synchronize()
            times.append(cp.cuda.get_elapsed_time(start, end))
    return statistics.median(times)


def wall_ms(fn, reps: int = 3) -> float:
    fn()
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def host_ms(fn, stream, reps: int = REPS) -> float:
    """Median wall time of `fn` alone (the stream drained between calls)."""
    times = []
    for _ in range(reps):
        stream.synchronize()
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1e3)
    stream.synchronize()
    return statistics.median(times)


def gbs(nbytes: int, ms: float) -> float:
    return nbytes / ms / 1e6


def same(a, b) -> bool:
    """Byte-equal on the decode GPU (both lists live there)."""
    with cp.cuda.Device(DST):
        return all((x is None and y is None) or bool(cp.array_equal(x, y)) for x, y in zip(a, b, strict=True))


def request_blocks(engine, pool, blocks: int):
    """Scattered block ids; with several layer groups (shared pool), one list per group:
    `blocks` ids for token (attention) groups, one state block for state groups."""
    groups = engine.layer_groups
    if len(groups) == 1:
        return pool[:blocks].tolist()
    return [pool[:blocks].tolist() if engine.group_is_token(g) else pool[blocks:blocks + 1].tolist()
            for g in range(len(groups))]


def case(model, layout, tps, backends, rng) -> dict:
    label, kv_layout, storage, block, kernel = layout
    blocks = REQUEST_TOKENS // block
    hybrid = any(layer.kind != "attention" for layer in model.layers)
    # hybrid pages are padded to the SSM state size (MBs): keep the pool just big enough
    num_blocks = blocks + 8 if hybrid else 2 * blocks

    def engine(tp):
        return EngineSpec(model=model, tp=tp, block_tokens=block, kernel_block_tokens=kernel, kv_layout=kv_layout,
                          kv_storage=storage, num_blocks=num_blocks)

    p = plan(engine(tps[0]), engine(tps[1]))
    src_blocks, dst_blocks = (request_blocks(e, rng.permutation(num_blocks), blocks) for e in (p.src, p.dst))
    t = p.lower(0, src_blocks, dst_blocks)
    row = {"model": model.name, "layout": label, "tp": f"{tps[0]}->{tps[1]}", "bytes": t.total_bytes,
           "ranges": len(t), "range_bytes_min": int(t.nbytes.min()), "range_bytes_median": int(np.median(t.nbytes))}
    with cp.cuda.Device(DST):
        stream = cp.cuda.Stream(non_blocking=True)
    src_bufs = {r: allocate(p.src, r, device=SRC) for r in t.source_ranks}

    # reference: one cudaMemcpyPeerAsync per range (copy engine, no kernel)
    reference = allocate(p.dst, 0, device=DST, fill=False)
    ref = load_backend("cupy", peer_access=False, stream=stream)
    ref.register(reference)
    sources = {}
    for r in t.source_ranks:
        sources[r] = load_backend("cupy", stream=stream)
        sources[r].register(src_bufs[r])
        ref.add_peer(r, sources[r].metadata())
    ref.execute(t, request="reference")

    with cp.cuda.Device(SRC):
        bulk_src = cp.empty(t.total_bytes, cp.uint8)
    with cp.cuda.Device(DST):
        bulk_dst = cp.empty(t.total_bytes, cp.uint8)
    row["bulk_GBps"] = gbs(t.total_bytes, events_ms(lambda: cp.cuda.runtime.memcpyPeerAsync(
        bulk_dst.data.ptr, DST, bulk_src.data.ptr, SRC, t.total_bytes, stream.ptr), DST, stream))

    if "cupy" in backends and not BOUNCE_ONLY:
        out = allocate(p.dst, 0, device=DST, fill=False)
        b = load_backend("cupy", stream=stream, blocking=False)
        b.register(out)
        for r in t.source_ranks:
            b.add_peer(r, sources[r].metadata())
        row["cupy_GBps"] = gbs(t.total_bytes, events_ms(lambda: b.execute(t, request="bench"), DST, stream))
        row["cupy_pieces"] = b.last_launch["pieces"]
        # the kernel alone: the same ranges bound and uploaded once, then only the launch
        src_addr, dst_addr = t.bind({r: describe(src_bufs[r]).bases for r in t.source_ranks}, describe(out).bases)
        with cp.cuda.Device(DST), stream:  # uploaded on the launch stream, so ordered before it
            ranges = _gpucopy.device_ranges(cp, DST, src_addr, dst_addr, t.nbytes)
        row["cupy_kernel_GBps"] = gbs(t.total_bytes, events_ms(lambda: _gpucopy.launch(cp, DST, ranges, stream), DST,
                                                               stream))
        stream.synchronize()
        row["cupy_ok"] = same(out, reference)
        # the plan's copy template on the GPU: per request only block ids are uploaded
        with cp.cuda.Device(DST), stream:  # zeroed on the copy stream, so ordered before it
            for buffer in out:
                if buffer is not None:
                    buffer.fill(0)
        prepared = b.prepare(p, 0)
        b.execute(prepared, src_blocks, dst_blocks, request="bench-template")  # uploads the template once
        stream.synchronize()
        row["cupy_request_ok"] = same(out, reference)
        row["cupy_request_path"] = b.route  # "template" unless the plan had to be lowered
        row["cupy_request_GBps"] = gbs(t.total_bytes, events_ms(
            lambda: b.execute(prepared, src_blocks, dst_blocks, request="bench-template"), DST, stream))
        # host time per request (the call returns once the copy is enqueued: blocking=False)
        row["cupy_host_us"] = 1e3 * host_ms(lambda: b.execute(t, request="bench"), stream)
        row["cupy_request_host_us"] = 1e3 * host_ms(
            lambda: b.execute(prepared, src_blocks, dst_blocks, request="bench-template"), stream)
        # integrity mode: the sources' digests (one launch per prefill rank), then the request
        # with check= (the copy, then one launch digesting the destination ranges, compared)
        digesters = {r: load_backend("cupy") for r in t.source_ranks}
        digests = {}
        for r, d in digesters.items():
            d.register(src_bufs[r])
            done = d.serve(d.prepare(p, 0), src_blocks, dst_blocks, rank=r, request="digest", check=True)
            digests.update(done.digests)
        row["cupy_check_request_GBps"] = gbs(t.total_bytes, wall_ms(
            lambda: b.execute(prepared, src_blocks, dst_blocks, request="bench-check", check=digests)))
        row["cupy_check_ok"] = same(out, reference)
        with cp.cuda.Device(DST):
            dst_addr = t.bind({r: describe(src_bufs[r]).bases for r in t.source_ranks}, describe(out).bases)[1]
        row["cupy_digest_GBps"] = gbs(t.total_bytes, wall_ms(
            lambda: _gpucopy.digest_ranges(cp, DST, dst_addr, t.nbytes, stream)))
        for d in digesters.values():
            d.close()
        b.close()
        del out
    for kind in ("nixl", "ucx"):
        if kind in backends and not BOUNCE_ONLY:
            row.update(two_process(kind, p, t, src_blocks, dst_blocks, reference))
    try:  # a failing bounce run must not hide the direct figures of the case
        row.update(bounce(backends, engine(tps[0]), engine(tps[1]), src_blocks, dst_blocks, reference, stream))
    except Exception as error:
        row["bounce_error"] = f"{type(error).__name__}: {error}"
    return row


def bounce(backends, src_engine, dst_engine, src_blocks, dst_blocks, reference, stream) -> dict:
    """The same request planned with transfer_strategy="bounce": pack on the prefill GPU
    (one step-template kernel per source rank), one copy per (layer, source rank), unpack
    on the decode GPU (one kernel), through the serving loop (`serve` / `execute` of a
    `Prepared`: block ids only); nixl pulls (the decode side reads) and pushes (the
    prefill side writes, `nixl_bounce_push_*`). Timed end to end by wall clock,
    each call finished before the next; bytes checked against the direct reference."""
    p = plan(src_engine, dst_engine, transfer_strategy="bounce")
    start = time.perf_counter()
    t = p.lower(0, src_blocks, dst_blocks)
    row = {"bounce_lower_ms": (time.perf_counter() - start) * 1e3, "bounce_copies": len(t),
           "bounce_pack_rows": len(t.pre_steps), "bounce_unpack_rows": len(t.post_steps),
           "bounce_copy_bytes_median": int(np.median(t.nbytes)) if len(t) else 0}
    src_extra, dst_extra = scratch_buffer_bytes(p, [t])
    row["bounce_staging_bytes"] = {"prefill": sum(src_extra), "decode": sum(dst_extra)}
    own = len(p.dst_regions) - len(p.dst_scratch)
    delivered = t.post_steps.total_bytes
    if "cupy" in backends:
        out = allocate(p.dst, 0, device=DST, fill=False, extra=dst_extra)
        dst = load_backend("cupy", stream=stream)
        dst.register(out, rank=0)
        sources = {}
        for r in t.source_ranks:
            sources[r] = load_backend("cupy")  # packs on the prefill GPU's stream, finished on return
            sources[r].register(allocate(p.src, r, device=SRC, extra=src_extra), rank=r)
            dst.add_peer(r, sources[r].metadata())

        served = {r: b.prepare(p, 0) for r, b in sources.items()}
        prepared = dst.prepare(p, 0)

        def once():  # the serving loop: pack and unpack from step templates, block ids only
            for r, b in sources.items():
                b.serve(served[r], src_blocks, dst_blocks, rank=r, request="bounce")
            dst.execute(prepared, src_blocks, dst_blocks, request="bounce")
            stream.synchronize()

        row["cupy_bounce_GBps"] = gbs(delivered, wall_ms(once))
        row["cupy_bounce_ok"] = same(out[:own], reference)
        for b in (dst, *sources.values()):
            b.close()
    runs = [(kind, mode, None) for kind, mode in (("nixl", "pull"), ("nixl", "push"), ("ucx", "pull"))]
    runs += [("nixl", mode, mib) for mib in RING_MIB for mode in ("pull", "push")]
    for kind, mode, mib in runs:
        if kind not in backends:
            continue
        label = f"{kind}_bounce" + (f"_ring{mib}" if mib else "") + ("_push" if mode == "push" else "")
        options = {"push": True} if mode == "push" else {}
        ring, src_bytes, dst_bytes = None, src_extra, dst_extra
        if mib:  # staging is the ring: slots x chunk, whatever the request
            ring = staging_ring(p, chunk_bytes=mib << 20, slots=RING_SLOTS)
            src_bytes, dst_bytes = ring_buffer_bytes(p, ring, dst_rank=0)
            row[f"ring{mib}_staging_bytes"] = {"prefill": sum(src_bytes), "decode": sum(dst_bytes)}
            row[f"ring{mib}_chunks"] = max(-(-s // ring.chunk_spans)
                                           for s in request_blocks_of(p, 0, src_blocks, dst_blocks).spans)
        out = allocate(p.dst, 0, device=DST, fill=False, extra=dst_bytes)
        dst = load_backend(kind, **options)
        dst.register(out, rank=0)
        with SourceProcess(kind, p.src, device=SRC, ranks=t.source_ranks, extra=src_bytes,
                           options=options) as sources:
            for rank, md in sources.metadata.items():
                dst.add_peer(rank, md)
            sources.connect(0, dst.metadata())
            sources.prepare(p, 0, ring=ring)
            prepared = dst.prepare(p, 0, ring=ring)

            def once():  # both sides work from block ids (the serving loop)
                sources.serve(src_blocks, dst_blocks, request="bounce")
                dst.execute(prepared, src_blocks, dst_blocks, request="bounce")
                sources.wait()

            row[f"{label}_GBps"] = gbs(delivered, wall_ms(once))
            row[f"{label}_route"] = dst.route
            row[f"{label}_ok"] = same(out[:own], reference)
        dst.close()
    return row


def two_process(kind, p, t, src_blocks, dst_blocks, reference) -> dict:
    out = allocate(p.dst, 0, device=DST, fill=False)
    dst = load_backend(kind, **({"telemetry": True} if kind == "nixl" else {}))
    dst.register(out)
    row = {}
    with SourceProcess(kind, p.src, device=SRC, ranks=t.source_ranks) as sources:
        for rank, md in sources.metadata.items():
            dst.add_peer(rank, md)
        sources.connect(0, dst.metadata())
        if kind == "nixl":
            # one-sided reads of a plan without local steps: the prefill side runs nothing
            row["nixl_GBps"] = gbs(t.total_bytes, wall_ms(lambda: dst.execute(t, request="bench")))
            row["nixl_descs"] = sum(s.get("descriptors", s["descriptors_in"]) for s in dst.last_stats.values())
            row["nixl_post_us"] = sum(s.get("post_us", 0) for s in dst.last_stats.values())
            row["nixl_ok"] = same(out, reference)
            for buffer in out:  # the prepared path is checked on its own
                if buffer is not None:
                    buffer.fill(0)
            start = time.perf_counter()
            prepared = dst.prepare(p, 0)
            dst._fast_state(prepared)  # the lists a first request would prepare, timed apart from it
            row["nixl_prepare_ms"] = (time.perf_counter() - start) * 1e3
            row["nixl_prepared_list_descs"] = len(prepared_lists(p, 0).local)
            row["nixl_prep_GBps"] = gbs(t.total_bytes, wall_ms(
                lambda: dst.execute(prepared, src_blocks, dst_blocks, request="bench-prep")))
            row["nixl_prep_path"] = dst.route  # "prepared lists" unless the plan had to be lowered
            row["nixl_prep_indices"] = sum(s["descriptors_in"] for s in dst.last_stats.values())
            row["nixl_prep_descs"] = sum(s.get("descriptors", -1) for s in dst.last_stats.values())
            row["nixl_prep_ok"] = same(out, reference)
        else:
            stats = {}
            sources.prepare(p, 0)
            prepared = dst.prepare(p, 0)

            def once():  # both sides lower the request from its block ids
                sources.serve(src_blocks, dst_blocks, request="bench")
                dst.execute(prepared, src_blocks, dst_blocks, request="bench")
                stats.update(sources.wait())

            row["ucx_GBps"] = gbs(t.total_bytes, wall_ms(once))
            row["ucx_messages"] = len(t.source_ranks)
            row["ucx_pack_ms"] = 1e3 * max(s.get("pack_s", 0) for s in stats.values())
            row["ucx_wait_ms"] = 1e3 * dst.last_stats["wait_s"]
            row["ucx_unpack_ms"] = 1e3 * dst.last_stats["unpack_s"]
            row["ucx_ok"] = same(out, reference)
    dst.close()
    return row


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backends", default="cupy,nixl,ucx")
    parser.add_argument("--json", default=None)
    parser.add_argument("--quick", action="store_true", help="one layout, two TP pairs")
    parser.add_argument("--ring-mib", default="", help="nixl bounce through staging rings of these chunk sizes "
                        "(MiB per prefill/decode rank pair, comma-separated), pull and push")
    parser.add_argument("--bounce-only", action="store_true", help="skip the direct runs (bulk copy and the "
                        "reference still run)")
    args = parser.parse_args(argv)
    backends = set(args.backends.split(","))
    global DST, RING_MIB, BOUNCE_ONLY
    RING_MIB = tuple(int(v) for v in args.ring_mib.split(",") if v)
    BOUNCE_ONLY = args.bounce_only
    count = cp.cuda.runtime.getDeviceCount()
    if count < 1:
        print("needs a GPU", file=sys.stderr)
        return 2
    DST = 1 if count >= 2 else 0
    print(f"# prefill GPU {SRC}, decode GPU {DST}", flush=True)
    for device, peer in ((SRC, DST), (DST, SRC)):  # before the first bulk copy, so it runs peer to peer
        _gpucopy.enable_peer_access(cp, device, peer)
    rng = np.random.default_rng(0)
    rows = []
    cases = models()[:1] if args.quick else models()
    for model, layout in cases:
        for tps in TP_PAIRS[:2] if args.quick else TP_PAIRS:
            try:
                row = case(model, layout, tps, backends, rng)
            except Exception as error:  # keep going: one failing case must not hide the others
                row = {"model": model.name, "layout": layout[0], "tp": f"{tps[0]}->{tps[1]}",
                       "error": f"{type(error).__name__}: {error}"}
            rows.append(row)
            print(json.dumps(row), flush=True)
            cp.get_default_memory_pool().free_all_blocks()
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)
    failed = [r for r in rows if "error" in r or "bounce_error" in r or not all(
        v for k, v in r.items() if k.endswith("_ok"))]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
