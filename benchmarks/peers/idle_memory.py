"""Bytes per idle process, measured in a fresh (forked) interpreter.

A figure is the growth of the resident set size (``/proc/self/statm``) while ``N`` idle
processes of a peer are started (each blocked waiting for a message, or a bare task
asleep for ``trio_task``), divided by ``N``, after a ``gc.collect()`` on both sides. The
RSS counts everything a process costs, including what tracemalloc cannot see (thread
stacks for pykka, C allocations). A fresh interpreter per figure keeps memory freed by
earlier jobs from hiding the growth.

``python -m benchmarks.peers.idle_memory PEER N`` prints one figure from a fresh
interpreter. ``python -m benchmarks.peers.idle_memory --serve`` is what the suite runs:
a server that imports every peer once, then answers each line-protocol request
``"<peer> <n>"`` (see ``LineProtocolPeer``) from a child it forks for that request, so
each figure starts from the same clean heap without paying an interpreter start-up.
"""

from __future__ import annotations

import gc
import importlib
import os
import subprocess
import sys
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING

from benchmarks.peers import Probe

if TYPE_CHECKING:
    from benchmarks.harness import LineProtocolPeer

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


def server() -> LineProtocolPeer:
    """The fork server (``--serve``) as a long-lived subprocess of the benchmark run."""
    from benchmarks.harness import LineProtocolPeer

    return LineProtocolPeer(
        [sys.executable, "-m", "benchmarks.peers.idle_memory", "--serve"],
        name="idle_memory",
        cwd=REPO_ROOT,
    )


def rss_bytes() -> int:
    """This process's resident set size in bytes."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def bytes_per_idle_process(peer: str, n: int, *, answer_fd: int | None = None) -> float:
    """Hold ``n`` idle processes of ``peer`` in this interpreter; RSS growth / ``n``.

    With ``answer_fd`` the figure is written there as ``"ok <figure>"`` and the
    interpreter ends at once (``os._exit``) instead of tearing the ``n`` processes
    down: the teardown is not measured, and a throwaway interpreter need not pay for it.
    """
    holder = _holder(peer)
    marks: list[int] = []

    def probe() -> None:
        gc.collect()
        marks.append(rss_bytes())
        if answer_fd is not None and len(marks) == 2:
            os.write(answer_fd, f"ok {(marks[1] - marks[0]) / n!r}\n".encode())
            os._exit(0)

    holder(n, probe, probe)
    if len(marks) != 2:
        raise RuntimeError(f"{peer}: the idle holder probed {len(marks)} times, not 2")
    return (marks[1] - marks[0]) / n


def _holder(peer: str) -> Holder:
    module_name, _, attr = HOLDERS[peer].partition(":")
    holder: Holder = getattr(importlib.import_module(module_name), attr)
    return holder


def serve(lines: Iterable[str]) -> None:
    """Answer ``"<peer> <n>"`` requests, each from a forked child of a clean parent."""
    for peer in HOLDERS:
        _holder(peer)  # import everything before the first fork
    gc.collect()
    gc.freeze()  # the parent's objects stay out of the children's collections
    for line in lines:
        if not line.strip():
            continue
        peer, n = line.split()
        read_fd, write_fd = os.pipe()
        child = os.fork()
        if child == 0:  # pragma: no cover - runs in the forked child
            os.close(read_fd)
            try:
                figure = bytes_per_idle_process(peer, int(n), answer_fd=write_fd)
                os.write(write_fd, f"ok {figure!r}\n".encode())
            except BaseException as exc:
                os.write(write_fd, f"error {type(exc).__name__}: {exc}\n".encode())
            os._exit(0)
        os.close(write_fd)
        with os.fdopen(read_fd, "rb") as answer:
            text = answer.read().decode().strip()
        os.waitpid(child, 0)
        print(text or f"error the child measuring {peer} died", flush=True)


def measure(peer: str) -> Callable[[int], float]:
    """A measurement that runs this module in a new interpreter for ``peer``."""

    def run(n: int) -> float:
        out = subprocess.run(
            [sys.executable, "-m", "benchmarks.peers.idle_memory", peer, str(n)],
            check=True,
            capture_output=True,
            text=True,
            cwd=REPO_ROOT,
            timeout=600,
        )
        status, _, figure = out.stdout.strip().splitlines()[-1].partition(" ")
        if status != "ok":
            raise RuntimeError(f"{peer}: {figure}")
        return float(figure)

    return run


def main(argv: list[str]) -> int:
    """``PEER N`` prints ``ok <bytes per idle process>``; ``--serve`` serves stdin."""
    from benchmarks.harness import quiet_logs

    quiet_logs()
    if argv == ["--serve"]:
        serve(sys.stdin)
        return 0
    peer, n = argv
    sys.stdout.flush()
    bytes_per_idle_process(peer, int(n), answer_fd=sys.stdout.fileno())
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
