"""The size budget of a plan, checked before planning allocates anything.

Every engine is bounded on its own (`kvplan.spec.limits`), but what planning and
`verify` enumerate is a product of two engines: the span (lcm of the two block sizes)
times the heads and channels a decode rank holds, times the decode ranks, times the
layers. `check_budget` computes those products from the specs and the layouts of rank
0 (Python integers, no arrays) and raises `SpecError` naming the first limit a pair
exceeds. Layers with one spec and one pair of block sizes ("kinds") are planned and
verified once per decode rank, so enumeration is counted per kind. The rows a plan's
tables hold depend on how runs merge, so the planner counts them exactly as it goes
(`check_rows`), before it binds every layer's rows.

Units: an element cell (one K or V vector of a head and token, one conv element, one
SSM head) costs planning and verify about 130 bytes of memory and 0.1-0.6 us; a byte of
state that verify simulates byte by byte (staged and permuted strategies) about 40 bytes
and 0.25 us, so two such bytes count as one cell.
"""

from __future__ import annotations

import math

from ..layout.memory import EngineMemory
from ..layout.state import state_natural_bytes
from ..spec.limits import (MAX_LAYER_CELLS, MAX_PLAN_CELLS, MAX_PLAN_ROWS, MAX_RANK_LAYERS, MAX_SPAN_TOKENS,
                           MAX_TEMPLATES)


def span_tokens(src, dst, group: int) -> int:
    """Tokens of one span of a token group (the lcm of the two logical blocks), checked
    against `MAX_SPAN_TOKENS`.

    >>> from kvplan.spec import AttentionSpec, EngineSpec, ModelSpec
    >>> m = ModelSpec(name="m", layers=(AttentionSpec(2, 8),))
    >>> span_tokens(EngineSpec(model=m, block_tokens=48), EngineSpec(model=m, block_tokens=32), 0)
    96
    >>> span_tokens(EngineSpec(model=m, block_tokens=17), EngineSpec(model=m, block_tokens=1000003), 0)
    ... # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    kvplan.errors.SpecError: span of group 0 (lcm of prefill block 17 and decode block 1,000,003 tokens) is 17,000,051, over kvplan's limit MAX_SPAN_TOKENS = 4,194,304 (...)
    """
    a, b = src.group_block_tokens(group)[0], dst.group_block_tokens(group)[0]
    span = math.lcm(a, b)
    MAX_SPAN_TOKENS.check(span, f"span of group {group} (lcm of prefill block {a:,} and decode block {b:,} tokens)")
    return span


def _cells(memory: EngineMemory, layer: int, blocks: int) -> int:
    """Element cells of `layer` on rank 0 over `blocks` logical blocks (every rank of a
    shardable layer holds as many)."""
    return sum(c.layout.size * (blocks if c.has_tokens else 1) for c in memory.layer_layout(layer, 0).components)


def _page(memory: EngineMemory, layer: int) -> int:
    """Bytes of one logical block of `layer` on a rank, padding included, over its regions."""
    return sum(memory.regions[r].block_bytes for r in memory.slot_regions[layer])


def check_budget(src_mem: EngineMemory, dst_mem: EngineMemory, conv_strategy: str) -> None:
    """Raise `SpecError` when planning and verifying the pair would exceed a limit of
    `kvplan.spec.limits` (decode ranks x layers, layer templates, spans, per-layer and
    per-plan cells).

    >>> from kvplan.layout import engine_memory
    >>> from kvplan.spec import AttentionSpec, EngineSpec, ModelSpec
    >>> big = EngineSpec(model=ModelSpec(name="m", layers=(AttentionSpec(64, 1, dtype="int8"),)), block_tokens=2**20)
    >>> check_budget(engine_memory(big), engine_memory(big), "direct")   # 64 heads x K, V x 2**20 tokens, both sides
    ... # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    kvplan.errors.SpecError: cells of layer 0 (attention) for one decode rank over a span of 1,048,576 tokens is 268,435,456, over kvplan's limit MAX_LAYER_CELLS = 8,388,608 (...)
    """
    src, dst = src_mem.engine, dst_mem.engine
    layers = dst.model.num_layers
    MAX_RANK_LAYERS.check(dst.tp * layers, f"decode TP {dst.tp} x {layers} layers")
    spans = [span_tokens(src, dst, g) if dst.group_is_token(g) else 1 for g in range(len(dst.layer_groups))]
    kinds: dict = {}
    for layer in range(layers):
        key = (dst.model.layers[layer], src.layer_block_tokens(layer), dst.layer_block_tokens(layer))
        kinds.setdefault(key, []).append(layer)
    MAX_TEMPLATES.check(dst.tp * len(kinds), f"decode TP {dst.tp} x {len(kinds)} distinct layers")
    # a decode rank reads from the source ranks overlapping its share of the TP axis
    sources = min(src.tp, -(-src.tp // dst.tp) + 1)
    plan_cells = 0
    for (spec, src_blocks, dst_blocks), members in kinds.items():
        layer = members[0]
        span = spans[dst.group_of(layer)]
        dst_cells = _cells(dst_mem, layer, span // dst_blocks[0] if spec.holds_tokens else 1)
        src_cells = _cells(src_mem, layer, span // src_blocks[0] if spec.holds_tokens else 1)
        cells = dst_cells + sources * src_cells
        if not spec.holds_tokens and conv_strategy != "direct":
            # verify simulates a state block byte by byte: the pages of the source ranks
            # read and their scratch (a permuted source holds a chunk per decode rank),
            # the decode page and its scratch (a staged one holds each source's conv state)
            src_conv = state_natural_bytes(spec, src.tp, src.num_speculative_tokens)[0]
            dst_conv = state_natural_bytes(spec, dst.tp, dst.num_speculative_tokens)[0]
            simulated = sources * (_page(src_mem, layer) + dst.tp * dst_conv + src_conv) + _page(dst_mem, layer)
            cells += simulated // 2
        unit = f"a span of {span:,} tokens" if spec.holds_tokens else "one state block"
        MAX_LAYER_CELLS.check(cells, f"cells of layer {layer} ({spec.kind}) for one decode rank over {unit}")
        plan_cells += dst.tp * cells
    MAX_PLAN_CELLS.check(plan_cells, f"cells of the plan (decode TP {dst.tp}, {len(kinds)} distinct layers)")


def check_rows(rows: int) -> None:
    """Raise `SpecError` once the rows a plan's tables would hold pass `MAX_PLAN_ROWS`
    (the planner adds each decode rank's layers as it plans them).

    >>> check_rows(2**30)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    kvplan.errors.SpecError: rows of the plan's tables is 1,073,741,824, over kvplan's limit MAX_PLAN_ROWS = 4,194,304 (...)
    """
    MAX_PLAN_ROWS.check(rows, "rows of the plan's tables")
