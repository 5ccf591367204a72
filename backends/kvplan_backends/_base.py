"""The transport protocol as every backend shares it (`kvplan.transport.Transport`).

`BackendBase` holds registered memory and peers, checks bounds and binds addresses
(`kvplan.lowering`), runs the local steps of staged / permuted conv strategies, and
dispatches the protocol's calls:

* ``execute(transfer)`` -> ``_read(transfer)`` then the transfer's post steps;
* ``execute(prepared, src_blocks, dst_blocks)`` -> ``_execute_prepared``, by default
  ``lower(plan, dst_rank, blocks)`` and the transfer path; backends with a faster route
  override it (state they build for a `Prepared` lives in ``_fast`` until `close`);
* ``serve(work, ..., rank=r)`` -> rank r's pre steps, then ``_send`` (two-sided
  transports pack and send; one-sided ones need nothing more).

A subclass implements `_read` (and `_send` when it is two-sided); everything it moves
has been bounds-checked by `_bind_remote` / `_bind_local` first.

>>> import numpy as np
>>> from kvplan import Transfer
>>> class Echo(BackendBase):        # a toy backend: reads by memmove, like `host`
...     name = "echo"
...     def _read(self, transfer, request):
...         src, dst = self._bind_remote(transfer)
...         _local.copy_ranges(-1, src, dst, transfer.nbytes)
>>> a, b = np.arange(8, dtype=np.uint8), np.zeros(8, np.uint8)
>>> src, dst = Echo(), Echo()
>>> src.register([a]); dst.register([b]); dst.add_peer(1, src.metadata())
>>> dst.execute(Transfer(dst_rank=0, src_rank=[1], src_region=[0], src_offset=[5], dst_region=[0], dst_offset=[0],
...                      nbytes=[3]))
>>> b.tolist()
[5, 6, 7, 0, 0, 0, 0, 0]
>>> dst.close(); dst.close()       # closing twice is harmless
"""

from __future__ import annotations

import os

from kvplan.errors import SpecError
from kvplan.lowering import check_bounds, lower, request_blocks, source_ranks
from kvplan.transport import Prepared, TransportError

from . import _local
from ._memory import Memory, describe, pack_metadata, unpack_metadata
from ._prepared import Ticket, check_work


class Done:
    """A `Completion` that is already complete (one-sided transports serve nothing)."""

    def wait(self, timeout_s: float | None = None) -> None:
        return None


