"""`kvplan.presets.vllm_engine` against vLLM 0.33's memory model (hybrid block sizes,
kernel blocks, page unification, HMA groups; stated in docs/vllm-memory-model.md).

Expected numbers are values vLLM 0.33's own functions return for these models (the
tables below, also in docs/vllm-memory-model.md) or hand formulas written out next to
them; the conformance vectors hybrid_block_*, unify_* and kernel_block_* are checked in
tests/conformance/test_conformance_hybrid.py.
"""

from __future__ import annotations

import pytest

from kvplan import AttentionSpec, ModelSpec, SpecError, plan, verify
from kvplan.layout import engine_memory
from kvplan.presets import select_kernel_block_tokens, vllm_engine, vllm_memory

# vLLM's hybrid logical block Nl at TP 1, 2, 4, 8 (FlashInfer and FlashAttention alike)
NL = {
    "nemotron-3-nano-30b-a3b": (2096, 2096, 1056, 528),
    "granite-4.0-h-small": (528, 528, 528, 528),
    "falcon-h1-7b": (1568, 1568, 784, 400),
    "qwen3-next-80b-a3b": (544, 544, 272, 144),
    "jamba-v0.1": (80, 80, 80, 80),
}
# vLLM's kernel block selection: FlashInfer [16, 32, 64] -> the largest size dividing Nl
FLASHINFER_KERNEL = {2096: 16, 1056: 32, 528: 16, 1568: 32, 784: 16, 400: 16, 544: 32, 272: 16, 144: 16, 80: 16}
# vLLM's HMA grouping: (groups, pooled regions)
GROUPS = {
    "nemotron-3-nano-30b-a3b": (5, 6), "qwen3-next-80b-a3b": (4, 12), "granite-4.0-h-small": (10, 4),
    "jamba-v0.1": (8, 4), "falcon-h1-7b": (2, 44), "gemma-3-27b": (7, 10), "gemma-4-31b": (6, 10),
}


@pytest.mark.parametrize("name", sorted(NL))
@pytest.mark.parametrize("backend", ["flashinfer", "flash_attn"])
def test_hybrid_block_sizes_match_reference_table(name, backend):
    for tp, nl in zip((1, 2, 4, 8), NL[name]):
        e = vllm_engine(name, tp, backend=backend)
        assert e.block_tokens == nl, (name, tp)
        want_kernel = FLASHINFER_KERNEL[nl] if backend == "flashinfer" else nl  # MultipleOf(16) keeps Nl
        assert e.kernel_tokens == want_kernel
        assert e.pooled and e.conv_layout == "DS"


def test_nemotron_pages():
    """Padded Mamba page = Nl · a1 (a1 = 1,024 B/token at TP1, 512 from TP2, where the 2 KV
    heads stop splitting), as vLLM's hybrid block alignment pads it."""
    pages = {1: 2096 * 1024, 2: 2096 * 512, 4: 1056 * 512, 8: 528 * 512}
    assert pages == {1: 2146304, 2: 1073152, 4: 540672, 8: 270336}
    for tp, page in pages.items():
        assert vllm_engine("nemotron-3-nano-30b-a3b", tp).page_bytes == page
    # the same --block-size on every engine pins Nl and pads the state page further
    for tp in (4, 8):
        e = vllm_engine("nemotron-3-nano-30b-a3b", tp, block_size=2096)
        assert (e.block_tokens, e.page_bytes) == (2096, 2096 * 512)


def test_speculative_tokens_add_conv_rows():
    """2 speculative tokens: 5 conv rows; TP1 Mamba page 6,144·5·2 + 2,097,152 = 2,158,592 B,
    B0 = 16·ceil(2,158,592 / (16·1,024)) = 16·132 = 2,112 tokens."""
    e = vllm_engine("nemotron-3-nano-30b-a3b", 1, num_speculative_tokens=2)
    assert (e.block_tokens, e.page_bytes, e.num_speculative_tokens) == (2112, 2112 * 1024, 2)
    assert vllm_memory(e.model, 1, num_speculative_tokens=2).state_bytes == 6144 * 5 * 2 + 2097152


