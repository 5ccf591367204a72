"""`host`: NumPy (host memory) buffers in one process; the reference backend.

Reads are `memmove`s of ranges that passed the gate (`kvplan.lowering.check_transfer`);
a prepared plan is lowered per request (`kvplan.lowering.lower`), which is what every
faster route is tested against. Peers are held by their live registration, so a source
that closed is refused rather than read, and one closing mid-read waits for the read.

>>> import numpy as np
>>> from kvplan import AttentionSpec, EngineSpec, ModelSpec, Transfer, plan
>>> src, dst = HostBackend(), HostBackend()
>>> a, b = np.arange(16, dtype=np.uint8), np.zeros(8, np.uint8)
>>> src.register([a], rank=0); dst.register([b], rank=0)
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

Integrity mode: the source digests its rows, the destination compares after the copy:

>>> digests = src.serve(src.prepare(p, 0), [0], [0], rank=0, request="r2", check=True).digests
>>> dst.execute(prepared, [0], [0], request="r2", check=digests)
>>> b.tolist()
[0, 1, 2, 3, 4, 5, 6, 7]
>>> src.close(); dst.close()
"""

from __future__ import annotations

from kvplan.transport import TransportError

from ._base import BackendBase
from ._hostcopy import copy_ranges


class HostBackend(BackendBase):
    name = "host"

    def _check_memory(self, memory) -> None:
        if any(d != -1 for d, s in zip(memory.devices, memory.sizes) if s):
            raise TransportError("host backend takes host (NumPy) buffers only; use cupy, nixl or ucx for GPU memory")

    def _connect(self, rank: int, info: dict, blob: bytes) -> None:
        self._in_process(rank, info)

    def _read(self, transfer, request: str) -> None:
        src, dst = self._bind_remote(transfer)
        copy_ranges(src, dst, transfer.nbytes)
