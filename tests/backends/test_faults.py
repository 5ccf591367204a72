"""Faults, whatever the input: every case ends in a clear kvplan error (a `KvplanError`
for bad input, a `TransportError` for a transport failure, naming peer, request and
rows) or in the correct bytes, and no byte outside registered memory changes.

Every registered buffer is guarded by canary bands (`_canary`); results are compared
with plain slicing of the lowered rows (`_fabric.sliced`). Cases: negative, overflowing
and unknown offsets / lengths / regions (refused at construction, and forged past it),
block ids out of range, Transfers of another decode rank or plan, use after close, a
source closed before or during a transfer (its memory freed), a peer process killed
mid-transfer, duplicate request names, short / long / foreign messages (ucx), and
concurrent `execute` from two threads.
"""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from kvplan import (AttentionSpec, BoundsError, EngineSpec, KvplanError, ModelSpec, PlanMismatchError, Transfer,
                    TransportError, plan)
from kvplan.transport import TransportTimeout, load_backend

from _canary import Canaries
from _fabric import copy_rows, sliced
from _need import need
from _pairing import SourceProcess, allocate
from _rig import OPTIONS, OTHER, TP2, Rig

KINDS = ["host", "nixl", "ucx"]


@pytest.fixture(params=KINDS)
def rig(request):
    r = Rig(request.param)
    yield r
    r.close()


def forge(t: Transfer, **columns) -> Transfer:
    """`t` with columns replaced past the constructor's checks (as a bug or an attacker
    could), so only the backend's gate stands between them and memory."""
    forged = Transfer(**{**t.columns(), "dst_rank": t.dst_rank, "plan_fingerprint": t.plan_fingerprint})
    for name, value in columns.items():
        array = np.array(value, np.int64)
        array.setflags(write=False)
        object.__setattr__(forged, name, array)
    return forged


# -- offsets, lengths, regions, block ids ----------------------------------------------------

def test_negative_values_are_refused_when_a_transfer_is_built():
    base = dict(dst_rank=0, src_rank=[0], src_region=[0], src_offset=[0], dst_region=[0], dst_offset=[0], nbytes=[8])
    for column in ("src_offset", "dst_offset", "nbytes", "src_region", "dst_region", "src_rank"):
        with pytest.raises(BoundsError, match=f"has {column} -"):
            Transfer(**{**base, column: [-1]})


FORGED = {
    "negative source offset": ({"src_offset": [-8, 0, 0, 0]}, r"reads \[-8"),
    "negative destination offset": ({"dst_offset": [-8, 512, 1024, 1536]}, r"writes \[-8"),
    "negative length": ({"nbytes": [-1, 512, 512, 512]}, r"row 0 writes \[\d+, \d+\)"),
    "negative source region": ({"src_region": [-1, 0, 1, 1]}, r"source rank 0 / region -1"),
    "unknown destination region": ({"dst_region": [0, 0, 7, 1]}, r"row 2 names destination region 7"),
    "unknown source region": ({"src_region": [0, 0, 5, 1]}, r"not registered"),
    "past the end": ({"dst_offset": [0, 512, 1024, 1600]}, r"row 3 writes \[1600, 2112\)"),
    "offset + length overflows int64": ({"dst_offset": [2**63 - 256, 512, 1024, 1536]},
                                        rf"row 0 writes \[{2**63 - 256}, {2**63 - 256 + 512}\)"),
    "source overflow": ({"src_offset": [2**62, 0, 0, 0], "nbytes": [2**62, 512, 512, 512]}, r"row 0"),
}


