"""`ucx`: two-sided transfers through ucxx (tag send / receive), host or CUDA memory.

ucxx has no one-sided RMA from Python, so a source rank `serve`s: it packs the ranges
a destination needs from it into one message (NumPy on host, one kernel on a GPU;
offsets from `kvplan.lowering.staged`) and sends it; the destination's `execute`
receives one message per source rank and unpacks it. With a `Prepared`, both sides
lower the request from its block ids (only block ids travel between them). Each
backend owns a UCX worker with a progress thread, so sends and receives of several
ranks in one thread (tests) or in separate processes both complete. `metadata()`
carries the worker address.

Messages cannot be mixed up:

* A message's tag is a hash of the request name, both ranks and the rows it carries
  (their offsets, lengths and plan fingerprint), computed alike on both sides: two
  requests with the same name (the default ``""`` included) but different rows never
  share a tag. A tag already in flight on this backend (a send not yet received, a
  receive being waited for) is refused, and so is a tag whose earlier receive timed
  out (its message may still arrive): retry under a new request name.
* A message is a 32-byte header (magic, tag, payload bytes, digest count), the packed
  payload, then, in integrity mode, the source's digests of its rows. The destination
  probes for the tag (`tag_probe`, which reports the message's length), receives into
  a buffer of exactly that length and refuses, before unpacking a byte, a message
  whose length or header is not what the rows need.

`close()` waits up to `drain_s` for sends not yet received, closes endpoints (blocking,
so their resources go), receives and discards messages nobody asked for (UCX would
otherwise wait for them forever when its worker is destroyed), stops the progress
thread and drops the worker and context; backends never closed are closed at
interpreter exit.

>>> import numpy as np
>>> from kvplan import Transfer
>>> prefill, decode = UcxBackend(timeout_s=10), UcxBackend(timeout_s=10)
>>> prefill.register([np.arange(16, dtype=np.uint8)], rank=1); decode.register([out := np.zeros(4, np.uint8)], rank=0)
>>> decode.add_peer(1, prefill.metadata()); prefill.add_peer(0, decode.metadata())
>>> t = Transfer(dst_rank=0, src_rank=[1, 1], src_region=[0, 0], src_offset=[9, 2], dst_region=[0, 0],
...              dst_offset=[0, 2], nbytes=[2, 2])
>>> sent = prefill.serve(t, rank=1, request="r1", check=True)    # packs [9, 10, 2, 3], digests, sends
>>> decode.execute(t, request="r1", check=True); sent.wait()       # unpacks, checks the digests
>>> out.tolist()
[9, 10, 2, 3]
>>> decode.close(); prefill.close()
"""

from __future__ import annotations

import atexit
import hashlib
import time
import weakref

import numpy as np

from kvplan.lowering import source_ranks, staged
from kvplan.transport import TransportError, TransportTimeout

from . import _integrity, _local, _ucx_exchange
from ._base import BackendBase, _wanted
from ._memory import HOST, describe

MAGIC = 0x4B56504C414E3031  # "KVPLAN01"
HEADER = 32  # bytes: magic, tag, payload bytes, digest count (uint64 each)
_LIVE: weakref.WeakSet = weakref.WeakSet()  # backends not yet closed: closed at interpreter exit
_UNFINISHED: list = []  # messages of sends never received, kept to the end: a late peer may still read them


def _tag(request: str, src_rank: int, dst_rank: int, rows) -> int:
    """The tag of source rank `src_rank`'s message of `rows` for `request`.

    >>> from kvplan import Transfer
    >>> def rows(at):
    ...     return Transfer(dst_rank=0, src_rank=[1], src_region=[0], src_offset=[at], dst_region=[0],
    ...                     dst_offset=[0], nbytes=[8])
    >>> a, b = rows(0), rows(8)
    >>> _tag("", 1, 0, a) == _tag("", 1, 0, a), _tag("", 1, 0, a) == _tag("", 1, 0, b)
    (True, False)
    """
    h = hashlib.blake2b(f"{request}\0{src_rank}\0{dst_rank}\0{rows.plan_fingerprint}\0".encode(), digest_size=8)
    for column in (rows.src_region, rows.src_offset, rows.dst_region, rows.dst_offset, rows.nbytes):
        h.update(np.ascontiguousarray(column, np.int64).tobytes())
        h.update(b"|")
    return int.from_bytes(h.digest(), "little")


