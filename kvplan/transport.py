"""Stage 5, transport: the protocol every backend implements, how to load one, and
transport errors.

A backend instance is one rank's endpoint of a transport. It registers that rank's
memory, pairs with peers through metadata bytes sent over any channel, then moves
bytes a plan describes, computing no offsets itself:

    backend.register(buffers, rank=r)  one buffer per region of the engine (+ scratch)
    backend.add_peer(rank, md)         md = the peer backend's metadata()
    address = backend.publish(engine, host=ip)   across hosts: serve this rank's card ...
    card = backend.fetch_peer(peer_address)       ... and fetch a peer's: card.engine, card.metadata
    prepared = backend.prepare(plan, dst_rank)                        once per plan and rank
    backend.execute(prepared, src_blocks, dst_blocks, request="r1")   per request, decode side
    backend.serve(prepared, src_blocks, dst_blocks, rank=r, request="r1")   prefill side
    backend.execute(transfer, request="r1")    a `Transfer` lowered by hand
    backend.close()

What does not depend on a request (descriptor lists, a device copy template) is built
once per `Prepared`; per request only block ids travel. Both engines call `prepare`,
so a backend builds its decode-side state at the first `execute` of a `Prepared` and
keeps it until `close`. `serve` is the prefill rank's part:
local pre steps of a conv strategy, and for two-sided transports the packing and
sending; one-sided transports need nothing more. `copy_local(transfer)` runs rows whose
both sides are this rank's registered memory. Backends are found by name through the
``kvplan.backends`` entry-point group and imported on first use, so nothing here
imports a transport library.

Safety, whatever the input (every backend):

* One gate before any byte moves: `kvplan.lowering.check_transfer` (or
  `check_descriptors` for a prepared descriptor list): rows inside registered memory
  on both sides, and a Transfer lowered from a plan this backend prepared, for this
  backend's rank. A backend knows its rank from ``register(buffers, rank=r)`` (its
  decode rank, or the prefill rank it serves as), else from its first
  ``execute(prepared)`` (the Prepared's decode rank) or ``serve(..., rank=r)``; after
  that, work for another rank raises `kvplan.PlanMismatchError`, and so does a Transfer
  whose `plan_fingerprint` is none of the plans it prepared. Metadata carries the rank,
  so ``add_peer(rank, md)`` refuses the metadata of another rank.
* Backends own what they use: a registration keeps its buffers alive; a peer in the
  same process is reached through its live registration, so reading a peer that closed
  raises `TransportError` instead of touching freed memory, and closing waits for reads
  in flight. ``close()`` is idempotent and never leaves a transport library's exception
  raw; after it every call raises `TransportError`.
* Transport failures (a library call failed, a peer died, a message of the wrong
  length, a timeout) raise `TransportError` subclasses naming the peer, the request and
  the rows; the backend stays usable for its other peers.

Integrity mode (opt-in, off by default): ``serve(..., check=True)`` returns a
`Completion` whose ``digests`` are the source's `kvplan.lowering.range_digests` of its
rows, taken after its pre steps; ship them to the decode rank like metadata and pass
them as ``execute(..., check=digests)``: after the copy the destination digests its
ranges and raises `TransferIntegrityError` naming the rows that differ.
``execute(..., check=True)`` takes the digests itself where it can (sources in this
process; `ucx` sends them with the data).

>>> sorted(known_backends())[:2]
['cupy', 'host']
"""

from __future__ import annotations

import inspect
from typing import Protocol, Sequence, runtime_checkable

import attrs

from .errors import KvplanError, SpecError
from .lowering.transfer import Transfer
from .planning.ranges import consecutive_runs

GROUP = "kvplan.backends"

# How to install each backend's library without pulling torch (README, Transports).
INSTALL_HINTS = {
    "nixl": "pip install --no-deps 'nixl==1.5.1' 'nixl-cu13==1.5.1'",
    "ucx": "pip install 'ucxx-cu13==0.52.*'",
    "cupy": "pip install cupy-cuda13x",
}


