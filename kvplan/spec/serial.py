"""Engine specs as JSON: what two processes (or hosts) exchange at startup.

`engine_to_json(engine)` writes every field of an `EngineSpec` (its model's layers
tagged by kind, its layer groups) under a schema version; `engine_from_json(text)`
builds the same value back, through the specs' own validators, so a malformed or
foreign document ends in a `SpecError` naming what is wrong. A loaded engine equals the
original and has the same `fingerprint`.

Schema ``kvplan.engine/1`` (docs/json.md describes it field by field): an object with
``schema``, every `EngineSpec` field by name (``model`` an object with ``name``,
``layers``, ``model_layers`` and ``num_model_layers``, each layer an object with ``kind``, a layer spec's class name
(`kvplan.spec.LAYER_SPECS`), and that spec's fields; ``groups`` null or a list of
objects with `LayerGroup`'s fields).

>>> from kvplan.spec import AttentionSpec, EngineSpec, ModelSpec
>>> e = EngineSpec(model=ModelSpec(name="m", layers=(AttentionSpec(8, 128),)), tp=2)
>>> engine_from_json(engine_to_json(e)) == e
True
>>> engine_from_json('{"schema": "kvplan.engine/9"}')
Traceback (most recent call last):
...
kvplan.errors.SpecError: engine JSON has schema 'kvplan.engine/9'; this kvplan reads 'kvplan.engine/1'
"""

from __future__ import annotations

import json

import attrs

from ..errors import KvplanError, SpecError
from .engine import EngineSpec
from .groups import LayerGroup
from .layers import LAYER_SPECS
from .model import ModelSpec

SCHEMA = "kvplan.engine/1"
LAYER_KINDS = {cls.__name__: cls for cls in LAYER_SPECS}


def _fields(value) -> dict:
    return {f.name: getattr(value, f.name) for f in attrs.fields(type(value))}


def engine_to_json(engine: EngineSpec) -> str:
    """`engine` as a JSON document of schema `SCHEMA` (module docstring)."""
    if not isinstance(engine, EngineSpec):
        raise SpecError(f"engine_to_json takes an EngineSpec, got {type(engine).__name__}")
    out = _fields(engine)
    out["model"] = model_document(engine.model)
    out["groups"] = None if engine.groups is None else [_fields(g) for g in engine.groups]
    return json.dumps({"schema": SCHEMA, **out}, sort_keys=True)


def model_document(model: ModelSpec) -> dict:
    """A model as the JSON object an engine document holds (``name``, ``layers`` tagged by
    kind, ``model_layers``, ``num_model_layers``); `model_from_document` reads it back.

    >>> from kvplan.spec import AttentionSpec
    >>> m = ModelSpec(name="m", layers=(AttentionSpec(8, 128),))
    >>> model_from_document(model_document(m)) == m
    True
    """
    if not isinstance(model, ModelSpec):
        raise SpecError(f"model_document takes a ModelSpec, got {type(model).__name__}")
    return {"name": model.name,
            "layers": [{"kind": type(layer).__name__, **_fields(layer)} for layer in model.layers],
            "model_layers": None if model.model_layers is None else list(model.model_layers),
            "num_model_layers": model.num_model_layers}


def model_from_document(model) -> ModelSpec:
    """The `ModelSpec` of a `model_document` object, built through the specs' validators."""
    if not isinstance(model, dict) or not isinstance(model.get("layers"), list):
        raise SpecError("model JSON: a model must be an object with a 'layers' list")
    try:
        layers = []
        for i, layer in enumerate(model["layers"]):
            kind = layer.get("kind") if isinstance(layer, dict) else None
            if kind not in LAYER_KINDS:
                raise SpecError(f"model JSON: layer {i} has kind {kind!r}; kinds are {', '.join(LAYER_KINDS)}"[:300])
            layers.append(LAYER_KINDS[kind](**{k: v for k, v in layer.items() if k != "kind"}))
        return ModelSpec(**{**model, "layers": tuple(layers)})
    except KvplanError:
        raise
    except (TypeError, ValueError, AttributeError) as error:  # unknown or missing fields, wrong shapes
        raise SpecError(f"model JSON does not describe a ModelSpec: {error}"[:300]) from None


def load_document(text, schema: str, what: str, call: str) -> dict:
    """A kvplan JSON document of `schema` parsed into a dict; anything else (not text,
    no JSON, not an object, another schema) ends in a `SpecError` naming `what`."""
    if not isinstance(text, (str, bytes, bytearray)):
        raise SpecError(f"{call} takes a JSON string, got {type(text).__name__}")
    try:
        doc = json.loads(text)
    except (ValueError, RecursionError) as error:
        raise SpecError(f"{what} JSON does not parse: {error}"[:300]) from None
    if not isinstance(doc, dict):
        raise SpecError(f"{what} JSON must be an object, got {type(doc).__name__}")
    if doc.get("schema") != schema:
        raise SpecError(f"{what} JSON has schema {doc.get('schema')!r}; this kvplan reads {schema!r}"[:300])
    return doc


def engine_from_json(text: str) -> EngineSpec:
    """The `EngineSpec` of a document `engine_to_json` wrote (module docstring)."""
    doc = load_document(text, SCHEMA, "engine", "engine_from_json")
    try:
        fields = {k: v for k, v in doc.items() if k != "schema"}
        fields["model"] = model_from_document(fields.get("model"))
        if fields.get("groups") is not None:
            if not isinstance(fields["groups"], list) or not all(isinstance(g, dict) for g in fields["groups"]):
                raise SpecError("engine JSON: 'groups' must be null or a list of objects")
            fields["groups"] = tuple(LayerGroup(**g) for g in fields["groups"])
        return EngineSpec(**fields)
    except KvplanError:
        raise
    except (TypeError, ValueError, AttributeError) as error:  # unknown or missing fields, wrong shapes
        raise SpecError(f"engine JSON does not describe an EngineSpec: {error}"[:300]) from None
