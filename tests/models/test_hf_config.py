"""`from_hf_config` against config.json dicts of every supported family.

The full configs below are written from the published checkpoints' config.json (key
names and values as found in transformers' configuration classes, vLLM, and verbatim
third-party copies; see kvplan/hybrid_models.py for the sources and the one unverified
value). Trimmed configs keep the real key names and per-layer structure with fewer
layers. Expected layer sequences and dims are written out by hand.
"""

from __future__ import annotations

import pytest

from kvplan.errors import SpecError
from kvplan.models.hf_config import SUPPORTED_MODEL_TYPES, from_hf_config
from kvplan.models.hybrid import HYBRID_MODELS
from kvplan.spec import AttentionSpec
from kvplan.spec import GatedDeltaNetSpec, Mamba1Spec, Mamba2Spec

# --------------------------------------------------------------------------- full configs

NEMOTRON_3_NANO_30B = {
    "architectures": ["NemotronHForCausalLM"],
    "model_type": "nemotron_h",
    "hidden_size": 2688,
    "intermediate_size": 1856,
    "num_hidden_layers": 52,
    "hybrid_override_pattern": "MEMEM*EMEMEM*EMEMEM*EMEMEM*EMEMEM*EMEMEMEM*EMEMEMEME",
    "num_attention_heads": 32,
    "num_key_value_heads": 2,
    "head_dim": 128,
    "mamba_num_heads": 64,
    "mamba_head_dim": 64,
    "n_groups": 8,
    "ssm_state_size": 128,
    "conv_kernel": 4,
    "expand": 2,
    "chunk_size": 128,
    "mamba_hidden_act": "silu",
    "mamba_ssm_cache_dtype": "float32",
    "mlp_hidden_act": "relu2",
    "n_routed_experts": 128,
    "n_shared_experts": 1,
    "num_experts_per_tok": 6,
    "moe_intermediate_size": 1856,
    "moe_shared_expert_intermediate_size": 3712,
    "routed_scaling_factor": 2.5,
    "vocab_size": 131072,
    "torch_dtype": "bfloat16",
}

_GRANITE_H_LAYER_TYPES = (
    ["mamba"] * 5 + ["attention"] + ["mamba"] * 9 + ["attention"]
    + ["mamba"] * 9 + ["attention"] + ["mamba"] * 9 + ["attention"] + ["mamba"] * 4
)

GRANITE_4_H_SMALL = {
    "architectures": ["GraniteMoeHybridForCausalLM"],
    "model_type": "granitemoehybrid",
    "hidden_size": 4096,
    "intermediate_size": 768,
    "num_hidden_layers": 40,
    "num_attention_heads": 32,
    "num_key_value_heads": 8,
    "num_local_experts": 72,
    "num_experts_per_tok": 10,
    "shared_intermediate_size": 1536,
    "layer_types": _GRANITE_H_LAYER_TYPES,
    "mamba_n_heads": 128,
    "mamba_d_head": 64,
    "mamba_n_groups": 1,
    "mamba_d_state": 128,
    "mamba_d_conv": 4,
    "mamba_expand": 2,
    "mamba_chunk_size": 256,
    "position_embedding_type": "nope",
    "tie_word_embeddings": True,
    "vocab_size": 100352,
    "torch_dtype": "bfloat16",
}

FALCON_H1_7B = {
    "architectures": ["FalconH1ForCausalLM"],
    "model_type": "falcon_h1",
    "hidden_size": 3072,
    "intermediate_size": 12288,
    "num_hidden_layers": 44,
    "num_attention_heads": 12,
    "num_key_value_heads": 2,
    "head_dim": 128,
    "mamba_d_ssm": 3072,
    "mamba_n_heads": 24,
    "mamba_d_head": 128,
    "mamba_n_groups": 1,
    "mamba_d_state": 256,
    "mamba_d_conv": 4,
    "mamba_expand": 2,
    "mamba_chunk_size": 128,
    "max_position_embeddings": 262144,
    "vocab_size": 130048,
    "torch_dtype": "bfloat16",
}

