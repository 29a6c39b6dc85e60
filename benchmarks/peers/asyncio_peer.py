"""The asyncio peer: a task with an ``asyncio.Queue`` as its mailbox.

The queue is bounded at :data:`~benchmarks.peers.MAILBOX_BOUND`, the default regency
mailbox bound. Note asyncio's semantics, measured as they are: ``await queue.put`` and
``await queue.get`` do not yield to the event loop unless they must wait, so a one-way
sender fills the queue before the receiver first runs. A call is a ping-pong: the
request on the server's queue, the reply on the caller's. ``asyncio_task`` is a bare
``asyncio.create_task`` with no queue.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from benchmarks.peers import MAILBOX_BOUND, Probe, rate


def _queue() -> asyncio.Queue[Any]:
    return asyncio.Queue(MAILBOX_BOUND)


async def _settle() -> None:
    """Let every ready task run until it blocks (asyncio has no wait_all_tasks_blocked)."""
    for _ in range(3):
        await asyncio.sleep(0)


async def _one_way(n: int) -> float:
    q = _queue()
    done = asyncio.Event()
    t1 = 0.0

    async def receiver() -> None:
        nonlocal t1
        for _ in range(n):
            await q.get()
        t1 = time.perf_counter()
        done.set()

    task = asyncio.create_task(receiver())
    await _settle()
    t0 = time.perf_counter()
    for i in range(n):
        await q.put(i)
    await done.wait()
    await task
    return rate(n, t1 - t0)


async def _ping_pong(n: int) -> float:
    a, b = _queue(), _queue()

    async def ponger() -> None:
        for _ in range(n):
            await a.put(await b.get())

    task = asyncio.create_task(ponger())
    await _settle()
    t0 = time.perf_counter()
    for i in range(n):
        await b.put(i)
        await a.get()
    t1 = time.perf_counter()
    await task
    return rate(n, t1 - t0)


async def _call(n: int) -> float:
    requests, replies = _queue(), _queue()

    async def server() -> None:
        while True:
            request, reply_to = await requests.get()
            if reply_to is None:
                return
            await reply_to.put(request)

    task = asyncio.create_task(server())
    await _settle()
    t0 = time.perf_counter()
    for i in range(n):
        await requests.put((i, replies))
        await replies.get()
    t1 = time.perf_counter()
    await requests.put((None, None))
    await task
    return rate(n, t1 - t0)


async def _spawn(n: int) -> float:
    left = n
    done = asyncio.Event()

    async def body() -> None:
        nonlocal left
        left -= 1
        if not left:
            done.set()

    tasks = set()
    t0 = time.perf_counter()
    for _ in range(n):
        task = asyncio.create_task(body())
        tasks.add(task)  # asyncio keeps only weak references to tasks
        task.add_done_callback(tasks.discard)
    await done.wait()
    t1 = time.perf_counter()
    await asyncio.gather(*tasks)
    return rate(n, t1 - t0)


def one_way(n: int) -> float:
    """Messages/s from one task to another through an ``asyncio.Queue``."""
    return asyncio.run(_one_way(n))


def ping_pong(n: int) -> float:
    """Round trips/s between two tasks over two queues."""
    return asyncio.run(_ping_pong(n))


def call(n: int) -> float:
    """Calls/s to a queue server that replies on the caller's queue."""
    return asyncio.run(_call(n))


def spawn(n: int) -> float:
    """Bare asyncio tasks created per second, until each has run."""
    return asyncio.run(_spawn(n))


def hold_idle(n: int, before: Probe, after: Probe) -> None:
    """``n`` tasks each waiting on its own empty ``asyncio.Queue``."""

    async def idle(q: asyncio.Queue[Any]) -> None:
        await q.get()

    async def main() -> None:
        before()
        tasks = [asyncio.create_task(idle(_queue())) for _ in range(n)]
        await _settle()
        after()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    asyncio.run(main())


def hold_idle_task(n: int, before: Probe, after: Probe) -> None:
    """``n`` bare asyncio tasks, each waiting on a future that never completes."""

    async def idle() -> None:
        await asyncio.get_running_loop().create_future()

    async def main() -> None:
        before()
        tasks = [asyncio.create_task(idle()) for _ in range(n)]
        await _settle()
        after()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    asyncio.run(main())
