"""The busy-wait before the event loop sleeps: when it polls, what ends it, who uses it.

The instrument is driven directly (``before_io_wait`` as trio's loop calls it) on a
socket pair: a readable socket ends the poll, so no assertion depends on how fast the
machine is. The multi-process test that shows it answering real replies is in
``test_dist_multiprocess.py``.
"""

from __future__ import annotations

import math
import select
import socket
import time
from collections.abc import Iterator

import anyio
import attrs
import pytest
import trio
import trio.testing

from runtime import busywait
from runtime.busywait import BusyWait, busy_wait_for_run
from runtime.dist import Distribution
from runtime.pid import Name
from tests.runtime.dist_helpers import BOUND, SECRET, Echo, cluster, wait_until


@attrs.define(eq=False)
class Conn:
    """A connection's last traffic, as ``runtime.dist`` keeps it."""

    active_at: float
    active_out: bool = True
    received_at: float = 0.0


@pytest.fixture
def pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    a, b = socket.socketpair()
    with a, b:
        a.setblocking(False)
        yield a, b


def busy() -> BusyWait:
    """An instance on this run's IO wait, driven by the test (not installed)."""
    fd = busywait._loop_fd()
    assert fd is not None
    return BusyWait(fd)


async def armed(nursery: trio.Nursery, sock: socket.socket) -> None:
    """Have a task wait for *sock* to be readable, as a connection's reader does."""
    nursery.start_soon(trio.lowlevel.wait_readable, sock)
    await trio.testing.wait_all_tasks_blocked()


async def test_a_ready_socket_ends_the_poll(pair: tuple[socket.socket, socket.socket]) -> None:
    a, b = pair
    bw = busy()
    conn = Conn(active_at=trio.current_time())
    bw.watch(conn, 60.0)
    async with trio.open_nursery() as nursery:
        await armed(nursery, a)
        b.send(b"x")
        bw.before_io_wait(60.0)  # would poll for a minute if the event did not end it
        assert (bw.spins, bw.answered) == (1, 1)
    bw.unwatch(conn)


async def test_a_worker_threads_result_ends_the_poll() -> None:
    """Not only sockets: a thread reporting back (an fsync done) is an event too."""
    bw = busy()
    conn = Conn(active_at=trio.current_time())
    bw.watch(conn, 60.0)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(trio.to_thread.run_sync, time.sleep, 0.01)
        await trio.testing.wait_all_tasks_blocked()
        bw.before_io_wait(60.0)
        assert (bw.spins, bw.answered) == (1, 1)
    bw.unwatch(conn)


