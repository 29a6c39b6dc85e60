"""The far end of the transport suite, in its own OS process.

``python transport_child.py regency|floor`` listens on 127.0.0.1 (a free port), prints
``ready <port>`` on stdout, serves until its stdin closes, then exits.

``regency``
    A :class:`runtime.Node` named :data:`CHILD_NODE` with a :class:`runtime.dist.Distribution`
    (secret from ``REGENCY_SECRET``, else :data:`DEFAULT_SECRET`), running a sink process
    registered as ``"sink"`` (counts messages; a ``("sync", pid)`` message is answered
    with the count, which restarts at 0) and an echo :class:`runtime.GenServer`
    registered as ``"echo"`` (replies with the request; ``"sink"`` answers the sink's pid,
    ``"pid"`` its own).
``floor``
    The floor of this stack, written minimally: anyio on trio, frames of a 4-byte
    big-endian length and a msgpack body, bodies decoded with ``msgpack.Unpacker``. The
    first frame of a connection says ``["mode", "batched"|"unbatched"]``. An int is
    counted; ``["sync"]`` is answered with the count; ``["call", x]`` with ``x``.
    Batched: the replies to one received chunk go out in one write; unbatched: one write
    per reply.
"""

from __future__ import annotations

import os
import struct
import sys
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import anyio
import anyio.abc
import msgpack
import trio

CHILD_NODE = "bench_transport_child"
PARENT_NODE = "bench_transport_parent"
DEFAULT_SECRET = b"regency-transport-benchmark-secret"
SECRET_ENV = "REGENCY_SECRET"
LENGTH = struct.Struct(">I")
READ_SIZE = 256 * 1024


def secret() -> bytes:
    """The shared secret of the benchmark's two nodes."""
    value = os.environ.get(SECRET_ENV)
    return value.encode() if value else DEFAULT_SECRET


def frame(value: object) -> bytes:
    """One floor frame: the 4-byte length, then the msgpack body."""
    body: bytes = msgpack.packb(value)
    return LENGTH.pack(len(body)) + body


class FrameReader:
    """Splits a byte stream into frames and decodes their bodies with an Unpacker."""

    def __init__(self) -> None:
        self._buf = bytearray()
        self._unpacker = msgpack.Unpacker()

    def feed(self, data: bytes) -> list[Any]:
        """Every value completed by ``data``, in order."""
        buf = self._buf
        buf += data
        n = len(buf)
        off = 0
        feed = self._unpacker.feed
        unpack_from = LENGTH.unpack_from
        with memoryview(buf) as view:
            while n - off >= 4:
                (size,) = unpack_from(buf, off)
                end = off + 4 + size
                if end > n:
                    break
                feed(view[off + 4 : end])
                off = end
        del buf[:off]
        return list(self._unpacker)


async def _floor_connection(stream: anyio.abc.SocketStream) -> None:
    reader = FrameReader()
    count = 0
    batched = True
    async with stream:
        while True:
            try:
                data = await stream.receive(READ_SIZE)
            except (anyio.EndOfStream, anyio.BrokenResourceError):
                return
            out = bytearray()
            for value in reader.feed(data):
                if type(value) is int:
                    count += 1
                    continue
                tag = value[0]
                if tag == "call":
                    reply = frame(value[1])
                elif tag == "sync":
                    reply, count = frame(count), 0
                else:  # ["mode", ...]
                    batched = value[1] == "batched"
                    continue
                if batched:
                    out += reply
                else:
                    await stream.send(reply)
            if out:
                await stream.send(bytes(out))


async def _wait_stdin_closed() -> None:
    await trio.to_thread.run_sync(sys.stdin.read, abandon_on_cancel=True)


async def serve_floor() -> None:
    """Serve floor connections until stdin closes."""
    listener = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=0)
    port = listener.extra(anyio.abc.SocketAttribute.local_port)
    async with anyio.create_task_group() as tg:
        tg.start_soon(listener.serve, _floor_connection)
        print(f"ready {port}", flush=True)
        await _wait_stdin_closed()
        tg.cancel_scope.cancel()


async def serve_regency() -> None:
    """Run the child node (sink and echo server) until stdin closes."""
    import logging

    import structlog

    import runtime
    from runtime.dist import Distribution

    # stdout carries the ready line only: errors go to stderr, the rest is dropped.
    structlog.configure(
        wrapper_class=structlog.make_filtering_bound_logger(logging.ERROR),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
    )

    class Echo(runtime.GenServer):
        async def handle_call(self, request: Any, from_: runtime.From) -> Any:
            if request == "sink":
                return runtime.whereis("sink")
            if request == "pid":
                return runtime.self_pid()
            return request

    async def sink() -> None:
        count = 0
        receive = runtime.receive
        while True:
            msg = await receive()
            if type(msg) is int:
                count += 1
            else:
                runtime.send(msg[1], count)
                count = 0

    async with runtime.Node(CHILD_NODE) as node:
        dist = await Distribution(node, secret=secret()).start(listen=("127.0.0.1", 0))
        assert dist.address is not None
        node.spawn(sink, name="sink")
        await node.start_server(Echo, name="echo")
        print(f"ready {dist.address[1]}", flush=True)
        await _wait_stdin_closed()


def main(argv: list[str]) -> int:
    if argv[:1] == ["floor"]:
        trio.run(serve_floor)
    elif argv[:1] == ["regency"]:
        trio.run(serve_regency)
    else:
        print("usage: transport_child.py regency|floor", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
