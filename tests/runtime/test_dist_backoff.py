"""A peer that cannot be reached is redialled after a backoff, not for every message."""

from __future__ import annotations

import socket

import anyio
from structlog.testing import capture_logs

from runtime import Distribution, Node, Pid
from runtime.dist import REDIAL_MIN

SECRET = b"backoff-test-secret-0123456789"


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_failed_dial_backs_off_then_retries() -> None:
    """After a failed attempt, sends inside the backoff are dead letters, not new dials."""
    async with Node("a") as node:
        dist = await Distribution(node, secret=SECRET).start(listen=("127.0.0.1", 0))
        dist.add_peer("ghost", "127.0.0.1", _closed_port())
        target = Pid("ghost", 1, 1)
        with capture_logs() as logs:
            down = anyio.Event()
            node.monitor(None, target, callback=lambda _: down.set())  # dials on demand
            with anyio.fail_after(10):
                await down.wait()  # the dial failed: the monitor fired NoConnection
            letters = node.dead_letters
            for i in range(50):
                node.send(target, i)
            peer = dist._peers["ghost"]
            assert not peer.dialing
            assert node.dead_letters == letters + 50
            await anyio.sleep(REDIAL_MIN * 2)  # the backoff has passed
            node.send(target, "again")
            assert peer.dialing
            with anyio.fail_after(10):
                while peer.dialing:  # the layer's own event for a change of peer state
                    await dist._changed(peer)
        failed = [e for e in logs if e["event"] == "connect_failed"]
        assert failed[0]["retry_in"] == REDIAL_MIN
        # the first failure is a warning; the same one again is only debug, and a dial
        # that failed closed no connection and took no node down
        assert [e["log_level"] for e in failed] == ["warning", "debug"]
        quiet = [e for e in logs if e["event"] in ("connection_closed", "node_down")]
        assert quiet
        assert {e["log_level"] for e in quiet} == {"debug"}
