"""The least a supervised restart can cost on trio: the bound behind the supervision suite.

``python -m benchmarks.bare_restart`` times, beside regency in the same run, the
supervision suite's restart cases written with nothing but trio: a deque and a parked
task per mailbox, a cancel scope per child (so it can be stopped), a supervisor task
that learns of a child's end from a message, stops the later children in reverse order
(rest-for-one) waiting for each to end, and starts the replacements in order, each
acknowledging its start; a dict for names. The driver does what the suite's driver
does: sends ``"crash"`` to the name, then pings the name until a reply comes, yielding
once whenever the name is between lives. No monitors, links, exit reasons, logging,
restart intensity or GenServer protocol: only the scheduling a restart cannot avoid.

It prints the median of per-round p50s for both, and their ratio.
"""

from __future__ import annotations

import collections
import statistics
import sys
import time
from typing import Any

import trio
from trio.lowlevel import Abort, checkpoint, current_task, reschedule, wait_task_rescheduled

from benchmarks.supervision import crash_reports_filtered, regency_restart_latencies
from supervisors import Strategy

ROUNDS = 7
RESTARTS = 200


class _Box:
    """A mailbox: a deque and at most one parked reader."""

    __slots__ = ("alive", "q", "scope", "waiter")

    def __init__(self) -> None:
        self.q: collections.deque[Any] = collections.deque()
        self.waiter: Any = None
        self.alive = True
        self.scope: trio.CancelScope | None = None

    def put(self, msg: Any) -> None:
        self.q.append(msg)
        if self.waiter is not None:
            task, self.waiter = self.waiter, None
            reschedule(task)

    async def park(self) -> None:
        self.waiter = current_task()

        def abort(_: Any) -> Abort:
            self.waiter = None
            return Abort.SUCCEEDED

        await wait_task_rescheduled(abort)

    async def get(self) -> Any:
        while not self.q:
            await self.park()
        return self.q.popleft()

    async def take(self, msg: Any) -> None:
        """Selective receive of one message equal to *msg*."""
        while True:
            for i, m in enumerate(self.q):
                if m == msg:
                    del self.q[i]
                    return
            await self.park()


async def _child(i: int, names: dict[str, _Box], sup: _Box) -> None:
    box = _Box()
    names[f"c{i}"] = box
    try:
        with trio.CancelScope() as scope:
            box.scope = scope
            sup.put(("started", i))
            while True:
                msg = await box.get()
                if msg == "crash":
                    raise RuntimeError("crash")  # noqa: TRY301 - the injected fault
                msg[1].put("pong")
    except RuntimeError:
        pass
    finally:
        box.alive = False
        for msg in box.q:  # a monitor's Down for pings that will not be answered
            if type(msg) is tuple:
                msg[1].put("dead")
        if names.get(f"c{i}") is box:
            del names[f"c{i}"]
        sup.put(("ended", i))


async def _supervisor(
    nursery: trio.Nursery, names: dict[str, _Box], n: int, rest: bool, box: _Box
) -> None:
    async def start(i: int) -> None:
        nursery.start_soon(_child, i, names, box)
        await box.take(("started", i))

    for i in range(n):
        await start(i)
    while True:
        kind, i = await box.get()
        if kind != "ended":
            continue
        later = list(range(i + 1, n)) if rest else []
        for j in reversed(later):
            scope = names[f"c{j}"].scope
            assert scope is not None
            scope.cancel()
            await box.take(("ended", j))
        for j in [i, *later]:
            await start(j)


async def _answered(names: dict[str, _Box], name: str, me: _Box) -> None:
    while True:
        box = names.get(name)
        if box is None or not box.alive:
            await checkpoint()
            continue
        box.put(("ping", me))
        if await me.get() == "pong":
            return


async def _bare(n: int, index: int, restarts: int) -> list[float]:
    samples: list[float] = []
    names: dict[str, _Box] = {}
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_supervisor, nursery, names, n, n > 1, _Box())
        name, me = f"c{index}", _Box()
        while name not in names:
            await checkpoint()
        await _answered(names, name, me)
        for _ in range(restarts):
            t0 = time.perf_counter()
            names[name].put("crash")
            await _answered(names, name, me)
            samples.append((time.perf_counter() - t0) * 1e6)
        nursery.cancel_scope.cancel()
    return samples


def main() -> int:
    """Print bare-trio and regency restart p50s (us), alternating rounds."""
    cases = [
        ("one_for_one", Strategy.ONE_FOR_ONE, 1, 0),
        ("rest_for_one", Strategy.REST_FOR_ONE, 4, 1),
    ]
    figures: dict[str, list[float]] = collections.defaultdict(list)
    with crash_reports_filtered():
        for _ in range(ROUNDS):
            for label, strategy, n, index in cases:
                bare = trio.run(_bare, n, index, RESTARTS)
                ours = regency_restart_latencies(strategy, n, index, RESTARTS)
                figures[f"{label} bare"].append(statistics.median(bare))
                figures[f"{label} regency"].append(statistics.median(ours))
    for label, *_ in cases:
        bare, ours = (statistics.median(figures[f"{label} {w}"]) for w in ("bare", "regency"))
        print(f"{label}: bare trio p50 {bare:.1f} us, regency {ours:.1f} us ({ours / bare:.2f}x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
