"""Engine specs through JSON (`kvplan.spec.serial`): what comes back equals what went in,
has the same fingerprint, and plans alike; a damaged document ends in a KvplanError."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kvplan import KvplanError, SpecError, engine_from_json, engine_to_json, fingerprint, plan
from kvplan.testing.strategies import engine_pairs, hybrid_engine_pairs


@given(st.one_of(engine_pairs(), hybrid_engine_pairs()))
def test_engines_round_trip_through_json(pair):
    for engine in pair:
        text = engine_to_json(engine)
        back = engine_from_json(text)
        assert back == engine and fingerprint(back) == fingerprint(engine)
        assert engine_to_json(back) == text  # one canonical text
    src, dst = (engine_from_json(engine_to_json(e)) for e in pair)
    try:
        expected = plan(*pair).fingerprint
    except KvplanError:
        return
    assert plan(src, dst).fingerprint == expected


@settings(max_examples=200)
@given(pair=hybrid_engine_pairs(), data=st.data())
def test_a_damaged_document_ends_in_a_kvplan_error_or_an_engine(pair, data):
    doc = json.loads(engine_to_json(pair[0]))
    target = data.draw(st.sampled_from(["top", "model", "layer"]), label="where")
    node = doc if target == "top" else doc["model"] if target == "model" else doc["model"]["layers"][0]
    key = data.draw(st.sampled_from(sorted(node)), label="key")
    how = data.draw(st.sampled_from(["drop", "null", "string", "list", "huge", "extra"]), label="how")
    if how == "drop":
        del node[key]
    elif how == "extra":
        node["unknown_field"] = 1
    else:
        node[key] = {"null": None, "string": "x", "list": [1, 2], "huge": 10**30}[how]
    try:
        engine_from_json(json.dumps(doc))
    except KvplanError as error:  # only kvplan's errors, each with a message
        assert str(error)


def test_documents_that_are_not_engines_are_refused():
    for text in ("", "[]", "{", '{"schema": "kvplan.engine/1"}', "null", b"\xff", 5, None):
        with pytest.raises(SpecError):
            engine_from_json(text)
    with pytest.raises(SpecError, match="takes an EngineSpec"):
        engine_to_json("engine")
