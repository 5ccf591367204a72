"""Engine memory: the regions an engine registers and the page layout of every layer.

A region is one contiguous buffer per rank of a stage; logical block b of a region
starts at ``base + b * block_bytes``. Without pooling each layer has a region per
region slot (two with separate K and V); with pooling (vLLM's HMA) region s holds
slot s of every layer group, all padded to one page:

    unpooled   layers.0  layers.0.v  layers.1  ...     (one per layer and slot)
    pooled     pool.0 = slot 0 of every group, pool.1 = slot 1, ...

`engine_memory(engine)` lays this out once per engine (cached on the hashable spec) and
raises `SpecError` when a page cannot hold what it must.
"""

from __future__ import annotations

from functools import lru_cache

import attrs

from ..errors import SpecError
from ..spec.engine import EngineSpec
from ..spec.limits import MAX_PAGE_BYTES
from .attention import attention_layout
from .component import LayerLayout
from .state import state_layout, state_natural_bytes


@attrs.frozen(kw_only=True)
class Region:
    """One registered memory region of every rank of an engine stage.

    `block_bytes` is the stride of one logical block: block `b` starts at
    ``base + b * block_bytes``. `layers` are the layers whose pages live here (several
    for a pooled HMA region, where a block id belongs to one group at a time); `layer`
    is the first of them and `slot` says which of a layer's regions it is (slot 1: the
    V region of a layer stored with separate K and V regions). A `per_request` region
    is a strategy's scratch area: it holds one request, indexed by the position of a
    state block in the request's list (allocate block_bytes x states per request).

    >>> Region(name="layers.0", layer=0, slot=0, stage=0, block_bytes=32768, layers=(0,)).block_bytes
    32768
    """

    name: str
    layer: int
    slot: int
    stage: int
    block_bytes: int
    layers: tuple = ()
    per_request: bool = False


# Layouts are pure functions of hashable specs: caching keeps planning fast on models
# whose layers share one spec.
_attention_layout = lru_cache(maxsize=4096)(attention_layout)
_state_layout = lru_cache(maxsize=4096)(state_layout)


@attrs.frozen(eq=False)
class EngineMemory:
    """The regions of an engine and the layout of each layer (see the module docstring).

    >>> from kvplan.spec import AttentionSpec, EngineSpec, ModelSpec
    >>> m = ModelSpec(name="m", layers=(AttentionSpec(8, 128),) * 2)
    >>> mem = engine_memory(EngineSpec(model=m, tp=2, block_tokens=32, kernel_block_tokens=16, kv_storage="separate"))
    >>> [(r.name, r.block_bytes) for r in mem.regions], mem.region_of(1, 1)
    ([('layers.0', 32768), ('layers.0.v', 32768), ('layers.1', 32768), ('layers.1.v', 32768)], 3)
    """

    engine: EngineSpec
    regions: tuple[Region, ...]
    slot_regions: tuple[tuple[int, ...], ...]  # per layer: region id of each of its slots
    pool_page_bytes: int | None

    def region_of(self, layer: int, slot: int = 0) -> int:
        """Region id holding `layer`'s pages of region slot `slot`."""
        return self.slot_regions[layer][slot]

    def layer_layout(self, layer: int, tp_rank: int) -> LayerLayout:
        """Byte layout of `layer` on TP rank `tp_rank` (any stage holding it)."""
        return layer_layout(self.engine, layer, tp_rank, self.pool_page_bytes)


def natural_block_bytes(engine: EngineSpec, layer: int) -> int:
    """Bytes of one logical block of `layer` on a rank before any padding.

    >>> from kvplan.spec import AttentionSpec, EngineSpec, ModelSpec
    >>> natural_block_bytes(EngineSpec(model=ModelSpec(name="m", layers=(AttentionSpec(8, 128),)), tp=2), 0)
    32768
    """
    spec = engine.model.layers[layer]
    if not spec.holds_tokens:
        return sum(state_natural_bytes(spec, engine.tp, engine.num_speculative_tokens))
    block, kernel = engine.layer_block_tokens(layer)
    return sum(_attention_layout(spec, engine.tp, 0, kernel, block // kernel, engine.kv_layout, engine.kv_storage,
                                 None).block_bytes)