class TransportError(RuntimeError):
    """A transport failed to move a transfer's bytes (a peer died, a library call
    failed, a message had the wrong length, a transport was misused). Names the peer,
    the request and, where known, the rows (indices into the Transfer) it concerned.

    >>> str(TransportError("NIXL_ERR_BACKEND", peer="rank 1 (agent 'p1')", request="req-7", rows=range(12)))
    "NIXL_ERR_BACKEND [peer rank 1 (agent 'p1'), request 'req-7', rows 0-11 (12)]"
    """

    def __init__(self, message: str, *, peer: str | None = None, request: str | None = None, rows=None):
        self.rows = None if rows is None else tuple(int(r) for r in rows)
        where = ", ".join(part for part in (
            f"peer {peer}" if peer is not None else "",
            f"request {request!r}" if request is not None else "",
            f"rows {rows_text(self.rows)}" if self.rows else "") if part)
        super().__init__(f"{message} [{where}]" if where else message)
        self.peer = peer
        self.request = request


def rows_text(rows) -> str:
    """Row indices for a message: ranges of consecutive rows, at most 8 items, and the
    count when there is more than one row.

    >>> rows_text([3]), rows_text([0, 1, 2, 7, 9, 10]), rows_text(range(0, 40, 2))
    ('3', '0-2, 7, 9-10 (6)', '0, 2, 4, 6, 8, 10, 12, 14, ... (20)')
    """
    rows = [int(r) for r in rows]
    items = [f"{a}" if a == b else f"{a}-{b}" for a, b in consecutive_runs(rows)]
    text = ", ".join(items[:8]) + (", ..." if len(items) > 8 else "")
    return text if len(rows) == 1 else f"{text} ({len(rows)})"


class TransportTimeout(TransportError):
    """A transfer did not complete within the backend's `timeout_s`."""


class TransferIntegrityError(TransportError):
    """Integrity mode found copied ranges whose destination bytes differ from the source
    bytes (`kvplan.lowering.range_digests`); `rows` lists them (row indices of the
    Transfer executed; for a `Prepared`, of the Transfer its request lowers to).

    >>> error = TransferIntegrityError("1 of 4 rows differ", rows=[2], peer="rank 1", request="r1")
    >>> error.rows, str(error)
    ((2,), "1 of 4 rows differ [peer rank 1, request 'r1', rows 2]")
    """

    def __init__(self, message: str, *, rows=(), peer: str | None = None, request: str | None = None):
        super().__init__(message, peer=peer, request=request, rows=rows)


class BackendNotFound(KvplanError):
    """`load_backend` was given a name no installed backend has, or its library is missing."""


@attrs.frozen(eq=False, kw_only=True)
class Prepared:
    """A plan prepared by one backend for one decode rank (`Transport.prepare`):
    what `execute` and `serve` take per request. `state` is the backend's own
    (descriptor handles, an uploaded copy template) and opaque to callers."""

    plan: object
    dst_rank: int
    backend: str
    state: object = attrs.field(default=None, repr=False)


@attrs.frozen(kw_only=True)
class PeerCard:
    """What ``fetch_peer(address)`` learned of a rank of the other engine through the
    transport's own listener: its `rank`, the `engine` it registered memory for and
    that engine's `fingerprint` (both None if it published no engine), and the
    `metadata` bytes ``add_peer(card.rank, card.metadata)`` takes. A card whose engine
    does not give its fingerprint here, or whose registered memory is smaller than its
    engine needs, is refused before it is returned.

    >>> PeerCard(address="ucx://10.0.0.5:41231", rank=1, engine=None, fingerprint=None, metadata=b"{}")
    PeerCard(address='ucx://10.0.0.5:41231', rank=1, fingerprint=None)
    """

    address: str
    rank: int | None
    engine: object = attrs.field(repr=False)  # an EngineSpec's repr runs to thousands of characters
    fingerprint: str | None
    metadata: bytes = attrs.field(repr=False)


@runtime_checkable
class Completion(Protocol):
    """Something a backend started and a caller may wait for. A backend's completions
    also carry ``digests``: with ``serve(..., check=True)``, ``{source rank: uint64
    array}``, the source's digest of each of its rows of the request's Transfer in row
    order (what ``execute(..., check=...)`` takes, merged over the source ranks); None
    otherwise. Only ``wait`` is required of a Completion."""

    def wait(self, timeout_s: float | None = None) -> None: ...


