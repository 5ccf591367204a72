"""Where a nixl bounce request's time goes (GPU, two processes): each phase of the decode
side and of the serving prefill process timed per request, plus raw NIXL READs of the
prefill staging (descriptor size, repost of one handle) and notification round trips.

    PYTHONUNBUFFERED=1 python3 benchmarks/probe_bounce_nixl.py [--reps 20] [--json out.json]

A probe, not a benchmark: it patches timers around backend internals (in both
processes), so its totals run a little slower than bench_transfer.py's.
"""

from __future__ import annotations

import argparse
import functools
import json
import statistics
import sys
import time
from pathlib import Path

import cupy as cp
import numpy as np
from kvplan_backends import _base, _gpucopy, _steps, nixl

from kvplan import EngineSpec, plan
from kvplan.lowering import scratch_buffer_bytes
from kvplan.transport import load_backend

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "backends"))
sys.path.insert(0, str(Path(__file__).resolve().parent))
import _pairing  # noqa: E402
import bench_transfer as bt  # noqa: E402

SPENT: dict[str, list] = {}


def _timed(name, fn):
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        start = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            cell = SPENT.setdefault(name, [0.0, 0])
            cell[0] += time.perf_counter() - start
            cell[1] += 1
    return wrapper


def instrument() -> None:
    """Timers around the phases of a request, on whichever side runs them."""
    for owner, names in ((_base, ("request_blocks",)), (_base.BackendBase, ("execute", "serve", "_copies",
                                                                             "_bind_remote", "_reading")),
                         (nixl.NixlBackend, ("_read_lists", "_read_listed", "_descs", "_initialize_lists", "_run",
                                             "_release_handles", "_signal", "_await_signals", "_await_push",
                                             "_write_lists", "_start_listed", "_push", "_finish_copies")),
                         (_steps.StepRoute, ("run",)), (_steps, ("positional",)), (_gpucopy, ("launch_template",))):
        for name in names:
            fn = getattr(owner, name)
            label = f"{getattr(owner, '__name__', owner)}.{name}"
            if name == "_reading":
                continue  # a context manager: not timed
            setattr(owner, name, _timed(label, fn))


class _Conn:
    """The child's pipe, answering ("probe",) with its timers (then reset)."""

    def __init__(self, conn):
        self._conn = conn

    def recv(self):
        while True:
            message = self._conn.recv()
            if message and message[0] == "probe":
                self._conn.send(("probe", {k: list(v) for k, v in SPENT.items()}))
                SPENT.clear()
                continue
            return message

    def send(self, message):
        self._conn.send(message)


def probe_child(conn, *args):
    instrument()
    _child(_Conn(conn), *args)


_child = _pairing._child
_pairing._child = probe_child  # SourceProcess spawns this (pickled by reference)


def child_spent(sources) -> dict:
    sources._send(("probe",))
    return sources._expect("probe")


def report(title: str, spent: dict, reps: int) -> dict:
    out = {k: 1e6 * v[0] / reps for k, v in sorted(spent.items(), key=lambda kv: -kv[1][0])}
    print(f"## {title} (us per request; calls per request)")
    for k, v in sorted(spent.items(), key=lambda kv: -kv[1][0]):
        print(f"   {k:42s} {1e6 * v[0] / reps:9.1f}  x{v[1] / reps:.1f}")
    return out


