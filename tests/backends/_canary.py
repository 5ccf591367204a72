"""Buffers with canary guard bands.

Every buffer a fault test registers is the middle of a larger array whose head and tail
(`GUARD` bytes each) hold random bytes remembered at allocation; `Canaries.damaged()`
names every guard band whose bytes changed, i.e. every byte a transport wrote outside
the memory it was given.

>>> canaries = Canaries()
>>> b = canaries.buffer(np.arange(8, dtype=np.uint8))
>>> b.tolist(), canaries.damaged()
([0, 1, 2, 3, 4, 5, 6, 7], [])
>>> b.base[GUARD + 8] ^= 1        # one byte past the end
>>> canaries.damaged()
['buffer 0 tail, byte 0']
"""

from __future__ import annotations

import numpy as np

GUARD = 4096


class Canaries:
    """Allocates guarded host buffers and checks their guard bands."""

    def __init__(self, seed: int = 7):
        self._rng = np.random.default_rng(seed)
        self._arenas: list[tuple[np.ndarray, int, np.ndarray, np.ndarray]] = []

    def buffer(self, data) -> np.ndarray:
        """A guarded uint8 buffer holding `data` (an array, copied) or `data` zero bytes."""
        data = np.zeros(data, np.uint8) if isinstance(data, (int, np.integer)) else np.asarray(data, np.uint8)
        n = data.size
        arena = np.empty(2 * GUARD + n, np.uint8)
        head, tail = (self._rng.integers(0, 256, GUARD, dtype=np.uint8) for _ in range(2))
        arena[:GUARD], arena[GUARD + n:] = head, tail
        middle = arena[GUARD:GUARD + n]
        middle[:] = data.reshape(-1)
        self._arenas.append((arena, n, head, tail))
        return middle

    def buffers(self, arrays) -> list:
        """`buffer` of every array of a list (None stays None)."""
        return [None if a is None else self.buffer(a) for a in arrays]

    def damaged(self) -> list[str]:
        """'buffer i head|tail, byte k' for the first changed byte of every damaged band."""
        out = []
        for i, (arena, n, head, tail) in enumerate(self._arenas):
            for name, band, want in (("head", arena[:GUARD], head), ("tail", arena[GUARD + n:], tail)):
                bad = np.flatnonzero(band != want)
                if len(bad):
                    out.append(f"buffer {i} {name}, byte {int(bad[0])}")
        return out