QWEN3_NEXT_80B_A3B = {
    "architectures": ["Qwen3NextForCausalLM"],
    "model_type": "qwen3_next",
    "hidden_size": 2048,
    "intermediate_size": 5120,
    "num_hidden_layers": 48,
    "num_attention_heads": 16,
    "num_key_value_heads": 2,
    "head_dim": 256,
    "full_attention_interval": 4,
    "linear_num_key_heads": 16,
    "linear_num_value_heads": 32,
    "linear_key_head_dim": 128,
    "linear_value_head_dim": 128,
    "linear_conv_kernel_dim": 4,
    "num_experts": 512,
    "num_experts_per_tok": 10,
    "moe_intermediate_size": 512,
    "shared_expert_intermediate_size": 512,
    "decoder_sparse_step": 1,
    "partial_rotary_factor": 0.25,
    "vocab_size": 151936,
    "torch_dtype": "bfloat16",
}

JAMBA_V01 = {
    "architectures": ["JambaForCausalLM"],
    "model_type": "jamba",
    "hidden_size": 4096,
    "intermediate_size": 14336,
    "num_hidden_layers": 32,
    "num_attention_heads": 32,
    "num_key_value_heads": 8,
    "attn_layer_period": 8,
    "attn_layer_offset": 4,
    "expert_layer_period": 2,
    "expert_layer_offset": 1,
    "num_experts": 16,
    "num_experts_per_tok": 2,
    "mamba_d_state": 16,
    "mamba_d_conv": 4,
    "mamba_expand": 2,
    "mamba_dt_rank": 256,
    "vocab_size": 65536,
    "torch_dtype": "bfloat16",
}

GEMMA_4_31B = {
    "architectures": ["Gemma4ForConditionalGeneration"],
    "model_type": "gemma4",
    "text_config": {
        "model_type": "gemma4_text",
        "attention_k_eq_v": True,
        "dtype": "bfloat16",
        "enable_moe_block": False,
        "final_logit_softcapping": 30.0,
        "global_head_dim": 512,
        "head_dim": 256,
        "hidden_size": 5376,
        "intermediate_size": 21504,
        "layer_types": (["sliding_attention"] * 5 + ["full_attention"]) * 10,
        "max_position_embeddings": 262144,
        "num_attention_heads": 32,
        "num_global_key_value_heads": 4,
        "num_hidden_layers": 60,
        "num_key_value_heads": 16,
        "num_kv_shared_layers": 0,
        "sliding_window": 1024,
        "vocab_size": 262144,
    },
    "vision_config": {"model_type": "gemma4_vision", "hidden_size": 1152},
}

FULL_CONFIGS = {
    "nemotron-3-nano-30b-a3b": NEMOTRON_3_NANO_30B,
    "granite-4.0-h-small": GRANITE_4_H_SMALL,
    "falcon-h1-7b": FALCON_H1_7B,
    "qwen3-next-80b-a3b": QWEN3_NEXT_80B_A3B,
    "jamba-v0.1": JAMBA_V01,
    "gemma-4-31b": GEMMA_4_31B,
}


@pytest.mark.parametrize("name", sorted(FULL_CONFIGS))
def test_presets_equal_their_real_configs(name):
    assert from_hf_config(FULL_CONFIGS[name], name=name) == HYBRID_MODELS[name]


def test_every_preset_has_a_real_config():
    assert sorted(HYBRID_MODELS) == sorted(FULL_CONFIGS)


def _kinds(spec):
    return [layer.kind for layer in spec.layers]


