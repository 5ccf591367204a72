"""A plan's summary as JSON (schema ``kvplan.plan-summary/1``): what ``kvplan plan --json``
prints, small whatever the plan's size.

It shares its fields with the plan document (``kvplan.plan/1``, `kvplan.plan_to_json`):
the same ``fingerprint``, strategies, engines (``kvplan.engine/1`` objects, with every
layer's dtype, windows, groups, pooling and conv layout) and region tables (scratch
regions included); instead of every row it gives, per decode rank, the source ranks and
the counts of `kvplan.report.plan_cost` in explicit units (per span of a token group,
per block of a state group). With `request_tokens`, a ``request`` object gives a whole
request's numbers (`kvplan.report.request_cost`); with ``rows=True`` the whole plan
document rides along as ``plan`` (what `kvplan.plan_from_json` reads). docs/json.md
describes every field.

>>> from kvplan import AttentionSpec, EngineSpec, ModelSpec, plan
>>> m = ModelSpec(name="m", layers=(AttentionSpec(num_kv_heads=8, head_dim=128),) * 2)
>>> s = plan_summary(plan(EngineSpec(model=m, tp=2), EngineSpec(model=m, tp=4)), request_tokens=32)
>>> s["schema"], s["span_tokens"], s["ranks"][3]["source_ranks"], s["ranks"][3]["token_bytes_per_span"]
('kvplan.plan-summary/1', 16, [1], 32768)
>>> s["request"]["ranks"][3]["bytes"], "plan" in s
(65536, False)
"""

from __future__ import annotations

import attrs

from ..planning.serial import plan_document
from .cost import check_plan, plan_cost
from .request_cost import request_cost

SCHEMA = "kvplan.plan-summary/1"
_SHARED = ("fingerprint", "conv_strategy", "transfer_strategy", "src", "dst", "src_regions", "dst_regions")


def plan_summary(plan, *, dst_rank: int | None = None, request_tokens: int | None = None,
                 rows: bool = False) -> dict:
    """The summary object of `plan` (module docstring); `dst_rank`: that decode rank only."""
    check_plan(plan)
    document = plan_document(plan)
    ranks = range(len(plan.tables)) if dst_rank is None else [plan.reads(dst_rank).dst_rank]
    out = {"schema": SCHEMA, **{key: document[key] for key in _SHARED}, "span_tokens": int(plan.span_tokens),
           "ranks": [_rank(plan, r) for r in ranks]}
    if request_tokens is not None:
        cost = request_cost(plan, request_tokens, dst_rank)
        out["request"] = {"request_tokens": cost.request_tokens, "ranks": [attrs.asdict(r) for r in cost.ranks],
                          "total_bytes": cost.total_bytes, "total_descriptors": cost.total_descriptors}
    if rows:
        out["plan"] = document
    return out


def _rank(plan, r: int) -> dict:
    cost = plan_cost(plan, r)
    return {"dst_rank": int(r), "source_ranks": [int(s) for s in plan.reads(r).source_ranks],
            "token_reads_per_span": cost.attention_descriptors, "token_bytes_per_span": cost.attention_bytes,
            "state_reads_per_block": cost.state_descriptors, "state_bytes_per_block": cost.state_bytes,
            "local_copies": cost.local_copies, "local_bytes": cost.local_bytes}
