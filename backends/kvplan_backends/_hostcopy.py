"""Copy byte ranges between host addresses (the reference's only primitive)."""

from __future__ import annotations

import ctypes


def copy_ranges(src_addr, dst_addr, nbytes) -> None:
    """memmove every range; addresses come from `Transfer.bind` (bounds already checked)."""
    move = ctypes.memmove
    for s, d, n in zip(src_addr.tolist(), dst_addr.tolist(), nbytes.tolist()):
        move(d, s, n)
