"""Engine specs: how one serving engine shards and lays out a model."""

from __future__ import annotations

import math
from functools import cached_property, lru_cache

import attrs

from ._validators import one_of, optional_positive, positive
from .errors import SpecError
from .geometry import LayerGeometry, attention_geometry
from .sharding import held_interval, pp_layer_ranges
from .specs import ModelSpec

KV_LAYOUTS = ("HND", "NHD")
KV_STORAGES = ("packed", "separate", "blocks_first")


@attrs.frozen
class Region:
    """One registered memory region of every rank of an engine stage.

    `block_bytes` is the stride of one logical block; block `b` of the region starts at
    ``base + b * block_bytes``. `layer` and `slot` say what it holds (slot 1 is the V
    region of a layer stored with separate K and V regions).
    """

    name: str
    layer: int
    slot: int
    stage: int
    block_bytes: int


@attrs.frozen(kw_only=True)
class EngineSpec:
    """One engine's parallelism and memory layout for a model.

    >>> from kvplan.specs import AttentionSpec, ModelSpec
    >>> m = ModelSpec(name="m", layers=(AttentionSpec(8, 128),) * 2)
    >>> e = EngineSpec(model=m, tp=2, block_tokens=32, kernel_block_tokens=16)
    >>> e.kernel_pages_per_block, [r.block_bytes for r in e.regions]
    (2, [65536, 65536])

    * `block_tokens`: logical (scheduler) block; `kernel_block_tokens`: physical kernel
      page (defaults to the logical block). A logical block is
      block_tokens / kernel_block_tokens consecutive kernel pages.
    * `kv_layout`: "HND" (head-major kernel page, vLLM 0.33 default) or "NHD".
    * `kv_storage`: "packed" (K|V per token in one region per layer), "separate"
      (a K region and a V region per layer) or "blocks_first" (K half then V half of
      each kernel page).
    * `pp`: pipeline stages; ranks are numbered ``stage * tp + tp_rank``.
    * `num_blocks`: logical blocks per region, if known; `lower()` then checks ids.
    """

    model: ModelSpec = attrs.field(validator=attrs.validators.instance_of(ModelSpec))
    tp: int = attrs.field(default=1, validator=positive)
    pp: int = attrs.field(default=1, validator=positive)
    block_tokens: int = attrs.field(default=16, validator=positive)
    kernel_block_tokens: int | None = attrs.field(default=None, validator=optional_positive)
    kv_layout: str = attrs.field(default="HND", validator=one_of(*KV_LAYOUTS))
    kv_storage: str = attrs.field(default="packed", validator=one_of(*KV_STORAGES))
    num_blocks: int | None = attrs.field(default=None, validator=optional_positive)

    def __attrs_post_init__(self):
        if self.block_tokens % self.kernel_tokens:
            raise SpecError(
                f"logical block of {self.block_tokens} tokens is not a whole number of "
                f"{self.kernel_tokens}-token kernel blocks"
            )
        for index, layer in enumerate(self.model.layers):
            if layer.kind == "attention":
                held_interval(layer.num_kv_heads, self.tp, 0, what=f"KV heads of layer {index}")
        pp_layer_ranges(self.model.num_layers, self.pp)

    @property
    def kernel_tokens(self) -> int:
        return self.block_tokens if self.kernel_block_tokens is None else self.kernel_block_tokens

    @property
    def kernel_pages_per_block(self) -> int:
        return self.block_tokens // self.kernel_tokens

    @property
    def world_size(self) -> int:
        return self.tp * self.pp

    @cached_property
    def stage_layers(self) -> tuple[tuple[int, int], ...]:
        return pp_layer_ranges(self.model.num_layers, self.pp)

    def stage_of(self, layer: int) -> int:
        for stage, (start, end) in enumerate(self.stage_layers):
            if start <= layer < end:
                return stage
        raise SpecError(f"layer {layer} is outside the model's {self.model.num_layers} layers")

    def layer_geometry(self, layer: int, tp_rank: int) -> LayerGeometry:
        """Byte layout of `layer` on TP rank `tp_rank` (any stage holding it)."""
        return _geometry(self, layer, tp_rank)

    @cached_property
    def regions(self) -> tuple[Region, ...]:
        """Every region of the engine, in registration order (layer, then slot)."""
        out = []
        for layer in range(self.model.num_layers):
            geom = self.layer_geometry(layer, 0)
            for slot, block in enumerate(geom.block_bytes):
                suffix = ("", ".v")[slot] if slot < 2 else f".{slot}"
                out.append(Region(f"layers.{layer}{suffix}", layer, slot, self.stage_of(layer), block))
        return tuple(out)

    @cached_property
    def region_index(self) -> dict[tuple[int, int], int]:
        return {(r.layer, r.slot): i for i, r in enumerate(self.regions)}

    def span_tokens(self, other: EngineSpec) -> int:
        """Smallest token span both engines tile with whole logical blocks."""
        return math.lcm(self.block_tokens, other.block_tokens)


def _geometry(engine: EngineSpec, layer: int, tp_rank: int) -> LayerGeometry:
    spec = engine.model.layers[layer]
    if spec.kind not in ("attention", "mla"):
        raise SpecError(f"layer {layer} kind {spec.kind!r} has no geometry in this engine")
    return _attention_geometry_cached(spec, engine.tp, tp_rank, engine.kernel_tokens,
                                      engine.kernel_pages_per_block, engine.kv_layout, engine.kv_storage)


# Geometry is a pure function of hashable specs; caching it keeps plan() fast on
# 80-layer models whose layers share one spec.
_attention_geometry_cached = lru_cache(maxsize=4096)(attention_geometry)
