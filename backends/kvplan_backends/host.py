"""`host`: NumPy (host memory) buffers in one process; the reference backend.

>>> import numpy as np
>>> from kvplan import Transfer
>>> src, dst = HostBackend(), HostBackend()
>>> a, b = np.arange(16, dtype=np.uint8), np.zeros(8, np.uint8)
>>> src.register([a]); dst.register([b])
>>> dst.add_peer(1, src.metadata())
>>> dst.execute(Transfer(0, [1], [0], [4], [0], [2], [3]))
>>> b.tolist()
[0, 0, 4, 5, 6, 0, 0, 0]
"""

from __future__ import annotations

import os

from kvplan.transport import TransportError

from ._base import BackendBase
from ._hostcopy import copy_ranges


class HostBackend(BackendBase):
    name = "host"

    def register(self, buffers) -> None:
        super().register(buffers)
        if any(d != -1 for d, s in zip(self.memory.devices, self.memory.sizes) if s):
            raise TransportError("host backend takes host (NumPy) buffers only; use cupy, nixl or ucx for GPU memory")

    def _connect(self, rank: int, info: dict, blob: bytes) -> None:
        if info["pid"] != os.getpid():
            raise TransportError(f"host backend peers must live in this process (pid {os.getpid()}), "
                                 f"got pid {info['pid']}", peer=f"rank {rank}")

    def execute(self, transfer, *, request: str = "") -> None:
        src, dst = self._bind_remote(transfer)
        copy_ranges(src, dst, transfer.nbytes)
        self._post_steps(transfer)

    def copy_local(self, transfer) -> None:
        src, dst = self._bind_local(transfer)
        copy_ranges(src, dst, transfer.nbytes)
