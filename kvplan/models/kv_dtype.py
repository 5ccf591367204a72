"""The KV-cache dtype an engine is told to use (vLLM's ``--kv-cache-dtype``), applied to a model.

* ``"auto"``: the model's own dtype (what `from_hf_config` reads from the config's
  ``dtype`` / ``torch_dtype``); the model is returned as it is.
* a dtype (``"fp8"``, ``"bfloat16"``, ``"fp8_e5m2"``...): every layer that caches tokens
  stores K and V in it; state layers (Mamba, gated delta net) keep their own conv and
  SSM dtypes, as engines do.
* DeepSeek's packed MLA formats, for MLA layers of DeepSeek's latent (512 + 64 RoPE
  dims): ``"fp8_ds_mla"`` stores a token in 656 bytes (512 fp8 latent values, four fp32
  scales, 64 bf16 RoPE values), ``"nvfp4_ds_mla"`` in 352. Those bytes are one opaque
  per-token entry to a transfer, so the layer becomes a 1-byte-dtype latent of that
  width: byte for byte the page vLLM allocates.

>>> from kvplan.models import get_model
>>> ds = get_model("deepseek-v3")
>>> with_kv_dtype(ds, "auto") is ds, with_kv_dtype(ds, "fp8_ds_mla").layers[0].bytes_per_token
(True, 656)
>>> with_kv_dtype(get_model("llama-3.1-8b"), "fp8").layers[0].dtype
'float8_e4m3fn'
>>> with_kv_dtype(get_model("llama-3.1-8b"), "fp8_ds_mla")
Traceback (most recent call last):
...
kvplan.errors.SpecError: kv dtype 'fp8_ds_mla' is DeepSeek's packed MLA cache; llama-3.1-8b layer 0 is not an MLA layer
"""

from __future__ import annotations

import attrs

from ..errors import SpecError
from ..spec.dtypes import canonical_dtype
from ..spec.model import ModelSpec

# bytes per token of DeepSeek's packed MLA formats (vLLM's state_content_bytes)
PACKED_MLA_BYTES = {"fp8_ds_mla": 656, "nvfp4_ds_mla": 352}
_DEEPSEEK_LATENT = 512 + 64  # kv_lora_rank + qk_rope_head_dim the packed formats are laid out for


def with_kv_dtype(model: ModelSpec, kv_dtype: str) -> ModelSpec:
    """`model` with its token-caching layers stored in `kv_dtype` (module docstring)."""
    if not isinstance(model, ModelSpec):
        raise SpecError(f"with_kv_dtype takes a ModelSpec, got {type(model).__name__}")
    if not isinstance(kv_dtype, str):
        raise SpecError(f"kv dtype must be a string such as 'auto' or 'fp8', got {kv_dtype!r}"[:300])
    if kv_dtype == "auto":
        return model
    packed = PACKED_MLA_BYTES.get(kv_dtype)
    if packed is not None:
        return attrs.evolve(model, layers=tuple(_packed(model, i, layer, kv_dtype, packed)
                                                for i, layer in enumerate(model.layers)))
    dtype = canonical_dtype(kv_dtype)
    return attrs.evolve(model, layers=tuple(attrs.evolve(layer, dtype=dtype) if layer.holds_tokens else layer
                                            for layer in model.layers))


def _packed(model: ModelSpec, index: int, layer, kv_dtype: str, width_bytes: int):
    if not layer.holds_tokens:
        return layer
    if not layer.mla:
        raise SpecError(f"kv dtype {kv_dtype!r} is DeepSeek's packed MLA cache; {model.name} layer {index} is not "
                        f"an MLA layer")
    if layer.head_dim != _DEEPSEEK_LATENT:
        raise SpecError(f"kv dtype {kv_dtype!r} packs DeepSeek's {_DEEPSEEK_LATENT}-wide latent (512 + 64 RoPE); "
                        f"{model.name} layer {index} has a latent of {layer.head_dim}")
    return attrs.evolve(layer, head_dim=width_bytes, dtype="uint8")
