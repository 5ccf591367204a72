"""A prefill rank and a decode rank of one small plan, paired through a backend, every
buffer guarded by canaries (`_canary`): what the fault and integrity tests drive.

>>> r = Rig("host")
>>> r.request([0, 1], [2, 3], "r1")
>>> all((a == b).all() for a, b in zip(r.out, r.expect(([0, 1], [2, 3])))), r.canaries.damaged()
(True, [])
>>> r.close()
"""

from __future__ import annotations

import numpy as np

from kvplan import AttentionSpec, EngineSpec, ModelSpec, plan
from kvplan.transport import load_backend

from _canary import Canaries
from _fabric import sliced
from _need import need
from _pairing import allocate

OPTIONS = {"host": {}, "nixl": {"timeout_s": 20}, "ucx": {"timeout_s": 10, "drain_s": 0.2}}
MODEL = ModelSpec(name="m", layers=(AttentionSpec(num_kv_heads=2, head_dim=8),) * 2)
# one prefill rank, two decode ranks: both decode ranks' regions are the same size, so
# only the rank check tells a Transfer for decode rank 1 from one for rank 0
TP2 = plan(EngineSpec(model=MODEL, num_blocks=4), EngineSpec(model=MODEL, tp=2, num_blocks=4))
# another plan (another prefill layout) with the same region sizes: only its fingerprint differs
OTHER = plan(EngineSpec(model=MODEL, num_blocks=4, kv_layout="NHD"), EngineSpec(model=MODEL, tp=2, num_blocks=4))


class Rig:
    """Prefill rank 0 (`src`) and decode rank 0 (`dst`) of TP2, paired; buffers guarded.
    `rank`: register both with their rank (else they learn it from their first request)."""

    def __init__(self, kind: str, *, rank: bool = True):
        need(kind)
        self.kind, self.canaries = kind, Canaries()
        self.src_bytes = allocate(TP2.src, 0)
        self.out = self.canaries.buffers(allocate(TP2.dst, 0, fill=False))
        self.src, self.dst = load_backend(kind, **OPTIONS[kind]), load_backend(kind, **OPTIONS[kind])
        self.src.register(self.canaries.buffers(self.src_bytes), **({"rank": 0} if rank else {}))
        self.dst.register(self.out, **({"rank": 0} if rank else {}))
        self.dst.add_peer(0, self.src.metadata())
        self.src.add_peer(0, self.dst.metadata())
        self.prepared, self.serving = self.dst.prepare(TP2, 0), self.src.prepare(TP2, 0)

    def request(self, src_blocks, dst_blocks, name: str, *, prepared: bool = True) -> None:
        """One request through the protocol (the source serves, the destination executes)."""
        if prepared:
            done = self.src.serve(self.serving, src_blocks, dst_blocks, rank=0, request=name)
            self.dst.execute(self.prepared, src_blocks, dst_blocks, request=name)
        else:
            t = TP2.lower(0, src_blocks, dst_blocks)
            done = self.src.serve(t, rank=0, request=name)
            self.dst.execute(t, request=name)
        done.wait()

    def expect(self, *requests) -> list:
        """Decode memory after `requests` ((src_blocks, dst_blocks) pairs) by slicing."""
        return sliced(TP2, 0, list(requests))[-1]

    def assert_untouched(self, before) -> None:
        assert all(np.array_equal(a, b) for a, b in zip(self.out, before, strict=True)), "decode memory changed"
        assert self.canaries.damaged() == []

    def snapshot(self) -> list:
        return [b.copy() for b in self.out]

    def close(self) -> None:
        self.dst.close()
        self.src.close()
        assert self.dst.release_errors == [] and self.src.release_errors == []
        assert self.canaries.damaged() == []
