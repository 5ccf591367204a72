"""Element sizes of the dtypes KV caches and SSM states use, without torch."""

from __future__ import annotations

from ..errors import SpecError

DTYPE_BYTES: dict[str, int] = {
    "float64": 8,
    "float32": 4,
    "bfloat16": 2,
    "float16": 2,
    "float8_e4m3fn": 1,
    "float8_e4m3fnuz": 1,
    "float8_e5m2": 1,
    "float8_e5m2fnuz": 1,
    "int8": 1,
    "uint8": 1,
}

# Spellings engines use for the same dtypes (vLLM's --kv-cache-dtype, HF configs).
_ALIASES = {
    "bf16": "bfloat16",
    "fp16": "float16",
    "half": "float16",
    "fp32": "float32",
    "float": "float32",
    "fp8": "float8_e4m3fn",
    "fp8_e4m3": "float8_e4m3fn",
    "fp8_e5m2": "float8_e5m2",
}


def canonical_dtype(name: str) -> str:
    """The canonical name of a dtype spelling.

    >>> canonical_dtype("bf16"), canonical_dtype("torch.float8_e4m3fn"), canonical_dtype("fp8")
    ('bfloat16', 'float8_e4m3fn', 'float8_e4m3fn')
    """
    if not isinstance(name, str):
        raise SpecError(f"dtype must be a string such as 'bfloat16', got {name!r}")
    key = name.lower().removeprefix("torch.")
    key = _ALIASES.get(key, key)
    if key not in DTYPE_BYTES:
        known = ", ".join(sorted(DTYPE_BYTES))
        raise SpecError(f"unknown dtype {name!r}; known dtypes: {known}")
    return key


def dtype_bytes(name: str) -> int:
    """Bytes per element.

    >>> dtype_bytes("bfloat16"), dtype_bytes("float8_e5m2"), dtype_bytes("fp32")
    (2, 1, 4)
    """
    return DTYPE_BYTES[canonical_dtype(name)]
