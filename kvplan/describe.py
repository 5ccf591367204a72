"""Human-readable rendering of a plan: one paragraph per decode rank."""

from __future__ import annotations

import numpy as np

from .table import COMPONENTS


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
    return (f"{label}: tp={engine.tp} pp={engine.pp} block={engine.block_tokens}{kernel} "
            f"layout={engine.kv_layout}/{engine.kv_storage}")


def describe(plan) -> str:
    """Summary of `plan`, e.g. for Llama-3.1-70B P tp=2 -> D tp=8::

        D rank 5 <- P rank 2: 80 layers, 160 reads/span, 655,360 B/span
          layer 0: K @+16384 16384 B -> +0 ...
    """
    src, dst = plan.src, plan.dst
    lines = [
        f"model {dst.model.name}: {dst.model.num_layers} layers",
        _engine_line("prefill", src),
        _engine_line("decode ", dst),
        f"span: {plan.span_tokens} tokens = {plan.src_blocks_per_span} prefill block(s) = "
        f"{plan.dst_blocks_per_span} decode block(s)",
    ]
    for table in plan.tables:
        sources = table.source_ranks
        lines.append(
            f"D rank {table.dst_rank} <- P rank{'s' if len(sources) != 1 else ''} {_ranges(sources)}: "
            f"{len(np.unique(table.layer))} layers, {len(table)} reads/span, {table.total_bytes:,} B/span"
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
