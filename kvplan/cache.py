"""`PlanCache`: one plan per pair of engine layouts, for deployments of many engines (xPyD).

A prefill engine serving decode engines of several TP sizes, or a decode engine pulling
from several prefill engines, needs one plan per (prefill, decode) pair, and the same
pairs come back request after request. Plans are immutable values, so a pair's plan can
be made once and shared by every thread. The cache keys a plan by both engines'
fingerprints (`kvplan.fingerprint`: everything that decides bytes, not the model's
name) and the planning options, keeps at most `max_plans` (least recently used out
first) and counts hits and misses.

A cached plan made for engines that differ from the asked ones only in what the
fingerprint leaves out (a model's name) comes back with the asked engines as its `src`
and `dst`, sharing the same tables.

>>> from kvplan import AttentionSpec, EngineSpec, ModelSpec
>>> m = ModelSpec(name="m", layers=(AttentionSpec(num_kv_heads=8, head_dim=128),) * 2)
>>> cache = PlanCache(max_plans=8)
>>> p = cache.plan(EngineSpec(model=m, tp=2), EngineSpec(model=m, tp=4))
>>> p is cache.plan(EngineSpec(model=m, tp=2), EngineSpec(model=m, tp=4)), cache.hits, cache.misses, len(cache)
(True, 1, 1, 1)
"""

from __future__ import annotations

import threading
from collections import OrderedDict

import attrs

from .api import EngineTransferPlan, plan
from .spec.fingerprint import fingerprint
from .spec.store import as_engine
from .spec.limits import check_count


class PlanCache:
    """At most `max_plans` plans, keyed by engine fingerprints and options (module
    docstring); safe to share between threads."""

    def __init__(self, max_plans: int = 64):
        check_count(max_plans, "PlanCache(max_plans=...)")
        self.max_plans = int(max_plans)
        self.hits = self.misses = 0
        self._plans: OrderedDict[tuple, EngineTransferPlan] = OrderedDict()
        self._lock = threading.Lock()

    def plan(self, src, dst, *, conv_strategy: str = "direct", transfer_strategy: str = "auto",
             transport: str | None = None) -> EngineTransferPlan:
        """`kvplan.plan(src, dst, ...)`, made once per key and kept."""
        options = (conv_strategy, transfer_strategy, transport)
        if not all(o is None or isinstance(o, str) for o in options):  # plan() names what is wrong
            return plan(src, dst, conv_strategy=conv_strategy, transfer_strategy=transfer_strategy,
                        transport=transport)
        src, dst = as_engine(src), as_engine(dst)
        key = (fingerprint(src), fingerprint(dst), *options)
        with self._lock:
            found = self._plans.get(key)
            if found is not None:
                self._plans.move_to_end(key)
                self.hits += 1
        if found is None:
            found = plan(src, dst, conv_strategy=conv_strategy, transfer_strategy=transfer_strategy,
                         transport=transport)
            with self._lock:
                self.misses += 1
                found = self._plans.setdefault(key, found)  # a plan another thread kept first wins
                self._plans.move_to_end(key)
                while len(self._plans) > self.max_plans:
                    self._plans.popitem(last=False)
        if found.src != src or found.dst != dst:  # equal layouts, other names: the asked engines
            return attrs.evolve(found, src=src, dst=dst)
        return found

    def __len__(self) -> int:
        return len(self._plans)

    def clear(self) -> None:
        """Forget every plan (the counts stay)."""
        with self._lock:
            self._plans.clear()

    def __repr__(self) -> str:
        return f"PlanCache({len(self)} of {self.max_plans} plans, {self.hits} hits, {self.misses} misses)"