class BackendBase:
    """Registration, metadata, peers and the protocol's dispatch; subclasses move bytes."""

    name = "base"
    sends = False  # two-sided: the source packs and sends, so serve() lowers every request

    def __init__(self):
        self.memory: Memory | None = None
        self.peers: dict[int, Memory] = {}
        self.route: str | None = None  # how the last execute() ran (a test and benchmark aid)
        self._buffers: list = []
        self._identity = object()  # tells a Prepared of this instance from another's
        self._fast: dict[Ticket, object] = {}  # per Prepared: a backend's fast-path state
        self._closed = False

    # -- memory and peers -------------------------------------------------------------
    def register(self, buffers) -> None:
        if self.memory is not None or self._closed:
            raise TransportError(f"{self.name} backend already has registered memory; use a new backend")
        self.memory = describe(buffers)
        self._buffers = list(buffers)  # keep them alive while registered

    def metadata(self) -> bytes:
        return pack_metadata(self.name, self._own(), pid=os.getpid(), **self._metadata_fields())

    def add_peer(self, rank: int, metadata: bytes) -> None:
        info, memory, blob = unpack_metadata(self.name, metadata)
        self._connect(rank, info, blob)
        self.peers[rank] = memory

    def _metadata_fields(self) -> dict:
        return {}

    def _connect(self, rank: int, info: dict, blob: bytes) -> None:
        """Transport-specific part of `add_peer`."""

    def _own(self) -> Memory:
        if self._closed:
            raise TransportError(f"{self.name} backend is closed")
        if self.memory is None:
            raise TransportError(f"{self.name} backend: register() this rank's buffers first")
        return self.memory

    # -- the protocol -----------------------------------------------------------------
    def prepare(self, plan, dst_rank: int) -> Prepared:
        """Check `plan` and `dst_rank` once; what a backend builds for them is made by
        the first `execute` (only execute tells a backend it is the decode side)."""
        self._own()
        if not hasattr(plan, "reads"):
            raise SpecError(f"prepare() takes a plan from kvplan.plan(), got {type(plan).__name__}")
        plan.reads(dst_rank)  # RankError for a rank outside the decode engine
        dst_rank = int(dst_rank)
        return Prepared(plan=plan, dst_rank=dst_rank, backend=self.name,
                        state=Ticket(owner=self._identity, plan=plan, dst_rank=dst_rank))

    def execute(self, work, src_blocks=None, dst_blocks=None, *, prefix: str = "exact", request: str = "") -> None:
        ticket = check_work(work, src_blocks, dst_blocks, backend=self.name, owner=self._identity, call="execute")
        self._own()
        if ticket is None:
            self.route = "transfer"
            self._execute_transfer(work, request)
        else:
            self._execute_prepared(work, src_blocks, dst_blocks, prefix, request)

    def serve(self, work, src_blocks=None, dst_blocks=None, *, rank: int, prefix: str = "exact", request: str = ""):
        ticket = check_work(work, src_blocks, dst_blocks, backend=self.name, owner=self._identity, call="serve")
        self._own()
        if ticket is None:
            transfer = work
        elif self.sends or work.plan.has_local_steps:
            transfer = _lower(work, src_blocks, dst_blocks, prefix)
        else:  # one-sided, nothing to run here: still refuse a bad request on this side
            request_blocks(work.plan, work.dst_rank, src_blocks, dst_blocks, prefix=prefix)
            return Done()
        self._pre_steps(transfer, rank)
        return self._send(transfer, rank, request)

    def copy_local(self, transfer) -> None:
        src, dst = self._bind_local(transfer)
        _local.copy_ranges(self._own().device, src, dst, transfer.nbytes)

    def close(self) -> None:
        for state in self._fast.values():
            self._forget(state)
        self._fast.clear()
        self.peers.clear()
        self._buffers = []
        self._closed = True

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # -- what subclasses implement or override ----------------------------------------
    def _read(self, transfer, request: str) -> None:
        """Move a transfer's rows into this rank's memory."""
        raise NotImplementedError

    def _send(self, transfer, rank: int, request: str):
        """Source rank `rank`'s part of a transfer after its pre steps: a `Completion`."""
        return Done()

    def _execute_transfer(self, transfer, request: str) -> None:
        self._read(transfer, request)
        self._post_steps(transfer)

    def _execute_prepared(self, prepared: Prepared, src_blocks, dst_blocks, prefix: str, request: str) -> None:
        """The default route: lower the request on this side, then the transfer path."""
        self.route = "lowered"
        self._execute_transfer(_lower(prepared, src_blocks, dst_blocks, prefix), request)

    def _fast_state(self, prepared: Prepared):
        """This backend's state for `prepared` (`_build_fast`), built by its first
        request and kept until `close`: only `execute` tells a backend that it is the
        decode side, so `prepare`, which a serving prefill rank calls too, cannot."""
        if prepared.state not in self._fast:
            self._fast[prepared.state] = self._build_fast(prepared)
        return self._fast[prepared.state]

    def _build_fast(self, prepared: Prepared):
        """A fast route's state for `prepared`, or None where requests are lowered."""

    def _forget(self, state) -> None:
        """Release one fast-path state at `close` (transport handles)."""

    # -- bound addresses ---------------------------------------------------------------
    def _bind_remote(self, transfer):
        """(src, dst) addresses of a transfer's reads, after checking peers and bounds."""
        own, ranks = self._own(), source_ranks(transfer).tolist()
        self._require_peers(ranks)
        check_bounds(transfer, {r: self.peers[r].sizes for r in ranks}, own.sizes)
        return transfer.bind({r: self.peers[r].bases for r in ranks}, own.bases)

    def _require_peers(self, ranks) -> None:
        missing = [r for r in ranks if r not in self.peers]
        if missing:
            raise TransportError(f"transfer reads from rank(s) {missing} that were never added with add_peer",
                                 peer=f"rank {missing[0]}")

    def _bind_local(self, transfer, src_extra: Memory | None = None, dst_extra: Memory | None = None):
        """Addresses of a local step: both sides in this rank's buffers (or in extra
        buffers, e.g. a staging buffer, described by `Memory`), bounds checked."""
        src = self._own() if src_extra is None else src_extra
        dst = self._own() if dst_extra is None else dst_extra
        ranks = source_ranks(transfer).tolist()
        check_bounds(transfer, {r: src.sizes for r in ranks}, dst.sizes)
        return transfer.bind({r: src.bases for r in ranks}, dst.bases)

    # -- local steps of staged / permuted strategies -----------------------------------
    def _pre_steps(self, transfer, rank: int) -> None:
        """Source rank `rank`'s local copies that must precede the reads."""
        if transfer.pre_steps is not None and len(transfer.pre_steps):
            mine = transfer.pre_steps.for_source(rank)
            if len(mine):
                self.copy_local(mine)

    def _post_steps(self, transfer) -> None:
        """The destination's local copies after the reads."""
        if transfer.post_steps is not None and len(transfer.post_steps):
            self.copy_local(transfer.post_steps)


def _lower(prepared: Prepared, src_blocks, dst_blocks, prefix: str):
    return lower(prepared.plan, prepared.dst_rank, src_blocks, dst_blocks, prefix=prefix)