def test_forged_rows_are_refused_before_any_byte_moves(rig):
    """Rows past the constructor's checks (forged, every case of FORGED) meet the gate
    in every backend, on `execute` and `copy_local`; nothing moves."""
    t = TP2.lower(0, [0, 1], [2, 3])
    local = Transfer(dst_rank=0, src_rank=[0] * 4, src_region=[0, 0, 1, 1], src_offset=[0, 512, 0, 512],
                     dst_region=[1, 1, 0, 0], dst_offset=[0, 512, 1024, 1536], nbytes=[512] * 4)
    assert len(t) == 4
    before = rig.snapshot()
    for case, (columns, message) in FORGED.items():
        with pytest.raises(BoundsError, match=message):
            rig.dst.execute(forge(t, **columns), request=f"forged {case}")
        with pytest.raises(BoundsError):
            rig.dst.copy_local(forge(local, **columns))
        rig.assert_untouched(before)
    rig.request([0, 1], [2, 3], "after-forged")  # still usable
    assert all(np.array_equal(a, b) for a, b in zip(rig.out, rig.expect(([0, 1], [2, 3]))))


def test_forged_source_rows_are_refused_by_a_serving_source():
    r = Rig("ucx")
    try:
        t = forge(TP2.lower(0, [0], [1]), src_offset=[-8, 1024])
        with pytest.raises(BoundsError, match=r"-8"):
            r.src.serve(t, rank=0, request="forged")
        big = forge(TP2.lower(0, [0], [1]), src_offset=[2**63 - 8, 0])
        with pytest.raises(BoundsError):
            r.src.serve(big, rank=0, request="forged", check=True)
    finally:
        r.close()


def test_block_ids_out_of_range_are_refused(rig):
    before = rig.snapshot()
    for ids in ([4], [-1], [2**40], [2**63 - 1], [0, 4]):
        dst_ids = list(range(len(ids)))
        with pytest.raises(KvplanError):
            rig.dst.execute(rig.prepared, ids, dst_ids, request="bad-ids")
        with pytest.raises(KvplanError):
            rig.src.serve(rig.serving, dst_ids, ids, rank=0, request="bad-ids")
        rig.assert_untouched(before)
    rig.request([3], [1], "good-ids")
    assert all(np.array_equal(a, b) for a, b in zip(rig.out, rig.expect(([3], [1]))))


# -- the Transfer's rank and plan -----------------------------------------------------------

def test_a_transfer_for_another_decode_rank_is_refused(rig):
    before = rig.snapshot()
    with pytest.raises(PlanMismatchError, match="lowered for decode rank 1 handed to decode rank 0"):
        rig.dst.execute(TP2.lower(1, [0, 1], [2, 3]), request="rank-1")
    other = rig.dst.prepare(TP2, 1)  # a Prepared for decode rank 1 on rank 0's memory
    with pytest.raises(PlanMismatchError, match="decode rank 1 handed to the backend of rank 0"):
        rig.dst.execute(other, [0, 1], [2, 3], request="rank-1")
    with pytest.raises(PlanMismatchError, match="prefill rank 1 handed to the backend of rank 0"):
        rig.src.serve(TP2.lower(0, [0], [1]), rank=1, request="rank-1")
    with pytest.raises(PlanMismatchError, match=r"add_peer\(3, metadata\): the metadata is rank 0's"):
        rig.dst.add_peer(3, rig.src.metadata())
    rig.assert_untouched(before)


@pytest.mark.parametrize("kind", KINDS)
def test_a_backend_without_a_rank_learns_it_from_its_first_request(kind):
    r = Rig(kind, rank=False)
    try:
        r.request([0], [1], "learn")  # decode rank 0 (a Prepared), prefill rank 0 (serve)
        assert (r.dst.rank, r.src.rank) == (0, 0)
        before = r.snapshot()
        with pytest.raises(PlanMismatchError, match="decode rank 1 handed to decode rank 0"):
            r.dst.execute(TP2.lower(1, [0], [1]), request="learnt")
        r.assert_untouched(before)
    finally:
        r.close()


