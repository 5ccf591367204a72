"""`Layout`: an affine map from coordinates to byte offsets (CuTe's ``shape:stride``).

A layout has modes; mode i has extent ``shape[i]`` and byte stride ``stride[i]`` and
may itself be nested (a tuple of extents with a tuple of strides). A coordinate per
mode maps to ``offset + sum(coord_i * stride_i)``; an integer given to a nested mode
(or one integer for the whole layout) is split colexicographically, the first
sub-mode varying fastest, as in CuTe. A kernel page of 4 tokens, 2 pages per block,
2 heads, 8-byte cells, head-major:

    L = Layout(shape=(2, (4, 2)), stride=(32, (8, 64)), offset=16)
    L(1, 5) = 16 + 1*32 + (5 % 4)*8 + (5 // 4)*64 = 120       (head 1, token 5)

    head 0: tokens 0-3 at 16 24 32 40, tokens 4-7 at 80 88 96 104
    head 1: tokens 0-3 at 48 56 64 72, tokens 4-7 at 112 120 128 136

>>> L = Layout(shape=(2, (4, 2)), stride=(32, (8, 64)), offset=16)
>>> L(1, 5), L.size, L.cosize
(120, 16, 137)
>>> str(L), str(L.coalesce())
('(2,(4,2)):(32,(8,64))+16', '(2,4,2):(32,8,64)+16')

Operations: evaluate (call), `size` / `cosize`, `flatten`, `coalesce` (fewest modes,
same map), `mode` (one mode as a layout), `restrict` (a range of one mode). Every
operation returns a new value; each has a law in `tests/core/test_layout.py`.
"""

from __future__ import annotations

import math

import attrs
import numpy as np

from ..errors import SpecError


def _flat(shape) -> tuple[int, ...]:
    return tuple(x for s in shape for x in _flat(s)) if isinstance(shape, tuple) else (shape,)


def _congruent(shape, stride) -> bool:
    if isinstance(shape, tuple):
        return isinstance(stride, tuple) and len(shape) == len(stride) and all(
            _congruent(a, b) for a, b in zip(shape, stride, strict=True))
    return not isinstance(stride, tuple)


def _check(instance, attribute, value) -> None:
    shape, stride = instance.shape, instance.stride
    if not isinstance(shape, tuple) or not _congruent(shape, stride):
        raise SpecError(f"Layout shape {shape!r} and stride {stride!r} must be congruent tuples")
    extents, strides = _flat(shape), _flat(stride)
    if any(isinstance(x, bool) or not isinstance(x, int) or x < 1 for x in extents):
        raise SpecError(f"Layout extents must be positive ints, got shape {shape!r}")
    if any(isinstance(x, bool) or not isinstance(x, int) or x < 0 for x in (*strides, instance.offset)):
        raise SpecError(f"Layout strides and offset must be ints >= 0, got stride {stride!r} offset {instance.offset!r}")


def _evaluate(coord, shape, stride):
    """One mode: a coordinate (int, array or congruent tuple) times its strides."""
    if not isinstance(shape, tuple):
        return coord * stride
    if isinstance(coord, tuple):
        return sum(_evaluate(c, s, d) for c, s, d in zip(coord, shape, stride, strict=True))
    total = 0
    for i, (s, d) in enumerate(zip(shape, stride, strict=True)):
        if i + 1 == len(shape):  # the last sub-mode takes what is left (CuTe's idx2crd)
            return total + _evaluate(coord, s, d)
        total = total + _evaluate(coord % math.prod(_flat(s)), s, d)
        coord = coord // math.prod(_flat(s))
    return total


def _text(value) -> str:
    return "(" + ",".join(_text(v) for v in value) + ")" if isinstance(value, tuple) else str(value)


