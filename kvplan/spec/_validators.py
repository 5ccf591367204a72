"""Shared attrs validators. Messages name the field and quote the value."""

from __future__ import annotations

import itertools
import numbers
from collections.abc import Iterable, Mapping, Set

import attrs

from ..errors import SpecError
from .limits import Limit, check_count


def plain_int(value):
    """A numpy (or any other) integer as a Python int, so `np.int64(2)` and `2` make equal
    specs with equal fingerprints; anything else unchanged, for the validator to judge."""
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        return int(value)
    return value


def _name(instance, attribute) -> str:
    return f"{type(instance).__name__}.{attribute.name}"


def positive(instance, attribute, value) -> None:
    """A positive int (bool refused)."""
    check_count(value, _name(instance, attribute))


def optional_positive(instance, attribute, value) -> None:
    """None or a positive int."""
    if value is not None:
        positive(instance, attribute, value)


def non_negative(instance, attribute, value) -> None:
    """An int >= 0 (bool refused)."""
    check_count(value, _name(instance, attribute), minimum=0)


def at_most(limit, check=positive):
    """`check` (positive by default), then no larger than `limit` (a `kvplan.spec.limits.Limit`)."""

    def validate(instance, attribute, value) -> None:
        check(instance, attribute, value)
        if value is not None:
            limit.check(value, _name(instance, attribute))

    return validate


def int_field(limit, check=positive, **kwargs):
    """An attrs field holding an int: numpy integers become ints (`plain_int`), then
    `at_most(limit, check)` judges the value."""
    return attrs.field(converter=plain_int, validator=at_most(limit, check), **kwargs)


def boolean(instance, attribute, value) -> None:
    """True or False only: a string such as "False" is truthy and would flip the meaning."""
    if not isinstance(value, bool):
        raise SpecError(f"{_name(instance, attribute)} must be True or False, got {value!r}"[:300])


def one_of(*choices: str):
    """One of `choices` (the message lists them)."""

    def check(instance, attribute, value) -> None:
        if not isinstance(value, str) or value not in choices:
            raise SpecError(
                f"{_name(instance, attribute)} must be one of {', '.join(map(repr, choices))}, got {value!r}"[:300]
            )

    return check


def bounded_tuple(value, limit: Limit, what: str) -> tuple:
    """`value` (any iterable but a string or a mapping) as a tuple of at most `limit`
    items; reads one past the limit and no further, so an endless iterator cannot hang.

    >>> three = Limit("THREE", 3, "an example")
    >>> bounded_tuple(range(3), three, "layers")
    (0, 1, 2)
    >>> bounded_tuple(iter(int, 1), three, "layers")     # endless
    Traceback (most recent call last):
    ...
    kvplan.errors.SpecError: layers is at least 4, over kvplan's limit THREE = 3 (an example)
    >>> bounded_tuple("abc", three, "layers")
    Traceback (most recent call last):
    ...
    kvplan.errors.SpecError: layers must be a sequence, got 'abc'
    """
    if isinstance(value, (str, bytes, bytearray, Mapping, Set)) or not isinstance(value, Iterable):
        # strings and mappings iterate as something else; sets have no order
        raise SpecError(f"{what} must be a sequence, got {value!r}"[:300])
    try:
        items = tuple(itertools.islice(value, limit.value + 1))
    except TypeError as error:
        raise SpecError(f"{what} must be a sequence, got {type(value).__name__}: {error}") from None
    if len(items) > limit.value:
        sized = hasattr(value, "__len__")
        raise limit.error(len(value) if sized else len(items), what, at_least=not sized)
    return items
