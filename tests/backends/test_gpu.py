"""GPU runs: cupy peer copy in one process (prefill GPU 0, decode GPU 1); nixl and ucx
with the prefill ranks in a second process (UCX uses CUDA IPC only across processes).
Each result is compared byte for byte with the host backend's."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings

from kvplan import plan

from kvplan.transport import load_backend
from kvplan_backends.pairing import SourceProcess, allocate

from _fabric import run, same, scratch
from _need import need
from kvplan.testing.strategies import exchanges, hybrid_exchanges


def _on_gpu(buffers, device):
    import cupy

    with cupy.cuda.Device(device):
        return [None if b is None else cupy.asarray(b) for b in buffers]


def _host(buffers):
    return [None if b is None else np.asarray(b.get()) for b in buffers]


def _cupy_decode(p, dst_rank: int, source_ranks, **options):
    """A decode-rank cupy backend on GPU 1 paired with prefill backends on GPU 0.

    Returns (decode backend, its buffers, source backends): the caller keeps the source
    backends, which own the prefill memory the decode rank reads."""
    dst_buffers = _on_gpu(allocate(p.dst, dst_rank, fill=False), 1)
    dst = load_backend("cupy", **options)
    dst.register(dst_buffers)
    sources = []
    for rank in source_ranks:
        src = load_backend("cupy")
        src.register(_on_gpu(allocate(p.src, rank), 0))
        dst.add_peer(rank, src.metadata())
        sources.append(src)
    return dst, dst_buffers, sources



@pytest.mark.gpu
def test_kernel_copies_ranges_of_any_size_and_alignment():
    need("cupy")
    from kvplan import Transfer

    rng = np.random.default_rng(1)
    n = 2000
    sizes = rng.choice([1, 3, 15, 16, 17, 100, 2048, 4099, 300_000], n)
    src_off = np.cumsum(np.r_[0, sizes[:-1] + rng.integers(0, 40, n - 1)])
    perm = rng.permutation(n)  # destination slots in another order, each sized for its row
    dst_off = np.empty(n, np.int64)
    dst_off[perm] = np.cumsum(np.r_[0, sizes[perm][:-1] + rng.integers(0, 40, n - 1)])
    step = Transfer(dst_rank=0, src_rank=np.zeros(n), src_region=np.zeros(n), src_offset=src_off, dst_region=np.ones(n), dst_offset=dst_off, nbytes=sizes)
    size = int(max(src_off.max(), dst_off.max()) + sizes.max() + 64)
    host = [rng.integers(0, 256, size, dtype=np.uint8), np.zeros(size, np.uint8)]
    expected = [b.copy() for b in host]
    for i in range(n):
        s, d, k = int(step.src_offset[i]), int(step.dst_offset[i]), int(step.nbytes[i])
        expected[1][d:d + k] = expected[0][s:s + k]
    gpu = _on_gpu(host, 0)
    backend = load_backend("cupy")
    backend.register(gpu)
    backend.copy_local(step)
    backend.close()
    assert same(_host(gpu), expected)


@pytest.mark.multi_gpu
@pytest.mark.parametrize("peer_access", [True, False])
@settings(max_examples=20, deadline=None)
@given(case=exchanges())
def test_cupy_peer_matches_host(peer_access, case):
    need("cupy")
    p, dst_rank, src_blocks, dst_blocks = case
    t = p.lower(dst_rank, src_blocks, dst_blocks)
    dst, dst_buffers, _sources = _cupy_decode(p, dst_rank, t.source_ranks, peer_access=peer_access)
    dst.execute(t, request="gpu")
    assert dst.last_launch["path"] == ("kernel" if peer_access else "memcpyPeer")
    assert same(_host(dst_buffers), run("host", *case))


@pytest.mark.multi_gpu
@settings(max_examples=25, deadline=None)
@given(case=exchanges())
def test_cupy_request_template_matches_host(case):
    """execute_request(): the plan's copy template evaluated on the GPU per request."""
    need("cupy")
    p, dst_rank, src_blocks, dst_blocks = case
    dst, dst_buffers, _sources = _cupy_decode(p, dst_rank, p.lower(dst_rank, src_blocks, dst_blocks).source_ranks)
    dst.execute_request(p, dst_rank, src_blocks, dst_blocks, request="gpu-template")
    assert dst.last_launch["path"] == "template"
    assert same(_host(dst_buffers), run("host", *case))


