"""`host`: NumPy (host memory) buffers in one process; the reference backend.

Reads are `memmove`s of bound, bounds-checked ranges; a prepared plan is lowered per
request (`kvplan.lowering.lower`), which is what every faster route is tested against.

>>> import numpy as np
>>> from kvplan import AttentionSpec, EngineSpec, ModelSpec, Transfer, plan
>>> src, dst = HostBackend(), HostBackend()
>>> a, b = np.arange(16, dtype=np.uint8), np.zeros(8, np.uint8)
>>> src.register([a]); dst.register([b])
>>> dst.add_peer(0, src.metadata())              # the prefill engine's rank 0
>>> dst.execute(Transfer(dst_rank=0, src_rank=[0], src_region=[0], src_offset=[4], dst_region=[0], dst_offset=[2],
...                      nbytes=[3]))
>>> b.tolist()
[0, 0, 4, 5, 6, 0, 0, 0]

A plan prepared once, then requests by block id (one 8-byte page per block here):

>>> m = ModelSpec(name="m", layers=(AttentionSpec(num_kv_heads=1, head_dim=2, dtype="float16"),))
>>> p = plan(EngineSpec(model=m, block_tokens=1, num_blocks=2), EngineSpec(model=m, block_tokens=1, num_blocks=1))
>>> prepared = dst.prepare(p, 0)
>>> dst.execute(prepared, [1], [0], request="r1")      # prefill block 1 -> decode block 0
>>> b.tolist()
[8, 9, 10, 11, 12, 13, 14, 15]
>>> src.close(); dst.close()
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

    def _read(self, transfer, request: str) -> None:
        src, dst = self._bind_remote(transfer)
        copy_ranges(src, dst, transfer.nbytes)
