"""`EngineTransferPlan`: the immutable result of `plan()`, covering every decode rank."""

from __future__ import annotations

import attrs
import numpy as np

from .cost import plan_cost
from .describe import describe
from .errors import RankError
from .groups import group_span
from .lowering import lower


@attrs.frozen(eq=False)
class EngineTransferPlan:
    """Every decode rank's reads from the prefill engine, per span of logical blocks.

    A group's span is the smallest token span both engines tile with whole logical
    blocks (lcm of the two block sizes; one block each for state groups); a
    `ReadTable`'s `src_block`/`dst_block` index the blocks inside its layer's span.
    """

    src: object
    dst: object
    tables: tuple
    conv_strategy: str = "direct"
    pre_tables: tuple = ()   # per dst rank: copies on source ranks before the reads (permuted)
    post_tables: tuple = ()  # per dst rank: copies on the destination after the reads
    src_scratch: tuple = ()  # per-request scratch Regions, ids after the engine's regions
    dst_scratch: tuple = ()
    # lowering's per-table segment classes, filled on first use (a cache, not state:
    # everything in it is a pure function of the fields above)
    lowering_cache: dict = attrs.field(factory=dict, init=False, repr=False)

    @property
    def src_regions(self) -> tuple:
        """Source region table: the engine's regions, then scratch regions."""
        return tuple(self.src.regions) + tuple(self.src_scratch)

    @property
    def dst_regions(self) -> tuple:
        return tuple(self.dst.regions) + tuple(self.dst_scratch)

    def blocks_per_span(self, group: int = 0) -> tuple[int, int]:
        """(prefill, decode) logical blocks per span of a group (1, 1 for state groups)."""
        return group_span(self.src, self.dst, group)

    @property
    def span_tokens(self) -> int:
        """Token span of the first group (the lcm of the two block sizes)."""
        ns, _ = self.blocks_per_span(0)
        return ns * self.src.group_block_tokens(0)[0] if self.src.group_is_token(0) else 1

    def reads(self, dst_rank: int):
        """The `ReadTable` of one decode rank (``stage * tp + tp_rank``)."""
        if isinstance(dst_rank, bool) or not isinstance(dst_rank, (int, np.integer)) or \
                not 0 <= dst_rank < len(self.tables):
            raise RankError(f"dst_rank {dst_rank} is outside the decode engine's {len(self.tables)} ranks")
        return self.tables[dst_rank]

    def lower(self, dst_rank: int, src_blocks, dst_blocks, *, prefix: str = "exact"):
        """Concrete coalesced `Transfer` for one request; see `kvplan.lowering.lower`."""
        return lower(self, dst_rank, src_blocks, dst_blocks, prefix=prefix)

    def cost(self, dst_rank: int | None = None):
        """Descriptors, bytes, local copies and scratch memory (`kvplan.cost.PlanCost`)."""
        return plan_cost(self, dst_rank)

    def describe(self) -> str:
        """Human-readable summary, one paragraph per decode rank."""
        return describe(self)
