"""Kernel block sizes of vLLM 0.33's attention backends, and how vLLM picks a kernel page.

An attention backend accepts fixed kernel block sizes or any multiple of one size
(vLLM's `get_supported_kernel_block_sizes`); `select_kernel_block_tokens` is vLLM's
`select_common_block_size`. Default block sizes are what vLLM's CUDA platform sets
when the user gives none: 16, except the MLA kernels that only run their own page size.
"""

from __future__ import annotations

import attrs

from ..errors import SpecError
from ..spec.limits import MAX_BLOCK_TOKENS, check_count


@attrs.frozen(kw_only=True)
class KernelBlocks:
    """Kernel block sizes an attention backend accepts (vLLM's
    `get_supported_kernel_block_sizes`): fixed sizes, or any multiple of `multiple_of`.

    >>> KernelBlocks(fixed=(16, 32, 64)).accepts(2096), KernelBlocks(multiple_of=16).accepts(2096)
    (False, True)
    """

    fixed: tuple[int, ...] = ()
    multiple_of: int | None = None
    mla_only: bool = False

    @property
    def smallest_tokens(self) -> int:
        return self.multiple_of if self.multiple_of is not None else min(self.fixed)

    def accepts(self, tokens: int) -> bool:
        if self.multiple_of is not None and tokens % self.multiple_of == 0:
            return True
        return tokens in self.fixed


BACKENDS: dict[str, KernelBlocks] = {
    "flashinfer": KernelBlocks(fixed=(16, 32, 64)),
    "flash_attn": KernelBlocks(multiple_of=16),
    "flashmla": KernelBlocks(fixed=(64,), mla_only=True),
    "cutlass_mla": KernelBlocks(fixed=(128,), mla_only=True),
    "flashinfer_mla": KernelBlocks(fixed=(32, 64), mla_only=True),
}
DEFAULT_BLOCK_TOKENS: dict[str, int] = {
    "flashinfer": 16, "flash_attn": 16, "flashmla": 64, "cutlass_mla": 128, "flashinfer_mla": 64,
}


def backend_kernel_blocks(backend: str) -> KernelBlocks:
    """The kernel sizes of a backend name (``"flashinfer"``, ``"flash_attn"``, ...).

    >>> backend_kernel_blocks("flashmla")
    KernelBlocks(fixed=(64,), multiple_of=None, mla_only=True)
    """
    if not isinstance(backend, str) or backend not in BACKENDS:
        raise SpecError(f"unknown attention backend {backend!r}; known backends: {', '.join(sorted(BACKENDS))}")
    return BACKENDS[backend]


def select_kernel_block_tokens(block_tokens: int, backends=("flashinfer",)) -> int:
    """vLLM's `select_common_block_size`: the kernel page of a `block_tokens` logical block.

    Keep the logical block when every backend accepts it, else the largest fixed size
    that divides it and every backend accepts.

    >>> select_kernel_block_tokens(2096), select_kernel_block_tokens(1056), select_kernel_block_tokens(528)
    (16, 32, 16)
    >>> select_kernel_block_tokens(2096, ("flash_attn",)), select_kernel_block_tokens(2048, ("flashmla",))
    (2096, 64)
    >>> select_kernel_block_tokens(40, ("flashmla",))
    Traceback (most recent call last):
    ...
    kvplan.errors.SpecError: no kernel block size of backends ('flashmla',) divides a 40-token logical block (fixed sizes offered: [64])
    """
    check_count(block_tokens, "block_tokens", MAX_BLOCK_TOKENS)
    if isinstance(backends, str):
        backends = (backends,)
    if not isinstance(backends, (tuple, list)) or not backends:
        raise SpecError(f"backends must be a backend name or a tuple of them, got {backends!r}"[:300])
    kinds = [backend_kernel_blocks(b) for b in backends]
    if all(k.accepts(block_tokens) for k in kinds):
        return block_tokens
    fixed = sorted({size for k in kinds for size in k.fixed}, reverse=True)
    for size in fixed:
        if block_tokens % size == 0 and all(k.accepts(size) for k in kinds):
            return size
    raise SpecError(f"no kernel block size of backends {tuple(backends)} divides a {block_tokens}-token "
                    f"logical block (fixed sizes offered: {sorted(fixed)})")


