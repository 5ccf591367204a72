"""Built-in hybrid models: attention mixed with Mamba / gated-delta-net state layers.

Convention (shared with `kvplan.models.hf_config.from_hf_config`): a `ModelSpec` lists only
the layers that hold KV cache or recurrent state, in model order. MoE / MLP-only
layers (Nemotron-H's ``E`` and ``-``) move no bytes and are dropped. A parallel-hybrid
layer (Falcon-H1: attention and Mamba2 side by side in one decoder layer) contributes
its attention layer, then its Mamba layer.

Dimensions are those of each checkpoint's Hugging Face ``config.json``; the comment
above each builder names its source and flags what could not be checked.

>>> m = HYBRID_MODELS["nemotron-3-nano-30b-a3b"]
>>> m.num_layers, sum(layer.kind == "attention" for layer in m.layers)
(29, 6)
>>> [layer.kind for layer in HYBRID_MODELS["falcon-h1-7b"].layers[:4]]
['attention', 'mamba2', 'attention', 'mamba2']
>>> HYBRID_MODELS["qwen3-next-80b-a3b"].layers[3].head_dim
256
"""

from __future__ import annotations

from ..spec.layers import AttentionSpec
from ..spec.model import ModelSpec
from ..spec.layers import GatedDeltaNetSpec, Mamba1Spec, Mamba2Spec

# vLLM's KV-cache and conv-state dtypes default to the model dtype ("auto"); every
# checkpoint below declares torch_dtype bfloat16.
_MODEL_DTYPE = "bfloat16"


def _nemotron_3_nano() -> ModelSpec:
    # nvidia/NVIDIA-Nemotron-3-Nano-30B-A3B (nemotron_h): hybrid_override_pattern below
    # (M = Mamba2, E = MoE, * = attention; 23 M, 23 E, 6 *), 32 q / 2 KV heads x 128,
    # mamba_num_heads 64 x mamba_head_dim 64, n_groups 8, ssm_state_size 128,
    # conv_kernel 4. Checked against Megatron-Bridge's Nemotron3NanoProvider test and
    # vLLM / third-party copies of the config. SSM state is float32: the config sets
    # mamba_ssm_cache_dtype "float32" and vLLM's NemotronHForCausalLMConfig hook uses it
    # (defaulting to float32 when absent) whenever --mamba-ssm-cache-dtype is "auto".
    pattern = "MEMEM*EMEMEM*EMEMEM*EMEMEM*EMEMEM*EMEMEMEM*EMEMEMEME"
    attention = AttentionSpec(num_kv_heads=2, head_dim=128, dtype=_MODEL_DTYPE)
    mamba = Mamba2Spec(num_heads=64, head_dim=64, n_groups=8, d_state=128, conv_kernel=4,
                       conv_dtype=_MODEL_DTYPE, ssm_dtype="float32")
    by_symbol = {"M": mamba, "*": attention}
    # MoE layers hold no cache but count for the pipeline split (num_hidden_layers 52)
    return ModelSpec(name="nemotron-3-nano-30b-a3b",
                     layers=tuple(by_symbol[symbol] for symbol in pattern if symbol in by_symbol),
                     model_layers=tuple(i for i, symbol in enumerate(pattern) if symbol in by_symbol),
                     num_model_layers=len(pattern))


def _granite_4_h_small() -> ModelSpec:
    # ibm-granite/granite-4.0-h-small (granitemoehybrid): 40 layers, 36 mamba + 4
    # attention (MoE FFN on every layer, which holds no state); hidden 4096, 32 q / 8 KV
    # heads, head_dim 4096 / 32 = 128; mamba_n_heads 128, mamba_d_head 64
    # (= mamba_expand 2 x 4096 / 128), mamba_n_groups 1, mamba_d_state 128, mamba_d_conv 4.
    # NOT VERIFIED: the attention positions. Third-party copies of this config give the
    # counts (36 mamba / 4 attention) but not the order; layers 5, 15, 25, 35 are the
    # positions of the verified sibling configs granite-4.0-h-tiny and -h-1b (same 40
    # layers, same 4 attention layers). SSM dtype: vLLM's "auto" -> model dtype bfloat16.
    attention_at = {5, 15, 25, 35}
    attention = AttentionSpec(num_kv_heads=8, head_dim=128, dtype=_MODEL_DTYPE)
    mamba = Mamba2Spec(num_heads=128, head_dim=64, n_groups=1, d_state=128, conv_kernel=4,
                       conv_dtype=_MODEL_DTYPE, ssm_dtype=_MODEL_DTYPE)
    return ModelSpec(name="granite-4.0-h-small",
                     layers=tuple(attention if i in attention_at else mamba for i in range(40)))


