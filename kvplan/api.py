"""The public entry point: `plan()` and the `EngineTransferPlan` it returns.

Planning produces plain data (`kvplan.planning.PlanTables`); lowering and reports are
functions of later stages over it. `EngineTransferPlan` is that data with those
functions bound as methods for convenience (``p.lower(...)`` is
``kvplan.lowering.lower(p, ...)``), defined here, after every stage it calls, so no
stage imports a later one.
"""

from __future__ import annotations

import attrs

from .lowering.lower import lower, lower_push
from .lowering.transfer import Transfer
from .planning.plan_tables import PlanTables
from .planning.planner import plan_tables
from .planning.serial import tables_from_json, tables_to_json
from .report.cost import PlanCost, plan_cost
from .report.estimate import TRANSPORT_MODELS, TransferEstimate, estimate
from .report.describe import describe
from .report.picture import plan_picture
from .report.request_cost import RequestCost, request_cost
from .errors import SpecError
from .spec.engine import EngineSpec
from .spec.store import StoreSpec, as_engine, check_window_reads


@attrs.frozen(eq=False, kw_only=True, repr=False)
class EngineTransferPlan(PlanTables):
    """Every decode rank's reads from the prefill engine, with its consumers as methods.

    >>> from kvplan import AttentionSpec, ModelSpec, EngineSpec
    >>> m = ModelSpec(name="m", layers=(AttentionSpec(num_kv_heads=8, head_dim=128),))
    >>> p = plan(EngineSpec(model=m, tp=2), EngineSpec(model=m, tp=4))
    >>> p.lower(3, [7, 8], [40, 41]).nbytes.tolist(), p.cost().attention_bytes
    ([16384, 16384], 65536)
    """

    def lower(self, dst_rank: int, src_blocks, dst_blocks, *, prefix: str = "exact", layers=None) -> Transfer:
        """Concrete coalesced `Transfer` for one request (`kvplan.lowering.lower`);
        `layers`: only a range of layers (streaming a request layer by layer)."""
        return lower(self, dst_rank, src_blocks, dst_blocks, prefix=prefix, layers=layers)

    def lower_push(self, src_rank: int, src_blocks, dst_blocks, *, prefix: str = "exact", layers=None) -> tuple:
        """What prefill rank `src_rank` writes for one request, per decode rank
        (`kvplan.lowering.lower_push`)."""
        return lower_push(self, src_rank, src_blocks, dst_blocks, prefix=prefix, layers=layers)

    def cost(self, dst_rank: int | None = None, *, request_tokens: int | None = None) -> PlanCost | RequestCost:
        """Descriptors, bytes, local copies and scratch memory per span and state block
        (`kvplan.report.plan_cost`); with `request_tokens`, of one request of that many
        tokens, per decode rank (`kvplan.report.request_cost`)."""
        if request_tokens is not None:
            return request_cost(self, request_tokens, dst_rank)
        return plan_cost(self, dst_rank)

    def estimate(self, transport, *, request_tokens: int = 4096, dst_rank: int = 0) -> TransferEstimate:
        """Predicted time of one request on a transport, direct and bounce
        (`kvplan.report.estimate`)."""
        return estimate(self, transport, request_tokens=request_tokens, dst_rank=dst_rank)

    def picture(self, dst_rank: int = 0, *, request_tokens: int = 4096) -> str:
        """An SVG of one decode rank's reads, coloured by source rank (`kvplan.report.plan_picture`)."""
        return plan_picture(self, dst_rank, request_tokens=request_tokens)

    def describe(self) -> str:
        """Human-readable summary, one paragraph per decode rank (`kvplan.report.describe`)."""
        return describe(self)


