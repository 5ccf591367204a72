"""Run in a fresh process by `test_lifecycle.py`: backend lifecycles, measured.

``python3 _lifecycle.py cycles KIND N``: N cycles of create / register / pair / one good
request (bytes checked) / two failing ones / close on the decode side, against one
long-lived source that re-pairs with every new decode backend (add_peer replaces the
peer). Prints one JSON line: open fds, threads and RSS after a warm-up and after the
cycles, and seconds per cycle.

``python3 _lifecycle.py pending-send close|open``: one process holds a source and a
destination; the source sends a 16 MiB message nobody receives, then the process
closes both (or neither) and exits. The parent times the exit.
"""

from __future__ import annotations

import gc
import json
import logging
import os
import sys
import threading
import time

import numpy as np

from kvplan import BoundsError, Transfer, TransportError
from kvplan.transport import load_backend

SIZE = 1 << 16
ROW = Transfer(dst_rank=0, src_rank=[1, 1], src_region=[0, 0], src_offset=[100, 9000], dst_region=[0, 0],
               dst_offset=[4096, 0], nbytes=[3000, 1000])
OUTSIDE = Transfer(dst_rank=0, src_rank=[1], src_region=[0], src_offset=[SIZE - 8], dst_region=[0], dst_offset=[0],
                   nbytes=[64])
UNKNOWN = Transfer(dst_rank=0, src_rank=[5], src_region=[0], src_offset=[0], dst_region=[0], dst_offset=[0],
                   nbytes=[64])


def fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS"):
                return int(line.split()[1]) / 1024
    return 0.0


def state() -> dict:
    gc.collect()
    return {"fds": fds(), "threads": threading.active_count(), "native_threads": len(os.listdir("/proc/self/task")),
            "rss_mb": round(rss_mb(), 1)}


def cycles(kind: str, n: int) -> dict:
    options = {"timeout_s": 10} if kind in ("ucx", "nixl") else {}
    source = load_backend(kind, **options)
    data = np.random.default_rng(0).integers(0, 256, SIZE, dtype=np.uint8)
    source.register([data], rank=1)
    want = np.zeros(SIZE, np.uint8)
    want[4096:7096], want[0:1000] = data[100:3100], data[9000:10000]

    def cycle(i: int) -> None:
        out = np.zeros(SIZE, np.uint8)
        dst = load_backend(kind, **options)
        try:
            dst.register([out], rank=0)
            dst.add_peer(1, source.metadata())
            source.add_peer(0, dst.metadata())  # replaces the previous cycle's decode backend
            sent = source.serve(ROW, rank=1, request=f"c{i}")
            dst.execute(ROW, request=f"c{i}")
            sent.wait()
            if not np.array_equal(out, want):
                raise AssertionError(f"cycle {i}: wrong bytes")
            for bad, error in ((OUTSIDE, BoundsError), (UNKNOWN, TransportError)):
                try:
                    dst.execute(bad, request=f"bad{i}")
                except error:
                    pass
                else:
                    raise AssertionError(f"cycle {i}: {bad} was not refused")
        finally:
            dst.close()

    for i in range(5):  # warm-up: allocator pools, lazily loaded transports
        cycle(-1 - i)
    before, start = state(), time.perf_counter()
    for i in range(n):
        cycle(i)
    seconds = (time.perf_counter() - start) / max(n, 1)
    after = state()
    source.close()
    return {"kind": kind, "cycles": n, "before": before, "after": after, "s_per_cycle": round(seconds, 4)}


def pending_send(close: bool) -> None:
    src, dst = load_backend("ucx", timeout_s=5), load_backend("ucx", timeout_s=5)
    size = 16 << 20
    src.register([np.ones(size, np.uint8)], rank=1)
    dst.register([np.zeros(size, np.uint8)], rank=0)
    dst.add_peer(1, src.metadata())
    src.add_peer(0, dst.metadata())
    t = Transfer(dst_rank=0, src_rank=[1], src_region=[0], src_offset=[0], dst_region=[0], dst_offset=[0],
                 nbytes=[size])
    src.serve(t, rank=1, request="never received")
    time.sleep(0.2)
    if close:
        src.close()  # the source first: the destination's worker then holds a message nobody can finish
        dst.close()
    print("exiting", flush=True)


def main(argv) -> int:
    logging.getLogger("nixl").setLevel(logging.WARNING)
    if argv[0] == "cycles":
        print(json.dumps(cycles(argv[1], int(argv[2]))), flush=True)
    elif argv[0] == "pending-send":
        pending_send(argv[1] == "close")
    else:
        raise SystemExit(f"unknown command {argv[0]!r}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
