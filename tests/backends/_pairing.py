"""Prefill ranks in a child process, paired with a decode rank in this one.

NIXL and UCX use CUDA IPC only between processes (UCX marks it unreachable inside one
process), so GPU runs put the prefill ranks in a spawned child. Metadata travels as
bytes over a `multiprocessing` pipe; any other channel works the same way. The child
speaks the transport protocol: it prepares the plan once, then serves each request
from its block ids.

    with SourceProcess("nixl", p.src, device=0, ranks=ranks) as sources:
        for rank, md in sources.metadata.items():
            decode.add_peer(rank, md)
        sources.connect(dst_rank, decode.metadata())
        sources.prepare(p, dst_rank)                   # backend.prepare on every rank
        prepared = decode.prepare(p, dst_rank)
        sources.serve(src_blocks, dst_blocks, request="r1")   # pre steps; ucx packs, sends
        decode.execute(prepared, src_blocks, dst_blocks, request="r1")
        sources.wait()

With ``tcp=True`` the two sides meet as engines on different hosts do: the child
publishes each rank's card (`publish`, a listener on 127.0.0.1) and sends only the
addresses; ``sources.metadata`` maps ranks to addresses, the parent `meet`s each
(`fetch_peer` over TCP, `add_peer`) and ``sources.connect(dst_rank, address)`` has the
child fetch the decode rank's card the same way.

Every source rank's buffers are allocated as its engine lays them out (one buffer per
region of the rank's stage, then `extra` scratch buffers) and filled with
`identity_fill`, so the parent can build the same source bytes and check the result.
"""

from __future__ import annotations

import multiprocessing
import socket

import numpy as np

from kvplan.layout import engine_memory

FILL_CHUNK = 64 << 20


def identity_fill(buffer, rank: int, region: int) -> None:
    """Deterministic bytes: a hash of (rank, region, byte index); NumPy or CuPy."""
    xp = np if isinstance(buffer, np.ndarray) else __import__("cupy")
    for start in range(0, buffer.size, FILL_CHUNK):
        index = xp.arange(start, min(start + FILL_CHUNK, buffer.size), dtype=xp.uint32)
        mixed = index * xp.uint32(0x9E3779B1) + xp.uint32((rank * 0x85EBCA6B + region * 0xC2B2AE35) & 0xFFFFFFFF)
        buffer[start:start + len(index)] = ((mixed ^ (mixed >> xp.uint32(15))) >> xp.uint32(7)).astype(xp.uint8)


def allocate(engine, rank: int, device: int = -1, *, fill: bool = True, extra: tuple[int, ...] = ()) -> list:
    """One buffer per region (None for regions of other pipeline stages), plus `extra` sizes."""
    if engine.num_blocks is None:
        raise ValueError("allocate() needs an engine with num_blocks")
    stage = rank // engine.tp
    sizes = [r.block_bytes * engine.num_blocks if r.stage == stage else 0
             for r in engine_memory(engine).regions] + list(extra)
    if device < 0:
        buffers = [np.zeros(n, np.uint8) if n else None for n in sizes]
        _fill(buffers, rank, fill)
        return buffers
    import cupy

    with cupy.cuda.Device(device):
        buffers = [cupy.zeros(n, cupy.uint8) if n else None for n in sizes]
        _fill(buffers, rank, fill)
        cupy.cuda.get_current_stream().synchronize()
    return buffers


def _fill(buffers, rank: int, fill: bool) -> None:
    for region, buffer in enumerate(buffers):
        if fill and buffer is not None:
            identity_fill(buffer, rank, region)