def layer_layout(engine: EngineSpec, layer: int, tp_rank: int, pool_page_bytes: int | None) -> LayerLayout:
    """Byte layout of `layer` on TP rank `tp_rank`; pooled layers pad to `pool_page_bytes`.

    >>> from kvplan.spec import AttentionSpec, EngineSpec, ModelSpec
    >>> e = EngineSpec(model=ModelSpec(name="m", layers=(AttentionSpec(8, 128),)), tp=4)
    >>> [c.held for c in layer_layout(e, 0, 3, None).components]     # heads 6 and 7, K and V
    [(6, 8), (6, 8)]
    """
    spec = engine.model.layers[layer]
    if not spec.holds_tokens:
        page = pool_page_bytes if engine.pooled else engine.page_bytes
        return _state_layout(spec, engine.tp, tp_rank, engine.conv_layout, engine.num_speculative_tokens, page)
    block, kernel = engine.layer_block_tokens(layer)
    stride = None
    if engine.pooled:
        pages = block // kernel
        if pool_page_bytes % pages:
            raise SpecError(f"pooled page of {pool_page_bytes} B does not split into {pages} kernel "
                            f"pages for layer {layer}")
        stride = pool_page_bytes // pages
    return _attention_layout(spec, engine.tp, tp_rank, kernel, block // kernel, engine.kv_layout, engine.kv_storage,
                             stride)


def _pool_page_bytes(engine: EngineSpec) -> int | None:
    """Logical page of every pooled region: `page_bytes`, or the largest layer's."""
    if not engine.pooled:
        return None
    largest = max(natural_block_bytes(engine, layer) for layer in range(engine.model.num_layers))
    page = largest if engine.page_bytes is None else engine.page_bytes
    if page < largest:
        raise SpecError(f"page_bytes {page} is smaller than the largest layer page ({largest} B)")
    return page


def engine_memory(engine: EngineSpec) -> EngineMemory:
    """Lay out `engine`'s regions, checking that every page holds its layer.

    >>> from kvplan.spec import AttentionSpec, EngineSpec, ModelSpec, ShortConvSpec
    >>> m = ModelSpec(name="m", layers=(AttentionSpec(8, 128), ShortConvSpec(conv_dim=8, conv_kernel=4)))
    >>> [(r.name, r.block_bytes) for r in engine_memory(EngineSpec(model=m, tp=2)).regions]
    [('layers.0', 32768), ('layers.1', 24)]
    >>> engine_memory(EngineSpec(model=m, tp=2, page_bytes=16))
    Traceback (most recent call last):
    ...
    kvplan.errors.SpecError: state page of 16 B is smaller than the layer's 24 B of state
    """
    if not isinstance(engine, EngineSpec):  # before the cache hashes it
        raise SpecError(f"engine_memory() takes an EngineSpec, got {type(engine).__name__}")
    return _engine_memory(engine)


@lru_cache(maxsize=256)
def _engine_memory(engine: EngineSpec) -> EngineMemory:
    """`engine_memory` of a checked engine, laid out once per engine."""
    pool = _pool_page_bytes(engine)
    layers = range(engine.model.num_layers)
    if engine.pooled:
        MAX_PAGE_BYTES.check(pool, "pooled page (bytes of one logical block)")
        slots = max(len(g.layers) for g in engine.layer_groups)
        regions = []
        for s in range(slots):
            held = tuple(g.layers[s] for g in engine.layer_groups if s < len(g.layers) and g.layers[s] is not None)
            for layer in held:
                layer_layout(engine, layer, 0, pool)  # checks the layer fits the pooled page
            regions.append(Region(name=f"pool.{s}", layer=held[0] if held else -1, slot=0, stage=0,
                                  block_bytes=pool, layers=held))
        return EngineMemory(engine, tuple(regions), tuple((engine.group_slots[layer][1],) for layer in layers), pool)
    regions, slot_regions = [], []
    for layer in layers:
        ids = []
        for slot, block in enumerate(layer_layout(engine, layer, 0, pool).block_bytes):
            suffix = ("", ".v")[slot] if slot < 2 else f".{slot}"
            # offsets are block id x block bytes in int64: bounded pages keep them inside it
            MAX_PAGE_BYTES.check(block, f"logical block of layer {layer} (region layers.{layer}{suffix}) in bytes")
            ids.append(len(regions))
            regions.append(Region(name=f"layers.{layer}{suffix}", layer=layer, slot=slot,
                                  stage=engine.stage_of(layer), block_bytes=block, layers=(layer,)))
        slot_regions.append(tuple(ids))
    return EngineMemory(engine, tuple(regions), tuple(slot_regions), pool)
