"""`Transfer`: concrete, coalesced byte-range copies for one request on one rank."""

from __future__ import annotations

import attrs
import numpy as np

from ..errors import BoundsError, RankError, SpecError
from ..planning.rows import CopyRows
from .addresses import bind, bind_ranked
from .compact import CompactRows


def _regions(value, name: str) -> tuple:
    """A region table: a tuple or list of regions (its length is what row ids are checked against)."""
    if not isinstance(value, (tuple, list)):
        raise SpecError(f"Transfer.{name} must be a tuple of regions, got {value!r}"[:300])
    return tuple(value)


def _steps(name: str, value) -> None:
    if value is not None and not isinstance(value, Transfer):
        raise SpecError(f"Transfer.{name} must be a Transfer or None, got {value!r}"[:300])


def _fingerprint(value) -> None:
    if not isinstance(value, str):
        raise SpecError(f"Transfer.plan_fingerprint must be a string, got {value!r}"[:300])


@attrs.frozen(kw_only=True)
class Transfer(CopyRows):
    """Copies for one destination rank and one request, relative to region bases.

    Row i copies `nbytes[i]` bytes from ``base(src_rank[i], src_region[i]) + src_offset[i]``
    to ``base(dst_rank, dst_region[i]) + dst_offset[i]``. Rows contiguous on both sides
    are merged. `src_regions` / `dst_regions` are the engines' region tables (index =
    region id), which is what a backend registers and binds base addresses to;
    per-request scratch regions of a conv strategy follow the engine's own.

    `pre_steps` / `post_steps` (staged and permuted conv strategies) are Transfers whose
    both sides lie in one engine's memory: pre steps run on each `src_rank` before the
    reads, post steps on the destination after them. `plan_fingerprint` names the plan a
    Transfer was lowered from ("" for one built by hand), so a backend prepared for
    another plan refuses it. Every column is refused negative at construction, and every
    region id past the region tables given.

    `lower()` builds its Transfers compact (`from_compact`): the columns are kept as one
    layer's copies plus a region id per layer, and expanded into int64 arrays when one
    is first read; `len()`, `for_source` and the steps do not expand them.

    >>> t = Transfer(dst_rank=0, src_rank=[1], src_region=[0], src_offset=[64], dst_region=[2], dst_offset=[8],
    ...              nbytes=[16])
    >>> [a.tolist() for a in t.bind({1: [1000]}, [0, 0, 5000])]
    [[1064], [5008]]
    """

    src_regions: tuple = attrs.field(default=(), kw_only=True, converter=lambda v: _regions(v, "src_regions"))
    dst_regions: tuple = attrs.field(default=(), kw_only=True, converter=lambda v: _regions(v, "dst_regions"))
    pre_steps: Transfer | None = attrs.field(default=None, kw_only=True,  # on the source ranks, before the reads
                                             validator=lambda _, a, v: _steps(a.name, v))
    post_steps: Transfer | None = attrs.field(default=None, kw_only=True,  # on the destination, after them
                                              validator=lambda _, a, v: _steps(a.name, v))
    plan_fingerprint: str = attrs.field(default="", kw_only=True, validator=lambda _, __, v: _fingerprint(v))
    # the columns before expansion (`from_compact`); None once built from columns
    _compact: CompactRows | None = attrs.field(default=None, init=False, eq=False, hash=False, repr=False)

    @classmethod
    def from_compact(cls, rows: CompactRows, *, dst_rank: int, src_regions: tuple, dst_regions: tuple,
                     pre_steps: Transfer | None = None, post_steps: Transfer | None = None,
                     plan_fingerprint: str = "") -> Transfer:
        """A Transfer of `rows`, columns expanded on first read. Not validated: for the
        lowering, whose rows are in range by construction (the table's columns were
        checked when planned, block ids when the request was paired; a test checks
        that every lowered Transfer passes the validating constructor)."""
        t = object.__new__(cls)
        for name, value in (("dst_rank", dst_rank), ("src_regions", tuple(src_regions)),
                            ("dst_regions", tuple(dst_regions)), ("pre_steps", pre_steps),
                            ("post_steps", post_steps), ("plan_fingerprint", plan_fingerprint), ("_compact", rows)):
            object.__setattr__(t, name, value)
        return t

    def __getattr__(self, name: str):
        # reached only when normal lookup fails: a compact Transfer's column slots stay
        # empty until a column is read, then all are filled at once (a cache; values
        # never change)
        compact = object.__getattribute__(self, "_compact")
        if compact is None or name not in compact.names:
            raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")
        for column, values in compact.expand().items():
            object.__setattr__(self, column, values)
        return object.__getattribute__(self, name)

    @property
    def held_bytes(self) -> int:
        """Bytes of the arrays this Transfer holds: its compact form, plus the columns
        once expanded (48 B a copy).

        >>> from kvplan.spec import AttentionSpec, EngineSpec, ModelSpec
        >>> from kvplan.planning import plan_tables
        >>> from kvplan.lowering import lower
        >>> m = ModelSpec(name="m", layers=(AttentionSpec(num_kv_heads=8, head_dim=128),) * 32)
        >>> t = lower(plan_tables(EngineSpec(model=m), EngineSpec(model=m)), 0, [7, 3, 5], [1, 2, 4])
        >>> len(t), t.held_bytes                # 32 layers x 3 blocks, kept as 3 copies + 32 regions
        (96, 656)
        >>> _ = t.nbytes; t.held_bytes          # after a column is read
        5264
        """
        held = 0 if self._compact is None else self._compact.held_bytes
        for name in self.column_names():
            try:
                held += object.__getattribute__(self, name).nbytes
            except AttributeError:  # not expanded yet
                pass
        return held

    def __len__(self) -> int:
        compact = self._compact
        return len(compact) if compact is not None else super().__len__()

    def __attrs_post_init__(self):
        super().__attrs_post_init__()
        if isinstance(self.dst_rank, bool) or not isinstance(self.dst_rank, (int, np.integer)) or self.dst_rank < 0:
            raise BoundsError(f"Transfer.dst_rank must be an int >= 0, got {self.dst_rank!r}")
        if not len(self):
            return
        for name, col in self.columns().items():
            if col.min() < 0:
                row = int(np.flatnonzero(col < 0)[0])
                raise BoundsError(f"Transfer row {row} has {name} {int(col[row])}: rows name memory at offsets, "
                                  "lengths, ranks and regions >= 0")
        for name, regions in (("src_region", self.src_regions), ("dst_region", self.dst_regions)):
            col = getattr(self, name)
            if regions and col.max() >= len(regions):
                row = int(np.flatnonzero(col >= len(regions))[0])
                raise BoundsError(f"Transfer row {row} names {name} {int(col[row])}; its region table has "
                                  f"{len(regions)} regions")

    def for_source(self, src_rank: int) -> Transfer:
        """The rows read from one source rank (one peer of the transport)."""
        if isinstance(src_rank, bool) or not isinstance(src_rank, (int, np.integer)):
            raise RankError(f"for_source takes a source rank (an int), got {src_rank!r}")
        mine = None if self._compact is None else self._compact.where("src_rank", int(src_rank))
        if mine is None:
            return self.select(self.src_rank == src_rank)
        return Transfer.from_compact(mine, dst_rank=self.dst_rank, src_regions=self.src_regions,
                                     dst_regions=self.dst_regions, pre_steps=self.pre_steps,
                                     post_steps=self.post_steps, plan_fingerprint=self.plan_fingerprint)

    def bind(self, src_bases, dst_bases) -> tuple[np.ndarray, np.ndarray]:
        """Absolute (src_addr, dst_addr) uint64 arrays: `src_bases[rank][region]` and
        `dst_bases[region]` are base addresses (`kvplan.lowering.addresses`)."""
        return (bind_ranked(self.src_rank, self.src_region, self.src_offset, src_bases),
                bind(self.dst_region, self.dst_offset, dst_bases))

    def scratch_bytes(self) -> tuple[dict[int, int], dict[int, int]]:
        """Bytes of each per-request scratch region this request uses: (source side,
        destination side), by region id; what a rank's scratch buffers must hold at
        least (bounce staging grows with the request; the gate refuses smaller ones).

        >>> from kvplan import AttentionSpec, EngineSpec, ModelSpec, plan
        >>> m = ModelSpec(name="m", layers=(AttentionSpec(num_kv_heads=8, head_dim=128),))
        >>> p = plan(EngineSpec(model=m, tp=2), EngineSpec(model=m, tp=4), transfer_strategy="bounce")
        >>> p.lower(3, [7, 8, 9], [40, 41, 2]).scratch_bytes()   # 3 blocks x 2 heads x 8 KiB each side
        ({4: 49152}, {2: 49152})
        """
        def extents(parts) -> dict[int, int]:
            out: dict[int, int] = {}
            for regions, region, offset, nbytes in parts:
                scratch = np.array([r.per_request for r in regions], bool)
                if not len(region) or not scratch.any():
                    continue
                rows = scratch[region]
                ends = np.zeros(len(regions), np.int64)
                np.maximum.at(ends, region[rows], offset[rows] + nbytes[rows])
                for i in np.flatnonzero(ends):
                    out[int(i)] = max(out.get(int(i), 0), int(ends[i]))
            return out

        def sides(t, *names) -> list:
            return [] if t is None else [(getattr(t, f"{n}_regions"), getattr(t, f"{n}_region"),
                                          getattr(t, f"{n}_offset"), t.nbytes) for n in names]

        return (extents(sides(self, "src") + sides(self.pre_steps, "src", "dst")),
                extents(sides(self, "dst") + sides(self.post_steps, "src", "dst")))

    def __str__(self) -> str:
        lines = [f"Transfer(dst_rank={self.dst_rank}, rows={len(self)}, bytes={self.total_bytes}, "
                 f"sources={list(self.source_ranks)})"]
        for i in range(min(len(self), 20)):
            lines.append(f"  src r{self.src_rank[i]} reg {self.src_region[i]} +{self.src_offset[i]} -> "
                         f"dst reg {self.dst_region[i]} +{self.dst_offset[i]}  {self.nbytes[i]} B")
        if len(self) > 20:
            lines.append(f"  ... {len(self) - 20} more rows")
        return "\n".join(lines)


