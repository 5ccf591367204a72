"""Can two engines exchange state? Every check, with reasons instead of a hash mismatch.

`check_compatible(src, dst)` lists every difference at once: the same layers (each
field that decides bytes compared, names ignored: two deployments may label one model
differently), the same layer grouping (block lists are given per group) and, for state
layers, the same conv rows. `require_compatible` raises with all of them; the planner
runs it before anything else.
"""

from __future__ import annotations

import attrs

from ..errors import ModelMismatchError, SpecError
from ..spec.engine import EngineSpec


def check_compatible(src, dst) -> tuple[str, ...]:
    """Every difference between a prefill engine `src` and a decode engine `dst` that
    would decide bytes, each naming both sides' values; () when they can exchange state.
    Run it at startup: a topology mismatch then shows before serving, all at once.

    >>> from kvplan.spec import AttentionSpec, EngineSpec, ModelSpec
    >>> a = ModelSpec(name="a", layers=(AttentionSpec(8, 128),) * 2)
    >>> b = ModelSpec(name="b", layers=(AttentionSpec(8, 128, dtype="fp8"), AttentionSpec(8, 64)))
    >>> check_compatible(EngineSpec(model=a), EngineSpec(model=b))
    ("layer 0 (AttentionSpec) differs: dtype: prefill 'bfloat16' vs decode 'float8_e4m3fn'", 'layer 1 (AttentionSpec) differs: head_dim: prefill 128 vs decode 64')
    >>> check_compatible(EngineSpec(model=a, tp=2), EngineSpec(model=a, tp=8))     # TP may differ
    ()
    """
    if not isinstance(src, EngineSpec) or not isinstance(dst, EngineSpec):
        raise SpecError(f"check_compatible() takes two EngineSpec, got {type(src).__name__} and {type(dst).__name__}")
    return (*_model_differences(src, dst), *_group_differences(src, dst), *_state_differences(src, dst))


def require_compatible(src, dst) -> None:
    """Raise naming every difference `check_compatible` finds: `ModelMismatchError` when
    the models or their state rows differ, `SpecError` when only the grouping does."""
    model, groups, state = _model_differences(src, dst), _group_differences(src, dst), _state_differences(src, dst)
    found = (*model, *groups, *state)
    if not found:
        return
    text = found[0] if len(found) == 1 else f"prefill and decode engines differ in {len(found)} ways: " + \
        "; ".join(f"({i}) {d}" for i, d in enumerate(found, 1))
    raise (ModelMismatchError if model or state else SpecError)(text)


def check_same_model(src, dst) -> None:
    """Raise `ModelMismatchError` naming every layer and field where P and D differ."""
    _raise(ModelMismatchError, _model_differences(src, dst))


def check_same_groups(src, dst) -> None:
    """Block lists are given per group, so both engines must group layers alike."""
    _raise(SpecError, _group_differences(src, dst))


def check_same_state_geometry(src, dst) -> None:
    """State layers only pair when both sides keep the same conv rows."""
    _raise(ModelMismatchError, _state_differences(src, dst))


def _raise(error, found) -> None:
    if found:
        raise error("; ".join(found))


def _model_differences(src, dst) -> list[str]:
    src_model, dst_model = src.model, dst.model
    if src_model.num_layers != dst_model.num_layers:
        return [f"prefill model {src_model.name!r} has {src_model.num_layers} layers, "
                f"decode model {dst_model.name!r} has {dst_model.num_layers}"]
    found = []
    for index, (a, b) in enumerate(zip(src_model.layers, dst_model.layers, strict=True)):
        if a == b:
            continue
        if type(a) is not type(b):
            found.append(f"layer {index} is {type(a).__name__} on prefill but {type(b).__name__} on decode")
            continue
        diffs = [f"{f.name}: prefill {getattr(a, f.name)!r} vs decode {getattr(b, f.name)!r}"
                 for f in attrs.fields(type(a)) if getattr(a, f.name) != getattr(b, f.name)]
        found.append(f"layer {index} ({type(a).__name__}) differs: " + "; ".join(diffs))
    return found


def _group_differences(src, dst) -> list[str]:
    a = [tuple(x for x in g.layers if x is not None) for g in src.layer_groups]
    b = [tuple(x for x in g.layers if x is not None) for g in dst.layer_groups]
    return [] if a == b else [f"prefill and decode group layers differently: prefill groups {a}, decode groups {b}"]


def _state_differences(src, dst) -> list[str]:
    if src.num_speculative_tokens != dst.num_speculative_tokens and any(
            not spec.holds_tokens for spec in src.model.layers):
        return [f"conv state rows differ: prefill num_speculative_tokens={src.num_speculative_tokens}, "
                f"decode num_speculative_tokens={dst.num_speculative_tokens} (rows = conv_kernel - 1 + these)"]
    return []
