"""kvplan: verified plans for moving KV cache and SSM state between engines.

The core is pure (numpy and attrs only): specs -> `plan()` -> `EngineTransferPlan`
(per decode rank `ReadTable`s) -> `lower()` -> `Transfer` (byte ranges), checked by
`verify()`. Transports live in the separate `kvplan_backends` package.
"""

from .backend import load_backend
from .engine import EngineSpec, Region
from .errors import BlockError, KvplanError, ModelMismatchError, PlanError, RankError, ShardingError, SpecError
from .planner import plan
from .specs import AttentionSpec, ModelSpec
from .table import ReadTable
from .transfer import Transfer
from .transfer_plan import EngineTransferPlan
from .verify import verify

__all__ = [
    "AttentionSpec",
    "BlockError",
    "EngineSpec",
    "EngineTransferPlan",
    "KvplanError",
    "ModelMismatchError",
    "ModelSpec",
    "PlanError",
    "RankError",
    "ReadTable",
    "Region",
    "ShardingError",
    "SpecError",
    "Transfer",
    "plan",
    "verify",
]
