"""Stage 4, lowering: a plan and a request's block ids -> concrete byte-range copies.

`request` validates and pairs a request's block ids (`RequestBlocks`); `lower` turns
them and a decode rank's reads into a coalesced `Transfer`; `template` keeps a rank's
reads block-relative for a device to evaluate (`CopyTemplate`); `descriptors` shapes
rows for transports (prepared lists, staging, pieces); `addresses` is the one binding
rule; `bounds` the check every backend runs before a byte moves.
"""

from .addresses import bind, bind_ranked, per_rank
from .bounds import check_bounds, check_descriptors
from .descriptors import DescriptorList, PreparedLists, Staged, prepared_lists, source_ranks, split_ranges, staged
from .lower import RequestRows, lower, request_rows
from .request import GroupRequest, RequestBlocks, block_ids, request_blocks
from .template import CopyTemplate, copy_template, expand
from .transfer import Transfer

__all__ = [
    "CopyTemplate", "DescriptorList", "GroupRequest", "PreparedLists", "RequestBlocks", "RequestRows", "Staged",
    "Transfer", "bind", "bind_ranked", "block_ids", "check_bounds", "check_descriptors", "copy_template", "expand", "lower", "per_rank",
    "prepared_lists", "request_blocks", "request_rows", "source_ranks", "split_ranges", "staged",
]
