"""Layer groups: which layers share block ids, block sizes and (pooled) regions.

A request holds one block list per group. Token layers (attention, MLA) pair blocks
by tokens; state layers (Mamba, GDN, short conv) keep one state per block and pair
block for block. By default an engine has one group of all token layers and one of
all state layers. vLLM's hybrid memory allocator (HMA) uses several groups whose
layers share *pooled* regions: slot s of every group lives in region s, and a block
id belongs to one group at a time (reference §2.2):

    groups  (0: attn 5,11,...) (1: mamba 0,2,...) (2: mamba 1,3,...)
    region 0 = slot 0 of every group, region 1 = slot 1, ...
"""

from __future__ import annotations

import attrs

import math

from ._validators import optional_positive
from .errors import SpecError


def _to_layers(value) -> tuple:
    return tuple(None if v is None else int(v) for v in value)


@attrs.frozen
class LayerGroup:
    """Layers sharing block ids. `layers[s]` occupies slot s (None: an unused slot).

    `block_tokens` / `kernel_block_tokens` override the engine's sizes for a token
    group (vLLM scales a group's block when unifying page sizes); state groups ignore them.

    >>> LayerGroup(layers=(3, 9), block_tokens=32).layers
    (3, 9)
    """

    layers: tuple = attrs.field(converter=_to_layers)
    block_tokens: int | None = attrs.field(default=None, validator=optional_positive)
    kernel_block_tokens: int | None = attrs.field(default=None, validator=optional_positive)

    def __attrs_post_init__(self):
        real = [layer for layer in self.layers if layer is not None]
        if not real:
            raise SpecError(f"layer group {self.layers} holds no layer")
        if len(set(real)) != len(real):
            raise SpecError(f"layer group {self.layers} lists a layer twice")


def is_token_layer(spec) -> bool:
    return spec.kind in ("attention", "mla")


def default_groups(model) -> tuple[LayerGroup, ...]:
    """One group of the token layers, one of the state layers (either may be absent)."""
    token = tuple(i for i, spec in enumerate(model.layers) if is_token_layer(spec))
    state = tuple(i for i, spec in enumerate(model.layers) if not is_token_layer(spec))
    return tuple(LayerGroup(layers=g) for g in (token, state) if g)


def check_groups(model, groups: tuple[LayerGroup, ...]) -> None:
    """Every layer in exactly one group; a group holds token layers or state layers."""
    seen: dict[int, int] = {}
    for index, group in enumerate(groups):
        kinds = {is_token_layer(model.layers[layer]) for layer in group.layers if layer is not None
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


def group_span(src, dst, group: int) -> tuple[int, int]:
    """(prefill, decode) logical blocks per span of a group: the smallest token span both
    tile with whole blocks (1, 1 for state groups, which pair block for block)."""
    if not src.group_is_token(group):
        return 1, 1
    a, b = src.group_block_tokens(group)[0], dst.group_block_tokens(group)[0]
    span = math.lcm(a, b)
    return span // a, span // b


def hma_groups(model) -> tuple[LayerGroup, ...]:
    """vLLM's hybrid allocator grouping (reference §2.2).

    Layers are bucketed by spec (in order of first appearance); the group size is the
    smallest bucket, or the largest when max < 1.5 * min; a bucket of n layers becomes
    ceil(n / size) groups, group i taking layers[i::groups] (strided, so pipeline
    stages stay balanced); short groups are padded with empty slots.

    >>> from kvplan.specs import AttentionSpec, ModelSpec
    >>> from kvplan.state_specs import Mamba2Spec
    >>> a, m = AttentionSpec(2, 8), Mamba2Spec(4, 2, 1, 2, 4)
    >>> [g.layers for g in hma_groups(ModelSpec(name="h", layers=(m, m, a, m, m, m, a)))]
    [(0, 4), (1, 5), (3, None), (2, 6)]
    """
    buckets: dict = {}
    for index, spec in enumerate(model.layers):
        buckets.setdefault(spec, []).append(index)
    sizes = [len(b) for b in buckets.values()]
    size = max(sizes) if max(sizes) < 1.5 * min(sizes) else min(sizes)
    groups = []
    for layers in buckets.values():
        count = -(-len(layers) // size)
        for i in range(count):
            members = layers[i::count]
            groups.append(LayerGroup(layers=tuple(members) + (None,) * (size - len(members))))
    return tuple(groups)
