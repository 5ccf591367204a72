"""Hybrid models (attention + Mamba / GDN state) under every conv strategy: the pre
steps on the prefill ranks, the reads and the post steps on the decode rank move the
same bytes through every backend as plain slicing does, request after request of one
`Prepared`, and through plain `execute(transfer)`."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kvplan.planning import STRATEGIES

from _fabric import hybrid_sessions, run, same_each, sliced
from _need import need


@pytest.mark.parametrize("conv_strategy", STRATEGIES)
@settings(max_examples=20)
@given(data=st.data())
def test_host_runs_local_steps_like_slicing(conv_strategy, data):
    case = data.draw(hybrid_sessions(conv_strategy), label="session")
    got, want = run("host", *case), sliced(*case)
    assert same_each(got.prepared, want)
    assert same_each(got.transfer, want)


@pytest.mark.parametrize("kind", ["nixl", "ucx"])
@pytest.mark.parametrize("conv_strategy", STRATEGIES)
@settings(max_examples=5)
@given(data=st.data())
def test_backend_runs_local_steps_like_host(kind, conv_strategy, data):
    need(kind)
    case = data.draw(hybrid_sessions(conv_strategy), label="session")
    got, host = run(kind, *case, tag=f"hybrid-{kind}"), run("host", *case)
    assert same_each(got.prepared, host.prepared)
    assert same_each(got.transfer, host.transfer)
    # plans with local steps lower their reads per request and run the steps from step
    # templates; NIXL's prepared lists serve the rest (a staged or permuted plan without a
    # conv TP change has no local steps)
    steps = case[0].has_local_steps
    assert set(got.routes) == {"lowered reads, step templates" if steps else
                               "prepared lists" if kind == "nixl" else "lowered"}
