"""plan_tables(): every decode rank's reads of every layer, as `PlanTables`.

For every destination rank and layer the planner intersects what the rank holds with
what each source rank holds (`kvplan.planning.intersect`), rewrites state layers for
the conv strategy (`kvplan.planning.conv`), then binds the layer-relative rows to
region ids and stage ranks. Layers of one class (same spec, same block sizes on both
engines) share one template per decode TP rank, worked out once and bound to all the
class's layers in one vectorised pass, so an 80-layer model costs what one layer does
per rank; decode ranks that replicate one share of the heads share the intersection
itself (`layer_rows` memo).
"""

from __future__ import annotations

import numpy as np

from ..errors import SpecError
from ..layout.memory import EngineMemory, Region, engine_memory
from ..layout.state import state_natural_bytes
from ..spec.engine import EngineSpec
from ..spec.fingerprint import pair_fingerprint
from .budget import check_budget, check_rows
from .compat import require_compatible
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
    require_compatible(src, dst)
    src_mem, dst_mem = engine_memory(src), engine_memory(dst)
    check_budget(src_mem, dst_mem, conv_strategy)  # before any array is allocated
    # a layer class: layers whose layouts are equal on every rank of both engines (same
    # spec and block sizes), so they read by one template per decode TP rank
    layer_class = _layer_classes(src, dst)
    templates: dict[tuple[int, int], StrategyRows] = {}
    src_memos: dict = {}  # per source layout of a layer: what every decode rank asks of the sources
    rank_classes = []  # per decode rank: [(class, its layers on the rank's stage, template)]
    planned_rows = 0
    src_scratch_bytes: dict[int, tuple] = {}  # per layer: bytes per block of each scratch slot
    dst_scratch_bytes: dict[int, tuple] = {}
    for dst_rank in range(dst.world_size):
        stage, dst_tp_rank = divmod(dst_rank, dst.tp)
        first, last = dst.stage_layers[stage]
        classes = []
        for cls in dict.fromkeys(layer_class[first:last].tolist()):
            layers = first + np.flatnonzero(layer_class[first:last] == cls)
            key = (cls, dst_tp_rank)
            if key not in templates:
                templates[key] = _template(src, dst, src_mem, dst_mem, int(layers[0]), dst_tp_rank, conv_strategy,
                                           transfer_strategy, src_memos)
            rows = templates[key]
            classes.append((cls, layers, rows))
            planned_rows += (len(rows.reads) + len(rows.pre) + len(rows.post)) * len(layers)
            check_rows(planned_rows)  # as it grows: the binding below copies them all
            for layer in layers.tolist():
                _widen(src_scratch_bytes, layer, rows.src_scratch_bytes)
                _widen(dst_scratch_bytes, layer, rows.dst_scratch_bytes)
        rank_classes.append(classes)
    src_scratch = _scratch_regions(src, src_scratch_bytes, "to", transfer_strategy)
    dst_scratch = _scratch_regions(dst, dst_scratch_bytes, "from", transfer_strategy)
    src_scratch_id = _scratch_ids(src_scratch, len(src_mem.regions))
    dst_scratch_id = _scratch_ids(dst_scratch, len(dst_mem.regions))
    src_offset = np.array([src.stage_of(layer) * src.tp for layer in range(src.model.num_layers)], np.int64)
    slots: dict = {}  # per (class, side): region id of each slot, one row per layer of the class
    tables, pre_tables, post_tables = [], [], []
    for dst_rank, classes in enumerate(rank_classes):
        reads, pres, posts = [], [], []
        for cls, layers, rows in classes:
            src_slots = _class_slots(slots, (cls, "src", tuple(layers.tolist())), src_mem, layers, src_scratch_id)
            dst_slots = _class_slots(slots, (cls, "dst", tuple(layers.tolist())), dst_mem, layers, dst_scratch_id)
            reads.append(_bind(rows.reads, layers, src_offset[layers], src_slots, dst_slots))
            if len(rows.pre):
                pres.append(_bind(rows.pre, layers, src_offset[layers], src_slots, src_slots))
            if len(rows.post):
                posts.append(_bind(rows.post, layers, None, dst_slots, dst_slots, rank=dst_rank))
        tables.append(_by_layer(reads, dst_rank))
        pre_tables.append(_by_layer(pres, dst_rank))
        post_tables.append(_by_layer(posts, dst_rank))
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


