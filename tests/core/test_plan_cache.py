"""`PlanCache`: what it returns is what `plan()` returns for the pair (the same tables,
the asked engines), made once per key, bounded, shared safely between threads; bad
input ends in a KvplanError."""

from __future__ import annotations

import threading

import attrs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kvplan import (AttentionSpec, EngineSpec, KvplanError, ModelSpec, PlanCache, SpecError, plan, plan_to_json)
from kvplan.testing.strategies import engine_pairs, hybrid_engine_pairs

M = ModelSpec(name="m", layers=(AttentionSpec(num_kv_heads=8, head_dim=128),) * 2)


@settings(max_examples=60)
@given(pair=st.one_of(engine_pairs(), hybrid_engine_pairs()), strategy=st.sampled_from(["direct", "bounce"]))
def test_a_cached_plan_is_the_plan_of_its_pair(pair, strategy):
    cache = PlanCache()
    got = cache.plan(*pair, transfer_strategy=strategy)
    assert plan_to_json(got) == plan_to_json(plan(*pair, transfer_strategy=strategy))
    assert cache.plan(*pair, transfer_strategy=strategy) is got and (cache.hits, cache.misses) == (1, 1)
    # other options are other plans
    other = "bounce" if strategy == "direct" else "direct"
    assert cache.plan(*pair, transfer_strategy=other).transfer_strategy == other and len(cache) == 2


def test_least_recently_used_plans_leave_first():
    cache = PlanCache(max_plans=2)
    engines = [EngineSpec(model=M, tp=tp) for tp in (1, 2, 4)]
    a = cache.plan(engines[0], engines[1])
    cache.plan(engines[0], engines[2])
    assert cache.plan(engines[0], engines[1]) is a  # a is now the most recent
    cache.plan(engines[1], engines[2])               # evicts (0, 2)
    assert len(cache) == 2 and cache.plan(engines[0], engines[1]) is a
    misses = cache.misses
    cache.plan(engines[0], engines[2])
    assert cache.misses == misses + 1
    cache.clear()
    assert len(cache) == 0 and repr(cache).startswith("PlanCache(0 of 2 plans")


def test_engines_that_differ_only_by_name_share_tables_but_keep_their_own_specs():
    cache = PlanCache()
    named = ModelSpec(name="other-name", layers=M.layers)
    first = cache.plan(EngineSpec(model=M, tp=2), EngineSpec(model=M, tp=4))
    src, dst = EngineSpec(model=named, tp=2), EngineSpec(model=named, tp=4)
    second = cache.plan(src, dst)
    assert cache.hits == 1 and second.src == src and second.dst == dst
    assert second.tables is first.tables and second.fingerprint == first.fingerprint


def test_threads_share_one_cache():
    cache = PlanCache(max_plans=3)
    engines = [EngineSpec(model=M, tp=tp) for tp in (1, 2, 4, 8)]
    pairs = [(a, b) for a in engines for b in engines]
    seen, errors = [], []

    def work(k):
        try:
            for i in range(40):
                src, dst = pairs[(k + i) % len(pairs)]
                p = cache.plan(src, dst)
                seen.append((src.tp, dst.tp, p.src.tp, p.dst.tp, p.fingerprint == plan(src, dst).fingerprint))
        except Exception as error:  # reported below: a thread's exception must fail the test
            errors.append(error)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(cache) <= 3 and cache.hits + cache.misses == 320
    assert all(a == c and b == d and same for a, b, c, d, same in seen)


@pytest.mark.parametrize("bad", [0, -1, 1.5, "8", None, True])
def test_bad_sizes_are_refused(bad):
    with pytest.raises(SpecError, match="max_plans"):
        PlanCache(max_plans=bad)


def test_bad_engines_and_options_end_in_kvplan_errors():
    cache = PlanCache()
    e = EngineSpec(model=M)
    for args, kwargs in (((e, "decode"), {}), (("prefill", e), {}), ((e, e), {"conv_strategy": ["direct"]}),
                         ((e, e), {"transfer_strategy": "fast"}), ((e, e), {"transport": 3})):
        with pytest.raises(KvplanError):
            cache.plan(*args, **kwargs)
    assert len(cache) == 0 and attrs.has(type(cache.plan(e, e)))
