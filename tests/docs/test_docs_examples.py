"""The Python examples of docs pages that need no transport (docs/deployments.md) run as
written and print exactly the output the page shows."""

import contextlib
import io
import re
from pathlib import Path

import pytest

DOCS = Path(__file__).resolve().parents[2] / "docs"
PAGES = ("deployments.md",)


@pytest.mark.parametrize("page", PAGES)
def test_docs_example_prints_what_the_page_shows(page):
    text = (DOCS / page).read_text()
    code = re.findall(r"```python\n(.*?)```", text, re.S)
    shown = re.findall(r"Output:\n\n```\n(.*?)```", text, re.S)
    assert code and len(code) == len(shown)
    for block, want in zip(code, shown, strict=True):
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            exec(compile(block, page, "exec"), {})
        assert out.getvalue() == want
