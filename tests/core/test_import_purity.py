"""`import kvplan` loads numpy and attrs and nothing heavier (checked in a clean subprocess)."""

import json
import subprocess
import sys

HEAVY = {"torch", "cupy", "nixl", "nixl_cu12", "nixl_cu13", "ucxx", "ucp", "jax", "tensorflow", "scipy", "pandas",
         "hypothesis", "pytest"}


def _modules_after(statement: str) -> set[str]:
    code = f"import sys, json; {statement}; print(json.dumps(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout
    return {name.split(".")[0] for name in json.loads(out)}


def test_import_kvplan_pulls_no_heavy_module():
    loaded = _modules_after("import kvplan; kvplan.plan")
    assert "numpy" in loaded and "attrs" in loaded
    assert not (loaded & HEAVY), f"import kvplan loaded {sorted(loaded & HEAVY)}"


def test_third_party_modules_are_only_numpy_and_attrs():
    baseline = _modules_after("pass")
    loaded = _modules_after("import kvplan")
    stdlib = set(sys.stdlib_module_names)
    third_party = {m for m in loaded - baseline if m not in stdlib and not m.startswith("_")}
    assert third_party <= {"numpy", "attrs", "attr", "kvplan"}, sorted(third_party)
