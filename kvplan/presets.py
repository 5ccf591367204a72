"""`vllm_engine()`: the `EngineSpec` vLLM 0.33 builds for a model, TP size and backend.

vLLM decides block sizes, kernel pages, padding and region pooling from the model and
the attention backend (reference §2.2-§2.5). Plugging kvplan into vLLM means
describing *that* memory, so this module reproduces vLLM's choices:

1. **Hybrid block size** (`Platform._align_hybrid_block_size`, models with any
   Mamba / GDN / short-conv layer). With ``a1`` the attention bytes of one token on a
   rank, ``M`` the largest state page, ``A = max(backend's smallest kernel block,
   --block-size)`` (at least 128 for MLA) and ``L`` the backend's smallest kernel block::

       B0 = A * ceil(M / (A * a1))        Nl = L * ceil(B0 / L)
       state page padded to Nl * a1       (the logical attention page)

   so the logical block depends on TP (M shrinks as 1/TP, a1 stops shrinking once the
   KV heads replicate). A ``block_size`` at least as large pins ``Nl`` and pads the
   state page further.
2. **Kernel block** (`select_common_block_size`): keep ``Nl`` if the backend accepts
   it, else the largest fixed size the backend accepts that divides ``Nl``.
3. **Page unification** (`unify_kv_cache_spec_page_size`): ``P* = max page``; state
   pages pad to ``P*``; an attention layer with page ``p < P*`` scales its block by
   ``P*/p`` when that divides, else pads (MLA raises, as vLLM does).
4. **HMA groups** (`kvplan.groups.hma_groups`) over pooled regions whenever the model
   has more than one layer spec; a single-spec (dense) model keeps one region per layer.

Worked example, NVIDIA-Nemotron-3-Nano-30B-A3B with FlashInfer (reference §2.4, §2.5):
2 KV heads x 128, bf16 -> 1,024 B/token at TP1, 512 B/token from TP2 on
(TP2 holds one head; TP4 replicates it); Mamba2 page (conv 6,144 ch x 3 taps bf16 +
SSM 64 x 64 x 128 fp32) = 2,134,016 B at TP1 and 533,504 B at TP4::

    TP1: B0 = 16 * ceil(2,134,016 / (16 * 1,024)) = 16 * 131 = 2,096 tokens
         page 2,096 * 1,024 = 2,146,304 B; kernel 16 (2,096 % 32 != 0), 131 per block
    TP4: B0 = 16 * ceil(533,504 / (16 * 512)) = 16 * 66 = 1,056 tokens
         page 1,056 * 512 = 540,672 B; kernel 32 (1,056 = 32 * 33)

>>> from kvplan.hybrid_models import HYBRID_MODELS
>>> m = HYBRID_MODELS["nemotron-3-nano-30b-a3b"]
>>> e = vllm_engine(m, tp=1)
>>> e.block_tokens, e.kernel_block_tokens, e.page_bytes, e.pooled, len(e.regions)
(2096, 16, 2146304, True, 6)
>>> e4 = vllm_engine(m, tp=4)
>>> e4.block_tokens, e4.kernel_block_tokens, e4.page_bytes
(1056, 32, 540672)
>>> vllm_engine(m, tp=4, block_size=2096).page_bytes     # same --block-size everywhere
1073152
>>> vllm_engine(m, tp=4, backend="flash_attn").kernel_block_tokens   # MultipleOf(16)
1056
"""

from __future__ import annotations

import math

import attrs

from .engine import EngineSpec
from .errors import SpecError
from .groups import LayerGroup, hma_groups, is_token_layer
from .sharding import held_interval
from .specs import ModelSpec
from .state_geometry import state_natural_bytes


@attrs.frozen
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


# Reference §2.5. Default block sizes are what vLLM's CUDA platform sets when the user
# gives none: 16, except the MLA kernels that only run their own page size.
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
# vLLM aligns the hybrid block of an MLA model to at least 128 tokens (reference §2.4).
_MLA_HYBRID_ALIGN_TOKENS = 128


def backend_kernel_blocks(backend: str) -> KernelBlocks:
    """The kernel sizes of a backend name (``"flashinfer"``, ``"flash_attn"``, ...)."""
    if backend not in BACKENDS:
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
    if isinstance(backends, str):
        backends = (backends,)
    kinds = [backend_kernel_blocks(b) for b in backends]
    if all(k.accepts(block_tokens) for k in kinds):
        return block_tokens
    fixed = sorted({size for k in kinds for size in k.fixed}, reverse=True)
    for size in fixed:
        if block_tokens % size == 0 and all(k.accepts(size) for k in kinds):
            return size
    raise SpecError(f"no kernel block size of backends {tuple(backends)} divides a {block_tokens}-token "
                    f"logical block (fixed sizes offered: {sorted(fixed)})")


def attention_bytes_per_token(spec, tp: int) -> int:
    """Bytes of one token of one attention layer on a rank: held heads x (dk + dv) x e.

    >>> from kvplan.specs import AttentionSpec
    >>> [attention_bytes_per_token(AttentionSpec(2, 128), tp) for tp in (1, 2, 4)]
    [1024, 512, 512]
    """
    if spec.mla:
        return spec.bytes_per_token  # the latent, whole on every rank
    lo, hi = held_interval(spec.num_kv_heads, tp, 0, what="KV heads")
    return (hi - lo) * (spec.head_dim + spec.v_dim) * spec.elem_bytes