@pytest.mark.multi_gpu
@settings(max_examples=10, deadline=None)
@given(case=hybrid_exchanges())
def test_cupy_request_template_matches_host_hybrid(case):
    need("cupy")
    p, dst_rank, src_blocks, dst_blocks = case
    p = plan(p.src, p.dst)  # templates serve direct plans (staged / permuted lower on the host)
    case = (p, dst_rank, src_blocks, dst_blocks)
    t = p.lower(dst_rank, src_blocks, dst_blocks)
    dst, dst_buffers, _sources = _cupy_decode(p, dst_rank, t.source_ranks)
    dst.execute_request(p, dst_rank, src_blocks, dst_blocks, request="gpu-template-hybrid")
    assert same(_host(dst_buffers), run("host", *case))


@pytest.mark.multi_gpu
@pytest.mark.parametrize("kind", ["nixl", "nixl-prepared", "ucx"])
@settings(max_examples=6, deadline=None)
@given(case=exchanges())
def test_two_process_vram_matches_host(kind, case):
    need(kind)
    name = kind.split("-")[0]
    p, dst_rank, src_blocks, dst_blocks = case
    t = p.lower(dst_rank, src_blocks, dst_blocks)
    dst_buffers = allocate(p.dst, dst_rank, device=1, fill=False)
    dst = load_backend(name)
    dst.register(dst_buffers)
    with SourceProcess(name, p.src, device=0, ranks=t.source_ranks) as sources:
        for rank, md in sources.metadata.items():
            dst.add_peer(rank, md)
        sources.connect(dst_rank, dst.metadata())
        sources.serve(t, request="gpu-2proc")
        if kind == "nixl-prepared":
            dst.prepare(p, dst_rank)
            dst.execute_blocks(p, src_blocks, dst_blocks, request="gpu-2proc")
        else:
            dst.execute(t, request="gpu-2proc")
        sources.wait()
    dst.close()
    assert same(_host(dst_buffers), run("host", *case))


def _source_ranks(t) -> list[int]:
    pre = t.pre_steps.source_ranks if t.pre_steps is not None else ()
    return sorted(set(t.source_ranks) | set(pre))


@pytest.mark.multi_gpu
@settings(max_examples=15, deadline=None)
@given(case=hybrid_exchanges())
def test_cupy_runs_local_steps_on_gpus(case):
    need("cupy")
    p, dst_rank, src_blocks, dst_blocks = case
    t = p.lower(dst_rank, src_blocks, dst_blocks)
    src_extra, dst_extra = scratch(p, src_blocks)
    dst_buffers = _on_gpu(allocate(p.dst, dst_rank, fill=False, extra=dst_extra), 1)
    dst = load_backend("cupy")
    dst.register(dst_buffers)
    sources = {}
    for rank in _source_ranks(t):
        sources[rank] = load_backend("cupy")
        sources[rank].register(_on_gpu(allocate(p.src, rank, extra=src_extra), 0))
        dst.add_peer(rank, sources[rank].metadata())
    for rank, src in sources.items():
        src.serve(t, rank=rank, request="gpu-hybrid").wait()
    dst.execute(t, request="gpu-hybrid")
    assert same(_host(dst_buffers), run("host", *case))


@pytest.mark.multi_gpu
@pytest.mark.parametrize("kind", ["nixl", "ucx"])
@settings(max_examples=4, deadline=None)
@given(case=hybrid_exchanges())
def test_two_process_local_steps_on_gpus(kind, case):
    need(kind)
    p, dst_rank, src_blocks, dst_blocks = case
    t = p.lower(dst_rank, src_blocks, dst_blocks)
    src_extra, dst_extra = scratch(p, src_blocks)
    dst_buffers = allocate(p.dst, dst_rank, device=1, fill=False, extra=dst_extra)
    dst = load_backend(kind)
    dst.register(dst_buffers)
    with SourceProcess(kind, p.src, device=0, ranks=_source_ranks(t), extra=src_extra) as sources:
        for rank, md in sources.metadata.items():
            dst.add_peer(rank, md)
        sources.connect(dst_rank, dst.metadata())
        sources.serve(t, request="gpu-hybrid-2proc")
        dst.execute(t, request="gpu-hybrid-2proc")
        sources.wait()
    dst.close()
    assert same(_host(dst_buffers), run("host", *case))
