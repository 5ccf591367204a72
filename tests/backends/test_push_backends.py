"""Push through the transports: every prefill rank writes its own rows.

* nixl with ``push=True`` on both sides, plans without local steps (dense and hybrid):
  `serve` on each prefill rank lowers the request and writes its rows (NIXL WRITE),
  `execute` on the decode rank waits for every source's word; prepared and lowered
  routes, and prefill ranks in another process.
* the push views (`plan.lower_push(r, ...)`): each prefill rank is handed only its own
  rows and pushes them (nixl WRITE) or sends them (ucx), the decode rank executes the
  whole request; the pages end as plain slicing of the pulled request leaves them.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kvplan import AttentionSpec, EngineSpec, ModelSpec, plan
from kvplan.transport import load_backend

from _fabric import LocalSources, hybrid_sessions, run, scratch, serving_ranks, sessions, sliced, snapshot
from _need import need
from _pairing import allocate

PUSH = {"push": True}


def _same(p, got, want) -> bool:
    own = len(p.dst_regions) - len(p.dst_scratch)
    return len(got) == len(want) and all(
        all((a is None and b is None) or (a == b).all() for a, b in zip(g[:own], w[:own], strict=True))
        for g, w in zip(got, want, strict=True))


@settings(max_examples=6)
@given(data=st.data())
def test_nixl_push_of_plans_without_local_steps(data):
    need("nixl")
    case = data.draw(st.one_of(sessions(), hybrid_sessions("direct")), label="session")
    got = run("nixl", *case, tag="push-direct", options=PUSH, source_options=PUSH)
    assert _same(case[0], got.prepared, sliced(*case)) and _same(case[0], got.transfer, sliced(*case))
    assert set(got.routes) == {"pushed"}


def test_nixl_push_from_another_process():
    need("nixl")
    m = ModelSpec(name="m", layers=(AttentionSpec(num_kv_heads=4, head_dim=8),) * 3)
    p = plan(EngineSpec(model=m, tp=4, num_blocks=16, kv_layout="NHD"), EngineSpec(model=m, tp=2, num_blocks=16))
    case = (p, 1, [([5, 2, 9], [1, 0, 7]), ([11], [3]), ([4, 8], [15, 6])])
    got = run("nixl", *case, tag="push-apart", options=PUSH, source_options=PUSH, apart=True)
    assert _same(p, got.prepared, sliced(*case)) and _same(p, got.transfer, sliced(*case))
    assert set(got.routes) == {"pushed"}


@pytest.mark.parametrize("kind", ["nixl", "ucx"])
@settings(max_examples=5)
@given(data=st.data())
def test_push_views_move_each_prefill_ranks_own_rows(kind, data):
    need(kind)
    p, dst_rank, reqs = data.draw(st.one_of(sessions(), hybrid_sessions("direct")), label="session")
    options = PUSH if kind == "nixl" else {"timeout_s": 20}
    src_extra, dst_extra = scratch(p, reqs, dst_rank)
    out = allocate(p.dst, dst_rank, fill=False, extra=dst_extra)
    decode = load_backend(kind, **options)
    got = []
    try:
        decode.register(out, rank=dst_rank)
        with LocalSources(kind, p.src, ranks=serving_ranks(p, dst_rank), options=options, extra=src_extra) as sources:
            for rank, md in sources.metadata.items():
                decode.add_peer(rank, md)
            sources.connect(dst_rank, decode.metadata())
            for i, (src_blocks, dst_blocks) in enumerate(reqs):
                done = [b.serve(p.lower_push(r, src_blocks, dst_blocks)[dst_rank], rank=r, request=f"view-{i}")
                        for r, b in sources.backends.items()]
                decode.execute(p.lower(dst_rank, src_blocks, dst_blocks), request=f"view-{i}")
                for completion in done:
                    completion.wait()
                got.append(snapshot(out))
    finally:
        decode.close()
    assert _same(p, got, sliced(p, dst_rank, reqs))
    assert plan(p.src, p.dst).fingerprint == p.fingerprint