def test_a_transfer_of_another_plan_is_refused(rig):
    t = OTHER.lower(0, [0, 1], [2, 3])
    assert t.plan_fingerprint != TP2.fingerprint
    before = rig.snapshot()
    with pytest.raises(PlanMismatchError, match=f"lowered from plan {OTHER.fingerprint} handed to a backend prepared "
                                                f"for plan {TP2.fingerprint}"):
        rig.dst.execute(t, request="other-plan")
    with pytest.raises(PlanMismatchError):
        rig.src.serve(t, rank=0, request="other-plan")
    rig.assert_untouched(before)


# -- use after close, sources closed ---------------------------------------------------------

@pytest.mark.parametrize("kind", KINDS)
def test_every_call_after_close_raises_and_close_is_idempotent(kind):
    r = Rig(kind)
    t = TP2.lower(0, [0], [1])
    metadata = r.src.metadata()
    r.close()
    r.dst.close()
    for call in (lambda: r.dst.execute(t, request="late"), lambda: r.dst.execute(r.prepared, [0], [1]),
                 lambda: r.dst.copy_local(TP2.lower(0, [0], [1])), lambda: r.dst.prepare(TP2, 0),
                 lambda: r.dst.metadata(), lambda: r.dst.add_peer(0, metadata),
                 lambda: r.dst.register([np.zeros(8, np.uint8)]), lambda: r.src.serve(t, rank=0),
                 lambda: r.dst.publish(None, host="127.0.0.1"), lambda: r.dst.fetch_peer(f"{kind}://h:1/a?card=1:1")):
        with pytest.raises(TransportError, match="closed"):
            call()
    assert r.canaries.damaged() == []


@pytest.mark.parametrize("kind", KINDS)
def test_a_closed_source_is_refused_not_read(kind):
    """The source's memory is owned by its backend alone and freed when it closes (a
    1 MiB buffer: unmapped at once): the destination must not touch it."""
    need(kind)
    canaries = Canaries()
    out = canaries.buffer(1 << 20)
    src, dst = load_backend(kind, **OPTIONS[kind]), load_backend(kind, **OPTIONS[kind])
    src.register([np.full(1 << 20, 7, np.uint8)], rank=1)
    dst.register([out], rank=0)
    dst.add_peer(1, src.metadata())
    src.add_peer(0, dst.metadata())
    t = Transfer(dst_rank=0, src_rank=[1] * 4, src_region=[0] * 4, src_offset=[0, 1 << 18, 2 << 18, 3 << 18],
                 dst_region=[0] * 4, dst_offset=[3 << 18, 2 << 18, 1 << 18, 0], nbytes=[1 << 18] * 4)
    metadata = src.metadata()
    later = load_backend(kind, **OPTIONS[kind])
    try:
        src.close()
        with pytest.raises(TransportError, match="closed") as info:
            dst.execute(t, request="after-close")
        assert info.value.peer == "rank 1" and info.value.request == "after-close"
        assert not out.any() and canaries.damaged() == []
        later.register([np.zeros(8, np.uint8)], rank=0)
        with pytest.raises(TransportError, match="closed its registration before add_peer"):
            later.add_peer(1, metadata)  # metadata of a closed source, paired afterwards
    finally:
        dst.close()
        later.close()


# rows per request and when the source closes: inside the first request (host: ~1 s of
# memmoves; nixl: ~0.3 s of descriptors; ucx: packing and unpacking ~0.1 s)
CLOSE_DURING = {"host": (1 << 20, 0.2), "nixl": (1 << 16, 0.1), "ucx": (1 << 16, 0.03)}


