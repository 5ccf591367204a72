"""Sessions of requests run through a backend (all ranks in this process, host memory),
and the plain-slicing reference they are compared with.

A session is one plan, one decode rank and several requests. `run` drives a backend
through the protocol as a serving loop would: every rank prepares the plan once, then
each request is served and executed with the same `Prepared`; after that, on zeroed
decode memory, each request's lowered `Transfer` goes through plain `execute`. The
prefill ranks live in this process (`LocalSources`) or in a spawned one
(`_pairing.SourceProcess`, the same interface).
"""

from __future__ import annotations

import attrs
import numpy as np
from hypothesis import strategies as st

from kvplan import plan
from kvplan.lowering import ring_buffer_bytes, scratch_buffer_bytes
from kvplan.testing.strategies import BLOCKS, exchanges, group_requests, hybrid_exchanges, requests
from kvplan.transport import load_backend

from _pairing import SourceProcess, allocate, listening, meet

OPTIONS = {"host": {}, "nixl": {}, "ucx": {"timeout_s": 20}}
REQUESTS = 3  # per session: the first from the exchange, the rest drawn for the same plan


@st.composite
def sessions(draw):
    """(plan, dst_rank, [(src_blocks, dst_blocks), ...]) of an attention model."""
    p, dst_rank, src_blocks, dst_blocks = draw(exchanges())
    more = [draw(requests(p.src, p.dst, num_blocks=p.src.num_blocks)) for _ in range(REQUESTS - 1)]
    return p, dst_rank, [(src_blocks, dst_blocks), *more]


@st.composite
def bounce_sessions(draw):
    """An attention model's session planned with the bounce transfer strategy."""
    p, dst_rank, reqs = draw(sessions())
    return plan(p.src, p.dst, transfer_strategy="bounce"), dst_rank, reqs


@st.composite
def hybrid_sessions(draw, conv_strategy: str, transfer_strategy: str = "direct"):
    """A hybrid model's session, planned with `conv_strategy` (and `transfer_strategy`)."""
    p, dst_rank, src_blocks, dst_blocks = draw(hybrid_exchanges())
    p = plan(p.src, p.dst, conv_strategy=conv_strategy, transfer_strategy=transfer_strategy)
    more = [draw(group_requests(p.src, p.dst, num_blocks=BLOCKS)) for _ in range(REQUESTS - 1)]
    return p, dst_rank, [(src_blocks, dst_blocks), *more]


def scratch(p, reqs, dst_rank: int | None = None) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Sizes of the per-request scratch buffers (prefill side, decode side): a scratch
    region holds block_bytes per state block of the largest request, or (bounce staging,
    `dst_rank` given) what the largest request of `dst_rank` uses."""
    def states(src_blocks) -> int:
        nested = bool(src_blocks) and isinstance(src_blocks[0], (list, tuple))
        return max((len(b) for g, b in enumerate(src_blocks) if not p.src.group_is_token(g)), default=0) \
            if nested else 0

    most = max(states(src_blocks) for src_blocks, _ in reqs)
    src = tuple(r.block_bytes * most for r in p.src_scratch)
    dst = tuple(r.block_bytes * most for r in p.dst_scratch)
    if dst_rank is None:
        return src, dst
    used_src, used_dst = scratch_buffer_bytes(p, [p.lower(dst_rank, *req) for req in reqs])
    return tuple(map(max, src, used_src)), tuple(map(max, dst, used_dst))


def serving_ranks(p, dst_rank: int) -> list[int]:
    """Prefill ranks that take part in `dst_rank`'s requests: read, or running pre steps."""
    pre = p.pre_tables[dst_rank].source_ranks if p.pre_tables else ()
    return sorted(set(p.reads(dst_rank).source_ranks) | set(pre))


@attrs.frozen
class Run:
    """Decode memory after each request: through the prepared route, then through plain
    `execute(transfer)`; `routes`: how the backend ran each prepared request; `launches`:
    the cupy kernel path of every request (prepared ones first), None for other kinds."""

    prepared: list
    transfer: list
    routes: list
    launches: list


class LocalSources:
    """Prefill ranks in this process, with `SourceProcess`'s interface (`_pairing`)."""

    def __init__(self, kind: str, engine, *, ranks, device: int = -1, options=None, extra=()):
        self.backends = {}
        try:
            for rank in ranks:
                self.backends[rank] = load_backend(kind, **(options or {}))
                self.backends[rank].register(allocate(engine, rank, device, extra=extra), rank=rank)
        except BaseException:
            self.close()
            raise
        self.metadata = {rank: b.metadata() for rank, b in self.backends.items()}
        self._prepared, self._done = {}, []

    def connect(self, dst_rank: int, metadata: bytes) -> None:
        for backend in self.backends.values():
            backend.add_peer(dst_rank, metadata)

    def prepare(self, p, dst_rank: int, *, ring=None) -> None:
        self._prepared = {rank: b.prepare(p, dst_rank, ring=ring) for rank, b in self.backends.items()}

    def serve(self, src_blocks, dst_blocks, *, request: str = "", check: bool = False):
        self._done = [b.serve(self._prepared[r], src_blocks, dst_blocks, rank=r, request=request, check=check)
                      for r, b in self.backends.items()]
        return self._digests(check)

    def serve_transfer(self, transfer, *, request: str = "", check: bool = False):
        self._done = [b.serve(transfer, rank=r, request=request, check=check) for r, b in self.backends.items()]
        return self._digests(check)

    def _digests(self, check: bool):
        return {r: d for c in self._done for r, d in (c.digests or {}).items()} if check else None

    def wait(self) -> None:
        for completion in self._done:
            completion.wait()

    def close(self) -> None:
        for backend in self.backends.values():
            backend.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def snapshot(buffers) -> list:
    """Host copies of region buffers (NumPy or CuPy)."""
    return [None if b is None else b.get() if hasattr(b, "__cuda_array_interface__") else b.copy() for b in buffers]


