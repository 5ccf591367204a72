"""The bounce transfer strategy (pack, a few large copies, unpack) is correct on every
generated configuration, dense and hybrid, checked by the identity simulation over a
span and by the request oracle end to end; corrupting a pack or unpack row is caught."""

from __future__ import annotations

import attrs
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from kvplan import AttentionSpec, EngineSpec, ModelSpec, PlanError, SpecError, plan, verify
from kvplan.testing.oracle import check_delivery, request_memories
from kvplan.testing.strategies import engine_pairs, group_requests, hybrid_engine_pairs, requests

NUM_BLOCKS = 40


def _pairs():
    return st.one_of(engine_pairs(), hybrid_engine_pairs())


@given(_pairs())
def test_every_bounce_plan_verifies(engines):
    p = plan(*engines, transfer_strategy="bounce")
    verify(p)
    direct = plan(*engines)
    for rank in range(engines[1].world_size):
        table, pack, unpack = p.reads(rank), p.pre_tables[rank], p.post_tables[rank]
        # one copy per (layer, source rank) and span, every byte packed once and unpacked once
        assert len(table) == len({(int(a), int(b)) for a, b in zip(table.layer, table.src_rank, strict=True)})
        assert pack.total_bytes == unpack.total_bytes == direct.reads(rank).total_bytes == table.total_bytes


@given(st.data())
def test_lowered_bounce_requests_deliver_exactly_the_expected_bytes(data):
    src, dst = data.draw(_pairs(), label="engines")
    p = plan(src, dst, transfer_strategy="bounce")
    dst_rank = data.draw(st.integers(0, dst.world_size - 1), label="dst_rank")
    hybrid = len(src.layer_groups) > 1 or not all(s.holds_tokens for s in src.model.layers)
    draw_request = group_requests if hybrid else requests
    src_blocks, dst_blocks = data.draw(draw_request(src, dst, num_blocks=NUM_BLOCKS), label="request")
    transfer = p.lower(dst_rank, src_blocks, dst_blocks)
    delivered = check_delivery(transfer, *request_memories(src, dst, dst_rank, src_blocks, dst_blocks, NUM_BLOCKS))
    # every delivered byte is unpacked once; copies may carry the unused tail of a span
    assert transfer.post_steps.total_bytes == transfer.pre_steps.total_bytes == delivered
    assert transfer.total_bytes >= delivered
    # one copy per (layer, source rank): spans follow each other in staging
    direct = plan(src, dst).lower(dst_rank, src_blocks, dst_blocks)
    assert len(transfer) <= max(len(direct), 1) * max(1, len(transfer.source_ranks))


@given(st.data())
def test_verify_rejects_a_corrupted_pack_or_unpack_row(data):
    src, dst = data.draw(_pairs(), label="engines")
    p = plan(src, dst, transfer_strategy="bounce")
    dst_rank = data.draw(st.integers(0, dst.world_size - 1), label="dst_rank")
    which = data.draw(st.sampled_from(["pre_tables", "post_tables"]), label="step")
    table = getattr(p, which)[dst_rank]
    if not len(table):
        return
    row = data.draw(st.integers(0, len(table) - 1), label="row")
    how = data.draw(st.sampled_from(["src_offset", "dst_offset", "nbytes", "drop"]), label="corruption")
    cols = {name: col.copy() for name, col in table.columns().items()}
    if how == "drop":
        cols = {name: np.delete(col, row) for name, col in cols.items()}
    else:
        cols[how][row] += data.draw(st.sampled_from([-1, 1]), label="delta") if how != "nbytes" else -1
    broken = attrs.evolve(table, **cols)
    steps = tuple(broken if rank == dst_rank else t for rank, t in enumerate(getattr(p, which)))
    with pytest.raises(PlanError):
        verify(attrs.evolve(p, **{which: steps}))