def test_nemotron_full_counts_and_bytes():
    spec = from_hf_config(NEMOTRON_3_NANO_30B)
    assert spec.name == "nemotron_h"
    assert _kinds(spec).count("mamba2") == 23 and _kinds(spec).count("attention") == 6
    mamba = spec.layers[0]
    # Nemotron-3-Nano: conv dim 4096 + 2 * 8 * 128 = 6144, SSM 64 * 64 * 128 * 4 B = 2,097,152 B at TP1.
    assert mamba.conv_channels == 6144
    assert mamba.ssm_bytes_per_head * mamba.num_heads == 2_097_152
    assert spec.layers[3] == AttentionSpec(num_kv_heads=2, head_dim=128)  # 4th cache layer is the first '*'


def test_nemotron_layer_list_spelling_equals_the_pattern():
    # Newer Nemotron configs list layers_block_type instead of the pattern string.
    symbols = {"M": "mamba", "E": "moe", "*": "attention", "-": "mlp"}
    listed = {k: v for k, v in NEMOTRON_3_NANO_30B.items() if k != "hybrid_override_pattern"}
    listed["layers_block_type"] = [symbols[s] for s in NEMOTRON_3_NANO_30B["hybrid_override_pattern"]]
    assert from_hf_config(listed) == from_hf_config(NEMOTRON_3_NANO_30B)
    # transformers' current names for the same thing
    renamed = dict(listed, layers_block_type=None, layer_types=[
        {"mamba": "linear_attention", "attention": "full_attention"}.get(t, t) for t in listed["layers_block_type"]])
    assert from_hf_config(renamed) == from_hf_config(NEMOTRON_3_NANO_30B)


def test_granite_full_keeps_replicated_groups_and_model_dtype_ssm():
    spec = from_hf_config(GRANITE_4_H_SMALL)
    assert [i for i, kind in enumerate(_kinds(spec)) if kind == "attention"] == [5, 15, 25, 35]
    mamba = spec.layers[0]
    assert (mamba.num_heads, mamba.head_dim, mamba.n_groups, mamba.d_state) == (128, 64, 1, 128)
    assert mamba.conv_channels == 8448 and mamba.ssm_dtype == "bfloat16"  # 8192 + 2 * 1 * 128 channels, bf16
    assert spec.layers[5].bytes_per_token == 8 * 256 * 2


def test_falcon_full_is_parallel_hybrid():
    spec = from_hf_config(FALCON_H1_7B)
    assert spec.num_layers == 88
    assert _kinds(spec) == ["attention", "mamba2"] * 44
    assert spec.layers[0].head_dim == 128  # the head_dim key, not 3072 // 12
    assert spec.layers[1] == Mamba2Spec(num_heads=24, head_dim=128, n_groups=1, d_state=256, conv_kernel=4, conv_dtype="bfloat16", ssm_dtype="bfloat16")


def test_qwen3_next_full():
    spec = from_hf_config(QWEN3_NEXT_80B_A3B)
    assert [i for i, kind in enumerate(_kinds(spec)) if kind == "attention"] == list(range(3, 48, 4))
    assert spec.layers[0] == GatedDeltaNetSpec(num_k_heads=16, num_v_heads=32, head_k_dim=128, head_v_dim=128, conv_kernel=4, conv_dtype="bfloat16", ssm_dtype="bfloat16")
    assert spec.layers[0].conv_channels == 8192
    assert spec.layers[3] == AttentionSpec(num_kv_heads=2, head_dim=256)


def test_jamba_full():
    spec = from_hf_config(JAMBA_V01)
    assert [i for i, kind in enumerate(_kinds(spec)) if kind == "attention"] == [4, 12, 20, 28]
    assert spec.layers[0] == Mamba1Spec(intermediate_size=8192, d_state=16, conv_kernel=4, conv_dtype="bfloat16", ssm_dtype="bfloat16")
    assert spec.layers[4] == AttentionSpec(num_kv_heads=8, head_dim=128)


