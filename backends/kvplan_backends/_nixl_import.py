"""Find NIXL's Python API: the `nixl` meta package, else the CUDA-specific wheel."""

from __future__ import annotations

import importlib


def nixl_api():
    errors = []
    for module in ("nixl._api", "nixl_cu13._api", "nixl_cu12._api"):
        try:
            return importlib.import_module(module)
        except ImportError as error:
            errors.append(f"{module}: {error}")
    raise ImportError("NIXL is not installed (" + "; ".join(errors) + ")")
