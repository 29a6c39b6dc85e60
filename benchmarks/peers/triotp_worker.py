"""Measures triotp inside its own virtual environment (triotp pins trio < 0.20).

Run by :mod:`benchmarks.peers.triotp_peer` with the venv's interpreter; it imports
nothing from regency. Line protocol on stdin/stdout (see ``LineProtocolPeer`` in
``benchmarks/harness.py``): each request ``"<case> <n>"`` is answered by ``"ok <figure>"``
or ``"error <text>"``. ``--once <case> <n>`` runs a single request and prints the
figure (used for idle memory, which wants a fresh interpreter).

The jobs mirror regency's: a triotp "process" is a task that owns a mailbox
(``triotp.mailbox.open``), a call is ``triotp.gen_server.call``.
"""

from __future__ import annotations

import gc
import os
import sys
import time
import types
from collections.abc import Awaitable, Callable
from typing import Any

import trio
import trio.testing
from triotp import gen_server, mailbox  # type: ignore[import-not-found]


def _rate(n: int, seconds: float) -> float:
    if seconds <= 0:
        raise ValueError(f"{n} units in {seconds} s cannot be timed")
    return n / seconds


async def _open_node() -> None:
    mailbox._init()  # what triotp.node.run does before starting applications


async def one_way(n: int) -> float:
    await _open_node()
    done = trio.Event()
    ready = trio.Event()
    box: dict[str, Any] = {}
    t1 = 0.0

    async def receiver() -> None:
        nonlocal t1
        async with mailbox.open() as mid:
            box["mid"] = mid
            ready.set()
            for _ in range(n):
                await mailbox.receive(mid)
            t1 = time.perf_counter()
            done.set()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(receiver)
        await ready.wait()
        await trio.testing.wait_all_tasks_blocked()
        mid = box["mid"]
        t0 = time.perf_counter()
        for i in range(n):
            await mailbox.send(mid, i)
        await done.wait()
    return _rate(n, t1 - t0)


async def ping_pong(n: int) -> float:
    await _open_node()
    ready = trio.Event()
    box: dict[str, Any] = {}

    async def ponger() -> None:
        async with mailbox.open() as mid:
            box["pong"] = mid
            ready.set()
            for _ in range(n):
                msg = await mailbox.receive(mid)
                await mailbox.send(box["ping"], msg)

    async with trio.open_nursery() as nursery, mailbox.open() as me:
        box["ping"] = me
        nursery.start_soon(ponger)
        await ready.wait()
        await trio.testing.wait_all_tasks_blocked()
        pong = box["pong"]
        t0 = time.perf_counter()
        for i in range(n):
            await mailbox.send(pong, i)
            await mailbox.receive(me)
        t1 = time.perf_counter()
    return _rate(n, t1 - t0)


def _echo_module() -> Any:
    module: Any = types.ModuleType("bench_echo")

    async def init(_arg: object) -> None:
        return None

    async def handle_call(message: object, _caller: object, state: object) -> object:
        return (gen_server.Reply(payload=message), state)

    async def handle_cast(message: object, state: object) -> object:
        return (gen_server.Stop(), state)

    module.init = init
    module.handle_call = handle_call
    module.handle_cast = handle_cast
    return module


async def call(n: int) -> float:
    await _open_node()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(gen_server.start, _echo_module(), None, "echo")
        await trio.testing.wait_all_tasks_blocked()
        t0 = time.perf_counter()
        for i in range(n):
            await gen_server.call("echo", i)
        t1 = time.perf_counter()
        await gen_server.cast("echo", "stop")
    return _rate(n, t1 - t0)


async def spawn(n: int) -> float:
    await _open_node()
    left = n
    done = trio.Event()

    async def process() -> None:
        nonlocal left
        async with mailbox.open():
            left -= 1
            if not left:
                done.set()

    async with trio.open_nursery() as nursery:
        t0 = time.perf_counter()
        for _ in range(n):
            nursery.start_soon(process)
        await done.wait()
        t1 = time.perf_counter()
    return _rate(n, t1 - t0)


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


async def idle_process_memory(n: int) -> float:
    await _open_node()
    gc.collect()
    before = _rss()

    async def idle() -> None:
        async with mailbox.open() as mid:
            await mailbox.receive(mid)

    async with trio.open_nursery() as nursery:
        for _ in range(n):
            nursery.start_soon(idle)
        await trio.testing.wait_all_tasks_blocked()
        gc.collect()
        after = _rss()
        if _EXIT_AT_FIGURE:  # a throwaway interpreter: skip the teardown
            print(f"ok {(after - before) / n!r}", flush=True)
            os._exit(0)
        nursery.cancel_scope.cancel()
    return (after - before) / n


_EXIT_AT_FIGURE = False

CASES: dict[str, Callable[[int], Awaitable[float]]] = {
    "one_way_throughput": one_way,
    "ping_pong": ping_pong,
    "call_round_trip": call,
    "spawn_rate": spawn,
    "idle_process_memory": idle_process_memory,
}


def answer(line: str) -> str:
    case, n = line.split()
    try:
        return f"ok {trio.run(CASES[case], int(n))!r}"
    except Exception as exc:  # reported to the harness, which drops this peer
        return f"error {type(exc).__name__}: {exc}"


def main(argv: list[str]) -> int:
    if argv[:1] == ["--once"]:
        global _EXIT_AT_FIGURE
        _EXIT_AT_FIGURE = True
        print(answer(" ".join(argv[1:3])), flush=True)
        return 0
    for line in sys.stdin:
        if line.strip():
            print(answer(line), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
