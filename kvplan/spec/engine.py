"""`EngineSpec`: how one serving engine shards and pages a model (a value).

An engine spec says everything that decides bytes: TP and PP sizes, logical and kernel
block sizes, KV and conv layouts, layer groups, pooling and page padding. It checks
what a value can check on its own (sizes positive, layouts known, each layer shardable
by the TP size, blocks whole kernel pages, groups covering the model); the memory it
implies (regions, page sizes, padding) is laid out by `kvplan.layout.engine_memory`.
"""

from __future__ import annotations

import bisect
from functools import cached_property

import attrs

from ..errors import SpecError
from ._validators import boolean, bounded_tuple, int_field, non_negative, one_of, optional_positive
from .groups import LayerGroup, check_groups, default_groups
from .limits import (MAX_BLOCK_TOKENS, MAX_LAYERS, MAX_NUM_BLOCKS, MAX_PAGE_BYTES, MAX_PP, MAX_SPECULATIVE_TOKENS,
                     MAX_TP)
from .model import ModelSpec
from .placement import pp_layer_ranges

KV_LAYOUTS = ("HND", "NHD")
KV_STORAGES = ("packed", "separate", "blocks_first")
CONV_LAYOUTS = ("DS", "SD")


def _is_model(value) -> None:
    if not isinstance(value, ModelSpec):
        raise SpecError(f"EngineSpec.model must be a ModelSpec (see kvplan.models.get_model), got {value!r}")


def _groups(value):
    return None if value is None else bounded_tuple(value, MAX_LAYERS, "EngineSpec.groups")


@attrs.frozen(kw_only=True, cache_hash=True)
class EngineSpec:
    """One engine's parallelism and memory layout for a model.

    >>> from kvplan.spec.layers import AttentionSpec
    >>> m = ModelSpec(name="m", layers=(AttentionSpec(8, 128),) * 2)
    >>> e = EngineSpec(model=m, tp=2, block_tokens=32, kernel_block_tokens=16)
    >>> e.kernel_pages_per_block, e.world_size, e.stage_layers
    (2, 2, ((0, 2),))

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
    tp: int = int_field(MAX_TP, default=1)
    pp: int = int_field(MAX_PP, default=1)
    block_tokens: int = int_field(MAX_BLOCK_TOKENS, default=16)
    kernel_block_tokens: int | None = int_field(MAX_BLOCK_TOKENS, optional_positive, default=None)
    kv_layout: str = attrs.field(default="HND", validator=one_of(*KV_LAYOUTS))
    kv_storage: str = attrs.field(default="packed", validator=one_of(*KV_STORAGES))
    conv_layout: str = attrs.field(default="DS", validator=one_of(*CONV_LAYOUTS))
    num_speculative_tokens: int = int_field(MAX_SPECULATIVE_TOKENS, non_negative, default=0)
    groups: tuple | None = attrs.field(default=None, converter=_groups)
    pooled: bool = attrs.field(default=False, validator=boolean)
    page_bytes: int | None = int_field(MAX_PAGE_BYTES, optional_positive, default=None)
    num_blocks: int | None = int_field(MAX_NUM_BLOCKS, optional_positive, default=None)

    def __attrs_post_init__(self):
        if self.groups is not None:
            for group in self.groups:
                if not isinstance(group, LayerGroup):
                    raise SpecError(f"groups must hold LayerGroup values, got {group!r}")
            check_groups(self.model, self.groups)
        checked = set()
        for index, spec in enumerate(self.model.layers):
            block, kernel = self.layer_block_tokens(index)
            if block % kernel:
                raise SpecError(f"logical block of {block} tokens (layer {index}) is not a whole number "
                                f"of {kernel}-token kernel blocks")
            if spec not in checked:  # layers of one spec shard alike: check the first
                checked.add(spec)
                for axis in spec.tp_axes():
                    axis.interval(self.tp, 0, where=f" of layer {index}")
        self.stage_layers  # ShardingError for more stages than the model has layers
        if self.pooled:
            if self.pp != 1:
                raise SpecError(f"pooled (HMA) regions with pp={self.pp}: pipeline stages would split a "
                                "region between ranks; use pooled=False")
            if self.kv_storage == "separate":
                raise SpecError("pooled (HMA) regions hold one page per layer: kv_storage='separate' cannot pool")

    # -- groups and block sizes ------------------------------------------------------
    @cached_property
    def layer_groups(self) -> tuple[LayerGroup, ...]:
        return self.groups if self.groups is not None else default_groups(self.model)

    @cached_property
    def group_slots(self) -> tuple[tuple[int, int], ...]:
        """Per layer: (its group, its slot in that group)."""
        where = {layer: (g, s) for g, group in enumerate(self.layer_groups)
                 for s, layer in enumerate(group.layers) if layer is not None}
        return tuple(where[layer] for layer in range(self.model.num_layers))

    def group_of(self, layer: int) -> int:
        return self.group_slots[layer][0]

    def group_is_token(self, group: int) -> bool:
        first = next(layer for layer in self.layer_groups[group].layers if layer is not None)
        return self.model.layers[first].holds_tokens

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

    # -- ranks and stages ----------------------------------------------------------------
    @property
    def world_size(self) -> int:
        return self.tp * self.pp

    @cached_property
    def stage_layers(self) -> tuple[tuple[int, int], ...]:
        """Cache layers ``[start, end)`` of each pipeline stage: the model's own layers
        split as vLLM splits them (`pp_layer_ranges`), each stage holding the cache layers
        of its model layers (`ModelSpec.model_layers`); a stage may hold none."""
        by_model = pp_layer_ranges(self.model.model_layer_count, self.pp)
        ids = self.model.model_layers
        if ids is None:
            return by_model
        return tuple((bisect.bisect_left(ids, first), bisect.bisect_left(ids, end)) for first, end in by_model)

    def stage_of(self, layer: int) -> int:
        if not 0 <= layer < self.model.num_layers:
            raise SpecError(f"layer {layer} is outside the model's {self.model.num_layers} layers")
        # stages are consecutive windows: the last one starting at or before the layer
        return bisect.bisect_right(self._stage_starts, layer) - 1

    @cached_property
    def _stage_starts(self) -> tuple[int, ...]:
        return tuple(start for start, _ in self.stage_layers)
