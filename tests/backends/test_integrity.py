"""Integrity mode (opt-in, off by default): every copied range is digested on the source
and on the destination (`kvplan.lowering.range_digests`), and a byte flipped in flight
(after the source digested it, before the copy: `_inject`) raises
`TransferIntegrityError` naming its row, on every backend, through both flows:

* the source's digests shipped to the destination: ``serve(..., check=True).digests``
  -> ``execute(..., check=digests)`` (any transport; here through a `Prepared`);
* ``execute(..., check=True)``: the destination takes the digests itself from sources in
  this process (host, nixl), or from the message (ucx, with ``serve(..., check=True)``).

The CUDA digest kernel is emulated here from the pieces its launch is given; the GPU run
(`test_gpu.py`) compares the kernel itself with the reference.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kvplan import SpecError, TransferIntegrityError
from kvplan.lowering import mix, range_digests
from kvplan.transport import load_backend
from kvplan_backends import _integrity
from kvplan_backends._gpucopy import digest_pieces

from _canary import Canaries
from _fabric import sliced
from _inject import flip_after_digest
from _need import need
from _pairing import SourceProcess, allocate
from _rig import OPTIONS, TP2, Rig

KINDS = ["host", "nixl", "ucx"]
SRC_BLOCKS, DST_BLOCKS = [0, 1, 3], [2, 3, 0]


def _same(rig) -> bool:
    """Decode memory holds the current source bytes of the request (after any flip)."""
    want = [np.zeros_like(b) for b in rig.out]
    t = TP2.lower(0, SRC_BLOCKS, DST_BLOCKS)
    source = rig.src._registration.buffers
    for i in range(len(t)):
        s, d, n = int(t.src_offset[i]), int(t.dst_offset[i]), int(t.nbytes[i])
        want[t.dst_region[i]][d:d + n] = source[t.src_region[i]][s:s + n]
    return all(np.array_equal(a, b) for a, b in zip(rig.out, want))


@pytest.mark.parametrize("kind", KINDS)
def test_shipped_digests_catch_a_byte_flipped_in_flight(kind, monkeypatch):
    r = Rig(kind)
    try:
        rows = len(TP2.lower(0, SRC_BLOCKS, DST_BLOCKS))
        injected = flip_after_digest(monkeypatch, row=rows - 2)
        done = r.src.serve(r.serving, SRC_BLOCKS, DST_BLOCKS, rank=0, request="flip", check=True)
        assert set(done.digests) == {0} and len(done.digests[0]) == rows and injected.flipped
        with pytest.raises(TransferIntegrityError, match=r"1 of \d+ copied rows differ") as info:
            r.dst.execute(r.prepared, SRC_BLOCKS, DST_BLOCKS, request="flip", check=done.digests)
        done.wait()
        assert info.value.rows == (rows - 2,) and info.value.peer == "rank 0" and info.value.request == "flip"
        assert r.dst.route == ("prepared lists" if kind == "nixl" else "lowered")
        # no fault: the same request passes, with the (now flipped) source's bytes
        done = r.src.serve(r.serving, SRC_BLOCKS, DST_BLOCKS, rank=0, request="clean", check=True)
        r.dst.execute(r.prepared, SRC_BLOCKS, DST_BLOCKS, request="clean", check=[done])
        done.wait()
        assert _same(r)
    finally:
        r.close()


@pytest.mark.parametrize("kind", KINDS)
def test_check_true_catches_a_byte_flipped_in_flight(kind, monkeypatch):
    r = Rig(kind)
    try:
        t = TP2.lower(0, SRC_BLOCKS, DST_BLOCKS)
        flip_after_digest(monkeypatch, row=0)
        two_sided = kind == "ucx"  # the digests travel in the message
        done = r.src.serve(t, rank=0, request="flip-true", check=two_sided)
        with pytest.raises(TransferIntegrityError) as info:
            r.dst.execute(t, request="flip-true", check=True)
        done.wait()
        assert info.value.rows == (0,) and "request 'flip-true'" in str(info.value) and "rows 0]" in str(info.value)
        done = r.src.serve(t, rank=0, request="clean-true", check=two_sided)
        r.dst.execute(t, request="clean-true", check=True)
        done.wait()
        assert _same(r) and r.canaries.damaged() == []
    finally:
        r.close()


@pytest.mark.parametrize("kind", KINDS)
def test_integrity_mode_is_off_by_default(kind, monkeypatch):
    calls = []
    monkeypatch.setattr(_integrity, "digests", lambda *a, **k: calls.append(a) or np.zeros(0, np.uint64))
    r = Rig(kind)
    try:
        done = r.src.serve(r.serving, SRC_BLOCKS, DST_BLOCKS, rank=0, request="plain")
        r.dst.execute(r.prepared, SRC_BLOCKS, DST_BLOCKS, request="plain")
        done.wait()
        assert done.digests is None and calls == [] and _same(r)
    finally:
        r.close()


@pytest.mark.parametrize("kind", KINDS)
def test_digests_that_do_not_fit_the_request_are_refused_before_the_copy(kind):
    r = Rig(kind)
    try:
        before = r.snapshot()
        t = TP2.lower(0, SRC_BLOCKS, DST_BLOCKS)
        for check, message in (({}, "its digests number none"), ({0: [1, 2]}, "its digests number 2"),
                               ("yes", "check= takes True, or the digests")):
            with pytest.raises(SpecError, match=message):
                r.dst.execute(t, request="bad-check", check=check)
        r.assert_untouched(before)
        if kind != "ucx":  # a source in another process: no check=True without its digests
            r.dst._peer_registrations[0] = None
            with pytest.raises(SpecError, match=r"source rank 0 is in another process"):
                r.dst.execute(t, request="far", check=True)
            r.assert_untouched(before)
    finally:
        r.close()


@pytest.mark.parametrize("kind", ["nixl", "ucx"])
def test_digests_shipped_from_another_process(kind):
    """The prefill rank in a spawned process digests its rows and ships them (pickled
    over the pipe, as metadata would travel; ucx also sends them in the message): clean
    requests pass; a digest that disagrees with the bytes names its row."""
    need(kind)
    canaries = Canaries()
    out = canaries.buffers(allocate(TP2.dst, 0, fill=False))
    dst = load_backend(kind, **OPTIONS[kind])
    dst.register(out, rank=0)
    try:
        with SourceProcess(kind, TP2.src, ranks=[0], options=OPTIONS[kind], timeout_s=30) as sources:
            dst.add_peer(0, sources.metadata[0])
            sources.connect(0, dst.metadata())
            sources.prepare(TP2, 0)
            prepared = dst.prepare(TP2, 0)
            digests = sources.serve(SRC_BLOCKS, DST_BLOCKS, request="far", check=True)
            rows = len(TP2.lower(0, SRC_BLOCKS, DST_BLOCKS))
            assert set(digests) == {0} and len(digests[0]) == rows
            dst.execute(prepared, SRC_BLOCKS, DST_BLOCKS, request="far", check=True if kind == "ucx" else digests)
            sources.wait()
            assert all(np.array_equal(a, b) for a, b in zip(out, sliced(TP2, 0, [(SRC_BLOCKS, DST_BLOCKS)])[-1]))
            digests = sources.serve(SRC_BLOCKS, DST_BLOCKS, request="far-bad", check=True)
            wrong = {0: digests[0].copy()}
            wrong[0][1] ^= np.uint64(1)
            with pytest.raises(TransferIntegrityError) as info:
                dst.execute(prepared, SRC_BLOCKS, DST_BLOCKS, request="far-bad", check=wrong)
            sources.wait()
            assert info.value.rows == (1,) and canaries.damaged() == []
    finally:
        dst.close()


def _emulate_kernel(buffer: np.ndarray, offsets, nbytes, piece: int) -> np.ndarray:
    """digest_ranges' CUDA kernel on the CPU: per piece, the sum over its bytes of
    mix((position << 8) | byte), added into its row (wrapping)."""
    addr, start, size, row = digest_pieces(np.asarray(offsets, np.uint64), nbytes, piece)
    out = np.zeros(len(nbytes), np.uint64)
    with np.errstate(over="ignore"):
        for a, s, n, r in zip(addr.tolist(), start.tolist(), size.tolist(), row.tolist()):
            position = (np.arange(n, dtype=np.uint64) + np.uint64(s)) << np.uint64(8)
            out[r] += np.add.reduce(mix(position | buffer[a:a + n].astype(np.uint64)), dtype=np.uint64)
    return out


@settings(max_examples=60, deadline=None)
@given(st.data())
def test_digest_kernel_pieces_add_up_to_the_reference(data):
    """The pieces `digest_ranges` launches (`digest_pieces`), summed as the kernel sums
    them, give `range_digests` of every range, whatever the cut."""
    size = 4096
    buffer = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1), label="seed")).integers(
        0, 256, size, dtype=np.uint8)
    n = data.draw(st.integers(1, 12), label="ranges")
    offsets = data.draw(st.lists(st.integers(0, size - 1), min_size=n, max_size=n), label="offsets")
    nbytes = [data.draw(st.integers(0, size - o), label="nbytes") for o in offsets]
    piece = data.draw(st.sampled_from([1, 3, 64, 1000, 1 << 16]), label="piece")
    want = range_digests([buffer], np.zeros(n, np.int64), offsets, nbytes)
    assert np.array_equal(_emulate_kernel(buffer, offsets, nbytes, piece), want)


def test_check_takes_one_completion_and_refuses_anything_else():
    """`check=` a single Completion works like its digests; junk is a SpecError."""
    r = Rig("host")
    try:
        done = r.src.serve(r.serving, SRC_BLOCKS, DST_BLOCKS, rank=0, request="one", check=True)
        r.dst.execute(r.prepared, SRC_BLOCKS, DST_BLOCKS, request="one", check=done)
        assert _same(r)
        for junk in (5, 1.5, object()):
            with pytest.raises(SpecError, match="check= takes"):
                r.dst.execute(r.prepared, SRC_BLOCKS, DST_BLOCKS, request="junk", check=junk)
    finally:
        r.close()
