"""The transport suite: regency's distribution against the floor of this stack and Erlang's.

Both ends run in separate OS processes on loopback. The far end is a long-lived child
process of the benchmark run (see :mod:`benchmarks.peers.transport_child`); every
measurement opens a fresh connection to it (untimed) and closes it afterwards.

Cases (names fixed by BENCHMARKS.md), measured for regency and every peer in the same
run, alternating:

``one_way_throughput`` (msg/s, higher is better)
    ``n`` small messages (the ints ``0..n-1``) from one process to a process on the
    other node; timed from the first send until the sender has the receiver's count
    back (a ``("sync", pid)`` message after the last one; the count must be ``n``).
    regency: ``runtime.send_wait`` to the sink's pid (backpressure: the peer buffer's
    ``max_buffer``).
``call_round_trip_p50_us``, ``call_round_trip_p99_us`` (microseconds, lower)
    ``n`` calls, one at a time, to an echo server on the other node; each call's round
    trip is a sample. regency: ``runtime.call`` to a ``GenServer``.

Peers:

``raw_tcp_msgpack`` -- the floor, written minimally here: anyio on trio, frames of a
    4-byte length and a msgpack body (the same framing as regency's wire, with the bare
    message as the body), writes batched (flushed at :data:`FLUSH_AT` bytes, or when
    the sender yields: before waiting for a reply), bodies decoded with
    ``msgpack.Unpacker``.
``raw_tcp_unbatched`` -- the same with one ``send`` per message.
``erlang`` -- two ``erl -name ...@127.0.0.1`` nodes (``+S 2`` each): ``!`` to a pid on
    the other node, ``gen_server:call`` to a server there.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterator, Mapping
from typing import Any

import anyio
import attrs
import structlog
import trio

import runtime
from benchmarks.drivers import run_driver
from benchmarks.harness import Case, Measure, Metric, Skip, SuiteContext
from benchmarks.peers import rate
from benchmarks.peers.figures_peer import FiguresPeer, first, percentiles
from benchmarks.peers.transport_child import (
    CHILD_NODE,
    LENGTH,
    PARENT_NODE,
    READ_SIZE,
    FrameReader,
    frame,
    secret,
)
from benchmarks.peers.transport_peers import ChildServer, erlang_worker
from runtime.busywait import default_busy_wait
from runtime.dist import DEFAULT_MAX_BUFFER, Distribution

__all__ = [
    "FLUSH_AT",
    "FULL",
    "HOST",
    "QUICK",
    "Servers",
    "Sizes",
    "build_cases",
    "cases",
    "floor_calls",
    "floor_one_way",
    "regency_calls",
    "regency_one_way",
    "start_servers",
]

HOST = "127.0.0.1"
FLUSH_AT = 64 * 1024
"""The batched floor flushes its write buffer at this many bytes."""

CALL_PERCENTILES = percentiles({"call_round_trip_p50_us": 50, "call_round_trip_p99_us": 99})


@attrs.frozen
class Sizes:
    """Messages per one-way measurement, calls per round-trip measurement."""

    one_way: int
    calls: int


QUICK = Sizes(one_way=100_000, calls=2_000)
FULL = Sizes(one_way=500_000, calls=10_000)


# --------------------------------------------------------------------------- regency


async def _with_remote_driver(port: int, driver: Any) -> None:
    """Connect a fresh node to the child node at ``port``; run ``driver`` as a process."""
    async with runtime.Node(PARENT_NODE) as node:
        dist = await Distribution(node, secret=secret()).start()
        await dist.connect(HOST, port, CHILD_NODE)
        await run_driver(node, driver)


@contextlib.contextmanager
def _warnings_dropped() -> Iterator[None]:
    """Drop structlog events below ERROR (a measurement's node stops with a warning)."""
    saved = structlog.get_config()
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.ERROR))
    try:
        yield
    finally:
        structlog.configure(**saved)


def regency_one_way(port: int, n: int) -> float:
    """Messages/s from a process here to the sink on the child node at ``port``."""
    span: list[float] = []

    async def driver() -> None:
        sink = await runtime.call(runtime.Name("echo", CHILD_NODE), "sink")
        me = runtime.self_pid()
        send_wait = runtime.send_wait
        t0 = time.perf_counter()
        for i in range(n):
            await send_wait(sink, i)
        runtime.send(sink, ("sync", me))
        count = await runtime.receive(timeout=60)
        span.append(time.perf_counter() - t0)
        if count != n:
            raise RuntimeError(f"the sink counted {count} messages of {n}")

    with _warnings_dropped():
        trio.run(_with_remote_driver, port, driver)
    return rate(n, span[0])


def regency_calls(port: int, n: int) -> list[float]:
    """Each call's round trip (us) to the echo server on the child node at ``port``."""
    samples: list[float] = []

    async def driver() -> None:
        echo = await runtime.call(runtime.Name("echo", CHILD_NODE), "pid")
        call = runtime.call
        clock = time.perf_counter
        for i in range(n):
            t0 = clock()
            if await call(echo, i) != i:
                raise RuntimeError("the echo server answered something else")
            samples.append((clock() - t0) * 1e6)

    with _warnings_dropped():
        trio.run(_with_remote_driver, port, driver)
    return samples


# --------------------------------------------------------------------------- the floor


