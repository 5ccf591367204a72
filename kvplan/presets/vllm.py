"""`vllm_engine()`: the `EngineSpec` vLLM 0.33 builds for a model, TP size and backend.

vLLM decides block sizes, kernel pages, padding and region pooling from the model and
the attention backend. Plugging kvplan into vLLM means
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
4. **HMA groups** (`kvplan.presets.hma_groups`) over pooled regions whenever the model
   has more than one layer spec; a single-spec (dense) model keeps one region per layer.

Worked example, NVIDIA-Nemotron-3-Nano-30B-A3B with FlashInfer:
2 KV heads x 128, bf16 -> 1,024 B/token at TP1, 512 B/token from TP2 on
(TP2 holds one head; TP4 replicates it); Mamba2 page (conv 6,144 ch x 3 taps bf16 +
SSM 64 x 64 x 128 fp32) = 2,134,016 B at TP1 and 533,504 B at TP4::

    TP1: B0 = 16 * ceil(2,134,016 / (16 * 1,024)) = 16 * 131 = 2,096 tokens
         page 2,096 * 1,024 = 2,146,304 B; kernel 16 (2,096 % 32 != 0), 131 per block
    TP4: B0 = 16 * ceil(533,504 / (16 * 512)) = 16 * 66 = 1,056 tokens
         page 1,056 * 512 = 540,672 B; kernel 32 (1,056 = 32 * 33)

>>> from kvplan.layout import engine_memory
>>> from kvplan.models.hybrid import HYBRID_MODELS
>>> m = HYBRID_MODELS["nemotron-3-nano-30b-a3b"]
>>> e = vllm_engine(m, tp=1)
>>> e.block_tokens, e.kernel_block_tokens, e.page_bytes, e.pooled, len(engine_memory(e).regions)
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

import attrs

from ..errors import SpecError
from ..layout.attention import attention_bytes_per_token
from ..layout.state import state_natural_bytes
from ..models.registry import get_model
from ..spec.engine import EngineSpec
from ..spec.groups import LayerGroup
from ..spec.limits import MAX_BLOCK_TOKENS, MAX_PP, MAX_SPECULATIVE_TOKENS, MAX_TP, check_count
from ..spec.model import ModelSpec
from .hma import hma_groups
from .kernels import DEFAULT_BLOCK_TOKENS, backend_kernel_blocks, select_kernel_block_tokens

# vLLM aligns the hybrid block of an MLA model to at least 128 tokens.
_MLA_HYBRID_ALIGN_TOKENS = 128


def state_page_bytes(spec, tp: int, num_speculative_tokens: int = 0) -> int:
    """vLLM's Mamba page ``M = sum(prod(shape) * dtype bytes)`` of one state layer on a rank.

    >>> from kvplan.models.hybrid import HYBRID_MODELS
    >>> state_page_bytes(HYBRID_MODELS["nemotron-3-nano-30b-a3b"].layers[0], 4)
    533504
    """
    return sum(state_natural_bytes(spec, tp, num_speculative_tokens))


@attrs.frozen(kw_only=True)
class VllmMemory:
    """vLLM 0.33's memory decisions for one model, TP size and backend.

    * `block_tokens` / `kernel_block_tokens`: the logical (manager) block ``Nl`` of the
      base attention spec and its kernel page ``Nk``;
    * `attention_bytes_per_token` (``a1``) and `state_bytes` (``M``, unpadded; None
      without state layers) feed the hybrid alignment;
    * `page_bytes`: the unified logical page of every pooled region (None when not pooled);
    * `groups`: the HMA groups, token groups carrying their own (block, kernel) tokens.

    `vllm_memory` computes one (example there).
    """

    block_tokens: int
    kernel_block_tokens: int
    attention_bytes_per_token: int
    state_bytes: int | None
    page_bytes: int | None
    groups: tuple
    pooled: bool


def _check_vllm_args(model, tp, block_size, num_speculative_tokens) -> None:
    """The arguments vLLM's block arithmetic divides by or sizes with, checked first."""
    if not isinstance(model, ModelSpec):
        raise SpecError(f"vllm_engine() takes a ModelSpec, got {type(model).__name__}")
    check_count(tp, "tp", MAX_TP)
    check_count(num_speculative_tokens, "num_speculative_tokens", MAX_SPECULATIVE_TOKENS, minimum=0)
    if block_size is not None:
        check_count(block_size, "block_size", MAX_BLOCK_TOKENS)


def _is_mla_model(model: ModelSpec) -> bool:
    return any(s.holds_tokens and s.mla for s in model.layers)


