"""Copy ranges within one rank's memory: NumPy memmove on host, one kernel on a GPU."""

from __future__ import annotations

from . import _hostcopy

HOST = -1


def copy_ranges(device: int, src_addr, dst_addr, nbytes, stream=None) -> None:
    """Synchronous copy (the stream is synchronised before returning)."""
    if device == HOST:
        _hostcopy.copy_ranges(src_addr, dst_addr, nbytes)
        return
    import cupy as cp

    from . import _gpucopy

    with cp.cuda.Device(device):
        stream = stream or cp.cuda.get_current_stream()
        with stream:
            _gpucopy.copy_ranges(cp, device, src_addr, dst_addr, nbytes, stream)
        stream.synchronize()


def empty(device: int, nbytes: int):
    """A staging buffer of `nbytes` on `device` (host when -1)."""
    if device == HOST:
        import numpy as np

        return np.empty(nbytes, np.uint8)
    import cupy as cp

    with cp.cuda.Device(device):
        return cp.empty(nbytes, cp.uint8)
