"""vLLM 0.33 conformance vectors, vendored in tests/data (vLLM's own functions computed
them), and the operations the hybrid suite checks."""

import json
from pathlib import Path

VECTORS_PATH = Path(__file__).parent / "data" / "vllm-0.33-vectors.json"
VECTORS = json.loads(VECTORS_PATH.read_text())["vectors"]

# Operations of hybrid (state-layer) geometry, checked by tests/conformance/test_conformance_hybrid.py.
HYBRID_OPS = frozenset({
    "conv_split", "state_shapes", "hybrid_block_size", "unify_pages", "select_kernel_block",
    "prefix_trim", "block_size_ratio", "block_size_ratio_map", "physical_ratio", "local_splits",
    "logical_to_kernel",
})
