"""Engine specs: how one serving engine shards and lays out a model."""

from __future__ import annotations

from functools import cached_property, lru_cache

import attrs

from ._validators import non_negative, one_of, optional_positive, positive
from .errors import SpecError
from .geometry import LayerGeometry, attention_geometry
from .groups import LayerGroup, check_groups, default_groups, is_token_layer
from .sharding import held_interval, pp_layer_ranges
from .specs import ModelSpec
from .state_geometry import state_geometry, state_natural_bytes

KV_LAYOUTS = ("HND", "NHD")
KV_STORAGES = ("packed", "separate", "blocks_first")
CONV_LAYOUTS = ("DS", "SD")


@attrs.frozen
class Region:
    """One registered memory region of every rank of an engine stage.

    `block_bytes` is the stride of one logical block: block `b` starts at
    ``base + b * block_bytes``. `layers` are the layers whose pages live here (several
    for a pooled HMA region, where a block id belongs to one group at a time); `layer`
    is the first of them and `slot` says which of a layer's regions it is (slot 1: the
    V region of a layer stored with separate K and V regions). A `per_request` region
    is a strategy's scratch area: it holds one request, indexed by the position of a
    state block in the request's list (allocate block_bytes x states per request).
    """

    name: str
    layer: int
    slot: int
    stage: int
    block_bytes: int
    layers: tuple = ()
    per_request: bool = False  # scratch: block index = state block's position in the request


def _is_model(value) -> None:
    if not isinstance(value, ModelSpec):
        raise SpecError(f"EngineSpec.model must be a ModelSpec (see kvplan.models.get_model), got {value!r}")