@pytest.mark.parametrize("kind", KINDS)
def test_a_source_closed_during_transfers_gives_an_error_or_the_right_bytes(kind):
    """A thread closes the source (its 32 MiB freed on close) while the destination
    executes request after request (many small rows, so the close lands inside one):
    each ends with the source's bytes or a TransportError; nothing crashes, nothing
    outside registered memory changes."""
    need(kind)
    size, rows, after = 32 << 20, *CLOSE_DURING[kind]
    canaries = Canaries()
    out = canaries.buffer(size)
    data = np.random.default_rng(3).integers(0, 256, size, dtype=np.uint8)
    src, dst = load_backend(kind, **OPTIONS[kind]), load_backend(kind, **{**OPTIONS[kind], **(
        {"timeout_s": 3} if kind != "host" else {})})
    src.register([data.copy()], rank=1)
    dst.register([out], rank=0)
    dst.add_peer(1, src.metadata())
    src.add_peer(0, dst.metadata())
    n = size // rows
    t = Transfer(dst_rank=0, src_rank=[1] * rows, src_region=[0] * rows, src_offset=np.arange(rows) * n,
                 dst_region=[0] * rows, dst_offset=np.arange(rows)[::-1] * n, nbytes=[n] * rows)
    want = data.reshape(rows, n)[::-1].reshape(-1)
    outcomes = []
    try:
        closer = threading.Timer(after, src.close)
        closer.start()
        for i in range(40):
            out[:] = 0
            try:
                done = src.serve(t, rank=1, request=f"mid-{i}")
                dst.execute(t, request=f"mid-{i}")
                done.wait()
                assert np.array_equal(out, want)
                outcomes.append("bytes")
            except TransportError as error:
                assert error.peer in ("rank 1", "rank 0") or "closed" in str(error)
                outcomes.append("error")
                break
        closer.join()
    finally:
        dst.close()
        src.close()
    assert outcomes[-1] == "error" and canaries.damaged() == []


@pytest.mark.parametrize("kind", ["nixl", "ucx"])
def test_a_peer_killed_mid_transfer_is_a_clear_error_and_the_backend_stays_usable(kind):
    need(kind)
    model = ModelSpec(name="big", layers=(AttentionSpec(num_kv_heads=8, head_dim=128),) * 4)
    p = plan(EngineSpec(model=model, block_tokens=16, num_blocks=64), EngineSpec(model=model, block_tokens=16,
                                                                                  num_blocks=64))
    blocks = list(range(64))
    canaries = Canaries()
    out = canaries.buffers(allocate(p.dst, 0, fill=False))
    dst = load_backend(kind, **{**OPTIONS[kind], "timeout_s": 1 if kind == "ucx" else 5})
    dst.register(out, rank=0)
    want = allocate(p.dst, 0, fill=False)  # each request's result: the child's memory is identity-filled
    source = allocate(p.src, 0)
    copy_rows(p.lower(0, blocks, blocks[::-1]), lambda r: source, want)
    errors = []
    with SourceProcess(kind, p.src, ranks=[0], options=OPTIONS[kind], timeout_s=30) as sources:
        dst.add_peer(0, sources.metadata[0])
        sources.connect(0, dst.metadata())
        sources.prepare(p, 0)
        prepared = dst.prepare(p, 0)
        killer = threading.Timer(0.3, sources.kill)
        killer.start()
        for i in range(100):
            try:
                if kind == "ucx":
                    sources.serve(blocks, blocks[::-1], request=f"kill-{i}")
                dst.execute(prepared, blocks, blocks[::-1], request=f"kill-{i}")
                assert all(np.array_equal(a, b) for a, b in zip(out, want))  # a request that ended is whole
                for b in out:
                    b[:] = 0
                if kind == "ucx":
                    sources.wait()
            except TransportError as error:  # the backend's errors are TransportErrors
                errors.append(error)
                break
            except RuntimeError as error:  # the harness: "source process is gone"
                assert "source process is gone" in str(error)
                errors.append(error)
                break
        killer.join()
        if kind == "ucx" and not any(isinstance(e, TransportError) for e in errors):
            with pytest.raises(TransportTimeout, match=r"peer rank 0, request 'after-death', rows 0-"):
                dst.execute(prepared, blocks, blocks[::-1], request="after-death")
        if kind == "nixl":
            assert errors and isinstance(errors[0], TransportError), errors
            assert "rank 0" in str(errors[0]) and "kill-" in str(errors[0])
    # usable: the same rank, restarted in this process, replaces the dead peer
    again = load_backend(kind, **OPTIONS[kind])
    src = allocate(p.src, 0)
    again.register(src, rank=0)
    try:
        dst.add_peer(0, again.metadata())
        again.add_peer(0, dst.metadata())
        want = [b.copy() for b in out]
        copy_rows(p.lower(0, [5, 6], [7, 8]), lambda r: src, want)
        dst.timeout_s = 10
        done = again.serve(again.prepare(p, 0), [5, 6], [7, 8], rank=0, request="restarted")
        dst.execute(prepared, [5, 6], [7, 8], request="restarted")
        done.wait()
        assert all(np.array_equal(a, b) for a, b in zip(out, want))
    finally:
        again.close()
        dst.close()  # never raises: what a dead peer refused is listed in release_errors
    assert canaries.damaged() == []


