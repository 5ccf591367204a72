"""`nixl`: one-sided READs through NIXL agents (UCX backend), DRAM or VRAM.

Each rank is one agent. `register` registers every region once; `metadata()` /
`add_peer(rank, bytes)` pair agents through any channel (a JSON header + NIXL's own
agent metadata). The decode rank reads; prefill ranks only run their local steps.

* `execute(transfer)`: any `Transfer` (coalesced rows) as one-shot descriptor lists.
* ``push=True`` (both sides): `serve` on each prefill rank writes its rows (NIXL WRITE:
  a lowered request's rows, or a bounce plan's staging copies) and ends with a
  notification; `execute` on the decode rank checks the rows against its memory, waits
  for every source's notification and runs its post steps, posting nothing itself.
* `execute(prepared, src_blocks, dst_blocks)`: the first request of a `Prepared`
  prepares descriptor lists once per peer (`kvplan.lowering.prepared_lists`, every row
  x every block, bounds-checked) and keeps their handles until `close()`; each request
  then posts only int32 index arrays (`make_prepped_xfer`), and NIXL merges consecutive
  whole-page indices. Plans with local steps, engines without `num_blocks` and
  ``prefix="tail"`` are lowered per request instead.

Completion is polled until `timeout_s`; failures (a peer that died reads as NIXL's
REMOTE_DISCONNECT) raise `TransportError` / `TransportTimeout` naming the peer, the
request and the rows, after releasing every handle; the agent stays usable, and
``add_peer`` of the same rank replaces a dead peer. Calls into one agent are serialised
(threads may call `execute` concurrently). A peer in this process is held by its live
registration, so its memory is not deregistered while this agent reads it.

>>> import logging, numpy as np
>>> from kvplan import AttentionSpec, EngineSpec, ModelSpec, plan
>>> _ = nixl_api(); logging.getLogger("nixl").setLevel(logging.WARNING)   # NIXL logs INFO to stdout
>>> m = ModelSpec(name="m", layers=(AttentionSpec(num_kv_heads=1, head_dim=2, dtype="float16"),))
>>> p = plan(EngineSpec(model=m, block_tokens=1, num_blocks=2), EngineSpec(model=m, block_tokens=1, num_blocks=2))
>>> prefill, decode = NixlBackend(), NixlBackend()
>>> prefill.register([np.arange(16, dtype=np.uint8)], rank=0)      # 2 blocks of 8 bytes
>>> decode.register([out := np.zeros(16, np.uint8)], rank=0)
>>> decode.add_peer(0, prefill.metadata())
>>> prepared = decode.prepare(p, 0)
>>> decode.execute(prepared, [1], [0], request="r1"); decode.execute(prepared, [0], [1], request="r2")
>>> out.tolist(), decode.route
([8, 9, 10, 11, 12, 13, 14, 15, 0, 1, 2, 3, 4, 5, 6, 7], 'prepared lists')
>>> decode.close(); prefill.close()
"""

from __future__ import annotations

import os
import time
import uuid

import numpy as np

from kvplan.errors import SpecError
from kvplan.lowering import check_descriptors, prepared_lists
from kvplan.transport import TransportError, TransportTimeout

from . import _nixl_exchange, _ring
from ._base import BackendBase
from ._nixl_import import nixl_api
from ._prepared import block_relative


def _mem_type(memory) -> str:
    return "VRAM" if memory.on_gpu else "DRAM"


def _rows(addr, nbytes, devices) -> np.ndarray:
    """N x 3 (address, length, device) as NIXL takes them; host memory is device 0."""
    return np.stack([addr.astype(np.int64), np.asarray(nbytes, np.int64), np.maximum(devices, 0)], axis=1)


def _push_tag(request: str, rank: int) -> bytes:
    """The notification a push of `request` by prefill rank `rank` ends with; the
    request's length goes first, so no tag is a prefix of another request's (NIXL
    matches notifications by prefix or substring).

    >>> _push_tag("r1", 0), _push_tag("r1", 0) in _push_tag("r10", 0)
    (b'kvplan-push/0/2:r1;', False)
    """
    return f"kvplan-push/{rank}/{len(request)}:{request};".encode()


