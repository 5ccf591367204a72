"""Prefill ranks in a spawned process, decode rank here, paired through metadata bytes."""

from __future__ import annotations

import numpy as np
import pytest

from kvplan import AttentionSpec, EngineSpec, ModelSpec, plan
from kvplan.transport import load_backend
from kvplan_backends.pairing import SourceProcess, allocate

from _fabric import run
from _need import need


@pytest.mark.parametrize("kind", ["nixl", "ucx"])
def test_sources_in_another_process_deliver_the_host_result(kind):
    need(kind)
    m = ModelSpec(name="m", layers=(AttentionSpec(num_kv_heads=4, head_dim=16),) * 2)
    p = plan(EngineSpec(model=m, tp=4, num_blocks=8, kv_layout="NHD"), EngineSpec(model=m, tp=2, num_blocks=8))
    src_blocks, dst_blocks = [5, 1, 2], [0, 7, 3]
    t = p.lower(1, src_blocks, dst_blocks)
    out = allocate(p.dst, 1, fill=False)
    dst = load_backend(kind)
    dst.register(out)
    try:
        with SourceProcess(kind, p.src, ranks=t.source_ranks, timeout_s=60) as sources:
            for rank, md in sources.metadata.items():
                dst.add_peer(rank, md)
            sources.connect(1, dst.metadata())
            sources.serve(t, request="whole-transfer")
            dst.execute(t, request="whole-transfer")
            sources.wait()
            sources.set_plan(p)
            sources.serve_blocks(1, src_blocks, dst_blocks, request="block-ids")
            dst.execute(t, request="block-ids")
            sources.wait()
    finally:
        dst.close()
    expected = run("host", p, 1, src_blocks, dst_blocks)
    assert all(np.array_equal(a, b) for a, b in zip(out, expected, strict=True))
