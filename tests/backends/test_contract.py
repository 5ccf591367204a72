"""The transport protocol's contract: every backend, prepared once per plan and rank,
moves every byte of several requests of random plans exactly as the host reference
does, and so does plain `execute(transfer)` of the same requests."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings

from kvplan import AttentionSpec, EngineSpec, ModelSpec, Transfer, plan
from kvplan.transport import load_backend

from _fabric import copy_rows, run, same, same_each, sessions, sliced
from _need import need
from _pairing import allocate


@settings(max_examples=60)
@given(case=sessions())
def test_host_matches_slicing_reference(case):
    got, want = run("host", *case), sliced(*case)
    assert same_each(got.prepared, want)
    assert same_each(got.transfer, want)


@pytest.mark.parametrize("kind", ["nixl", "ucx"])
@settings(max_examples=20)
@given(case=sessions())
def test_backend_matches_host(kind, case):
    need(kind)
    p, dst_rank, reqs = case
    got, host = run(kind, *case, tag=f"contract-{kind}"), run("host", *case)
    assert same_each(got.prepared, host.prepared)
    assert same_each(got.transfer, host.transfer)
    assert any(b is not None and b.any() for b in got.prepared[-1]) or \
        not any(len(p.lower(dst_rank, *req)) for req in reqs)
    # NIXL serves these direct plans from descriptor lists prepared once (not by lowering)
    assert got.routes == ["prepared lists" if kind == "nixl" else "lowered"] * len(reqs)


@pytest.mark.parametrize("kind", ["host", "nixl", "ucx"])
def test_copy_local_moves_rows_within_one_rank(kind):
    need(kind)
    rng = np.random.default_rng(4)
    buffers = [rng.integers(0, 256, 4096, dtype=np.uint8), rng.integers(0, 256, 4096, dtype=np.uint8),
               np.zeros(64, np.uint8)]
    expected = [b.copy() for b in buffers]
    # rows of one step never read what another row writes (transports run them concurrently)
    step = Transfer(dst_rank=0, src_rank=[0, 0, 0], src_region=[0, 0, 1], src_offset=[0, 1001, 3590],
                    dst_region=[1, 2, 1], dst_offset=[3, 0, 3000], nbytes=[999, 64, 500])
    for i in range(len(step)):
        s, d, n = int(step.src_offset[i]), int(step.dst_offset[i]), int(step.nbytes[i])
        expected[step.dst_region[i]][d:d + n] = expected[step.src_region[i]][s:s + n]
    backend = load_backend(kind)
    try:
        backend.register(buffers)
        backend.copy_local(step)
    finally:
        backend.close()
    assert same(buffers, expected)


@pytest.mark.parametrize("kind", ["host", "nixl", "ucx"])
def test_prefix_tail_requests_read_only_the_tail(kind):
    """A decode prefix hit (prefix="tail"): the prefill side lists the whole prompt, the
    decode side only the blocks it lacks; both sides pair them by the same rule."""
    need(kind)
    model = ModelSpec(name="m", layers=(AttentionSpec(num_kv_heads=2, head_dim=4),) * 2)
    p = plan(EngineSpec(model=model, tp=2, num_blocks=6), EngineSpec(model=model, num_blocks=6))
    src_blocks, dst_blocks = [4, 0, 5, 2], [1, 3]  # decode already holds the first two blocks
    t = p.lower(0, src_blocks, dst_blocks, prefix="tail")
    src = {r: allocate(p.src, r) for r in (0, 1)}
    want = allocate(p.dst, 0, fill=False)
    copy_rows(t, lambda r: src[r], want)
    out = allocate(p.dst, 0, fill=False)
    dst, sources = load_backend(kind), {r: load_backend(kind) for r in (0, 1)}
    try:
        dst.register(out)
        for rank, backend in sources.items():
            backend.register(src[rank])
            dst.add_peer(rank, backend.metadata())
            backend.add_peer(0, dst.metadata())
        prepared = dst.prepare(p, 0)
        done = [b.serve(b.prepare(p, 0), src_blocks, dst_blocks, rank=r, prefix="tail", request="tail")
                for r, b in sources.items()]
        dst.execute(prepared, src_blocks, dst_blocks, prefix="tail", request="tail")
        for completion in done:
            completion.wait()
    finally:
        dst.close()
        for backend in sources.values():
            backend.close()
    assert len(t) and same(out, want)
    # the tail is prefill blocks 5 and 2 only: decode blocks 1 and 3 hold their bytes
    assert {int(o) // p.dst_regions[0].block_bytes for o in t.dst_offset} == {1, 3}
