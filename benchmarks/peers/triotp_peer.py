"""The triotp peer, measured in its own virtual environment.

triotp pins ``trio < 0.20``, which cannot share an interpreter with regency's trio, so on
first use this module creates a venv (``$XDG_CACHE_HOME/regency-bench/triotp-venv``, by
default under ``~/.cache``) with ``python -m venv`` and ``pip install triotp``, then runs
``triotp_worker.py`` there as a long-lived subprocess of the benchmark run, speaking the
harness's line protocol. When the venv cannot be made (no network, no pip), the peer is
skipped with the reason.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from benchmarks.harness import LineProtocolPeer, Skip

PACKAGE = "triotp"
"""The PyPI package this peer needs (installed into its own venv)."""

WORKER = Path(__file__).with_name("triotp_worker.py")


def venv_dir() -> Path:
    """Where the triotp venv lives."""
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache) / "regency-bench" / "triotp-venv"


def _python(venv: Path) -> Path:
    return venv / "bin" / "python"


def ensure_venv(note: object = print) -> Path | Skip:
    """The venv's interpreter, creating the venv on first use; a :class:`Skip` on failure."""
    venv = venv_dir()
    stamp = venv / ".regency-bench-ready"
    python = _python(venv)
    if stamp.exists() and python.exists():
        return python
    if callable(note):
        note(f"  creating the triotp venv in {venv} (first use)")
    try:
        venv.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            [sys.executable, "-m", "venv", "--clear", str(venv)],
            check=True,
            capture_output=True,
            text=True,
            timeout=120,
        )
        subprocess.run(
            [str(python), "-m", "pip", "install", "--quiet", PACKAGE],
            check=True,
            capture_output=True,
            text=True,
            timeout=300,
        )
        subprocess.run(
            [str(python), "-c", "import triotp.gen_server, triotp.mailbox"],
            check=True,
            capture_output=True,
            text=True,
            timeout=60,
        )
    except (OSError, subprocess.SubprocessError) as exc:
        detail = getattr(exc, "stderr", None) or str(exc)
        last = detail.strip().splitlines()[-1] if detail.strip() else type(exc).__name__
        return Skip(f"cannot create the triotp venv in {venv} (pip install {PACKAGE}): {last}")
    stamp.write_text("ok\n")
    return python


def worker(python: Path) -> LineProtocolPeer:
    """A long-lived triotp worker subprocess (enter it into the suite's resources)."""
    return LineProtocolPeer([str(python), "-u", str(WORKER)], name=PACKAGE)


def measure_once(python: Path, case: str, n: int) -> float:
    """Run ``case`` once in a fresh venv interpreter (for idle memory).

    Raises:
        RuntimeError: the worker reported an error.
    """
    out = subprocess.run(
        [str(python), "-u", str(WORKER), "--once", case, str(n)],
        check=True,
        capture_output=True,
        text=True,
        timeout=600,
    ).stdout.strip()
    status, _, rest = out.partition(" ")
    if status != "ok":
        raise RuntimeError(f"triotp: {rest or out}")
    return float(rest)
