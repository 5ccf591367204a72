"""Human-readable rendering of a plan: one paragraph per decode rank."""

from __future__ import annotations

import numpy as np

from ..layout.memory import engine_memory
from ..planning.ranges import consecutive_runs
from .classes import class_text, layer_classes, layer_runs, row_label
from .cost import check_plan, plan_cost


def _ranges(values) -> str:
    """Compact ranges: [0, 1, 2, 5] -> '0-2,5'."""
    return ",".join(f"{a}" if a == b else f"{a}-{b}" for a, b in consecutive_runs(values))


def _engine_line(label: str, engine) -> str:
    kernel = "" if engine.kernel_tokens == engine.block_tokens else f" (kernel {engine.kernel_tokens})"
    extra = ""
    if any(not engine.group_is_token(g) for g in range(len(engine.layer_groups))):
        extra = f" conv={engine.conv_layout}" + (f" spec={engine.num_speculative_tokens}"
                                                  if engine.num_speculative_tokens else "")
    if engine.pooled:
        memory = engine_memory(engine)
        extra += f" pooled: {len(memory.regions)} regions x {memory.pool_page_bytes:,} B/block"
    return (f"{label}: tp={engine.tp} pp={engine.pp} block={engine.block_tokens}{kernel} "
            f"layout={engine.kv_layout}/{engine.kv_storage}{extra}")


def describe(plan) -> str:
    """Summary of `plan`: the engines, each layer group's span, then per decode rank its
    source ranks, reads and bytes, and each class of layers that read alike (what the
    layers hold, dtypes, windows) with its rows, labelled with the heads or channels
    they carry; long lists end in an explicit "... N more".

    >>> from kvplan.planning import plan_tables
    >>> from kvplan.spec import AttentionSpec, EngineSpec, ModelSpec
    >>> m = ModelSpec(name="m", layers=(AttentionSpec(num_kv_heads=8, head_dim=128),) * 80)
    >>> for line in describe(plan_tables(EngineSpec(model=m, tp=2), EngineSpec(model=m, tp=8))).splitlines()[:10]:
    ...     print(line)
    model m: 80 layers
    prefill: tp=2 pp=1 block=16 layout=HND/packed
    decode : tp=8 pp=1 block=16 layout=HND/packed
    layers 0-79: span 16 tokens = 1 prefill block(s) = 1 decode block(s)
    D rank 0 <- P rank 0: 80 layers, 80 reads/span, 655,360 B/span
      layers 0-79 (80 attention 8 x 128 bfloat16): 1 read per span each
        KV h0          P r0 reg 0 blk 0 +0 -> reg 0 blk 0 +0  8,192 B
    D rank 1 <- P rank 0: 80 layers, 80 reads/span, 655,360 B/span
      layers 0-79 (80 attention 8 x 128 bfloat16): 1 read per span each
        KV h1          P r0 reg 0 blk 0 +8192 -> reg 0 blk 0 +0  8,192 B
    """
    check_plan(plan)
    src, dst = plan.src, plan.dst
    lines = [
        f"model {dst.model.name}: {dst.model.num_layers} layers",
        _engine_line("prefill", src),
        _engine_line("decode ", dst),
    ]
    for g, group in enumerate(dst.layer_groups):
        layers = [layer for layer in group.layers if layer is not None]
        ns, nd = plan.blocks_per_span(g)
        if dst.group_is_token(g):
            tokens = ns * src.group_block_tokens(g)[0]
            unit = f"span {tokens} tokens = {ns} prefill block(s) = {nd} decode block(s)"
        else:
            unit = f"state: one block per block, conv strategy {plan.conv_strategy}"
        label = "" if len(dst.layer_groups) == 1 else f"group {g} "
        lines.append(f"{label}layers {_ranges(layers)}: {unit}")
    if plan.pre_tables or plan.post_tables:
        cost = plan_cost(plan)
        bounce = plan.transfer_strategy == "bounce"
        kind = "bounce: pack on P, copy staging, unpack on D" if bounce else plan.conv_strategy
        lines.append(f"local steps ({kind}): {cost.local_copies} copies, {cost.local_bytes:,} B; "
                     f"scratch {cost.scratch_bytes:,} B per {'span' if bounce else 'state block'}")
    for table in plan.tables:
        lines.extend(_rank(plan, table))
    return "\n".join(lines)


ROWS_SHOWN = 8  # per layer class; `plan.reads(rank)` (kvplan plan --rank R) has them all
CLASSES_SHOWN = 12  # per decode rank


def _rank(plan, table) -> list[str]:
    """One decode rank: its sources and totals, then each class of layers that read
    alike with the representative's rows (at most `ROWS_SHOWN`, then a count)."""
    sources = table.source_ranks
    cost = plan_cost(plan, table.dst_rank)
    # token layers count per span, state layers per state block: never one sum of both
    units = [f"{n} reads/{unit}, {b:,} B/{unit}" for n, b, unit in (
        (cost.attention_descriptors, cost.attention_bytes, "span"),
        (cost.state_descriptors, cost.state_bytes, "state block")) if n]
    lines = [f"D rank {table.dst_rank} <- P rank{'s' if len(sources) != 1 else ''} {_ranges(sources)}: "
             f"{len(np.unique(table.layer))} layers, {'; '.join(units) or 'no reads'}"
             + (f", {len(plan.post_tables[table.dst_rank])} local copies" if plan.post_tables else "")]
    classes = layer_classes(table)
    for layers, rows in classes[:CLASSES_SHOWN]:
        unit = "span" if plan.dst.model.layers[layers[0]].holds_tokens else "state block"
        lines.append(f"  {layer_runs(layers)} ({class_text(plan, layers)}): {len(rows)} read{'s' * (len(rows) != 1)} "
                     f"per {unit} each")
        for i in rows[:ROWS_SHOWN]:
            lines.append(f"    {row_label(plan, table, i):<14} P r{table.src_rank[i]} reg {table.src_region[i]} "
                         f"blk {table.src_block[i]} +{table.src_offset[i]} -> reg {table.dst_region[i]} "
                         f"blk {table.dst_block[i]} +{table.dst_offset[i]}  {table.nbytes[i]:,} B")
        if len(rows) > ROWS_SHOWN:
            lines.append(f"    ... {len(rows) - ROWS_SHOWN:,} more rows of layer {layers[0]} "
                         f"(plan.reads({table.dst_rank}) has them all)")
    if len(classes) > CLASSES_SHOWN:
        lines.append(f"  ... {len(classes) - CLASSES_SHOWN} more classes of layers")
    return lines