def test_gemma4_full_has_per_layer_heads():
    spec = from_hf_config(GEMMA_4_31B)
    windows = [layer.sliding_window for layer in spec.layers]
    assert windows.count(1024) == 50 and windows.count(None) == 10
    assert spec.layers[5] == AttentionSpec(num_kv_heads=4, head_dim=512)
    assert spec.layers[0] == AttentionSpec(num_kv_heads=16, head_dim=256, sliding_window=1024)


# --------------------------------------------------------------------------- trimmed configs

def test_llama_trimmed():
    # meta-llama/Llama-3.1-8B, 4 of 32 layers.
    config = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 4096,
              "num_hidden_layers": 4, "num_attention_heads": 32, "num_key_value_heads": 8,
              "intermediate_size": 14336, "rope_theta": 500000.0, "torch_dtype": "bfloat16"}
    spec = from_hf_config(config, name="llama-4l")
    assert spec.name == "llama-4l"
    assert spec.layers == (AttentionSpec(num_kv_heads=8, head_dim=128),) * 4


def test_kv_heads_default_to_query_heads_and_dtype_is_read():
    # Llama-2-7B style: no num_key_value_heads (MHA), float16 weights.
    config = {"model_type": "llama", "hidden_size": 4096, "num_hidden_layers": 2,
              "num_attention_heads": 32, "torch_dtype": "float16"}
    assert from_hf_config(config).layers == (AttentionSpec(num_kv_heads=32, head_dim=128, dtype="float16"),) * 2
    # transformers v5 writes "dtype"; a null head_dim falls back to hidden // heads
    config = {"model_type": "llama", "hidden_size": 2048, "num_hidden_layers": 1, "head_dim": None,
              "num_attention_heads": 16, "num_key_value_heads": 4, "dtype": "float32"}
    assert from_hf_config(config).layers == (AttentionSpec(num_kv_heads=4, head_dim=128, dtype="float32"),)


def test_mistral_window_on_every_layer_or_none():
    # mistralai/Mistral-7B-v0.1 (sliding_window 4096) and v0.3 (null), 3 layers.
    v01 = {"model_type": "mistral", "hidden_size": 4096, "num_hidden_layers": 3, "num_attention_heads": 32,
           "num_key_value_heads": 8, "sliding_window": 4096, "torch_dtype": "bfloat16"}
    assert [layer.sliding_window for layer in from_hf_config(v01).layers] == [4096, 4096, 4096]
    v03 = dict(v01, sliding_window=None)
    assert [layer.sliding_window for layer in from_hf_config(v03).layers] == [None, None, None]
    # Mistral-Nemo: head_dim 128 although 5120 // 32 = 160
    nemo = dict(v03, hidden_size=5120, head_dim=128)
    assert from_hf_config(nemo).layers[0].head_dim == 128


def test_qwen2_window_only_when_enabled_and_past_max_window_layers():
    # Qwen/Qwen2.5-7B, 4 of 28 layers: sliding_window 131072 but use_sliding_window false.
    config = {"model_type": "qwen2", "hidden_size": 3584, "num_hidden_layers": 4, "num_attention_heads": 28,
              "num_key_value_heads": 4, "sliding_window": 131072, "use_sliding_window": False,
              "max_window_layers": 28, "torch_dtype": "bfloat16"}
    assert from_hf_config(config).layers == (AttentionSpec(num_kv_heads=4, head_dim=128),) * 4
    enabled = dict(config, use_sliding_window=True, sliding_window=4096, max_window_layers=2)
    assert [layer.sliding_window for layer in from_hf_config(enabled).layers] == [None, None, 4096, 4096]
    listed = dict(config, sliding_window=4096, layer_types=["full_attention", "sliding_attention"] * 2)
    assert [layer.sliding_window for layer in from_hf_config(listed).layers] == [None, 4096, None, 4096]


