"""Engine presets: the `EngineSpec` a serving engine builds for a model.

`vllm` reproduces vLLM 0.33's memory model (hybrid block alignment, kernel block
selection, page unification, HMA groups and pooled regions); `kernels` holds its
attention backends' kernel block sizes, `hma` its layer grouping. Presets import spec,
layout (page sizes) and models (names).
"""

from .hma import hma_groups
from .kernels import BACKENDS, DEFAULT_BLOCK_TOKENS, KernelBlocks, backend_kernel_blocks, select_kernel_block_tokens
from .vllm import VllmMemory, hybrid_block_tokens, state_page_bytes, vllm_engine, vllm_memory

__all__ = [
    "BACKENDS", "DEFAULT_BLOCK_TOKENS", "KernelBlocks", "VllmMemory", "backend_kernel_blocks", "hma_groups",
    "hybrid_block_tokens", "select_kernel_block_tokens", "state_page_bytes", "vllm_engine", "vllm_memory",
]