class _Pending:
    """UCX send requests plus the messages they send, waited for with a timeout;
    `digests`: the source's, with ``serve(..., check=True)``."""

    def __init__(self, requests, buffers, peer: str, request: str, timeout_s: float, backend, digests=None):
        self.requests, self.buffers, self.digests = requests, buffers, digests
        self.peer, self.request, self.timeout_s = peer, request, timeout_s
        self._backend = weakref.ref(backend)

    @property
    def completed(self) -> bool:
        return all(r.completed for r in self.requests)

    def wait(self, timeout_s: float | None = None) -> None:
        deadline = time.monotonic() + (self.timeout_s if timeout_s is None else timeout_s)
        while not self.completed:
            backend = self._backend()
            if backend is None or backend._closed:
                raise TransportError("ucx backend closed before its message was received", peer=self.peer,
                                     request=self.request)
            if time.monotonic() > deadline:
                raise TransportTimeout(f"UCX tag send not complete after {self.timeout_s} s", peer=self.peer,
                                       request=self.request)
            time.sleep(0)
        for r in self.requests:
            try:
                r.check_error()
            except Exception as error:  # ucxx raises UCX* exceptions
                raise TransportError(f"UCX send failed: {type(error).__name__}: {error}", peer=self.peer,
                                     request=self.request) from error