def test_bounce_copies_one_row_per_layer_and_source_for_a_whole_request():
    # Llama-like: 8 KV heads of 128, P TP 2 -> D TP 8; HND pages, 16-token blocks
    m = ModelSpec(name="m", layers=(AttentionSpec(num_kv_heads=8, head_dim=128),) * 4)
    src, dst = EngineSpec(model=m, tp=2, num_blocks=600), EngineSpec(model=m, tp=8, num_blocks=600)
    rng = np.random.default_rng(0)
    ids = rng.permutation(600)[:256].tolist(), rng.permutation(600)[:256].tolist()
    bounce = plan(src, dst, transfer_strategy="bounce").lower(5, *ids)
    direct = plan(src, dst).lower(5, *ids)
    # D rank 5 holds head 5 = P rank 1's head 1: per layer and block one run of K|V for
    # one head, 16 tokens x 128 x 2 B x 2 = 8 KiB, at scattered blocks
    assert len(direct) == 4 * 256 and set(direct.nbytes.tolist()) == {8192}
    assert len(bounce) == 4 and bounce.nbytes.tolist() == [256 * 8192] * 4
    assert bounce.source_ranks == (1,)
    assert bounce.pre_steps.total_bytes == bounce.post_steps.total_bytes == direct.total_bytes
    assert len(bounce.pre_steps) <= len(direct) and len(bounce.post_steps) <= len(direct)


def test_bounce_takes_the_direct_conv_strategy_only():
    m = ModelSpec(name="m", layers=(AttentionSpec(num_kv_heads=8, head_dim=128),))
    with pytest.raises(SpecError, match="conv_strategy 'direct'"):
        plan(EngineSpec(model=m), EngineSpec(model=m), conv_strategy="staged", transfer_strategy="bounce")
    with pytest.raises(SpecError, match="transfer_strategy must be one of auto, direct, bounce"):
        plan(EngineSpec(model=m), EngineSpec(model=m), transfer_strategy="bulk")


@given(st.data())
def test_step_templates_with_positional_ids_equal_the_lowered_steps(data):
    """What a GPU evaluates per request for pack and unpack (step templates + block ids,
    the staging side indexed by span position) delivers the request like `lower()`."""
    from kvplan import Transfer
    from kvplan.lowering import copy_template, expand_step, request_blocks

    src, dst = data.draw(_pairs(), label="engines")
    p = plan(src, dst, transfer_strategy="bounce")
    dst_rank = data.draw(st.integers(0, dst.world_size - 1), label="dst_rank")
    hybrid = len(src.layer_groups) > 1 or not all(s.holds_tokens for s in src.model.layers)
    src_blocks, dst_blocks = data.draw((group_requests if hybrid else requests)(src, dst, num_blocks=NUM_BLOCKS),
                                       label="request")
    piece = data.draw(st.sampled_from([None, 2, 64]), label="max_piece_bytes")
    lowered = p.lower(dst_rank, src_blocks, dst_blocks)
    blocks = request_blocks(p, dst_rank, src_blocks, dst_blocks)

    def step(name, regions, ranks):
        parts = [expand_step(copy_template(p, dst_rank, step=name, src_rank=r, max_piece_bytes=piece), blocks, name)
                 for r in ranks]
        cols = {k: np.concatenate([part[k] for part in parts]) for k in parts[0]}
        if name == "post":
            cols["src_rank"] = np.full(len(cols["nbytes"]), dst_rank)
        return Transfer(dst_rank=dst_rank, **cols, src_regions=regions, dst_regions=regions)

    pre = step("pre", p.src_regions, range(src.world_size))
    post = step("post", p.dst_regions, [None])
    assert pre.total_bytes == lowered.pre_steps.total_bytes and post.total_bytes == lowered.post_steps.total_bytes
    rebuilt = attrs.evolve(lowered, pre_steps=pre, post_steps=post)
    check_delivery(rebuilt, *request_memories(src, dst, dst_rank, src_blocks, dst_blocks, NUM_BLOCKS))
