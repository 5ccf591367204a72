"""Stage 1, specs: what a model stores and how an engine shards and pages it (values only).

Everything here is a frozen value or a pure rule about values: layer specs and their
TP-sharded axes (`layers`, `placement`), the model (`model`), layer groups
(`groups`), the engine (`engine`), a store's canonical layout (`store`), dtypes and the component vocabulary, and the
largest sizes kvplan accepts (`limits`, checked by the specs here and by the later
stages where sizes multiply). Later stages (layout, planning, lowering) import from
here; nothing here imports them.
"""

from .components import COMPONENT_CODE, COMPONENTS, CONV_COMPONENTS
from .dtypes import canonical_dtype, dtype_bytes
from .engine import CONV_LAYOUTS, KV_LAYOUTS, KV_STORAGES, EngineSpec
from .fingerprint import RULES, fingerprint, pair_fingerprint
from .groups import LayerGroup, check_groups, default_groups
from .layers import (LAYER_SPECS, STATE_SPECS, AttentionSpec, GatedDeltaNetSpec, Mamba1Spec, Mamba2Spec,
                     ShortConvSpec, StatePart, conv_rows)
from .limits import LIMITS, Limit, check_count
from .model import ModelSpec
from .placement import Axis, Replicate, Shard, overlap, pp_layer_ranges, replica_groups
from .serial import engine_from_json, engine_to_json
from .store import StoreSpec, as_engine

__all__ = [
    "COMPONENTS", "COMPONENT_CODE", "CONV_COMPONENTS", "CONV_LAYOUTS", "KV_LAYOUTS", "KV_STORAGES", "LAYER_SPECS",
    "LIMITS", "Limit", "RULES", "STATE_SPECS", "AttentionSpec", "Axis", "EngineSpec", "GatedDeltaNetSpec",
    "LayerGroup", "Mamba1Spec", "Mamba2Spec", "ModelSpec", "Replicate", "Shard", "ShortConvSpec", "StatePart", "StoreSpec",
    "as_engine", "canonical_dtype", "check_count", "check_groups", "conv_rows", "default_groups", "dtype_bytes",
    "engine_from_json", "engine_to_json", "fingerprint",
    "overlap", "pair_fingerprint", "pp_layer_ranges", "replica_groups",
]
