"""Model specs: what each layer stores, independent of any engine or TP size.

A `ModelSpec` is a tuple of layer specs. Layers of one model may differ (Gemma-style
sliding layers with more KV heads than global layers); each is planned with its own
sizes. Hybrid layer kinds (Mamba, GDN, short conv) live in `kvplan.state_specs`.
"""

from __future__ import annotations

import attrs

from ._validators import optional_positive, positive
from .dtypes import canonical_dtype, dtype_bytes
from .errors import SpecError


@attrs.frozen
class AttentionSpec:
    """One attention layer's KV cache, model-wide (all heads, before TP).

    >>> AttentionSpec(num_kv_heads=8, head_dim=128).bytes_per_token
    4096

    MLA stores one latent vector per token (``mla=True``, ``num_kv_heads=1``,
    ``head_dim`` = latent width, e.g. 576 for DeepSeek-V3) that every rank holds whole.
    """

    num_kv_heads: int = attrs.field(validator=positive)
    head_dim: int = attrs.field(validator=positive)
    head_dim_v: int | None = attrs.field(default=None, validator=optional_positive)
    dtype: str = attrs.field(default="bfloat16", converter=canonical_dtype)
    mla: bool = False
    sliding_window: int | None = attrs.field(default=None, validator=optional_positive)

    def __attrs_post_init__(self):
        if self.mla and (self.num_kv_heads != 1 or self.head_dim_v not in (None, 0)):
            raise SpecError(
                f"MLA layers store one latent per token: num_kv_heads must be 1 and head_dim_v unset, "
                f"got num_kv_heads={self.num_kv_heads}, head_dim_v={self.head_dim_v}"
            )

    @property
    def kind(self) -> str:
        return "mla" if self.mla else "attention"

    @property
    def v_dim(self) -> int:
        """Value head dim (0 for MLA, which stores no separate V)."""
        if self.mla:
            return 0
        return self.head_dim if self.head_dim_v is None else self.head_dim_v

    @property
    def elem_bytes(self) -> int:
        return dtype_bytes(self.dtype)

    @property
    def bytes_per_token(self) -> int:
        """K and V (or the latent) of all heads for one token."""
        return self.num_kv_heads * (self.head_dim + self.v_dim) * self.elem_bytes


def _to_layers(value) -> tuple:
    return tuple(value)


@attrs.frozen
class ModelSpec:
    """A model as its sequence of layers.

    >>> m = ModelSpec(name="tiny", layers=(AttentionSpec(num_kv_heads=2, head_dim=64),) * 4)
    >>> m.num_layers
    4
    """

    name: str
    layers: tuple = attrs.field(converter=_to_layers)

    def __attrs_post_init__(self):
        if not self.layers:
            raise SpecError(f"model {self.name!r} has no layers")
        for index, layer in enumerate(self.layers):
            if not hasattr(layer, "kind"):
                raise SpecError(f"model {self.name!r} layer {index} is not a layer spec: {layer!r}")

    @property
    def num_layers(self) -> int:
        return len(self.layers)
