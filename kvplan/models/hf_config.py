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

from ..errors import SpecError
from ..spec.dtypes import canonical_dtype
from ..spec.layers import AttentionSpec, GatedDeltaNetSpec, Mamba1Spec, Mamba2Spec
from ..spec.limits import MAX_LAYERS
from ..spec.model import ModelSpec

_DEFAULT_MODEL_DTYPE = "bfloat16"

# Layer-type names as configs spell them, old and new (transformers'
# remap_legacy_layer_types maps "mamba" -> "linear_attention", "attention" -> "full_attention").
_STATE_TYPES = {"mamba", "mamba2", "linear_attention"}
_FULL_TYPES = {"attention", "full_attention"}
_SLIDING_TYPES = {"sliding_attention"}
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


class _Config:
    """One config's values, with the family's defaults and errors that name the family."""

    def __init__(self, values: Mapping, model_type: str, defaults: Mapping | None = None,
                 outer: Mapping | None = None):
        self.values = values
        self.model_type = model_type
        self.defaults = defaults or {}
        self.outer = outer or {}  # the wrapping config of a text_config, for dtype

    def get(self, key: str, default=None):
        """The value of `key`; a JSON null counts as absent (``"head_dim": null``)."""
        value = self.values.get(key)
        if value is None:
            value = self.defaults.get(key, default)
        return value

    def find(self, *keys: str, default=None) -> tuple[str, object]:
        """(key, value) of the first of `keys` present (a family's current name, then
        legacy ones), else (the first key, `default`)."""
        for key in keys:
            value = self.get(key)
            if value is not None:
                return key, value
        return keys[0], default

    def first(self, *keys: str, default=None):
        """The value of the first of `keys` present (see `find`)."""
        return self.find(*keys, default=default)[1]

    def require(self, *keys: str):
        value = self.first(*keys)
        if value is None:
            names = " or ".join(repr(key) for key in keys)
            raise SpecError(f"{self.model_type} config is missing required key {names}")
        return value

    def integer(self, *keys: str, default: int | None = None, minimum: int = 1) -> int | None:
        """The int of the first of `keys` present (or `default`), at least `minimum`.
        JSON numbers come as ints; a string, float or bool is a broken config, not a count."""
        key, value = self.find(*keys, default=default)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < minimum):
            raise self.invalid(key, value, f"an int >= {minimum}")
        return value

    def required_int(self, *keys: str, minimum: int = 1) -> int:
        self.require(*keys)
        return self.integer(*keys, minimum=minimum)

    def flag(self, key: str, default: bool) -> bool:
        """A JSON boolean: the string "false" is truthy in Python and would flip the meaning."""
        value = self.get(key, default)
        if not isinstance(value, bool):
            raise self.invalid(key, value, "true or false")
        return value

    def names(self, *keys: str) -> list[str] | None:
        """A list of strings (per-layer type names), or None when absent."""
        key, value = self.find(*keys)
        if value is None:
            return None
        if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
            raise self.invalid(key, value, "a list of strings")
        MAX_LAYERS.check(len(value), f"{self.model_type} config {key} length")
        return list(value)

    def invalid(self, what: str, value, expected: str | None = None) -> SpecError:
        """The error for a config value: the family, the key (or what), the value."""
        wanted = "" if expected is None else f"; expected {expected}"
        return SpecError(f"{self.model_type} config has {what} {value!r}"[:300] + wanted)

    @property
    def dtype(self) -> str:
        """The model dtype: vLLM's "auto" KV / conv-state dtype."""
        for source in (self.values, self.outer):
            for key in ("dtype", "torch_dtype"):  # "dtype" is transformers v5's spelling
                if source.get(key) is not None:
                    return canonical_dtype(source[key])
        return _DEFAULT_MODEL_DTYPE

    def num_layers(self, layer_list_length: int | None = None) -> int:
        """``num_hidden_layers``, checked against a per-layer list when there is one."""
        declared = self.integer("num_hidden_layers")
        if declared is not None:  # checked before any per-layer list is built
            MAX_LAYERS.check(declared, f"{self.model_type} config num_hidden_layers")
        if layer_list_length is None:
            if declared is None:
                raise SpecError(f"{self.model_type} config is missing required key 'num_hidden_layers'")
            return declared
        MAX_LAYERS.check(layer_list_length, f"{self.model_type} config layer list length")
        if declared is not None and declared != layer_list_length:
            raise SpecError(
                f"{self.model_type} config has num_hidden_layers {declared} but its layer list "
                f"has {layer_list_length} entries"
            )
        return layer_list_length


