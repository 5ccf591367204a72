"""vLLM's hybrid memory allocator (HMA) grouping of a model's layers."""

from __future__ import annotations

from ..errors import SpecError
from ..spec.groups import LayerGroup
from ..spec.model import ModelSpec


def hma_groups(model) -> tuple[LayerGroup, ...]:
    """vLLM 0.33's hybrid allocator grouping.

    Layers are bucketed by spec (in order of first appearance); the group size is the
    smallest bucket, or the largest when max < 1.5 * min; a bucket of n layers becomes
    ceil(n / size) groups, group i taking layers[i::groups] (strided, so pipeline
    stages stay balanced); short groups are padded with empty slots.

    >>> from kvplan.spec import AttentionSpec, Mamba2Spec, ModelSpec
    >>> a, m = AttentionSpec(2, 8), Mamba2Spec(num_heads=4, head_dim=2, n_groups=1, d_state=2, conv_kernel=4)
    >>> [g.layers for g in hma_groups(ModelSpec(name="h", layers=(m, m, a, m, m, m, a)))]
    [(0, 4), (1, 5), (3, None), (2, 6)]
    """
    if not isinstance(model, ModelSpec):
        raise SpecError(f"hma_groups() takes a ModelSpec, got {type(model).__name__}")
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
