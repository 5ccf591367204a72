"""Layer-wise streaming: `lower(..., layers=range)` of ranges that partition the model's
layers holds exactly the rows (copies and local steps) of the whole request, and
applied one after the other they deliver the request byte for byte (the identity
oracle), for attention and hybrid models under every transfer and conv strategy."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kvplan import AttentionSpec, EngineSpec, ModelSpec, SpecError, plan
from kvplan.testing.oracle import check_delivery, request_memories
from kvplan.testing.strategies import group_requests, planned_requests, requests, strategy_plans

NUM_BLOCKS = 40
COLUMNS = ("src_rank", "src_region", "src_offset", "dst_region", "dst_offset", "nbytes")


def _rows(transfers, part: str | None = None) -> list[tuple]:
    rows = []
    for t in transfers:
        t = t if part is None else getattr(t, part)
        if t is not None:
            rows += zip(*(getattr(t, c).tolist() for c in COLUMNS), strict=True)
    return sorted(rows)


@st.composite
def _cuts(draw, layers: int) -> list[range]:
    """Contiguous ranges that partition ``range(layers)`` (some may be empty)."""
    inner = draw(st.lists(st.integers(0, layers), max_size=4), label="cuts")
    edges = [0, *sorted(inner), layers]
    return [range(a, b) for a, b in zip(edges, edges[1:], strict=False)]


@settings(max_examples=settings().max_examples // 3)  # a third of the profile: each example lowers 2 - 6 times
@given(st.data())
def test_layer_ranges_partition_the_request(data):
    p, hybrid = data.draw(strategy_plans(), label="plan")
    src, dst = p.src, p.dst
    dst_rank = data.draw(st.integers(0, dst.world_size - 1), label="dst_rank")
    src_blocks, dst_blocks = data.draw((group_requests if hybrid else requests)(src, dst, num_blocks=NUM_BLOCKS),
                                       label="request")
    whole = p.lower(dst_rank, src_blocks, dst_blocks)
    parts = [p.lower(dst_rank, src_blocks, dst_blocks, layers=r)
             for r in data.draw(_cuts(len(src.model.layers)), label="ranges")]
    for part in (None, "pre_steps", "post_steps"):
        assert _rows(parts, part) == _rows([whole], part)
    # each part only touches its own layers' copies; all of them deliver the request
    check_delivery(parts, *request_memories(src, dst, dst_rank, src_blocks, dst_blocks, NUM_BLOCKS))


@settings(max_examples=settings().max_examples // 3)
@given(planned_requests(num_blocks=NUM_BLOCKS))
def test_one_layer_at_a_time_reads_only_that_layer(request):
    p, dst_rank, src_blocks, dst_blocks = request
    table = p.reads(dst_rank)
    for layer in range(len(p.src.model.layers)):
        t = p.lower(dst_rank, src_blocks, dst_blocks, layers=slice(layer, layer + 1))
        # a layer's rows land in (and read from) the regions that layer's table rows name
        mine = table.layer == layer
        assert set(t.dst_region.tolist()) <= set(table.dst_region[mine].tolist())
        assert set(t.src_region.tolist()) <= set(table.src_region[mine].tolist())


def test_bad_layer_ranges_are_refused_with_the_values():
    m = ModelSpec(name="m", layers=(AttentionSpec(num_kv_heads=2, head_dim=8),) * 4)
    p = plan(EngineSpec(model=m), EngineSpec(model=m))
    for layers, words in ((range(2, 5), "range(2, 5)"), (range(-1, 2), "range(-1, 2)"), (range(0, 4, 2), "step 1"),
                          (slice(0, 4, 2), "step 1"), (slice("a", 2), "integer bounds"), (slice(0, 2, 0), "step 1"), ([0, 1], "[0, 1]"), (2, "2"),
                          (range(3, 1), "range(3, 1)")):
        with pytest.raises(SpecError, match=words.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[")
                           .replace("]", r"\]")):
            p.lower(0, [1, 2], [3, 4], layers=layers)
    # slices clip like a list's; an empty range is an empty transfer
    assert len(p.lower(0, [1, 2], [3, 4], layers=slice(-1, 99))) == len(p.lower(0, [1, 2], [3, 4], layers=range(3, 4)))
    assert len(p.lower(0, [1, 2], [3, 4], layers=range(2, 2))) == 0
    assert np.array_equal(p.lower(0, [1, 2], [3, 4], layers=slice(None)).nbytes, p.lower(0, [1, 2], [3, 4]).nbytes)
