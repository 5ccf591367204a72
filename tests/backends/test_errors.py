"""Misuse of the protocol raises `KvplanError`s naming the values; transport failures
raise `TransportError` (a RuntimeError) naming the peer and request; nothing leaks and
no byte moves before the checks pass."""

from __future__ import annotations

import attrs
import numpy as np
import pytest

from kvplan import (AttentionSpec, BlockError, BoundsError, EngineSpec, KvplanError, ModelSpec, RankError, SpecError,
                    Transfer, plan)
from kvplan.transport import BackendNotFound, TransportError, TransportTimeout, load_backend

from _fabric import same, sliced
from _need import need
from _pairing import allocate

KINDS = ["host", "nixl", "ucx"]
MODEL = ModelSpec(name="m", layers=(AttentionSpec(num_kv_heads=2, head_dim=4),))
PLAN = plan(EngineSpec(model=MODEL, num_blocks=4), EngineSpec(model=MODEL, num_blocks=4))


def _pair(kind, src_bytes=4096, dst_bytes=4096, **options):
    """(prefill rank 1, decode rank 0) of one region each, paired."""
    src, dst = load_backend(kind, **options), load_backend(kind, **options)
    src.register([np.arange(src_bytes, dtype=np.uint8)])
    dst.register([np.zeros(dst_bytes, np.uint8)])
    dst.add_peer(1, src.metadata())
    src.add_peer(0, dst.metadata())
    return src, dst


@pytest.fixture(params=KINDS)
def planned(request):
    """(decode backend, its buffers, prefill backend) of PLAN, paired; closed after."""
    kind = request.param
    need(kind)
    src, dst = load_backend(kind), load_backend(kind)
    out = allocate(PLAN.dst, 0, fill=False)
    src.register(allocate(PLAN.src, 0))
    dst.register(out)
    dst.add_peer(0, src.metadata())
    src.add_peer(0, dst.metadata())
    yield dst, out, src
    src.close()
    dst.close()


def test_unknown_backend_lists_the_installed_ones():
    with pytest.raises(BackendNotFound, match=r"'rdma-by-hand'.*cupy, host, nixl, ucx"):
        load_backend("rdma-by-hand")


def test_missing_library_names_the_extra(monkeypatch):
    import kvplan.transport as backend

    class Broken:
        def load(self):
            raise ImportError("No module named 'ucxx'")

    monkeypatch.setattr(backend, "known_backends", lambda: {"ucx": Broken()})
    with pytest.raises(BackendNotFound, match=r"pip install 'ucxx-cu13==0.52.\*'") as info:
        load_backend("ucx")
    assert isinstance(info.value, KvplanError)


@pytest.mark.parametrize("kind", KINDS)
def test_rows_outside_registered_memory_are_refused_before_any_copy(kind):
    need(kind)
    src, dst = load_backend(kind), load_backend(kind)
    out = np.zeros(4096, np.uint8)
    src.register([np.arange(4096, dtype=np.uint8)])
    dst.register([out])
    dst.add_peer(1, src.metadata())
    try:
        with pytest.raises(BoundsError, match=r"reads \[4000, 4200\) of source rank 1 region 0, which holds 4096"):
            dst.execute(Transfer(dst_rank=0, src_rank=[1, 1], src_region=[0, 0], src_offset=[0, 4000],
                                 dst_region=[0, 0], dst_offset=[0, 100], nbytes=[64, 200]), request="r-oob")
        assert not out.any()  # not even the row in bounds was copied
    finally:
        src.close()
        dst.close()


@pytest.mark.parametrize("kind", KINDS)
def test_unknown_peer_is_named(kind):
    need(kind)
    src, dst = _pair(kind)
    try:
        with pytest.raises(TransportError, match=r"rank\(s\) \[3\]") as info:
            dst.execute(Transfer(dst_rank=0, src_rank=[3], src_region=[0], src_offset=[0], dst_region=[0],
                                 dst_offset=[0], nbytes=[8]), request="r-peer")
        # a transport failure, not bad input: callers retry or fail over on these
        assert isinstance(info.value, RuntimeError) and not isinstance(info.value, KvplanError)
    finally:
        src.close()
        dst.close()


