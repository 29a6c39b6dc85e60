"""Scenario tests: each testdata/*.txt file is a script of commands and expected output."""

from __future__ import annotations

import difflib
from pathlib import Path

import pytest

from .interp import render, run_file

TESTDATA = Path(__file__).parent / "testdata"
FILES = sorted(TESTDATA.glob("*.txt"))


@pytest.mark.parametrize("path", FILES, ids=[p.stem for p in FILES])
def test_scenario(path: Path, rewrite: bool) -> None:
    """The scenario's commands print exactly the expected output."""
    blocks, trailing, actual = run_file(path)
    if rewrite:
        path.write_text(render(blocks, trailing, actual))
        return
    for b, out in zip(blocks, actual, strict=True):
        if b.expected != out:
            diff = "\n".join(
                difflib.unified_diff(
                    b.expected.splitlines(), out.splitlines(), "expected", "actual", lineterm=""
                )
            )
            pytest.fail(f"{path.name}:{b.line}: {b.command}\n{diff}")