def zero(buffers) -> None:
    """Zero region buffers in place (a CuPy one on its own device, finished on return)."""
    for buffer in buffers:
        if buffer is None:
            continue
        if hasattr(buffer, "__cuda_array_interface__"):
            import cupy

            with cupy.cuda.Device(buffer.device.id):
                buffer.fill(0)
                cupy.cuda.get_current_stream().synchronize()
        else:
            buffer.fill(0)


def run(kind: str, p, dst_rank: int, reqs, *, tag: str = "req", apart: bool = False, src_device: int = -1,
        dst_device: int = -1, options=None, source_options=None, ring=None, layers_per_part: int | None = None,
        tcp: bool = False) -> Run:
    """The session through backend `kind` (see the module docstring): prefill ranks in
    this process, or with `apart` in a spawned one; buffers on the given devices;
    `options` for the decode rank's backend, `source_options` for the prefill ranks'.
    With a staging `ring`, staging is the ring's bytes only and the session runs the
    prepared route alone (a whole lowered request would not fit). With
    `layers_per_part`, the lowered requests stream layer by layer: each is served and
    executed as ``lower(..., layers=range(...))`` parts of that many layers. With `tcp`
    (and `apart`), the two sides meet over TCP as on different hosts (`publish`,
    `fetch_peer`; `_pairing`), not through metadata bytes."""
    options = OPTIONS.get(kind, {}) if options is None else options
    source_options = OPTIONS.get(kind) if source_options is None else source_options
    src_extra, dst_extra = scratch(p, reqs, dst_rank) if ring is None else ring_buffer_bytes(p, ring, dst_rank)
    out = allocate(p.dst, dst_rank, dst_device, fill=False, extra=dst_extra)
    dst = load_backend(kind, **(listening(kind, options) if tcp else options))
    ranks = serving_ranks(p, dst_rank)
    result = Run([], [], [], [])
    try:
        dst.register(out, rank=dst_rank)
        if apart:
            sources = SourceProcess(kind, p.src, device=src_device, ranks=ranks, options=source_options,
                                    extra=src_extra, timeout_s=60, tcp=tcp)
        else:
            sources = LocalSources(kind, p.src, ranks=ranks, device=src_device, options=source_options,
                                   extra=src_extra)
        with sources:
            if tcp:
                address = dst.publish(p.dst, host="127.0.0.1")
                for rank, peer in sources.metadata.items():
                    meet(dst, peer, rank)
                sources.connect(dst_rank, address)
            else:
                for rank, md in sources.metadata.items():
                    dst.add_peer(rank, md)
                sources.connect(dst_rank, dst.metadata())
            sources.prepare(p, dst_rank, ring=ring)
            prepared = dst.prepare(p, dst_rank, ring=ring)
            for i, (src_blocks, dst_blocks) in enumerate(reqs):
                sources.serve(src_blocks, dst_blocks, request=f"{tag}-{i}")
                dst.execute(prepared, src_blocks, dst_blocks, request=f"{tag}-{i}")
                sources.wait()
                result.prepared.append(snapshot(out))
                result.routes.append(dst.route)
                result.launches.append(getattr(dst, "last_launch", {}).get("path"))
            zero(out)
            count = len(p.src.model.layers)
            step = layers_per_part or count
            for i, (src_blocks, dst_blocks) in enumerate(reqs if ring is None else ()):
                for start in range(0, count, step):
                    part = p.lower(dst_rank, src_blocks, dst_blocks,
                                   layers=range(start, min(start + step, count)) if layers_per_part else None)
                    sources.serve_transfer(part, request=f"{tag}-transfer-{i}-{start}")
                    dst.execute(part, request=f"{tag}-transfer-{i}-{start}")
                    sources.wait()
                result.transfer.append(snapshot(out))
                result.launches.append(getattr(dst, "last_launch", {}).get("path"))
    finally:
        dst.close()
    return result


def sliced(p, dst_rank: int, reqs) -> list:
    """The reference: each request's rows copied by plain slicing, pre steps on the
    prefill ranks first, post steps on the decode rank last; memory after each request."""
    src_extra, dst_extra = scratch(p, reqs, dst_rank)
    src = {r: allocate(p.src, r, extra=src_extra) for r in range(p.src.world_size)}
    out = allocate(p.dst, dst_rank, fill=False, extra=dst_extra)
    after = []
    for src_blocks, dst_blocks in reqs:
        t = p.lower(dst_rank, src_blocks, dst_blocks)
        if t.pre_steps is not None:
            for rank in t.pre_steps.source_ranks:
                copy_rows(t.pre_steps.for_source(rank), lambda r: src[r], src[rank])
        copy_rows(t, lambda r: src[r], out)
        if t.post_steps is not None:
            copy_rows(t.post_steps, lambda r: out, out)
        after.append(snapshot(out))
    return after


def same(a, b) -> bool:
    """Two lists of region buffers (None for absent regions) hold the same bytes."""
    return all((x is None and y is None) or np.array_equal(np.asarray(x), np.asarray(y))
               for x, y in zip(a, b, strict=True))


def same_each(a, b) -> bool:
    """Two sequences of snapshots agree request by request."""
    return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))


def copy_rows(rows, src_of, dst) -> None:
    """Plain slicing, row by row (the reference): `src_of(rank)` gives a rank's buffers."""
    for i in range(len(rows)):
        s, d, n = int(rows.src_offset[i]), int(rows.dst_offset[i]), int(rows.nbytes[i])
        dst[rows.dst_region[i]][d:d + n] = src_of(int(rows.src_rank[i]))[rows.src_region[i]][s:s + n]
