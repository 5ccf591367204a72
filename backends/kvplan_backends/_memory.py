"""Registered memory of one rank: base address, size and device of each buffer.

Buffers are anything exposing ``__cuda_array_interface__`` (CuPy, torch CUDA tensors:
device memory) or the buffer protocol / ``__array_interface__`` (NumPy: host memory).
Reading a pointer is all this module does; offsets come from the core.
"""

from __future__ import annotations

import json
from typing import Sequence

import attrs
import numpy as np

from kvplan.transport import TransportError

HOST = -1  # device id of host memory


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