@pytest.mark.parametrize("kinds", [("nixl", "ucx"), ("ucx", "host")])
def test_metadata_of_another_backend_is_rejected(kinds):
    for kind in kinds:
        need(kind)
    a, b = load_backend(kinds[0]), load_backend(kinds[1])
    try:
        a.register([np.zeros(8, np.uint8)])
        with pytest.raises(TransportError, match=f"for backend '{kinds[0]}', this backend is '{kinds[1]}'"):
            b.add_peer(0, a.metadata())
    finally:
        a.close()
        b.close()


# -- the protocol's input checks -----------------------------------------------------------

def test_a_prepared_of_another_backend_instance_is_refused(planned):
    dst, out, src = planned
    other = src.prepare(PLAN, 0)  # same kind, same plan and rank, another instance
    with pytest.raises(SpecError, match=f"made by another '{dst.name}' backend"):
        dst.execute(other, [1], [2], request="r-other")
    assert not any(b.any() for b in out)


@pytest.mark.parametrize("kind", ["nixl", "ucx"])
def test_a_prepared_of_another_kind_is_refused(kind):
    need(kind)
    host, other = load_backend("host"), load_backend(kind)
    try:
        for backend in (host, other):
            backend.register(allocate(PLAN.dst, 0, fill=False))
        with pytest.raises(SpecError, match=f"made by a 'host' backend, not by this '{kind}' backend"):
            other.execute(host.prepare(PLAN, 0), [1], [2])
        with pytest.raises(SpecError, match=f"made by a '{kind}' backend, not by this 'host' backend"):
            host.serve(other.prepare(PLAN, 0), [1], [2], rank=0)
    finally:
        host.close()
        other.close()


def test_a_prepared_whose_rank_or_plan_was_swapped_is_refused(planned):
    dst, _, _ = planned
    wide = plan(EngineSpec(model=MODEL, num_blocks=4), EngineSpec(model=MODEL, tp=2, num_blocks=4))
    prepared = dst.prepare(PLAN, 0)
    with pytest.raises(SpecError, match="names decode rank 1 .* but was prepared for decode rank 0"):
        dst.execute(attrs.evolve(prepared, plan=wide, dst_rank=1), [1], [2])
    with pytest.raises(SpecError, match="was prepared for decode rank 0 of plan"):
        dst.execute(attrs.evolve(prepared, plan=wide), [1], [2])


def test_block_ids_with_a_transfer_are_refused(planned):
    dst, _, _ = planned
    t = PLAN.lower(0, [1], [2])
    with pytest.raises(BlockError, match=r"execute\(transfer, src_blocks=\[1\], dst_blocks=\[2\]\)"):
        dst.execute(t, [1], [2])
    with pytest.raises(BlockError, match=r"serve\(transfer, src_blocks=\[1\], dst_blocks=None\)"):
        dst.serve(t, [1], rank=0)


def test_a_prepared_needs_both_block_lists(planned):
    dst, _, src = planned
    with pytest.raises(BlockError, match=r"execute\(prepared, src_blocks=None, dst_blocks=None\)"):
        dst.execute(dst.prepare(PLAN, 0))
    with pytest.raises(BlockError, match=r"serve\(prepared, src_blocks=\[1\], dst_blocks=None\)"):
        src.serve(src.prepare(PLAN, 0), [1], rank=0)


def test_work_that_is_neither_transfer_nor_prepared_is_refused(planned):
    dst, _, _ = planned
    with pytest.raises(SpecError, match=r"takes a Transfer or a Prepared from prepare\(plan, dst_rank\), got "
                                        "EngineTransferPlan"):
        dst.execute(PLAN, [1], [2])
    with pytest.raises(SpecError, match="got tuple"):
        dst.serve((PLAN, 0), [1], [2], rank=0)
    with pytest.raises(SpecError, match="prepare.. takes a plan from kvplan.plan.., got Transfer"):
        dst.prepare(PLAN.lower(0, [1], [2]), 0)


def test_prepare_refuses_a_rank_outside_the_decode_engine(planned):
    dst, _, _ = planned
    with pytest.raises(RankError, match="dst_rank 1 is outside the decode engine's 1 ranks"):
        dst.prepare(PLAN, 1)


