"""Read-only int64 columns for frozen value types."""

from __future__ import annotations

import attrs
import numpy as np


def readonly_int64(value) -> np.ndarray:
    """Copy `value` into a fresh read-only int64 array (values never alias caller data)."""
    array = np.array(value, dtype=np.int64, copy=True).reshape(-1)
    array.setflags(write=False)
    return array


def column():
    """attrs field for a read-only int64 column: compared by value, not hashed."""
    return attrs.field(converter=readonly_int64, eq=attrs.cmp_using(eq=np.array_equal), hash=False, repr=False)
