"""GPU runs: cupy peer copy in one process (prefill GPU 0, decode GPU 1, or both engines
on GPU 0 of a one-GPU host); nixl and ucx with the prefill ranks in a second process
(UCX uses CUDA IPC only across processes).

Every test drives the protocol as `_fabric.run` does on the CPU: each rank prepares the
plan once, several requests run with the same `Prepared`, then (on zeroed decode
memory) the same requests as lowered Transfers through plain `execute`. Every result
is compared byte for byte with the host backend's, request by request.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kvplan import Transfer
from kvplan.planning import STRATEGIES

from _fabric import hybrid_sessions, run, same, same_each, sessions
from _need import gpu_pair, need


def _check(got, case) -> None:
    """`got` (a `_fabric.Run` on the GPUs) equals the host backend's run of `case`."""
    p, dst_rank, reqs = case
    host = run("host", *case)
    assert same_each(got.prepared, host.prepared)
    assert same_each(got.transfer, host.transfer)
    assert any(b is not None and b.any() for b in got.prepared[-1]) or \
        not any(len(p.lower(dst_rank, *req)) for req in reqs)


@pytest.mark.gpu
def test_kernel_copies_ranges_of_any_size_and_alignment():
    need("cupy")
    import cupy

    from kvplan.transport import load_backend

    rng = np.random.default_rng(1)
    n = 2000
    sizes = rng.choice([1, 3, 15, 16, 17, 100, 2048, 4099, 300_000], n)
    src_off = np.cumsum(np.r_[0, sizes[:-1] + rng.integers(0, 40, n - 1)])
    perm = rng.permutation(n)  # destination slots in another order, each sized for its row
    dst_off = np.empty(n, np.int64)
    dst_off[perm] = np.cumsum(np.r_[0, sizes[perm][:-1] + rng.integers(0, 40, n - 1)])
    step = Transfer(dst_rank=0, src_rank=np.zeros(n), src_region=np.zeros(n), src_offset=src_off,
                    dst_region=np.ones(n), dst_offset=dst_off, nbytes=sizes)
    size = int(max(src_off.max(), dst_off.max()) + sizes.max() + 64)
    host = [rng.integers(0, 256, size, dtype=np.uint8), np.zeros(size, np.uint8)]
    expected = [b.copy() for b in host]
    for i in range(n):
        s, d, k = int(step.src_offset[i]), int(step.dst_offset[i]), int(step.nbytes[i])
        expected[1][d:d + k] = expected[0][s:s + k]
    with cupy.cuda.Device(0):
        gpu = [cupy.asarray(b) for b in host]
    backend = load_backend("cupy")
    backend.register(gpu)
    backend.copy_local(step)
    backend.close()
    assert same([b.get() for b in gpu], expected)


@pytest.mark.gpu
@pytest.mark.parametrize("peer_access", [True, False])
@settings(max_examples=20, deadline=None)
@given(case=sessions())
def test_cupy_matches_host(peer_access, case):
    """Prepared: the copy template evaluated on the GPU per request (with peer access),
    else lowered; plain execute(transfer): one kernel, or cudaMemcpyPeerAsync per row."""
    need("cupy")
    got = run("cupy", *case, options={"peer_access": peer_access}, **gpu_pair())
    _check(got, case)
    requests = len(case[2])
    assert got.routes == ["template" if peer_access else "lowered"] * requests
    kernel = "kernel" if peer_access else "memcpyPeer"
    assert got.launches == ["template" if peer_access else kernel] * requests + [kernel] * requests


@pytest.mark.gpu
@pytest.mark.parametrize("conv_strategy", STRATEGIES)
@settings(max_examples=8, deadline=None)
@given(data=st.data())
def test_cupy_hybrid_matches_host(conv_strategy, data):
    """Direct plans take the template; staged / permuted ones run their pre steps on the
    prefill GPU (serve) and post steps on the decode GPU (execute), lowered per request."""
    need("cupy")
    case = data.draw(hybrid_sessions(conv_strategy), label="session")
    got = run("cupy", *case, **gpu_pair())
    _check(got, case)
    assert set(got.routes) == {"lowered" if case[0].has_local_steps else "template"}


@pytest.mark.gpu
@pytest.mark.parametrize("kind", ["nixl", "ucx"])
@settings(max_examples=6, deadline=None)
@given(case=sessions())
def test_two_process_vram_matches_host(kind, case):
    need(kind)
    got = run(kind, *case, apart=True, tag=f"gpu-2proc-{kind}", **gpu_pair())
    _check(got, case)
    assert got.routes == ["prepared lists" if kind == "nixl" else "lowered"] * len(case[2])


@pytest.mark.gpu
@pytest.mark.parametrize("kind", ["nixl", "ucx"])
@pytest.mark.parametrize("conv_strategy", ["staged", "permuted"])
@settings(max_examples=3, deadline=None)
@given(data=st.data())
def test_two_process_local_steps_on_gpus(kind, conv_strategy, data):
    need(kind)
    case = data.draw(hybrid_sessions(conv_strategy), label="session")
    _check(run(kind, *case, apart=True, tag=f"gpu-hybrid-2proc-{kind}", **gpu_pair()), case)