def _groups(value):
    return None if value is None else tuple(value)


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
    * `conv_layout`: "DS" (channel-major conv state, vLLM's NIXL layout) or "SD".
    * `num_speculative_tokens`: adds conv rows (conv_kernel - 1 + this).
    * `groups`: `LayerGroup`s sharing block ids (default: token layers, state layers);
      `pooled=True` makes slot s of every group share region s (vLLM HMA).
    * `page_bytes`: logical page every pooled region (and every state page) is padded to.
    * `pp`: pipeline stages; ranks are numbered ``stage * tp + tp_rank``.
    * `num_blocks`: logical blocks per region, if known; `lower()` then checks ids.
    """

    model: ModelSpec = attrs.field(validator=lambda _, __, value: _is_model(value))
    tp: int = attrs.field(default=1, validator=positive)
    pp: int = attrs.field(default=1, validator=positive)
    block_tokens: int = attrs.field(default=16, validator=positive)
    kernel_block_tokens: int | None = attrs.field(default=None, validator=optional_positive)
    kv_layout: str = attrs.field(default="HND", validator=one_of(*KV_LAYOUTS))
    kv_storage: str = attrs.field(default="packed", validator=one_of(*KV_STORAGES))
    conv_layout: str = attrs.field(default="DS", validator=one_of(*CONV_LAYOUTS))
    num_speculative_tokens: int = attrs.field(default=0, validator=non_negative)
    groups: tuple | None = attrs.field(default=None, converter=_groups)
    pooled: bool = False
    page_bytes: int | None = attrs.field(default=None, validator=optional_positive)
    num_blocks: int | None = attrs.field(default=None, validator=optional_positive)

    def __attrs_post_init__(self):
        if self.groups is not None:
            for group in self.groups:
                if not isinstance(group, LayerGroup):
                    raise SpecError(f"groups must hold LayerGroup values, got {group!r}")
            check_groups(self.model, self.groups)
        for index in range(self.model.num_layers):
            block, kernel = self.layer_block_tokens(index)
            if block % kernel:
                raise SpecError(f"logical block of {block} tokens (layer {index}) is not a whole number "
                                f"of {kernel}-token kernel blocks")
            spec = self.model.layers[index]
            if spec.kind == "attention":
                held_interval(spec.num_kv_heads, self.tp, 0, what=f"KV heads of layer {index}")
        pp_layer_ranges(self.model.num_layers, self.pp)
        if self.pooled:
            if self.pp != 1:
                raise SpecError(f"pooled (HMA) regions with pp={self.pp}: pipeline stages would split a "
                                "region between ranks; use pooled=False")
            if self.kv_storage == "separate":
                raise SpecError("pooled (HMA) regions hold one page per layer: kv_storage='separate' cannot pool")
        _ = self.regions  # sizes and padding are checked once, here

    # -- groups and block sizes ------------------------------------------------------
    @cached_property
    def layer_groups(self) -> tuple[LayerGroup, ...]:
        return self.groups if self.groups is not None else default_groups(self.model)

    @cached_property
    def _group_slot(self) -> dict[int, tuple[int, int]]:
        return {layer: (g, s) for g, group in enumerate(self.layer_groups)
                for s, layer in enumerate(group.layers) if layer is not None}

    def group_of(self, layer: int) -> int:
        return self._group_slot[layer][0]

    def group_is_token(self, group: int) -> bool:
        first = next(layer for layer in self.layer_groups[group].layers if layer is not None)
        return is_token_layer(self.model.layers[first])

    def group_block_tokens(self, group: int) -> tuple[int, int]:
        """(logical, kernel) block tokens of a group (the engine's unless overridden)."""
        g = self.layer_groups[group]
        block = self.block_tokens if g.block_tokens is None else g.block_tokens
        # a group whose logical block was scaled (page unification) keeps the kernel page
        kernel = self.kernel_tokens if g.kernel_block_tokens is None else g.kernel_block_tokens
        return block, kernel

    def layer_block_tokens(self, layer: int) -> tuple[int, int]:
        return self.group_block_tokens(self.group_of(layer))

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

    # -- memory ------------------------------------------------------------------------
    def natural_block_bytes(self, layer: int) -> int:
        """Bytes of one logical block of `layer` on a rank before any padding."""
        spec = self.model.layers[layer]
        if is_token_layer(spec):
            return sum(_unpadded_geometry(self, layer).block_bytes)
        return sum(state_natural_bytes(spec, self.tp, self.num_speculative_tokens))

    @cached_property
    def pool_page_bytes(self) -> int | None:
        """Logical page of every pooled region: `page_bytes`, or the largest layer's."""
        if not self.pooled:
            return None
        largest = max(self.natural_block_bytes(layer) for layer in range(self.model.num_layers))
        page = largest if self.page_bytes is None else self.page_bytes
        if page < largest:
            raise SpecError(f"page_bytes {page} is smaller than the largest layer page ({largest} B)")
        return page

    def layer_geometry(self, layer: int, tp_rank: int) -> LayerGeometry:
        """Byte layout of `layer` on TP rank `tp_rank` (any stage holding it)."""
        spec = self.model.layers[layer]
        if not is_token_layer(spec):
            page = self.pool_page_bytes if self.pooled else self.page_bytes
            return _state_geometry_cached(spec, self.tp, tp_rank, self.conv_layout, self.num_speculative_tokens, page)
        block, kernel = self.layer_block_tokens(layer)
        stride = None
        if self.pooled:
            pages = block // kernel
            if self.pool_page_bytes % pages:
                raise SpecError(f"pooled page of {self.pool_page_bytes} B does not split into {pages} kernel "
                                f"pages for layer {layer}")
            stride = self.pool_page_bytes // pages
        return _attention_geometry_cached(spec, self.tp, tp_rank, kernel, block // kernel,
                                          self.kv_layout, self.kv_storage, stride)

    @cached_property
    def regions(self) -> tuple[Region, ...]:
        """Every region of the engine, in registration order."""
        if self.pooled:
            slots = max(len(g.layers) for g in self.layer_groups)
            out = []
            for s in range(slots):
                layers = tuple(g.layers[s] for g in self.layer_groups if s < len(g.layers) and g.layers[s] is not None)
                for layer in layers:
                    self.layer_geometry(layer, 0)  # checks the layer fits the pooled page
                out.append(Region(f"pool.{s}", layers[0] if layers else -1, 0, 0, self.pool_page_bytes, layers))
            return tuple(out)
        out = []
        for layer in range(self.model.num_layers):
            geom = self.layer_geometry(layer, 0)
            for slot, block in enumerate(geom.block_bytes):
                suffix = ("", ".v")[slot] if slot < 2 else f".{slot}"
                out.append(Region(f"layers.{layer}{suffix}", layer, slot, self.stage_of(layer), block, (layer,)))
        return tuple(out)

    @cached_property
    def _region_index(self) -> dict[tuple[int, int], int]:
        if self.pooled:
            return {(layer, 0): self._group_slot[layer][1] for layer in self._group_slot}
        return {(r.layer, r.slot): i for i, r in enumerate(self.regions)}

    def region_of(self, layer: int, slot: int = 0) -> int:
        """Region id holding `layer`'s pages of region slot `slot`."""
        return self._region_index[(layer, slot)]



def _unpadded_geometry(engine: EngineSpec, layer: int) -> LayerGeometry:
    block, kernel = engine.layer_block_tokens(layer)
    return _attention_geometry_cached(engine.model.layers[layer], engine.tp, 0, kernel, block // kernel,
                                      engine.kv_layout, engine.kv_storage, None)


# Geometry is a pure function of hashable specs; caching keeps plan() fast on models
# whose layers share one spec.
_attention_geometry_cached = lru_cache(maxsize=4096)(attention_geometry)
_state_geometry_cached = lru_cache(maxsize=4096)(state_geometry)
