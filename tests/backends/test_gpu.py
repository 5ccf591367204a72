"""GPU runs: cupy peer copy in one process (prefill GPU 0, decode GPU 1, or both engines
on GPU 0 of a one-GPU host); nixl and ucx with the prefill ranks in a second process
(UCX uses CUDA IPC only across processes); integrity mode's digest kernel against
`kvplan.lowering.range_digests`, and cupy catching a byte flipped in flight.

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

from kvplan import AttentionSpec, EngineSpec, ModelSpec, Transfer, TransferIntegrityError, plan
from kvplan.lowering import range_digests
from kvplan.planning import STRATEGIES

from _fabric import bounce_sessions, copy_rows, hybrid_sessions, run, same, same_each, sessions, sliced
from _inject import flip_after_digest
from _need import gpu_pair, need
from _pairing import SourceProcess, allocate


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
    assert set(got.routes) == {"lowered reads, step templates" if case[0].has_local_steps else "template"}


@pytest.mark.gpu
@pytest.mark.parametrize("mode", ["cupy", "nixl", "nixl-push", "ucx", "nixl-ring", "nixl-push-ring"])
@settings(max_examples=4, deadline=None)
@given(data=st.data())
def test_bounce_on_gpus_matches_the_direct_plan(mode, data):
    """Bounce plans: pack (step template kernel on the prefill GPU), copies (pulled, or
    pushed by the prefill side with NIXL WRITE), unpack (step template kernel on the
    decode GPU) leave the decode pages as the direct plan does; "-ring": through a
    staging ring of 2 slots of 1 - 2 spans (requests longer than the ring)."""
    from kvplan.lowering import StagingRing

    kind, push, ringed = mode.split("-")[0], "-push" in mode, mode.endswith("-ring")
    need(kind)
    case = data.draw(st.one_of(bounce_sessions(), hybrid_sessions("direct", "bounce")), label="session")
    p, dst_rank, reqs = case
    options = {"push": True} if push else None
    ring = StagingRing(chunk_spans=data.draw(st.integers(1, 2), label="chunk_spans"), slots=2) if ringed else None
    got = run(kind, *case, apart=kind != "cupy", tag=f"gpu-bounce-{mode}", options=options, source_options=options,
              ring=ring, **gpu_pair())
    want = sliced(plan(p.src, p.dst), dst_rank, reqs)
    own = len(p.dst_regions) - len(p.dst_scratch)
    for snapshots in (got.prepared, got.transfer) if ring is None else (got.prepared,):
        assert same_each([s[:own] for s in snapshots], want)
    pulled = "lowered reads, step templates" if kind == "ucx" else "kept reads, step templates"
    routes = ("staging ring, pushed", "staging ring") if ring else ("pushed, step templates", pulled)
    assert set(got.routes) == {routes[0] if push else routes[1]}


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
@pytest.mark.parametrize("mode", ["nixl", "ucx", "nixl-push"])
@settings(max_examples=3, deadline=None)
@given(data=st.data())
def test_two_process_vram_met_over_tcp(mode, data):
    """Engines as on different hosts: the sides meet only over TCP (`publish` /
    `fetch_peer` through NIXL's metadata listener or a ucxx listener), then move VRAM."""
    kind = mode.split("-")[0]
    need(kind)
    options = {"push": True} if mode.endswith("-push") else None
    case = data.draw(st.one_of(sessions(), hybrid_sessions("direct")), label="session")
    got = run(kind, *case, apart=True, tcp=True, tag=f"gpu-tcp-{mode}", options=options, source_options=options,
              **gpu_pair())
    own = len(case[0].dst_regions) - len(case[0].dst_scratch)
    want = sliced(*case)
    assert same_each([s[:own] for s in got.prepared], [s[:own] for s in want])


@pytest.mark.gpu
@pytest.mark.parametrize("mode", ["nixl-push", "nixl-layers", "ucx-layers", "nixl-push-layers"])
@settings(max_examples=4, deadline=None)
@given(data=st.data())
def test_two_process_push_and_layer_streaming_on_gpus(mode, data):
    """Serving features on the GPUs, prefill ranks in a second process: nixl push of
    plans without local steps (the prefill side writes, NIXL WRITE); requests streamed
    layer by layer (`lower(..., layers=range)` parts served and executed in turn), for
    dense, hybrid and bounce plans."""
    kind = mode.split("-")[0]
    need(kind)
    options = {"push": True} if "-push" in mode else None
    layered = mode.endswith("-layers")
    sessions_of = st.one_of(sessions(), hybrid_sessions("direct"), *([bounce_sessions()] if layered else []))
    case = data.draw(sessions_of, label="session")
    per_part = data.draw(st.integers(1, 2), label="layers_per_part") if layered else None
    got = run(kind, *case, apart=True, tag=f"gpu-{mode}", options=options, source_options=options,
              layers_per_part=per_part, **gpu_pair())
    own = len(case[0].dst_regions) - len(case[0].dst_scratch)
    want = sliced(*case)
    assert same_each([s[:own] for s in got.transfer], [s[:own] for s in want])
    assert same_each([s[:own] for s in got.prepared], [s[:own] for s in want])
    if options:
        assert set(got.routes) <= {"pushed", "pushed, step templates"}


@pytest.mark.gpu
@pytest.mark.parametrize("kind", ["nixl", "ucx"])
@pytest.mark.parametrize("conv_strategy", ["staged", "permuted"])
@settings(max_examples=3, deadline=None)
@given(data=st.data())
def test_two_process_local_steps_on_gpus(kind, conv_strategy, data):
    need(kind)
    case = data.draw(hybrid_sessions(conv_strategy), label="session")
    _check(run(kind, *case, apart=True, tag=f"gpu-hybrid-2proc-{kind}", **gpu_pair()), case)


@pytest.mark.gpu
def test_digest_kernel_matches_the_reference():
    """One launch digests ranges of every length and alignment (empty, one byte, across
    the 64 KiB piece boundary, 1 MiB) exactly as range_digests does on the host; one
    flipped byte changes its row's digest and no other."""
    need("cupy")
    import cupy

    from kvplan_backends import _gpucopy

    rng = np.random.default_rng(11)
    size = 4 << 20
    host = rng.integers(0, 256, size, dtype=np.uint8)
    n = 400
    lengths = rng.choice([0, 1, 3, 16, 31, 255, 4096, 65535, 65536, 65537, 200_001, 1 << 20], n)
    offsets = rng.integers(0, size - lengths)
    with cupy.cuda.Device(0):
        gpu = cupy.asarray(host)
        stream = cupy.cuda.Stream(non_blocking=True)
        addr = np.uint64(gpu.data.ptr) + offsets.astype(np.uint64)
        want = range_digests([host], np.zeros(n, np.int64), offsets, lengths)
        got = _gpucopy.digest_ranges(cupy, 0, addr, lengths, stream)
        assert got.dtype == np.uint64 and np.array_equal(got, want)
        k = int(np.flatnonzero(lengths == 65537)[0])
        at = int(offsets[k]) + 65536  # the last byte: the second piece of its row
        gpu[at:at + 1] ^= 1
        changed = _gpucopy.digest_ranges(cupy, 0, addr, lengths, stream) != want
        covers = (offsets <= at) & (at < offsets + lengths)
        assert changed[k] and np.array_equal(changed, covers)


@pytest.mark.gpu
def test_cupy_integrity_catches_a_byte_flipped_in_flight(monkeypatch):
    """The template route with the source's digests (serve(check=True) -> execute(check=
    digests)), and a lowered Transfer with check=True (the destination digests the
    source GPU itself): a byte flipped after the digest is caught, its row named; clean
    requests pass and hold the source's bytes."""
    need("cupy")
    from kvplan.transport import load_backend

    devices = gpu_pair()
    model = ModelSpec(name="m", layers=(AttentionSpec(num_kv_heads=4, head_dim=64),) * 2)
    p = plan(EngineSpec(model=model, num_blocks=8), EngineSpec(model=model, tp=2, num_blocks=8))
    src_buffers = allocate(p.src, 0, device=devices["src_device"])
    out = allocate(p.dst, 1, device=devices["dst_device"], fill=False)
    src, dst = load_backend("cupy"), load_backend("cupy")
    try:
        src.register(src_buffers, rank=0)
        dst.register(out, rank=1)
        dst.add_peer(0, src.metadata())
        prepared, serving = dst.prepare(p, 1), src.prepare(p, 1)
        request = ([1, 2, 5], [3, 4, 0])
        injected = flip_after_digest(monkeypatch, row=1)
        done = src.serve(serving, *request, rank=0, request="g1", check=True)
        assert injected.flipped and len(done.digests[0]) == len(p.lower(1, *request))
        with pytest.raises(TransferIntegrityError) as info:
            dst.execute(prepared, *request, request="g1", check=done.digests)
        assert info.value.rows == (1,) and dst.route == "template"
        done = src.serve(serving, *request, rank=0, request="g2", check=True)
        dst.execute(prepared, *request, request="g2", check=done.digests)
        want = [b.get() for b in out]
        copy_rows(p.lower(1, *request), lambda r: [b.get() for b in src_buffers], want)
        assert same([b.get() for b in out], want)
        injected.armed = True
        t = p.lower(1, [6], [7])
        with pytest.raises(TransferIntegrityError) as info:
            dst.execute(t, request="g3", check=True)
        assert info.value.rows == (1,)
        dst.execute(t, request="g4", check=True)
    finally:
        dst.close()
        src.close()


@pytest.mark.gpu
@pytest.mark.parametrize("kind", ["nixl", "ucx"])
def test_two_process_vram_integrity(kind):
    """Prefill ranks on one GPU in a second process digest their rows (one launch each)
    and ship the digests (ucx: also in the message); the decode GPU checks after the
    copy. Clean requests pass with the host's bytes; a digest that disagrees names its row."""
    need(kind)
    from kvplan.transport import load_backend

    devices = gpu_pair()
    model = ModelSpec(name="m", layers=(AttentionSpec(num_kv_heads=4, head_dim=64),) * 2)
    p = plan(EngineSpec(model=model, tp=2, num_blocks=8), EngineSpec(model=model, num_blocks=8))
    request = ([1, 2, 5], [3, 4, 0])
    out = allocate(p.dst, 0, device=devices["dst_device"], fill=False)
    dst = load_backend(kind)
    dst.register(out, rank=0)
    try:
        with SourceProcess(kind, p.src, device=devices["src_device"], ranks=p.reads(0).source_ranks,
                           timeout_s=120) as sources:
            for rank, md in sources.metadata.items():
                dst.add_peer(rank, md)
            sources.connect(0, dst.metadata())
            sources.prepare(p, 0)
            prepared = dst.prepare(p, 0)
            digests = sources.serve(*request, request="vram-check", check=True)
            dst.execute(prepared, *request, request="vram-check", check=True if kind == "ucx" else digests)
            sources.wait()
            assert same([b.get() for b in out], sliced(p, 0, [request])[-1])
            digests = sources.serve(*request, request="vram-bad", check=True)
            wrong = {r: d.copy() for r, d in digests.items()}
            rank = min(wrong)
            wrong[rank][0] ^= np.uint64(1)
            with pytest.raises(TransferIntegrityError) as info:
                dst.execute(prepared, *request, request="vram-bad", check=wrong)
            sources.wait()
            t = p.lower(0, *request)
            assert info.value.rows == (int(np.flatnonzero(t.src_rank == rank)[0]),)
    finally:
        dst.close()
