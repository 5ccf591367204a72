"""Read-only int64 columns for frozen value types."""

from __future__ import annotations

import attrs
import numpy as np


def readonly_int64(value) -> np.ndarray:
    """A read-only 1-D int64 array of `value`.

    Writable input is copied, so a value never aliases data its caller can still change;
    an int64 array that is already read-only is taken as is (lowering hands over
    freshly built arrays this way without paying for a copy).
    """
    if isinstance(value, np.ndarray) and value.dtype == np.int64 and value.ndim == 1 and not value.flags.writeable:
        return value
    array = np.array(value, dtype=np.int64, copy=True).reshape(-1)
    array.setflags(write=False)
    return array


def frozen(array: np.ndarray) -> np.ndarray:
    """Mark a freshly built array read-only (it is handed to a value type as is)."""
    array = np.ascontiguousarray(array, dtype=np.int64).reshape(-1)
    array.setflags(write=False)
    return array


def column():
    """attrs field for a read-only int64 column: compared by value, not hashed."""
    return attrs.field(converter=readonly_int64, eq=attrs.cmp_using(eq=np.array_equal), hash=False, repr=False)
