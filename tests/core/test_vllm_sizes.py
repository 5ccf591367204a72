"""Laws of vLLM 0.33's sizing rules (kvplan.presets.kernels / vllm): kernel block
selection, the hybrid block alignment and page unification, against restatements of
the rules by search and page sizes from the reference cell model (kvplan.check.cells)."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from kvplan import EngineSpec, SpecError
from kvplan.check import held_indices
from kvplan.check.cells import natural_page_bytes
from kvplan.layout import natural_block_bytes
from kvplan.presets import (BACKENDS, DEFAULT_BLOCK_TOKENS, KernelBlocks, VllmMemory, backend_kernel_blocks,
                            hma_groups, hybrid_block_tokens, select_kernel_block_tokens, state_page_bytes,
                            vllm_memory)
from kvplan.testing.strategies import hybrid_engine_pairs

GENERAL = ("flashinfer", "flash_attn")  # the backends that run non-MLA attention


@settings(max_examples=200)
@given(st.integers(1, 4096), st.permutations(sorted(BACKENDS)), st.integers(1, 3))
def test_kernel_block_is_the_block_or_the_largest_accepted_fixed_divisor(block, names, count):
    """The logical block when every backend accepts it; else the largest fixed size of
    any backend that divides it and every backend accepts; else SpecError quoting it."""
    backends = names[:count]
    kinds = [BACKENDS[b] for b in backends]
    if all(k.accepts(block) for k in kinds):
        assert select_kernel_block_tokens(block, tuple(backends)) == block
        return
    fitting = [s for k in kinds for s in k.fixed if block % s == 0 and all(o.accepts(s) for o in kinds)]
    if not fitting:
        with pytest.raises(SpecError, match=f"divides a {block}-token logical block"):
            select_kernel_block_tokens(block, tuple(backends))
        return
    assert select_kernel_block_tokens(block, tuple(backends)) == max(fitting)


@settings(max_examples=100)
@given(st.integers(1, 512), st.sampled_from(sorted(BACKENDS)))
def test_kernel_blocks_accept_their_sizes_and_multiples(tokens, name):
    """accepts(n): n is a fixed size or a multiple of multiple_of; smallest_tokens is the
    least accepted size; backend_kernel_blocks looks names up; one name is one backend."""
    k = backend_kernel_blocks(name)
    assert k is BACKENDS[name]
    assert k.accepts(tokens) == (tokens in k.fixed or (k.multiple_of is not None and tokens % k.multiple_of == 0))
    assert k.smallest_tokens == next(n for n in itertools.count(1) if k.accepts(n))
    whole = tokens * k.smallest_tokens  # a multiple of an accepted size: selection succeeds
    assert select_kernel_block_tokens(whole, name) == select_kernel_block_tokens(whole, (name,))


def test_unknown_backend_and_a_kernel_of_multiples():
    with pytest.raises(SpecError, match="unknown attention backend 'tpu'; known backends: cutlass_mla, flash_attn"):
        backend_kernel_blocks("tpu")
    assert KernelBlocks(multiple_of=8, fixed=(4,)).smallest_tokens == 8  # documented: multiple_of first


@st.composite
def hybrid_models(draw):
    """(model, tp, backend, --block-size) of a generated attention + state hybrid."""
    src, _ = draw(hybrid_engine_pairs(max_layers=3, pooled=False), label="engines")
    return (src.model, src.tp, draw(st.sampled_from(GENERAL), label="backend"),
            draw(st.sampled_from([None, None, 16, 64, 1000]), label="block_size"))


def _state_page(model, tp: int) -> int:
    """The largest state page of the model at tp, from the reference model."""
    e = EngineSpec(model=model, tp=tp)
    return max(sum(natural_page_bytes(e, i)) for i, s in enumerate(model.layers) if not s.holds_tokens)


def _bytes_per_token(spec, tp: int) -> int:
    return len(held_indices(spec.heads, tp, 0)) * (spec.head_dim + spec.v_dim) * spec.elem_bytes


@settings(max_examples=100)
@given(hybrid_models())
def test_hybrid_block_is_the_smallest_aligned_block_whose_page_holds_the_state(case):
    """b0 = the smallest multiple of A = max(L, block size) (128 at least for MLA) whose
    attention page holds the largest state page M; Nl = the smallest multiple of the
    backend's smallest kernel L from b0 (a larger --block-size kept); the state page pads
    to max(M, Nl * a1)."""
    model, tp, backend, block_size = case
    state = _state_page(model, tp)
    for spec in model.layers:
        if not spec.holds_tokens:
            assert state_page_bytes(spec, tp) == sum(natural_page_bytes(EngineSpec(model=model, tp=tp),
                                                                        model.layers.index(spec)))
    a1 = _bytes_per_token(next(s for s in model.layers if s.holds_tokens), tp)
    small = BACKENDS[backend].smallest_tokens
    align = max(small, DEFAULT_BLOCK_TOKENS[backend] if block_size is None else block_size)
    if any(s.holds_tokens and s.mla for s in model.layers):
        align = max(align, 128)
    b0 = next(b for b in itertools.count(align, align) if b * a1 >= state)
    nl = next(n for n in itertools.count(small, small) if n >= b0)
    if block_size is not None and block_size > nl:
        nl = block_size
    assert hybrid_block_tokens(model, tp, backend, block_size) == (nl, max(state, nl * a1))


@settings(max_examples=60)
@given(hybrid_models())
def test_vllm_memory_pools_one_unified_page_that_holds_every_layer(case):
    """Several layer specs: pooled HMA groups (hma_groups' layers), one page that every
    layer's block (at its group's block size) fits, kernel pages the backend accepts;
    the state bytes are the largest state page."""
    model, tp, backend, block_size = case
    try:
        memory = vllm_memory(model, tp, backend=backend, block_size=block_size)
    except SpecError as error:  # vLLM refuses MLA pages that do not divide the unified page
        assume("NotImplementedError" not in str(error))
        raise
    assert isinstance(memory, VllmMemory) and memory.state_bytes == _state_page(model, tp)
    assert memory.block_tokens == hybrid_block_tokens(model, tp, backend, block_size)[0]
    assert memory.pooled == (len(set(model.layers)) > 1)
    if not memory.pooled:
        assert memory.groups == () and memory.page_bytes is None
        return
    assert [g.layers for g in memory.groups] == [g.layers for g in hma_groups(model)]
    engine = EngineSpec(model=model, tp=tp, block_tokens=memory.block_tokens,
                        kernel_block_tokens=memory.kernel_block_tokens, groups=memory.groups, pooled=True,
                        page_bytes=memory.page_bytes)
    for layer in range(model.num_layers):
        assert natural_block_bytes(engine, layer) <= memory.page_bytes
    for g in memory.groups:
        if g.block_tokens is not None:
            assert BACKENDS[backend].accepts(g.kernel_block_tokens) and g.block_tokens % g.kernel_block_tokens == 0
