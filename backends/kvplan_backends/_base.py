"""The transport protocol as every backend shares it (`kvplan.transport.Transport`).

`BackendBase` owns registered memory (a `_memory.Registration`) and peers, runs the one
gate before any byte moves (`kvplan.lowering.check_transfer`: plan fingerprint, rank,
bounds), runs the local steps of staged / permuted conv strategies, integrity mode, and
dispatches the protocol's calls:

* ``execute(transfer)`` -> ``_read(transfer)`` then the transfer's post steps;
* ``execute(prepared, src_blocks, dst_blocks)`` -> ``_execute_prepared``, by default
  ``lower(plan, dst_rank, blocks)`` and the transfer path; backends with a faster route
  override it (state they build for a `Prepared` lives in ``_fast`` until `close`);
* ``serve(work, ..., rank=r)`` -> rank r's pre steps, then ``_send`` (two-sided
  transports pack and send; one-sided ones need nothing more).

A subclass implements `_read` (and `_send` when it is two-sided); everything it moves
has passed the gate in `_bind_remote` / `_bind_local` first.

Rank: ``register(buffers, rank=r)`` names this backend's rank in its engine; without it
the first ``execute(prepared)`` (its decode rank) or ``serve(..., rank=r)`` fixes it.
Work for another rank, and Transfers lowered from a plan this backend did not prepare,
raise `kvplan.PlanMismatchError`. Peers in this process are held by their live
`Registration` (a closed one is refused); a backend closes once, waiting for reads of
its memory in flight, and never raises from `close`.

>>> import numpy as np
>>> from kvplan import Transfer
>>> class Echo(BackendBase):        # a toy backend: reads by memmove, like `host`
...     name = "echo"
...     def _read(self, transfer, request):
...         src, dst = self._bind_remote(transfer)
...         _local.copy_ranges(-1, src, dst, transfer.nbytes)
>>> a, b = np.arange(8, dtype=np.uint8), np.zeros(8, np.uint8)
>>> src, dst = Echo(), Echo()
>>> src.register([a], rank=1); dst.register([b], rank=0); dst.add_peer(1, src.metadata())
>>> dst.execute(Transfer(dst_rank=0, src_rank=[1], src_region=[0], src_offset=[5], dst_region=[0], dst_offset=[0],
...                      nbytes=[3]))
>>> b.tolist()
[5, 6, 7, 0, 0, 0, 0, 0]
>>> dst.execute(Transfer(dst_rank=1, src_rank=[1], src_region=[0], src_offset=[5], dst_region=[0], dst_offset=[0],
...                      nbytes=[3]))
Traceback (most recent call last):
...
kvplan.errors.PlanMismatchError: Transfer lowered for decode rank 1 handed to decode rank 0
>>> src.close()
>>> dst.execute(Transfer(dst_rank=0, src_rank=[1], src_region=[0], src_offset=[5], dst_region=[0], dst_offset=[0],
...                      nbytes=[3]), request="r2")
Traceback (most recent call last):
...
kvplan.transport.TransportError: source rank 1 closed its registration: its memory may be gone [peer rank 1, request 'r2']
>>> dst.close(); dst.close()       # closing twice is harmless
"""

from __future__ import annotations

import contextlib
import os
import threading
import time

import numpy as np

from kvplan.errors import PlanMismatchError, SpecError
from kvplan.lowering import (DescriptorList, RingCopies, check_descriptors, check_transfer, lower, request_blocks,
                             source_ranks)
from kvplan.spec.fingerprint import fingerprint
from kvplan.transport import PeerCard, Prepared, TransportError

from . import _exchange, _integrity, _local, _ring, _steps
from ._memory import PROCESS, Memory, Registration, live, pack_metadata, unpack_metadata
from ._prepared import Ticket, check_work


class Done:
    """A `Completion` that is already complete (one-sided transports serve nothing);
    `digests`: the source's digests with ``serve(..., check=True)``."""

    def __init__(self, digests: dict | None = None):
        self.digests = digests

    def wait(self, timeout_s: float | None = None) -> None:
        return None


