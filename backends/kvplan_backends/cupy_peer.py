"""`cupy`: GPU-to-GPU copies inside one process, one kernel launch per transfer.

The kernel runs on the destination's device and reads the sources over NVLink (peer
access enabled once per device pair). Without peer access it falls back to one
`cudaMemcpyPeerAsync` per coalesced row. Copies are enqueued on `stream` (default: the
destination device's current stream); with ``blocking=False`` `execute` returns once
enqueued and later work on that stream sees the bytes.
"""

from __future__ import annotations

import os


from kvplan.backend_errors import TransportError
from kvplan.descriptors import source_ranks

from ._base import BackendBase


class CupyPeerBackend(BackendBase):
    name = "cupy"

    def __init__(self, *, stream=None, blocking: bool = True, peer_access: bool = True):
        super().__init__()
        import cupy

        from . import _gpucopy

        self._cp, self._gpu = cupy, _gpucopy
        self.stream, self.blocking, self.peer_access = stream, blocking, peer_access
        self.last_launch = {"ranges": 0, "pieces": 0, "path": None}

    def register(self, buffers) -> None:
        super().register(buffers)
        devices = {d for d, s in zip(self.memory.devices, self.memory.sizes) if s}
        if len(devices) != 1 or -1 in devices:
            raise TransportError(f"cupy backend needs every buffer on one GPU, got devices {sorted(devices)}")

    def _connect(self, rank: int, info: dict, blob: bytes) -> None:
        if info["pid"] != os.getpid():
            raise TransportError("cupy backend pairs ranks of one process; use nixl or ucx across processes",
                                 peer=f"rank {rank}")

    def _current(self, device: int):
        with self._cp.cuda.Device(device):
            return self._cp.cuda.get_current_stream()

    def execute(self, transfer, *, request: str = "") -> None:
        src, dst = self._bind_remote(transfer)
        device = self.memory.device
        peers = {self.peers[r].device for r in source_ranks(transfer).tolist()}
        direct = self.peer_access and all(self._gpu.enable_peer_access(self._cp, device, p) for p in peers)
        self._launch(device, src, dst, transfer, direct)
        self._post_steps(transfer)  # same stream: ordered after the reads

    def prepare_launch(self, transfer) -> tuple:
        """Bind and upload a transfer's ranges once; `launch(...)` then replays only the kernel."""
        src, dst = self._bind_remote(transfer)
        device = self.memory.device
        for rank in source_ranks(transfer).tolist():
            self._gpu.enable_peer_access(self._cp, device, self.peers[rank].device)
        stream = self.stream or self._current(device)
        with self._cp.cuda.Device(device), stream:
            return self._gpu.device_ranges(self._cp, device, src, dst, transfer.nbytes)

    def launch(self, ranges: tuple) -> None:
        device = self.memory.device
        self._gpu.launch(self._cp, device, ranges, self.stream or self._current(device))

    def copy_local(self, transfer) -> None:
        src, dst = self._bind_local(transfer)
        self._launch(self.memory.device, src, dst, transfer, True)

    def _launch(self, device: int, src, dst, transfer, direct: bool) -> None:
        cp, stream = self._cp, self.stream or self._current(device)
        with cp.cuda.Device(device), stream:
            if direct:
                pieces = self._gpu.copy_ranges(cp, device, src, dst, transfer.nbytes, stream)
            else:
                for rank in transfer.source_ranks:
                    rows = transfer.src_rank == rank
                    self._gpu.memcpy_peer_ranges(cp, device, self.peers[rank].device, src[rows], dst[rows],
                                                 transfer.nbytes[rows], stream)
                pieces = len(transfer)
        self.last_launch = {"ranges": len(transfer), "pieces": int(pieces), "path": "kernel" if direct else "memcpyPeer"}
        if self.blocking:
            stream.synchronize()


__all__ = ["CupyPeerBackend"]