def _falcon_h1_7b() -> ModelSpec:
    # tiiuae/Falcon-H1-7B (falcon_h1), parallel hybrid: 44 decoder layers, each with
    # attention (12 q / 2 KV heads, head_dim 128 from the config's head_dim key: not
    # hidden 3072 / 12) and a Mamba2 mixer (mamba_d_ssm 3072 = mamba_n_heads 24 x
    # mamba_d_head 128, mamba_n_groups 1, mamba_d_state 256, mamba_d_conv 4). Values from
    # transformers' FalconH1 docs table and a verbatim config copy. SSM dtype: model dtype.
    attention = AttentionSpec(num_kv_heads=2, head_dim=128, dtype=_MODEL_DTYPE)
    mamba = Mamba2Spec(num_heads=24, head_dim=128, n_groups=1, d_state=256, conv_kernel=4,
                       conv_dtype=_MODEL_DTYPE, ssm_dtype=_MODEL_DTYPE)
    return ModelSpec(name="falcon-h1-7b", layers=(attention, mamba) * 44,
                     model_layers=tuple(i // 2 for i in range(88)), num_model_layers=44)


def _qwen3_next_80b() -> ModelSpec:
    # Qwen/Qwen3-Next-80B-A3B (qwen3_next): 48 layers, full attention when
    # (i + 1) % full_attention_interval(4) == 0 (12 layers), gated delta net otherwise
    # (36). Attention: 16 q / 2 KV heads, head_dim 256. GDN: linear_num_key_heads 16,
    # linear_num_value_heads 32, linear_key_head_dim = linear_value_head_dim 128,
    # linear_conv_kernel_dim 4 (transformers' Qwen3NextConfig defaults, which document
    # this checkpoint). Recurrent state dtype: model dtype.
    attention = AttentionSpec(num_kv_heads=2, head_dim=256, dtype=_MODEL_DTYPE)
    gdn = GatedDeltaNetSpec(num_k_heads=16, num_v_heads=32, head_k_dim=128, head_v_dim=128,
                            conv_kernel=4, conv_dtype=_MODEL_DTYPE, ssm_dtype=_MODEL_DTYPE)
    return ModelSpec(name="qwen3-next-80b-a3b",
                     layers=tuple(attention if (i + 1) % 4 == 0 else gdn for i in range(48)))


def _jamba_v01() -> ModelSpec:
    # ai21labs/Jamba-v0.1 (jamba): 32 layers, attention where i % attn_layer_period(8) ==
    # attn_layer_offset(4) (4 layers), Mamba1 elsewhere (28). Attention: 32 q / 8 KV heads,
    # head_dim 4096 / 32 = 128. Mamba1: intermediate mamba_expand 2 x hidden 4096 = 8192,
    # mamba_d_state 16, mamba_d_conv 4 (transformers' JambaConfig defaults, which document
    # this checkpoint). SSM dtype: model dtype.
    attention = AttentionSpec(num_kv_heads=8, head_dim=128, dtype=_MODEL_DTYPE)
    mamba = Mamba1Spec(intermediate_size=8192, d_state=16, conv_kernel=4,
                       conv_dtype=_MODEL_DTYPE, ssm_dtype=_MODEL_DTYPE)
    return ModelSpec(name="jamba-v0.1",
                     layers=tuple(attention if i % 8 == 4 else mamba for i in range(32)))


def _gemma_4_31b() -> ModelSpec:
    # google/gemma-4-31B (gemma4, text_config): 60 layers, layer_types (5 sliding, 1 full)
    # x 10. Sliding: num_key_value_heads 16 x head_dim 256, sliding_window 1024. Full:
    # attention_k_eq_v true, so num_global_key_value_heads 4 x global_head_dim 512 (the
    # value is the key, but vLLM still stores V).
    sliding = AttentionSpec(num_kv_heads=16, head_dim=256, dtype=_MODEL_DTYPE, sliding_window=1024)
    full = AttentionSpec(num_kv_heads=4, head_dim=512, dtype=_MODEL_DTYPE)
    return ModelSpec(name="gemma-4-31b", layers=((sliding,) * 5 + (full,)) * 10)


HYBRID_MODELS: dict[str, ModelSpec] = {
    spec.name: spec
    for spec in (_nemotron_3_nano(), _granite_4_h_small(), _falcon_h1_7b(), _qwen3_next_80b(),
                 _jamba_v01(), _gemma_4_31b())
}