class BackendBase:
    """Registration, metadata, peers, the gate and the protocol's dispatch; subclasses
    move bytes."""

    name = "base"
    sends = False  # two-sided: the source packs and sends, so serve() lowers every request
    pushes = False  # the prefill side writes the copies of plans with local steps (NIXL WRITE)
    rings = False  # can move bounce staging through a ring of chunks (`_ring`): ranks notify each other
    timeout_s = 30.0  # how long close() waits for reads of this rank's memory in flight

    def __init__(self, *, timeout_s: float = 30.0):
        # every backend takes timeout_s: how long a call waits for a peer (and close() for reads in flight)
        if isinstance(timeout_s, bool) or not isinstance(timeout_s, (int, float)) or not 0 <= timeout_s < float("inf"):
            raise SpecError(f"{self.name} backend: timeout_s must be a finite number of seconds >= 0 (0: do not "
                            f"wait), got {timeout_s!r}"[:300])
        self.timeout_s = float(timeout_s)
        self.memory: Memory | None = None
        self.rank: int | None = None  # this backend's rank in its engine (register, or the first execute / serve)
        self.peers: dict[int, Memory] = {}
        self.route: str | None = None  # how the last execute() ran (a test and benchmark aid)
        self.release_errors: list[str] = []  # what close() / a replaced peer could not release (never raised)
        self._registration: Registration | None = None
        self._peer_registrations: dict[int, Registration | None] = {}  # peers in this process
        self._fingerprints: set[str] = set()  # plans prepare() saw
        self._identity = object()  # tells a Prepared of this instance from another's
        self._fast: dict[Ticket, object] = {}  # per Prepared: a backend's fast-path state
        self._step_routes: dict[tuple, _steps.StepRoute] = {}  # per Prepared, step and rank: local steps
        self._lock = threading.RLock()  # transport state shared by threads (fast states, handles)
        self._closed = False
        self._engine = None  # what publish() named: this rank's engine
        self._published: str | None = None  # publish()'s address
        self._peer_engines: dict[int, str | None] = {}  # peers' published engine fingerprints

    # -- memory and peers -------------------------------------------------------------
    def register(self, buffers, *, rank: int | None = None) -> None:
        if self._closed:
            raise TransportError(f"{self.name} backend is closed")
        if self.memory is not None:
            raise TransportError(f"{self.name} backend already has registered memory; use a new backend")
        if rank is not None and (isinstance(rank, bool) or not isinstance(rank, (int, np.integer)) or rank < 0):
            raise SpecError(f"register(rank={rank!r}): a rank is an int >= 0")
        registration = Registration(buffers)  # owns the buffers until close()
        try:
            self._check_memory(registration.memory)
        except BaseException:
            registration.close(0)
            raise
        self._registration, self.memory = registration, registration.memory
        self.rank = None if rank is None else int(rank)

    def _check_memory(self, memory: Memory) -> None:
        """Refuse memory this transport cannot use (before anything is registered)."""

    def metadata(self) -> bytes:
        self._own()  # a closed or unregistered backend says so before a transport is asked
        return self._card(self._metadata_fields())

    def _card(self, fields: dict) -> bytes:
        """This rank's metadata header (plus the published engine) with a transport's `fields`."""
        return pack_metadata(self.name, self._own(), pid=os.getpid(), process=PROCESS, token=self._registration.token,
                             rank=self.rank, **_exchange.engine_fields(self._engine), **fields)

    # -- meeting peers on other hosts (`_exchange`) --------------------------------------
    def publish(self, engine=None, *, host: str) -> str:
        """Serve this rank's card to peers on other hosts through the transport's own
        listener and return the address they `fetch_peer`. `engine`: the EngineSpec
        this rank registered memory for; peers check it, and `prepare` then refuses a
        plan of other engines. `host`: the name or IP peers reach this host by."""
        self._own()
        _exchange.check_host(host)
        _exchange.engine_fields(engine)  # a SpecError for anything but an EngineSpec or None
        with self._lock:
            if self._published is not None:
                raise TransportError(f"{self.name} backend already published its card at {self._published}")
            self._engine = engine
            try:
                self._published = self._listen(host)
            except BaseException:
                self._engine = None
                raise
            return self._published

    def fetch_peer(self, address: str) -> PeerCard:
        """The card the rank at `address` published, fetched through the transport and
        checked (`_exchange.read_card`); ``add_peer(card.rank, card.metadata)`` pairs
        with it. Waits up to `timeout_s`."""
        self._own()
        where = _exchange.parse_address(address, self.name)
        return _exchange.read_card(address, self.name, self._fetch(address, *where,
                                                                   time.monotonic() + self.timeout_s))

    def _listen(self, host: str) -> str:
        """Start serving this rank's card; its address (a networked transport)."""
        raise self._local_only()

    def _fetch(self, address: str, host: str, port: int, path: str, query: dict, deadline: float) -> bytes:
        """The card bytes published at `address` (a networked transport)."""
        raise self._local_only()

    def _local_only(self) -> TransportError:
        return TransportError(f"{self.name} backend pairs ranks of one process: pass metadata() to add_peer; "
                              f"publish / fetch_peer need a networked transport (nixl, ucx)")

    def add_peer(self, rank: int, metadata: bytes) -> None:
        """Learn peer `rank`; adding a rank again replaces it (a restarted peer)."""
        if self._closed:
            raise TransportError(f"{self.name} backend is closed", peer=f"rank {rank}")
        info, memory, blob = unpack_metadata(self.name, metadata)
        if info.get("rank") is not None and info["rank"] != rank:
            raise PlanMismatchError(f"add_peer({rank}, metadata): the metadata is rank {info['rank']}'s")
        registration = live(info.get("process"), info.get("token"))
        if info.get("process") == PROCESS and registration is None:
            raise TransportError(f"peer rank {rank} (this process) closed its registration before add_peer",
                                 peer=f"rank {rank}")
        with self._lock:
            if rank in self.peers:
                self._forget_all()  # prepared state may name the old peer
                self._attempt(self._disconnect, rank)  # a dead peer may refuse: it is replaced all the same
            self._connect(rank, info, blob)
            self.peers[rank] = memory
            self._peer_registrations[rank] = registration
            self._peer_engines[rank] = info.get("fingerprint")

    def _metadata_fields(self) -> dict:
        return {}

    def _connect(self, rank: int, info: dict, blob: bytes) -> None:
        """Transport-specific part of `add_peer`."""

    def _disconnect(self, rank: int) -> None:
        """Transport-specific release of a peer being replaced."""

    def _in_process(self, rank: int, info: dict) -> None:
        """Refuse a peer outside this process (host and cupy pair ranks of one process)."""
        if info.get("process") != PROCESS:
            raise TransportError(f"{self.name} backend peers must live in this process (pid {os.getpid()}), got "
                                 f"pid {info.get('pid')}; use nixl or ucx across processes", peer=f"rank {rank}")

    def _own(self) -> Memory:
        if self._closed:
            raise TransportError(f"{self.name} backend is closed")
        if self.memory is None:
            raise TransportError(f"{self.name} backend: register() this rank's buffers first")
        return self.memory

    @contextlib.contextmanager
    def _busy(self):
        """This rank's memory held open for one call (close() waits for it)."""
        self._own()
        with self._registration.use(f"this {self.name} backend"):
            yield

    # -- ranks and plans ----------------------------------------------------------------
    def _learn_rank(self, rank: int, call: str) -> None:
        if isinstance(rank, bool) or not isinstance(rank, (int, np.integer)) or rank < 0:
            raise SpecError(f"{call}(): a rank is an int >= 0, got {rank!r}")
        if self.rank is None:
            self.rank = int(rank)
        elif int(rank) != self.rank:
            side = "decode" if call == "execute" else "prefill"
            raise PlanMismatchError(f"{call}(): work for {side} rank {int(rank)} handed to the backend of rank "
                                    f"{self.rank} (register(buffers, rank=...) / its first request)")

    def _check_plan(self, transfer) -> str | None:
        """Refuse a Transfer lowered from a plan this backend did not prepare (hand-built
        ones, and any before the first prepare, pass); the fingerprint it matched."""
        mine = transfer.plan_fingerprint
        if not mine or not self._fingerprints:
            return None
        if mine not in self._fingerprints:
            raise PlanMismatchError(f"Transfer lowered from plan {mine} handed to a backend prepared for plan "
                                    f"{', '.join(sorted(self._fingerprints))}")
        return mine

    def _gate(self, transfer, src_sizes, dst_sizes, *, dst_rank: int | None) -> None:
        check_transfer(transfer, src_sizes, dst_sizes, fingerprint=self._check_plan(transfer), dst_rank=dst_rank)

    def _check_source_rows(self, rows, rank: int) -> None:
        """A serving rank's rows (their source side) inside its registered memory."""
        self._check_plan(rows)
        check_descriptors(DescriptorList(region=rows.src_region, offset=rows.src_offset, nbytes=rows.nbytes),
                          self._own().sizes, side=f"source rank {rank}")

    # -- the protocol -----------------------------------------------------------------
    def prepare(self, plan, dst_rank: int, *, ring=None) -> Prepared:
        """Check `plan` and `dst_rank` once; what a backend builds for them is made by
        the first `execute` (only execute tells a backend it is the decode side).
        `ring`: a `kvplan.lowering.StagingRing` to move a bounce plan's staging chunk by
        chunk (`_ring`); both sides must prepare the same ring."""
        self._own()
        if not hasattr(plan, "reads"):
            raise SpecError(f"prepare() takes a plan from kvplan.plan(), got {type(plan).__name__}")
        plan.reads(dst_rank)  # RankError for a rank outside the decode engine
        _ring.check_ring(ring, plan, self)
        _exchange.check_plan(plan, None if self._engine is None else fingerprint(self._engine), self._peer_engines)
        dst_rank = int(dst_rank)
        if getattr(plan, "fingerprint", None):
            self._fingerprints.add(plan.fingerprint)
        return Prepared(plan=plan, dst_rank=dst_rank, backend=self.name,
                        state=Ticket(owner=self._identity, plan=plan, dst_rank=dst_rank, ring=ring))

    def execute(self, work, src_blocks=None, dst_blocks=None, *, prefix: str = "exact", request: str = "",
                check=False) -> None:
        ticket = check_work(work, src_blocks, dst_blocks, backend=self.name, owner=self._identity, call="execute")
        with self._busy():
            if ticket is None:
                self.route = "transfer"
                self._execute_transfer(work, request, check)
            else:
                self._learn_rank(work.dst_rank, "execute")
                if ticket.ring is None:
                    self._execute_prepared(work, src_blocks, dst_blocks, prefix, request, check)
                    return
                _refuse_check(check, "execute")
                self.route = "staging ring, pushed" if self.pushes else "staging ring"
                _ring.execute_chunks(self, work, request_blocks(work.plan, work.dst_rank, src_blocks, dst_blocks,
                                                                prefix=prefix), request)

    def serve(self, work, src_blocks=None, dst_blocks=None, *, rank: int, prefix: str = "exact", request: str = "",
              check: bool = False):
        ticket = check_work(work, src_blocks, dst_blocks, backend=self.name, owner=self._identity, call="serve")
        with self._busy():
            self._learn_rank(rank, "serve")
            if ticket is not None and ticket.ring is not None:
                _refuse_check(check, "serve")
                blocks = request_blocks(work.plan, work.dst_rank, src_blocks, dst_blocks, prefix=prefix)
                return _ring.RingServe(self, work, blocks, rank, request)
            route = None if ticket is None or check else self._step_route(work, "pre", rank)
            if route is not None:  # pack from the step template; the copies only if sent from here
                blocks = request_blocks(work.plan, work.dst_rank, src_blocks, dst_blocks, prefix=prefix)
                route.run(blocks)
                if self.pushes and work.plan.transfer_strategy == "bounce":
                    self._push_request(work, blocks, rank, request)
                    return Done()
                if self.pushes:
                    self._push(self._copies(work, blocks, src_blocks, dst_blocks, prefix), rank, request)
                    return Done()
                if not self.sends:
                    return Done()
                return self._send(self._copies(work, blocks, src_blocks, dst_blocks, prefix), rank, request, None)
            if ticket is None:
                transfer = work
                self._check_plan(transfer)
            elif self.sends or self.pushes or work.plan.has_local_steps or check:
                transfer = _lower(work, src_blocks, dst_blocks, prefix)
            else:  # one-sided, nothing to run here: still refuse a bad request on this side
                request_blocks(work.plan, work.dst_rank, src_blocks, dst_blocks, prefix=prefix)
                return Done()
            self._pre_steps(transfer, rank)
            digests = None
            if check:
                mine = transfer.for_source(rank)
                self._check_source_rows(mine, rank)
                digests = {int(rank): _integrity.source_digests(self._registration, mine, self._stream())}
            return self._send(transfer, rank, request, digests)

    def copy_local(self, transfer) -> None:
        with self._busy():
            self._copy_local(transfer)

    def close(self) -> None:
        """Release everything, once; waits up to `timeout_s` for reads of this rank's
        memory in flight and never raises (what failed is kept in `release_errors`)."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        idle = self._registration.close(self.timeout_s) if self._registration is not None else True
        with self._lock:
            self._forget_all()
            for rank in list(self.peers):
                self._attempt(self._disconnect, rank)
            self._attempt(self._release, idle)
            self.peers.clear()
            self._peer_engines.clear()
            self._peer_registrations.clear()

    def _attempt(self, fn, *args) -> None:
        try:
            fn(*args)
        except Exception as error:  # close() goes on: a dead peer must not keep the rest registered
            self.release_errors.append(f"{getattr(fn, '__name__', fn)}: {type(error).__name__}: {error}")

    def _forget_all(self) -> None:
        for state in self._fast.values():
            self._attempt(self._forget, state)
        self._fast.clear()
        self._step_routes.clear()

    def _release(self, idle: bool) -> None:
        """Transport-specific part of `close` (after peers); `idle`: no read of this
        rank's memory is in flight, so registrations may go."""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # -- what subclasses implement or override ----------------------------------------
    def _read(self, transfer, request: str) -> None:
        """Move a transfer's rows into this rank's memory."""
        raise NotImplementedError

    def _send(self, transfer, rank: int, request: str, digests: dict | None):
        """Source rank `rank`'s part of a transfer after its pre steps: a `Completion`."""
        return Done(digests)

    def _stream(self):
        """The stream digests run on (GPU backends)."""
        return None

    def _push(self, transfer, rank: int, request: str) -> None:
        """Prefill rank `rank` writes its rows of `transfer` into the decode rank (`pushes`)."""
        raise NotImplementedError

    def _push_request(self, prepared: Prepared, blocks, rank: int, request: str) -> None:
        """Prefill rank `rank` writes a bounce request's copies into the decode rank
        (`pushes`), finished on return."""
        raise NotImplementedError

    def _await_push(self, ranks, request: str) -> None:
        """The decode rank waits until every prefill rank of `ranks` has pushed `request`."""
        raise NotImplementedError

    def _read_lists(self, transfer, request: str):
        """What `_read_listed` takes for `transfer`, after the gate: work a staging ring
        keeps for chunks that reuse a slot (`_ring`); by default the transfer itself,
        gated again by `_read`."""
        return transfer

    def _read_listed(self, lists, request: str) -> None:
        self._read(lists, request)

    def _signal(self, rank: int, tag: bytes, request: str) -> None:
        """Send peer `rank` the notification `tag` (`rings`)."""
        raise NotImplementedError

    def _await_signals(self, ranks, tag: bytes, request: str, in_flight=()) -> None:
        """Wait until every peer of `ranks` has sent `tag` (`rings`), progressing the
        `_start_copies` handles `in_flight` meanwhile."""
        raise NotImplementedError

    def _start_copies(self, rows, rank: int, request: str, tag: bytes):
        """Prefill rank `rank` starts writing `rows` into the decode rank, which is told
        `tag` once they have landed (`rings` with `pushes`); returns a handle."""
        raise NotImplementedError

    def _write_lists(self, rows, rank: int, request: str):
        """What `_start_listed` takes for prefill rank `rank`'s `rows`, after the gate."""
        raise NotImplementedError

    def _start_listed(self, lists, request: str, tag: bytes):
        """`_start_copies` of what `_write_lists` made."""
        raise NotImplementedError

    def _finish_copies(self, handle, request: str) -> None:
        """Wait for `_start_copies`' writes and release them."""
        raise NotImplementedError

    def _abandon_copies(self, handle) -> None:
        """Release `_start_copies`' writes after a failure (never raises)."""

    def _execute_transfer(self, transfer, request: str, check=False) -> None:
        ranks = source_ranks(transfer).tolist()
        with self._reading(ranks, request):
            want = None
            if _wanted(check):
                self._bind_remote(transfer)  # the gate, before any digest reads memory
                want = self._expected(transfer, check, request)
            self._read(transfer, request)
            if want is not None:
                _integrity.verify(self._registration, transfer, want, request=request, stream=self._stream())
        self._post_steps(transfer)

    def _execute_prepared(self, prepared: Prepared, src_blocks, dst_blocks, prefix: str, request: str,
                          check=False) -> None:
        """The default route: lower the request on this side, then the transfer path; a
        plan with local steps lowers only its reads and unpacks from the step template."""
        route = None if _wanted(check) else self._step_route(prepared, "post", None)
        if route is None:
            self.route = "lowered"
            self._execute_transfer(_lower(prepared, src_blocks, dst_blocks, prefix), request, check)
            return
        blocks = request_blocks(prepared.plan, prepared.dst_rank, src_blocks, dst_blocks, prefix=prefix)
        if self.pushes:  # the prefill ranks write the copies: wait for their word, then unpack
            self.route = "pushed, step templates"
            self._await_push(list(prepared.plan.reads(prepared.dst_rank).source_ranks), request)
        elif prepared.plan.transfer_strategy == "bounce" and not self.sends:
            # a whole request is one chunk at staging position 0: its copies kept per shape
            self.route = "kept reads, step templates"
            _ring.read_chunk(self, prepared, blocks, 0, list(prepared.plan.reads(prepared.dst_rank).source_ranks),
                             request)
        else:
            self.route = "lowered reads, step templates"
            self._execute_transfer(self._copies(prepared, blocks, src_blocks, dst_blocks, prefix), request)
        route.run(blocks)

    def _step_route(self, prepared: Prepared, step: str, rank: int | None):
        """The `StepRoute` of `prepared`'s pre steps on prefill rank `rank` or its post
        steps here, built on first use; None where the steps are lowered per request."""
        if not _steps.available(prepared.plan):
            return None
        key = (prepared.state, step, rank)
        with self._lock:
            if key not in self._step_routes:
                self._step_routes[key] = _steps.StepRoute(prepared.plan, prepared.dst_rank, step, rank, self._own())
            return self._step_routes[key]

    def _copies(self, prepared: Prepared, blocks, src_blocks, dst_blocks, prefix: str):
        """A request's reads (`blocks` paired from the other arguments): by arithmetic
        for a bounce plan (`RingCopies`, equal to the lowered reads), lowered for a conv
        strategy's."""
        if prepared.plan.transfer_strategy == "bounce":
            return self._ring_copies(prepared).chunk(blocks)
        return lower(prepared.plan, prepared.dst_rank, src_blocks, dst_blocks, prefix=prefix, steps=False)

    def _ring_copies(self, prepared: Prepared) -> RingCopies:
        """`prepared`'s copies made per ring chunk (`kvplan.lowering.RingCopies`), built once."""
        key = (prepared.state, "copies", None)
        with self._lock:
            if key not in self._step_routes:
                self._step_routes[key] = RingCopies(prepared.plan, prepared.dst_rank)
            return self._step_routes[key]

    def _ring_reads(self, prepared: Prepared) -> dict:
        """`prepared`'s ring chunk copies kept by chunk shape (`_ring._kept`)."""
        with self._lock:
            return self._step_routes.setdefault((prepared.state, "ring reads", None), {})

    def _fast_route(self, prepared: Prepared, src_blocks, dst_blocks, prefix: str, request: str, check, move) -> None:
        """Run a fast route's copy, `move()`, for a request of `prepared`: its sources
        held open; with integrity mode, the request lowered for its rows and digests."""
        ranks = list(prepared.plan.reads(prepared.dst_rank).source_ranks)
        if not _wanted(check):
            with self._reading(ranks, request):
                move()
            return
        transfer = _lower(prepared, src_blocks, dst_blocks, prefix)
        self._bind_remote(transfer)
        with self._reading(ranks, request):
            want = self._expected(transfer, check, request)
            move()
            _integrity.verify(self._registration, transfer, want, request=request, stream=self._stream())

    def _fast_state(self, prepared: Prepared):
        """This backend's state for `prepared` (`_build_fast`), built by its first
        request and kept until `close`: only `execute` tells a backend that it is the
        decode side, so `prepare`, which a serving prefill rank calls too, cannot."""
        with self._lock:
            if prepared.state not in self._fast:
                self._fast[prepared.state] = self._build_fast(prepared)
            return self._fast[prepared.state]

    def _build_fast(self, prepared: Prepared):
        """A fast route's state for `prepared`, or None where requests are lowered."""

    def _forget(self, state) -> None:
        """Release one fast-path state at `close` (transport handles)."""

    # -- peers held open, integrity -----------------------------------------------------
    @contextlib.contextmanager
    def _reading(self, ranks, request: str):
        """Peers `ranks` checked, and those in this process held open while they are read."""
        self._require_peers(ranks, request)
        with contextlib.ExitStack() as stack:
            for rank in ranks:
                registration = self._peer_registrations.get(rank)
                if registration is not None:
                    stack.enter_context(registration.use(f"source rank {rank}", peer=f"rank {rank}",
                                                         request=request))
            yield

    def _expected(self, transfer, check, request: str):
        """Per row, the source's digest: taken here from sources in this process
        (``check=True``) or given (the sources' ``serve(..., check=True).digests``)."""
        if check is True:
            got = {}
            for rank in transfer.source_ranks:
                registration = self._peer_registrations.get(int(rank))
                if registration is None:
                    raise SpecError(f"execute(..., check=True): source rank {int(rank)} is in another process, so "
                                    f"this {self.name} backend cannot digest its bytes; pass its "
                                    "serve(..., check=True).digests as check=")
                got[int(rank)] = _integrity.source_digests(registration, transfer.for_source(rank))
        else:
            got = _integrity.merge(check)
        return _integrity.expected(transfer, got)

    # -- bound addresses ---------------------------------------------------------------
    def _bind_remote(self, transfer):
        """(src, dst) addresses of a transfer's reads, after the gate (peers, plan,
        rank, bounds)."""
        own, ranks = self._own(), source_ranks(transfer).tolist()
        self._require_peers(ranks)
        self._gate(transfer, {r: self.peers[r].sizes for r in ranks}, own.sizes, dst_rank=self.rank)
        return transfer.bind({r: self.peers[r].bases for r in ranks}, own.bases)

    def _require_peers(self, ranks, request: str | None = None) -> None:
        missing = [r for r in ranks if r not in self.peers]
        if missing:
            raise TransportError(f"transfer reads from rank(s) {missing} that were never added with add_peer",
                                 peer=f"rank {missing[0]}", request=request)

    def _bind_local(self, transfer, src_extra: Memory | None = None, dst_extra: Memory | None = None):
        """Addresses of a local step: both sides in this rank's buffers (or in extra
        buffers, e.g. a staging buffer, described by `Memory`), after the gate."""
        src = self._own() if src_extra is None else src_extra
        dst = self._own() if dst_extra is None else dst_extra
        ranks = source_ranks(transfer).tolist()
        self._gate(transfer, {r: src.sizes for r in ranks}, dst.sizes, dst_rank=None)
        return transfer.bind({r: src.bases for r in ranks}, dst.bases)

    # -- local steps of staged / permuted strategies -----------------------------------
    def _pre_steps(self, transfer, rank: int) -> None:
        """Source rank `rank`'s local copies that must precede the reads."""
        if transfer.pre_steps is not None and len(transfer.pre_steps):
            mine = transfer.pre_steps.for_source(rank)
            if len(mine):
                self._copy_local(mine)

    def _post_steps(self, transfer) -> None:
        """The destination's local copies after the reads."""
        if transfer.post_steps is not None and len(transfer.post_steps):
            self._copy_local(transfer.post_steps)

    def _copy_local(self, transfer) -> None:
        """`copy_local` inside a call that holds this rank's memory: one memmove pass on
        the host, one kernel launch on a GPU, for every transport (a NIXL loopback READ
        would post a descriptor per row, which is what bounce packing exists to avoid)."""
        src, dst = self._bind_local(transfer)
        _local.copy_ranges(self._own().device, src, dst, transfer.nbytes)


def _refuse_check(check, call: str) -> None:
    if _wanted(check):
        raise SpecError(f"{call}(..., check=...): integrity mode digests whole requests; a Prepared with a staging "
                        "ring moves chunks: prepare without ring= to check a request")


def _wanted(check) -> bool:
    """Is integrity mode asked for (`check` True, or digests)?"""
    return check is not False and check is not None


def _lower(prepared: Prepared, src_blocks, dst_blocks, prefix: str):
    return lower(prepared.plan, prepared.dst_rank, src_blocks, dst_blocks, prefix=prefix)