def test_deepseek_v3_trimmed_is_mla():
    config = {"model_type": "deepseek_v3", "hidden_size": 7168, "num_hidden_layers": 3,
              "num_attention_heads": 128, "num_key_value_heads": 128, "kv_lora_rank": 512,
              "q_lora_rank": 1536, "qk_nope_head_dim": 128, "qk_rope_head_dim": 64, "v_head_dim": 128,
              "first_k_dense_replace": 3, "num_nextn_predict_layers": 1, "torch_dtype": "bfloat16"}
    spec = from_hf_config(config)
    assert spec.layers == (AttentionSpec(num_kv_heads=1, head_dim=576, mla=True),) * 3
    assert spec.layers[0].bytes_per_token == 1152


def test_gemma3_text_config_with_omitted_defaults():
    # google/gemma-3-27b-it, 12 of 62 layers: the saved text_config lists only values
    # that differ from Gemma3TextConfig's defaults.
    config = {"architectures": ["Gemma3ForConditionalGeneration"], "model_type": "gemma3",
              "torch_dtype": "bfloat16",
              "text_config": {"model_type": "gemma3_text", "head_dim": 128, "hidden_size": 5376,
                              "num_attention_heads": 32, "num_hidden_layers": 12, "num_key_value_heads": 16,
                              "sliding_window": 1024}}
    spec = from_hf_config(config)
    sliding = AttentionSpec(num_kv_heads=16, head_dim=128, sliding_window=1024)
    full = AttentionSpec(num_kv_heads=16, head_dim=128)
    assert spec.layers == (sliding,) * 5 + (full,) + (sliding,) * 5 + (full,)
    # gemma-3-4b-it style: heads and head_dim omitted -> defaults 8 q / 4 KV x 256
    small = {"model_type": "gemma3", "text_config": {"hidden_size": 2560, "num_hidden_layers": 6,
                                                       "sliding_window": 1024}}
    assert from_hf_config(small).layers[5] == AttentionSpec(num_kv_heads=4, head_dim=256)


def test_gemma3_text_flat_and_layer_types():
    # google/gemma-3-1b-it (gemma3_text, flat), 8 of 26 layers, explicit layer_types.
    config = {"model_type": "gemma3_text", "hidden_size": 1152, "num_hidden_layers": 8, "head_dim": 256,
              "num_attention_heads": 4, "num_key_value_heads": 1, "sliding_window": 512,
              "layer_types": ["sliding_attention"] * 5 + ["full_attention"] + ["sliding_attention"] * 2}
    windows = [layer.sliding_window for layer in from_hf_config(config).layers]
    assert windows == [512] * 5 + [None] + [512] * 2


def test_gemma4_without_layer_types_and_forced_last_full_layer():
    # Gemma4TextConfig: 5 sliding : 1 full by default, and the last layer is always full.
    config = {"model_type": "gemma4_text", "num_hidden_layers": 8, "sliding_window": 512, "head_dim": 256,
              "global_head_dim": 512, "num_attention_heads": 8, "num_key_value_heads": 2}
    windows = [layer.sliding_window for layer in from_hf_config(config).layers]
    assert windows == [512] * 5 + [None] + [512] + [None]
    listed = dict(config, layer_types=["sliding_attention"] * 8)
    assert [layer.sliding_window for layer in from_hf_config(listed).layers] == [512] * 7 + [None]


def test_gemma4_kv_shared_layers_hold_no_cache():
    # google/gemma-4-E2B style, trimmed to 8 layers, the last 2 reading earlier layers' KV;
    # no attention_k_eq_v, so full layers keep num_key_value_heads with global_head_dim.
    config = {"model_type": "gemma4", "text_config": {
        "head_dim": 256, "global_head_dim": 512, "hidden_size": 1536, "num_attention_heads": 8,
        "num_key_value_heads": 1, "num_hidden_layers": 8, "num_kv_shared_layers": 2, "sliding_window": 512,
        "layer_types": ["sliding_attention"] * 4 + ["full_attention"] + ["sliding_attention"] * 2
        + ["full_attention"], "dtype": "bfloat16"}}
    spec = from_hf_config(config)
    assert spec.num_layers == 6
    assert spec.layers[4] == AttentionSpec(num_kv_heads=1, head_dim=512)
    assert spec.layers[5] == AttentionSpec(num_kv_heads=1, head_dim=256, sliding_window=512)