# -- request names and messages --------------------------------------------------------------

@pytest.mark.parametrize("kind", KINDS)
def test_requests_with_the_same_name_never_swap_data(kind):
    """Two requests named alike (the default ""), different rows, executed in the other
    order: each gets its own bytes."""
    r = Rig(kind)
    try:
        a, b = TP2.lower(0, [0], [1]), TP2.lower(0, [2, 3], [3, 0])
        done = [r.src.serve(a, rank=0), r.src.serve(b, rank=0)]
        r.dst.execute(b)
        r.dst.execute(a)
        for d in done:
            d.wait()
        want = sliced(TP2, 0, [([2, 3], [3, 0]), ([0], [1])])[-1]
        assert all(np.array_equal(x, y) for x, y in zip(r.out, want))
    finally:
        r.close()


def test_ucx_a_name_in_flight_is_refused_until_its_message_is_received():
    r = Rig("ucx")
    try:
        t = TP2.lower(0, [0, 1], [2, 3])
        # a receive waiting for its message: a second receive of the same message is refused
        waiting = threading.Thread(target=r.dst.execute, args=(t,), kwargs={"request": "twice"})
        waiting.start()
        time.sleep(0.2)
        with pytest.raises(TransportError, match="being received by another call"):
            r.dst.execute(t, request="twice")
        r.src.serve(t, rank=0, request="twice").wait()
        waiting.join()
        assert all(np.array_equal(x, y) for x, y in zip(r.out, r.expect(([0, 1], [2, 3]))))
        # a message nobody received yet (16 MiB: it waits for its receiver): the same again is refused
        size = 16 << 20
        src, dst = load_backend("ucx", timeout_s=5, drain_s=0.1), load_backend("ucx", timeout_s=5, drain_s=0.1)
        src.register([np.ones(size, np.uint8)], rank=1)
        dst.register([got := np.zeros(size, np.uint8)], rank=0)
        dst.add_peer(1, src.metadata())
        src.add_peer(0, dst.metadata())
        whole = Transfer(dst_rank=0, src_rank=[1], src_region=[0], src_offset=[0], dst_region=[0], dst_offset=[0],
                         nbytes=[size])
        try:
            first = src.serve(whole, rank=1, request="big")
            with pytest.raises(TransportError, match="still in flight"):
                src.serve(whole, rank=1, request="big")
            dst.execute(whole, request="big")
            first.wait()
            assert got.all()
        finally:
            dst.close()
            src.close()
    finally:
        r.close()


def _raw_send(rig, t, request: str, payload: bytes) -> None:
    """Send `payload` on the tag `t`'s message for `request` would use (a stale or
    foreign sender)."""
    from kvplan_backends import ucx

    tag = ucx._tag(request, 0, 0, t.for_source(0))
    message = np.frombuffer(payload, np.uint8).copy()
    send = rig.src._endpoint(0, request).tag_send(rig.src._array(message), rig.src._u.UCXXTag(tag))
    deadline = time.monotonic() + 5
    while not send.completed and time.monotonic() < deadline:
        time.sleep(0.001)
    rig._keep = message