class UcxBackend(BackendBase):
    name = "ucx"
    sends = True

    def __init__(self, *, timeout_s: float = 30.0, drain_s: float = 1.0, listen_port: int | None = None):
        super().__init__(timeout_s=timeout_s)
        self.listen_port = _ucx_exchange.check_port(listen_port)  # publish()'s listener (None, 0: any free port)
        self._card_server = None
        from ucxx._lib import libucxx
        from ucxx._lib.arr import Array

        self._u, self._array = libucxx, Array
        self.drain_s = drain_s
        self._endpoints: dict[int, object] = {}
        self._addresses: dict[int, bytes] = {}
        self._sending: dict[int, _Pending] = {}   # tag -> its send, until received
        self._receiving: set[int] = set()         # tags being received
        self._timed_out: set[int] = set()         # tags whose receive timed out
        self._abandoned: list = []                # receives posted, not complete: buffers kept until close
        self._progress = False
        self._context = self._worker = None
        self.last_stats: dict = {}
        self._context = self._call(lambda: libucxx.UCXContext({}, feature_flags=(
            libucxx.Feature.TAG, libucxx.Feature.WAKEUP, libucxx.Feature.STREAM)),  # streams: publish's cards
                                   "UCXContext")
        self._worker = self._call(lambda: libucxx.UCXWorker(self._context), "UCXWorker")
        _LIVE.add(self)

    def _call(self, fn, what: str, *, peer: str | None = None, request: str | None = None, rows=None):
        try:
            return fn()
        except TransportError:
            raise
        except Exception as error:  # ucxx raises UCX* exceptions (UCXConnectionResetError, ...)
            raise TransportError(f"UCX {what} failed: {type(error).__name__}: {error}", peer=peer, request=request,
                                 rows=rows) from error

    def register(self, buffers, *, rank: int | None = None) -> None:
        super().register(buffers, rank=rank)
        device = self.memory.device
        if device >= 0:  # UCX's CUDA transports want a current context in the progress thread
            import cupy

            self._worker.set_progress_thread_start_callback(lambda: cupy.cuda.Device(device).use())
        self._worker.start_progress_thread(False, 1)
        self._progress = True

    def _metadata_fields(self) -> dict:
        return {"blob": self._worker.address.tobytes()}

    def _connect(self, rank: int, info: dict, blob: bytes) -> None:
        self._addresses[rank] = blob

    def _disconnect(self, rank: int) -> None:
        self._addresses.pop(rank, None)
        endpoint = self._endpoints.pop(rank, None)
        if endpoint is not None:
            self._close_endpoint(endpoint, rank)

    # -- across hosts (`_ucx_exchange`) ---------------------------------------------------
    def _listen(self, host: str) -> str:
        self._card_server = _ucx_exchange.CardServer(self._u, self._array, self._call, self._worker,
                                                     self.listen_port or 0, self.metadata())
        return _ucx_exchange.address(host, self._card_server.port)

    def _fetch(self, address: str, host: str, port: int, path: str, query: dict, deadline: float) -> bytes:
        return _ucx_exchange.fetch_card(self._u, self._array, self._call, self._worker, address, host, port,
                                        deadline)

    def _close_endpoint(self, endpoint, rank: int) -> None:
        # blocking: an endpoint closed asynchronously keeps its worker's fds and memory
        self._call(lambda: endpoint.close_blocking(10_000_000, 10), "endpoint close", peer=f"rank {rank}")

    def _endpoint(self, rank: int, request: str):
        with self._lock:
            if rank not in self._endpoints:
                if rank not in self._addresses:
                    raise TransportError(f"destination rank {rank} was never added with add_peer",
                                         peer=f"rank {rank}", request=request)
                address = self._call(lambda: self._u.UCXAddress.create_from_buffer(self._addresses[rank]),
                                     "address", peer=f"rank {rank}", request=request)
                self._endpoints[rank] = self._call(
                    lambda: self._u.UCXEndpoint.create_from_worker_address(self._worker, address, True),
                    "endpoint", peer=f"rank {rank}", request=request)
            return self._endpoints[rank]

    # -- the source: pack, header, digests, send --------------------------------------
    def _send(self, transfer, rank: int, request: str, digests: dict | None) -> _Pending:
        parts = staged(transfer)
        peer = f"rank {transfer.dst_rank}"
        if rank not in parts:
            return _Pending([], [], peer, request, self.timeout_s, self, digests)
        part, device = parts[rank], self._own().device
        tag = _tag(request, rank, transfer.dst_rank, transfer.for_source(rank))
        with self._lock:
            for done in [t for t, p in self._sending.items() if p.completed]:
                del self._sending[done]
            if tag in self._sending:
                raise TransportError("this request's message to the same rank, with the same rows, is still in "
                                     "flight (not received yet); give concurrent requests distinct names",
                                     peer=peer, request=request)
        start = time.perf_counter()
        mine = digests.get(rank) if digests else None
        count = 0 if mine is None else len(mine)
        message = _local.empty(device, HEADER + part.nbytes + 8 * count)
        tail = np.asarray(mine, np.uint64) if count else np.zeros(0, np.uint64)
        _write(message, 0, np.array([MAGIC, tag, part.nbytes, count], np.uint64), device)
        _write(message, HEADER + part.nbytes, tail, device)
        src, dst = self._bind_local(part.pack, dst_extra=describe([message[HEADER:HEADER + part.nbytes]]))
        _local.copy_ranges(device, src, dst, part.pack.nbytes)  # synchronises the stream: ready to send
        self.last_stats = {"pack_s": time.perf_counter() - start, "ranges": len(part.pack), "bytes": part.nbytes}
        endpoint = self._endpoint(transfer.dst_rank, request)
        send = self._call(lambda: endpoint.tag_send(self._array(message), self._u.UCXXTag(tag)), "tag_send",
                          peer=peer, request=request)
        pending = _Pending([send], [message], peer, request, self.timeout_s, self, digests)
        with self._lock:
            self._sending[tag] = pending
        return pending

    # -- the destination: probe, receive, check, unpack ------------------------------
    def _execute_transfer(self, transfer, request: str, check=False) -> None:
        own = self._own()
        ranks = source_ranks(transfer).tolist()
        self._require_peers(ranks, request)
        self._bind_remote(transfer)  # the gate: plan, rank, bounds, before anything is received
        given = _integrity.merge(check) if _wanted(check) and check is not True else None
        want = _integrity.expected(transfer, given) if given is not None else None
        parts = staged(transfer)
        rows_of = {r: np.flatnonzero(transfer.src_rank == r) for r in parts}
        tags = {r: _tag(request, r, transfer.dst_rank, transfer.for_source(r)) for r in parts}
        with self._lock:
            for rank, tag in tags.items():
                if tag in self._receiving or tag in self._timed_out:
                    why = "is being received by another call" if tag in self._receiving else \
                        "timed out earlier, so its late message may still arrive; retry under a new request name"
                    raise TransportError(f"a receive of this request's message (same rows) {why}",
                                         peer=f"rank {rank}", request=request, rows=rows_of[rank])
            self._receiving.update(tags.values())
        try:
            messages = self._receive(parts, tags, rows_of, request, check is True)
            sent = {}
            start = time.perf_counter()
            for rank, (count, buffer) in messages.items():
                part = parts[rank]
                src, dst = self._bind_local(part.unpack, src_extra=describe([buffer[HEADER:HEADER + part.nbytes]]))
                _local.copy_ranges(own.device, src, dst, part.unpack.nbytes)
                if count:
                    sent[rank] = _read(buffer, HEADER + part.nbytes, 8 * count, own.device).view(np.uint64)
            self.last_stats["unpack_s"] = time.perf_counter() - start
        finally:
            with self._lock:
                self._receiving.difference_update(tags.values())
        if check is True:
            want = _integrity.expected(transfer, sent)
        if want is not None:
            _integrity.verify(self._registration, transfer, want, request=request)
        self._post_steps(transfer)

    def _receive(self, parts, tags, rows_of, request: str, digests: bool) -> dict:
        """{rank: (digest count, message)} once every source's message arrived whole,
        with the length and header its rows need (nothing unpacked before that)."""
        device = self._own().device
        deadline = time.monotonic() + self.timeout_s
        waiting, posted = dict(tags), {}
        self.last_stats = {"wait_s": 0.0, "unpack_s": 0.0, "messages": len(tags)}
        start = time.perf_counter()
        try:
            while waiting:
                for rank, tag in list(waiting.items()):
                    where = {"peer": f"rank {rank}", "request": request, "rows": rows_of[rank]}
                    probe = self._call(lambda: self._worker.tag_probe(self._u.UCXXTag(tag), remove=True),
                                       "tag_probe", **where)
                    if probe.matched:
                        length = int(probe.length)
                        allowed = _lengths(parts[rank].nbytes, len(rows_of[rank]), digests)
                        buffer = _local.empty(device, length) if length in allowed else np.empty(HEADER, np.uint8)
                        recv = self._call(lambda: self._worker.tag_recv_with_handle(self._array(buffer), probe),
                                          "tag_recv", **where)
                        posted[rank] = (recv, buffer, length)
                        del waiting[rank]
                        if length not in allowed:  # received into scratch to consume it, then refused
                            self._settle(recv, buffer, time.monotonic() + self.drain_s)
                            del posted[rank]
                            why = "no digests: serve(..., check=True)" if digests else "other rows"
                            raise TransportError(f"UCX message of {length} bytes, expected "
                                                 f"{' or '.join(map(str, sorted(allowed)))} (a stale or foreign "
                                                 f"message, or {why}); nothing was unpacked", **where)
                    else:
                        registration = self._peer_registrations.get(rank)
                        if registration is not None and registration.closed:
                            raise TransportError("source closed before sending this request's message", **where)
                if waiting:
                    if time.monotonic() > deadline:
                        self._timed_out.update(waiting.values())
                        rank = next(iter(waiting))
                        raise TransportTimeout(f"no UCX message after {self.timeout_s} s", peer=f"rank {rank}",
                                               request=request, rows=rows_of[rank])
                    time.sleep(0)
            out = {}
            for rank in list(posted):
                recv, buffer, length = posted[rank]
                where = {"peer": f"rank {rank}", "request": request, "rows": rows_of[rank]}
                if not self._settle(recv, buffer, deadline):
                    self._timed_out.add(tags[rank])
                    raise TransportTimeout(f"UCX message not received whole after {self.timeout_s} s", **where)
                del posted[rank]
                self._call(recv.check_error, "receive", **where)
                magic, tag, payload, count = _read(buffer, 0, HEADER, device).view(np.uint64).tolist()
                if (magic, tag, payload) != (MAGIC, tags[rank], parts[rank].nbytes) or \
                        length != HEADER + payload + 8 * count:
                    raise TransportError(f"UCX message header (magic {magic:#x}, tag {tag:#x}, {payload} payload "
                                         f"bytes, {count} digests) does not describe this request's rows", **where)
                out[rank] = (count, buffer)
            self.last_stats["wait_s"] = time.perf_counter() - start
            return out
        finally:
            # receives still posted may be written later: keep their buffers until close()
            self._abandoned.extend((recv, buffer) for recv, buffer, _ in posted.values())

    def _settle(self, recv, buffer, deadline: float) -> bool:
        """Wait for a posted receive until `deadline`; False (buffer kept) if it did not end."""
        while not recv.completed:
            if time.monotonic() > deadline:
                self._abandoned.append((recv, buffer))
                return False
            time.sleep(0)
        return True

    # -- close --------------------------------------------------------------------------
    def close(self) -> None:
        if not self._closed:  # pending sends: give their receivers drain_s, before endpoints go
            deadline = time.monotonic() + self.drain_s
            while self._progress and any(not p.completed for p in list(self._sending.values())) and \
                    time.monotonic() < deadline:
                time.sleep(0.001)
        super().close()

    def __del__(self):  # collected without close(): a running progress thread must not outlive the buffers
        try:
            if not getattr(self, "_closed", True):
                self.close()
        except Exception:  # noqa: BLE001 - nothing can be reported from a collection
            pass

    def _release(self, idle: bool) -> None:
        _LIVE.discard(self)
        deadline = time.monotonic() + self.drain_s
        unfinished = [p.buffers for p in self._sending.values() if not p.completed]
        self._addresses.clear()
        if self._card_server is not None:  # its endpoints and listener go before the worker
            self.release_errors.extend(self._card_server.close(deadline))
            self._card_server = None
        if self._progress:
            self._attempt(self._drain, deadline)
            self._worker.stop_progress_thread()
            self._progress = False
        self._endpoints.clear()
        self._worker = self._context = None  # destroyed now, not at some later collection
        # only now may the buffers UCX was given go (a destroyed worker writes nothing)
        self._sending.clear()
        self._abandoned.clear()
        _UNFINISHED.extend(unfinished)

    def _drain(self, deadline: float) -> None:
        """Receive and drop messages nobody asked for: a worker destroyed with one whose
        sender stopped progressing would wait for it forever."""
        anything = self._u.UCXXTagMask(0)
        for _ in range(10_000):
            probe = self._worker.tag_probe(self._u.UCXXTag(0), anything, remove=True)
            if not probe.matched:
                return
            buffer = np.empty(max(int(probe.length), 1), np.uint8)
            self._settle(self._worker.tag_recv_with_handle(self._array(buffer), probe), buffer,
                         max(deadline, time.monotonic() + 0.05))


