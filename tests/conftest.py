"""Test configuration: hypothesis profiles and GPU gating.

The default profile "ci" runs the property suites derandomized (a fixed seed) with
the example counts the acceptance criteria ask for, so the README's test command and
CI run the same examples; HYPOTHESIS_PROFILE=dev is quicker (and random) for local work.
GPU tests (markers gpu / multi_gpu) skip without CUDA devices, and fail instead when
KVPLAN_REQUIRE_GPU=1 so a GPU host cannot pass them silently.
"""

from __future__ import annotations

import os

import pytest
from hypothesis import HealthCheck, settings

settings.register_profile(
    "ci", max_examples=1000, deadline=None, derandomize=True, print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.register_profile(
    "dev", max_examples=150, deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


def _cuda_devices() -> int:
    try:
        import cupy

        return cupy.cuda.runtime.getDeviceCount()
    except Exception:  # no cupy, no driver, no device: all mean zero usable GPUs
        return 0


def pytest_collection_modifyitems(config, items):
    needs = {"gpu": 1, "multi_gpu": 2}
    wanted = [item for item in items if any(m in item.keywords for m in needs)]
    if not wanted:
        return
    have = _cuda_devices()
    require = os.environ.get("KVPLAN_REQUIRE_GPU") == "1"
    for item in wanted:
        need = max(n for m, n in needs.items() if m in item.keywords)
        if have < need:
            reason = f"needs {need} CUDA device(s), found {have}"
            if require:
                item.add_marker(pytest.mark.usefixtures("_gpu_required"))
            else:
                item.add_marker(pytest.mark.skip(reason=reason))


@pytest.fixture
def _gpu_required():
    pytest.fail("KVPLAN_REQUIRE_GPU=1 but the GPU this test needs is missing")
