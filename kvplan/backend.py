"""What a transport backend is (typing only) and how to load one by name.

A backend instance is one rank's endpoint: it registers that rank's memory (one buffer
per region of the engine's region table, in order; extra buffers after them are
staging regions), exports `metadata()` bytes, learns its peers from theirs with
`add_peer(rank, metadata)`, and moves the rows of a `kvplan.Transfer`:

* on the decode side, `execute(transfer)` pulls every row into this rank's memory;
* on the prefill side, `serve(transfer, rank=r)` does what a two-sided transport needs
  from source rank `r` (pack and send); one-sided transports return at once;
* `copy_local(transfer)` runs local steps: rows whose source and destination are both
  this rank's registered memory (staging and permutation steps of a plan).

Backends compute no offsets: absolute addresses come from `Transfer.bind` and the
pure helpers of `kvplan.descriptors`. Nothing here imports a transport: backends are
found through the ``kvplan.backends`` entry-point group and imported on first use.

>>> sorted(known_backends())[:2]
['cupy', 'host']
"""

from __future__ import annotations

from typing import Protocol, Sequence, runtime_checkable

from .backend_errors import BackendNotFound
from .transfer import Transfer

GROUP = "kvplan.backends"

# The extra (pyproject optional-dependencies) that brings each backend's library.
EXTRAS = {"nixl": "nixl", "ucx": "ucxx-cu13", "cupy": "cupy-cuda13x"}


@runtime_checkable
class Completion(Protocol):
    """Something a backend started and a caller may wait for."""

    def wait(self, timeout_s: float | None = None) -> None: ...


@runtime_checkable
class TransferBackend(Protocol):
    """One rank's endpoint of a transport (see the module docstring)."""

    name: str

    def register(self, buffers: Sequence[object | None]) -> None:
        """This rank's memory: one contiguous buffer per region (None where the rank
        holds none, e.g. another pipeline stage's layers); NumPy, CuPy or anything with
        ``__array_interface__`` / ``__cuda_array_interface__``."""

    def metadata(self) -> bytes:
        """What a peer needs to reach this rank's registered memory."""

    def add_peer(self, rank: int, metadata: bytes) -> None:
        """Learn peer `rank` (a rank of the other engine) from its `metadata()`."""

    def execute(self, transfer: Transfer, *, request: str = "") -> None:
        """Move every row of `transfer` into this (destination) rank's memory."""

    def serve(self, transfer: Transfer, *, rank: int, request: str = "") -> Completion:
        """Source rank `rank`'s part of `transfer` (two-sided transports only)."""

    def copy_local(self, transfer: Transfer) -> None:
        """Rows whose source and destination are this rank's registered buffers."""

    def close(self) -> None:
        """Release every registration, peer and handle."""


def known_backends() -> dict[str, object]:
    """Installed backends by name (entry points, not yet imported)."""
    from importlib.metadata import entry_points  # here, so `import kvplan` stays light

    return {ep.name: ep for ep in entry_points(group=GROUP)}


def load_backend(name: str, **options) -> TransferBackend:
    """Construct the backend registered under `name` with `options`.

    >>> load_backend("carrier-pigeon")
    Traceback (most recent call last):
    ...
    kvplan.backend_errors.BackendNotFound: no kvplan backend named 'carrier-pigeon'; installed: cupy, host, nixl, ucx
    """
    found = known_backends()
    if name not in found:
        raise BackendNotFound(f"no kvplan backend named {name!r}; installed: {', '.join(sorted(found)) or 'none'}")
    try:
        return found[name].load()(**options)
    except ImportError as error:
        extra = EXTRAS.get(name)
        hint = f"; install it with: pip install 'kvplan[{extra}]' (docs/backends.md)" if extra else ""
        raise BackendNotFound(f"backend {name!r} cannot import its transport ({error}){hint}") from error
