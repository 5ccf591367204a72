"""Hybrid models (attention + Mamba / GDN state) under every conv strategy: the pre
steps on the prefill ranks, the reads and the post steps on the decode rank move the
same bytes through every backend as plain slicing does."""

from __future__ import annotations

import pytest
from hypothesis import given, settings

from kvplan_backends.pairing import allocate

from _fabric import copy_rows, run, same, scratch
from _need import need
from kvplan.testing.strategies import hybrid_exchanges

def _reference(p, dst_rank, src_blocks, dst_blocks) -> list:
    t = p.lower(dst_rank, src_blocks, dst_blocks)
    src_extra, dst_extra = scratch(p, src_blocks)
    src = {r: allocate(p.src, r, extra=src_extra) for r in range(p.src.world_size)}
    out = allocate(p.dst, dst_rank, fill=False, extra=dst_extra)
    if t.pre_steps is not None:
        for rank in t.pre_steps.source_ranks:
            copy_rows(t.pre_steps.for_source(rank), lambda r: src[r], src[rank])
    copy_rows(t, lambda r: src[r], out)
    if t.post_steps is not None:
        copy_rows(t.post_steps, lambda r: out, out)
    return out



@settings(max_examples=60)
@given(case=hybrid_exchanges())
def test_host_runs_local_steps_like_slicing(case):
    assert same(run("host", *case), _reference(*case))


@pytest.mark.parametrize("kind", ["nixl", "ucx"])
@settings(max_examples=15)
@given(case=hybrid_exchanges())
def test_backend_runs_local_steps_like_host(kind, case):
    need(kind)
    assert same(run(kind, *case, request=f"hybrid-{kind}"), run("host", *case))
