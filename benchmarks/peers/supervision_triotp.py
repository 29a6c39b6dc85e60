"""Measures triotp's supervisor inside its own virtual environment (triotp pins trio < 0.20).

Run by :mod:`benchmarks.supervision` with the triotp venv's interpreter; it imports
nothing from regency. Line protocol on stdin/stdout (see ``FiguresPeer`` in
``benchmarks/peers/figures_peer.py``): each request ``"<case> <n>"`` is answered by
``"ok <f1> <f2> ..."`` (per-restart latencies in microseconds) or ``"error <text>"``.

triotp's supervisor (``triotp.supervisor.start``) restarts each child on its own, with
tenacity retrying the child's task: it has no rest-for-one or one-for-all, so only
``restart_latency`` is measured here. A child is a task owning a mailbox registered
under a name; it crashes itself (raises) on the message ``"crash"``. triotp has no pids,
monitors or ``which_children``: "replacement answering" is the first ping sent to the
registered name after the crash that gets a reply, retried while the name is not
registered again (or still names the dead mailbox). Crash reports are dropped (a
logbook ``NullHandler``), as regency's and Erlang's are in the same run.
"""

from __future__ import annotations

import sys
import time
from typing import Any

import logbook  # type: ignore[import-not-found]
import trio
import trio.lowlevel
from triotp import mailbox, supervisor  # type: ignore[import-not-found]

INTENSITY = 1_000_000_000
NAME = "bench_child"


async def _child() -> None:
    async with mailbox.open(NAME) as mid:
        while True:
            msg = await mailbox.receive(mid)
            if msg == "crash":
                raise RuntimeError("crash")
            await mailbox.send(msg, "pong")


async def _ping(me: Any) -> None:
    """Ping the registered child until one answers (the name may be between lives)."""
    while True:
        try:
            await mailbox.send(NAME, me)
        except (mailbox.MailboxDoesNotExist, trio.BrokenResourceError, trio.ClosedResourceError):
            await trio.lowlevel.checkpoint()
            continue
        reply = await mailbox.receive(me)
        if reply != "pong":
            raise RuntimeError(f"unexpected reply {reply!r}")
        return


async def restart_latency(n: int) -> list[float]:
    mailbox._init()  # what triotp.node.run does before starting applications
    samples: list[float] = []
    spec = supervisor.child_spec(
        id="child", task=_child, args=[], restart=supervisor.restart_strategy.PERMANENT
    )
    opts = supervisor.options(max_restarts=INTENSITY, max_seconds=1)
    async with trio.open_nursery() as nursery, mailbox.open() as me:
        await nursery.start(supervisor.start, [spec], opts)
        await _ping(me)  # the first life is up
        for _ in range(n):
            t0 = time.perf_counter()
            await mailbox.send(NAME, "crash")
            await _ping(me)
            samples.append((time.perf_counter() - t0) * 1e6)
        nursery.cancel_scope.cancel()
    return samples


CASES = {"restart_latency": restart_latency}


def answer(line: str) -> str:
    case, n = line.split()
    try:
        figures = trio.run(CASES[case], int(n))
        return "ok " + " ".join(f"{f:.3f}" for f in figures)
    except Exception as exc:  # reported to the harness, which drops this peer
        return f"error {type(exc).__name__}: {exc}"


def main() -> int:
    logbook.NullHandler().push_application()
    for line in sys.stdin:
        if line.strip():
            print(answer(line), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