async def test_the_window_starts_at_the_latest_traffic(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    a, b = pair
    bw = busy()
    now = trio.current_time()
    conn = Conn(active_at=now - 10)
    bw.watch(conn, 1.0)
    async with trio.open_nursery() as nursery:
        await armed(nursery, a)
        b.send(b"x")
        bw.before_io_wait(60.0)  # the last traffic is 10 s old: no poll
        assert bw.spins == 0
        conn.active_at = trio.current_time()  # just sent or received: poll
        bw.before_io_wait(60.0)
        assert (bw.spins, bw.answered) == (1, 1)
    bw.unwatch(conn)


async def test_no_poll_when_the_loop_has_work_or_nothing_is_watched() -> None:
    bw = busy()
    bw.before_io_wait(60.0)  # nothing watched
    conn = Conn(active_at=trio.current_time())
    bw.watch(conn, 60.0)
    bw.before_io_wait(0.0)  # runnable tasks: the loop does not wait
    assert bw.spins == 0
    bw.unwatch(conn)
    bw.unwatch(conn)  # twice is harmless
    bw.before_io_wait(60.0)
    assert bw.spins == 0


async def test_the_poll_ends_at_the_loop_timeout_or_the_window() -> None:
    """Nothing is ready: the poll ends by itself (the test would take minutes otherwise)."""
    bw = busy()
    conn = Conn(active_at=trio.current_time())
    bw.watch(conn, 60.0)
    bw.before_io_wait(0.001)  # the loop's next deadline comes first
    bw.watch(conn, 0.001)
    conn.active_at = trio.current_time()
    bw.before_io_wait(60.0)  # the window ends first
    assert (bw.spins, bw.answered) == (2, 0)
    bw.unwatch(conn)


@pytest.mark.skipif(
    not hasattr(select, "epoll") and not hasattr(select, "kqueue"), reason="no epoll or kqueue"
)
async def test_a_window_wasted_stops_polling_that_way_only() -> None:
    """After a poll that the window ended with nothing ready, a wait after traffic the
    same way is not polled (a server whose next request comes much later stops
    spinning after each reply); waits after traffic the other way still are."""
    bw = busy()
    conn = Conn(active_at=trio.current_time(), active_out=True)
    bw.watch(conn, 0.001)
    bw.before_io_wait(60.0)  # nothing comes: wasted
    assert (bw.spins, bw.answered, bw.skipped) == (1, 0, 0)
    conn.active_at = trio.current_time()  # sent again
    bw.before_io_wait(60.0)
    assert (bw.spins, bw.skipped) == (1, 1)
    conn.active_at = trio.current_time()
    conn.active_out = False  # received: that way has not failed
    bw.before_io_wait(60.0)
    assert (bw.spins, bw.skipped) == (2, 1)
    bw.unwatch(conn)


async def test_traffic_within_a_skipped_window_resumes_polling(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    a, b = pair
    bw = busy()
    conn = Conn(active_at=trio.current_time(), active_out=True)
    bw.watch(conn, 0.001)
    bw.before_io_wait(60.0)  # wasted: polls after sending stop
    bw.watch(conn, 60.0)
    conn.active_at = trio.current_time()
    bw.before_io_wait(60.0)  # skipped, and watched for what comes in its window
    assert (bw.spins, bw.skipped) == (1, 1)
    conn.received_at = trio.current_time()  # the answer came within it
    async with trio.open_nursery() as nursery:
        await armed(nursery, a)
        b.send(b"x")
        conn.active_at = trio.current_time()  # and this node sent again
        bw.before_io_wait(60.0)  # polled again (and answered at once)
        assert (bw.spins, bw.answered, bw.skipped) == (2, 1, 1)
    bw.unwatch(conn)


async def test_traffic_after_a_skipped_window_does_not_resume_polling(
    autojump_clock: trio.testing.MockClock,
) -> None:
    bw = busy()
    conn = Conn(active_at=trio.current_time(), active_out=True)
    bw.watch(conn, 0.001)
    bw.before_io_wait(60.0)  # wasted
    conn.active_at = trio.current_time()
    bw.before_io_wait(60.0)  # skipped: its window ends 1 ms later
    await trio.sleep(0.002)
    conn.received_at = conn.active_at = trio.current_time()  # the answer came later
    conn.active_out = True
    bw.before_io_wait(60.0)
    assert (bw.spins, bw.skipped) == (1, 2)
    bw.unwatch(conn)


def test_trio_exposes_its_io_wait() -> None:
    """Busy-waiting needs the descriptor of trio's IO wait, which trio keeps private:
    a trio release that moves it turns busy-waiting off, and fails this test."""
    fds: list[int | None] = []

    async def main() -> None:
        fds.append(busywait._loop_fd())

    trio.run(main)
    assert isinstance(fds[0], int)


def test_one_instance_per_run_and_none_on_a_single_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[BusyWait | None] = []

    async def main() -> None:
        seen.append(busy_wait_for_run())
        seen.append(busy_wait_for_run())

    monkeypatch.setattr(busywait, "_cpus", lambda: 2)  # whatever this machine has
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


def test_the_default_window_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("REGENCY_BUSY_WAIT", raising=False)
    assert busywait.default_busy_wait() == busywait.DEFAULT_BUSY_WAIT
    monkeypatch.setenv("REGENCY_BUSY_WAIT", "0.002")
    assert busywait.default_busy_wait() == 0.002
    monkeypatch.setenv("REGENCY_BUSY_WAIT", "0")
    assert busywait.default_busy_wait() == 0
    for bad in ("-1", "nan", "fast", ""):
        monkeypatch.setenv("REGENCY_BUSY_WAIT", bad)
        with pytest.raises(ValueError, match="REGENCY_BUSY_WAIT must be 0 or more seconds"):
            busywait.default_busy_wait()


async def test_a_distribution_without_a_window_takes_the_environments(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from runtime import Node

    monkeypatch.setenv("REGENCY_BUSY_WAIT", "0")
    async with Node("n") as node:
        assert Distribution(node, secret=SECRET).busy_wait == 0
        assert Distribution(node, secret=SECRET, busy_wait=0.001).busy_wait == 0.001
        monkeypatch.setenv("REGENCY_BUSY_WAIT", "-1")
        with pytest.raises(ValueError, match="REGENCY_BUSY_WAIT"):
            Distribution(node, secret=SECRET)


@pytest.mark.parametrize("bad", [-0.001, math.nan])
async def test_a_negative_window_is_refused(bad: float) -> None:
    from runtime import Node

    async with Node("n") as node:
        with pytest.raises(ValueError, match="busy_wait"):
            Distribution(node, secret=SECRET, busy_wait=bad)


async def test_connections_are_watched_while_they_last(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each end of a connection is watched until it ends; ``busy_wait=0`` watches none."""
    monkeypatch.setattr(busywait, "_cpus", lambda: 2)
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


async def test_heartbeats_do_not_start_a_window(monkeypatch: pytest.MonkeyPatch) -> None:
    """A call is traffic on both ends of its connection; heartbeats, which flow while it
    is idle, are not: an idle cluster does not spin."""
    monkeypatch.setattr(busywait, "_cpus", lambda: 2)
    async with cluster("a", "b", heartbeat_interval=0.005, heartbeat_timeout=5.0) as (a, b):
        await b.node.start_server(Echo, name="echo")
        ends = [a.dist._peers["b"].conn, b.dist._peers["a"].conn]
        assert ends[0] is not None
        assert ends[1] is not None
        before = [conn.active_at for conn in ends]
        with anyio.fail_after(BOUND):
            assert await a.node.call(Name("echo", "b"), ("echo", 1)) == 1
        called = [conn.active_at for conn in ends]
        assert called[0] > before[0]
        assert called[1] > before[1]
        heard = [conn.received_at for conn in ends]
        # Several heartbeats each way, and nothing else.
        await wait_until(
            lambda: all(c.received_at > h + 0.05 for c, h in zip(ends, heard, strict=True))
        )
        assert [conn.active_at for conn in ends] == called


def test_no_busy_wait_on_asyncio() -> None:
    """asyncio has no hook before its IO wait: a distribution there does not busy-wait."""
    from runtime import Node

    async def main() -> None:
        async with Node("n") as node:
            dist = await Distribution(node, secret=SECRET, busy_wait=0.001).start()
            assert dist._busy is None
            node.stop()

    anyio.run(main, backend="asyncio")


async def test_the_hook_is_in_trios_table_only_while_a_window_may_open(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An installed hook costs every pass of trio's loop, so it leaves trio's table when
    no window is open and comes back with traffic; once trio has removed the
    instrument (after an error), arming does not bring it back."""
    monkeypatch.setattr(busywait, "_cpus", lambda: 2)
    bw = busy_wait_for_run()
    table = busywait._hook_table()
    assert bw is not None
    assert table is not None
    assert not bw.armed  # nothing watched yet
    assert "before_io_wait" not in table
    conn = Conn(active_at=trio.current_time() - 10)
    bw.watch(conn, 0.001)
    assert bw.armed
    assert bw in table["before_io_wait"]
    bw.before_io_wait(60.0)  # an idle wait with no window open
    assert not bw.armed
    assert "before_io_wait" not in table
    bw.arm()
    assert bw in table["before_io_wait"]
    trio.lowlevel.remove_instrument(bw)
    bw.arm()
    assert "before_io_wait" not in table


async def test_traffic_puts_the_hook_back(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(busywait, "_cpus", lambda: 2)
    async with cluster("a", "b", busy_wait=0.001) as (a, b):
        await b.node.start_server(Echo, name="echo")
        bw = a.dist._busy
        assert bw is not None
        await wait_until(lambda: not bw.armed)  # the windows closed, the loop idled
        with anyio.fail_after(BOUND):
            assert await a.node.call(Name("echo", "b"), ("echo", 1)) == 1
        assert bw.armed  # no idle wait since the reply came
