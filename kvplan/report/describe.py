"""Human-readable rendering of a plan: one paragraph per decode rank."""

from __future__ import annotations

import numpy as np

from ..layout.memory import engine_memory
from ..spec.components import COMPONENTS
from .cost import check_plan, plan_cost


def _ranges(values) -> str:
    """Compact ranges: [0, 1, 2, 5] -> '0-2,5'."""
    values = sorted(set(int(v) for v in values))
    out, start = [], None
    for i, v in enumerate(values):
        if start is None:
            start = v
        if i + 1 == len(values) or values[i + 1] != v + 1:
            out.append(f"{start}" if start == v else f"{start}-{v}")
            start = None
    return ",".join(out)


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
    source ranks, reads and bytes with the first layer's rows.

    >>> from kvplan.planning import plan_tables
    >>> from kvplan.spec import AttentionSpec, EngineSpec, ModelSpec
    >>> m = ModelSpec(name="m", layers=(AttentionSpec(num_kv_heads=8, head_dim=128),) * 80)
    >>> for line in describe(plan_tables(EngineSpec(model=m, tp=2), EngineSpec(model=m, tp=8))).splitlines()[:8]:
    ...     print(line)
    model m: 80 layers
    prefill: tp=2 pp=1 block=16 layout=HND/packed
    decode : tp=8 pp=1 block=16 layout=HND/packed
    layers 0-79: span 16 tokens = 1 prefill block(s) = 1 decode block(s)
    D rank 0 <- P rank 0: 80 layers, 80 reads/span, 655,360 B/span
      layer 0     KV: P r0 reg 0 blk 0 +0 -> reg 0 blk 0 +0  8192 B
    D rank 1 <- P rank 0: 80 layers, 80 reads/span, 655,360 B/span
      layer 0     KV: P r0 reg 0 blk 0 +8192 -> reg 0 blk 0 +0  8192 B
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
        sources = table.source_ranks
        lines.append(
            f"D rank {table.dst_rank} <- P rank{'s' if len(sources) != 1 else ''} {_ranges(sources)}: "
            f"{len(np.unique(table.layer))} layers, {len(table)} reads/span, {table.total_bytes:,} B/span"
            + (f", {len(plan.post_tables[table.dst_rank])} local copies" if plan.post_tables else "")
        )
        # show the first layer's rows as the representative pattern
        if len(table):
            first = table.layer[0]
            for i in np.flatnonzero(table.layer == first)[:8]:
                lines.append(
                    f"  layer {first} {COMPONENTS[table.component[i]]:>6}: P r{table.src_rank[i]} "
                    f"reg {table.src_region[i]} blk {table.src_block[i]} +{table.src_offset[i]} -> "
                    f"reg {table.dst_region[i]} blk {table.dst_block[i]} +{table.dst_offset[i]}  {table.nbytes[i]} B"
                )
    return "\n".join(lines)