def test_nemotron_trimmed_with_legacy_keys_and_ssm_dtype_override():
    # Nemotron-H-8B style (dense MLP '-'), legacy mamba_n_groups / mamba_d_conv names,
    # and a config that asks for a bfloat16 SSM cache.
    config = {"model_type": "nemotron_h", "hybrid_override_pattern": "M-M*-M", "hidden_size": 4096,
              "num_attention_heads": 32, "num_key_value_heads": 8, "head_dim": 128, "mamba_num_heads": 128,
              "mamba_head_dim": 64, "mamba_n_groups": 8, "ssm_state_size": 128, "mamba_d_conv": 4,
              "mamba_ssm_cache_dtype": "bfloat16", "torch_dtype": "bfloat16"}
    spec = from_hf_config(config)
    mamba = Mamba2Spec(num_heads=128, head_dim=64, n_groups=8, d_state=128, conv_kernel=4, conv_dtype="bfloat16", ssm_dtype="bfloat16")
    assert spec.layers == (mamba, mamba, AttentionSpec(num_kv_heads=8, head_dim=128), mamba)


def test_granite_trimmed_auto_head_dim_and_no_layer_types():
    # granite-4.0-h-tiny style, 6 layers; mamba_d_head "auto" = 2 * 1536 // 48 = 64.
    config = {"model_type": "granitemoehybrid", "hidden_size": 1536, "num_hidden_layers": 6,
              "num_attention_heads": 12, "num_key_value_heads": 4, "mamba_n_heads": 48, "mamba_d_head": "auto",
              "mamba_n_groups": 1, "mamba_d_state": 128, "mamba_d_conv": 4, "mamba_expand": 2,
              "layer_types": ["mamba"] * 5 + ["attention"]}
    spec = from_hf_config(config)
    assert spec.layers[0] == Mamba2Spec(num_heads=48, head_dim=64, n_groups=1, d_state=128, conv_kernel=4, conv_dtype="bfloat16", ssm_dtype="bfloat16")
    assert spec.layers[5] == AttentionSpec(num_kv_heads=4, head_dim=128)
    # GraniteMoeHybridConfig without layer_types: every layer is Mamba.
    assert _kinds(from_hf_config(dict(config, layer_types=None))) == ["mamba2"] * 6


def test_falcon_trimmed_intermediate_from_expand():
    # Falcon-H1 style, 2 layers, mamba_d_ssm null: intermediate mamba_expand 2 * 1024 = 2048,
    # mamba_d_head "auto" = 2048 // 32 heads = 64.
    config = {"model_type": "falcon_h1", "hidden_size": 1024, "num_hidden_layers": 2, "num_attention_heads": 8,
              "num_key_value_heads": 2, "head_dim": 64, "mamba_d_ssm": None, "mamba_n_heads": 32,
              "mamba_d_head": "auto", "mamba_n_groups": 1, "mamba_d_state": 128, "mamba_d_conv": 4,
              "mamba_expand": 2}
    spec = from_hf_config(config)
    assert spec.layers == (AttentionSpec(num_kv_heads=2, head_dim=64),
                           Mamba2Spec(num_heads=32, head_dim=64, n_groups=1, d_state=128, conv_kernel=4, conv_dtype="bfloat16", ssm_dtype="bfloat16")) * 2


def test_qwen3_next_trimmed_layer_types():
    config = dict(QWEN3_NEXT_80B_A3B, num_hidden_layers=5,
                  layer_types=["linear_attention", "full_attention", "linear_attention", "linear_attention",
                               "full_attention"])
    assert _kinds(from_hf_config(config)) == ["gdn", "attention", "gdn", "gdn", "attention"]


