"""Bytes per idle process, measured in a fresh interpreter.

``python -m benchmarks.peers.idle_memory PEER N`` starts ``N`` idle processes of
``PEER`` (each blocked waiting for a message, or a bare task asleep for ``trio_task``),
and prints the growth of the resident set size (``/proc/self/statm``) divided by ``N``,
after a ``gc.collect()`` on both sides. A fresh interpreter per figure keeps memory
freed by earlier jobs from hiding the growth; the RSS counts everything a process costs,
including what tracemalloc cannot see (thread stacks for pykka, C allocations).
"""

from __future__ import annotations

import gc
import importlib
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from benchmarks.peers import Probe

Holder = Callable[[int, Probe, Probe], None]

#: peer name -> "module:function" of a hold_idle function (imported lazily).
HOLDERS = {
    "regency": "benchmarks.messaging:hold_idle_regency",
    "limit": "benchmarks.peers.limit:hold_idle",
    "trio_task": "benchmarks.peers.trio_peers:hold_idle_trio_task",
    "trio_channel": "benchmarks.peers.trio_peers:hold_idle_trio_channel",
    "anyio_stream": "benchmarks.peers.trio_peers:hold_idle_anyio_stream",
    "asyncio_queue": "benchmarks.peers.asyncio_peer:hold_idle",
    "asyncio_task": "benchmarks.peers.asyncio_peer:hold_idle_task",
    "pykka": "benchmarks.peers.pykka_peer:hold_idle",
}

REPO_ROOT = Path(__file__).resolve().parents[2]


def rss_bytes() -> int:
    """This process's resident set size in bytes."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def bytes_per_idle_process(peer: str, n: int) -> float:
    """Hold ``n`` idle processes of ``peer`` in this interpreter; RSS growth / ``n``."""
    module_name, _, attr = HOLDERS[peer].partition(":")
    holder: Holder = getattr(importlib.import_module(module_name), attr)
    marks: list[int] = []

    def probe() -> None:
        gc.collect()
        marks.append(rss_bytes())

    holder(n, probe, probe)
    if len(marks) != 2:
        raise RuntimeError(f"{peer}: the idle holder probed {len(marks)} times, not 2")
    return (marks[1] - marks[0]) / n


def measure(peer: str) -> Callable[[int], float]:
    """A measurement that runs this module in a fresh interpreter for ``peer``."""

    def run(n: int) -> float:
        out = subprocess.run(
            [sys.executable, "-m", "benchmarks.peers.idle_memory", peer, str(n)],
            check=True,
            capture_output=True,
            text=True,
            cwd=REPO_ROOT,
            timeout=600,
        )
        return float(out.stdout.strip().splitlines()[-1])

    return run


def main(argv: list[str]) -> int:
    """``PEER N`` -> prints bytes per idle process."""
    from benchmarks.harness import quiet_logs

    peer, n = argv
    quiet_logs()
    print(repr(bytes_per_idle_process(peer, int(n))), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
