"""`ModelSpec`: a model as the sequence of its cache-holding layers.

A `ModelSpec` lists only the layers that hold KV cache or recurrent state, in model
order (MoE / MLP-only layers move no bytes). Layers of one model may differ
(Gemma-style sliding layers with more KV heads than global layers, hybrids mixing
attention with Mamba); each is planned with its own sizes.

Engines split a model into pipeline stages by its own (decoder) layers, not by cache
layers. Where the two differ, `model_layers` gives each cache layer's model layer and
`num_model_layers` the model's layer count: Falcon-H1's 44 layers each hold attention
and Mamba state (88 cache layers, model layers 0, 0, 1, 1, ...); Nemotron-H's MLP and MoE
layers hold none (its cache layers sit at model layers 0, 2, 4, 5, ...). Without them
every cache layer is a model layer of its own.
"""

from __future__ import annotations

import numbers

import attrs

from ..errors import SpecError
from ._validators import bounded_tuple, plain_int
from .limits import MAX_LAYERS, MAX_MODEL_LAYERS, check_count


def _to_layers(value) -> tuple:
    return bounded_tuple(value, MAX_LAYERS, "ModelSpec.layers")


def _to_model_layers(value) -> tuple | None:
    """Each cache layer's model layer: None, or ints >= 0 (never truncated)."""
    if value is None:
        return None
    ids = bounded_tuple(value, MAX_LAYERS, "ModelSpec.model_layers")
    for v in ids:
        if isinstance(v, bool) or not isinstance(v, numbers.Integral) or not 0 <= v < MAX_MODEL_LAYERS.value:
            raise SpecError(f"ModelSpec.model_layers holds model layer indices (ints from 0 below "
                            f"{MAX_MODEL_LAYERS.value}), got {v!r}"[:300])
    return tuple(int(v) for v in ids)


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
    model_layers: tuple | None = attrs.field(default=None, converter=_to_model_layers, kw_only=True)
    num_model_layers: int | None = attrs.field(default=None, converter=plain_int, kw_only=True)

    def __attrs_post_init__(self):
        if not self.layers:
            raise SpecError(f"model {self.name!r} has no layers")
        for index, layer in enumerate(self.layers):
            if not hasattr(layer, "holds_tokens") or not hasattr(layer, "tp_axes"):
                raise SpecError(f"model {self.name!r} layer {index} is not a layer spec: {layer!r}")
        if self.num_model_layers is not None:
            check_count(self.num_model_layers, f"model {self.name!r} num_model_layers", MAX_MODEL_LAYERS)
            if self.model_layers is None:
                raise SpecError(f"model {self.name!r}: num_model_layers={self.num_model_layers} needs model_layers "
                                "(each cache layer's model layer)")
        if self.model_layers is None:
            return
        ids = self.model_layers
        if len(ids) != len(self.layers):
            raise SpecError(f"model {self.name!r}: model_layers has {len(ids)} entries for {len(self.layers)} "
                            "cache layers (one per cache layer)")
        k = next((i for i in range(1, len(ids)) if ids[i] < ids[i - 1]), None)
        if k is not None:
            raise SpecError(f"model {self.name!r}: model_layers must not decrease (cache layers are in model "
                            f"order), got {ids[k - 1]} then {ids[k]} at cache layers {k - 1}, {k}")
        if self.num_model_layers is not None and ids[-1] >= self.num_model_layers:
            raise SpecError(f"model {self.name!r}: cache layer {len(ids) - 1} is at model layer {ids[-1]}, "
                            f"past num_model_layers={self.num_model_layers}")

    @property
    def num_layers(self) -> int:
        return len(self.layers)

    @property
    def model_layer_count(self) -> int:
        """How many layers an engine splits into pipeline stages: `num_model_layers`,
        else one past the last cache layer's model layer, else the cache layers."""
        if self.num_model_layers is not None:
            return self.num_model_layers
        return self.model_layers[-1] + 1 if self.model_layers is not None else len(self.layers)