def raw_reads(dst, rank: int, region: int, nbytes: int, reps: int) -> dict:
    """READ `nbytes` of peer `rank`'s region `region` into this rank's last region, as
    descriptors of several sizes: initialize_xfer each time, and one handle reposted."""
    peer, own = dst.peers[rank], dst.memory
    local_region = int(np.argmax(own.sizes))
    nbytes = min(nbytes, int(peer.sizes[region]), int(own.sizes[local_region]))
    out = {}
    for piece in (nbytes, 32 << 20, 8 << 20, 2 << 20):
        n = nbytes // piece
        if n < 1:
            continue
        offsets = np.arange(n, dtype=np.int64) * piece
        sizes = np.full(n, piece, np.int64)
        local = dst.agent.get_xfer_descs(nixl._rows(own.bases[local_region] + offsets.astype(np.uint64), sizes,
                                                    np.full(n, own.devices[local_region])), "VRAM")
        remote = dst.agent.get_xfer_descs(nixl._rows(peer.bases[region] + offsets.astype(np.uint64), sizes,
                                                     np.full(n, peer.devices[region])), "VRAM")

        def fresh():
            h = dst.agent.initialize_xfer("READ", local, remote, dst.remote_names[rank], b"")
            dst.agent.transfer(h)
            while (state := dst.agent.check_xfer_state(h)) == "PROC":
                pass
            assert state == "DONE", state
            dst.agent.release_xfer_handle(h)

        handle = dst.agent.initialize_xfer("READ", local, remote, dst.remote_names[rank], b"")

        def repost():
            dst.agent.transfer(handle)
            while (state := dst.agent.check_xfer_state(handle)) == "PROC":
                pass
            assert state == "DONE", state

        for label, fn in (("fresh", fresh), ("repost", repost)):
            ms = bt.wall_ms(fn, reps)  # one warm-up call, then the median
            out[f"{label} {n} x {piece >> 20} MiB"] = {"ms": ms, "GBps": n * piece / ms / 1e6}
        dst.agent.release_xfer_handle(handle)
    for handles in (2, 4, 8):  # the same bytes as several handles posted at once
        piece = nbytes // handles
        pairs = []
        for k in range(handles):
            at = np.array([k * piece], np.int64)
            size = np.array([piece], np.int64)
            pairs.append((dst.agent.get_xfer_descs(nixl._rows(own.bases[local_region] + at.astype(np.uint64), size,
                                                              np.array([own.devices[local_region]])), "VRAM"),
                          dst.agent.get_xfer_descs(nixl._rows(peer.bases[region] + at.astype(np.uint64), size,
                                                              np.array([peer.devices[region]])), "VRAM")))
        hs = [dst.agent.initialize_xfer("READ", a, b, dst.remote_names[rank], b"") for a, b in pairs]

        def together():
            for h in hs:
                dst.agent.transfer(h)
            waiting = list(hs)
            while waiting:
                waiting = [h for h in waiting if dst.agent.check_xfer_state(h) == "PROC"]

        ms = bt.wall_ms(together, reps)
        out[f"{handles} handles x {piece >> 20} MiB at once"] = {"ms": ms, "GBps": handles * piece / ms / 1e6}
        for h in hs:
            dst.agent.release_xfer_handle(h)
    for k, v in out.items():
        print(f"   raw READ {k:28s} {v['ms']:7.3f} ms {v['GBps']:7.1f} GB/s")
    return out


