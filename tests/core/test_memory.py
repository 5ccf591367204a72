"""Laws of engine memory (kvplan.layout.engine_memory and the page layouts it holds):
regions cover every (layer, slot) exactly once (pooled: region s holds slot s of every
group), page sizes equal the reference cell model's (kvplan.check.cells), and every
component layout puts each element where the reference model does."""

from __future__ import annotations

import attrs
import numpy as np
import pytest
from _laws import any_engine_pair, decode
from hypothesis import given, settings
from hypothesis import strategies as st

from kvplan import EngineSpec, ModelSpec, ShortConvSpec, SpecError, engine_memory
from kvplan.check import byte_codes, layer_cells
from kvplan.check.cells import natural_page_bytes, page_strides
from kvplan.layout import (ComponentLayout, EngineMemory, LayerLayout, Region, attention_bytes_per_token,
                           natural_block_bytes)
from kvplan.spec import COMPONENT_CODE, AttentionSpec, Mamba2Spec

engines = st.tuples(any_engine_pair(), st.integers(0, 1)).map(lambda pair_side: pair_side[0][pair_side[1]])


def _block_pages(engine, layer: int) -> int:
    block, kernel = engine.layer_block_tokens(layer)
    return block // kernel if engine.model.layers[layer].holds_tokens else 1


@settings(max_examples=100)
@given(engines)
def test_regions_hold_every_layer_slot_exactly_once(engine):
    """Unpooled: one region per (layer, slot), slots as many as the reference model's
    pages, named layers.<l>[.v]. Pooled: region s holds slot s of every group; each layer
    in exactly one region, at its group slot. region_of agrees with the regions."""
    mem = engine_memory(engine)
    assert isinstance(mem, EngineMemory) and mem.engine == engine
    assert all(isinstance(r, Region) for r in mem.regions)
    seen = []
    for layer in range(engine.model.num_layers):
        ids = mem.slot_regions[layer]
        for slot, region_id in enumerate(ids):
            assert mem.region_of(layer, slot) == region_id
            region = mem.regions[region_id]
            assert layer in region.layers and not region.per_request
            seen.append((region_id, layer))
        if engine.pooled:
            group, slot = engine.group_slots[layer]
            assert ids == (slot,)
        else:
            assert len(ids) == len(natural_page_bytes(engine, layer))
            for slot, region_id in enumerate(ids):
                region = mem.regions[region_id]
                assert (region.layer, region.slot, region.layers) == (layer, slot, (layer,))
                assert region.stage == engine.stage_of(layer) and region.name == f"layers.{layer}" + ["", ".v"][slot]
    assert sorted(seen) == sorted({(r, layer) for r, region in enumerate(mem.regions) for layer in region.layers})
    if engine.pooled:
        width = max(len(g.layers) for g in engine.layer_groups)
        assert len(mem.regions) == width
        for s, region in enumerate(mem.regions):
            assert region.layers == tuple(g.layers[s] for g in engine.layer_groups
                                          if s < len(g.layers) and g.layers[s] is not None)
    else:
        assert sorted(r for r, _ in seen) == list(range(len(mem.regions)))


@settings(max_examples=100)
@given(engines)
def test_page_sizes_equal_the_reference_models(engine):
    """Every rank's page of every slot is the reference page stride (padding included), a
    region's block is block_pages such pages, natural_block_bytes is the unpadded block,
    and a pooled region's block is the engine's pool page."""
    mem = engine_memory(engine)
    for layer in range(engine.model.num_layers):
        pages = _block_pages(engine, layer)
        strides = page_strides(engine, layer)
        for rank in range(engine.tp):
            lay = mem.layer_layout(layer, rank)
            assert list(lay.page_bytes) == strides and list(lay.block_bytes) == [s * pages for s in strides]
        for slot, region_id in enumerate(mem.slot_regions[layer]):
            assert mem.regions[region_id].block_bytes == strides[slot] * pages
        assert natural_block_bytes(engine, layer) == sum(natural_page_bytes(engine, layer)) * pages
        spec = engine.model.layers[layer]
        if spec.holds_tokens:
            per_token = sum(natural_page_bytes(engine, layer)) // engine.layer_block_tokens(layer)[1]
            assert attention_bytes_per_token(spec, engine.tp) == per_token
    if engine.pooled:
        assert {r.block_bytes for r in mem.regions} == {mem.pool_page_bytes}


