"""Property suite: every plan of every generated configuration is correct.

Driven by `kvplan.testing.strategies.engine_pairs` (TP pairs from {1,2,4,8,16} both
ways, heads 1..64 incl. replication and MLA, per-layer heads, sliding windows, block
sizes equal / dividing / not dividing, every layout and K/V storage, PP 1-2).
Checked against oracles that do not use the planner: `verify()` (identity simulation
over one span) and `kvplan.testing.oracle` (a whole request end to end).
"""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from kvplan import plan, verify
from kvplan.planning import run_starts
from kvplan.testing.oracle import check_delivery, request_memories
from kvplan.testing.strategies import (conv_strategies, engine_pairs, group_requests, hybrid_engine_pairs,
                                       planned_requests, requests)

NUM_BLOCKS = 40


@settings(max_examples=settings().max_examples * 2)
@given(engine_pairs())
def test_every_plan_verifies(engines):
    verify(plan(*engines))


@given(st.data())
def test_lowered_requests_deliver_exactly_the_expected_bytes(data):
    src, dst = data.draw(engine_pairs(), label="engines")
    p = plan(src, dst)
    dst_rank = data.draw(st.integers(0, dst.world_size - 1), label="dst_rank")
    src_blocks, dst_blocks = data.draw(requests(src, dst, num_blocks=NUM_BLOCKS), label="request")
    transfer = p.lower(dst_rank, src_blocks, dst_blocks)

    delivered = check_delivery(transfer, *request_memories(src, dst, dst_rank, src_blocks, dst_blocks, NUM_BLOCKS))
    # merged: no two consecutive rows could have been one
    starts = run_starts([transfer.src_rank, transfer.src_region, transfer.dst_region],
                        transfer.src_offset, transfer.dst_offset, transfer.nbytes)
    assert len(starts) == len(transfer)
    # nothing read twice into the same place: delivered bytes equal the must-write count
    assert transfer.total_bytes == delivered


@given(st.data())
def test_verify_rejects_any_corrupted_row(data):
    """The oracle can fail: shifting, shortening or re-sourcing one row is always caught."""
    import attrs
    import pytest

    from kvplan import PlanError

    src, dst = data.draw(engine_pairs(), label="engines")
    p = plan(src, dst)
    dst_rank = data.draw(st.integers(0, dst.world_size - 1), label="dst_rank")
    table = p.reads(dst_rank)
    row = data.draw(st.integers(0, len(table) - 1), label="row")
    how = data.draw(st.sampled_from(["src_offset", "dst_offset", "nbytes", "drop", "src_rank", "src_block"]),
                    label="corruption")
    cols = {name: col.copy() for name, col in table.columns().items()}
    if how == "drop":
        cols = {name: np.delete(col, row) for name, col in cols.items()}
    elif how == "src_rank":
        cols["src_rank"][row] = (cols["src_rank"][row] + 1) % src.world_size if src.world_size > 1 else -1
    elif how == "src_block":
        cols["src_block"][row] += p.blocks_per_span(src.group_of(int(table.layer[row])))[0]
    else:
        cols[how][row] += data.draw(st.sampled_from([-1, 1]), label="delta") if how != "nbytes" else -1
    broken = attrs.evolve(table, **cols)
    bad_plan = attrs.evolve(p, tables=tuple(broken if t.dst_rank == dst_rank else t for t in p.tables))
    if how == "src_rank" and src.world_size > 1 and _same_bytes_elsewhere(p, table, row, int(cols["src_rank"][row])):
        return  # replicated data: reading the same element from another holder is still correct
    with pytest.raises(PlanError):
        verify(bad_plan)


def _same_bytes_elsewhere(p, table, row, other_rank) -> bool:
    """True when `other_rank` holds the row's elements at the same offsets (replication)."""
    from kvplan.check import layer_cells

    src = p.src
    layer = int(table.layer[row])
    if other_rank // src.tp != src.stage_of(layer):
        return False
    ns, _ = p.blocks_per_span(src.group_of(layer))
    a = layer_cells(src, layer, int(table.src_rank[row]) % src.tp, ns)
    b = layer_cells(src, layer, other_rank % src.tp, ns)
    return all(np.array_equal(x.code, y.code) and np.array_equal(x.offset, y.offset) for x, y in zip(a, b))


# -- hybrid models (issue 3) -------------------------------------------------------------

@settings(max_examples=settings().max_examples * 2)
@given(hybrid_engine_pairs(), conv_strategies())
def test_every_hybrid_plan_verifies(engines, strategy):
    verify(plan(*engines, conv_strategy=strategy))


@given(st.data())
def test_lowered_hybrid_requests_deliver_exactly_the_expected_bytes(data):
    src, dst = data.draw(hybrid_engine_pairs(), label="engines")
    strategy = data.draw(conv_strategies(), label="conv_strategy")
    p = plan(src, dst, conv_strategy=strategy)
    dst_rank = data.draw(st.integers(0, dst.world_size - 1), label="dst_rank")
    src_lists, dst_lists = data.draw(group_requests(src, dst, num_blocks=NUM_BLOCKS), label="request")
    transfer = p.lower(dst_rank, src_lists, dst_lists)
    delivered = check_delivery(transfer, *request_memories(src, dst, dst_rank, src_lists, dst_lists, NUM_BLOCKS))
    if strategy == "direct":  # staged reads whole conv states, permuted may stage: more bytes
        assert transfer.total_bytes == delivered
    else:
        assert transfer.total_bytes + (transfer.post_steps.total_bytes if transfer.post_steps else 0) >= delivered


# -- device copy templates -----------------------------------------------------------------

@given(st.data())
def test_copy_templates_deliver_exactly_the_expected_bytes(data):
    """What a GPU kernel evaluates (template + block ids) moves the same bytes as lower()."""
    from kvplan import Transfer
    from kvplan.lowering import copy_template, expand, request_blocks

    p, dst_rank, src_blocks, dst_blocks = data.draw(planned_requests(num_blocks=NUM_BLOCKS), label="request")
    src, dst = p.src, p.dst
    piece = data.draw(st.sampled_from([None, 1, 2, 16, 64]), label="max_piece_bytes")
    template = copy_template(p, dst_rank, max_piece_bytes=piece)
    rows = expand(template, request_blocks(p, dst_rank, src_blocks, dst_blocks))
    transfer = Transfer(dst_rank=dst_rank, **rows, src_regions=p.src_regions, dst_regions=p.dst_regions)
    delivered = check_delivery(transfer, *request_memories(src, dst, dst_rank, src_blocks, dst_blocks, NUM_BLOCKS))
    assert transfer.total_bytes == delivered == p.lower(dst_rank, src_blocks, dst_blocks).total_bytes
