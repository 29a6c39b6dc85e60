"""The messaging suite: regency's processes and mailboxes against their peers.

Cases (names fixed by BENCHMARKS.md), each measured for regency and every peer with the
same number of units, in the same run, alternating:

``one_way_throughput`` (msg/s)
    One process sends ``n`` integers to another with an awaited send (regency:
    ``runtime.send_wait``, backpressure at the mailbox bound), the other receives them;
    timed from the first send until the last message is received.
``ping_pong`` (round trips/s)
    Two processes bounce a message ``n`` times (regency: ``runtime.send`` +
    ``runtime.receive``).
``call_round_trip`` (calls/s)
    A process calls an echo server ``n`` times (regency: ``runtime.call`` to a
    ``GenServer``, default timeout; channel and queue peers: a request carrying the
    caller's reply channel, i.e. a ping-pong; the limit: its ping-pong).
``spawn_rate`` (processes/s)
    A process spawns ``n`` processes that each count themselves down and end; timed
    until the last one has run.
``idle_process_memory`` (bytes per process, lower is better)
    ``n`` processes blocked waiting for a message, measured as RSS growth in a fresh
    interpreter forked from one clean parent for every figure (see
    :mod:`benchmarks.peers.idle_memory`), triotp in a fresh venv interpreter; Erlang by
    ``erlang:memory(processes)``. pykka's thread-per-actor is measured over at most
    :data:`PYKKA_MEMORY_CAP` actors (recorded in ``params``).

Peers: ``limit`` (a deque and a parked-task wake-up, the floor on this stack),
``trio_channel``, ``trio_task``, ``anyio_stream``, ``anyio_task``, ``asyncio_queue``,
``asyncio_task``, ``triotp`` (own venv, subprocess), ``pykka``, ``erlang`` (escript).
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping
from typing import Any

import attrs
import trio
import trio.testing

import runtime
from benchmarks.harness import Case, LineProtocolPeer, Measure, Skip, SuiteContext, case
from benchmarks.peers import (
    Probe,
    asyncio_peer,
    erlang_peer,
    idle_memory,
    limit,
    pykka_peer,
    rate,
    trio_peers,
    triotp_peer,
)

__all__ = [
    "FULL",
    "PYKKA_MEMORY_CAP",
    "QUICK",
    "Echo",
    "Sizes",
    "Workers",
    "build_cases",
    "cases",
    "hold_idle_regency",
    "regency_call",
    "regency_one_way",
    "regency_ping_pong",
    "regency_spawn",
    "start_workers",
]

PYKKA_MEMORY_CAP = 2_000
"""At most this many pykka actors (one OS thread each) for idle memory."""


@attrs.frozen
class Sizes:
    """Units of work per measurement, per case."""

    one_way: int
    ping_pong: int
    call: int
    spawn: int
    idle: int


QUICK = Sizes(one_way=50_000, ping_pong=10_000, call=10_000, spawn=2_000, idle=5_000)
FULL = Sizes(one_way=200_000, ping_pong=50_000, call=50_000, spawn=20_000, idle=50_000)


# --------------------------------------------------------------------------- regency


async def _regency_one_way(n: int) -> float:
    done = trio.Event()
    span = [0.0, 0.0]

    async def receiver() -> None:
        for _ in range(n):
            await runtime.receive()
        span[1] = time.perf_counter()
        done.set()

    async def sender(to: runtime.Pid) -> None:
        span[0] = time.perf_counter()
        for i in range(n):
            await runtime.send_wait(to, i)

    async with runtime.Node("bench") as node:
        receiver_pid = node.spawn(receiver)
        await trio.testing.wait_all_tasks_blocked()
        node.spawn(sender, receiver_pid)
        await done.wait()
    return rate(n, span[1] - span[0])


async def _regency_ping_pong(n: int) -> float:
    done = trio.Event()
    span = [0.0, 0.0]

    async def ponger() -> None:
        for _ in range(n):
            frm, msg = await runtime.receive()
            runtime.send(frm, msg)

    async def pinger(to: runtime.Pid) -> None:
        me = runtime.self_pid()
        span[0] = time.perf_counter()
        for i in range(n):
            runtime.send(to, (me, i))
            await runtime.receive()
        span[1] = time.perf_counter()
        done.set()

    async with runtime.Node("bench") as node:
        ponger_pid = node.spawn(ponger)
        await trio.testing.wait_all_tasks_blocked()
        node.spawn(pinger, ponger_pid)
        await done.wait()
    return rate(n, span[1] - span[0])


class Echo(runtime.GenServer):
    """Replies to every call with the request."""

    async def handle_call(self, request: Any, from_: runtime.From) -> Any:
        """Echo the request."""
        return request


async def _regency_call(n: int) -> float:
    done = trio.Event()
    span = [0.0, 0.0]

    async def caller(server: runtime.Pid) -> None:
        span[0] = time.perf_counter()
        for i in range(n):
            await runtime.call(server, i)
        span[1] = time.perf_counter()
        done.set()

    async with runtime.Node("bench") as node:
        server = await node.start_server(Echo)
        await trio.testing.wait_all_tasks_blocked()
        node.spawn(caller, server)
        await done.wait()
    return rate(n, span[1] - span[0])


async def _regency_spawn(n: int) -> float:
    done = trio.Event()
    span = [0.0, 0.0]
    left = n

    async def body() -> None:
        nonlocal left
        left -= 1
        if not left:
            span[1] = time.perf_counter()
            done.set()

    async def spawner() -> None:
        span[0] = time.perf_counter()
        for _ in range(n):
            runtime.spawn(body)

    async with runtime.Node("bench") as node:
        node.spawn(spawner)
        await done.wait()
    return rate(n, span[1] - span[0])


def regency_one_way(n: int) -> float:
    """Messages/s from one regency process to another with ``send_wait``."""
    return trio.run(_regency_one_way, n)


def regency_ping_pong(n: int) -> float:
    """Round trips/s between two regency processes."""
    return trio.run(_regency_ping_pong, n)


def regency_call(n: int) -> float:
    """Calls/s from a regency process to an echo GenServer."""
    return trio.run(_regency_call, n)


def regency_spawn(n: int) -> float:
    """Regency processes spawned per second (from a process), until each has run."""
    return trio.run(_regency_spawn, n)


def hold_idle_regency(n: int, before: Probe, after: Probe) -> None:
    """``n`` regency processes blocked in ``receive()`` on one node, between the probes."""

    async def idle() -> None:
        await runtime.receive()

    async def main() -> None:
        async with runtime.Node("bench") as node:
            await trio.testing.wait_all_tasks_blocked()
            before()
            for _ in range(n):
                node.spawn(idle)
            await trio.testing.wait_all_tasks_blocked()
            after()

    trio.run(main)


# --------------------------------------------------------------------------- peers


def _pykka(measure: Measure) -> Measure | Skip:
    reason = pykka_peer.missing()
    return Skip(reason) if reason else measure


def _pykka_idle(idle: LineProtocolPeer) -> Measure:
    def run(n: int) -> float:
        return idle.request("pykka", min(n, PYKKA_MEMORY_CAP))

    return run


def _remote(worker: LineProtocolPeer | Skip, case_name: str) -> Measure | Skip:
    return worker if isinstance(worker, Skip) else worker.measure(case_name)


@attrs.frozen
class Workers:
    """The subprocess peers of one suite run."""

    triotp: LineProtocolPeer | Skip
    triotp_python: Any  # Path of the venv interpreter, or a Skip
    erlang: LineProtocolPeer | Skip
    idle: LineProtocolPeer  # the idle-memory fork server


def start_workers(ctx: SuiteContext) -> Workers:
    """Create (on first use) and start the triotp and Erlang subprocess peers."""
    python = triotp_peer.ensure_venv(ctx.note)
    triotp: LineProtocolPeer | Skip
    if isinstance(python, Skip):
        triotp = python
    else:
        triotp = ctx.resources.enter_context(triotp_peer.worker(python))
    erlang = erlang_peer.messaging_worker()
    if not isinstance(erlang, Skip):
        ctx.resources.enter_context(erlang)
    idle = ctx.resources.enter_context(idle_memory.server())
    return Workers(triotp=triotp, triotp_python=python, erlang=erlang, idle=idle)


def _triotp_idle(workers: Workers) -> Measure | Skip:
    python = workers.triotp_python
    if isinstance(python, Skip):
        return python

    def run(n: int) -> float:
        return triotp_peer.measure_once(python, "idle_process_memory", n)

    return run


def build_cases(sizes: Sizes, workers: Workers) -> list[Case]:
    """The suite's cases for ``sizes``, with ``workers`` as the subprocess peers."""
    remote = {
        name: {"triotp": _remote(workers.triotp, name), "erlang": _remote(workers.erlang, name)}
        for name in ("one_way_throughput", "ping_pong", "call_round_trip", "spawn_rate")
    }
    bound = {"mailbox_bound": runtime.DEFAULT_BOUND}
    idle = workers.idle
    peers_one_way: Mapping[str, Measure | Skip] = {
        "limit": limit.one_way,
        "trio_channel": trio_peers.trio_channel_one_way,
        "anyio_stream": trio_peers.anyio_stream_one_way,
        "asyncio_queue": asyncio_peer.one_way,
        **remote["one_way_throughput"],
        "pykka": _pykka(pykka_peer.one_way),
    }
    return [
        case(
            "one_way_throughput",
            "msg/s",
            "higher",
            subject=regency_one_way,
            peers=peers_one_way,
            size=sizes.one_way,
            params=bound,
        ),
        case(
            "ping_pong",
            "rt/s",
            "higher",
            subject=regency_ping_pong,
            peers={
                "limit": limit.ping_pong,
                "trio_channel": trio_peers.trio_channel_ping_pong,
                "anyio_stream": trio_peers.anyio_stream_ping_pong,
                "asyncio_queue": asyncio_peer.ping_pong,
                **remote["ping_pong"],
                "pykka": _pykka(pykka_peer.ping_pong),
            },
            size=sizes.ping_pong,
            size_param="round_trips",
        ),
        case(
            "call_round_trip",
            "calls/s",
            "higher",
            subject=regency_call,
            peers={
                "limit": limit.ping_pong,
                "trio_channel": trio_peers.trio_channel_call,
                "anyio_stream": trio_peers.anyio_stream_call,
                "asyncio_queue": asyncio_peer.call,
                **remote["call_round_trip"],
                "pykka": _pykka(pykka_peer.call),
            },
            size=sizes.call,
            size_param="calls",
            params={"call_timeout_s": 5.0},
        ),
        case(
            "spawn_rate",
            "proc/s",
            "higher",
            subject=regency_spawn,
            peers={
                "trio_task": trio_peers.trio_task_spawn,
                "trio_task_scope": trio_peers.trio_task_scope_spawn,
                "anyio_task": trio_peers.anyio_task_spawn,
                "asyncio_task": asyncio_peer.spawn,
                **remote["spawn_rate"],
                "pykka": _pykka(pykka_peer.spawn),
            },
            size=sizes.spawn,
            size_param="processes",
        ),
        case(
            "idle_process_memory",
            "bytes",
            "lower",
            subject=idle.measure("regency"),
            peers={
                "limit": idle.measure("limit"),
                "trio_task": idle.measure("trio_task"),
                "trio_channel": idle.measure("trio_channel"),
                "anyio_stream": idle.measure("anyio_stream"),
                "asyncio_queue": idle.measure("asyncio_queue"),
                "asyncio_task": idle.measure("asyncio_task"),
                "triotp": _triotp_idle(workers),
                "erlang": _remote(workers.erlang, "idle_process_memory"),
                "pykka": _pykka(_pykka_idle(idle)),
            },
            size=sizes.idle,
            size_param="processes",
            params={
                "method": "rss_delta_forked_interpreter; erlang: erlang:memory(processes)",
                "pykka_processes": min(sizes.idle, PYKKA_MEMORY_CAP),
            },
            warmup_size=0,
        ),
    ]


def cases(ctx: SuiteContext) -> Iterator[Case]:
    """The messaging suite (see the module docstring)."""
    workers = start_workers(ctx)
    yield from build_cases(QUICK if ctx.quick else FULL, workers)
