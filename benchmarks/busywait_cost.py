"""What busy-waiting costs and buys: cross-node calls at several paces, on and off.

``python -m benchmarks.busywait_cost`` runs the transport suite's echo server in its own
OS process and calls it from this one, one call at a time, with a pause of 0, 2 or 20 ms
between calls, first with busy-waiting off (``REGENCY_BUSY_WAIT=0`` on both ends) and
then on (the default window), alternating, for several rounds. Per pace and setting it
prints the median call p50 and the CPU that each end spent per call (this process from
``getrusage``, the server from ``/proc``), pauses included.

Back-to-back calls are the case busy-waiting is for; calls 2 or 20 ms apart are the
case it must not make worse: there, the server's node stops polling after its replies,
and the caller's polls only while its reply is on the way.
"""

from __future__ import annotations

import collections
import contextlib
import os
import resource
import statistics
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import trio

import runtime
from benchmarks import transport
from benchmarks.peers.transport_peers import ChildServer
from runtime.busywait import DEFAULT_BUSY_WAIT, ENV_VAR

ROUNDS = 3
PACES = ((0.0, 2000), (0.002, 1000), (0.02, 150))
"""(pause between calls in seconds, calls per measurement)."""


def _server_cpu(pid: int) -> float:
    """CPU seconds (user + system) the process *pid* has used (Linux ``/proc``)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _own_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


@contextlib.contextmanager
def _window(window: float) -> Iterator[dict[str, str]]:
    """Set ``REGENCY_BUSY_WAIT`` here for the block; yield it for the server's env."""
    setting = {ENV_VAR: repr(window)}
    saved = os.environ.get(ENV_VAR)
    os.environ.update(setting)
    try:
        yield setting
    finally:
        if saved is None:
            del os.environ[ENV_VAR]
        else:
            os.environ[ENV_VAR] = saved


def measure(window: float, pause: float, calls: int) -> tuple[float, float, float]:
    """Call p50 (us), and CPU per call (us) here and in the server, at one setting."""
    with _window(window) as setting, ChildServer("regency", env=setting) as child:
        pid = child.pid
        samples: list[float] = []
        spent: list[float] = []

        async def driver() -> None:
            echo = await runtime.call(runtime.Name("echo", transport.CHILD_NODE), "pid")
            for i in range(100):  # warm up both ends
                await runtime.call(echo, i)
            own, server = _own_cpu(), _server_cpu(pid)
            for i in range(calls):
                t0 = time.perf_counter()
                await runtime.call(echo, i)
                samples.append((time.perf_counter() - t0) * 1e6)
                if pause:
                    await trio.sleep(pause)
            spent.append((_own_cpu() - own) / calls * 1e6)
            spent.append((_server_cpu(pid) - server) / calls * 1e6)

        with transport._warnings_dropped():
            trio.run(transport._with_remote_driver, child.port, driver)
    return statistics.median(samples), spent[0], spent[1]


def main() -> int:
    """Print, per pace, the call p50 and CPU per call with busy-waiting off and on."""
    figures: dict[tuple[float, float], list[tuple[float, float, float]]]
    figures = collections.defaultdict(list)
    for _ in range(ROUNDS):
        for pause, calls in PACES:
            for window in (0.0, DEFAULT_BUSY_WAIT):
                figures[pause, window].append(measure(window, pause, calls))
    for pause, _ in PACES:
        line = []
        for window in (0.0, DEFAULT_BUSY_WAIT):
            p50, own, server = (statistics.median(f) for f in zip(*figures[pause, window]))
            label = "off" if not window else f"{window * 1e3:g} ms"
            line.append(f"{label}: p50 {p50:.0f} us, CPU/call {own:.0f} + {server:.0f} us")
        print(f"pause {pause * 1e3:>2g} ms | " + " | ".join(line))
    return 0


if __name__ == "__main__":
    sys.exit(main())
