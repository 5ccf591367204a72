"""What one request costs, in requests rather than spans: bytes, descriptors and local
copies per decode rank for a request of N tokens, and the time at a given bandwidth.

A plan's tables hold one span of each token group (the lcm of the two block sizes) and
one block of each state group; a request of N tokens repeats a token group's rows once
per span it covers (``ceil(N / span tokens)``) and a state group's once. Descriptors
count scattered block ids (nothing merges across blocks, as in a serving engine whose
block allocator has run a while) and every block of the request (sliding windows need
fewer). A bounce plan posts one copy per layer and source rank, and its local copies are
the pack and unpack steps; a staged or permuted conv strategy's are its pre and post steps.

>>> from kvplan import AttentionSpec, EngineSpec, ModelSpec, plan
>>> m = ModelSpec(name="m", layers=(AttentionSpec(num_kv_heads=8, head_dim=128),) * 32)
>>> c = request_cost(plan(EngineSpec(model=m, tp=2), EngineSpec(model=m, tp=4)), 8192)
>>> c.ranks[0].bytes, c.ranks[0].descriptors, c.total_bytes     # 512 blocks x 32 layers x 16 KiB
(268435456, 16384, 1073741824)
>>> print(c.table(bandwidth_GBps=50).splitlines()[2])
| 0 | 268,435,456 | 16,384 | 0 | 0 | 5.37 |
"""

from __future__ import annotations

import math

import attrs
import numpy as np

from ..errors import SpecError
from .cost import check_plan

MAX_REQUEST_TOKENS = 1 << 40


def check_request_tokens(request_tokens) -> int:
    if isinstance(request_tokens, bool) or not isinstance(request_tokens, (int, np.integer)) \
            or not 1 <= request_tokens <= MAX_REQUEST_TOKENS:
        raise SpecError(f"request_tokens must be an int from 1 to 2**40, got {request_tokens!r}")
    return int(request_tokens)


def copies_per_row(plan, table, request_tokens: int) -> np.ndarray:
    """How many times each row of `table` (read, pre or post rows of one decode rank)
    is copied for a request of `request_tokens` tokens: once per span of its token
    group, once for a state group."""
    return copies_per_layer(plan, request_tokens)[table.layer]


def copies_per_layer(plan, request_tokens: int) -> np.ndarray:
    """Per cache layer, how many times a request of `request_tokens` tokens repeats the
    layer's rows (its group's spans; 1 for a state group)."""
    src, dst = plan.src, plan.dst
    spans = []
    for g in range(len(dst.layer_groups)):
        if dst.group_is_token(g):
            blocks, _ = plan.blocks_per_span(g)
            spans.append(math.ceil(request_tokens / (blocks * src.group_block_tokens(g)[0])))
        else:
            spans.append(1)
    return np.array([spans[dst.group_of(layer)] for layer in range(dst.model.num_layers)], np.int64)


def bounce_copies(table) -> int:
    """Copies a bounce request posts: one per layer and source rank of its rows."""
    return len(np.unique(np.stack([table.layer, table.src_rank]), axis=1).T) if len(table) else 0


@attrs.frozen(kw_only=True)
class RankRequest:
    """One decode rank's part of a request: `bytes` moved between the engines in
    `descriptors` copies, and `local_copies` of `local_bytes` within one engine."""

    dst_rank: int
    bytes: int
    descriptors: int
    local_copies: int
    local_bytes: int

    def seconds(self, bandwidth_GBps: float) -> float:
        """The bytes at `bandwidth_GBps` (10**9 bytes per second), nothing else."""
        return self.bytes / (bandwidth_GBps * 1e9)


@attrs.frozen(kw_only=True)
class RequestCost:
    """A request of `request_tokens` tokens, per decode rank (`request_cost`)."""

    request_tokens: int
    ranks: tuple

    @property
    def total_bytes(self) -> int:
        return sum(r.bytes for r in self.ranks)

    @property
    def total_descriptors(self) -> int:
        return sum(r.descriptors for r in self.ranks)

    @property
    def total_local_copies(self) -> int:
        return sum(r.local_copies for r in self.ranks)

    def seconds(self, bandwidth_GBps: float) -> float:
        """Every decode rank reading at once, each over its own link of `bandwidth_GBps`:
        the slowest rank's time."""
        _check_bandwidth(bandwidth_GBps)
        return max(r.seconds(bandwidth_GBps) for r in self.ranks)

    def table(self, bandwidth_GBps: float | None = None) -> str:
        """A Markdown table, a row per decode rank, then the total (ms at the bandwidth, if given)."""
        if bandwidth_GBps is not None:
            _check_bandwidth(bandwidth_GBps)
        time = bandwidth_GBps is not None
        head = "| decode rank | bytes | descriptors | local copies | local bytes |" + (
            f" ms at {bandwidth_GBps:g} GB/s |" if time else "")
        lines = [head, "|---" * (5 + time) + "|"]
        for r in self.ranks:
            ms = f" {1e3 * r.seconds(bandwidth_GBps):.2f} |" if time else ""
            lines.append(f"| {r.dst_rank} | {r.bytes:,} | {r.descriptors:,} | {r.local_copies:,} | "
                         f"{r.local_bytes:,} |{ms}")
        ms = f" {1e3 * self.seconds(bandwidth_GBps):.2f} (in parallel) |" if time else ""
        lines.append(f"| all | {self.total_bytes:,} | {self.total_descriptors:,} | {self.total_local_copies:,} | "
                     f"{sum(r.local_bytes for r in self.ranks):,} |{ms}")
        return "\n".join(lines)


def _check_bandwidth(bandwidth_GBps) -> None:
    if isinstance(bandwidth_GBps, bool) or not isinstance(bandwidth_GBps, (int, float, np.integer, np.floating)) \
            or not 0 < bandwidth_GBps < float("inf"):
        raise SpecError(f"bandwidth must be a positive number of GB/s, got {bandwidth_GBps!r}")


def request_cost(plan, request_tokens: int, dst_rank: int | None = None) -> RequestCost:
    """Bytes, descriptors and local copies of a `request_tokens`-token request, for
    `dst_rank` or every decode rank (module docstring)."""
    check_plan(plan)
    request_tokens = check_request_tokens(request_tokens)
    ranks = range(len(plan.tables)) if dst_rank is None else [dst_rank]
    per_layer = copies_per_layer(plan, request_tokens)  # the same for every rank and table
    bounce = plan.transfer_strategy == "bounce"
    out = []
    for r in ranks:
        reads = plan.reads(r)  # RankError for a rank outside the decode engine
        # a bounce plan's reads are its staging copies; the bytes are its pack rows'
        moved = plan.pre_tables[r] if bounce else reads
        nbytes = int((moved.nbytes * per_layer[moved.layer]).sum())
        descriptors = bounce_copies(reads) if bounce else int(per_layer[reads.layer].sum())
        local_n = local_b = 0
        for steps in (plan.pre_tables, plan.post_tables):
            if steps and len(steps[r]):
                times = per_layer[steps[r].layer]
                local_n += int(times.sum())
                local_b += int((steps[r].nbytes * times).sum())
        out.append(RankRequest(dst_rank=int(r), bytes=nbytes, descriptors=descriptors, local_copies=local_n,
                               local_bytes=local_b))
    return RequestCost(request_tokens=request_tokens, ranks=tuple(out))
