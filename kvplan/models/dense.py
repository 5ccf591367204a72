"""Built-in dense models (every layer full or sliding-window attention, or MLA).

Only what decides bytes is recorded: layer count, KV heads, head dims, KV dtype,
MLA latent width and sliding windows (query heads, hidden size and FFNs move no KV
cache). Dimensions follow each checkpoint's Hugging Face ``config.json``; the comment
beside each entry names the values it rests on.
"""

from __future__ import annotations

from ..spec.layers import AttentionSpec
from ..spec.limits import MAX_LAYERS, check_count
from ..spec.model import ModelSpec

# vLLM's default KV-cache dtype is the model dtype ("auto"); every model below is
# served in bfloat16 (DeepSeek-V3's fp8 *weights* do not change its bf16 KV cache).
_KV_DTYPE = "bfloat16"


def dense(name: str, num_layers: int, num_kv_heads: int, head_dim: int, *,
          dtype: str = _KV_DTYPE) -> ModelSpec:
    """A model whose layers all hold the same full-attention KV cache.

    >>> dense("toy", 2, 4, 64).layers[1].bytes_per_token
    1024
    """
    layer = AttentionSpec(num_kv_heads=num_kv_heads, head_dim=head_dim, dtype=dtype)
    check_count(num_layers, "num_layers", MAX_LAYERS)
    return ModelSpec(name=name, layers=(layer,) * num_layers)


def mla(name: str, num_layers: int, kv_lora_rank: int, qk_rope_head_dim: int, *,
        dtype: str = _KV_DTYPE) -> ModelSpec:
    """A multi-head latent attention model: one replicated latent per token and layer.

    The latent is the compressed KV (`kv_lora_rank`) followed by the shared RoPE key
    (`qk_rope_head_dim`), as vLLM stores it.

    >>> mla("toy-mla", 3, 512, 64).layers[0].bytes_per_token
    1152
    """
    check_count(kv_lora_rank, "kv_lora_rank")
    check_count(qk_rope_head_dim, "qk_rope_head_dim")
    layer = AttentionSpec(num_kv_heads=1, head_dim=kv_lora_rank + qk_rope_head_dim, dtype=dtype, mla=True)
    check_count(num_layers, "num_layers", MAX_LAYERS)
    return ModelSpec(name=name, layers=(layer,) * num_layers)


def interleaved_sliding(name: str, num_layers: int, num_kv_heads: int, head_dim: int, *,
                        window_tokens: int, global_every: int, dtype: str = _KV_DTYPE) -> ModelSpec:
    """Sliding-window layers with a global (full-attention) layer every `global_every`.

    Layer i is global when ``(i + 1) % global_every == 0`` (Gemma 3's
    ``sliding_window_pattern``: 5 sliding then 1 global for ``global_every=6``).

    >>> m = interleaved_sliding("toy", 7, 2, 64, window_tokens=512, global_every=3)
    >>> [layer.sliding_window for layer in m.layers]
    [512, 512, None, 512, 512, None, 512]
    """
    sliding = AttentionSpec(num_kv_heads=num_kv_heads, head_dim=head_dim, dtype=dtype, sliding_window=window_tokens)
    full = AttentionSpec(num_kv_heads=num_kv_heads, head_dim=head_dim, dtype=dtype)
    check_count(num_layers, "num_layers", MAX_LAYERS)
    check_count(global_every, "global_every")
    layers = tuple(full if (i + 1) % global_every == 0 else sliding for i in range(num_layers))
    return ModelSpec(name=name, layers=layers)


DENSE_MODELS: dict[str, ModelSpec] = {
    # meta-llama/Llama-3.1-8B: 32 layers, 32 q / 8 KV heads, head_dim 4096/32 = 128.
    "llama-3.1-8b": dense("llama-3.1-8b", 32, 8, 128),
    # meta-llama/Llama-3.1-70B: 80 layers, 64 q / 8 KV heads, head_dim 8192/64 = 128.
    "llama-3.1-70b": dense("llama-3.1-70b", 80, 8, 128),
    # Qwen/Qwen2.5-7B: 28 layers, 28 q / 4 KV heads, head_dim 3584/28 = 128. Its config
    # carries sliding_window 131072 with use_sliding_window false: full attention.
    "qwen2.5-7b": dense("qwen2.5-7b", 28, 4, 128),
    # mistralai/Mistral-7B (v0.3 / Instruct-v0.2+): 32 layers, 32 q / 8 KV heads, head_dim
    # 128. v0.1 declared sliding_window 4096; v0.2+ dropped it, so full attention here.
    "mistral-7b": dense("mistral-7b", 32, 8, 128),
    # deepseek-ai/DeepSeek-V3: 61 layers (3 dense + 58 MoE, all MLA), kv_lora_rank 512,
    # qk_rope_head_dim 64 -> 576-wide latent, 1152 B/token in bf16. vLLM may pad the
    # MLA page for alignment; this spec holds the unpadded latent.
    "deepseek-v3": mla("deepseek-v3", 61, 512, 64),
    # google/gemma-3-27b: 62 layers, 32 q / 16 KV heads, head_dim 128, sliding window
    # 1024 on 5 of every 6 layers (52 sliding + 10 global, as vLLM groups them).
    # Global and sliding layers have the same heads in Gemma 3 (unlike Gemma 4).
    "gemma-3-27b": interleaved_sliding("gemma-3-27b", 62, 16, 128, window_tokens=1024, global_every=6),
}