class NixlBackend(BackendBase):
    name = "nixl"

    def __init__(self, agent_name: str | None = None, *, timeout_s: float = 30.0, telemetry: bool = False,
                 num_threads: int = 0, push: bool = False, listen_port: int | None = None):
        super().__init__(timeout_s=timeout_s)
        # listen_port: NIXL's metadata listener (publish / fetch_peer across hosts), which
        # starts with the agent or not at all
        self.listen_port = _nixl_exchange.check_port(listen_port)
        if not isinstance(push, bool):
            raise SpecError(f"nixl backend: push must be True or False, got {push!r}")
        # push: the prefill side writes every request (NIXL WRITE, one notification per
        # request and source rank), so the decode side posts nothing and waits for the words
        self.pushes = push
        self.rings = True  # notifications carry a staging ring's words (_ring)
        api = nixl_api()
        self.agent_name = agent_name or f"kvplan-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        config = api.nixl_agent_config(backends=["UCX"], capture_telemetry=telemetry, num_threads=num_threads,
                                       enable_listen_thread=self.listen_port is not None,
                                       **({} if self.listen_port is None else {"listen_port": self.listen_port}))
        self.agent = api.nixl_agent(self.agent_name, config)
        self.telemetry = telemetry
        self.remote_names: dict[int, str] = {}
        self.last_stats: dict[int, dict] = {}
        self._nixl_memory = None
        self._card_memory = None  # (buffer, NIXL registration) of a published card

    # -- memory and peers -------------------------------------------------------------
    def register(self, buffers, *, rank: int | None = None) -> None:
        super().register(buffers, rank=rank)
        m = self.memory
        present = np.array([s > 0 for s in m.sizes])
        table = np.array([m.bases, m.sizes, np.maximum(m.devices, 0)], np.int64).T[present]
        try:
            self._nixl_memory = self._call(lambda: self.agent.register_memory(table, _mem_type(m)),
                                           "register_memory")
        except BaseException:
            self.close()
            raise

    def _metadata_fields(self) -> dict:
        return {"blob": self.agent.get_agent_metadata(), "agent": self.agent_name}

    def _connect(self, rank: int, info: dict, blob: bytes) -> None:
        if not blob:  # a fetched card: NIXL's listener loaded the agent already
            name = str(info.get("agent"))
            if not self._call(lambda: self.agent.check_remote_metadata(name), "check_remote_metadata",
                              peer=f"rank {rank}"):
                raise TransportError(f"add_peer({rank}, card): agent {name!r} is not loaded here; pass the card "
                                     f"fetch_peer(address) returned to this backend", peer=f"rank {rank}")
        else:
            name = self._call(lambda: self.agent.add_remote_agent(blob), "add_remote_agent", peer=f"rank {rank}")
        self.remote_names[rank] = name.decode() if isinstance(name, bytes) else name

    # -- across hosts (`_nixl_exchange`) --------------------------------------------------
    def _listen(self, host: str) -> str:
        self._need_listener("publish")
        # no agent blob in the card: a fetching agent gets it from NIXL's listener
        self._card_memory = _nixl_exchange.serve_card(self._call, self.agent, self._card({"agent": self.agent_name}))
        return _nixl_exchange.address(host, self.listen_port, self.agent_name, self._card_memory[0])

    def _fetch(self, address: str, host: str, port: int, path: str, query: dict, deadline: float) -> bytes:
        self._need_listener("fetch_peer")

        def call(fn, what: str, **where):  # one agent call at a time, never the lock for a whole fetch
            with self._lock:
                return self._call(fn, what, **where)

        return _nixl_exchange.fetch_card(call, self.agent, address, host, port, path, query, deadline)

    def _need_listener(self, call: str) -> None:
        if self.listen_port is None:
            raise TransportError(f"nixl backend: {call} needs NIXL's metadata listener, which starts with the "
                                 f"agent: load_backend('nixl', listen_port=PORT)")

    def _disconnect(self, rank: int) -> None:
        name = self.remote_names.pop(rank, None)
        if name is not None:
            self._call(lambda: self.agent.remove_remote_agent(name), "remove_remote_agent", peer=f"rank {rank}")

    def _peer(self, rank: int) -> str:
        if rank == -1:
            return f"self (agent {self.agent_name!r})"
        return f"rank {rank} (agent {self.remote_names.get(rank, '?')!r})"

    def _call(self, fn, what: str, *, peer: str | int | None = None, request: str | None = None, rows=None):
        """`fn()`, NIXL's errors raised as `TransportError`; `peer`: a description, or a
        rank described only if something fails (polling loops call this per poll)."""
        try:
            out = fn()
        except TransportError:
            raise
        except Exception as error:  # NIXL raises its own typed exceptions (nixlInvalidParamError, ...)
            raise TransportError(f"NIXL {what} failed: {type(error).__name__}: {error}", peer=self._where(peer),
                                 request=request, rows=rows) from error
        if out is None and what in ("get_xfer_descs", "register_memory"):
            raise TransportError(f"NIXL {what} rejected its input (see NIXL's log)", peer=self._where(peer),
                                 request=request, rows=rows)
        return out

    def _where(self, peer: str | int | None) -> str | None:
        return self._peer(peer) if isinstance(peer, int) else peer

    # -- reads of a Transfer: one-shot descriptor lists --------------------------------
    def _read(self, transfer, request: str) -> None:
        if self.pushes:  # the prefill ranks write these rows (`_send`): wait for their word
            self._bind_remote(transfer)  # the gate still checks the rows against both sides
            self._await_push(list(transfer.source_ranks), request)
            return
        self._read_listed(self._read_lists(transfer, request), request)

    def _send(self, transfer, rank: int, request: str, digests: dict | None):
        """A prefill rank's part of a lowered transfer: pushed (NIXL WRITE) with `push`,
        else nothing (the decode rank reads)."""
        if self.pushes:
            self._push(transfer, rank, request)
        return super()._send(transfer, rank, request, digests)

    def _read_lists(self, transfer, request: str) -> dict:
        """A transfer's reads as NIXL descriptor lists, per source rank (descriptors of
        this rank, of the source, the transfer's rows), after the gate; a staging ring
        keeps them for the chunks that reuse a slot (`_ring`)."""
        if not len(transfer):
            return {}
        src, dst = self._bind_remote(transfer)
        lists = {}
        for rank in transfer.source_ranks:
            rows = transfer.src_rank == rank
            lists[rank] = (*self._descs(rank, (dst[rows], transfer.dst_region[rows]),
                                        (src[rows], transfer.src_region[rows]), transfer.nbytes[rows], request),
                           np.flatnonzero(rows))
        return lists

    def _read_listed(self, lists: dict, request: str) -> None:
        handles = {}
        with self._lock:
            try:
                for rank, (local, remote, rows) in lists.items():
                    # no notification: nobody on the source side would consume it
                    handles[rank] = self._initialize_lists("READ", rank, local, remote, len(rows), request, b"")
                self._run(handles, request, {rank: lists[rank][2] for rank in handles})
            finally:
                self._release_handles(handles)

    # -- push: the prefill side writes a bounce plan's copies --------------------------
    def _push(self, transfer, rank: int, request: str) -> None:
        self._finish_copies(self._start_copies(transfer.for_source(rank), rank, request, _push_tag(request, rank)),
                            request)

    def _push_request(self, prepared, blocks, rank: int, request: str) -> None:
        # a whole request is one staging chunk at position 0: its writes kept per shape
        self._finish_copies(_ring.start_writes(self, prepared, blocks, 0, rank, request, _push_tag(request, rank)),
                            request)

    def _start_copies(self, rows, rank: int, request: str, tag: bytes):
        """Write prefill rank `rank`'s `rows` into the decode rank, which is told `tag`
        once they have landed; returns (decode rank, handle or None)."""
        return self._start_listed(self._write_lists(rows, rank, request), request, tag)

    def _write_lists(self, rows, rank: int, request: str) -> tuple:
        """(decode rank, descriptor lists here and there, row count) of prefill rank
        `rank`'s writes of `rows`, after the gate with the sides swapped (this rank's
        memory is read, the decode rank's written); a staging ring keeps them per chunk
        shape (`_ring`)."""
        dst_rank = rows.dst_rank
        self._require_peers([dst_rank], request)
        peer, own = self.peers[dst_rank], self._own()
        if not len(rows):
            return dst_rank, None, None, 0
        self._gate(rows, {rank: own.sizes}, peer.sizes, dst_rank=None)
        src, dst = rows.bind({rank: own.bases}, peer.bases)
        return (dst_rank, *self._descs(dst_rank, (src, rows.src_region), (dst, rows.dst_region), rows.nbytes, request),
                len(rows))

    def _start_listed(self, lists: tuple, request: str, tag: bytes):
        dst_rank, local, remote, count = lists
        if not count:
            self._signal(dst_rank, tag, request)
            return dst_rank, None
        with self._lock:
            handle = self._initialize_lists("WRITE", dst_rank, local, remote, count, request, tag)
            try:
                state = self._call(lambda: self.agent.transfer(handle), "transfer", peer=dst_rank, request=request)
                if state not in ("PROC", "DONE"):
                    raise TransportError(f"NIXL WRITE ended in state {state!r}", peer=self._peer(dst_rank),
                                         request=request)
            except BaseException:
                self._release_handles({dst_rank: handle})
                raise
        return dst_rank, handle

    def _finish_copies(self, started, request: str) -> None:
        dst_rank, handle = started
        if handle is None:
            return
        with self._lock:
            try:
                self._wait({dst_rank: handle}, {dst_rank: "PROC"}, request, {})
            finally:
                self._release_handles({dst_rank: handle})

    def _abandon_copies(self, started) -> None:
        if started[1] is not None:
            try:
                self._release_handles({started[0]: started[1]})
            except TransportError as error:  # kept, like close(): the failure being raised matters more
                self.release_errors.append(str(error))

    def _await_push(self, ranks, request: str) -> None:
        self._await_signals(ranks, None, request)

    # -- notifications: a push's end, a staging ring's words ----------------------------
    def _signal(self, rank: int, tag: bytes, request: str) -> None:
        self._call(lambda: self.agent.send_notif(self.remote_names[rank], tag), "send_notif", peer=self._peer(rank),
                   request=request)

    def _await_signals(self, ranks, tag: bytes | None, request: str, in_flight=()) -> None:
        """Wait for `tag` from every peer of `ranks` (None: each one's push tag), while
        progressing the writes `in_flight` (`_start_copies` handles): without a
        progress thread, NIXL moves a posted transfer only when asked its state."""
        self._require_peers(ranks, request)
        waiting = {rank: _push_tag(request, rank) if tag is None else tag for rank in ranks}
        deadline = time.monotonic() + self.timeout_s
        while waiting:
            for dst_rank, handle in in_flight:
                if handle is not None:
                    self._call(lambda h=handle: self.agent.check_xfer_state(h), "check_xfer_state", peer=dst_rank,
                               request=request)
            for rank, want in list(waiting.items()):
                if self._call(lambda: self.agent.check_remote_xfer_done(self.remote_names[rank], want,
                                                                        tag_is_prefix=True),
                              "check_remote_xfer_done", peer=rank, request=request):
                    del waiting[rank]
            if waiting:
                time.sleep(0)  # let this process's other threads (a ring's serving threads) run between polls
            if waiting and time.monotonic() > deadline:
                rank = next(iter(waiting))
                raise TransportTimeout(f"no word {waiting[rank].decode()!r} from rank {rank} after "
                                       f"{self.timeout_s} s", peer=self._peer(rank), request=request)

    def _initialize(self, op: str, rank: int, local, remote, nbytes, request: str, notif: bytes):
        """One NIXL transfer handle between this rank's memory and peer `rank`'s: `local` /
        `remote` are (addresses, region ids) on each side, READ into local or WRITE from it."""
        return self._initialize_lists(op, rank, *self._descs(rank, local, remote, nbytes, request), len(nbytes),
                                      request, notif)

    def _descs(self, rank: int, local, remote, nbytes, request: str) -> tuple:
        """NIXL descriptor lists of (addresses, region ids) on this rank and on peer `rank`."""
        return tuple(self._call(lambda a=addr, r=regions, m=memory: self.agent.get_xfer_descs(
                         _rows(a, nbytes, np.asarray(m.devices)[r]), _mem_type(m)), "get_xfer_descs", peer=rank,
                         request=request)
                     for (addr, regions), memory in ((local, self.memory), (remote, self.peers[rank])))

    def _initialize_lists(self, op: str, rank: int, local, remote, count: int, request: str, notif: bytes):
        self.last_stats[rank] = {"descriptors_in": count}
        return self._call(lambda: self.agent.initialize_xfer(op, local, remote, self.remote_names[rank], notif),
                          "initialize_xfer", peer=rank, request=request)

    # -- requests of a Prepared: descriptor lists prepared once -----------------------
    def _execute_prepared(self, prepared, src_blocks, dst_blocks, prefix: str, request: str, check=False) -> None:
        # pushed: the request is lowered here too (the gate checks its rows on this side),
        # then the prefill ranks' words are awaited; PreparedLists.indices pairs blocks by
        # the exact rule only: other prefix rules lower
        fast = self._fast_state(prepared) if prefix == "exact" and not self.pushes else None
        if fast is None:
            super()._execute_prepared(prepared, src_blocks, dst_blocks, prefix, request, check)
            if self.pushes and self.route == "lowered":
                self.route = "pushed"
            return
        self.route = "prepared lists"
        lists, prepped = fast
        indices = lists.indices(prepared.plan, src_blocks, dst_blocks)  # BlockError before anything moves

        def move():
            handles = {}
            with self._lock:
                try:
                    for rank, (local_idx, remote_idx) in indices.items():
                        handles[rank] = self._call(lambda: self.agent.make_prepped_xfer(
                            "READ", prepped[None], local_idx, prepped[rank], remote_idx, request.encode()),
                            "make_prepped_xfer", peer=self._peer(rank), request=request)
                        self.last_stats[rank] = {"descriptors_in": len(local_idx)}
                    self._run(handles, request)
                finally:
                    self._release_handles(handles)

        self._fast_route(prepared, src_blocks, dst_blocks, prefix, request, check, move)

    def _build_fast(self, prepared):
        """(lists, NIXL handles by peer; None = this rank) for every read the decode rank
        can make, bounds-checked; None when the plan is not block-relative."""
        plan = prepared.plan
        if not block_relative(plan):
            return None
        own, lists = self._own(), prepared_lists(plan, prepared.dst_rank)
        self._require_peers(list(lists.remote))
        check_descriptors(lists.local, own.sizes, side="local")
        for rank, remote in lists.remote.items():
            check_descriptors(remote, self.peers[rank].sizes, side=f"source rank {rank}")
        handles = {}
        try:
            local = lists.local
            handles[None] = self._call(lambda: self.agent.prep_xfer_dlist("NIXL_INIT_AGENT", _rows(
                local.bind(own.bases), local.nbytes, np.asarray(own.devices)[local.region]), _mem_type(own)),
                "prep_xfer_dlist (local)")
            for rank, remote in lists.remote.items():
                peer = self.peers[rank]
                handles[rank] = self._call(lambda: self.agent.prep_xfer_dlist(self.remote_names[rank], _rows(
                    remote.bind(peer.bases), remote.nbytes, np.asarray(peer.devices)[remote.region]),
                    _mem_type(peer)), "prep_xfer_dlist", peer=self._peer(rank))
        except BaseException:
            self._forget((lists, handles))
            raise
        return lists, handles

    def _forget(self, state) -> None:
        if state is not None:
            for handle in state[1].values():
                self.agent.release_dlist_handle(handle)

    # -- completion -------------------------------------------------------------------
    def _run(self, handles: dict, request: str, rows_of: dict | None = None) -> None:
        rows_of = rows_of or {}
        pending = {}
        for rank, handle in handles.items():
            state = self._call(lambda: self.agent.transfer(handle), "transfer", peer=self._peer(rank), request=request,
                               rows=rows_of.get(rank))
            pending[rank] = state
        self._wait(handles, pending, request, rows_of)

    def _wait(self, handles: dict, pending: dict, request: str, rows_of: dict) -> None:
        """Poll posted transfers (`pending`: their states by peer) until all are done."""
        deadline = time.monotonic() + self.timeout_s
        while True:
            for rank, state in list(pending.items()):
                if state == "PROC":
                    state = self._call(lambda: self.agent.check_xfer_state(handles[rank]), "check_xfer_state",
                                       peer=rank, request=request, rows=rows_of.get(rank))
                if state == "DONE":
                    del pending[rank]
                    self._record(rank, handles[rank])
                elif state != "PROC":
                    raise TransportError(f"NIXL transfer ended in state {state!r}", peer=self._peer(rank), request=request,
                                         rows=rows_of.get(rank))
                else:
                    pending[rank] = state
            if not pending:
                return
            time.sleep(0)  # a poll round found work in flight: let other threads of this process run
            if time.monotonic() > deadline:
                rank = next(iter(pending))
                raise TransportTimeout(f"NIXL transfer not done after {self.timeout_s} s", peer=self._peer(rank),
                                       request=request, rows=rows_of.get(rank))

    def _record(self, rank: int, handle) -> None:
        if self.telemetry:
            t = self.agent.get_xfer_telemetry(handle)
            self.last_stats[rank].update(descriptors=t.descCount, post_us=t.postDuration, xfer_us=t.xferDuration)

    def _release_handles(self, handles: dict) -> None:
        """Release every handle; one that cannot be aborted stays in NIXL's leak list."""
        errors = []
        for handle in handles.values():
            try:
                self.agent.release_xfer_handle(handle)
            except Exception as error:  # an active transfer NIXL could not abort
                errors.append(error)
        if errors:
            raise TransportError(f"NIXL could not release {len(errors)} transfer handle(s): {errors[0]}")

    def _release(self, idle: bool) -> None:
        """After the prepared lists and peers (`BackendBase.close`): deregister this
        rank's memory, unless a read of it in this process is still in flight."""
        if self._nixl_memory is not None and idle:
            memory, self._nixl_memory = self._nixl_memory, None
            self._call(lambda: self.agent.deregister_memory(memory), "deregister_memory")
        if self._card_memory is not None:
            (_, memory), self._card_memory = self._card_memory, None
            self._call(lambda: self.agent.deregister_memory(memory), "deregister_memory (card)")