def run(model, layout, tps, reps: int, rng) -> dict:
    label, kv_layout, storage, block, kernel = layout
    blocks = bt.REQUEST_TOKENS // block
    hybrid = any(layer.kind != "attention" for layer in model.layers)
    num_blocks = blocks + 8 if hybrid else 2 * blocks

    def engine(tp):
        return EngineSpec(model=model, tp=tp, block_tokens=block, kernel_block_tokens=kernel, kv_layout=kv_layout,
                          kv_storage=storage, num_blocks=num_blocks)

    p = plan(engine(tps[0]), engine(tps[1]), transfer_strategy="bounce")
    src_blocks, dst_blocks = (bt.request_blocks(e, rng.permutation(num_blocks), blocks) for e in (p.src, p.dst))
    t = p.lower(0, src_blocks, dst_blocks)
    src_extra, dst_extra = scratch_buffer_bytes(p, [t])
    delivered = t.post_steps.total_bytes
    row = {"plan": f"{label} {tps[0]}->{tps[1]}", "bytes": delivered, "copies": len(t)}
    print(f"# {row['plan']}: {delivered / 2**20:.0f} MiB, {len(t)} copies", flush=True)
    bulk = {}
    with cp.cuda.Device(bt.SRC):
        bulk["src"] = cp.empty(delivered, cp.uint8)
    with cp.cuda.Device(bt.DST):
        bulk["dst"] = cp.empty(delivered, cp.uint8)
        stream = cp.cuda.Stream(non_blocking=True)
    row["bulk_ms"] = bt.events_ms(lambda: cp.cuda.runtime.memcpyPeerAsync(
        bulk["dst"].data.ptr, bt.DST, bulk["src"].data.ptr, bt.SRC, delivered, stream.ptr), bt.DST, stream)
    bulk.clear()
    for mode in ("pull", "push"):
        options = {"push": True} if mode == "push" else {}
        out = _pairing.allocate(p.dst, 0, device=bt.DST, fill=False, extra=dst_extra)
        dst = load_backend("nixl", **options)
        dst.register(out, rank=0)
        with _pairing.SourceProcess("nixl", p.src, device=bt.SRC, ranks=t.source_ranks, extra=src_extra,
                                    options=options) as sources:
            for rank, md in sources.metadata.items():
                dst.add_peer(rank, md)
            sources.connect(0, dst.metadata())
            sources.prepare(p, 0)
            prepared = dst.prepare(p, 0)
            phase = {"serve round trip": [], "execute": [], "wait round trip": [], "total": []}
            for i in range(reps + 1):
                t0 = time.perf_counter()
                sources.serve(src_blocks, dst_blocks, request="bounce")
                t1 = time.perf_counter()
                dst.execute(prepared, src_blocks, dst_blocks, request="bounce")
                t2 = time.perf_counter()
                sources.wait()
                t3 = time.perf_counter()
                if i == 0:  # the first request builds routes and lists
                    SPENT.clear()
                    child_spent(sources)
                    continue
                phase["serve round trip"].append(t1 - t0)
                phase["execute"].append(t2 - t1)
                phase["wait round trip"].append(t3 - t2)
                phase["total"].append(t3 - t0)
            medians = {k: 1e3 * statistics.median(v) for k, v in phase.items()}
            print(f"## {mode}: " + ", ".join(f"{k} {v:.3f} ms" for k, v in medians.items())
                  + f"; bulk {row['bulk_ms']:.3f} ms -> {row['bulk_ms'] / medians['total']:.3f} x bulk", flush=True)
            row[mode] = {"phases_ms": medians, "decode_us": report(f"{mode}, decode process", SPENT, reps),
                         "prefill_us": report(f"{mode}, prefill process", child_spent(sources), reps)}
            row[mode]["ok"] = bt.same(out[:len(p.dst_regions) - len(p.dst_scratch)],
                                      _reference(p, t, src_blocks, dst_blocks))
            if mode == "pull":  # raw reads between the largest regions of the two sides
                rank = int(t.source_ranks[0])
                row["raw"] = raw_reads(dst, rank, int(np.argmax(dst.peers[rank].sizes)), 256 << 20, reps)
            SPENT.clear()
        dst.close()
    return row


def _reference(p, t, src_blocks, dst_blocks):
    """The direct plan's bytes on the decode GPU (one cudaMemcpyPeerAsync per row)."""
    direct = plan(p.src, p.dst)
    td = direct.lower(0, src_blocks, dst_blocks)
    reference = _pairing.allocate(p.dst, 0, device=bt.DST, fill=False)
    ref = load_backend("cupy", peer_access=False)
    ref.register(reference)
    sources = {}
    for r in td.source_ranks:
        sources[r] = load_backend("cupy")
        sources[r].register(_pairing.allocate(p.src, r, device=bt.SRC))
        ref.add_peer(r, sources[r].metadata())
    ref.execute(td, request="reference")
    return reference


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--reps", type=int, default=20)
    parser.add_argument("--json", default=None)
    parser.add_argument("--cases", default="0:0,0:1,3:0")
    args = parser.parse_args()
    instrument()
    if cp.cuda.runtime.getDeviceCount() < 2:
        bt.DST = 0
    for device, peer in ((bt.SRC, bt.DST), (bt.DST, bt.SRC)):
        _gpucopy.enable_peer_access(cp, device, peer)
    cases = bt.models()
    rows = []
    for spec in args.cases.split(","):
        m, k = (int(v) for v in spec.split(":"))
        model, layout = cases[m]
        rows.append(run(model, layout, bt.TP_PAIRS[k], args.reps, np.random.default_rng(0)))
        cp.get_default_memory_pool().free_all_blocks()
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
