"""Reading a decode rank's reads back as a person would: classes of layers that read alike,
what each row holds, and which prefill ranks hold the same bytes. `describe` and
`plan_picture` both speak through these, so the text and the picture say the same.

>>> from kvplan import AttentionSpec, EngineSpec, ModelSpec, plan
>>> m = ModelSpec(name="m", layers=(AttentionSpec(num_kv_heads=4, head_dim=64),) * 3)
>>> p = plan(EngineSpec(model=m, tp=2), EngineSpec(model=m, tp=4))
>>> t = p.reads(3)
>>> [(layers, len(rows)) for layers, rows in layer_classes(t)], row_label(p, t, 0), replicas(p, t, 0)
([([0, 1, 2], 1)], 'KV h3', [1])
>>> layer_runs([0, 1, 2, 3, 8])
'layers 0-3, 8'
"""

from __future__ import annotations

import functools
from collections import Counter

import numpy as np

from ..layout import engine_memory
from ..planning.ranges import consecutive_runs
from ..spec.components import COMPONENTS

_SAME = ("src_rank", "component", "src_block", "dst_block", "src_offset", "dst_offset", "nbytes")


def layer_classes(table) -> list[tuple[list[int], np.ndarray]]:
    """(layers, row indices of the first of them) per class of layers with equal rows
    (block-relative: region ids aside), classes in order of their first layer."""
    found: dict[bytes, tuple[list[int], np.ndarray]] = {}
    if not len(table):
        return []
    columns = np.stack([getattr(table, name) for name in _SAME], axis=1)
    order = np.argsort(table.layer, kind="stable")
    layers, starts = np.unique(table.layer[order], return_index=True)
    for layer, rows in zip(layers, np.split(order, starts[1:]), strict=True):
        key = bytes(np.ascontiguousarray(columns[rows], np.int64))
        found.setdefault(key, ([], rows))[0].append(int(layer))
    return list(found.values())


@functools.lru_cache(maxsize=4096)
def _cells(engine, layer: int, tp_rank: int, name: str):
    """(held, cell_bytes, per held index its cell offsets) of a component on a rank, or None."""
    comp = next((c for c in engine_memory(engine).layer_layout(layer, tp_rank).components if c.component == name), None)
    if comp is None or not isinstance(comp.layout.shape[0], int):
        return None
    count = comp.held[1] - comp.held[0]
    return comp.held, comp.cell_bytes, tuple(comp.layout.restrict(0, h, h + 1).offsets() for h in range(count))


@functools.lru_cache(maxsize=1024)
def _names(engine, layer: int, tp_rank: int) -> tuple[str, ...]:
    return tuple(c.component for c in engine_memory(engine).layer_layout(layer, tp_rank).components)


def row_label(plan, table, i: int) -> str:
    """The row's component and the heads (h) or channels (ch) it holds, as the decode page
    has them: "K h3", "KV h0-1", "conv_x ch 0-511"; a run across components names each."""
    name = COMPONENTS[int(table.component[i])]
    layer, rank = int(table.layer[i]), int(table.dst_rank) % plan.dst.tp
    start = int(table.dst_offset[i])
    stop = start + int(table.nbytes[i])
    parts = {}
    for part in (_names(plan.dst, layer, rank) if name in ("KV", "mixed") else (name,)):
        cells = _cells(plan.dst, layer, rank, part)
        if cells is None or part == "latent":  # an MLA latent is one replicated vector per token
            continue
        (first, _), cell_bytes, offsets = cells
        covered = [first + h for h, at in enumerate(offsets) if ((at < stop) & (at + cell_bytes > start)).any()]
        if covered:
            unit = "h" if part in ("K", "V", "ssm") else "ch "
            parts[part] = f"{unit}{covered[0]}" if len(covered) == 1 else f"{unit}{covered[0]}-{covered[-1]}"
    if len(set(parts.values())) == 1 and name in ("KV", "mixed"):
        return f"{name} {next(iter(parts.values()))}"
    if name in ("KV", "mixed") and parts:
        return ", ".join(f"{part} {held}" for part, held in parts.items())
    return f"{name} {parts[name]}" if name in parts else name


def replicas(plan, table, i: int) -> list[int]:
    """Prefill ranks of the row's stage holding the same part of its component."""
    name = COMPONENTS[int(table.component[i])]
    layer, source = int(table.layer[i]), int(table.src_rank[i])
    stage, tp = source // plan.src.tp, plan.src.tp
    if name in ("KV", "mixed"):  # a run across components: its first one is sharded like the rest
        name = _names(plan.src, layer, source % tp)[0]
    held = {stage * tp + t: (c[0] if (c := _cells(plan.src, layer, t, name)) is not None else None) for t in range(tp)}
    mine = held[source]
    return [r for r, h in held.items() if mine is not None and h == mine]


def layer_runs(layers) -> str:
    """'layers 0-3, 8' for [0, 1, 2, 3, 8] (at most six runs, then '...')."""
    runs = consecutive_runs(layers)
    text = ", ".join(f"{a}" if a == b else f"{a}-{b}" for a, b in runs[:6]) + (", ..." if len(runs) > 6 else "")
    return f"layer{'s' * (len(layers) > 1)} {text}"


def layer_text(spec) -> str:
    """What a layer holds, for a person: "attention 8 x 128 bfloat16", "MLA latent 576
    bfloat16", "mamba2 64 heads, conv bfloat16, ssm float32"."""
    if spec.holds_tokens:
        if spec.mla:
            return f"MLA latent {spec.head_dim} {spec.dtype}"
        return f"attention {spec.num_kv_heads} x {spec.head_dim} {spec.dtype}"
    heads = getattr(spec, "num_heads", None) or getattr(spec, "num_v_heads", None)
    ssm = getattr(spec, "ssm_dtype", None)  # a short conv keeps conv state only
    return f"{spec.kind}{f' {heads} heads' if heads else ''}, conv {spec.conv_dtype}" + (f", ssm {ssm}" if ssm else "")


def class_text(plan, layers) -> str:
    """The layers of a class by what they hold, with their windows: "52 attention 16 x 128
    bfloat16; 10 global, 52 with window 1,024"."""
    specs = [plan.dst.model.layers[layer] for layer in layers]
    text = ", ".join(f"{count} {what}" for what, count in Counter(layer_text(spec) for spec in specs).items())
    windows = Counter(getattr(spec, "sliding_window", None) for spec in specs)
    if any(windows):  # a window decides which blocks a request reads, not a span's rows: alike layers share
        text += "; " + ", ".join(f"{count} with window {w:,}" if w else f"{count} global"
                                 for w, count in sorted(windows.items(), key=lambda kv: kv[0] or 0))
    return text
