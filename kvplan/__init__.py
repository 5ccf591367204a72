"""kvplan: verified plans for moving KV cache and SSM state between engines.

The core is pure (numpy and attrs only) and its stages import only the ones before:

    spec -> layout -> planning -> lowering -> transport
    (check: verify() from the specs alone; report: costs and descriptions;
     models / presets: built-in models and engines' memory models)

`plan()` returns an `EngineTransferPlan` (per decode rank `ReadTable`s); `lower()`
gives a request's `Transfer` (byte ranges); `verify()` checks every byte. Transports
live in the separate `kvplan_backends` package, loaded by name with `load_backend`.
"""

from .api import EngineTransferPlan, plan, plan_from_json, plan_to_json
from .cache import PlanCache
from .check import verify
from .errors import (BlockError, BoundsError, KvplanError, ModelMismatchError, PlanError, PlanMismatchError, RankError,
                     ShardingError, SpecError)
from .layout import Region, engine_memory
from .lowering import Transfer
from .models import from_hf_config, get_model
from .planning import ReadTable, check_compatible
from .presets import vllm_engine
from .spec.fingerprint import fingerprint
from .spec.serial import engine_from_json, engine_to_json
from .spec import (AttentionSpec, EngineSpec, GatedDeltaNetSpec, LayerGroup, Mamba1Spec, Mamba2Spec, ModelSpec,
                   ShortConvSpec, StoreSpec)
from .transport import (BackendNotFound, PeerCard, Prepared, TransferIntegrityError, TransportError, TransportTimeout,
                        load_backend)

__all__ = [
    "AttentionSpec", "BackendNotFound", "BlockError", "BoundsError", "EngineSpec", "EngineTransferPlan",
    "GatedDeltaNetSpec", "KvplanError", "LayerGroup", "Mamba1Spec", "Mamba2Spec", "ModelMismatchError",
    "ModelSpec", "PeerCard", "PlanCache", "PlanError", "PlanMismatchError", "Prepared", "RankError", "ReadTable", "Region", "ShardingError", "ShortConvSpec", "StoreSpec",
    "SpecError", "Transfer", "TransferIntegrityError", "TransportError", "TransportTimeout", "check_compatible",
    "engine_from_json", "engine_memory", "engine_to_json", "fingerprint", "from_hf_config", "get_model",
    "load_backend", "plan", "plan_from_json", "plan_to_json", "verify", "vllm_engine",
]