def free_port() -> int:
    """A TCP port free on this host now (NIXL's listener cannot pick one itself)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def listening(kind: str, options: dict) -> dict:
    """`options` plus a listener port for `publish` / `fetch_peer` on this host."""
    return {**options, "listen_port": free_port() if kind == "nixl" else 0}


def meet(backend, address: str, rank: int) -> None:
    """Pair with the rank published at `address` as a serving stack does across hosts:
    fetch its card over TCP, check it is `rank`, add it."""
    card = backend.fetch_peer(address)
    if card.rank != rank:
        raise RuntimeError(f"the card at {address} is rank {card.rank}'s, not rank {rank}'s")
    backend.add_peer(card.rank, card.metadata)


def _child(conn, kind: str, options: dict, engine, ranks, device: int, extra: tuple, tcp: bool) -> None:
    from kvplan.transport import load_backend

    backends, prepared = {}, {}
    for rank in ranks:
        backends[rank] = load_backend(kind, **(listening(kind, options) if tcp else options))
        backends[rank].register(allocate(engine, rank, device, extra=extra), rank=rank)
    # tcp: only addresses travel over the pipe (a router's part); cards go over TCP
    conn.send({rank: b.publish(engine, host="127.0.0.1") if tcp else b.metadata() for rank, b in backends.items()})
    while True:
        message = conn.recv()
        if message[0] == "connect":
            for backend in backends.values():
                if tcp:
                    meet(backend, message[2], message[1])
                else:
                    backend.add_peer(message[1], message[2])
        elif message[0] == "prepare":  # ("prepare", plan, dst_rank, ring): once per plan and decode rank
            try:
                prepared = {r: b.prepare(message[1], message[2], ring=message[3]) for r, b in backends.items()}
                conn.send(("ok", None))
            except Exception as error:
                conn.send(("error", repr(error)))
        elif message[0] in ("serve", "serve_transfer"):
            # ("serve", src_blocks, dst_blocks, request, check): each rank lowers what it needs itself
            # ("serve_transfer", transfer, request, check): a lowered Transfer, sent whole
            try:
                if message[0] == "serve":
                    _, src_blocks, dst_blocks, request, check = message
                    done = [b.serve(prepared[r], src_blocks, dst_blocks, rank=r, request=request, check=check)
                            for r, b in backends.items()]
                else:
                    _, transfer, request, check = message
                    done = [b.serve(transfer, rank=r, request=request, check=check) for r, b in backends.items()]
            except Exception as error:
                conn.send(("error", repr(error)))
                continue
            digests = {r: d for c in done for r, d in (c.digests or {}).items()} if check else None
            conn.send(("ready", digests))  # pre steps done, sends posted: the reads may start
            try:
                for completion in done:
                    completion.wait()
                conn.send(("ok", {r: getattr(b, "last_stats", {}) for r, b in backends.items()}))
            except Exception as error:  # report to the parent rather than die silently
                conn.send(("error", repr(error)))
        else:
            break
    for backend in backends.values():
        backend.close()
    conn.send(("closed", None))


class SourceProcess:
    """A spawned process holding `ranks` (default: all) of `engine` on `device`."""

    def __init__(self, kind: str, engine, *, device: int = -1, ranks=None, options=None, timeout_s: float = 120.0,
                 extra: tuple[int, ...] = (), tcp: bool = False):
        ctx = multiprocessing.get_context("spawn")
        self._conn, child = ctx.Pipe()
        ranks = list(range(engine.world_size)) if ranks is None else list(ranks)
        self.timeout_s = timeout_s
        self.process = ctx.Process(target=_child, args=(child, kind, options or {}, engine, ranks, device,
                                                        tuple(extra), tcp), daemon=True)
        self.process.start()
        self.metadata = self._recv()

    def _recv(self):
        try:
            if not self._conn.poll(self.timeout_s):
                raise TimeoutError(f"source process sent nothing for {self.timeout_s} s")
            return self._conn.recv()
        except (EOFError, OSError) as error:  # the child died: say so, not EOFError / ConnectionResetError
            self.process.join(1)
            raise RuntimeError(f"source process is gone (exit code {self.process.exitcode}): "
                               f"{type(error).__name__}") from None

    def _send(self, message) -> None:
        try:
            self._conn.send(message)
        except OSError:  # BrokenPipeError, ConnectionResetError: the child died
            self.process.join(1)
            raise RuntimeError(f"source process is gone (exit code {self.process.exitcode})") from None

    def _expect(self, wanted: str):
        status, detail = self._recv()
        if status != wanted:
            raise RuntimeError(f"source process failed: {detail}")
        return detail

    def connect(self, dst_rank: int, metadata) -> None:
        """Every source rank learns decode rank `dst_rank`: its metadata bytes, or (tcp)
        the address of its published card."""
        self._send(("connect", dst_rank, metadata))

    def prepare(self, plan, dst_rank: int, *, ring=None) -> None:
        """Every source rank's backend prepares `plan` for `dst_rank` (sent once), with
        a staging `ring` if given."""
        self._send(("prepare", plan, dst_rank, ring))
        self._expect("ok")

    def serve(self, src_blocks, dst_blocks, *, request: str = "", check: bool = False):
        """The sources serve one request of the prepared plan; only block ids travel.

        Returns once their pre steps ran and two-sided sends are posted; with `check`,
        the sources' digests ({rank: digests}, for ``execute(..., check=...)``)."""
        self._send(("serve", src_blocks, dst_blocks, request, check))
        return self._expect("ready")

    def serve_transfer(self, transfer, *, request: str = "", check: bool = False):
        """Like `serve`, for a lowered `Transfer` sent whole (fine for small ones)."""
        self._send(("serve_transfer", transfer, request, check))
        return self._expect("ready")

    def wait(self) -> dict:
        """Wait until the sources served the last request; their backends' `last_stats`."""
        return self._expect("ok")

    def kill(self) -> None:
        """End the child at once (SIGKILL): a peer dying mid-transfer."""
        self.process.kill()
        self.process.join(self.timeout_s)

    def close(self) -> None:
        """Let the child close its backends and exit; a child already gone is fine."""
        try:
            if self.process.is_alive():
                self._conn.send(("exit",))
                if self._conn.poll(self.timeout_s):
                    self._conn.recv()
                self.process.join(self.timeout_s)
        except (EOFError, OSError):
            pass
        if self.process.is_alive():
            self.process.kill()
            self.process.join(self.timeout_s)
        self._conn.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