def _attention(cfg: _Config, *, sliding_window: int | None = None, num_kv_heads: int | None = None,
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


def _windowed_attention_layers(cfg: _Config, layer_types, default_is_sliding: Callable[[int], bool]) -> tuple:
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


def _llama(cfg: _Config) -> tuple:
    return _windowed_attention_layers(cfg, cfg.names("layer_types"), lambda i: False)


def _mistral(cfg: _Config) -> tuple:
    # Mistral-7B-v0.1 declares sliding_window 4096 (every layer); v0.2+ sets it to null.
    has_window = cfg.integer("sliding_window") is not None
    return _windowed_attention_layers(cfg, cfg.names("layer_types"), lambda i: has_window)


def _qwen2(cfg: _Config) -> tuple:
    # Qwen2Config: the window applies from layer max_window_layers on, only when
    # use_sliding_window is true (Qwen2.5 ships sliding_window 131072 with it false).
    use_window = cfg.flag("use_sliding_window", False) and cfg.integer("sliding_window") is not None
    first_windowed = cfg.integer("max_window_layers", default=28, minimum=0)
    return _windowed_attention_layers(cfg, cfg.names("layer_types"), lambda i: use_window and i >= first_windowed)


def _gemma3(cfg: _Config) -> tuple:
    # Without layer_types, layer i is global when (i + 1) % sliding_window_pattern == 0.
    pattern = cfg.required_int("sliding_window_pattern")
    return _windowed_attention_layers(cfg, cfg.names("layer_types"), lambda i: (i + 1) % pattern != 0)


def _gemma4(cfg: _Config) -> tuple:
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


def _deepseek_v3(cfg: _Config) -> tuple:
    # MLA: one latent per token = compressed KV (kv_lora_rank) + shared RoPE key
    # (qk_rope_head_dim), replicated on every rank. MTP layers (num_nextn_predict_layers)
    # run as vLLM's separate draft model and are not part of this spec.
    latent = cfg.required_int("kv_lora_rank") + cfg.required_int("qk_rope_head_dim")
    layer = AttentionSpec(num_kv_heads=1, head_dim=latent, dtype=cfg.dtype, mla=True)
    return (layer,) * cfg.num_layers()


def _mamba2(cfg: _Config, *, heads: tuple, head_dim: tuple, n_groups: tuple, d_state: tuple,
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


def _pattern_kinds(cfg: _Config, kinds, source: str) -> list[str]:
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


def _assemble(cfg: _Config, kinds: list[str], state) -> dict:
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


def _nemotron_h(cfg: _Config) -> tuple:
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


def _granite_mamba2(cfg: _Config, intermediate_size: int) -> Mamba2Spec:
    return _mamba2(cfg, heads=("mamba_n_heads",), head_dim=("mamba_d_head",), n_groups=("mamba_n_groups",),
                   d_state=("mamba_d_state",), conv=("mamba_d_conv",), intermediate_size=intermediate_size)


def _granitemoehybrid(cfg: _Config) -> tuple:
    layer_types = cfg.names("layer_types")
    if layer_types is None:  # GraniteMoeHybridConfig.layers_block_type: all mamba
        layer_types = ["mamba"] * cfg.num_layers()
    kinds = _pattern_kinds(cfg, layer_types, "layer_types")
    cfg.num_layers(len(kinds))
    mamba = _granite_mamba2(cfg, cfg.integer("mamba_expand", default=2) * cfg.required_int("hidden_size"))
    return _assemble(cfg, kinds, mamba)


def _falcon_h1(cfg: _Config) -> tuple:
    # Every decoder layer runs attention and Mamba2 in parallel; mamba_d_ssm (if set)
    # replaces mamba_expand * hidden_size as the Mamba intermediate size.
    intermediate = cfg.integer("mamba_d_ssm")
    if intermediate is None:
        intermediate = cfg.integer("mamba_expand", default=2) * cfg.required_int("hidden_size")
    count = cfg.num_layers()
    return {"layers": (_attention(cfg), _granite_mamba2(cfg, intermediate)) * count,
            "model_layers": tuple(i // 2 for i in range(2 * count)), "num_model_layers": count}


def _qwen3_next(cfg: _Config) -> tuple:
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


def _jamba(cfg: _Config) -> tuple:
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


# model_type -> (reader, text-config defaults or None when the values are top level)
_FAMILIES: dict[str, tuple[Callable[[_Config], tuple | dict], Mapping | None]] = {
    "deepseek_v3": (_deepseek_v3, None),
    "falcon_h1": (_falcon_h1, None),
    "gemma3": (_gemma3, _GEMMA3_TEXT_DEFAULTS),
    "gemma3_text": (_gemma3, _GEMMA3_TEXT_DEFAULTS),
    "gemma4": (_gemma4, _GEMMA4_TEXT_DEFAULTS),
    "gemma4_text": (_gemma4, _GEMMA4_TEXT_DEFAULTS),
    "granitemoehybrid": (_granitemoehybrid, None),
    "jamba": (_jamba, None),
    "llama": (_llama, None),
    "mistral": (_mistral, None),
    "nemotron_h": (_nemotron_h, None),
    "qwen2": (_qwen2, None),
    "qwen3_next": (_qwen3_next, None),
}

SUPPORTED_MODEL_TYPES: tuple[str, ...] = tuple(sorted(_FAMILIES))


def from_hf_config(config: Mapping, *, name: str | None = None) -> ModelSpec:
    """The `ModelSpec` of a Hugging Face ``config.json`` dict (``name`` defaults to its model_type).

    Families: see `SUPPORTED_MODEL_TYPES`. Gemma 3 / 4 read their ``text_config``.
    Unknown model types and missing required keys raise `SpecError` naming them.

    >>> spec = from_hf_config({"model_type": "jamba", "num_hidden_layers": 8, "hidden_size": 4096,
    ...                        "num_attention_heads": 32, "num_key_value_heads": 8}, name="jamba-8")
    >>> [layer.kind for layer in spec.layers], spec.layers[4].head_dim, spec.layers[0].conv_channels
    (['mamba1', 'mamba1', 'mamba1', 'mamba1', 'attention', 'mamba1', 'mamba1', 'mamba1'], 128, 8192)
    >>> from_hf_config({"model_type": "gpt2"})
    Traceback (most recent call last):
    ...
    kvplan.errors.SpecError: unsupported model_type 'gpt2'; supported: deepseek_v3, falcon_h1, gemma3, gemma3_text, gemma4, gemma4_text, granitemoehybrid, jamba, llama, mistral, nemotron_h, qwen2, qwen3_next
    """
    if not isinstance(config, Mapping):
        raise SpecError(f"config must be a dict read from config.json, got {type(config).__name__}")
    model_type = config.get("model_type")
    if not isinstance(model_type, str) or model_type not in _FAMILIES:
        raise SpecError(f"unsupported model_type {model_type!r}; supported: {', '.join(SUPPORTED_MODEL_TYPES)}")
    reader, text_defaults = _FAMILIES[model_type]
    if text_defaults is None:
        cfg = _Config(config, model_type)
    else:
        text = config.get("text_config")
        if text is not None and not isinstance(text, Mapping):
            raise SpecError(f"{model_type} config has a text_config that is not a dict: {text!r}")
        # Multimodal wrappers nest the language model; *_text configs are flat.
        cfg = _Config(config if text is None else text, model_type, text_defaults, outer=config)
    read = reader(cfg)  # the cache layers, or with their model layers (`ModelSpec.model_layers`)
    return ModelSpec(name=model_type if name is None else name, **(read if isinstance(read, dict) else {"layers": read}))
