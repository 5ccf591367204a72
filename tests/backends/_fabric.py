"""Run one request through a backend, all ranks in this process, host memory."""

from __future__ import annotations

import numpy as np

from kvplan.transport import load_backend
from kvplan_backends.pairing import allocate


def scratch(p, src_blocks) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Sizes of the per-request scratch buffers (prefill side, decode side): a scratch
    region holds block_bytes per state block of the request."""
    nested = bool(src_blocks) and isinstance(src_blocks[0], (list, tuple))
    states = max((len(b) for g, b in enumerate(src_blocks) if not p.src.group_is_token(g)), default=0) \
        if nested else 0
    return (tuple(r.block_bytes * states for r in p.src_scratch),
            tuple(r.block_bytes * states for r in p.dst_scratch))


KINDS = {"host": ("host", {}), "nixl": ("nixl", {}), "nixl-prepared": ("nixl", {}), "ucx": ("ucx", {"timeout_s": 20})}


def run(kind: str, p, dst_rank: int, src_blocks, dst_blocks, *, request: str = "req-0") -> list:
    """Execute the request with backend `kind`; returns the decode rank's buffers."""
    name, options = KINDS[kind]
    transfer = p.lower(dst_rank, src_blocks, dst_blocks)
    src_extra, dst_extra = scratch(p, src_blocks)
    dst_buffers = allocate(p.dst, dst_rank, fill=False, extra=dst_extra)
    backends = []
    try:
        dst = load_backend(name, **options)
        backends.append(dst)
        dst.register(dst_buffers)
        sources = {}
        pre = transfer.pre_steps.source_ranks if transfer.pre_steps is not None else ()
        for rank in sorted(set(transfer.source_ranks) | set(pre)):
            sources[rank] = load_backend(name, **options)
            backends.append(sources[rank])
            sources[rank].register(allocate(p.src, rank, extra=src_extra))
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


def same(a, b) -> bool:
    """Two lists of region buffers (None for absent regions) hold the same bytes."""
    return all((x is None and y is None) or np.array_equal(np.asarray(x), np.asarray(y))
               for x, y in zip(a, b, strict=True))


def copy_rows(rows, src_of, dst) -> None:
    """Plain slicing, row by row (the reference): `src_of(rank)` gives a rank's buffers."""
    for i in range(len(rows)):
        s, d, n = int(rows.src_offset[i]), int(rows.dst_offset[i]), int(rows.nbytes[i])
        dst[rows.dst_region[i]][d:d + n] = src_of(int(rows.src_rank[i]))[rows.src_region[i]][s:s + n]
