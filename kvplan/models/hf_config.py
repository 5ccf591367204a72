"""Read a Hugging Face ``config.json`` (as a dict) into a `ModelSpec`.

Only what decides bytes is read: which layers hold KV cache or recurrent state, their
heads and dims, sliding windows and dtypes. Key names and defaults follow each
family's transformers ``configuration_*.py`` and vLLM's model code.

Conventions (shared with `kvplan.models.hybrid`):

* a `ModelSpec` lists only the layers that hold cache or state, in model order:
  MoE / MLP-only layers (Nemotron-H's ``E`` and ``-``), Gemma-4 KV-shared layers and
  multi-token-prediction layers hold none and are dropped;
* a parallel-hybrid layer (Falcon-H1) contributes its attention layer, then its Mamba layer;
* KV and conv-state dtypes are the model dtype (``dtype`` / ``torch_dtype``, default
  bfloat16), as vLLM's ``"auto"`` cache dtypes resolve them; the SSM state too, except
  for nemotron_h, whose ``mamba_ssm_cache_dtype`` (default float32) vLLM applies.

>>> spec = from_hf_config({
...     "model_type": "nemotron_h", "hybrid_override_pattern": "M*ME",
...     "num_attention_heads": 32, "num_key_value_heads": 2, "head_dim": 128,
...     "mamba_num_heads": 64, "mamba_head_dim": 64, "n_groups": 8,
...     "ssm_state_size": 128, "conv_kernel": 4})
>>> [layer.kind for layer in spec.layers]
['mamba2', 'attention', 'mamba2']
>>> spec.layers[1].num_kv_heads, spec.layers[0].ssm_dtype, spec.name
(2, 'float32', 'nemotron_h')
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import attrs

from ..errors import SpecError
from ..spec.dtypes import canonical_dtype
from ..spec.layers import AttentionSpec, GatedDeltaNetSpec, Mamba1Spec, Mamba2Spec
from ..spec.limits import MAX_LAYERS
from ..spec.model import ModelSpec
from .hf_files import read_config
from .hf_values import Config

# Layer-type names as configs spell them, old and new (transformers'
# remap_legacy_layer_types maps "mamba" -> "linear_attention", "attention" -> "full_attention").
_STATE_TYPES = {"mamba", "mamba2", "linear_attention"}
_FULL_TYPES = {"attention", "full_attention"}
_SLIDING_TYPES = {"sliding_attention"}
_CHUNKED_TYPES = {"chunked_attention"}  # Llama 4: attention within aligned chunks of attention_chunk_size
_STATELESS_TYPES = {"moe", "mlp"}

# Nested sub-configs (Gemma's text_config) are saved as a diff against the sub-config
# class defaults, so real files omit every value equal to them (gemma-3-4b's text_config
# has no num_attention_heads). These are transformers' Gemma3TextConfig /
# Gemma4TextConfig defaults, used only for keys the file leaves out.
_GEMMA3_TEXT_DEFAULTS = {
    "hidden_size": 2304, "num_hidden_layers": 26, "num_attention_heads": 8,
    "num_key_value_heads": 4, "head_dim": 256, "sliding_window": 4096, "sliding_window_pattern": 6,
}
_GEMMA4_TEXT_DEFAULTS = {
    "hidden_size": 2304, "num_hidden_layers": 30, "num_attention_heads": 8,
    "num_key_value_heads": 4, "head_dim": 256, "sliding_window": 512, "global_head_dim": 512,
    "attention_k_eq_v": False, "num_kv_shared_layers": 0,
}


def _attention(cfg: Config, *, sliding_window: int | None = None, num_kv_heads: int | None = None,
               head_dim: int | None = None) -> AttentionSpec:
    """An attention layer with the config's KV heads (default: one per query head) and
    head_dim (default: hidden_size // num_attention_heads)."""
    num_heads = cfg.required_int("num_attention_heads")
    if num_kv_heads is None:
        num_kv_heads = cfg.integer("num_key_value_heads", default=num_heads)
    if head_dim is None:
        head_dim = cfg.integer("head_dim")
    if head_dim is None:
        hidden = cfg.required_int("hidden_size")
        if hidden % num_heads:
            raise SpecError(
                f"{cfg.model_type} config has no head_dim and hidden_size {hidden!r} is not a multiple "
                f"of num_attention_heads {num_heads!r}"
            )
        head_dim = hidden // num_heads
    return AttentionSpec(num_kv_heads=num_kv_heads, head_dim=head_dim, dtype=cfg.dtype,
                         sliding_window=sliding_window)


def _windowed_attention_layers(cfg: Config, layer_types, default_is_sliding: Callable[[int], bool]) -> tuple:
    """Full / sliding attention layers from ``layer_types`` or, without it, the family rule."""
    if layer_types is None:
        sliding = [default_is_sliding(i) for i in range(cfg.num_layers())]
    else:
        cfg.num_layers(len(layer_types))
        unknown = sorted(set(layer_types) - _FULL_TYPES - _SLIDING_TYPES)
        if unknown:
            raise cfg.invalid("unsupported layer_types", unknown)
        sliding = [kind in _SLIDING_TYPES for kind in layer_types]
    full = _attention(cfg)
    windowed = _attention(cfg, sliding_window=cfg.required_int("sliding_window")) if any(sliding) else None
    return tuple(windowed if is_sliding else full for is_sliding in sliding)


def _llama(cfg: Config) -> tuple:
    return _windowed_attention_layers(cfg, cfg.names("layer_types"), lambda i: False)


def _mistral(cfg: Config) -> tuple:
    # Mistral-7B-v0.1 declares sliding_window 4096 (every layer); v0.2+ sets it to null.
    has_window = cfg.integer("sliding_window") is not None
    return _windowed_attention_layers(cfg, cfg.names("layer_types"), lambda i: has_window)


def _qwen2(cfg: Config) -> tuple:
    # Qwen2Config: the window applies from layer max_window_layers on, only when
    # use_sliding_window is true (Qwen2.5 ships sliding_window 131072 with it false).
    use_window = cfg.flag("use_sliding_window", False) and cfg.integer("sliding_window") is not None
    first_windowed = cfg.integer("max_window_layers", default=28, minimum=0)
    return _windowed_attention_layers(cfg, cfg.names("layer_types"), lambda i: use_window and i >= first_windowed)


def _gemma3(cfg: Config) -> tuple:
    # Without layer_types, layer i is global when (i + 1) % sliding_window_pattern == 0.
    pattern = cfg.required_int("sliding_window_pattern")
    return _windowed_attention_layers(cfg, cfg.names("layer_types"), lambda i: (i + 1) % pattern != 0)


def _gemma4(cfg: Config) -> tuple:
    layer_types = cfg.names("layer_types")
    if layer_types is None:  # Gemma4TextConfig: 5 sliding : 1 full
        layer_types = ["sliding_attention" if (i + 1) % 6 else "full_attention" for i in range(cfg.num_layers())]
    # Gemma4TextConfig forces the last layer to full attention (with a warning), and
    # engines build the model from that corrected list.
    layer_types = [*layer_types[:-1], "full_attention"]
    layers = _windowed_attention_layers(cfg, layer_types, lambda i: False)
    # Full layers: global_head_dim, and num_global_key_value_heads when attention_k_eq_v
    # (the 26B / 31B checkpoints; the value is the key, but V is still stored).
    global_kv_heads = cfg.integer("num_global_key_value_heads") if cfg.flag("attention_k_eq_v", False) else None
    full = _attention(cfg, head_dim=cfg.required_int("global_head_dim"), num_kv_heads=global_kv_heads)
    layers = tuple(full if layer.sliding_window is None else layer for layer in layers)
    # The last num_kv_shared_layers layers read earlier layers' KV and hold none (E2B/E4B).
    shared = cfg.integer("num_kv_shared_layers", default=0, minimum=0)
    if shared >= len(layers):
        raise cfg.invalid("num_kv_shared_layers", shared, f"fewer than its {len(layers)} layers")
    return layers[: len(layers) - shared]


def _deepseek_v3(cfg: Config) -> tuple:
    # MLA: one latent per token = compressed KV (kv_lora_rank) + shared RoPE key
    # (qk_rope_head_dim), replicated on every rank. MTP layers (num_nextn_predict_layers)
    # run as vLLM's separate draft model and are not part of this spec.
    latent = cfg.required_int("kv_lora_rank") + cfg.required_int("qk_rope_head_dim")
    layer = AttentionSpec(num_kv_heads=1, head_dim=latent, dtype=cfg.dtype, mla=True)
    return (layer,) * cfg.num_layers()


def _mamba2(cfg: Config, *, heads: tuple, head_dim: tuple, n_groups: tuple, d_state: tuple,
            conv: tuple, ssm_dtype: str | None = None, intermediate_size: int | None = None) -> Mamba2Spec:
    """A Mamba2 layer from the family's key names (each a tuple: current name, then legacy)."""
    num_heads = cfg.required_int(*heads)
    # Granite / Falcon-H1 may leave the head dim "auto": the intermediate size split over
    # the heads (their configs refuse sizes that do not divide).
    given = cfg.first(*head_dim, default="auto")
    auto = intermediate_size is not None and isinstance(given, str) and given == "auto"
    if auto:
        if intermediate_size % num_heads:
            raise SpecError(
                f"{cfg.model_type} config has {head_dim[0]} 'auto' and a Mamba intermediate size "
                f"{intermediate_size!r} that {heads[0]} {num_heads!r} does not divide"
            )
        per_head = intermediate_size // num_heads
    else:
        per_head = cfg.required_int(*head_dim)
    return Mamba2Spec(num_heads=num_heads, head_dim=per_head, n_groups=cfg.required_int(*n_groups),
                      d_state=cfg.required_int(*d_state), conv_kernel=cfg.required_int(*conv),
                      conv_dtype=cfg.dtype, ssm_dtype=ssm_dtype or cfg.dtype)


def _pattern_kinds(cfg: Config, kinds, source: str) -> list[str]:
    """Per layer "state", "attention" or "none" from a block-type list."""
    out = []
    for kind in kinds:
        if kind in _STATE_TYPES:
            out.append("state")
        elif kind in _FULL_TYPES:
            out.append("attention")
        elif kind in _STATELESS_TYPES:
            out.append("none")
        else:
            raise cfg.invalid(f"unsupported {source} entry", kind)
    return out


def _assemble(cfg: Config, kinds: list[str], state) -> dict:
    """The cache-holding layers of `kinds` (`state` or the config's attention layer),
    with their model layers where some layers hold no cache (MLP / MoE only)."""
    # Attention keys are read only when the model has attention layers (a pure-Mamba
    # Granite config need not carry them).
    attention = _attention(cfg) if "attention" in kinds else None
    layers = tuple(attention if kind == "attention" else state for kind in kinds if kind != "none")
    if len(layers) == len(kinds):
        return {"layers": layers}
    return {"layers": layers, "model_layers": tuple(i for i, kind in enumerate(kinds) if kind != "none"),
            "num_model_layers": len(kinds)}


def _nemotron_h(cfg: Config) -> tuple:
    pattern = cfg.get("hybrid_override_pattern")
    if pattern is not None and not isinstance(pattern, str):
        raise cfg.invalid("hybrid_override_pattern", pattern, "a string such as 'M*ME'")
    if pattern is not None:
        MAX_LAYERS.check(len(pattern), f"{cfg.model_type} config hybrid_override_pattern length")
        symbols = {"M": "mamba", "*": "attention", "E": "moe", "-": "mlp"}
        unknown = sorted(set(pattern) - set(symbols))
        if unknown:
            raise cfg.invalid("unsupported hybrid_override_pattern symbols", unknown)
        kinds = _pattern_kinds(cfg, [symbols[symbol] for symbol in pattern], "hybrid_override_pattern")
    else:
        cfg.require("layers_block_type", "layer_types")
        kinds = _pattern_kinds(cfg, cfg.names("layers_block_type", "layer_types"), "layers_block_type")
    cfg.num_layers(len(kinds))
    # vLLM's NemotronHForCausalLMConfig: SSM cache dtype from the config, float32 if absent.
    mamba = _mamba2(cfg, heads=("mamba_num_heads",), head_dim=("mamba_head_dim",),
                    n_groups=("n_groups", "mamba_n_groups"), d_state=("ssm_state_size",),
                    conv=("conv_kernel", "mamba_d_conv"),
                    ssm_dtype=canonical_dtype(cfg.get("mamba_ssm_cache_dtype", "float32")))
    return _assemble(cfg, kinds, mamba)


def _granite_mamba2(cfg: Config, intermediate_size: int) -> Mamba2Spec:
    return _mamba2(cfg, heads=("mamba_n_heads",), head_dim=("mamba_d_head",), n_groups=("mamba_n_groups",),
                   d_state=("mamba_d_state",), conv=("mamba_d_conv",), intermediate_size=intermediate_size)


def _granitemoehybrid(cfg: Config) -> tuple:
    layer_types = cfg.names("layer_types")
    if layer_types is None:  # GraniteMoeHybridConfig.layers_block_type: all mamba
        layer_types = ["mamba"] * cfg.num_layers()
    kinds = _pattern_kinds(cfg, layer_types, "layer_types")
    cfg.num_layers(len(kinds))
    mamba = _granite_mamba2(cfg, cfg.integer("mamba_expand", default=2) * cfg.required_int("hidden_size"))
    return _assemble(cfg, kinds, mamba)


def _falcon_h1(cfg: Config) -> tuple:
    # Every decoder layer runs attention and Mamba2 in parallel; mamba_d_ssm (if set)
    # replaces mamba_expand * hidden_size as the Mamba intermediate size.
    intermediate = cfg.integer("mamba_d_ssm")
    if intermediate is None:
        intermediate = cfg.integer("mamba_expand", default=2) * cfg.required_int("hidden_size")
    count = cfg.num_layers()
    return {"layers": (_attention(cfg), _granite_mamba2(cfg, intermediate)) * count,
            "model_layers": tuple(i // 2 for i in range(2 * count)), "num_model_layers": count}


def _qwen3_next(cfg: Config) -> tuple:
    layer_types = cfg.names("layer_types")
    if layer_types is None:  # Qwen3NextConfig: full attention every full_attention_interval
        interval = cfg.integer("full_attention_interval", default=4)
        layer_types = ["full_attention" if (i + 1) % interval == 0 else "linear_attention"
                       for i in range(cfg.num_layers())]
    kinds = _pattern_kinds(cfg, layer_types, "layer_types")
    cfg.num_layers(len(kinds))
    gdn = GatedDeltaNetSpec(
        num_k_heads=cfg.required_int("linear_num_key_heads"), num_v_heads=cfg.required_int("linear_num_value_heads"),
        head_k_dim=cfg.required_int("linear_key_head_dim"), head_v_dim=cfg.required_int("linear_value_head_dim"),
        conv_kernel=cfg.required_int("linear_conv_kernel_dim"), conv_dtype=cfg.dtype, ssm_dtype=cfg.dtype,
    )
    return _assemble(cfg, kinds, gdn)


def _jamba(cfg: Config) -> tuple:
    # JambaConfig.layers_block_type: attention where i % attn_layer_period == attn_layer_offset.
    period = cfg.integer("attn_layer_period", default=8)
    offset = cfg.integer("attn_layer_offset", default=4, minimum=0)
    if offset >= period:  # JambaConfig refuses it too: no layer would be attention
        raise cfg.invalid("attn_layer_offset", offset, f"less than attn_layer_period {period}")
    kinds = ["attention" if i % period == offset else "state" for i in range(cfg.num_layers())]
    mamba = Mamba1Spec(intermediate_size=cfg.integer("mamba_expand", default=2) * cfg.required_int("hidden_size"),
                       d_state=cfg.integer("mamba_d_state", default=16), conv_kernel=cfg.integer("mamba_d_conv", default=4),
                       conv_dtype=cfg.dtype, ssm_dtype=cfg.dtype)
    return _assemble(cfg, kinds, mamba)


def _alternating(cfg: Config) -> tuple:
    # Gemma2Config and vLLM's GptOssAttention: without layer_types, even layers slide
    # (layer 0 local, layer 1 global). gpt-oss's learned attention sinks are per-head
    # weights, not cache: its KV pages are plain K and V.
    return _windowed_attention_layers(cfg, cfg.names("layer_types"), lambda i: i % 2 == 0)


def _llama4(cfg: Config) -> tuple:
    # Layers with RoPE (no_rope_layers[i] == 1) attend within chunks of attention_chunk_size
    # tokens (vLLM's ChunkedLocalAttention); a chunk is at most that many tokens, so they
    # are planned as windows of that size (every block the layer can still attend to).
    # Every no_rope_layer_interval-th layer is global (NoPE).
    chunk = cfg.integer("attention_chunk_size")
    layer_types = cfg.names("layer_types")
    if layer_types is None:
        no_rope = cfg.get("no_rope_layers")
        if no_rope is None or no_rope == []:  # Llama4TextConfig: an empty list means the default
            interval = cfg.integer("no_rope_layer_interval", default=4)
            no_rope = [int((i + 1) % interval != 0) for i in range(cfg.num_layers())]
        if not isinstance(no_rope, list) or not all(v in (0, 1) and not isinstance(v, bool) for v in no_rope):
            raise cfg.invalid("no_rope_layers", no_rope, "a list of 0 / 1 per layer")
        layer_types = ["chunked_attention" if rope and chunk is not None else "full_attention" for rope in no_rope]
    cfg.num_layers(len(layer_types))
    unknown = sorted(set(layer_types) - _FULL_TYPES - _CHUNKED_TYPES - _SLIDING_TYPES)
    if unknown:
        raise cfg.invalid("unsupported layer_types", unknown)
    if chunk is None and any(kind in _CHUNKED_TYPES for kind in layer_types):
        raise SpecError(f"{cfg.model_type} config has chunked_attention layers but no attention_chunk_size")
    full, chunked = _attention(cfg), _attention(cfg, sliding_window=chunk) if chunk is not None else None
    windowed = _attention(cfg, sliding_window=cfg.required_int("sliding_window")) \
        if any(kind in _SLIDING_TYPES for kind in layer_types) else None
    return tuple(chunked if kind in _CHUNKED_TYPES else windowed if kind in _SLIDING_TYPES else full
                 for kind in layer_types)


def _pure_mamba2(cfg: Config) -> tuple:
    # Mamba2Config (Mamba-Codestral): every layer a Mamba2 mixer, nothing else
    layer = _mamba2(cfg, heads=("num_heads",), head_dim=("head_dim",), n_groups=("n_groups",),
                    d_state=("state_size",), conv=("conv_kernel",))
    return (layer,) * cfg.num_layers()


def _pure_mamba1(cfg: Config) -> tuple:
    # MambaConfig / FalconMambaConfig: intermediate_size = expand * hidden_size unless saved
    inner = cfg.integer("intermediate_size")
    if inner is None:
        inner = cfg.integer("expand", default=2) * cfg.required_int("hidden_size")
    layer = Mamba1Spec(intermediate_size=inner, d_state=cfg.integer("state_size", default=16),
                       conv_kernel=cfg.integer("conv_kernel", default=4), conv_dtype=cfg.dtype, ssm_dtype=cfg.dtype)
    return (layer,) * cfg.num_layers()


# Llama4TextConfig's defaults (Llama-4-Scout), for keys a nested text_config leaves out.
_LLAMA4_TEXT_DEFAULTS = {
    "hidden_size": 5120, "num_hidden_layers": 48, "num_attention_heads": 40, "num_key_value_heads": 8,
    "head_dim": 128, "attention_chunk_size": 8192, "no_rope_layer_interval": 4,
}
# transformers' Mamba2Config / MambaConfig defaults, for keys a config leaves out
_MAMBA2_DEFAULTS = {"num_heads": 128, "head_dim": 64, "n_groups": 8, "state_size": 128, "conv_kernel": 4,
                    "num_hidden_layers": 64}
_MAMBA_DEFAULTS = {"hidden_size": 768, "state_size": 16, "conv_kernel": 4, "expand": 2, "num_hidden_layers": 32}


@attrs.frozen
class _Family:
    """How to read one model_type: its reader, the config class's defaults for keys a
    file leaves out, and whether the values sit in a nested ``text_config``."""

    reader: Callable[[Config], tuple | dict]
    defaults: Mapping = attrs.field(factory=dict)
    nested: bool = False  # multimodal wrappers: the language model's values in text_config


_FAMILIES: dict[str, _Family] = {
    "deepseek_v2": _Family(_deepseek_v3),  # MLA like V3 (V2 / V2-Lite: kv_lora_rank 512, rope 64)
    "deepseek_v3": _Family(_deepseek_v3),
    "falcon_h1": _Family(_falcon_h1),
    "falcon_mamba": _Family(_pure_mamba1, _MAMBA_DEFAULTS),
    "gemma2": _Family(_alternating),
    "gemma3": _Family(_gemma3, _GEMMA3_TEXT_DEFAULTS, nested=True),
    "gemma3_text": _Family(_gemma3, _GEMMA3_TEXT_DEFAULTS),
    "gemma4": _Family(_gemma4, _GEMMA4_TEXT_DEFAULTS, nested=True),
    "gemma4_text": _Family(_gemma4, _GEMMA4_TEXT_DEFAULTS),
    "gpt_oss": _Family(_alternating),
    "granitemoehybrid": _Family(_granitemoehybrid),
    "jamba": _Family(_jamba),
    "kimi_k2": _Family(_deepseek_v3),  # DeepSeek-V3's architecture (MLA)
    "llama": _Family(_llama),
    "llama4": _Family(_llama4, _LLAMA4_TEXT_DEFAULTS, nested=True),
    "llama4_text": _Family(_llama4, _LLAMA4_TEXT_DEFAULTS),
    "mamba": _Family(_pure_mamba1, _MAMBA_DEFAULTS),
    "mamba2": _Family(_pure_mamba2, _MAMBA2_DEFAULTS),
    "mistral": _Family(_mistral),
    "mixtral": _Family(_llama),  # vLLM's Mixtral has no sliding window; MoE does not touch the cache
    "nemotron_h": _Family(_nemotron_h),
    "phi3": _Family(_llama),  # vLLM's Phi-3 is its Llama: a window only where layer_types says so
    "qwen2": _Family(_qwen2),
    "qwen2_moe": _Family(_qwen2),
    "qwen3": _Family(_qwen2),  # Qwen3Config: the window rule of Qwen2 (use_sliding_window, max_window_layers)
    "qwen3_moe": _Family(_qwen2),
    "qwen3_next": _Family(_qwen3_next),
}

SUPPORTED_MODEL_TYPES: tuple[str, ...] = tuple(sorted(_FAMILIES))


def from_hf_config(config, *, name: str | None = None) -> ModelSpec:
    """The `ModelSpec` of a Hugging Face config: a ``config.json`` dict, the path of one,
    a model folder holding one, or a Hugging Face cache folder (``models--org--name``, or
    one of its ``snapshots/<revision>`` folders).

    `name` defaults to the config's ``_name_or_path`` (a repo id such as
    ``meta-llama/Llama-3.1-8B``), else the folder's name (``org/name`` for a cache
    folder), else the model_type. Families: see `SUPPORTED_MODEL_TYPES`; multimodal
    wrappers (Gemma 3 / 4, Llama 4) read their ``text_config``. Unknown model types,
    missing required keys and unreadable files raise `SpecError` naming them.

    >>> spec = from_hf_config({"model_type": "jamba", "num_hidden_layers": 8, "hidden_size": 4096,
    ...                        "num_attention_heads": 32, "num_key_value_heads": 8}, name="jamba-8")
    >>> [layer.kind for layer in spec.layers], spec.layers[4].head_dim, spec.layers[0].conv_channels
    (['mamba1', 'mamba1', 'mamba1', 'mamba1', 'attention', 'mamba1', 'mamba1', 'mamba1'], 128, 8192)
    >>> from_hf_config({"model_type": "gpt2"})
    Traceback (most recent call last):
    ...
    kvplan.errors.SpecError: unsupported model_type 'gpt2'; supported: deepseek_v2, deepseek_v3, falcon_h1, falcon_mamba, gemma2, gemma3, gemma3_text, gemma4, gemma4_text, gpt_oss, granitemoehybrid, jamba, kimi_k2, llama, llama4, llama4_text, mamba, mamba2, mistral, mixtral, nemotron_h, phi3, qwen2, qwen2_moe, qwen3, qwen3_moe, qwen3_next
    """
    if name is not None and (not isinstance(name, str) or not name):
        raise SpecError(f"from_hf_config(name={name!r}): a model name is a non-empty string")
    config, found_name = read_config(config)
    model_type = config.get("model_type")
    if not isinstance(model_type, str) or model_type not in _FAMILIES:
        raise SpecError(f"unsupported model_type {model_type!r}; supported: {', '.join(SUPPORTED_MODEL_TYPES)}")
    family = _FAMILIES[model_type]
    values = config
    if family.nested:
        text = config.get("text_config")
        if text is not None and not isinstance(text, Mapping):
            raise SpecError(f"{model_type} config has a text_config that is not a dict: {text!r}"[:300])
        values = config if text is None else text  # a flat file of the text model is read the same way
    read = family.reader(Config(values, model_type, family.defaults, outer=config))
    fields = read if isinstance(read, dict) else {"layers": read}
    return ModelSpec(name=name or found_name or model_type, **fields)