def test_bad_block_ids_move_no_byte(planned):
    dst, out, src = planned
    prepared, serving = dst.prepare(PLAN, 0), src.prepare(PLAN, 0)
    with pytest.raises(BlockError, match="decode group 0 block id 9 is out of range: the engine has 4 blocks"):
        dst.execute(prepared, [0, 1], [2, 9], request="r-bad")
    with pytest.raises(BlockError, match="decode group 0 block id 9 is out of range"):
        src.serve(serving, [0, 1], [2, 9], rank=0, request="r-bad")
    assert not any(b.any() for b in out)
    done = src.serve(serving, [0, 1], [2, 3], rank=0, request="r-good")  # the backend is still usable
    dst.execute(prepared, [0, 1], [2, 3], request="r-good")
    done.wait()
    assert any(b.any() for b in out)


@pytest.mark.parametrize("kind", KINDS)
def test_close_twice_then_use_raises(kind):
    need(kind)
    src, dst = _pair(kind)
    prepared = dst.prepare(PLAN, 0)
    src.close()
    dst.close()
    dst.close()
    t = Transfer(dst_rank=0, src_rank=[1], src_region=[0], src_offset=[0], dst_region=[0], dst_offset=[0], nbytes=[8])
    with pytest.raises(TransportError, match=f"{kind} backend is closed"):
        dst.execute(t, request="r-late")
    with pytest.raises(TransportError, match="closed"):
        dst.execute(prepared, [0], [1], request="r-late")


def test_nixl_prepared_lists_outside_registered_memory_are_refused():
    need("nixl")
    src, dst = load_backend("nixl"), load_backend("nixl")
    full = allocate(PLAN.dst, 0, fill=False)
    short = [full[0][: len(full[0]) // 2]]  # half the decode region: blocks 2 and 3 do not fit
    try:
        src.register(allocate(PLAN.src, 0))
        dst.register(short)
        dst.add_peer(0, src.metadata())
        prepared = dst.prepare(PLAN, 0)
        with pytest.raises(BoundsError, match=r"descriptor \d+ covers \[\d+, \d+\) of local region 0, which holds "
                                              f"{len(short[0])} bytes"):
            dst.execute(prepared, [0], [0], request="r-short")
        assert not short[0].any()
    finally:
        src.close()
        dst.close()


def test_several_prepared_stay_alive_on_one_backend(planned):
    dst, out, src = planned
    again = plan(PLAN.src, PLAN.dst)  # another plan object: its own Prepared and fast state
    first, second = dst.prepare(PLAN, 0), dst.prepare(again, 0)
    serving = {first: src.prepare(PLAN, 0), second: src.prepare(again, 0)}
    reqs = [(first, [0, 1], [2, 3]), (second, [3], [0]), (first, [2], [1])]
    for i, (prepared, src_blocks, dst_blocks) in enumerate(reqs):
        done = src.serve(serving[prepared], src_blocks, dst_blocks, rank=0, request=f"alive-{i}")
        dst.execute(prepared, src_blocks, dst_blocks, request=f"alive-{i}")
        done.wait()
    assert same(out, sliced(PLAN, 0, [r[1:] for r in reqs])[-1])


def test_ucx_receive_without_sender_times_out_naming_peer_and_request():
    need("ucx")
    src, dst = _pair("ucx", timeout_s=0.3)
    try:
        with pytest.raises(TransportTimeout, match=r"peer rank 1, request 'req-lost'"):
            dst.execute(Transfer(dst_rank=0, src_rank=[1], src_region=[0], src_offset=[0], dst_region=[0],
                                 dst_offset=[0], nbytes=[64]), request="req-lost")
    finally:
        src.close()
        dst.close()


def test_nixl_timeout_names_peer_and_request_and_releases_handles():
    need("nixl")
    size = 64 << 20
    src, dst = _pair("nixl", size, size, timeout_s=0.0)
    rows = 4096
    t = Transfer(dst_rank=0, src_rank=[1] * rows, src_region=[0] * rows, src_offset=np.arange(rows) * (size // rows),
                 dst_region=[0] * rows, dst_offset=np.arange(rows)[::-1] * (size // rows), nbytes=[size // rows] * rows)
    try:
        try:
            dst.execute(t, request="req-slow")
        except TransportTimeout as error:
            assert "request 'req-slow'" in str(error) and "rank 1" in str(error)
        assert not dst.agent._leaked_xfer_handles
        dst.timeout_s = 30.0
        dst.execute(t, request="req-again")  # the agent is still usable
    finally:
        src.close()
        dst.close()
