"""Prefill ranks in a spawned process (`_pairing.SourceProcess`), decode rank here, paired
through metadata bytes; both sides prepare the plan once, then only block ids travel
per request (and, after that, whole lowered Transfers)."""

from __future__ import annotations

import pytest

from kvplan import AttentionSpec, EngineSpec, Mamba2Spec, ModelSpec, plan

from _fabric import run, same_each
from _need import need

ATTENTION = ModelSpec(name="m", layers=(AttentionSpec(num_kv_heads=4, head_dim=16),) * 2)
HYBRID = ModelSpec(name="h", layers=(AttentionSpec(num_kv_heads=4, head_dim=8),
                                     Mamba2Spec(num_heads=8, head_dim=2, n_groups=2, d_state=4, conv_kernel=4)))
CASES = {
    # 4 prefill ranks -> decode rank 1 of 2: each decode page gathers two prefill ranks' heads
    "attention": (plan(EngineSpec(model=ATTENTION, tp=4, num_blocks=8, kv_layout="NHD"),
                       EngineSpec(model=ATTENTION, tp=2, num_blocks=8)),
                  [([5, 1, 2], [0, 7, 3]), ([0, 4], [6, 5]), ([3], [7])]),
    # a conv TP change with the permuted strategy: pre steps on the prefill side, post steps here
    "hybrid-permuted": (plan(EngineSpec(model=HYBRID, tp=2, num_blocks=8), EngineSpec(model=HYBRID, tp=4, num_blocks=8),
                             conv_strategy="permuted"),
                        [([[2, 3], [5]], [[1, 0], [4]]), ([[6], [1]], [[7], [2]])]),
}


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("kind", ["nixl", "ucx"])
def test_sources_in_another_process_deliver_the_host_result(kind, case):
    need(kind)
    p, reqs = CASES[case]
    got, host = run(kind, p, 1, reqs, apart=True, tag=f"apart-{kind}"), run("host", p, 1, reqs)
    assert same_each(got.prepared, host.prepared)
    assert same_each(got.transfer, host.transfer)
    assert any(b.any() for b in got.prepared[-1])
