"""One Hugging Face config's values as a family reader sees them: defaults, legacy key
names, type checks, and errors that name the family, the key and the value.

>>> cfg = Config({"model_type": "llama", "num_hidden_layers": 2, "head_dim": None, "dtype": "bf16"}, "llama")
>>> cfg.num_layers(), cfg.integer("head_dim", default=64), cfg.dtype
(2, 64, 'bfloat16')
>>> cfg.integer("num_hidden_layers", minimum=3)
Traceback (most recent call last):
...
kvplan.errors.SpecError: llama config has num_hidden_layers 2; expected an int >= 3
"""

from __future__ import annotations

from collections.abc import Mapping

from ..errors import SpecError
from ..spec.dtypes import canonical_dtype
from ..spec.limits import MAX_LAYERS

DEFAULT_MODEL_DTYPE = "bfloat16"  # transformers' configs without a dtype load as float32, engines serve bf16


class Config:
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
        return DEFAULT_MODEL_DTYPE

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
