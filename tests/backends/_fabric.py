"""Run one request through a backend, all ranks in this process, host memory."""

from __future__ import annotations

from kvplan.backend import load_backend
from kvplan_backends.pairing import allocate

KINDS = {"host": ("host", {}), "nixl": ("nixl", {}), "nixl-prepared": ("nixl", {}), "ucx": ("ucx", {"timeout_s": 20})}


def run(kind: str, p, dst_rank: int, src_blocks, dst_blocks, *, request: str = "req-0") -> list:
    """Execute the request with backend `kind`; returns the decode rank's buffers."""
    name, options = KINDS[kind]
    transfer = p.lower(dst_rank, src_blocks, dst_blocks)
    dst_buffers = allocate(p.dst, dst_rank, fill=False)
    backends = []
    try:
        dst = load_backend(name, **options)
        backends.append(dst)
        dst.register(dst_buffers)
        sources = {}
        for rank in transfer.source_ranks:
            sources[rank] = load_backend(name, **options)
            backends.append(sources[rank])
            sources[rank].register(allocate(p.src, rank))
            dst.add_peer(rank, sources[rank].metadata())
            sources[rank].add_peer(dst_rank, dst.metadata())
        served = [b.serve(transfer, rank=r, request=request) for r, b in sources.items()]
        if kind == "nixl-prepared":
            dst.prepare(p, dst_rank)
            dst.execute_blocks(p, src_blocks, dst_blocks, request=request)
        else:
            dst.execute(transfer, request=request)
        for completion in served:
            completion.wait()
    finally:
        for backend in backends:
            backend.close()
    return dst_buffers
