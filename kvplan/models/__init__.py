"""Models: built-in specs of real checkpoints, and Hugging Face configs read into specs.

>>> sorted(MODELS)[:6]
['deepseek-v3', 'falcon-h1-7b', 'gemma-3-27b', 'gemma-4-31b', 'granite-4.0-h-small', 'jamba-v0.1']
>>> m = get_model("Llama-3.1-70B")
>>> m.num_layers, m.layers[0].num_kv_heads, m.layers[0].head_dim, m.layers[0].bytes_per_token
(80, 8, 128, 4096)
>>> get_model("gemma-3-27b").layers[5].sliding_window is None   # layer 5 is global
True

`dense` holds attention-only models (and the builders `dense`, `mla`,
`interleaved_sliding`), `hybrid` attention mixed with Mamba / gated-delta-net layers,
`registry` the lookup by name; `from_hf_config(config)` reads a Hugging Face
config (a dict, a config.json, a model or cache folder; `hf_files`) of any supported
family; `with_kv_dtype(model, "fp8")` applies an engine's KV-cache dtype. Models import
spec only.
"""

from .dense import DENSE_MODELS, dense, interleaved_sliding, mla
from .hf_config import SUPPORTED_MODEL_TYPES, from_hf_config
from .hybrid import HYBRID_MODELS
from .kv_dtype import with_kv_dtype
from .registry import MODELS, get_model

__all__ = ["DENSE_MODELS", "HYBRID_MODELS", "MODELS", "SUPPORTED_MODEL_TYPES", "dense", "from_hf_config",
           "get_model", "interleaved_sliding", "mla", "with_kv_dtype"]