def _expected_fields(component, held_lo: int, count: int, second: np.ndarray) -> tuple[np.ndarray, ...]:
    """(component, index, token, sub) of the elements (held_lo + i, second[j]), i < count:
    `second` is the token of a token layer, the conv tap of a state layer."""
    index = held_lo + np.arange(count)[:, None]
    second = second[None, :]
    has_tokens = component in ("K", "V", "latent")
    token, sub = (second, 0 * second) if has_tokens else (0 * second, second)
    fields = np.broadcast_arrays(np.full_like(index, COMPONENT_CODE[component]), index, token, sub)
    return tuple(f.reshape(-1) for f in fields)


@settings(max_examples=100)
@given(engine=engines, data=st.data())
def test_component_layouts_place_each_element_where_the_reference_model_does(engine, data):
    """For every component of a layer on a rank, evaluating its layout at (index, token)
    or (index, tap) lands on the start of the reference cell of that element, and the
    layout covers all of that component's cells in the page, cell_bytes each."""
    layer = data.draw(st.integers(0, engine.model.num_layers - 1), label="layer")
    rank = data.draw(st.integers(0, engine.tp - 1), label="tp_rank")
    lay = engine_memory(engine).layer_layout(layer, rank)
    reference = [byte_codes(c) for c in layer_cells(engine, layer, rank, 1)]
    assert isinstance(lay, LayerLayout)
    for c in lay.components:
        assert isinstance(c, ComponentLayout) and lay.component(c.component) is c
        codes, within = reference[c.slot]
        shape = c.layout.shape
        second = np.arange(np.prod(shape[1]) if len(shape) > 1 else 1)
        coords = (np.arange(shape[0])[:, None], second[None, :]) if len(shape) > 1 else (np.arange(shape[0])[:, None],)
        offsets = np.broadcast_to(c.layout(*coords), (shape[0], len(second))).reshape(-1)
        cells = offsets[:, None] + np.arange(c.cell_bytes)
        assert (within[cells] == np.arange(c.cell_bytes)).all()
        assert (codes[cells] == codes[offsets][:, None]).all()
        got = decode(codes[offsets])
        assert all(np.array_equal(g, e) for g, e in zip(got, _expected_fields(c.component, c.held[0], shape[0], second),
                                                            strict=True))
        starts = np.flatnonzero(within == 0)
        assert (decode(codes[starts])[0] == COMPONENT_CODE[c.component]).sum() == len(offsets)


# -- memory that cannot hold its layers -------------------------------------------------------------

MODEL = ModelSpec(name="h", layers=(AttentionSpec(2, 8), ShortConvSpec(conv_dim=4, conv_kernel=3)))


def test_a_pool_page_smaller_than_the_largest_layer_raises_spec_error():
    e = EngineSpec(model=MODEL, pooled=True, block_tokens=4)
    largest = max(natural_block_bytes(e, layer) for layer in range(2))
    assert engine_memory(e).pool_page_bytes == largest
    with pytest.raises(SpecError, match=f"page_bytes {largest - 1} is smaller than the largest layer page "
                                        f"\\({largest} B\\)"):
        engine_memory(attrs.evolve(e, page_bytes=largest - 1))


def test_a_pool_page_that_does_not_split_into_kernel_pages_raises_spec_error():
    e = EngineSpec(model=MODEL, pooled=True, block_tokens=4, kernel_block_tokens=2)
    page = max(natural_block_bytes(e, layer) for layer in range(2)) + 1
    page += page % 2 == 0  # odd: two kernel pages cannot share it
    with pytest.raises(SpecError, match=f"pooled page of {page} B does not split into 2 kernel pages"):
        engine_memory(attrs.evolve(e, page_bytes=page))


def test_a_state_page_smaller_than_its_state_raises_spec_error():
    spec = Mamba2Spec(num_heads=4, head_dim=2, n_groups=1, d_state=2, conv_kernel=4)
    e = EngineSpec(model=ModelSpec(name="s", layers=(spec,)), tp=2)
    natural = natural_block_bytes(e, 0)
    assert engine_memory(attrs.evolve(e, page_bytes=natural)).regions[0].block_bytes == natural
    with pytest.raises(SpecError, match=f"state page of {natural - 1} B is smaller than the layer's {natural} B"):
        engine_memory(attrs.evolve(e, page_bytes=natural - 1))


def test_engine_memory_takes_an_engine_spec():
    with pytest.raises(SpecError, match="engine_memory\\(\\) takes an EngineSpec, got ModelSpec"):
        engine_memory(MODEL)