def test_jamba_trimmed_custom_period():
    config = dict(JAMBA_V01, num_hidden_layers=6, attn_layer_period=3, attn_layer_offset=1)
    assert _kinds(from_hf_config(config)) == ["mamba1", "attention", "mamba1"] * 2


# --------------------------------------------------------------------------- errors

def test_unknown_model_type_names_it_and_lists_the_supported():
    with pytest.raises(SpecError, match="'gpt_neox'") as info:
        from_hf_config({"model_type": "gpt_neox"})
    for model_type in ("nemotron_h", "granitemoehybrid", "falcon_h1", "qwen3_next", "jamba", "gemma3",
                       "gemma4", "llama", "qwen2", "mistral", "deepseek_v3"):
        assert model_type in SUPPORTED_MODEL_TYPES
        assert model_type in str(info.value)
    with pytest.raises(SpecError, match="None"):
        from_hf_config({"hidden_size": 4096})


def test_non_dict_config():
    with pytest.raises(SpecError, match="list"):
        from_hf_config([("model_type", "llama")])
    with pytest.raises(SpecError, match="no-such-dir/config.json.*cannot read"):  # a path: read, or refused
        from_hf_config("no-such-dir/config.json")


@pytest.mark.parametrize(("config", "key"), [
    ({k: v for k, v in NEMOTRON_3_NANO_30B.items() if k != "mamba_num_heads"}, "mamba_num_heads"),
    ({k: v for k, v in QWEN3_NEXT_80B_A3B.items() if k != "linear_num_key_heads"}, "linear_num_key_heads"),
    ({"model_type": "deepseek_v3", "num_hidden_layers": 2, "qk_rope_head_dim": 64}, "kv_lora_rank"),
    ({"model_type": "llama", "hidden_size": 4096, "num_attention_heads": 32}, "num_hidden_layers"),
    ({"model_type": "llama", "num_hidden_layers": 2, "num_attention_heads": 32}, "hidden_size"),
    ({"model_type": "mistral", "num_hidden_layers": 2, "hidden_size": 4096, "num_attention_heads": 32,
      "layer_types": ["sliding_attention"] * 2}, "sliding_window"),
])
def test_missing_key_names_key_and_family(config, key):
    with pytest.raises(SpecError, match=f"{config['model_type']} config is missing required key '{key}'"):
        from_hf_config(config)


def test_layer_list_length_must_match_num_hidden_layers():
    with pytest.raises(SpecError, match="num_hidden_layers 40 but its layer list has 39"):
        from_hf_config(dict(GRANITE_4_H_SMALL, layer_types=_GRANITE_H_LAYER_TYPES[:39]))


def test_unknown_layer_kinds_are_refused():
    with pytest.raises(SpecError, match=r"symbols \['X'\]"):
        from_hf_config(dict(NEMOTRON_3_NANO_30B, hybrid_override_pattern="MX*"))
    with pytest.raises(SpecError, match="'chunked_attention'"):
        from_hf_config({"model_type": "llama", "hidden_size": 64, "num_attention_heads": 1,
                        "num_hidden_layers": 1, "layer_types": ["chunked_attention"]})
    with pytest.raises(SpecError, match="'hybrid'"):
        from_hf_config(dict(GRANITE_4_H_SMALL, num_hidden_layers=1, layer_types=["hybrid"]))


def test_bad_values_are_refused_with_the_value():
    with pytest.raises(SpecError, match="4000 .* 128"):
        from_hf_config(dict(GRANITE_4_H_SMALL, hidden_size=2000, mamba_d_head="auto"))
    with pytest.raises(SpecError, match="hidden_size 4001 is not a multiple of num_attention_heads 32"):
        from_hf_config({"model_type": "llama", "hidden_size": 4001, "num_attention_heads": 32, "num_hidden_layers": 1})
    with pytest.raises(SpecError, match="'int4'"):
        from_hf_config(dict(JAMBA_V01, torch_dtype="int4"))
