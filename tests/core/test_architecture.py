"""The architecture is a contract (pyproject.toml, [tool.importlinter]): stages import only
the stages before them, the core imports no backend or transport library, and no module
cycle exists anywhere, function-level imports included."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
LINT = shutil.which("lint-imports", path=str(Path(sys.executable).parent)) or shutil.which("lint-imports")


def _lint(root: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=f"{root}{os.pathsep}{root / 'backends'}")
    return subprocess.run([LINT, "--config", str(root / "pyproject.toml"), "--no-cache"], cwd=root, env=env,
                          capture_output=True, text=True, timeout=120)


def test_every_import_contract_is_kept():
    result = _lint(ROOT)
    assert result.returncode == 0 and "0 broken" in result.stdout, result.stdout + result.stderr


def test_a_backward_import_breaks_the_contract(tmp_path):
    """The contract can fail: a spec module importing lowering (and so a cycle) is caught."""
    shutil.copytree(ROOT / "kvplan", tmp_path / "kvplan")
    shutil.copytree(ROOT / "backends", tmp_path / "backends")
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    model = tmp_path / "kvplan" / "spec" / "model.py"
    model.write_text(model.read_text() + "\n\ndef _late():\n    from ..lowering import lower  # backwards\n    return lower\n")
    result = _lint(tmp_path)
    assert result.returncode != 0
    assert "kvplan stages import only the stages before them BROKEN" in result.stdout
    assert "kvplan.spec.model -> kvplan.lowering" in result.stdout