@pytest.mark.parametrize("name", sorted(GROUPS))
def test_groups_and_regions(name):
    e = vllm_engine(name, 1)
    assert (len(e.layer_groups), len(engine_memory(e).regions)) == GROUPS[name]


def test_gemma4_full_attention_block_scales_with_tp():
    """Page unification: Gemma-4-31B sliding 16 heads × 256, full 4 × 512. Per token at TP t:
    sliding H(t)·1,024 B, full H(t)·2,048 B; full pages are half the sliding ones (block
    ×2 = 32) until the full heads replicate (TP8: 2·1,024 = 1·2,048, block 16)."""
    for tp, full_block in ((1, 32), (2, 32), (4, 32), (8, 16)):
        e = vllm_engine("gemma-4-31b", tp)
        assert e.layer_block_tokens(5)[0] == full_block and e.layer_block_tokens(0)[0] == 16
    # Gemma-4-26B-A4B: sliding 8 × 256, full 2 × 512: ×2 at TP2, equal at TP4
    m = ModelSpec(name="g26", layers=(AttentionSpec(8, 256, sliding_window=1024), AttentionSpec(2, 512)))
    assert [vllm_engine(m, tp).layer_block_tokens(1)[0] for tp in (2, 4)] == [32, 16]


def test_non_dividing_pages_pad_attention():
    """3 heads vs 2 heads: pages 24,576 and 16,384 B; 24,576 % 16,384 ≠ 0 -> pad, not scale."""
    m = ModelSpec(name="pad", layers=(AttentionSpec(3, 128), AttentionSpec(2, 128)))
    e = vllm_engine(m, 1)
    assert e.page_bytes == 3 * 16 * 512 and e.layer_block_tokens(1)[0] == 16
    verify(plan(e, e))


def test_mla_pages_that_do_not_divide_raise():
    """FlashMLA blocks of 64 tokens: latents 576 and 384 (bf16) give pages 64·1,152 = 73,728
    and 64·768 = 49,152 B; 73,728 % 49,152 ≠ 0 and MLA cannot pad: vLLM raises."""
    m = ModelSpec(name="mla", layers=(AttentionSpec(1, 576, mla=True), AttentionSpec(1, 384, mla=True)))
    with pytest.raises(SpecError, match=r"MLA layer page 49152 B does not divide the largest page 73728 B"):
        vllm_engine(m, 1, backend="flashmla")


def test_dense_models_keep_one_region_per_layer():
    e = vllm_engine("llama-3.1-8b", 2)
    assert (e.pooled, e.block_tokens, e.kernel_tokens, len(engine_memory(e).regions)) == (False, 16, 16, 32)
    assert vllm_engine("deepseek-v3", 1, backend="flashmla").kernel_tokens == 64
    assert vllm_engine("deepseek-v3", 1, backend="cutlass_mla").block_tokens == 128


def test_kernel_selection():
    assert [select_kernel_block_tokens(n) for n in (2096, 1056, 528, 1568, 544, 80)] == [16, 32, 16, 32, 32, 16]
    assert select_kernel_block_tokens(128, ("flashinfer_mla",)) == 64


@pytest.mark.parametrize("kwargs,match", [
    (dict(backend="xformers"), r"unknown attention backend 'xformers'"),
    (dict(backend="flashmla"), r"backend 'flashmla' runs MLA layers only"),
    (dict(pp=2), r"pp=2"),
    (dict(block_size=0), r"block_size must be a positive int, got 0"),
])
def test_errors_quote_values(kwargs, match):
    with pytest.raises(SpecError, match=match):
        vllm_engine("nemotron-3-nano-30b-a3b", 1, **kwargs)


def test_unknown_model_name():
    with pytest.raises(SpecError, match=r"unknown model 'nemotron-4'"):
        vllm_engine("nemotron-4", 1)


@pytest.mark.parametrize("name,tp_p,tp_d", [("falcon-h1-7b", 2, 4), ("jamba-v0.1", 1, 2), ("qwen3-next-80b-a3b", 2, 1)])
def test_preset_pairs_verify(name, tp_p, tp_d):
    verify(plan(vllm_engine(name, tp_p), vllm_engine(name, tp_d)))
