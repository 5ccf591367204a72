"""Lifecycles leak nothing and exits do not hang (`_lifecycle.py`, run in fresh
processes, in parallel):

* 200 cycles of create / register / pair / request / two refused requests / close per
  backend keep open fds and threads within +-5 and RSS growth under 20 MB;
* a process whose ucx source sent a message nobody received exits within 10 s, whether
  it closes its backends (the source first) or leaves them open.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from _need import transport_missing

SCRIPT = Path(__file__).with_name("_lifecycle.py")
CYCLES = 200
KINDS = ["host", "nixl", "ucx"]


def _start(*args) -> subprocess.Popen:
    env = {**os.environ, "UCX_WARN_UNUSED_ENV_VARS": "n"}
    return subprocess.Popen([sys.executable, str(SCRIPT), *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env)


def test_repeated_cycles_keep_fds_threads_and_memory_flat():
    kinds = [k for k in KINDS if transport_missing(k) is None]
    runs = {k: _start("cycles", k, str(CYCLES)) for k in kinds}
    results = {}
    for kind, proc in runs.items():
        out, err = proc.communicate(timeout=240)
        assert proc.returncode == 0, f"{kind}: {err[-2000:]}"
        results[kind] = json.loads(out.strip().splitlines()[-1])
    for kind, r in results.items():
        before, after = r["before"], r["after"]
        assert r["cycles"] == CYCLES
        assert abs(after["fds"] - before["fds"]) <= 5, (kind, r)
        assert abs(after["threads"] - before["threads"]) <= 5, (kind, r)
        assert abs(after["native_threads"] - before["native_threads"]) <= 5, (kind, r)
        assert after["rss_mb"] - before["rss_mb"] < 20, (kind, r)
    missing = sorted(set(KINDS) - set(kinds))
    if missing:
        pytest.skip(f"measured {kinds}; not installed: {missing}")


def test_a_process_with_an_unreceived_ucx_send_exits_promptly():
    reason = transport_missing("ucx")
    if reason:
        pytest.skip(reason)
    start = time.monotonic()
    runs = {mode: _start("pending-send", mode) for mode in ("close", "open")}
    for mode, proc in runs.items():
        try:
            out, err = proc.communicate(timeout=max(10 - (time.monotonic() - start), 0.1))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
            pytest.fail(f"pending-send {mode}: the process did not exit within 10 s")
        assert proc.returncode == 0 and "exiting" in out, (mode, err[-2000:])
    assert time.monotonic() - start < 10
