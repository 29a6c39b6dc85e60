"""Peers on trio itself: raw memory channels, bare tasks, and anyio (on its trio backend).

``trio_channel`` and ``anyio_stream`` are a task with a bounded memory channel / memory
object stream as its mailbox (buffer :data:`~benchmarks.peers.MAILBOX_BOUND`, the default
regency mailbox bound), senders awaiting ``send`` as a regency sender awaits
``send_wait``. A "call" over channels is a ping-pong: a request on the server's channel,
the reply on the caller's. ``trio_task`` and ``anyio_task`` are bare tasks with no
mailbox at all: the floor for spawning and for an idle process.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import trio
import trio.testing

from benchmarks.peers import MAILBOX_BOUND, Probe, rate

Channel = tuple[Any, Any]  # (send side, receive side)


def _trio_channel() -> Channel:
    return trio.open_memory_channel[Any](MAILBOX_BOUND)


def _anyio_stream() -> Channel:
    return anyio.create_memory_object_stream[Any](MAILBOX_BOUND)


async def _one_way(make: Callable[[], Channel], n: int) -> float:
    tx, rx = make()
    done = trio.Event()
    t1 = 0.0

    async def receiver() -> None:
        nonlocal t1
        for _ in range(n):
            await rx.receive()
        t1 = time.perf_counter()
        done.set()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(receiver)
        await trio.testing.wait_all_tasks_blocked()
        t0 = time.perf_counter()
        for i in range(n):
            await tx.send(i)
        await done.wait()
    return rate(n, t1 - t0)


async def _ping_pong(make: Callable[[], Channel], n: int) -> float:
    a_tx, a_rx = make()
    b_tx, b_rx = make()

    async def ponger() -> None:
        for _ in range(n):
            await a_tx.send(await b_rx.receive())

    async with trio.open_nursery() as nursery:
        nursery.start_soon(ponger)
        await trio.testing.wait_all_tasks_blocked()
        t0 = time.perf_counter()
        for i in range(n):
            await b_tx.send(i)
            await a_rx.receive()
        t1 = time.perf_counter()
    return rate(n, t1 - t0)


async def _call(make: Callable[[], Channel], n: int) -> float:
    """A server loop answering ``(request, reply_channel)`` requests; one caller."""
    req_tx, req_rx = make()
    rep_tx, rep_rx = make()

    async def server() -> None:
        async for request, reply_to in req_rx:
            await reply_to.send(request)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(server)
        await trio.testing.wait_all_tasks_blocked()
        t0 = time.perf_counter()
        for i in range(n):
            await req_tx.send((i, rep_tx))
            await rep_rx.receive()
        t1 = time.perf_counter()
        await req_tx.aclose()
    return rate(n, t1 - t0)


class _Countdown:
    __slots__ = ("done", "left")

    def __init__(self, n: int) -> None:
        self.left = n
        self.done = trio.Event()

    def tick(self) -> None:
        self.left -= 1
        if not self.left:
            self.done.set()


async def _body(countdown: _Countdown) -> None:
    countdown.tick()


async def _spawn_trio(n: int) -> float:
    countdown = _Countdown(n)
    async with trio.open_nursery() as nursery:
        t0 = time.perf_counter()
        for _ in range(n):
            nursery.start_soon(_body, countdown)
        await countdown.done.wait()
        t1 = time.perf_counter()
    return rate(n, t1 - t0)


async def _scoped_body(countdown: _Countdown) -> None:
    with trio.CancelScope():  # what a killable process needs at the least
        await _body(countdown)


async def _spawn_trio_scoped(n: int) -> float:
    countdown = _Countdown(n)
    async with trio.open_nursery() as nursery:
        t0 = time.perf_counter()
        for _ in range(n):
            nursery.start_soon(_scoped_body, countdown)
        await countdown.done.wait()
        t1 = time.perf_counter()
    return rate(n, t1 - t0)


async def _spawn_anyio(n: int) -> float:
    countdown = _Countdown(n)
    async with anyio.create_task_group() as tg:
        t0 = time.perf_counter()
        for _ in range(n):
            tg.start_soon(_body, countdown)
        await countdown.done.wait()
        t1 = time.perf_counter()
    return rate(n, t1 - t0)


def _run(fn: Callable[..., Awaitable[float]], *args: Any) -> float:
    return trio.run(fn, *args)


def trio_channel_one_way(n: int) -> float:
    """Messages/s through a buffered trio memory channel, one awaited send per message."""
    return _run(_one_way, _trio_channel, n)


def anyio_stream_one_way(n: int) -> float:
    """Messages/s through a buffered anyio memory object stream (trio backend)."""
    return _run(_one_way, _anyio_stream, n)


def trio_channel_ping_pong(n: int) -> float:
    """Round trips/s between two tasks over two trio memory channels."""
    return _run(_ping_pong, _trio_channel, n)


def anyio_stream_ping_pong(n: int) -> float:
    """Round trips/s between two tasks over two anyio memory object streams."""
    return _run(_ping_pong, _anyio_stream, n)


def trio_channel_call(n: int) -> float:
    """Calls/s to a channel server that replies on the caller's channel."""
    return _run(_call, _trio_channel, n)


def anyio_stream_call(n: int) -> float:
    """Calls/s to an anyio-stream server that replies on the caller's stream."""
    return _run(_call, _anyio_stream, n)


def trio_task_spawn(n: int) -> float:
    """Bare trio tasks started into a nursery per second, until each has run."""
    return _run(_spawn_trio, n)


def trio_task_scope_spawn(n: int) -> float:
    """Bare trio tasks that each enter one cancel scope, per second: the floor for a
    process that can be killed (trio can only cancel a task through a scope)."""
    return _run(_spawn_trio_scoped, n)


def anyio_task_spawn(n: int) -> float:
    """Bare tasks started into an anyio task group (trio backend) per second."""
    return _run(_spawn_anyio, n)


async def _hold(n: int, before: Probe, after: Probe, make_one: Callable[[], Any]) -> None:
    before()
    async with trio.open_nursery() as nursery:
        keep = []
        for _ in range(n):
            fn, arg = make_one()
            keep.append(arg)
            nursery.start_soon(fn, arg)
        await trio.testing.wait_all_tasks_blocked()
        after()
        nursery.cancel_scope.cancel()


async def _sleep_forever(_: object) -> None:
    await trio.sleep_forever()


async def _receive_one(channel: Channel) -> None:
    await channel[1].receive()


def hold_idle_trio_task(n: int, before: Probe, after: Probe) -> None:
    """``n`` bare trio tasks asleep forever."""
    trio.run(_hold, n, before, after, lambda: (_sleep_forever, None))


def hold_idle_trio_channel(n: int, before: Probe, after: Probe) -> None:
    """``n`` trio tasks each waiting on its own (empty) buffered memory channel."""
    trio.run(_hold, n, before, after, lambda: (_receive_one, _trio_channel()))


def hold_idle_anyio_stream(n: int, before: Probe, after: Probe) -> None:
    """``n`` tasks each waiting on its own (empty) anyio memory object stream."""
    trio.run(_hold, n, before, after, lambda: (_receive_one, _anyio_stream()))


__all__ = [
    "anyio_stream_call",
    "anyio_stream_one_way",
    "anyio_stream_ping_pong",
    "anyio_task_spawn",
    "hold_idle_anyio_stream",
    "hold_idle_trio_channel",
    "hold_idle_trio_task",
    "trio_channel_call",
    "trio_channel_one_way",
    "trio_channel_ping_pong",
    "trio_task_spawn",
]
