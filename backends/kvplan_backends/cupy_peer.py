"""`cupy`: GPU-to-GPU copies inside one process, one kernel launch per transfer.

The kernel runs on the destination's device and reads the sources over NVLink (peer
access enabled once per device pair). Without peer access it falls back to one
`cudaMemcpyPeerAsync` per coalesced row. Copies are enqueued on `stream` (default: the
destination device's current stream); with ``blocking=False`` `execute` returns once
enqueued and later work on that stream sees the bytes.
"""

from __future__ import annotations

import os


from kvplan.transport import TransportError
from kvplan.lowering import source_ranks
from kvplan.lowering import copy_template, request_blocks
from kvplan.lowering import Transfer

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
        self._templates: dict = {}

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

    def execute_request(self, plan, dst_rank: int, src_blocks, dst_blocks, *, prefix: str = "exact",
                        request: str = "") -> None:
        """Copy one request by evaluating the plan's copy template on the GPU.

        The template (`kvplan.lowering.copy_template`) is uploaded once per plan and
        decode rank; per request only the block ids travel, so the host does O(blocks)
        work instead of O(rows). Plans with local steps (staged, permuted) take
        ``execute(plan.lower(...))``.
        """
        if plan.pre_tables or plan.post_tables:
            self.execute(plan.lower(dst_rank, src_blocks, dst_blocks, prefix=prefix), request=request)
            return
        device = self.memory.device
        key = (id(plan), dst_rank)
        if key not in self._templates:
            template = copy_template(plan, dst_rank, max_piece_bytes=self._gpu.TEMPLATE_PIECE_BYTES)
            zero = [0] * len(template)
            entries = Transfer(dst_rank=dst_rank, src_rank=template.src_rank, src_region=template.src_region,
                               src_offset=zero, dst_region=template.dst_region, dst_offset=zero,
                               nbytes=template.nbytes)
            src_base, dst_base = self._bind_remote(entries)
            for rank in source_ranks(entries).tolist():
                if not self._gpu.enable_peer_access(self._cp, device, self.peers[rank].device):
                    raise TransportError("execute_request needs peer access; use execute(plan.lower(...))",
                                         peer=f"rank {rank}", request=request)
            # the plan is kept with its upload so its id cannot be reused while cached
            self._templates[key] = (plan, template, self._gpu.upload_template(
                self._cp, device, template, src_base, dst_base, self.stream or self._current(device)))
        _, template, uploaded = self._templates[key]
        blocks = request_blocks(plan, dst_rank, src_blocks, dst_blocks, prefix=prefix)
        stream = self.stream or self._current(device)
        copies = self._gpu.launch_template(self._cp, device, uploaded, template, blocks, stream)
        self.last_launch = {"ranges": copies, "pieces": copies, "path": "template"}
        if self.blocking:
            stream.synchronize()

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
