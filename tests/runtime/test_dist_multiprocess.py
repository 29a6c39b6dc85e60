"""Distribution between real OS processes: a peer killed or frozen is detected.

The peer is ``tests/runtime/dist_node_child.py`` in a child process; the test's own node
talks to it over loopback TCP. Heartbeats are fast (every 0.05 s, peer down after 0.3
s of silence); every wait is bounded by ``BOUND`` seconds, never asserted faster.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path

import anyio
import anyio.abc
import pytest
from structlog.testing import capture_logs

import runtime
from runtime import Down, Exit, ServerExited, busywait
from runtime.pid import Name, Pid
from runtime.reasons import NoConnection
from tests.runtime.dist_helpers import (
    BOUND,
    FAST_HEARTBEAT,
    SECRET,
    Inbox,
    Member,
    start_member,
    wait_until,
)

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
CHILD = "child@test"


@asynccontextmanager
async def child_node(log_file: Path) -> AsyncIterator[tuple[anyio.abc.Process, tuple[str, int]]]:
    """Start the child node; yield its process and address; always reap it."""
    env = {**os.environ, "REGENCY_SECRET": SECRET.decode(), "PYTHONPATH": str(ROOT)}
    interval, timeout = FAST_HEARTBEAT["heartbeat_interval"], FAST_HEARTBEAT["heartbeat_timeout"]
    with log_file.open("wb") as log:
        proc = await anyio.open_process(
            [
                sys.executable,
                "-m",
                "tests.runtime.dist_node_child",
                CHILD,
                str(interval),
                str(timeout),
            ],
            stdout=subprocess.PIPE,
            stderr=log,
            cwd=ROOT,
            env=env,
        )
        try:
            assert proc.stdout is not None
            line = b""
            with anyio.fail_after(BOUND * 3):  # a cold interpreter start on a busy machine
                while b"\n" not in line:
                    line += await proc.stdout.receive()
            _, host, port, _creation = line.decode().split()
            yield proc, (host, int(port))
        finally:
            if proc.returncode is None:
                proc.send_signal(signal.SIGCONT)
                proc.kill()
            with anyio.CancelScope(shield=True), anyio.fail_after(BOUND):
                await proc.wait()
            await proc.aclose()


@asynccontextmanager
async def parent_and_child(
    tmp_path: Path,
) -> AsyncIterator[tuple[Member, anyio.abc.Process, Pid]]:
    """This process's node connected to the child; yields it, the child and its echo pid."""
    async with AsyncExitStack() as stack:
        proc, address = await stack.enter_async_context(child_node(tmp_path / "child.log"))
        parent = await start_member(stack, "parent@test", **FAST_HEARTBEAT)
        with anyio.fail_after(BOUND):
            await parent.dist.connect(*address, name=CHILD)
            echo = await parent.node.call(Name("echo", CHILD), "pid")
        yield parent, proc, echo


async def test_sigkilled_peer_is_seen_as_noconnection(tmp_path: Path) -> None:
    """A peer killed with SIGKILL: links, monitors and a pending call get noconnection."""
    async with parent_and_child(tmp_path) as (parent, proc, echo):
        trapper = Inbox(parent.node, trap_exit=True)
        watcher = Inbox(parent.node)
        parent.node.link(trapper.pid, echo)
        ref = parent.node.monitor(watcher.pid, Name("echo", CHILD))
        failed: list[ServerExited] = []

        async def caller() -> None:
            try:
                await runtime.call(echo, ("hold", watcher.pid), timeout=3600)
            except ServerExited as e:
                failed.append(e)

        parent.node.spawn(caller)
        await watcher.wait_for(lambda m: m == "holding")  # link, monitor, call all arrived

        proc.kill()

        lost = NoConnection(CHILD)
        down = await watcher.wait_for(lambda m: isinstance(m, Down))
        assert (ref, lost) == (down.ref, down.reason)
        assert Exit(echo, lost) == await trapper.wait_for(lambda m: isinstance(m, Exit))
        await wait_until(lambda: bool(failed))
        assert lost == failed[0].reason
        assert parent.dist.peers() == []
        with anyio.fail_after(BOUND):
            assert await proc.wait() == -signal.SIGKILL


async def test_sigstopped_peer_is_detected_by_heartbeat_and_recovers(tmp_path: Path) -> None:
    """A frozen peer (SIGSTOP) is declared down by heartbeat; resumed, it connects again."""
    async with parent_and_child(tmp_path) as (parent, proc, echo):
        watcher = Inbox(parent.node)
        ref = parent.node.monitor(watcher.pid, echo)
        with anyio.fail_after(BOUND):
            assert await parent.node.call(echo, ("echo", 1)) == 1

        with capture_logs() as logs:
            proc.send_signal(signal.SIGSTOP)
            try:
                down = await watcher.wait_for(lambda m: isinstance(m, Down))
            finally:
                proc.send_signal(signal.SIGCONT)

        assert Down(ref, echo, NoConnection(CHILD)) == down
        [closed] = [e for e in logs if e["event"] == "connection_closed"]
        assert "no heartbeat" in closed["reason"]
        assert not parent.dist.is_connected(CHILD)
        # Resumed, the child drops its side of the old connection and serves a new one.
        with anyio.fail_after(BOUND):
            await parent.dist.wait_connected(CHILD)
            assert await parent.node.call(echo, ("echo", 2)) == 2
        assert proc.returncode is None


async def test_replies_from_another_process_end_the_busy_wait(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With a busy-wait window longer than any reply takes, the caller's loop polls
    after sending a call, and the reply's arrival ends the poll: the node read it
    without sleeping. (The window is capped by the loop's next deadline, the 0.05 s
    heartbeat, so one reply out of twenty within that suffices.)"""
    monkeypatch.setattr(busywait, "_cpus", lambda: 2)  # on by default with two CPUs or more
    async with AsyncExitStack() as stack:
        _, address = await stack.enter_async_context(child_node(tmp_path / "child.log"))
        parent = await start_member(stack, "parent@test", **FAST_HEARTBEAT, busy_wait=BOUND)
        busy = parent.dist._busy
        assert busy is not None
        with anyio.fail_after(BOUND):
            await parent.dist.connect(*address, name=CHILD)
            echo = await parent.node.call(Name("echo", CHILD), "pid")
            before = busy.answered
            for i in range(20):
                assert await parent.node.call(echo, ("echo", i)) == i
        assert busy.answered > before
