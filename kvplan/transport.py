"""Stage 5, transport: the protocol every backend implements, how to load one, and
transport errors.

A backend instance is one rank's endpoint of a transport. It registers that rank's
memory, pairs with peers through metadata bytes sent over any channel, then moves
bytes a plan describes, computing no offsets itself:

    backend.register(buffers)          one buffer per region of the engine (+ scratch)
    backend.add_peer(rank, md)         md = the peer backend's metadata()
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

>>> sorted(known_backends())[:2]
['cupy', 'host']
"""

from __future__ import annotations

from typing import Protocol, Sequence, runtime_checkable

import attrs

from .errors import KvplanError
from .lowering.transfer import Transfer

GROUP = "kvplan.backends"

# How to install each backend's library without pulling torch (README, Transports).
INSTALL_HINTS = {
    "nixl": "pip install --no-deps 'nixl==1.5.1' 'nixl-cu13==1.5.1'",
    "ucx": "pip install 'ucxx-cu13==0.52.*'",
    "cupy": "pip install cupy-cuda13x",
}


class TransportError(RuntimeError):
    """A transport failed to move a transfer's bytes (a peer died, a library call
    failed, a transport was misused). Names the peer and the request.

    >>> str(TransportError("NIXL_ERR_BACKEND", peer="rank 1 (agent 'p1')", request="req-7"))
    "NIXL_ERR_BACKEND [peer rank 1 (agent 'p1'), request 'req-7']"
    """

    def __init__(self, message: str, *, peer: str | None = None, request: str | None = None):
        where = ", ".join(part for part in (
            f"peer {peer}" if peer is not None else "",
            f"request {request!r}" if request is not None else "") if part)
        super().__init__(f"{message} [{where}]" if where else message)
        self.peer = peer
        self.request = request


class TransportTimeout(TransportError):
    """A transfer did not complete within the backend's `timeout_s`."""


class TransferIntegrityError(TransportError):
    """Integrity mode found copied ranges whose destination bytes differ from the source
    bytes (`kvplan.lowering.range_digests`); `rows` lists them (row indices of the
    Transfer executed)."""

    def __init__(self, message: str, *, rows=(), peer: str | None = None, request: str | None = None):
        super().__init__(message, peer=peer, request=request)
        self.rows = tuple(int(r) for r in rows)


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


@runtime_checkable
class Completion(Protocol):
    """Something a backend started and a caller may wait for."""

    def wait(self, timeout_s: float | None = None) -> None: ...


@runtime_checkable
class Transport(Protocol):
    """One rank's endpoint of a transport (see the module docstring)."""

    name: str

    def register(self, buffers: Sequence[object | None]) -> None:
        """This rank's memory: one contiguous buffer per region (None where the rank
        holds none, e.g. another pipeline stage's layers), then scratch buffers; NumPy,
        CuPy or anything with ``__array_interface__`` / ``__cuda_array_interface__``."""

    def metadata(self) -> bytes:
        """What a peer needs to reach this rank's registered memory."""

    def add_peer(self, rank: int, metadata: bytes) -> None:
        """Learn peer `rank` (a rank of the other engine) from its `metadata()`."""

    def prepare(self, plan, dst_rank: int) -> Prepared:
        """Prepare `plan`'s reads of decode rank `dst_rank` once."""

    def execute(self, work: Transfer | Prepared, src_blocks=None, dst_blocks=None, *, prefix: str = "exact",
                request: str = "") -> None:
        """Move a request into this (destination) rank's memory: a prepared plan with
        the request's block ids, or a lowered `Transfer`."""

    def serve(self, work: Transfer | Prepared, src_blocks=None, dst_blocks=None, *, rank: int,
              prefix: str = "exact", request: str = "") -> Completion:
        """Source rank `rank`'s part of a request (see the module docstring)."""

    def copy_local(self, transfer: Transfer) -> None:
        """Rows whose source and destination are this rank's registered buffers."""

    def close(self) -> None:
        """Release every registration, peer and handle."""


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
        return found[name].load()(**options)
    except ImportError as error:
        hint = INSTALL_HINTS.get(name)
        hint = f"; install it with: {hint} (README, Transports)" if hint else ""
        raise BackendNotFound(f"backend {name!r} cannot import its transport ({error}){hint}") from error