def state_page_bytes(spec, tp: int, num_speculative_tokens: int = 0) -> int:
    """vLLM's Mamba page ``M = sum(prod(shape) * dtype bytes)`` of one state layer on a rank.

    >>> from kvplan.hybrid_models import HYBRID_MODELS
    >>> state_page_bytes(HYBRID_MODELS["nemotron-3-nano-30b-a3b"].layers[0], 4)
    533504
    """
    return sum(state_natural_bytes(spec, tp, num_speculative_tokens))


@attrs.frozen
class VllmMemory:
    """vLLM 0.33's memory decisions for one model, TP size and backend.

    * `block_tokens` / `kernel_block_tokens`: the logical (manager) block ``Nl`` of the
      base attention spec and its kernel page ``Nk``;
    * `attention_bytes_per_token` (``a1``) and `state_bytes` (``M``, unpadded; None
      without state layers) feed the hybrid alignment;
    * `page_bytes`: the unified logical page of every pooled region (None when not pooled);
    * `groups`: the HMA groups, token groups carrying their own (block, kernel) tokens.
    """

    block_tokens: int
    kernel_block_tokens: int
    attention_bytes_per_token: int
    state_bytes: int | None
    page_bytes: int | None
    groups: tuple
    pooled: bool


def _is_mla_model(model: ModelSpec) -> bool:
    return any(is_token_layer(s) and s.mla for s in model.layers)


