"""`ucx`: two-sided transfers through ucxx (tag send / receive), host or CUDA memory.

ucxx has no one-sided RMA from Python, so a source rank `serve`s: it packs the ranges
a destination needs from it into one staging buffer (NumPy on host, one kernel on a
GPU; offsets from `kvplan.lowering.staged`) and sends it with a tag derived from the
request; the destination's `execute` receives one buffer per source rank and unpacks
it. With a `Prepared`, both sides lower the request from its block ids (only block ids
travel between them). Each backend owns a UCX worker with a progress thread, so sends
and receives of several ranks in one thread (tests) or in separate processes both
complete. `metadata()` carries the worker address.

>>> import numpy as np
>>> from kvplan import Transfer
>>> prefill, decode = UcxBackend(timeout_s=10), UcxBackend(timeout_s=10)
>>> prefill.register([np.arange(16, dtype=np.uint8)]); decode.register([out := np.zeros(4, np.uint8)])
>>> decode.add_peer(1, prefill.metadata()); prefill.add_peer(0, decode.metadata())
>>> t = Transfer(dst_rank=0, src_rank=[1, 1], src_region=[0, 0], src_offset=[9, 2], dst_region=[0, 0],
...              dst_offset=[0, 2], nbytes=[2, 2])
>>> sent = prefill.serve(t, rank=1, request="r1")     # packs [9, 10, 2, 3] and sends it
>>> decode.execute(t, request="r1"); sent.wait()
>>> out.tolist()
[9, 10, 2, 3]
>>> decode.close(); prefill.close()
"""

from __future__ import annotations

import hashlib
import time

from kvplan.lowering import staged
from kvplan.transport import TransportError, TransportTimeout

from . import _local
from ._base import BackendBase
from ._memory import describe


def _tag(request: str, src_rank: int, dst_rank: int) -> int:
    digest = hashlib.blake2b(f"{request}\0{src_rank}\0{dst_rank}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little")


class _Pending:
    """UCX requests plus the staging buffers they use, waited for with a timeout."""

    def __init__(self, requests, buffers, peer: str, request: str, timeout_s: float, abandoned: list):
        self.requests, self.buffers = requests, buffers
        self.peer, self.request, self.timeout_s, self._abandoned = peer, request, timeout_s, abandoned

    def wait(self, timeout_s: float | None = None) -> None:
        deadline = time.monotonic() + (self.timeout_s if timeout_s is None else timeout_s)
        while not all(r.completed for r in self.requests):
            if time.monotonic() > deadline:
                # UCX may still write into the buffers: keep them alive until close().
                self._abandoned.append((self.requests, self.buffers))
                raise TransportTimeout(f"UCX tag transfer not complete after {self.timeout_s} s",
                                       peer=self.peer, request=self.request)
            time.sleep(0)
        for r in self.requests:
            try:
                r.check_error()
            except Exception as error:  # ucxx raises UCX* exceptions
                raise TransportError(f"UCX transfer failed: {type(error).__name__}: {error}", peer=self.peer,
                                     request=self.request) from error


class UcxBackend(BackendBase):
    name = "ucx"
    sends = True

    def __init__(self, *, timeout_s: float = 30.0):
        super().__init__()
        from ucxx._lib import libucxx
        from ucxx._lib.arr import Array

        self._u, self._array = libucxx, Array
        self.timeout_s = timeout_s
        self._context = libucxx.UCXContext({}, feature_flags=(libucxx.Feature.TAG, libucxx.Feature.WAKEUP))
        self._worker = libucxx.UCXWorker(self._context)
        self._endpoints: dict[int, object] = {}
        self._addresses: dict[int, bytes] = {}
        self._abandoned: list = []
        self._progress = False
        self.last_stats: dict = {}

    def register(self, buffers) -> None:
        super().register(buffers)
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

    def _endpoint(self, rank: int):
        if rank not in self._endpoints:
            if rank not in self._addresses:
                raise TransportError(f"destination rank {rank} was never added with add_peer", peer=f"rank {rank}")
            address = self._u.UCXAddress.create_from_buffer(self._addresses[rank])
            self._endpoints[rank] = self._u.UCXEndpoint.create_from_worker_address(self._worker, address, True)
        return self._endpoints[rank]

    def _send(self, transfer, rank: int, request: str) -> _Pending:
        parts = staged(transfer)
        if rank not in parts:
            return _Pending([], [], f"rank {transfer.dst_rank}", request, self.timeout_s, self._abandoned)
        part, device = parts[rank], self._own().device
        start = time.perf_counter()
        buffer = _local.empty(device, part.nbytes)
        src, dst = self._bind_local(part.pack, dst_extra=describe([buffer]))
        _local.copy_ranges(device, src, dst, part.pack.nbytes)
        self.last_stats = {"pack_s": time.perf_counter() - start, "ranges": len(part.pack), "bytes": part.nbytes}
        tag = self._u.UCXXTag(_tag(request, rank, transfer.dst_rank))
        send = self._endpoint(transfer.dst_rank).tag_send(self._array(buffer), tag)
        return _Pending([send], [buffer], f"rank {transfer.dst_rank}", request, self.timeout_s, self._abandoned)

    def _read(self, transfer, request: str) -> None:
        own = self._own()
        self._bind_remote(transfer)  # checks peers and bounds before anything is posted
        receives = {}
        for rank, part in staged(transfer).items():
            buffer = _local.empty(own.device, part.nbytes)
            tag = self._u.UCXXTag(_tag(request, rank, transfer.dst_rank))
            receives[rank] = (part, buffer, self._worker.tag_recv(self._array(buffer), tag))
        deadline = time.monotonic() + self.timeout_s
        self.last_stats = {"wait_s": 0.0, "unpack_s": 0.0, "messages": len(receives)}
        try:
            for rank in list(receives):
                part, buffer, recv = receives[rank]
                start = time.perf_counter()
                left = max(deadline - time.monotonic(), 0.0)
                _Pending([recv], [buffer], f"rank {rank}", request, self.timeout_s, []).wait(left)
                del receives[rank]
                middle = time.perf_counter()
                src, dst = self._bind_local(part.unpack, src_extra=describe([buffer]))
                _local.copy_ranges(own.device, src, dst, part.unpack.nbytes)
                self.last_stats["wait_s"] += middle - start
                self.last_stats["unpack_s"] += time.perf_counter() - middle
        finally:
            # Receives still posted may be written later: keep their buffers until close().
            self._abandoned.extend((recv, buffer) for _, buffer, recv in receives.values())

    def close(self) -> None:
        super().close()
        for endpoint in self._endpoints.values():
            endpoint.close()
        self._endpoints.clear()
        if self._progress:
            self._worker.stop_progress_thread()
            self._progress = False
        self._abandoned.clear()