def _layer_classes(src: EngineSpec, dst: EngineSpec) -> np.ndarray:
    """Per layer, the id of its class: layers with the same spec and the same block sizes
    on both engines have equal layouts on every rank (a layout is a function of those
    and of engine-wide settings), hence equal templates."""
    ids: dict = {}
    return np.array([ids.setdefault((spec, src.layer_block_tokens(layer), dst.layer_block_tokens(layer)), len(ids))
                     for layer, spec in enumerate(dst.model.layers)], np.int64)


def _template(src, dst, src_mem, dst_mem, layer: int, dst_tp_rank: int, conv_strategy: str, transfer_strategy: str,
              src_memos: dict) -> StrategyRows:
    """The rows decode TP rank `dst_tp_rank` reads for `layer` (and every layer of its
    class), rewritten for the conv and transfer strategies."""
    spec = dst.model.layers[layer]
    memo = src_memos.setdefault((spec, src_mem.layer_layout(layer, 0), src.layer_block_tokens(layer)), {})
    direct = layer_rows(src_mem, dst_mem, layer, dst_tp_rank, src_memo=memo)
    if spec.holds_tokens:
        rows = apply_strategy("direct", direct, 0, 0, dst_tp_rank, dst.tp)
    else:
        src_conv = state_natural_bytes(spec, src.tp, src.num_speculative_tokens)[0]
        dst_conv = state_natural_bytes(spec, dst.tp, dst.num_speculative_tokens)[0]
        rows = apply_strategy(conv_strategy, direct, src_conv, dst_conv, dst_tp_rank, dst.tp)
    if transfer_strategy == "bounce":
        rows = apply_bounce(rows, dst_tp_rank, dst.tp, src.tp)
    return rows


def _class_slots(cache: dict, key: tuple, memory: EngineMemory, layers: np.ndarray, scratch_ids: dict) -> np.ndarray:
    """Region id per template slot (columns) of each of `layers` (rows), scratch slots
    last so that slot -1 - k indexes the k-th scratch area from the end; the layers of
    one class have as many slots."""
    if key not in cache:
        cache[key] = np.array([[*memory.slot_regions[layer], *reversed(scratch_ids.get(layer, ()) or (-1,))]
                               for layer in layers.tolist()], np.int64)
    return cache[key]


def _bind(t: TemplateRows, layers: np.ndarray, rank_offset, src_slots: np.ndarray, dst_slots: np.ndarray,
          rank: int | None = None) -> dict:
    """A class's template rows for each of its `layers`, layer after layer, with region
    ids and stage ranks (`rank_offset` per layer; post steps: `rank`)."""
    n, count = len(t), len(layers)
    def tiled(column):
        return np.tile(column, count)

    return {
        "src_rank": np.full(n * count, rank, np.int64) if rank is not None else
        (t.src_rank[None, :] + rank_offset[:, None]).reshape(-1),
        "layer": np.repeat(layers, n),
        "component": tiled(t.component),
        "src_region": src_slots[:, t.src_slot].reshape(-1),
        "dst_region": dst_slots[:, t.dst_slot].reshape(-1),
        **{c: tiled(getattr(t, c)) for c in ("src_block", "dst_block", "src_offset", "dst_offset", "nbytes")},
    }


def _by_layer(parts: list[dict], dst_rank: int) -> ReadTable:
    """One rank's table: its classes' rows merged in layer order (stable: each layer's
    rows keep their template order)."""
    table = ReadTable.concat(parts, dst_rank=dst_rank)
    if len(parts) > 1:
        order = np.argsort(table.layer, kind="stable")
        table = ReadTable.from_columns({name: col[order] for name, col in table.columns().items()},
                                       dst_rank=dst_rank)
    return table


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
