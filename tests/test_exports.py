"""The public surface: every exported name resolves, is documented, and layers point down."""

from __future__ import annotations

import importlib
import inspect
import subprocess
import sys

import pytest

PACKAGES = ["runtime", "supervisors", "agents"]


@pytest.mark.parametrize("package", PACKAGES)
def test_all_names_resolve_and_have_docstrings(package: str) -> None:
    """Each name in __all__ exists, and each public class or function has a docstring."""
    mod = importlib.import_module(package)
    missing = [n for n in mod.__all__ if not hasattr(mod, n)]
    assert missing == []
    undocumented = [
        n
        for n in mod.__all__
        if (inspect.isclass(obj := getattr(mod, n)) or inspect.isfunction(obj))
        and not (inspect.getdoc(obj) or "").strip()
    ]
    assert undocumented == []


@pytest.mark.parametrize(
    ("package", "forbidden"),
    [
        ("runtime", ["supervisors", "agents", "litellm"]),
        ("supervisors", ["agents", "litellm"]),
    ],
)
def test_imports_point_down(package: str, forbidden: list[str]) -> None:
    """Importing a layer never imports the layers above it, nor litellm."""
    code = f"import sys, {package}; print(','.join(m for m in {forbidden!r} if m in sys.modules))"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert out == ""