def hybrid_block_tokens(model: ModelSpec, tp: int, backend: str = "flashinfer", block_size: int | None = None,
                        num_speculative_tokens: int = 0) -> tuple[int, int]:
    """(Nl, padded state page) of `_align_hybrid_block_size` (see the module docstring).

    >>> from kvplan.models.hybrid import HYBRID_MODELS
    >>> [hybrid_block_tokens(HYBRID_MODELS["nemotron-3-nano-30b-a3b"], tp)[0] for tp in (1, 2, 4, 8)]
    [2096, 2096, 1056, 528]
    """
    _check_vllm_args(model, tp, block_size, num_speculative_tokens)
    kernels = backend_kernel_blocks(backend)
    attention = [s for s in model.layers if s.holds_tokens]
    states = [s for s in model.layers if not s.holds_tokens]
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

    >>> from kvplan.spec import AttentionSpec, ModelSpec
    >>> sliding = AttentionSpec(8, 256, sliding_window=1024)
    >>> full = AttentionSpec(2, 512)       # Gemma-4-26B-A4B: full layers have fewer, wider heads
    >>> g = vllm_memory(ModelSpec(name="g4", layers=(sliding, full)), tp=2)
    >>> [(grp.layers, grp.block_tokens, grp.kernel_block_tokens) for grp in g.groups], g.page_bytes
    ([((0,), 16, 16), ((1,), 32, 32)], 65536)
    """
    _check_vllm_args(model, tp, block_size, num_speculative_tokens)
    kernels = backend_kernel_blocks(backend)
    if kernels.mla_only and not all(s.mla for s in model.layers if s.holds_tokens):
        raise SpecError(f"backend {backend!r} runs MLA layers only; model {model.name!r} has non-MLA attention")
    has_state = any(not s.holds_tokens for s in model.layers)
    attention = [s for s in model.layers if s.holds_tokens]
    if not attention:
        raise SpecError(f"model {model.name!r} has no attention layer: vLLM sizes pure state models from "
                        "max_model_len, which this preset does not model; build the EngineSpec directly")
    state_bytes = None
    if has_state:
        nl, state_page = hybrid_block_tokens(model, tp, backend, block_size, num_speculative_tokens)
        state_bytes = max(state_page_bytes(s, tp, num_speculative_tokens)
                          for s in set(model.layers) if not s.holds_tokens)
    else:
        nl = DEFAULT_BLOCK_TOKENS[backend] if block_size is None else block_size
        state_page = None
    kernel = select_kernel_block_tokens(nl, (backend,))
    a1 = attention_bytes_per_token(attention[0], tp)
    distinct = list(dict.fromkeys(model.layers))
    if len(distinct) == 1:
        # dense: one region per layer, no HMA pooling and no unification to do
        return VllmMemory(block_tokens=nl, kernel_block_tokens=kernel, attention_bytes_per_token=a1,
                          state_bytes=state_bytes, page_bytes=None, groups=(), pooled=False)
    # unify_kv_cache_spec_page_size over the distinct layer specs
    pages = {s: (state_page if not s.holds_tokens else nl * attention_bytes_per_token(s, tp)) for s in distinct}
    unified = max(pages.values())
    blocks = {}
    for s in distinct:
        if not s.holds_tokens or pages[s] == unified:
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
        if first.holds_tokens:
            block = blocks[first]
            groups.append(LayerGroup(group.layers, block_tokens=block,
                                     kernel_block_tokens=select_kernel_block_tokens(block, (backend,))))
        else:
            groups.append(group)
    return VllmMemory(block_tokens=nl, kernel_block_tokens=kernel, attention_bytes_per_token=a1,
                      state_bytes=state_bytes, page_bytes=unified, groups=tuple(groups), pooled=True)


def vllm_engine(model, tp: int = 1, *, backend: str = "flashinfer", block_size: int | None = None,
                num_speculative_tokens: int = 0, num_blocks: int | None = None, pp: int = 1) -> EngineSpec:
    """The `EngineSpec` of a vLLM 0.33 engine serving `model` at `tp` (see module docstring).

    `model` is a `ModelSpec` or a built-in name (`kvplan.models.get_model`).
    `block_size` is vLLM's ``--block-size``; `num_blocks` the logical blocks per region,
    if known. Conv state is "DS", the layout vLLM's NIXL connector requires.

    >>> e = vllm_engine("granite-4.0-h-small", tp=2)
    >>> from kvplan.layout import engine_memory
    >>> e.block_tokens, e.kernel_block_tokens, e.page_bytes, len(e.layer_groups), len(engine_memory(e).regions)
    (528, 16, 1081344, 10, 4)
    >>> d = vllm_engine("llama-3.1-8b", tp=2)
    >>> d.block_tokens, d.kernel_tokens, d.pooled, len(engine_memory(d).regions)
    (16, 16, False, 32)
    >>> vllm_engine("nemotron-3-nano-30b-a3b", tp=2, pp=2)
    Traceback (most recent call last):
    ...
    kvplan.errors.SpecError: model 'nemotron-3-nano-30b-a3b' needs pooled HMA regions (several layer specs), which cannot span pp=2 stages; vLLM 0.33 rejects PP > 1 for Mamba hybrids and HMA pull transfers
    """
    if isinstance(model, str):
        model = get_model(model)
    check_count(pp, "pp", MAX_PP)
    memory = vllm_memory(model, tp, backend=backend, block_size=block_size,
                         num_speculative_tokens=num_speculative_tokens)
    if memory.pooled and pp != 1:
        raise SpecError(f"model {model.name!r} needs pooled HMA regions (several layer specs), which cannot span "
                        f"pp={pp} stages; vLLM 0.33 rejects PP > 1 for Mamba hybrids and HMA pull transfers")
    return EngineSpec(
        model=model, tp=tp, pp=pp,
        block_tokens=memory.block_tokens, kernel_block_tokens=memory.kernel_block_tokens,
        kv_layout="HND", kv_storage="packed", conv_layout="DS",
        num_speculative_tokens=num_speculative_tokens,
        groups=memory.groups if memory.pooled else None, pooled=memory.pooled,
        page_bytes=memory.page_bytes, num_blocks=num_blocks,
    )
