"""Shared attrs validators. Messages name the field and quote the value."""

from __future__ import annotations

from ..errors import SpecError


def positive(instance, attribute, value) -> None:
    """A positive int (bool refused)."""
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise SpecError(f"{type(instance).__name__}.{attribute.name} must be a positive int, got {value!r}")


def optional_positive(instance, attribute, value) -> None:
    """None or a positive int."""
    if value is not None:
        positive(instance, attribute, value)


def non_negative(instance, attribute, value) -> None:
    """An int >= 0 (bool refused)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise SpecError(f"{type(instance).__name__}.{attribute.name} must be an int >= 0, got {value!r}")


def one_of(*choices: str):
    """One of `choices` (the message lists them)."""

    def check(instance, attribute, value) -> None:
        if value not in choices:
            raise SpecError(
                f"{type(instance).__name__}.{attribute.name} must be one of {', '.join(map(repr, choices))}, got {value!r}"
            )

    return check
