"""Can two engines exchange state? Every check, with reasons instead of a hash mismatch.

`check_compatible(src, dst)` runs them all before planning: the same layers (each
field that decides bytes compared, names ignored: two deployments may label one model
differently), the same layer grouping (block lists are given per group) and, for state
layers, the same conv rows.
"""

from __future__ import annotations

import attrs

from ..errors import ModelMismatchError, SpecError


def check_compatible(src, dst) -> None:
    """Raise `ModelMismatchError` or `SpecError` naming the first difference between
    a prefill engine `src` and a decode engine `dst` that would decide bytes.

    >>> from kvplan.spec import AttentionSpec, EngineSpec, ModelSpec
    >>> a = ModelSpec(name="a", layers=(AttentionSpec(8, 128),))
    >>> b = ModelSpec(name="b", layers=(AttentionSpec(8, 128, dtype="fp8"),))
    >>> check_compatible(EngineSpec(model=a), EngineSpec(model=b))
    Traceback (most recent call last):
    ...
    kvplan.errors.ModelMismatchError: layer 0 (AttentionSpec) differs: dtype: prefill 'bfloat16' vs decode 'float8_e4m3fn'
    """
    check_same_model(src, dst)
    check_same_groups(src, dst)
    check_same_state_geometry(src, dst)


def check_same_model(src, dst) -> None:
    """Raise `ModelMismatchError` naming the first layer and field where P and D differ
    (see `check_compatible`)."""
    src_model, dst_model = src.model, dst.model
    if src_model.num_layers != dst_model.num_layers:
        raise ModelMismatchError(
            f"prefill model {src_model.name!r} has {src_model.num_layers} layers, "
            f"decode model {dst_model.name!r} has {dst_model.num_layers}"
        )
    for index, (a, b) in enumerate(zip(src_model.layers, dst_model.layers, strict=True)):
        if a == b:
            continue
        if type(a) is not type(b):
            raise ModelMismatchError(
                f"layer {index} is {type(a).__name__} on prefill but {type(b).__name__} on decode"
            )
        diffs = [
            f"{f.name}: prefill {getattr(a, f.name)!r} vs decode {getattr(b, f.name)!r}"
            for f in attrs.fields(type(a))
            if getattr(a, f.name) != getattr(b, f.name)
        ]
        raise ModelMismatchError(f"layer {index} ({type(a).__name__}) differs: " + "; ".join(diffs))


def check_same_groups(src, dst) -> None:
    """Block lists are given per group, so both engines must group layers alike (see
    `check_compatible`)."""
    a = [tuple(x for x in g.layers if x is not None) for g in src.layer_groups]
    b = [tuple(x for x in g.layers if x is not None) for g in dst.layer_groups]
    if a != b:
        raise SpecError(f"prefill and decode group layers differently: prefill groups {a}, decode groups {b}")


def check_same_state_geometry(src, dst) -> None:
    """State layers only pair when both sides keep the same conv rows (see
    `check_compatible`)."""
    if src.num_speculative_tokens != dst.num_speculative_tokens and any(
            not spec.holds_tokens for spec in src.model.layers):
        raise ModelMismatchError(
            f"conv state rows differ: prefill num_speculative_tokens={src.num_speculative_tokens}, "
            f"decode num_speculative_tokens={dst.num_speculative_tokens} (rows = conv_kernel - 1 + these)"
        )
