"""vLLM 0.33 conformance vectors (shared/ beside the clone, as in CI) and their scope."""

import json
from pathlib import Path

VECTORS_PATH = Path(__file__).parents[2] / "shared/conformance/vllm-0.33-vectors.json"
VECTORS = json.loads(VECTORS_PATH.read_text())["vectors"] if VECTORS_PATH.exists() else []

# Operations of hybrid (state-layer) geometry, checked by tests/test_conformance_hybrid.py.
HYBRID_OPS = frozenset({
    "conv_split", "state_shapes", "hybrid_block_size", "unify_pages", "select_kernel_block",
    "prefix_trim", "block_size_ratio", "block_size_ratio_map", "physical_ratio", "local_splits",
    "logical_to_kernel",
})
