"""Every backend moves every byte of random plans exactly as the host reference does."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings

from kvplan import Transfer
from kvplan_backends.pairing import allocate

from _fabric import copy_rows, run, same
from _need import need
from kvplan.testing.strategies import exchanges


def _reference(p, dst_rank, src_blocks, dst_blocks) -> list:
    """Plain slicing, row by row: what the host backend must reproduce."""
    t = p.lower(dst_rank, src_blocks, dst_blocks)
    src = {r: allocate(p.src, r) for r in t.source_ranks}
    out = allocate(p.dst, dst_rank, fill=False)
    copy_rows(t, lambda r: src[r], out)
    return out



@settings(max_examples=100)
@given(case=exchanges())
def test_host_matches_slicing_reference(case):
    assert same(run("host", *case), _reference(*case))


@pytest.mark.parametrize("kind", ["nixl", "nixl-prepared", "ucx"])
@settings(max_examples=40)
@given(case=exchanges())
def test_backend_matches_host(kind, case):
    need(kind)
    got = run(kind, *case, request=f"contract-{kind}")
    assert same(got, run("host", *case))
    assert any(b is not None and b.any() for b in got) or not len(case[0].lower(*case[1:]))


@pytest.mark.parametrize("kind", ["host", "nixl", "ucx"])
def test_copy_local_moves_rows_within_one_rank(kind):
    need(kind)
    from kvplan.transport import load_backend

    rng = np.random.default_rng(4)
    buffers = [rng.integers(0, 256, 4096, dtype=np.uint8), rng.integers(0, 256, 4096, dtype=np.uint8),
               np.zeros(64, np.uint8)]
    expected = [b.copy() for b in buffers]
    # rows of one step never read what another row writes (transports run them concurrently)
    step = Transfer(dst_rank=0, src_rank=[0, 0, 0], src_region=[0, 0, 1], src_offset=[0, 1001, 3590], dst_region=[1, 2, 1], dst_offset=[3, 0, 3000], nbytes=[999, 64, 500])
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
