"""What a plan costs per request unit: descriptors, bytes, local copies, scratch memory.

Counts are per span of each token group (the lcm of the two block sizes) and per
state block of each state group, summed over all decode ranks (or for one rank):
the numbers a transport pays per request block, before coalescing across blocks.
"""

from __future__ import annotations

import attrs
import numpy as np

from ..errors import RankError, SpecError
from ..planning.conv import STRATEGIES
from ..planning.plan_tables import PlanTables
from ..planning.planner import plan_tables


@attrs.frozen(kw_only=True)
class PlanCost:
    """Costs of one plan (see module docstring).

    `attention_*` count token layers, `state_*` state layers; `local_copies` /
    `local_bytes` are the pre and post steps of a staged or permuted conv strategy;
    `scratch_bytes` is the per-request scratch memory per state block (both sides);
    `plan_cost` computes one.
    """

    conv_strategy: str
    attention_descriptors: int
    attention_bytes: int
    state_descriptors: int
    state_bytes: int
    local_copies: int
    local_bytes: int
    scratch_bytes: int

    def row(self) -> str:
        return (f"| {self.conv_strategy} | {self.attention_descriptors} | {self.attention_bytes:,} | "
                f"{self.state_descriptors} | {self.state_bytes:,} | {self.local_copies} | {self.local_bytes:,} | "
                f"{self.scratch_bytes:,} |")


def check_plan(plan) -> None:
    """Raise `SpecError` unless `plan` is a plan (`kvplan.plan`'s, or planning's tables).

    >>> check_plan("plan.json")
    Traceback (most recent call last):
    ...
    kvplan.errors.SpecError: expected a plan from kvplan.plan(), got str
    """
    if not isinstance(plan, PlanTables):
        raise SpecError(f"expected a plan from kvplan.plan(), got {type(plan).__name__}")


HEADER = ("| conv strategy | attention descriptors/span | attention bytes/span | state descriptors/block | "
          "state bytes/block | local copies | local bytes | scratch bytes |\n|---|---|---|---|---|---|---|---|")


def plan_cost(plan, dst_rank: int | None = None) -> PlanCost:
    """Costs of `plan` for one decode rank, or summed over all of them.

    >>> from kvplan.planning import plan_tables
    >>> from kvplan.spec import AttentionSpec, EngineSpec, ModelSpec
    >>> m = ModelSpec(name="m", layers=(AttentionSpec(num_kv_heads=8, head_dim=128),) * 2)
    >>> c = plan_cost(plan_tables(EngineSpec(model=m, tp=8), EngineSpec(model=m, tp=2)), 0)
    >>> c.attention_descriptors, c.attention_bytes, c.state_descriptors    # 2 layers x 4 source pages
    (8, 65536, 0)
    """
    check_plan(plan)
    ranks = range(len(plan.tables)) if dst_rank is None else [dst_rank]
    if dst_rank is not None and (isinstance(dst_rank, bool) or not isinstance(dst_rank, (int, np.integer))
                                 or not 0 <= dst_rank < len(plan.tables)):
        raise RankError(f"dst_rank {dst_rank} is outside the decode engine's {len(plan.tables)} ranks")
    token = np.array([spec.holds_tokens for spec in plan.dst.model.layers])
    att_n = att_b = st_n = st_b = loc_n = loc_b = 0
    for r in ranks:
        table = plan.tables[r]
        is_tok = token[table.layer]
        att_n += int(is_tok.sum())
        att_b += int(table.nbytes[is_tok].sum())
        st_n += int((~is_tok).sum())
        st_b += int(table.nbytes[~is_tok].sum())
        for steps in (plan.pre_tables, plan.post_tables):
            if steps:
                loc_n += len(steps[r])
                loc_b += steps[r].total_bytes
    scratch = sum(r.block_bytes for r in plan.src_scratch) * plan.src.world_size \
        + sum(r.block_bytes for r in plan.dst_scratch) * (len(ranks))
    return PlanCost(conv_strategy=plan.conv_strategy, attention_descriptors=att_n, attention_bytes=att_b,
                    state_descriptors=st_n, state_bytes=st_b, local_copies=loc_n, local_bytes=loc_b,
                    scratch_bytes=scratch)


def compare_conv_strategies(src, dst, dst_rank: int | None = None) -> str:
    """Markdown table of `plan_cost` for every conv strategy of one engine pair.

    >>> from kvplan.spec import AttentionSpec, EngineSpec, Mamba1Spec, ModelSpec
    >>> m = ModelSpec(name="m", layers=(AttentionSpec(2, 8), Mamba1Spec(intermediate_size=8, d_state=2, conv_kernel=4)))
    >>> print(compare_conv_strategies(EngineSpec(model=m, tp=1), EngineSpec(model=m, tp=2), dst_rank=0))
    ... # doctest: +NORMALIZE_WHITESPACE
    | conv strategy | attention descriptors/span | attention bytes/span | state descriptors/block | state bytes/block | local copies | local bytes | scratch bytes |
    |---|---|---|---|---|---|---|---|
    | direct | 1 | 512 | 2 | 56 | 0 | 0 | 0 |
    | staged | 1 | 512 | 2 | 80 | 1 | 24 | 48 |
    | permuted | 1 | 512 | 2 | 56 | 1 | 24 | 48 |
    """
    return "\n".join([HEADER] + [cost.row() for cost in conv_strategy_costs(src, dst, dst_rank)])


def conv_strategy_costs(src, dst, dst_rank: int | None = None) -> tuple[PlanCost, ...]:
    """`plan_cost` of every conv strategy of one engine pair, in `STRATEGIES` order (the
    rows of `compare_conv_strategies`, and ``kvplan plan --costs --json``)."""
    return tuple(plan_cost(plan_tables(src, dst, conv_strategy=s), dst_rank) for s in STRATEGIES)
