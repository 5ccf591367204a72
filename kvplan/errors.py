"""Error types. Every input problem raises a subclass of `KvplanError` (a `ValueError`)
whose message quotes the offending values, so the message alone reproduces the problem."""

from __future__ import annotations


class KvplanError(ValueError):
    """Base of every error kvplan raises for bad input or an incorrect plan.

    >>> from kvplan import EngineSpec, ModelSpec, AttentionSpec
    >>> try:
    ...     EngineSpec(model=ModelSpec(name="m", layers=(AttentionSpec(8, 128),)), tp=3)
    ... except KvplanError as error:
    ...     print(type(error).__name__, error)
    ShardingError 8 KV heads of layer 0 cannot be split over TP 3: 8 % 3 = 2
    """


class SpecError(KvplanError):
    """A model, layer or engine spec holds a value that cannot describe real memory
    (non-positive size, unknown dtype or layout, inconsistent block sizes)."""


class ShardingError(KvplanError):
    """A TP size cannot shard a layer: heads (or channels, groups) do not divide."""


class ModelMismatchError(KvplanError):
    """Prefill and decode engines describe different models (layer count, heads,
    head dims, dtypes, state shapes)."""


class BlockError(KvplanError):
    """Block ids handed to `lower()` are out of range, of unequal token coverage, or
    otherwise cannot be paired."""


class PlanError(KvplanError):
    """`verify()` found a plan that does not reproduce the destination bytes.

    `problems` lists one line per defect (layer, rank, offsets)."""

    def __init__(self, message: str, problems: tuple[str, ...] = ()):
        super().__init__(message)
        self.problems = problems


class RankError(KvplanError):
    """A rank number is outside the engine's world (stage * tp + tp_rank)."""


class PlanMismatchError(KvplanError):
    """A Transfer was handed to a backend prepared for another plan or another decode
    rank (its plan fingerprint or rank differs), so its offsets describe other memory."""


class BoundsError(KvplanError):
    """A row names memory outside what was registered (negative offset or length,
    unknown region, or past the end of a region), so no transport may execute it."""
