"""Which transports can run here.

Transports that are not importable skip with the import error as the reason (CI
installs nixl and ucxx, see .ci/run); GPU tests are gated by tests/conftest.py. Under
KVPLAN_REQUIRE_GPU=1 a missing CuPy fails instead of skipping, so a GPU host without
it cannot pass the GPU tests silently.
"""

from __future__ import annotations

import importlib
import os

import pytest

TRANSPORT_MODULES = {"host": None, "nixl": "kvplan_backends._nixl_import", "ucx": "ucxx", "cupy": "cupy"}


def transport_missing(kind: str) -> str | None:
    """Why `kind` cannot run here, or None."""
    module = TRANSPORT_MODULES[kind.split("-")[0]]
    if module is None:
        return None
    try:
        imported = importlib.import_module(module)
        if kind.startswith("nixl"):
            imported.nixl_api()
    except ImportError as error:
        return f"{kind} transport not importable: {error}"
    return None


def need(kind: str) -> None:
    """Skip the calling test, quoting the import error, when `kind` cannot run here."""
    reason = transport_missing(kind)
    if reason and kind == "cupy" and os.environ.get("KVPLAN_REQUIRE_GPU") == "1":
        pytest.fail(f"KVPLAN_REQUIRE_GPU=1 but {reason}")
    if reason:
        pytest.skip(reason)


def gpu_pair() -> dict[str, int]:
    """The prefill and decode GPU of a two-engine test: 0 and 1 where two GPUs are
    visible, else both engines on GPU 0 (the bytes are checked all the same)."""
    import cupy

    return {"src_device": 0, "dst_device": 1 if cupy.cuda.runtime.getDeviceCount() >= 2 else 0}