@attrs.frozen(kw_only=True)
class Layout:
    """Affine byte layout (see the module docstring).

    >>> page = Layout(shape=(2, 3), stride=(1, 2))   # 2 x 3, first mode fastest
    >>> page(1, 2), page.offsets().tolist()
    (5, [0, 1, 2, 3, 4, 5])
    """

    shape: tuple = attrs.field(validator=_check)
    stride: tuple
    offset: int = 0

    def __call__(self, *coord):
        """Byte offset of a coordinate (one per mode, or one flat index); numpy arrays
        broadcast, so a grid of coordinates evaluates in one call."""
        if len(coord) == len(self.shape):
            return self.offset + sum(_evaluate(c, s, d) for c, s, d in zip(coord, self.shape, self.stride,
                                                                             strict=True))
        if len(coord) == 1:
            return self.offset + _evaluate(coord[0], self.shape, self.stride)
        raise SpecError(f"layout {self} has {len(self.shape)} modes, got a coordinate of {len(coord)}")

    def __str__(self) -> str:
        return f"{_text(self.shape)}:{_text(self.stride)}" + (f"+{self.offset}" if self.offset else "")

    @property
    def size(self) -> int:
        """Number of coordinates (the domain)."""
        return math.prod(_flat(self.shape))

    @property
    def cosize(self) -> int:
        """One past the largest offset (the codomain a buffer must cover)."""
        return self.offset + sum((s - 1) * d for s, d in zip(_flat(self.shape), _flat(self.stride), strict=True)) + 1

    def mode(self, index: int) -> Layout:
        """Mode `index` alone, as a one-mode layout without the offset."""
        return Layout(shape=(self.shape[index],), stride=(self.stride[index],))

    def flatten(self) -> Layout:
        """Every nested mode spliced into the top level, in order (the same map)."""
        return Layout(shape=_flat(self.shape), stride=_flat(self.stride), offset=self.offset)

    def coalesce(self) -> Layout:
        """The fewest flat modes with the same map from flat index to offset: extent-1
        modes dropped, mode i+1 merged into mode i when ``stride[i+1] == shape[i]*stride[i]``.

        >>> Layout(shape=(4, 1, (2, 3)), stride=(1, 7, (4, 8))).coalesce()
        Layout(shape=(24,), stride=(1,), offset=0)
        """
        modes: list[tuple[int, int]] = []
        for s, d in zip(_flat(self.shape), _flat(self.stride), strict=True):
            if s == 1:
                continue
            if modes and d == modes[-1][0] * modes[-1][1]:
                modes[-1] = (modes[-1][0] * s, modes[-1][1])
            else:
                modes.append((s, d))
        if not modes:
            modes = [(1, 0)]
        return Layout(shape=tuple(s for s, _ in modes), stride=tuple(d for _, d in modes), offset=self.offset)

    def restrict(self, index: int, start: int, stop: int) -> Layout:
        """Keep coordinates ``start <= c < stop`` of flat mode `index`: a slice, whose
        coordinate c' maps where ``start + c'`` mapped.

        >>> Layout(shape=(8, 3), stride=(6, 2)).restrict(0, 4, 6)
        Layout(shape=(2, 3), stride=(6, 2), offset=24)
        """
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in (index, start, stop)):
            raise SpecError(f"restrict takes a mode and a range of ints, got {index!r}, {start!r}, {stop!r}"[:300])
        if not -len(self.shape) <= index < len(self.shape):
            raise SpecError(f"layout {self} has no mode {index}")
        index %= len(self.shape)  # a negative mode counts from the end, as `mode` does
        extent = self.shape[index]
        if isinstance(extent, tuple) or not 0 <= start < stop <= extent:
            raise SpecError(f"cannot restrict mode {index} of {self} to [{start}, {stop})")
        shape = self.shape[:index] + (stop - start,) + self.shape[index + 1:]
        return Layout(shape=shape, stride=self.stride, offset=self.offset + start * self.stride[index])

    def offsets(self) -> np.ndarray:
        """Offset of every flat index 0 .. size-1, as an int64 array."""
        return np.asarray(self(np.arange(self.size, dtype=np.int64)), np.int64).reshape(-1)
