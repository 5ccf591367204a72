"""Engine specs and plans through JSON (`kvplan.spec.serial`, `kvplan.planning.serial`):
what comes back equals what went in, has the same fingerprint, plans alike (a plan
verifies); a damaged or changed document ends in a KvplanError."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kvplan import (KvplanError, SpecError, engine_from_json, engine_to_json, fingerprint, plan, plan_from_json,
                    plan_to_json, verify)
from kvplan.testing.strategies import engine_pairs, hybrid_engine_pairs, strategy_plans


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


# -- plans (`kvplan.planning.serial`, schema kvplan.plan/1) ----------------------------------------------


@settings(max_examples=50)
@given(strategy_plans())
def test_plans_round_trip_through_json(case):
    p = case[0]
    text = plan_to_json(p)
    back = plan_from_json(text)
    assert plan_to_json(back) == text and back.fingerprint == p.fingerprint
    verify(back)
    # the document holds every table as columns: a reader without kvplan gets the rows
    doc = json.loads(text)
    assert doc["schema"] == "kvplan.plan/1" and len(doc["tables"]) == p.dst.world_size
    for table, row in zip(p.tables, doc["tables"], strict=True):
        assert row["columns"]["nbytes"] == table.nbytes.tolist() and row["dst_rank"] == table.dst_rank
    assert [r["name"] for r in doc["src_regions"]] == [r.name for r in p.src_regions]


@settings(max_examples=60)
@given(case=strategy_plans(), data=st.data())
def test_a_changed_plan_document_is_refused(case, data):
    p = case[0]
    doc = json.loads(plan_to_json(p))
    key = data.draw(st.sampled_from(sorted(doc)), label="key")
    how = data.draw(st.sampled_from(["drop", "null", "string", "extra", "bump"]), label="how")
    if how == "drop":
        del doc[key]
    elif how == "extra":
        doc["unknown_field"] = 1
    elif how == "bump":  # one number anywhere in the field, or one more item
        value = doc[key]
        if isinstance(value, list) and value and isinstance(value[0], dict) and "columns" in value[0]:
            cols = value[data.draw(st.integers(0, len(value) - 1), label="table")]["columns"]
            name = data.draw(st.sampled_from(sorted(cols)), label="column")
            if not cols[name]:
                return
            cols[name][data.draw(st.integers(0, len(cols[name]) - 1), label="row")] += 1
        elif isinstance(value, list):
            value.append(value[-1] if value else 0)
        elif isinstance(value, str):
            doc[key] = value + "x"
        else:
            return
    else:
        doc[key] = None if how == "null" else "x"
    with pytest.raises(KvplanError) as error:
        plan_from_json(json.dumps(doc))
    assert str(error.value)


def test_documents_that_are_not_plans_are_refused():
    for text in ("", "[]", "{", '{"schema": "kvplan.plan/1"}', "null", b"\xff", 5, None,
                 '{"schema": "kvplan.plan/1", "src": 1, "dst": 2, "conv_strategy": "direct", '
                 '"transfer_strategy": "direct"}'):
        with pytest.raises(SpecError):
            plan_from_json(text)
    with pytest.raises(SpecError, match="takes a plan"):
        plan_to_json("plan")


def test_models_json_lists_every_builtin_model_readably():
    """`kvplan models --json` (schema kvplan.models/1): every built-in model as an engine
    document's model object, which reads back to the same ModelSpec."""
    import subprocess
    import sys

    from kvplan.models import MODELS
    from kvplan.spec.serial import model_from_document

    out = subprocess.run([sys.executable, "-m", "kvplan", "models", "--json"], check=True, capture_output=True,
                         text=True).stdout
    doc = json.loads(out)
    assert doc["schema"] == "kvplan.models/1" and sorted(m["name"] for m in doc["models"]) == sorted(MODELS)
    for entry in doc["models"]:
        assert model_from_document(entry) == MODELS[entry["name"]]
    for bad in (None, [], {"layers": "x"}, {"name": "m", "layers": [{"kind": "Nope"}]}, {"name": "m", "layers": [1]}):
        with pytest.raises(SpecError):
            model_from_document(bad)
