"""The README's examples run as written (docs that drift from the code mislead users)."""

import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import pytest

README = (Path(__file__).resolve().parents[2] / "README.md").read_text()
PYTHON_BLOCKS = re.findall(r"```python\n(.*?)```", README, re.S)


@pytest.mark.parametrize("block", PYTHON_BLOCKS, ids=[f"python-{i}" for i in range(len(PYTHON_BLOCKS))])
def test_readme_python_example_runs(block, capsys):
    for kind, module in (("nixl", "nixl"), ("ucx", "ucxx")):  # CI installs both; a bare install may not
        if f'load_backend("{kind}"' in block and importlib.util.find_spec(module) is None:
            pytest.skip(f"the example needs the {kind} transport ({module} is not installed)")
    exec(compile(block, "README.md", "exec"), {})


def test_readme_first_command_prints_the_plan():
    first = README.split("```bash\n", 1)[1].splitlines()[0]
    command = first.split("&&", 1)[1].split()  # the part after the install
    assert command[:3] == ["python3", "-m", "kvplan"]
    out = subprocess.run([sys.executable, *command[1:]], check=True, capture_output=True, text=True).stdout
    assert "D rank 7 <- P rank 1" in out and "llama-3.1-70b" in out
