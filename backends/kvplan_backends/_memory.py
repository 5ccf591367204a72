"""Registered memory of one rank: base address, size and device of each buffer, and the
process-wide registry of live registrations.

Buffers are anything exposing ``__cuda_array_interface__`` (CuPy, torch CUDA tensors:
device memory) or the buffer protocol / ``__array_interface__`` (NumPy: host memory).
Reading a pointer is all `describe` does; offsets come from the core.

A `Registration` owns the buffer objects a backend registered (so their memory lives as
long as it does) and is listed in this process's registry under a random token that
the backend's metadata carries, with this process's id. A peer in the same process
holds the `Registration` itself, not base addresses: it reads only while the
registration is open (`Registration.use`), and `Registration.close` waits for such
reads before the owner lets go of the memory.

>>> import numpy as np
>>> reg = Registration([np.zeros(8, np.uint8)])
>>> live(PROCESS, reg.token) is reg, reg.memory.sizes
(True, (8,))
>>> with reg.use("rank 1") as buffers:
...     len(buffers)
1
>>> reg.close(), live(PROCESS, reg.token) is None
(True, True)
>>> with reg.use("rank 1"):
...     pass
Traceback (most recent call last):
...
kvplan.transport.TransportError: rank 1 closed its registration: its memory may be gone
"""

from __future__ import annotations

import contextlib
import json
import threading
import uuid
import weakref
from typing import Sequence

import attrs
import numpy as np

from kvplan.transport import TransportError

HOST = -1  # device id of host memory
PROCESS = uuid.uuid4().hex  # this process, in metadata (pids repeat across hosts and containers)
_LIVE: weakref.WeakValueDictionary = weakref.WeakValueDictionary()  # token -> open Registration


@attrs.frozen
class Memory:
    """Per region: base address (0 where absent), size in bytes, device (-1 = host)."""

    bases: tuple[int, ...]
    sizes: tuple[int, ...]
    devices: tuple[int, ...]

    @property
    def on_gpu(self) -> bool:
        present = [d for d, s in zip(self.devices, self.sizes) if s]
        return bool(present) and all(d != HOST for d in present)

    @property
    def device(self) -> int:
        return next((d for d, s in zip(self.devices, self.sizes) if s), HOST)

    def to_json(self) -> dict:
        return attrs.asdict(self)

    @classmethod
    def from_json(cls, data: dict) -> Memory:
        return cls(tuple(data["bases"]), tuple(data["sizes"]), tuple(data["devices"]))


def _c_strides(shape, item: int) -> tuple[int, ...]:
    out, step = [], item
    for extent in reversed(shape):
        out.append(step)
        step *= extent
    return tuple(reversed(out))


def _one(buffer) -> tuple[int, int, int]:
    if buffer is None:
        return 0, 0, HOST
    cai = getattr(buffer, "__cuda_array_interface__", None)
    if cai is not None:
        item = np.dtype(cai["typestr"]).itemsize
        if cai.get("strides") is not None and tuple(cai["strides"]) != _c_strides(cai["shape"], item):
            raise TransportError(f"CUDA buffer of shape {cai['shape']} is not C-contiguous")
        nbytes = int(np.prod(cai["shape"], dtype=np.int64)) * item
        return int(cai["data"][0]), nbytes, int(buffer.device.id if hasattr(buffer.device, "id") else buffer.device.index)
    array = np.asarray(buffer)
    if not array.flags.c_contiguous:
        raise TransportError(f"host buffer of shape {array.shape} is not contiguous")
    return array.ctypes.data, array.nbytes, HOST


def describe(buffers: Sequence[object | None]) -> Memory:
    """`Memory` of `buffers` (one per region; None for a region the rank does not hold)."""
    parts = [_one(b) for b in buffers]
    return Memory(tuple(p[0] for p in parts), tuple(p[1] for p in parts), tuple(p[2] for p in parts))


class Registration:
    """The buffers one backend registered: kept alive while it is open, reachable from
    this process by `token` (see the module docstring)."""

    def __init__(self, buffers: Sequence[object | None]):
        self.memory = describe(buffers)
        self.buffers = list(buffers)
        self.token = uuid.uuid4().hex
        self.closed = False
        self._users = 0
        self._cond = threading.Condition()
        _LIVE[self.token] = self

    @contextlib.contextmanager
    def use(self, who: str, *, peer: str | None = None, request: str | None = None):
        """The buffers, held open until the block ends; `TransportError` (naming `who`,
        `peer`, `request`) once closed."""
        with self._cond:
            if self.closed:
                raise TransportError(f"{who} closed its registration: its memory may be gone", peer=peer,
                                     request=request)
            self._users += 1
            buffers = self.buffers  # a reference of our own: alive whatever close() does
        try:
            yield buffers
        finally:
            with self._cond:
                self._users -= 1
                self._cond.notify_all()

    def close(self, timeout_s: float = 30.0) -> bool:
        """Refuse new users, wait up to `timeout_s` for those in flight; True when none
        is left (the owner may release the memory), False when some still read it."""
        with self._cond:
            self.closed = True
            _LIVE.pop(self.token, None)
            idle = self._cond.wait_for(lambda: self._users == 0, timeout_s)
            if idle:
                self.buffers = []
            return idle


def live(process: str | None, token: str | None) -> Registration | None:
    """The open registration `token` of this process, or None (another process's, or
    closed)."""
    if process != PROCESS or token is None:
        return None
    return _LIVE.get(token)


def pack_metadata(kind: str, memory: Memory, **fields) -> bytes:
    """Metadata bytes: a JSON header line, then an opaque transport blob (if any)."""
    blob = fields.pop("blob", b"")
    head = json.dumps({"kind": kind, "memory": memory.to_json(), **fields}).encode()
    return head + b"\n" + blob


def unpack_metadata(kind: str, data: bytes) -> tuple[dict, Memory, bytes]:
    head, _, blob = bytes(data).partition(b"\n")
    try:
        info = json.loads(head)
    except ValueError:
        raise TransportError(f"peer metadata is not kvplan {kind} metadata: {bytes(data[:40])!r}") from None
    if info.get("kind") != kind:
        raise TransportError(f"peer metadata is for backend {info.get('kind')!r}, this backend is {kind!r}")
    return info, Memory.from_json(info["memory"]), blob
