"""Fingerprints: a stable digest of everything in an engine spec that decides bytes.

Two engines with equal fingerprints lay out every byte alike, in any process and on any
host (the digest is of the specs' canonical text, not Python's salted `hash`). A model's
name is left out: two deployments may label one model differently. `RULES` names the
version of kvplan's byte rules, so a plan made under other rules never passes for this one.

>>> from kvplan.spec import AttentionSpec, EngineSpec, ModelSpec
>>> a = EngineSpec(model=ModelSpec(name="a", layers=(AttentionSpec(8, 128),)), tp=2)
>>> b = EngineSpec(model=ModelSpec(name="b", layers=(AttentionSpec(8, 128),)), tp=2)
>>> fingerprint(a) == fingerprint(b), fingerprint(a) == fingerprint(EngineSpec(model=a.model, tp=4))
(True, False)
>>> len(fingerprint(a))
16
"""

from __future__ import annotations

import functools
import hashlib

import attrs

from ..errors import SpecError
from .engine import EngineSpec

RULES = "kvplan-rules-1"


def _text(engine) -> str:
    return repr(attrs.evolve(engine, model=attrs.evolve(engine.model, name="")))


def fingerprint(engine) -> str:
    """16 hex digits identifying `engine`'s byte layout (see the module docstring)."""
    if not isinstance(engine, EngineSpec):
        raise SpecError(f"fingerprint takes an EngineSpec, got {type(engine).__name__}")
    return _digest(engine)


# engines are frozen values: a serving loop that fingerprints the same engines request
# after request (PlanCache) pays the repr and hash once per engine value
@functools.lru_cache(maxsize=1024)
def _digest(engine) -> str:
    return hashlib.sha256(f"{RULES}\n{_text(engine)}".encode()).hexdigest()[:16]


def pair_fingerprint(src, dst, *detail: str) -> str:
    """16 hex digits identifying a pair of engines (and any further choices, such as a
    conv strategy): what a plan, and every Transfer lowered from it, carries.

    >>> from kvplan.spec import AttentionSpec, EngineSpec, ModelSpec
    >>> e = EngineSpec(model=ModelSpec(name="m", layers=(AttentionSpec(8, 128),)))
    >>> pair_fingerprint(e, e, "direct") != pair_fingerprint(e, e, "staged")
    True
    """
    text = "\n".join((RULES, _text(src), _text(dst), *detail))
    return hashlib.sha256(text.encode()).hexdigest()[:16]