@runtime_checkable
class Transport(Protocol):
    """One rank's endpoint of a transport (see the module docstring)."""

    name: str

    def register(self, buffers: Sequence[object | None], *, rank: int | None = None) -> None:
        """This rank's memory: one contiguous buffer per region (None where the rank
        holds none, e.g. another pipeline stage's layers), then scratch buffers; NumPy,
        CuPy or anything with ``__array_interface__`` / ``__cuda_array_interface__``.
        The backend keeps them alive until `close`. `rank`: this backend's rank in its
        engine (the decode rank it executes for, or the prefill rank it serves as);
        work for another rank is refused (learned from the first execute / serve when
        not given)."""

    def metadata(self) -> bytes:
        """What a peer needs to reach this rank's registered memory."""

    def add_peer(self, rank: int, metadata: bytes) -> None:
        """Learn peer `rank` (a rank of the other engine) from its `metadata()` (or a
        fetched `PeerCard`'s)."""

    def publish(self, engine=None, *, host: str) -> str:
        """Serve this rank's card (its metadata, `engine` and the engine's fingerprint)
        to peers on other hosts through the transport's own listener; returns the
        address they pass to `fetch_peer`. Once, after `register`."""

    def fetch_peer(self, address: str) -> PeerCard:
        """The card a rank of the other engine published at `address` (its
        `publish`), checked; pass ``card.metadata`` to `add_peer`."""

    def prepare(self, plan, dst_rank: int) -> Prepared:
        """Prepare `plan`'s reads of decode rank `dst_rank` once."""

    def execute(self, work: Transfer | Prepared, src_blocks=None, dst_blocks=None, *, prefix: str = "exact",
                request: str = "", check=False) -> None:
        """Move a request into this (destination) rank's memory: a prepared plan with
        the request's block ids, or a lowered `Transfer`. `check` (integrity mode):
        False; the source ranks' ``Completion.digests`` (one mapping, or a sequence of
        mappings / Completions); or True, digests the backend obtains itself."""

    def serve(self, work: Transfer | Prepared, src_blocks=None, dst_blocks=None, *, rank: int,
              prefix: str = "exact", request: str = "", check: bool = False) -> Completion:
        """Source rank `rank`'s part of a request (see the module docstring); with
        `check`, the Completion carries the digests of this rank's rows."""

    def copy_local(self, transfer: Transfer) -> None:
        """Rows whose source and destination are this rank's registered buffers."""

    def close(self) -> None:
        """Release every registration, peer and handle; idempotent, and bounded in
        time (reads of this rank's memory in flight are waited for, pending sends are
        drained, then cancelled)."""


def known_backends() -> dict[str, object]:
    """Installed backends by name (entry points, not yet imported)."""
    from importlib.metadata import entry_points  # here, so `import kvplan` stays light

    return {ep.name: ep for ep in entry_points(group=GROUP)}


def load_backend(name: str, **options) -> Transport:
    """Construct the backend registered under `name` with `options`.

    >>> load_backend("carrier-pigeon")
    Traceback (most recent call last):
    ...
    kvplan.transport.BackendNotFound: no kvplan backend named 'carrier-pigeon'; installed: cupy, host, nixl, ucx
    """
    found = known_backends()
    if name not in found:
        raise BackendNotFound(f"no kvplan backend named {name!r}; installed: {', '.join(sorted(found)) or 'none'}")
    try:
        factory = found[name].load()
        try:  # an unknown option is the caller's mistake: say which options the backend takes
            inspect.signature(factory).bind(**options)
        except TypeError:
            takes = [p for p in inspect.signature(factory).parameters if p != "self"]
            unknown = sorted(set(options) - set(takes))
            raise SpecError(f"backend {name!r} takes the options {', '.join(takes) or 'none'}; got "
                                  f"{', '.join(unknown) or ', '.join(sorted(options))}"[:300]) from None
        return factory(**options)
    except ImportError as error:
        hint = INSTALL_HINTS.get(name)
        hint = f"; install it with: {hint} (README, Transports)" if hint else ""
        raise BackendNotFound(f"backend {name!r} cannot import its transport ({error}){hint}") from error
