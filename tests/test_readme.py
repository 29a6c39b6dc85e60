"""The README's examples run as written."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parent.parent / "README.md"
PROGRAMS = [b for b in re.findall(r"```python\n(.*?)```", README.read_text(), re.S) if "run(" in b]


@pytest.mark.parametrize("program", PROGRAMS, ids=[f"example{i}" for i in range(len(PROGRAMS))])
def test_readme_example_runs(program: str) -> None:
    """Every complete program in the README runs and exits 0."""
    result = subprocess.run(
        [sys.executable, "-c", program], capture_output=True, text=True, timeout=60, check=False
    )

    assert result.returncode == 0, result.stderr[-2000:]


def test_readme_has_examples() -> None:
    """The README shows at least the trio, asyncio and supervision programs."""
    assert len(PROGRAMS) >= 3