def plan(src: EngineSpec, dst: EngineSpec, *, conv_strategy: str = "direct", transfer_strategy: str = "auto",
         transport: str | None = None) -> EngineTransferPlan:
    """Plan every decode rank's reads from the prefill engine.

    Either side may be a `kvplan.StoreSpec` (a canonical, TP-independent store layout).
    `conv_strategy` picks how conv state crosses a TP change ("direct", "staged",
    "permuted"; see `kvplan.planning.conv`); attention and SSM state are always direct.
    `transfer_strategy` "bounce" packs what each decode rank needs on every source rank
    into staging, copies it in one row per (layer, source rank) and unpacks it on the
    destination (`kvplan.planning.bounce`): for transports that pay per descriptor.
    "auto" (the default) picks the one `kvplan.report.estimate` predicts faster for a
    4,096-token request on `transport` ("nixl", "ucx", "cupy"); without a transport, or
    with a conv strategy other than "direct", it plans "direct".

    >>> from kvplan import AttentionSpec, ModelSpec, EngineSpec
    >>> m = ModelSpec(name="m", layers=(AttentionSpec(num_kv_heads=8, head_dim=128),))
    >>> p = plan(EngineSpec(model=m, tp=2), EngineSpec(model=m, tp=4))
    >>> t = p.reads(dst_rank=3)       # heads 6,7 = second half of prefill rank 1's page
    >>> [(int(t.src_rank[0]), int(t.src_offset[0]), int(t.nbytes[0]))]
    [(1, 16384, 16384)]
    """
    store, (src, dst) = src, (as_engine(src), as_engine(dst))  # a StoreSpec plans as its TP 1 engine
    if isinstance(store, StoreSpec) and isinstance(dst, EngineSpec):
        check_window_reads(store, dst)  # a store keeps only its own window blocks
    if transport is not None and (not isinstance(transport, str) or transport not in (*TRANSPORT_MODELS, "host")):
        raise SpecError(f"transport must be None or one of {', '.join((*TRANSPORT_MODELS, 'host'))}, "
                        f"got {transport!r}"[:300])
    if not isinstance(transfer_strategy, str) or transfer_strategy not in ("auto", "direct", "bounce"):
        raise SpecError(f"transfer_strategy must be one of auto, direct, bounce, got {transfer_strategy!r}"[:300])
    strategy = transfer_strategy
    if strategy == "auto":
        strategy = "direct"
        # conv_strategy is unchecked here (plan_tables checks it): compare as a str only
        if transport in TRANSPORT_MODELS and isinstance(conv_strategy, str) and conv_strategy == "direct":
            tables = _plan(src, dst, conv_strategy, "direct")
            if estimate(tables, transport).pick == "direct":
                return tables
            strategy = "bounce"
    return _plan(src, dst, conv_strategy, strategy)


def _plan(src, dst, conv_strategy: str, transfer_strategy: str) -> EngineTransferPlan:
    return _bound(plan_tables(src, dst, conv_strategy=conv_strategy, transfer_strategy=transfer_strategy))


def _bound(tables: PlanTables) -> EngineTransferPlan:
    return EngineTransferPlan(**{f.name: getattr(tables, f.name) for f in attrs.fields(PlanTables)})


def plan_to_json(plan) -> str:
    """A plan as a JSON document (schema ``kvplan.plan/1``: engines, strategies, regions
    and every decode rank's tables; `kvplan.planning.serial`, docs/json.md).

    >>> from kvplan import AttentionSpec, ModelSpec, EngineSpec
    >>> m = ModelSpec(name="m", layers=(AttentionSpec(num_kv_heads=8, head_dim=128),))
    >>> p = plan(EngineSpec(model=m, tp=2), EngineSpec(model=m, tp=4))
    >>> q = plan_from_json(plan_to_json(p))
    >>> q.fingerprint == p.fingerprint, q.lower(3, [7, 8], [40, 41]).nbytes.tolist()
    (True, [16384, 16384])
    """
    return tables_to_json(plan)


def plan_from_json(text) -> EngineTransferPlan:
    """The plan of a `plan_to_json` document, planned again from its engines and
    strategies and checked field by field against the document (a mismatch raises
    `kvplan.PlanMismatchError`), so it equals the original and verifies."""
    return _bound(tables_from_json(text))
