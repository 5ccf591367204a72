"""Compact copy rows: a request's copies kept as outer sums, expanded when first read.

The layers of one class (`kvplan.lowering.lower`) copy the same block-relative rows;
their copies differ only in region ids, and by one number per layer. So every column of
a class's copies is ``base[m] + values[i]`` for member layer m and copy i: M + n
numbers where the expanded column holds M x n. `lower()` keeps a request's copies in
this form, which makes lowering cost O(copies of one layer) rather than O(copies), and
a `Transfer` expands them into its int64 columns once, when a column is first read.

>>> rows = CompactRows(names=("offset", "region"), blocks=(
...     OuterBlock(2, bases=(None, np.array([4, 7])), values=(np.array([0, 64, 128]), np.array([0, 0, 1]))),))
>>> len(rows), rows.expand()["region"].tolist(), rows.expand()["offset"].tolist()
(6, [4, 4, 5, 7, 7, 8], [0, 64, 128, 0, 64, 128])
>>> rows.held_bytes        # 2 bases + 6 values, 8 bytes each
64
"""

from __future__ import annotations

import attrs
import numpy as np

from ..planning.rows import frozen


def _frozen_or_none(values: tuple) -> tuple:
    return tuple(None if v is None else frozen(v) for v in values)


@attrs.frozen
class OuterBlock:
    """Copies (m, i), member-major, for m < `members` and i < len(values[c]): column c
    is ``bases[c][m] + values[c][i]``; a base of None is 0 (the column is equal in every
    member). Arrays are read-only int64."""

    members: int
    bases: tuple = attrs.field(converter=_frozen_or_none, eq=False, kw_only=True)
    values: tuple = attrs.field(converter=_frozen_or_none, eq=False, kw_only=True)

    @property
    def copies(self) -> int:
        return len(self.values[0])

    def where(self, column: int, value: int) -> OuterBlock | None:
        """The copies whose column `column` equals `value`, where that column is equal
        in every member (its base None); None where it is not."""
        if self.bases[column] is not None:
            return None
        keep = self.values[column] == value
        return OuterBlock(self.members, bases=self.bases, values=tuple(v[keep] for v in self.values))


@attrs.frozen(kw_only=True)
class CompactRows:
    """Columns `names` of the copies of `blocks`, one block after another."""

    names: tuple
    blocks: tuple

    def __len__(self) -> int:
        return sum(b.members * b.copies for b in self.blocks)

    @property
    def held_bytes(self) -> int:
        """Bytes of the arrays held (what the compact form costs in memory)."""
        return sum(a.nbytes for b in self.blocks for a in (*b.bases, *b.values) if a is not None)

    def expand(self) -> dict[str, np.ndarray]:
        """Every column as a read-only int64 array, each written in one pass."""
        total = len(self)
        out = {name: np.empty(total, np.int64) for name in self.names}
        start = 0
        for block in self.blocks:
            members, copies = block.members, block.copies
            stop = start + members * copies
            for name, base, values in zip(self.names, block.bases, block.values, strict=True):
                into = out[name][start:stop].reshape(members, copies)
                if base is None:
                    into[...] = values
                else:
                    np.add(base[:, None], values[None, :], out=into)
            start = stop
        for column in out.values():
            column.setflags(write=False)
        return out

    def where(self, name: str, value: int) -> CompactRows | None:
        """The rows whose column `name` equals `value` (see `OuterBlock.where`), or None
        where some block varies that column by member."""
        column = self.names.index(name)
        blocks = [b.where(column, value) for b in self.blocks]
        if any(b is None for b in blocks):
            return None
        return CompactRows(names=self.names, blocks=tuple(b for b in blocks if b.copies))
