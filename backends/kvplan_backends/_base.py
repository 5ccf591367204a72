"""What every backend shares: registered memory, peers, bounds checks, closing."""

from __future__ import annotations

import os

from kvplan.transport import TransportError
from kvplan.lowering import check_bounds, source_ranks

from ._memory import Memory, describe, pack_metadata, unpack_metadata


class Done:
    """A `Completion` that is already complete (one-sided transports serve nothing)."""

    def wait(self, timeout_s: float | None = None) -> None:
        return None


class BackendBase:
    """Registration, metadata envelope and peers; subclasses move the bytes."""

    name = "base"

    def __init__(self):
        self.memory: Memory | None = None
        self.peers: dict[int, Memory] = {}
        self._peer_info: dict[int, dict] = {}

    # -- memory and peers -------------------------------------------------------------
    def register(self, buffers) -> None:
        if self.memory is not None:
            raise TransportError(f"{self.name} backend already has registered memory; use a new backend")
        self.memory = describe(buffers)
        self._buffers = list(buffers)  # keep them alive while registered

    def metadata(self) -> bytes:
        return pack_metadata(self.name, self._own(), pid=os.getpid(), **self._metadata_fields())

    def add_peer(self, rank: int, metadata: bytes) -> None:
        info, memory, blob = unpack_metadata(self.name, metadata)
        self._connect(rank, info, blob)
        self.peers[rank] = memory
        self._peer_info[rank] = info

    def _metadata_fields(self) -> dict:
        return {}

    def _connect(self, rank: int, info: dict, blob: bytes) -> None:
        """Transport-specific part of `add_peer`."""

    def _own(self) -> Memory:
        if self.memory is None:
            raise TransportError(f"{self.name} backend: register() this rank's buffers first")
        return self.memory

    # -- bound addresses ---------------------------------------------------------------
    def _bind_remote(self, transfer):
        own, ranks = self._own(), source_ranks(transfer).tolist()
        missing = [r for r in ranks if r not in self.peers]
        if missing:
            raise TransportError(f"transfer reads from rank(s) {missing} that were never added with add_peer",
                                 peer=f"rank {missing[0]}")
        check_bounds(transfer, {r: self.peers[r].sizes for r in ranks}, own.sizes)
        return transfer.bind({r: self.peers[r].bases for r in ranks}, own.bases)

    def _bind_local(self, transfer, src_extra=(), dst_extra=()):
        """Addresses of a local step: both sides in this rank's buffers (plus extra
        buffers, e.g. a staging buffer, described by `Memory`)."""
        src = self._own() if not src_extra else src_extra
        dst = self._own() if not dst_extra else dst_extra
        ranks = source_ranks(transfer).tolist()
        check_bounds(transfer, {r: src.sizes for r in ranks}, dst.sizes)
        return transfer.bind({r: src.bases for r in ranks}, dst.bases)

    # -- local steps of staged / permuted strategies -----------------------------------
    def _pre_steps(self, transfer, rank: int) -> None:
        """Source rank `rank`'s local copies that must precede the reads."""
        steps = getattr(transfer, "pre_steps", None)
        if steps is not None and len(steps):
            mine = steps.for_source(rank)
            if len(mine):
                self.copy_local(mine)

    def _post_steps(self, transfer) -> None:
        """The destination's local copies after the reads."""
        steps = getattr(transfer, "post_steps", None)
        if steps is not None and len(steps):
            self.copy_local(steps)

    def serve(self, transfer, *, rank: int, request: str = ""):
        """One-sided transports: run this rank's pre steps; the reads need nothing more."""
        self._pre_steps(transfer, rank)
        return Done()

    def close(self) -> None:
        self.peers.clear()
        self._buffers = []

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
