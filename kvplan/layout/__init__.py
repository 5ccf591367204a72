"""Stage 2, layout: where every element of an engine's model sits in memory.

`affine` is the layout algebra (CuTe's shape:stride); `component` holds one layer's
component layouts on one rank; `attention` and `state` build the kernel pages of token
and state layers; `memory` lays out an engine's regions, pages and pools. Layout
imports spec; planning and later stages import layout.
"""

from .affine import Layout
from .attention import attention_bytes_per_token, attention_layout
from .component import ComponentLayout, LayerLayout
from .memory import EngineMemory, Region, engine_memory, layer_layout, natural_block_bytes
from .state import state_layout, state_natural_bytes, state_parts

__all__ = [
    "ComponentLayout", "EngineMemory", "LayerLayout", "Layout", "Region", "attention_bytes_per_token",
    "attention_layout", "engine_memory", "layer_layout", "natural_block_bytes", "state_layout",
    "state_natural_bytes", "state_parts",
]
