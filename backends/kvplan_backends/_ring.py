"""A bounce request through a staging ring (`kvplan.lowering.ring`), chunk by chunk.

Prepared with ``prepare(plan, dst_rank, ring=StagingRing(...))``, a request's staging
is the ring's slots, whatever its length. Each chunk j (slot ``j % slots``):

* the prefill rank waits until the decode rank has freed the slot (its word "free
  j - slots"), packs the chunk into it (its step template, one kernel launch), then
  either writes the chunk's copies into the decode rank's slot with a notification
  "ready j" (push) or only says "ready j" (pull);
* the decode rank waits for "ready j" from every prefill rank it reads, reads the
  chunk's copies (pull), unpacks them (one kernel launch) and says "free j" to each.

So a prefill rank packs chunk j + 1 while chunk j moves and chunk j - 1 unpacks. The
words are the transport's own notifications (`_signal` / `_await_signals`). Serving
runs on a thread of its own: `serve` returns at once and its Completion's `wait`
returns when the rank's last chunk has left (or raises what stopped it), so one
process may serve several prefill ranks, or serve and execute, without deadlock.
Every chunk's pack and unpack pass the step route's bounds. Its copies pass the gate
on the side that moves them when first made for a chunk shape (slot position, spans,
window limits); the gated copies and their descriptor lists are then kept for the
chunks of that shape while the peers stay the ones they were checked against
(`_kept`), since a ring's full chunks reuse a few slots request after request.
"""

from __future__ import annotations

import threading

from kvplan.errors import SpecError
from kvplan.lowering import StagingRing, ring_chunks
from kvplan.transport import TransportTimeout

from . import _steps


def ring_tag(request: str, word: str, chunk: int) -> bytes:
    """A ring notification; the request's length goes first so no tag is a prefix of
    another request's (NIXL matches notifications by prefix).

    >>> ring_tag("r1", "ready", 3), ring_tag("r1", "ready", 3) in ring_tag("r1", "ready", 30)
    (b'kvplan-ring/2:r1/ready/3;', False)
    """
    return f"kvplan-ring/{len(request)}:{request}/{word}/{chunk};".encode()


def check_ring(ring, plan, backend) -> None:
    """Refuse a ring this backend or plan cannot run, at `prepare`."""
    if ring is None:
        return
    if not isinstance(ring, StagingRing):
        raise SpecError(f"prepare(ring=...) takes a kvplan.lowering.StagingRing or None, got {ring!r}"[:300])
    if not backend.rings:
        raise SpecError(f"the {backend.name} backend stages whole requests; a staging ring needs a transport "
                        "whose ranks notify each other (nixl)")
    if getattr(plan, "transfer_strategy", None) != "bounce":
        raise SpecError(f"a staging ring moves bounce plans; this plan's transfer_strategy is "
                        f"{getattr(plan, 'transfer_strategy', None)!r}")
    if not _steps.available(plan):  # the one rule for running local steps from templates
        raise SpecError("a staging ring runs pack and unpack from step templates, which need both engines' "
                        "num_blocks")


class RingServe:
    """A prefill rank's part of one ringed request, running on its own thread (a
    `kvplan.transport.Completion`)."""

    digests = None

    def __init__(self, backend, prepared, blocks, rank: int, request: str):
        self._error: BaseException | None = None
        self._timeout_s = backend.timeout_s
        self._thread = threading.Thread(target=self._run, args=(backend, prepared, blocks, rank, request),
                                        name=f"kvplan-ring-serve-{rank}", daemon=True)
        self._thread.start()

    def _run(self, backend, prepared, blocks, rank: int, request: str) -> None:
        try:
            with backend._busy():  # close() waits for a serve in flight
                serve_chunks(backend, prepared, blocks, rank, request)
        except BaseException as error:  # raised to whoever waits
            self._error = error

    def completed(self) -> bool:
        return not self._thread.is_alive()

    def wait(self, timeout_s: float | None = None) -> None:
        self._thread.join(self._timeout_s if timeout_s is None else timeout_s)
        if self._thread.is_alive():
            raise TransportTimeout(f"ring serve not finished after {timeout_s or self._timeout_s} s")
        if self._error is not None:
            raise self._error


