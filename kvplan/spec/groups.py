"""Layer groups: which layers share block ids, block sizes and (pooled) regions.

A request holds one block list per group. Token layers (attention, MLA) pair blocks
by tokens; state layers (Mamba, GDN, short conv) keep one state per block and pair
block for block. By default an engine has one group of all token layers and one of
all state layers. vLLM's hybrid memory allocator (HMA, `kvplan.presets.hma_groups`)
uses several groups whose layers share *pooled* regions: slot s of every group lives
in region s, and a block id belongs to one group at a time:

    groups  (0: attn 5,11,...) (1: mamba 0,2,...) (2: mamba 1,3,...)
    region 0 = slot 0 of every group, region 1 = slot 1, ...
"""

from __future__ import annotations

import numbers

import attrs

from ..errors import SpecError
from ._validators import bounded_tuple, int_field, optional_positive
from .limits import MAX_BLOCK_TOKENS, MAX_LAYERS


def _layer_id(value):
    """A slot's layer: None (an unused slot) or an integral layer index, never truncated."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise SpecError(f"LayerGroup.layers must hold layer indices (ints) or None, got {value!r}")
    return int(value)


def _to_layers(value) -> tuple:
    return tuple(_layer_id(v) for v in bounded_tuple(value, MAX_LAYERS, "LayerGroup.layers"))


@attrs.frozen
class LayerGroup:
    """Layers sharing block ids. `layers[s]` occupies slot s (None: an unused slot).

    `block_tokens` / `kernel_block_tokens` override the engine's sizes for a token
    group (vLLM scales a group's block when unifying page sizes); state groups ignore them.

    >>> LayerGroup(layers=(3, 9), block_tokens=32).layers
    (3, 9)
    """

    layers: tuple = attrs.field(converter=_to_layers)
    block_tokens: int | None = int_field(MAX_BLOCK_TOKENS, optional_positive, default=None, kw_only=True)
    kernel_block_tokens: int | None = int_field(MAX_BLOCK_TOKENS, optional_positive, default=None, kw_only=True)

    def __attrs_post_init__(self):
        real = [layer for layer in self.layers if layer is not None]
        if not real:
            raise SpecError(f"layer group {self.layers} holds no layer")
        if len(set(real)) != len(real):
            raise SpecError(f"layer group {self.layers} lists a layer twice")


def default_groups(model) -> tuple[LayerGroup, ...]:
    """One group of the token layers, one of the state layers (either may be absent).

    >>> from kvplan.spec.layers import AttentionSpec, ShortConvSpec
    >>> from kvplan.spec.model import ModelSpec
    >>> a, c = AttentionSpec(2, 8), ShortConvSpec(conv_dim=4, conv_kernel=3)
    >>> [g.layers for g in default_groups(ModelSpec(name="h", layers=(c, a, c)))]
    [(1,), (0, 2)]
    """
    token = tuple(i for i, spec in enumerate(model.layers) if spec.holds_tokens)
    state = tuple(i for i, spec in enumerate(model.layers) if not spec.holds_tokens)
    return tuple(LayerGroup(layers=g) for g in (token, state) if g)


def check_groups(model, groups: tuple[LayerGroup, ...]) -> None:
    """Every layer in exactly one group; a group holds token layers or state layers.

    >>> from kvplan.spec.layers import AttentionSpec
    >>> from kvplan.spec.model import ModelSpec
    >>> check_groups(ModelSpec(name="m", layers=(AttentionSpec(2, 8),) * 3), (LayerGroup(layers=(0, 2)),))
    Traceback (most recent call last):
    ...
    kvplan.errors.SpecError: layers [1] are in no group
    """
    seen: dict[int, int] = {}
    for index, group in enumerate(groups):
        kinds = {model.layers[layer].holds_tokens for layer in group.layers if layer is not None
                 and 0 <= layer < model.num_layers}
        for layer in group.layers:
            if layer is None:
                continue
            if not 0 <= layer < model.num_layers:
                raise SpecError(f"group {index} names layer {layer}; the model has {model.num_layers} layers")
            if layer in seen:
                raise SpecError(f"layer {layer} is in groups {seen[layer]} and {index}")
            seen[layer] = index
        if len(kinds) > 1:
            raise SpecError(f"group {index} {group.layers} mixes attention and state layers")
    missing = sorted(set(range(model.num_layers)) - set(seen))
    if missing:
        raise SpecError(f"layers {missing} are in no group")