def _lengths(payload: int, rows: int, digests: bool) -> set[int]:
    """Message lengths a receive accepts: with or without digests (only with, when
    the receiver checks with the source's own digests)."""
    with_digests = HEADER + payload + 8 * rows
    return {with_digests} if digests else {HEADER + payload, with_digests}


def _write(message, at: int, values: np.ndarray, device: int) -> None:
    """Put host `values` into a message (host or device memory) at byte `at`."""
    raw = values.view(np.uint8)
    if not len(raw):
        return
    if device == HOST:
        message[at:at + len(raw)] = raw
        return
    import cupy

    with cupy.cuda.Device(device):
        message[at:at + len(raw)].set(raw)


def _read(message, at: int, nbytes: int, device: int) -> np.ndarray:
    """Bytes `[at, at + nbytes)` of a message, on the host."""
    if device == HOST:
        return np.array(message[at:at + nbytes])
    import cupy

    with cupy.cuda.Device(device):
        return cupy.asnumpy(message[at:at + nbytes])


@atexit.register
def _close_all() -> None:
    """Close backends left open (receivers first, so senders' messages can still
    land): a UCX worker destroyed at exit with a message whose sender stopped would
    wait for it forever."""
    backends = sorted(_LIVE, key=lambda b: bool(b._sending))
    for backend in backends:
        backend.close()


__all__ = ["UcxBackend"]
