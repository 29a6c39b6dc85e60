"""The busy-wait before the event loop sleeps: when it polls, what ends it, who uses it.

The instrument is driven directly (``before_io_wait`` as trio's loop calls it) on a
socket pair: a readable socket ends the poll, so no assertion depends on how fast the
machine is. The multi-process test that shows it answering real replies is in
``test_dist_multiprocess.py``.
"""

from __future__ import annotations

import math
import socket
from collections.abc import Iterator

import attrs
import pytest
import trio

from runtime import busywait
from runtime.busywait import BusyWait, busy_wait_for_run
from runtime.dist import Distribution
from tests.runtime.dist_helpers import SECRET, cluster, wait_until


@attrs.define
class Conn:
    """A connection's traffic times, as ``runtime.dist`` keeps them."""

    sent_at: float
    received_at: float


@pytest.fixture
def pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    a, b = socket.socketpair()
    with a, b:
        yield a, b


def in_trio(fn: object) -> None:
    """Run the synchronous *fn* inside a trio run (the instrument needs its clock)."""

    async def main() -> None:
        fn()  # type: ignore[operator]

    trio.run(main)


def test_a_readable_socket_ends_the_poll(pair: tuple[socket.socket, socket.socket]) -> None:
    a, b = pair

    def check() -> None:
        bw = BusyWait()
        now = trio.current_time()
        bw.add(a.fileno(), Conn(sent_at=now, received_at=now - 1), window=3600.0)
        b.send(b"x")
        bw.before_io_wait(3600.0)  # would spin for an hour if readiness did not end it
        assert (bw.spins, bw.answered) == (1, 1)

    in_trio(check)


def test_the_window_starts_at_the_latest_traffic(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    a, b = pair

    def check() -> None:
        bw = BusyWait()
        now = trio.current_time()
        conn = Conn(sent_at=now - 10, received_at=now - 10)
        bw.add(a.fileno(), conn, window=1.0)
        b.send(b"x")
        bw.before_io_wait(3600.0)  # the last traffic is 10 s old: no poll
        assert bw.spins == 0
        conn.received_at = now  # just received: poll
        bw.before_io_wait(3600.0)
        assert (bw.spins, bw.answered) == (1, 1)
        conn.received_at = math.inf  # a chunk being handled is not traffic
        bw.before_io_wait(3600.0)
        assert bw.spins == 1

    in_trio(check)


def test_no_poll_when_the_loop_has_work_or_nothing_is_registered(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    a, b = pair

    def check() -> None:
        bw = BusyWait()
        now = trio.current_time()
        b.send(b"x")
        bw.before_io_wait(3600.0)  # nothing registered
        bw.add(a.fileno(), Conn(sent_at=now, received_at=now), window=3600.0)
        bw.before_io_wait(0.0)  # runnable tasks: the loop does not wait
        assert bw.spins == 0
        bw.discard(a.fileno())
        bw.discard(a.fileno())  # twice is harmless
        bw.before_io_wait(3600.0)
        assert bw.spins == 0

    in_trio(check)


def test_the_poll_ends_at_the_loop_timeout_or_the_window(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    """Nothing arrives: the poll ends by itself (the test would hang otherwise)."""
    a, _ = pair

    def check() -> None:
        bw = BusyWait()
        now = trio.current_time()
        bw.add(a.fileno(), Conn(sent_at=now, received_at=now), window=3600.0)
        bw.before_io_wait(0.001)  # the loop's next deadline comes first
        bw.discard(a.fileno())
        bw.add(a.fileno(), Conn(sent_at=trio.current_time(), received_at=now), window=0.001)
        bw.before_io_wait(3600.0)  # the window ends first
        assert (bw.spins, bw.answered) == (2, 0)

    in_trio(check)


def test_one_instance_per_run_and_none_on_a_single_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[BusyWait | None] = []

    async def main() -> None:
        seen.append(busy_wait_for_run())
        seen.append(busy_wait_for_run())

    trio.run(main)
    trio.run(main)
    assert seen[0] is not None
    assert seen[0] is seen[1]
    assert seen[2] is not None
    assert seen[2] is not seen[0]
    monkeypatch.setattr(busywait, "_cpus", lambda: 1)
    seen.clear()
    trio.run(main)
    assert seen == [None, None]


@pytest.mark.parametrize("bad", [-0.001, math.nan])
async def test_a_negative_window_is_refused(bad: float) -> None:
    from runtime import Node

    async with Node("n") as node:
        with pytest.raises(ValueError, match="busy_wait"):
            Distribution(node, secret=SECRET, busy_wait=bad)


async def test_connections_are_polled_while_they_last() -> None:
    """Each end of a connection registers its socket, and unregisters it when it ends;
    ``busy_wait=0`` registers nothing."""
    async with cluster("a", "b") as (a, b):
        bw = busy_wait_for_run()
        assert bw is not None
        assert a.dist._busy is bw
        assert b.dist._busy is bw
        await wait_until(lambda: len(bw._conns) == 2)  # a's socket and b's
        async with cluster("c", "d", busy_wait=0) as (c, d):
            assert c.dist._busy is None
            assert d.dist._busy is None
            assert len(bw._conns) == 2
        b.dist.close()
        await wait_until(lambda: not bw._conns)