async def _floor_connect(port: int, batched: bool) -> Any:
    stream = await anyio.connect_tcp(HOST, port)
    await stream.send(frame(["mode", "batched" if batched else "unbatched"]))
    return stream


async def _floor_reply(stream: Any, reader: FrameReader) -> Any:
    while True:
        values = reader.feed(await stream.receive(READ_SIZE))
        if values:
            if len(values) != 1:
                raise RuntimeError(f"expected one reply, got {len(values)}")
            return values[0]


async def _floor_one_way(port: int, n: int, batched: bool) -> float:
    import msgpack

    packb = msgpack.packb
    length = LENGTH.pack
    stream = await _floor_connect(port, batched)
    reader = FrameReader()
    async with stream:
        t0 = time.perf_counter()
        if batched:
            buf = bytearray()
            for i in range(n):
                body = packb(i)
                buf += length(len(body))
                buf += body
                if len(buf) >= FLUSH_AT:
                    await stream.send(buf)
                    buf = bytearray()
            buf += frame(["sync"])
            await stream.send(buf)
        else:
            send = stream.send
            for i in range(n):
                body = packb(i)
                await send(length(len(body)) + body)
            await send(frame(["sync"]))
        count = await _floor_reply(stream, reader)
        t1 = time.perf_counter()
    if count != n:
        raise RuntimeError(f"the floor server counted {count} messages of {n}")
    return rate(n, t1 - t0)


async def _floor_calls(port: int, n: int, batched: bool) -> list[float]:
    stream = await _floor_connect(port, batched)
    reader = FrameReader()
    samples: list[float] = []
    clock = time.perf_counter
    async with stream:
        for i in range(n):
            t0 = clock()
            await stream.send(frame(["call", i]))  # the caller yields: flush
            if await _floor_reply(stream, reader) != i:
                raise RuntimeError("the floor server answered something else")
            samples.append((clock() - t0) * 1e6)
    return samples


def floor_one_way(port: int, n: int, *, batched: bool) -> float:
    """Messages/s over a raw anyio stream of msgpack frames to the floor server."""
    return trio.run(_floor_one_way, port, n, batched)


def floor_calls(port: int, n: int, *, batched: bool) -> list[float]:
    """Each request/reply round trip (us) over a raw anyio stream to the floor server."""
    return trio.run(_floor_calls, port, n, batched)


# --------------------------------------------------------------------------- cases


@attrs.frozen
class Servers:
    """The far ends of one suite run."""

    regency: ChildServer
    floor: ChildServer
    erlang: FiguresPeer | Skip


def start_servers(ctx: SuiteContext) -> Servers:
    """Start the regency child node, the floor server and Erlang's pair of nodes."""
    regency = ctx.resources.enter_context(ChildServer("regency"))
    floor = ctx.resources.enter_context(ChildServer("floor"))
    erlang = erlang_worker()
    if not isinstance(erlang, Skip):
        ctx.resources.enter_context(erlang)
    return Servers(regency=regency, floor=floor, erlang=erlang)


def _calls_measure(fn: Any, port: int, **kw: Any) -> Measure:
    def run(n: int) -> Mapping[str, float]:
        return CALL_PERCENTILES(fn(port, n, **kw))

    return run


def _one_way_measure(fn: Any, port: int, **kw: Any) -> Measure:
    def run(n: int) -> float:
        return float(fn(port, n, **kw))

    return run


def _erlang(peer: FiguresPeer | Skip, case_name: str, reduce: Any) -> Measure | Skip:
    return peer if isinstance(peer, Skip) else peer.measure_with(case_name, reduce)


def build_cases(sizes: Sizes, servers: Servers) -> list[Case]:
    """The suite's cases for ``sizes`` against ``servers``."""
    regency_port, floor_port = servers.regency.port, servers.floor.port
    params = {
        "host": HOST,
        "processes": "separate OS processes",
        "message": "int",
        "floor_flush_bytes": FLUSH_AT,
        "max_buffer": DEFAULT_MAX_BUFFER,
        "busy_wait_s": default_busy_wait(),
    }
    one_way = Case(
        metrics=(Metric("one_way_throughput", "msg/s", "higher"),),
        subject=_one_way_measure(regency_one_way, regency_port),
        peers={
            "raw_tcp_msgpack": _one_way_measure(floor_one_way, floor_port, batched=True),
            "raw_tcp_unbatched": _one_way_measure(floor_one_way, floor_port, batched=False),
            "erlang": _erlang(servers.erlang, "one_way_throughput", first),
        },
        size=sizes.one_way,
        params=params,
    )
    calls = Case(
        metrics=(
            Metric("call_round_trip_p50_us", "us", "lower"),
            Metric("call_round_trip_p99_us", "us", "lower"),
        ),
        subject=_calls_measure(regency_calls, regency_port),
        peers={
            "raw_tcp_msgpack": _calls_measure(floor_calls, floor_port, batched=True),
            "raw_tcp_unbatched": _calls_measure(floor_calls, floor_port, batched=False),
            "erlang": _erlang(servers.erlang, "call_round_trip", CALL_PERCENTILES),
        },
        size=sizes.calls,
        size_param="calls",
        params={**params, "call_timeout_s": 5.0},
    )
    return [one_way, calls]


def cases(ctx: SuiteContext) -> Iterator[Case]:
    """The transport suite (see the module docstring)."""
    servers = start_servers(ctx)
    yield from build_cases(QUICK if ctx.quick else FULL, servers)
