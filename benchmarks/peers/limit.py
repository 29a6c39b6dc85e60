"""The limit: the least an actor mailbox can cost on trio.

A mailbox is a bare :class:`collections.deque` plus the one task parked on it
(``trio.lowlevel.wait_task_rescheduled``), woken by ``trio.lowlevel.reschedule`` when a
message arrives into an empty box. No bound, no selective receive, no pids: the floor
under any trio actor runtime. Sender and receiver yield (``trio.lowlevel.checkpoint``)
every :data:`~benchmarks.peers.BUDGET` messages, so neither starves the other.
"""

from __future__ import annotations

import time
from collections import deque
from typing import Any

import trio
import trio.testing

from benchmarks.peers import BUDGET, Probe, rate


class Box:
    """A deque with at most one parked receiver."""

    __slots__ = ("q", "waiter")

    def __init__(self) -> None:
        self.q: deque[Any] = deque()
        self.waiter: trio.lowlevel.Task | None = None

    def put(self, msg: Any) -> None:
        """Append ``msg`` and wake the parked receiver, if any."""
        self.q.append(msg)
        if self.waiter is not None:
            task, self.waiter = self.waiter, None
            trio.lowlevel.reschedule(task)

    async def get(self) -> Any:
        """Take the next message, parking until one arrives. Does not yield otherwise."""
        if not self.q:
            self.waiter = trio.lowlevel.current_task()

            def abort(_: Any) -> trio.lowlevel.Abort:
                self.waiter = None
                return trio.lowlevel.Abort.SUCCEEDED

            await trio.lowlevel.wait_task_rescheduled(abort)
        return self.q.popleft()


async def _one_way(n: int) -> float:
    box = Box()
    done = trio.Event()
    t1 = 0.0

    async def receiver() -> None:
        nonlocal t1
        for i in range(n):
            await box.get()
            if i % BUDGET == BUDGET - 1:
                await trio.lowlevel.checkpoint()
        t1 = time.perf_counter()
        done.set()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(receiver)
        await trio.testing.wait_all_tasks_blocked()
        t0 = time.perf_counter()
        for i in range(n):
            box.put(i)
            if i % BUDGET == BUDGET - 1:
                await trio.lowlevel.checkpoint()
        await done.wait()
    return rate(n, t1 - t0)


def one_way(n: int) -> float:
    """Messages per second from one task to another through a :class:`Box`."""
    return trio.run(_one_way, n)


async def _ping_pong(n: int) -> float:
    a, b = Box(), Box()

    async def ponger() -> None:
        for i in range(n):
            a.put(await b.get())
            if i % BUDGET == BUDGET - 1:
                await trio.lowlevel.checkpoint()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(ponger)
        await trio.testing.wait_all_tasks_blocked()
        t0 = time.perf_counter()
        for i in range(n):
            b.put(i)
            await a.get()
        t1 = time.perf_counter()
    return rate(n, t1 - t0)


def ping_pong(n: int) -> float:
    """Round trips per second between two tasks, each with its own :class:`Box`."""
    return trio.run(_ping_pong, n)


def hold_idle(n: int, before: Probe, after: Probe) -> None:
    """Keep ``n`` tasks parked on their own empty :class:`Box` between the probes."""

    async def idle(box: Box) -> None:
        await box.get()

    async def main() -> None:
        before()
        async with trio.open_nursery() as nursery:
            boxes = [Box() for _ in range(n)]
            for box in boxes:
                nursery.start_soon(idle, box)
            await trio.testing.wait_all_tasks_blocked()
            after()
            nursery.cancel_scope.cancel()

    trio.run(main)
