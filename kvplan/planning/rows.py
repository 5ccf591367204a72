"""The row-table schema: frozen values whose int64 columns hold one value per row.

Plans, transfers, copy templates and descriptor lists are all tables of byte-range
rows. Each is an attrs class deriving from `RowTable` whose columns are declared once,
with `column()`; selection, concatenation, construction from a dict of columns and the
equal-length check live here, once, for all of them. Columns are read-only int64
arrays, compared by value and excluded from hashing.

>>> @attrs.frozen(kw_only=True)
... class Ranges(RowTable):
...     offset: np.ndarray = column()
...     nbytes: np.ndarray = column()
>>> r = Ranges(offset=[0, 64, 128], nbytes=[8, 8, 16])
>>> Ranges.column_names(), len(r), r.select([2, 0]).offset.tolist()
(('offset', 'nbytes'), 3, [128, 0])
>>> Ranges.concat([r, r]).nbytes.tolist()
[8, 8, 16, 8, 8, 16]
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from functools import cache

import attrs
import numpy as np

from ..errors import SpecError

_COLUMN = "kvplan.column"


def readonly_int64(value) -> np.ndarray:
    """A read-only 1-D int64 array of `value`.

    Writable input is copied, so a value never aliases data its caller can still change;
    an int64 array that is already read-only is taken as is (lowering hands over
    freshly built arrays this way without paying for a copy).

    >>> a = readonly_int64([1, 2])
    >>> a.dtype, a.flags.writeable, readonly_int64(a) is a
    (dtype('int64'), False, True)
    """
    if isinstance(value, np.ndarray) and value.dtype == np.int64 and value.ndim == 1 and not value.flags.writeable:
        return value
    try:
        given = np.asarray(value)
    except (ValueError, TypeError, OverflowError):  # ragged nesting, unconvertible objects
        given = None
    # columns hold integers: int64 would truncate 1.5, wrap large unsigned values and turn
    # strings into numbers without a word, so only values int64 holds exactly are taken
    if given is None or (given.size and not _exact_int64(given)):
        raise SpecError(f"row columns hold int64 values (offsets, lengths, ranks, regions, blocks), got "
                        f"{value!r}"[:300])
    array = np.array(given, dtype=np.int64, copy=True).reshape(-1)
    array.setflags(write=False)
    return array


def _exact_int64(array: np.ndarray) -> bool:
    """Every value is an integer int64 holds exactly (whole floats such as 8.0 included)."""
    kind = array.dtype.kind
    if kind == "i":
        return True
    if kind == "u":
        return bool(array.max() <= np.iinfo(np.int64).max)
    if kind == "f":
        finite = np.isfinite(array).all() and (np.abs(array) < 2.0**63).all()
        return bool(finite and (array == np.round(array)).all())
    return False


def frozen(array: np.ndarray) -> np.ndarray:
    """Mark a freshly built array read-only (it is handed to a value type as is).

    >>> frozen(np.arange(3)).flags.writeable
    False
    """
    if not (type(array) is np.ndarray and array.dtype == np.int64 and array.ndim == 1
            and array.flags.c_contiguous):  # the common case needs no new view
        array = np.ascontiguousarray(array, dtype=np.int64).reshape(-1)
    array.setflags(write=False)
    return array


def column():
    """attrs field of a read-only int64 column: keyword-only, compared by value, not
    hashed (the module docstring declares a table with it)."""
    return attrs.field(converter=readonly_int64, eq=attrs.cmp_using(eq=np.array_equal), hash=False, repr=False,
                       kw_only=True, metadata={_COLUMN: True})


@cache
def _names(cls) -> tuple[str, ...]:
    return tuple(f.name for f in attrs.fields(cls) if f.metadata.get(_COLUMN))


class RowTable:
    """Base of every row table (see the module docstring). Subclasses are
    ``@attrs.frozen(kw_only=True)`` classes with `column()` fields and any other fields;
    columns of unequal length are refused.

    >>> from kvplan.lowering import Transfer
    >>> Transfer(dst_rank=0, src_rank=[1, 1], src_region=[0], src_offset=[0], dst_region=[0], dst_offset=[0],
    ...          nbytes=[8])
    Traceback (most recent call last):
    ...
    kvplan.errors.SpecError: Transfer columns differ in length: {'src_rank': 2, 'src_region': 1, 'src_offset': 1, 'dst_region': 1, 'dst_offset': 1, 'nbytes': 1}
    """

    __slots__ = ()

    def __attrs_post_init__(self):
        names = _names(type(self))
        lengths = {name: len(getattr(self, name)) for name in names}
        if len(set(lengths.values())) > 1:
            raise SpecError(f"{type(self).__name__} columns differ in length: {lengths}")

    @classmethod
    def column_names(cls) -> tuple[str, ...]:
        return _names(cls)

    def columns(self) -> dict[str, np.ndarray]:
        return {name: getattr(self, name) for name in _names(type(self))}

    def __len__(self) -> int:
        return len(getattr(self, _names(type(self))[0]))

    def select(self, rows):
        """The rows `rows` (an index array or a boolean mask), other fields kept."""
        try:
            picked = {name: col[rows] for name, col in self.columns().items()}
        except (IndexError, TypeError, ValueError) as error:
            raise SpecError(f"{type(self).__name__}.select takes row indices or a boolean mask of "
                            f"{len(self)} rows: {error}") from None
        return attrs.evolve(self, **picked)

    @classmethod
    def from_columns(cls, columns: Mapping[str, np.ndarray], **fields):
        """A table of `cls` from a mapping holding (at least) every column."""
        return cls(**{name: columns[name] for name in _names(cls)}, **fields)

    @classmethod
    def concat(cls, parts: Sequence, **fields):
        """Rows of `parts` (tables or column mappings) one after another; an empty
        sequence gives an empty table."""
        maps = [p.columns() if isinstance(p, RowTable) else p for p in parts]
        return cls(**{name: np.concatenate([m[name] for m in maps]) if maps else np.zeros(0, np.int64)
                      for name in _names(cls)}, **fields)


@attrs.frozen(kw_only=True)
class CopyRows(RowTable):
    """Rows of copies into destination rank `dst_rank`: row i moves `nbytes[i]` bytes from
    `src_offset[i]` of region `src_region[i]` of source rank `src_rank[i]` to
    `dst_offset[i]` of region `dst_region[i]`. The columns every copy table shares,
    declared once; `ReadTable`, `CopyTemplate` and `Transfer` add their own.

    >>> from kvplan.lowering import Transfer
    >>> t = Transfer(dst_rank=0, src_rank=[3, 1], src_region=[0, 0], src_offset=[0, 0], dst_region=[0, 0],
    ...              dst_offset=[0, 8], nbytes=[8, 4])
    >>> t.total_bytes, t.source_ranks
    (12, (1, 3))
    """

    dst_rank: int
    src_rank: np.ndarray = column()
    src_region: np.ndarray = column()
    src_offset: np.ndarray = column()
    dst_region: np.ndarray = column()
    dst_offset: np.ndarray = column()
    nbytes: np.ndarray = column()

    @property
    def total_bytes(self) -> int:
        return int(self.nbytes.sum())

    @property
    def source_ranks(self) -> tuple[int, ...]:
        return tuple(int(r) for r in np.unique(self.src_rank))
