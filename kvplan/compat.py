"""Can two engines exchange state? Readable reasons instead of a hash mismatch."""

from __future__ import annotations

import attrs

from .errors import ModelMismatchError


def check_same_model(src, dst) -> None:
    """Raise `ModelMismatchError` naming the first layer and field where P and D differ.

    Names are not compared (two deployments may label one model differently); every
    value that decides bytes is.
    """
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
