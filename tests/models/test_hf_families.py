"""Every supported family from a real checkpoint's config.json (tests/data/hf_configs,
sources in its SOURCES.md): read from the file and from a Hugging Face cache folder,
checked against the checkpoint's published architecture (written out by hand below),
then planned and verified byte for byte at TP 1 -> 2 and 2 -> 1."""

from __future__ import annotations

import json
import shutil
from collections import Counter
from pathlib import Path

import pytest

from kvplan import EngineSpec, plan, verify
from kvplan.models import SUPPORTED_MODEL_TYPES, from_hf_config

CONFIGS = Path(__file__).resolve().parents[1] / "data" / "hf_configs"

# file: (name, {layer kind: count}, {(KV heads, head dim): layers}, {sliding window: layers}, model layers)
# from each checkpoint's model card / paper: layer counts, KV heads and dims, attention patterns
EXPECTED = {
    "deepseek_v2": ("deepseek-ai/DeepSeek-V2-Lite-Chat", {"mla": 27}, {(1, 576): 27}, {}, None),
    "deepseek_v3": ("deepseek-ai/DeepSeek-V3", {"mla": 61}, {(1, 576): 61}, {}, None),
    "kimi_k2": ("moonshotai/Kimi-K2-Instruct", {"mla": 61}, {(1, 576): 61}, {}, None),
    "falcon_h1": ("tiiuae/Falcon-H1-7B-Instruct", {"attention": 44, "mamba2": 44}, {(2, 128): 44}, {}, 44),
    "falcon_mamba": ("tiiuae/falcon-mamba-7b", {"mamba1": 64}, {}, {}, None),
    "mamba": ("state-spaces/mamba-2.8b-hf", {"mamba1": 64}, {}, {}, None),
    "mamba2": ("mistralai/Mamba-Codestral-7B-v0.1", {"mamba2": 64}, {}, {}, None),
    "gemma2": ("google/gemma-2-9b-it", {"attention": 42}, {(8, 256): 42}, {4096: 21}, None),
    "gemma3": ("google/gemma-3-27b-it", {"attention": 62}, {(16, 128): 62}, {1024: 52}, None),
    "gemma3_text": ("google/gemma-3-1b-it", {"attention": 26}, {(1, 256): 26}, {512: 22}, None),
    "gemma4": ("google/gemma-4-26B-A4B", {"attention": 30}, {(8, 256): 25, (2, 512): 5}, {1024: 25}, None),
    "gpt_oss": ("openai/gpt-oss-20b", {"attention": 24}, {(8, 64): 24}, {128: 12}, None),
    "gpt_oss_120b": ("openai/gpt-oss-120b", {"attention": 36}, {(8, 64): 36}, {128: 18}, None),
    "granitemoehybrid": ("ibm-granite/granite-4.0-h-small", {"mamba2": 36, "attention": 4}, {(8, 128): 4}, {},
                         None),
    "jamba": ("ai21labs/Jamba-v0.1", {"mamba1": 28, "attention": 4}, {(8, 128): 4}, {}, None),
    "llama": ("meta-llama/Llama-3.1-8B-Instruct", {"attention": 32}, {(8, 128): 32}, {}, None),
    # Llama 4: RoPE layers attend within 8,192-token chunks, every fourth layer is global
    "llama4": ("meta-llama/Llama-4-Scout-17B-16E-Instruct", {"attention": 48}, {(8, 128): 48}, {8192: 36}, None),
    "mistral": ("mistralai/Mistral-7B-Instruct-v0.3", {"attention": 32}, {(8, 128): 32}, {}, None),
    "mixtral": ("mistralai/Mixtral-8x7B-Instruct-v0.1", {"attention": 32}, {(8, 128): 32}, {}, None),
    "nemotron_h": ("nvidia/NVIDIA-Nemotron-3-Nano-30B-A3B-BF16", {"mamba2": 23, "attention": 6}, {(2, 128): 6},
                   {}, 52),
    "phi3": ("microsoft/Phi-3-mini-4k-instruct", {"attention": 32}, {(32, 96): 32}, {}, None),
    "qwen2": ("Qwen/Qwen2.5-7B-Instruct", {"attention": 28}, {(4, 128): 28}, {}, None),
    "qwen2_moe": ("Qwen/Qwen1.5-MoE-A2.7B", {"attention": 24}, {(16, 128): 24}, {}, None),
    "qwen3": ("Qwen/Qwen3-8B", {"attention": 36}, {(8, 128): 36}, {}, None),
    "qwen3_moe": ("Qwen/Qwen3-30B-A3B", {"attention": 48}, {(4, 128): 48}, {}, None),
    "qwen3_next": ("Qwen/Qwen3-Next-80B-A3B-Instruct", {"gdn": 36, "attention": 12}, {(2, 256): 12}, {}, None),
}


def test_every_supported_family_has_a_real_config():
    families = {json.loads((CONFIGS / f"{name}.json").read_text())["model_type"] for name in EXPECTED}
    # the *_text model types are the same readers as their wrappers (gemma4_text, llama4_text)
    assert set(SUPPORTED_MODEL_TYPES) - families <= {"gemma4_text", "llama4_text"}
    assert len(families) >= 20


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_a_real_config_reads_as_its_checkpoint_and_plans_both_ways(name, tmp_path):
    want_name, kinds, shapes, windows, model_layers = EXPECTED[name]
    # as a Hugging Face cache folder holds it
    snapshot = tmp_path / f"models--{want_name.replace('/', '--')}" / "snapshots" / "0123abc"
    snapshot.mkdir(parents=True)
    shutil.copy(CONFIGS / f"{name}.json", snapshot / "config.json")
    model = from_hf_config(snapshot.parent.parent)
    assert from_hf_config(CONFIGS / f"{name}.json") == model
    assert model.name == want_name
    assert Counter(layer.kind for layer in model.layers) == kinds
    token = [layer for layer in model.layers if layer.holds_tokens]
    assert Counter((layer.num_kv_heads, layer.head_dim) for layer in token) == shapes
    assert Counter(layer.sliding_window for layer in token if layer.sliding_window) == windows
    assert model.num_model_layers == model_layers
    for src_tp, dst_tp in ((1, 2), (2, 1)):
        verify(plan(EngineSpec(model=model, tp=src_tp), EngineSpec(model=model, tp=dst_tp)))
