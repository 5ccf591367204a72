"""Fault injection for integrity mode: a byte flipped in flight.

`flip_after_digest(monkeypatch, row)` wraps `kvplan_backends._integrity.source_digests`
(what every backend calls to digest a source's rows, on the source in ``serve(...,
check=True)`` or on the destination with ``execute(..., check=True)``): once the
digests are taken, one byte in the middle of row `row`'s source range is flipped, so
the copy that follows carries a byte the digest does not describe.
"""

from __future__ import annotations

from kvplan_backends import _integrity


def flip(buffer, offset: int) -> None:
    """XOR one byte of a NumPy or CuPy uint8 buffer with 0x5A (a CuPy one on its device)."""
    if hasattr(buffer, "__cuda_array_interface__"):
        import cupy

        with cupy.cuda.Device(buffer.device.id):
            buffer[offset:offset + 1] ^= 0x5A
            cupy.cuda.get_current_stream().synchronize()
        return
    buffer[offset:offset + 1] ^= 0x5A


class Flip:
    """The armed injection; `flipped` lists (region, offset) of the bytes it flipped."""

    def __init__(self, row: int):
        self.row, self.armed, self.flipped = row, True, []


def flip_after_digest(monkeypatch, row: int) -> Flip:
    real = _integrity.source_digests
    state = Flip(row)

    def digest_then_flip(registration, rows, stream=None):
        digests = real(registration, rows, stream)
        if state.armed and len(rows) > row:
            region, offset = int(rows.src_region[row]), int(rows.src_offset[row]) + int(rows.nbytes[row]) // 2
            flip(registration.buffers[region], offset)
            state.flipped.append((region, offset))
            state.armed = False
        return digests

    monkeypatch.setattr(_integrity, "source_digests", digest_then_flip)
    return state