def serve_chunks(backend, prepared, blocks, rank: int, request: str) -> None:
    """Prefill rank `rank`'s loop (module docstring)."""
    ring, dst = prepared.state.ring, prepared.dst_rank
    route = backend._step_route(prepared, "pre", rank)
    in_flight = {}
    try:
        for j, chunk in enumerate(ring_chunks(prepared.plan, blocks, ring)):
            if j >= ring.slots:  # the slot's last chunk must be unpacked before it is packed again
                backend._await_signals([dst], ring_tag(request, "free", j - ring.slots), request,
                                       in_flight=list(in_flight.values()))
                if j - ring.slots in in_flight:
                    backend._finish_copies(in_flight.pop(j - ring.slots), request)
            position = ring.slot_position(j)
            route.run(chunk, first_position=position)
            ready = ring_tag(request, "ready", j)
            if backend.pushes:
                in_flight[j] = start_writes(backend, prepared, chunk, position, rank, request, ready)
            else:
                backend._signal(dst, ready, request)
        for j in sorted(in_flight):
            backend._finish_copies(in_flight.pop(j), request)
    finally:
        for handle in in_flight.values():
            backend._abandon_copies(handle)


def execute_chunks(backend, prepared, blocks, request: str) -> None:
    """The decode rank's loop (module docstring)."""
    ring, plan = prepared.state.ring, prepared.plan
    route = backend._step_route(prepared, "post", None)
    ranks = list(plan.reads(prepared.dst_rank).source_ranks)
    chunks = ring_chunks(plan, blocks, ring)
    for j, chunk in enumerate(chunks):
        position = ring.slot_position(j)
        backend._await_signals(ranks, ring_tag(request, "ready", j), request)
        if not backend.pushes:
            read_chunk(backend, prepared, chunk, position, ranks, request)
        route.run(chunk, first_position=position)
        if j + ring.slots < len(chunks):
            for rank in ranks:
                backend._signal(rank, ring_tag(request, "free", j), request)


def read_chunk(backend, prepared, chunk, position: int, ranks, request: str) -> None:
    """The decode rank reads one chunk's copies (or a whole request's: position 0)
    from prefill ranks `ranks`, gated and listed once per chunk shape (`_kept`)."""
    with backend._reading(ranks, request):
        lists = _kept(backend, backend._ring_reads(prepared), ("reads", *_shape(chunk, position)), ranks,
                      lambda: backend._read_lists(backend._ring_copies(prepared).chunk(chunk, first_position=position),
                                                  request))
        backend._read_listed(lists, request)


def start_writes(backend, prepared, chunk, position: int, rank: int, request: str, tag: bytes):
    """Prefill rank `rank` starts writing one chunk's copies (or a whole request's) into
    the decode rank, which is told `tag` once they have landed; gated and listed once
    per chunk shape (`_kept`). Returns the `_start_listed` handle."""
    lists = _kept(backend, backend._ring_reads(prepared), ("writes", rank, *_shape(chunk, position)),
                  [prepared.dst_rank], lambda: backend._write_lists(
                      backend._ring_copies(prepared).chunk(chunk, first_position=position, src_rank=rank), rank,
                      request))
    return backend._start_listed(lists, request, tag)


KEPT = 64  # chunk shapes whose copies a prepared ring keeps (slots x the few lengths a last chunk has)


def _shape(chunk, position: int) -> tuple:
    """What a chunk's copies depend on: its slot position, spans per group, window limits."""
    return position, chunk.spans, chunk.first_kept.tobytes()


def _kept(backend, kept: dict, key: tuple, peers, make):
    """A chunk's copies, gated and listed once per chunk shape (`key`: which side's
    copies, slot position, spans per group, window limits) while `peers` stay the ones
    they were listed for: a ring's full chunks reuse a few slots, so their copies,
    bounds and descriptor lists repeat request after request."""
    now = tuple(backend.peers.get(rank) for rank in peers)
    with backend._lock:  # requests of one prepared plan may be served from several threads
        entry = kept.get(key)
    if entry is None or any(a is not b for a, b in zip(entry[0], now, strict=True)):
        entry = (now, make())
        with backend._lock:
            if len(kept) >= KEPT:
                kept.pop(next(iter(kept)))
            kept[key] = entry
    return entry[1]
