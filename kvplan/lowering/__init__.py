"""Stage 4, lowering: a plan and a request's block ids -> concrete byte-range copies.

`request` validates and pairs a request's block ids (`RequestBlocks`); `lower` turns
them and a decode rank's reads into a coalesced `Transfer`; `template` keeps a rank's
reads block-relative for a device to evaluate (`CopyTemplate`); `ring` cuts a bounce
request into chunks through bounded staging; `descriptors` shapes
rows for transports (prepared lists, staging, pieces); `addresses` is the one binding
rule; `bounds` the check every backend runs before a byte moves; `integrity` the
digests of integrity mode.
"""

from .addresses import bind, bind_ranked, per_rank
from .bounds import check_bounds, check_descriptors, check_transfer
from .descriptors import DescriptorList, PreparedLists, Staged, prepared_lists, source_ranks, split_ranges, staged
from .integrity import mix, range_digests
from .lower import RequestRows, lower, lower_push, request_rows
from .request import GroupRequest, RequestBlocks, block_ids, request_blocks
from .ring import RingCopies, StagingRing, pair_span_bytes, ring_buffer_bytes, ring_chunks, staging_ring
from .template import CopyTemplate, copy_template, expand, expand_step, positional
from .transfer import Transfer, scratch_buffer_bytes

__all__ = [
    "CopyTemplate", "DescriptorList", "GroupRequest", "PreparedLists", "RequestBlocks", "RequestRows", "Staged",
    "RingCopies", "StagingRing", "Transfer", "bind", "bind_ranked", "block_ids", "check_bounds", "check_descriptors", "check_transfer", "copy_template", "expand", "expand_step", "lower", "lower_push", "per_rank", "positional",
    "mix", "pair_span_bytes", "prepared_lists", "range_digests", "request_blocks", "request_rows", "ring_buffer_bytes", "ring_chunks", "scratch_buffer_bytes", "source_ranks", "split_ranges", "staged", "staging_ring",
]
