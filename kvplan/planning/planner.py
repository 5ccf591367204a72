"""plan_tables(): every decode rank's reads of every layer, as `PlanTables`.

For every destination rank and layer the planner intersects what the rank holds with
what each source rank holds (`kvplan.planning.intersect`), rewrites state layers for
the conv strategy (`kvplan.planning.conv`), then binds the layer-relative rows to
region ids and stage ranks. Identical layers share one template, so an 80-layer
model costs a few templates.
"""

from __future__ import annotations

import numpy as np

from ..errors import SpecError
from ..layout.memory import EngineMemory, Region, engine_memory
from ..layout.state import state_natural_bytes
from ..spec.engine import EngineSpec
from ..spec.fingerprint import pair_fingerprint
from .budget import check_budget, check_rows
from .compat import check_compatible
from .bounce import TRANSFER_STRATEGIES, apply_bounce
from .conv import STRATEGIES, apply_strategy
from .intersect import layer_rows
from .plan_tables import PlanTables
from .tables import ReadTable, StrategyRows, TemplateRows


def plan_tables(src: EngineSpec, dst: EngineSpec, *, conv_strategy: str = "direct",
                transfer_strategy: str = "direct") -> PlanTables:
    """Plan every decode rank's reads from the prefill engine (see `kvplan.plan`).

    >>> from kvplan.spec import AttentionSpec, EngineSpec, ModelSpec
    >>> m = ModelSpec(name="m", layers=(AttentionSpec(num_kv_heads=8, head_dim=128),))
    >>> t = plan_tables(EngineSpec(model=m, tp=2), EngineSpec(model=m, tp=4)).reads(3)
    >>> [(int(t.src_rank[0]), int(t.src_offset[0]), int(t.nbytes[0]))]   # heads 6, 7: half of P rank 1
    [(1, 16384, 16384)]
    """
    if not isinstance(src, EngineSpec) or not isinstance(dst, EngineSpec):
        raise SpecError(f"plan() takes two EngineSpec, got {type(src).__name__} and {type(dst).__name__}")
    if not isinstance(conv_strategy, str) or conv_strategy not in STRATEGIES:
        raise SpecError(f"conv_strategy must be one of {', '.join(STRATEGIES)}, got {conv_strategy!r}")
    if not isinstance(transfer_strategy, str) or transfer_strategy not in TRANSFER_STRATEGIES:
        raise SpecError(f"transfer_strategy must be one of {', '.join(TRANSFER_STRATEGIES)} (or 'auto' in "
                        f"kvplan.plan), "
                        f"got {transfer_strategy!r}"[:300])
    if transfer_strategy == "bounce" and conv_strategy != "direct":
        raise SpecError(f"transfer_strategy 'bounce' packs every row, conv state included: it takes "
                        f"conv_strategy 'direct', got {conv_strategy!r}")
    check_compatible(src, dst)
    src_mem, dst_mem = engine_memory(src), engine_memory(dst)
    check_budget(src_mem, dst_mem, conv_strategy)  # before any array is allocated
    layer_parts: dict[tuple[int, int], StrategyRows] = {}
    templates: dict = {}
    src_memos: dict = {}  # per source layout of a layer: what every decode rank asks of the sources
    planned_rows = 0
    src_scratch_bytes: dict[int, tuple] = {}  # per layer: bytes per block of each scratch slot
    dst_scratch_bytes: dict[int, tuple] = {}
    for dst_rank in range(dst.world_size):
        stage, dst_tp_rank = divmod(dst_rank, dst.tp)
        for layer in range(*dst.stage_layers[stage]):
            spec = dst.model.layers[layer]
            key = (spec, dst_tp_rank, src_mem.layer_layout(layer, 0), dst_mem.layer_layout(layer, dst_tp_rank),
                   src.layer_block_tokens(layer), dst.layer_block_tokens(layer))
            if key not in templates:
                memo = src_memos.setdefault((spec, key[2], key[4]), {})
                direct = layer_rows(src_mem, dst_mem, layer, dst_tp_rank, src_memo=memo)
                if spec.holds_tokens:
                    templates[key] = apply_strategy("direct", direct, 0, 0, dst_tp_rank, dst.tp)
                else:
                    src_conv = state_natural_bytes(spec, src.tp, src.num_speculative_tokens)[0]
                    dst_conv = state_natural_bytes(spec, dst.tp, dst.num_speculative_tokens)[0]
                    templates[key] = apply_strategy(conv_strategy, direct, src_conv, dst_conv, dst_tp_rank, dst.tp)
                if transfer_strategy == "bounce":
                    templates[key] = apply_bounce(templates[key], dst_tp_rank, dst.tp, src.tp)
            rows = layer_parts[dst_rank, layer] = templates[key]
            planned_rows += len(rows.reads) + len(rows.pre) + len(rows.post)
            check_rows(planned_rows)  # as it grows: the binding below copies them all
            _widen(src_scratch_bytes, layer, rows.src_scratch_bytes)
            _widen(dst_scratch_bytes, layer, rows.dst_scratch_bytes)
    src_scratch = _scratch_regions(src, src_scratch_bytes, "to", transfer_strategy)
    dst_scratch = _scratch_regions(dst, dst_scratch_bytes, "from", transfer_strategy)
    src_scratch_id = _scratch_ids(src_scratch, len(src_mem.regions))
    dst_scratch_id = _scratch_ids(dst_scratch, len(dst_mem.regions))
    tables, pre_tables, post_tables = [], [], []
    for dst_rank in range(dst.world_size):
        stage, _ = divmod(dst_rank, dst.tp)
        reads, pres, posts = [], [], []
        for layer in range(*dst.stage_layers[stage]):
            rows = layer_parts[dst_rank, layer]
            src_slots = _slot_regions(src_mem, layer, src_scratch_id.get(layer, ()))
            dst_slots = _slot_regions(dst_mem, layer, dst_scratch_id.get(layer, ()))
            offset = src.stage_of(layer) * src.tp
            reads.append(_bind(rows.reads, layer, offset, src_slots, dst_slots))
            if len(rows.pre):
                pres.append(_bind(rows.pre, layer, offset, src_slots, src_slots))
            if len(rows.post):
                posts.append(_bind(rows.post, layer, None, dst_slots, dst_slots, rank=dst_rank))
        tables.append(ReadTable.concat(reads, dst_rank=dst_rank))
        pre_tables.append(ReadTable.concat(pres, dst_rank=dst_rank))
        post_tables.append(ReadTable.concat(posts, dst_rank=dst_rank))
    with_steps = (conv_strategy, transfer_strategy) != ("direct", "direct") and (
        src_scratch or dst_scratch or any(len(t) for t in pre_tables))
    strategy = (conv_strategy,) if transfer_strategy == "direct" else (conv_strategy, transfer_strategy)
    return PlanTables(
        src=src, dst=dst, tables=tuple(tables), conv_strategy=conv_strategy, transfer_strategy=transfer_strategy,
        src_regions=src_mem.regions + src_scratch, dst_regions=dst_mem.regions + dst_scratch,
        fingerprint=pair_fingerprint(src, dst, *strategy),
        pre_tables=tuple(pre_tables) if with_steps else (), post_tables=tuple(post_tables) if with_steps else (),
    )