def hybrid_block_tokens(model: ModelSpec, tp: int, backend: str = "flashinfer", block_size: int | None = None,
                        num_speculative_tokens: int = 0) -> tuple[int, int]:
    """(Nl, padded state page) of `_align_hybrid_block_size` (see the module docstring).

    >>> from kvplan.hybrid_models import HYBRID_MODELS
    >>> [hybrid_block_tokens(HYBRID_MODELS["nemotron-3-nano-30b-a3b"], tp)[0] for tp in (1, 2, 4, 8)]
    [2096, 2096, 1056, 528]
    """
    kernels = backend_kernel_blocks(backend)
    attention = [s for s in model.layers if is_token_layer(s)]
    states = [s for s in model.layers if not is_token_layer(s)]
    if not attention or not states:
        raise SpecError(f"model {model.name!r} is not an attention + state hybrid "
                        f"({len(attention)} attention layers, {len(states)} state layers)")
    # vLLM sizes a1 from the model-wide attention config, i.e. one attention spec
    a1 = attention_bytes_per_token(attention[0], tp)
    m = max(state_page_bytes(s, tp, num_speculative_tokens) for s in set(states))
    smallest = kernels.smallest_tokens
    align = max(smallest, DEFAULT_BLOCK_TOKENS[backend] if block_size is None else block_size)
    if _is_mla_model(model):
        align = max(align, _MLA_HYBRID_ALIGN_TOKENS)
    b0 = align * -(-m // (align * a1))
    nl = smallest * -(-b0 // smallest)
    if block_size is not None and block_size > nl:
        nl = block_size  # a larger --block-size is kept as is
    return nl, max(m, nl * a1)


def vllm_memory(model: ModelSpec, tp: int = 1, *, backend: str = "flashinfer", block_size: int | None = None,
                num_speculative_tokens: int = 0) -> VllmMemory:
    """vLLM 0.33's block sizes, page and groups for `model` at `tp` (see module docstring).

    >>> from kvplan.specs import AttentionSpec, ModelSpec
    >>> sliding = AttentionSpec(8, 256, sliding_window=1024)
    >>> full = AttentionSpec(2, 512)       # Gemma-4-26B-A4B: full layers have fewer, wider heads
    >>> g = vllm_memory(ModelSpec(name="g4", layers=(sliding, full)), tp=2)
    >>> [(grp.layers, grp.block_tokens, grp.kernel_block_tokens) for grp in g.groups], g.page_bytes
    ([((0,), 16, 16), ((1,), 32, 32)], 65536)
    """
    if not isinstance(model, ModelSpec):
        raise SpecError(f"vllm_engine() takes a ModelSpec, got {type(model).__name__}")
    kernels = backend_kernel_blocks(backend)
    if kernels.mla_only and not all(s.mla for s in model.layers if is_token_layer(s)):
        raise SpecError(f"backend {backend!r} runs MLA layers only; model {model.name!r} has non-MLA attention")
    if block_size is not None and (isinstance(block_size, bool) or not isinstance(block_size, int) or block_size <= 0):
        raise SpecError(f"block_size must be a positive int, got {block_size!r}")
    has_state = any(not is_token_layer(s) for s in model.layers)
    attention = [s for s in model.layers if is_token_layer(s)]
    if not attention:
        raise SpecError(f"model {model.name!r} has no attention layer: vLLM sizes pure state models from "
                        "max_model_len, which this preset does not model; build the EngineSpec directly")
    state_bytes = None
    if has_state:
        nl, state_page = hybrid_block_tokens(model, tp, backend, block_size, num_speculative_tokens)
        state_bytes = max(state_page_bytes(s, tp, num_speculative_tokens)
                          for s in set(model.layers) if not is_token_layer(s))
    else:
        nl = DEFAULT_BLOCK_TOKENS[backend] if block_size is None else block_size
        state_page = None
    kernel = select_kernel_block_tokens(nl, (backend,))
    a1 = attention_bytes_per_token(attention[0], tp)
    distinct = list(dict.fromkeys(model.layers))
    if len(distinct) == 1:
        # dense: one region per layer, no HMA pooling and no unification to do
        return VllmMemory(nl, kernel, a1, state_bytes, None, (), False)
    # unify_kv_cache_spec_page_size over the distinct layer specs
    pages = {s: (state_page if not is_token_layer(s) else nl * attention_bytes_per_token(s, tp)) for s in distinct}
    unified = max(pages.values())
    blocks = {}
    for s in distinct:
        if not is_token_layer(s) or pages[s] == unified:
            blocks[s] = nl
        elif unified % pages[s] == 0:
            blocks[s] = nl * (unified // pages[s])  # more tokens per block, same page
        elif s.mla:
            raise SpecError(f"MLA layer page {pages[s]} B does not divide the largest page {unified} B: "
                            "vLLM 0.33 raises NotImplementedError for this model")
        else:
            blocks[s] = nl  # padded to the unified page
    groups = []
    for group in hma_groups(model):
        first = model.layers[next(layer for layer in group.layers if layer is not None)]
        if is_token_layer(first):
            block = blocks[first]
            groups.append(LayerGroup(group.layers, block_tokens=block,
                                     kernel_block_tokens=select_kernel_block_tokens(block, (backend,))))
        else:
            groups.append(group)
    return VllmMemory(nl, kernel, a1, state_bytes, unified, tuple(groups), True)


def vllm_engine(model, tp: int = 1, *, backend: str = "flashinfer", block_size: int | None = None,
                num_speculative_tokens: int = 0, num_blocks: int | None = None, pp: int = 1) -> EngineSpec:
    """The `EngineSpec` of a vLLM 0.33 engine serving `model` at `tp` (see module docstring).

    `model` is a `ModelSpec` or a built-in name (`kvplan.models` / `kvplan.hybrid_models`).
    `block_size` is vLLM's ``--block-size``; `num_blocks` the logical blocks per region,
    if known. Conv state is "DS", the layout vLLM's NIXL connector requires.

    >>> e = vllm_engine("granite-4.0-h-small", tp=2)
    >>> e.block_tokens, e.kernel_block_tokens, e.page_bytes, len(e.layer_groups), len(e.regions)
    (528, 16, 1081344, 10, 4)
    >>> d = vllm_engine("llama-3.1-8b", tp=2)
    >>> d.block_tokens, d.kernel_tokens, d.pooled, len(d.regions)
    (16, 16, False, 32)
    >>> vllm_engine("nemotron-3-nano-30b-a3b", tp=2, pp=2)
    Traceback (most recent call last):
    ...
    kvplan.errors.SpecError: model 'nemotron-3-nano-30b-a3b' needs pooled HMA regions (several layer specs), which cannot span pp=2 stages; vLLM 0.33 rejects PP > 1 for Mamba hybrids and HMA pull transfers (reference §9)
    """
    if isinstance(model, str):
        model = _named_model(model)
    memory = vllm_memory(model, tp, backend=backend, block_size=block_size,
                         num_speculative_tokens=num_speculative_tokens)
    if memory.pooled and pp != 1:
        raise SpecError(f"model {model.name!r} needs pooled HMA regions (several layer specs), which cannot span "
                        f"pp={pp} stages; vLLM 0.33 rejects PP > 1 for Mamba hybrids and HMA pull transfers "
                        "(reference §9)")
    return EngineSpec(
        model=model, tp=tp, pp=pp,
        block_tokens=memory.block_tokens, kernel_block_tokens=memory.kernel_block_tokens,
        kv_layout="HND", kv_storage="packed", conv_layout="DS",
        num_speculative_tokens=num_speculative_tokens,
        groups=memory.groups if memory.pooled else None, pooled=memory.pooled,
        page_bytes=memory.page_bytes, num_blocks=num_blocks,
    )


def _named_model(name: str) -> ModelSpec:
    from .hybrid_models import HYBRID_MODELS
    from .models import MODELS, get_model

    key = name.lower()
    if key in HYBRID_MODELS:
        return HYBRID_MODELS[key]
    if key in MODELS:
        return get_model(key)
    known = ", ".join(sorted(set(HYBRID_MODELS) | set(MODELS)))
    raise SpecError(f"unknown model {name!r}; known models: {known}")


__all__ = [
    "BACKENDS", "DEFAULT_BLOCK_TOKENS", "KernelBlocks", "VllmMemory", "attention_bytes_per_token",
    "backend_kernel_blocks", "hybrid_block_tokens", "select_kernel_block_tokens", "state_page_bytes",
    "vllm_engine", "vllm_memory",
]
