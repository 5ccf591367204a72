"""The built-in models by name, and the one lookup every caller uses."""

from __future__ import annotations

from ..errors import SpecError
from ..spec.model import ModelSpec
from .dense import DENSE_MODELS
from .hybrid import HYBRID_MODELS

MODELS: dict[str, ModelSpec] = DENSE_MODELS | HYBRID_MODELS


def get_model(name: str) -> ModelSpec:
    """The built-in `ModelSpec` called `name` (case-insensitive).

    >>> get_model("deepseek-v3").layers[0].mla
    True
    >>> get_model("llama-4")
    Traceback (most recent call last):
    ...
    kvplan.errors.SpecError: unknown model 'llama-4'; known models: deepseek-v3, falcon-h1-7b, gemma-3-27b, gemma-4-31b, granite-4.0-h-small, jamba-v0.1, llama-3.1-70b, llama-3.1-8b, mistral-7b, nemotron-3-nano-30b-a3b, qwen2.5-7b, qwen3-next-80b-a3b
    """
    key = name.lower() if isinstance(name, str) else None  # a non-string is never a model name
    if key not in MODELS:
        raise SpecError(f"unknown model {name!r}; known models: {', '.join(sorted(MODELS))}")
    return MODELS[key]