def _widen(sizes: dict[int, tuple], layer: int, more: tuple) -> None:
    """Scratch bytes per slot of `layer`: the largest any decode rank asks for."""
    if more:
        have = sizes.get(layer, ())
        width = max(len(have), len(more))
        have, more = (tuple(x) + (0,) * (width - len(x)) for x in (have, more))
        sizes[layer] = tuple(max(a, b) for a, b in zip(have, more, strict=True))


def _scratch_ids(regions: tuple[Region, ...], first_id: int) -> dict[int, tuple]:
    """Per layer: the region id of each scratch slot (slot -1 first; -1 where unused)."""
    ids: dict[int, list] = {}
    for i, r in enumerate(regions):
        k = -1 - r.slot
        slots = ids.setdefault(r.layer, [])
        slots.extend([-1] * (k + 1 - len(slots)))
        slots[k] = first_id + i
    return {layer: tuple(v) for layer, v in ids.items()}


def _slot_regions(memory: EngineMemory, layer: int, scratch_ids: tuple) -> np.ndarray:
    """Region id per template slot of `layer`, scratch slots last so that slot -1 - k
    indexes the k-th scratch area from the end."""
    return np.array([*memory.slot_regions[layer], *reversed(scratch_ids or (-1,))], np.int64)


def _bind(t: TemplateRows, layer: int, rank_offset, src_slots, dst_slots, rank: int | None = None) -> dict:
    """A layer's template rows with region ids and stage ranks (post steps: `rank`)."""
    n = len(t)
    return {
        "src_rank": np.full(n, rank, np.int64) if rank is not None else t.src_rank + rank_offset,
        "layer": np.full(n, layer, np.int64),
        "component": t.component,
        "src_region": src_slots[t.src_slot],
        "dst_region": dst_slots[t.dst_slot],
        **{c: getattr(t, c) for c in ("src_block", "dst_block", "src_offset", "dst_offset", "nbytes")},
    }


def _scratch_regions(engine: EngineSpec, sizes: dict[int, tuple], peer: str, transfer_strategy: str
                     ) -> tuple[Region, ...]:
    """Per-request scratch regions (a block or span each, indexed by request position):
    a conv strategy's one per layer, bounce staging per layer and peer TP rank (`peer`
    says which way: "to" decode ranks on the source side, "from" source ranks on the
    destination)."""
    def name(layer: int, k: int) -> str:
        if transfer_strategy == "bounce":
            return f"bounce.layers.{layer}.{peer}.{k}"
        return f"scratch.layers.{layer}"

    return tuple(Region(name=name(layer, k), layer=layer, slot=-1 - k, stage=engine.stage_of(layer),
                        block_bytes=size, layers=(layer,), per_request=True)
                 for layer, per_slot in sorted(sizes.items()) for k, size in enumerate(per_slot) if size)
