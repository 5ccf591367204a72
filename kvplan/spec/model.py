"""`ModelSpec`: a model as the sequence of its cache-holding layers.

A `ModelSpec` lists only the layers that hold KV cache or recurrent state, in model
order (MoE / MLP-only layers move no bytes). Layers of one model may differ
(Gemma-style sliding layers with more KV heads than global layers, hybrids mixing
attention with Mamba); each is planned with its own sizes.
"""

from __future__ import annotations

import attrs

from ..errors import SpecError
from ._validators import bounded_tuple
from .limits import MAX_LAYERS


def _to_layers(value) -> tuple:
    return bounded_tuple(value, MAX_LAYERS, "ModelSpec.layers")


def _is_name(_instance, _attribute, value) -> None:
    if not isinstance(value, str):
        raise SpecError(f"ModelSpec.name must be a string, got {value!r}")


@attrs.frozen(cache_hash=True)
class ModelSpec:
    """A model as its sequence of layer specs.

    >>> from kvplan.spec.layers import AttentionSpec
    >>> m = ModelSpec(name="tiny", layers=(AttentionSpec(num_kv_heads=2, head_dim=64),) * 4)
    >>> m.num_layers
    4
    """

    name: str = attrs.field(validator=_is_name)
    layers: tuple = attrs.field(converter=_to_layers)

    def __attrs_post_init__(self):
        if not self.layers:
            raise SpecError(f"model {self.name!r} has no layers")
        for index, layer in enumerate(self.layers):
            if not hasattr(layer, "holds_tokens") or not hasattr(layer, "tp_axes"):
                raise SpecError(f"model {self.name!r} layer {index} is not a layer spec: {layer!r}")

    @property
    def num_layers(self) -> int:
        return len(self.layers)
