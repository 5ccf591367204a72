"""`PlanTables`: what planning produces, as plain data.

Per decode rank a `ReadTable` of reads for one span of logical blocks, both engines'
region tables (what the rows' region ids index), and (staged or permuted conv
strategies) the local copies before and after the reads, whose per-request scratch
regions follow the engines' own in the region tables. Accessors here only read the data; lowering,
costs and descriptions are functions of later stages over it (`kvplan.lowering`,
`kvplan.report`), bound as methods by the public `kvplan.EngineTransferPlan`.
"""

from __future__ import annotations

import math

import attrs
import numpy as np

from ..errors import RankError


def blocks_per_span(src, dst, group: int) -> tuple[int, int]:
    """(prefill, decode) logical blocks per span of a group: the smallest token span both
    tile with whole blocks (1, 1 for state groups, which pair block for block).

    >>> from kvplan.spec import AttentionSpec, EngineSpec, ModelSpec
    >>> m = ModelSpec(name="m", layers=(AttentionSpec(2, 8),))
    >>> blocks_per_span(EngineSpec(model=m, block_tokens=48), EngineSpec(model=m, block_tokens=32), 0)
    (2, 3)
    """
    if not src.group_is_token(group):
        return 1, 1
    a, b = src.group_block_tokens(group)[0], dst.group_block_tokens(group)[0]
    span = math.lcm(a, b)
    return span // a, span // b


def _rank(value, count: int, name: str, engine: str) -> int:
    """A rank of an engine of `count` ranks as an int; `RankError` naming it otherwise."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not 0 <= value < count:
        raise RankError(f"{name} {value} is outside the {engine} engine's {count} ranks")
    return int(value)


@attrs.frozen(eq=False, kw_only=True, repr=False)
class PlanTables:
    """Every decode rank's reads from the prefill engine, per span of logical blocks.

    A group's span is the smallest token span both engines tile with whole logical
    blocks (lcm of the two block sizes; one block each for state groups); a
    `ReadTable`'s `src_block`/`dst_block` index the blocks inside its layer's span.

    >>> from kvplan.planning import plan_tables
    >>> from kvplan.spec import AttentionSpec, EngineSpec, ModelSpec
    >>> m = ModelSpec(name="m", layers=(AttentionSpec(2, 8),) * 3)
    >>> p = plan_tables(EngineSpec(model=m, block_tokens=48), EngineSpec(model=m, block_tokens=32))
    >>> p.span_tokens, p.blocks_per_span(0), len(p.tables), [r.name for r in p.src_regions]
    (96, (2, 3), 1, ['layers.0', 'layers.1', 'layers.2'])
    """

    src: object
    dst: object
    tables: tuple
    src_regions: tuple  # the source region table: the engine's regions, then scratch regions
    dst_regions: tuple
    fingerprint: str  # the engines' and the strategy's (`kvplan.spec.pair_fingerprint`)
    conv_strategy: str = "direct"
    transfer_strategy: str = "direct"  # "bounce": reads through staging (`kvplan.planning.bounce`)
    pre_tables: tuple = ()   # per dst rank: copies on source ranks before the reads (permuted)
    post_tables: tuple = ()  # per dst rank: copies on the destination after the reads

    def __repr__(self) -> str:
        # the tables run to megabytes: name the plan, `describe()` and `reads(r)` show it
        rows = sum(len(t) for t in self.tables)
        return (f"{type(self).__name__}(model={self.dst.model.name!r}, src=TP {self.src.tp} x PP {self.src.pp}, "
                f"dst=TP {self.dst.tp} x PP {self.dst.pp}, conv_strategy={self.conv_strategy!r}, "
                f"transfer_strategy={self.transfer_strategy!r}, fingerprint={self.fingerprint!r}, "
                f"decode_ranks={len(self.tables)}, reads_per_span={rows:,})")

    @property
    def src_scratch(self) -> tuple:
        """Per-request scratch regions of the source side (ids after the engine's regions)."""
        return tuple(r for r in self.src_regions if r.per_request)

    @property
    def dst_scratch(self) -> tuple:
        return tuple(r for r in self.dst_regions if r.per_request)

    @property
    def has_local_steps(self) -> bool:
        """True when a conv strategy added local copies (pre or post steps)."""
        return bool(self.pre_tables or self.post_tables)

    def blocks_per_span(self, group: int = 0) -> tuple[int, int]:
        """(prefill, decode) logical blocks per span of a group (1, 1 for state groups)."""
        return blocks_per_span(self.src, self.dst, group)

    @property
    def span_tokens(self) -> int:
        """Token span of the first group (the lcm of the two block sizes)."""
        ns, _ = self.blocks_per_span(0)
        return ns * self.src.group_block_tokens(0)[0] if self.src.group_is_token(0) else 1

    def reads(self, dst_rank: int):
        """The `ReadTable` of one decode rank (``stage * tp + tp_rank``)."""
        return self.tables[_rank(dst_rank, len(self.tables), "dst_rank", "decode")]

    def check_src_rank(self, src_rank: int) -> int:
        """`src_rank` as an int, or `RankError` when it is not a prefill rank."""
        return _rank(src_rank, self.src.world_size, "src_rank", "prefill")

    def writes(self, src_rank: int) -> tuple:
        """What prefill rank `src_rank` writes into each decode rank, for a push: one
        `ReadTable` per decode rank (in rank order; empty where it writes nothing), the
        rows of that rank's reads sourced here. The same plan seen from the prefill side.

        >>> from kvplan.planning import plan_tables
        >>> from kvplan.spec import AttentionSpec, EngineSpec, ModelSpec
        >>> m = ModelSpec(name="m", layers=(AttentionSpec(8, 128),))
        >>> p = plan_tables(EngineSpec(model=m, tp=2), EngineSpec(model=m, tp=4))
        >>> [len(t) for t in p.writes(1)]      # prefill rank 1 holds heads 4-7: decode ranks 2, 3
        [0, 0, 1, 1]
        """
        src_rank = self.check_src_rank(src_rank)
        return tuple(t.select(t.src_rank == src_rank) for t in self.tables)
