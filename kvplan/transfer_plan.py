"""`EngineTransferPlan`: the immutable result of `plan()`, covering every decode rank."""

from __future__ import annotations

import attrs

from .describe import describe
from .errors import RankError
from .lowering import lower


@attrs.frozen(eq=False)
class EngineTransferPlan:
    """Every decode rank's reads from the prefill engine, per span of logical blocks.

    `span_tokens` is the smallest token span both engines tile with whole logical
    blocks (lcm of the two block sizes); a `ReadTable`'s `src_block`/`dst_block` index
    the blocks inside it.
    """

    src: object
    dst: object
    span_tokens: int
    tables: tuple

    @property
    def src_blocks_per_span(self) -> int:
        return self.span_tokens // self.src.block_tokens

    @property
    def dst_blocks_per_span(self) -> int:
        return self.span_tokens // self.dst.block_tokens

    def reads(self, dst_rank: int):
        """The `ReadTable` of one decode rank (``stage * tp + tp_rank``)."""
        if not 0 <= dst_rank < len(self.tables):
            raise RankError(f"dst_rank {dst_rank} is outside the decode engine's {len(self.tables)} ranks")
        return self.tables[dst_rank]

    def lower(self, dst_rank: int, src_blocks, dst_blocks):
        """Concrete coalesced `Transfer` for one request; see `kvplan.lowering.lower`."""
        return lower(self, dst_rank, src_blocks, dst_blocks)

    def describe(self) -> str:
        """Human-readable summary, one paragraph per decode rank."""
        return describe(self)
