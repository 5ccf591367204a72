"""Layer-wise streaming through every CPU backend: each request served and executed as
`lower(..., layers=range)` parts (a few layers at a time, in order) leaves the decode
pages exactly as the whole request copied by plain slicing does, for attention models
(direct and bounce) and hybrid ones (every conv strategy; the pre and post steps of a
part run with it)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from _fabric import bounce_sessions, hybrid_sessions, run, sessions, sliced
from _need import need
from kvplan.testing.strategies import STRATEGIES


def _pages(p, snapshots) -> list:
    own = len(p.dst_regions) - len(p.dst_scratch)
    return [s[:own] for s in snapshots]


@pytest.mark.parametrize("kind", ["host", "nixl", "ucx"])
@settings(max_examples=6)
@given(data=st.data())
def test_layer_by_layer_submissions_deliver_the_request(kind, data):
    need(kind)
    case = data.draw(st.one_of(sessions(), bounce_sessions(), *(hybrid_sessions(s) for s in STRATEGIES)),
                     label="session")
    p, dst_rank, reqs = case
    per_part = data.draw(st.integers(1, max(1, len(p.src.model.layers) - 1)), label="layers_per_part")
    got = run(kind, p, dst_rank, reqs, tag=f"layers-{kind}", layers_per_part=per_part)
    want = sliced(p, dst_rank, reqs)
    assert len(got.transfer) == len(want)
    for have, expect in zip(_pages(p, got.transfer), _pages(p, want), strict=True):
        assert all((a is None and b is None) or (a == b).all() for a, b in zip(have, expect, strict=True))