def test_ucx_messages_of_the_wrong_length_or_header_are_refused_before_unpacking():
    from kvplan_backends import ucx

    r = Rig("ucx")
    try:
        t = TP2.lower(0, [0, 1], [2, 3])  # 2 KiB of payload from rank 0
        before = r.snapshot()
        good = ucx.HEADER + int(t.nbytes.sum())
        tag = ucx._tag("short", 0, 0, t.for_source(0))
        cases = {
            "short": (b"\x01" * 1024, r"message of 1024 bytes, expected 2080 or 2112"),
            "long": (b"\x01" * (good + 8 * 4 + 1), r"message of 2113 bytes"),
            "garbled": (b"\x01" * good, r"header .* does not describe this request's rows"),
            "stale": (np.array([ucx.MAGIC, tag ^ 1, t.nbytes.sum(), 0], np.uint64).tobytes() + b"\x02" * (good - 32),
                      r"does not describe"),
        }
        for name, (payload, message) in cases.items():
            request = "short" if name == "stale" else name
            _raw_send(r, t, request, payload)
            with pytest.raises(TransportError, match=message) as info:
                r.dst.execute(t, request=request)
            assert info.value.peer == "rank 0" and info.value.rows == (0, 1, 2, 3)
            r.assert_untouched(before)
        # integrity asked, but the source sent no digests: refused by length, nothing unpacked
        done = r.src.serve(t, rank=0, request="no-digests")
        with pytest.raises(TransportError, match=r"no digests: serve\(\.\.\., check=True\)"):
            r.dst.execute(t, request="no-digests", check=True)
        done.wait()
        r.assert_untouched(before)
        r.request([0, 1], [2, 3], "fine", prepared=False)
        assert all(np.array_equal(x, y) for x, y in zip(r.out, r.expect(([0, 1], [2, 3]))))
    finally:
        r.close()


def test_ucx_a_receive_that_timed_out_is_not_retried_under_the_same_name():
    r = Rig("ucx")
    r.dst.timeout_s = 0.2
    try:
        t = TP2.lower(0, [0], [1])
        with pytest.raises(TransportTimeout, match=r"peer rank 0, request 'late', rows 0-1"):
            r.dst.execute(t, request="late")
        r.src.serve(t, rank=0, request="late")  # the late message arrives
        before = r.snapshot()
        with pytest.raises(TransportError, match="timed out earlier"):
            r.dst.execute(t, request="late")
        r.assert_untouched(before)
        r.dst.timeout_s = 10
        r.request([0], [1], "late-retry", prepared=False)
        assert all(np.array_equal(x, y) for x, y in zip(r.out, r.expect(([0], [1]))))
    finally:
        r.close()


# -- threads ----------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", KINDS)
def test_concurrent_execute_from_two_threads(kind):
    r = Rig(kind)
    try:
        reqs = [([0, 1], [0, 1]), ([2, 3], [2, 3])]
        errors = []

        def one(i, src_blocks, dst_blocks):
            try:
                r.dst.execute(r.prepared, src_blocks, dst_blocks, request=f"thread-{i}")
            except BaseException as error:  # reported below
                errors.append(error)

        for round_ in range(5):
            done = [r.src.serve(r.serving, s, d, rank=0, request=f"thread-{i}") for i, (s, d) in enumerate(reqs)]
            threads = [threading.Thread(target=one, args=(i, s, d)) for i, (s, d) in enumerate(reqs)]
            for th in threads:
                th.start()
            for th in threads:
                th.join()
            for d in done:
                d.wait()
            assert errors == []
            assert all(np.array_equal(x, y) for x, y in zip(r.out, r.expect(*reqs)))
            reqs = [(s[::-1], d) for s, d in reqs]
            for b in r.out:
                b[:] = 0
    finally:
        r.close()
