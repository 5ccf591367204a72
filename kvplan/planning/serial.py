"""Plans as JSON: what a prefill and a decode process exchange, or a non-Python engine reads.

`tables_to_json(plan)` writes a plan whole: both engines (schema ``kvplan.engine/1``,
`kvplan.spec.serial`), its strategies and fingerprint, both region tables and every
decode rank's reads (and local steps) as columns of integers. `tables_from_json(text)`
reads one back: it rebuilds the engines through their validators, plans them again
with the document's strategies and requires the document to describe exactly that plan
(fingerprint, regions, every column of every table), so a document written by another
kvplan version, edited, or truncated ends in a `KvplanError` rather than a plan that
moves the wrong bytes. What it returns is therefore equal to the original and verifies.

Schema ``kvplan.plan/1`` (an object; docs/json.md describes it field by field):
``schema``, ``fingerprint``, ``conv_strategy``, ``transfer_strategy``, ``src`` and
``dst`` (engine documents as objects), ``src_regions`` / ``dst_regions`` (lists of
`Region` fields; a row's region ids index them), ``tables`` (one per decode rank, in
rank order: ``dst_rank`` and ``columns``, a list of ints per `ReadTable` column),
``pre_tables`` / ``post_tables`` (the same, empty lists without local steps).

>>> from kvplan.spec import AttentionSpec, EngineSpec, ModelSpec
>>> from kvplan.planning import plan_tables
>>> m = ModelSpec(name="m", layers=(AttentionSpec(8, 128),))
>>> p = plan_tables(EngineSpec(model=m, tp=2), EngineSpec(model=m, tp=4))
>>> text = tables_to_json(p)
>>> q = tables_from_json(text)
>>> tables_to_json(q) == text, q.fingerprint == p.fingerprint
(True, True)
>>> tables_from_json(text.replace('"nbytes": [16384]', '"nbytes": [16385]', 1))
Traceback (most recent call last):
...
kvplan.errors.PlanMismatchError: plan JSON: tables[0].nbytes differs from the plan of its engines and strategies (this kvplan's rules: the document was written by another version, or edited)
"""

from __future__ import annotations

import json

import attrs

from ..errors import KvplanError, PlanMismatchError, SpecError
from ..spec.serial import engine_from_json, engine_to_json, load_document
from .plan_tables import PlanTables
from .planner import plan_tables
from .tables import ReadTable

SCHEMA = "kvplan.plan/1"


def _table(table: ReadTable) -> dict:
    return {"dst_rank": int(table.dst_rank), "columns": {name: col.tolist() for name, col in table.columns().items()}}


def _regions(regions) -> list:
    return [{f.name: (list(v) if isinstance(v := getattr(r, f.name), tuple) else v) for f in attrs.fields(type(r))}
            for r in regions]


def plan_document(plan: PlanTables) -> dict:
    """`plan` as the object a ``kvplan.plan/1`` document holds (`tables_to_json` writes it)."""
    return {"schema": SCHEMA, "fingerprint": plan.fingerprint, "conv_strategy": plan.conv_strategy,
            "transfer_strategy": plan.transfer_strategy,
            "src": json.loads(engine_to_json(plan.src)), "dst": json.loads(engine_to_json(plan.dst)),
            "src_regions": _regions(plan.src_regions), "dst_regions": _regions(plan.dst_regions),
            "tables": [_table(t) for t in plan.tables], "pre_tables": [_table(t) for t in plan.pre_tables],
            "post_tables": [_table(t) for t in plan.post_tables]}


def tables_to_json(plan) -> str:
    """`plan` (a `PlanTables`, e.g. what `kvplan.plan` returns) as a JSON document of
    schema `SCHEMA` (module docstring); keys sorted, so equal plans give equal text."""
    if not isinstance(plan, PlanTables):
        raise SpecError(f"plan_to_json takes a plan from kvplan.plan(), got {type(plan).__name__}")
    return json.dumps(plan_document(plan), sort_keys=True)


def tables_from_json(text) -> PlanTables:
    """The plan a `tables_to_json` document describes, planned again from its engines and
    strategies and checked against every field of the document (module docstring)."""
    doc = load_document(text, SCHEMA, "plan", "plan_from_json")
    missing = sorted({"src", "dst", "conv_strategy", "transfer_strategy"} - set(doc))
    if missing:
        raise SpecError(f"plan JSON lacks {', '.join(missing)}")
    try:
        src, dst = (engine_from_json(json.dumps(doc[side])) for side in ("src", "dst"))
    except (TypeError, ValueError) as error:  # an engine that is no JSON object
        if isinstance(error, KvplanError):
            raise
        raise SpecError(f"plan JSON: engines must be objects: {error}"[:300]) from None
    plan = plan_tables(src, dst, conv_strategy=doc["conv_strategy"], transfer_strategy=doc["transfer_strategy"])
    want = plan_document(plan)
    for key in sorted(set(want) | set(doc)):
        if key not in want or key not in doc:
            raise PlanMismatchError(f"plan JSON: field {key!r} is {'unknown' if key not in want else 'missing'}")
        if doc[key] != want[key]:
            raise PlanMismatchError(f"plan JSON: {_where(key, doc[key], want[key])} differs from the plan of its "
                                    "engines and strategies (this kvplan's rules: the document was written by "
                                    "another version, or edited)")
    return plan


def _where(key: str, got, want) -> str:
    """The first differing place inside field `key`, e.g. ``tables[0].nbytes``."""
    if key in ("tables", "pre_tables", "post_tables") and isinstance(got, list) and len(got) == len(want):
        for i, (a, b) in enumerate(zip(got, want, strict=True)):
            if a != b:
                columns = a.get("columns") if isinstance(a, dict) else None
                if isinstance(columns, dict):
                    for name in b["columns"]:
                        if columns.get(name) != b["columns"][name]:
                            return f"{key}[{i}].{name}"
                return f"{key}[{i}]"
    return key
