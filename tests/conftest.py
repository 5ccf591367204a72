"""Test configuration: hypothesis profiles and GPU gating.

The default profile "ci" runs the property suites derandomized (a fixed seed) with
the example counts the acceptance criteria ask for, so the README's test command and
CI run the same examples; HYPOTHESIS_PROFILE=dev is quicker (and random) for local work.
GPU tests (markers gpu / multi_gpu) skip without CUDA devices, and fail instead when
KVPLAN_REQUIRE_GPU=1 so a GPU host cannot pass them silently.
"""

from __future__ import annotations

import functools
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


@functools.cache
def _cuda_devices() -> int:
    try:
        import cupy

        return cupy.cuda.runtime.getDeviceCount()
    except Exception:  # no cupy, no driver, no device: all mean zero usable GPUs
        return 0


NEEDS = {"gpu": 1, "multi_gpu": 2}


def pytest_runtest_setup(item):
    """A GPU test without its GPUs skips, or fails under KVPLAN_REQUIRE_GPU=1 (so a GPU
    host cannot pass it silently)."""
    need = max((n for marker, n in NEEDS.items() if marker in item.keywords), default=0)
    have = _cuda_devices() if need else 0
    if need > have:
        reason = f"needs {need} CUDA device(s), found {have}"
        if os.environ.get("KVPLAN_REQUIRE_GPU") == "1":
            pytest.fail(f"KVPLAN_REQUIRE_GPU=1 but the test {reason}")
        pytest.skip(reason)