def scratch_buffer_bytes(plan, transfers) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Bytes each per-request scratch buffer must hold for every one of `transfers`
    (lowered from `plan`): (prefill side in `plan.src_scratch` order, decode side in
    `plan.dst_scratch` order), 0 for a buffer none of them uses. What to allocate after
    the engine's own regions when registering (`Transfer.scratch_bytes` per request).

    >>> from kvplan import AttentionSpec, EngineSpec, ModelSpec, plan
    >>> m = ModelSpec(name="m", layers=(AttentionSpec(num_kv_heads=8, head_dim=128),))
    >>> p = plan(EngineSpec(model=m, tp=2), EngineSpec(model=m, tp=4), transfer_strategy="bounce")
    >>> scratch_buffer_bytes(p, [p.lower(3, [7, 8, 9], [40, 41, 2]), p.lower(3, [1], [5])])
    ((0, 0, 0, 49152), (0, 49152))
    """
    first_src = len(plan.src_regions) - len(plan.src_scratch)
    first_dst = len(plan.dst_regions) - len(plan.dst_scratch)
    src, dst = [0] * len(plan.src_scratch), [0] * len(plan.dst_scratch)
    for transfer in transfers:
        used_src, used_dst = transfer.scratch_bytes()
        for sizes, used, first in ((src, used_src, first_src), (dst, used_dst, first_dst)):
            for region, size in used.items():
                sizes[region - first] = max(sizes[region - first], size)
    return tuple(src), tuple(dst)