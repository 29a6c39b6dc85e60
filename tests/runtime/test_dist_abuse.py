"""Distribution under abuse: raw bytes written to a node's port, before and after the handshake.

Every test runs against a *target* node that also serves a legitimate *friend* node.
Each abuse must close only the abusive connection, with a ``connection_rejected``
(before authentication) or ``connection_closed`` (after) log line naming the cause,
and a call from the friend through the target must still round-trip afterwards.
"""

from __future__ import annotations

import random
import struct
from collections.abc import AsyncIterator
from typing import Any

import anyio
import msgpack
import pytest
from structlog.testing import capture_logs

from runtime.errors import AuthenticationFailed
from runtime.pid import Name, Pid
from runtime.wire import (
    EXT_NAME,
    HANDSHAKE_MAX_FRAME,
    FrameEncoder,
    Heartbeat,
    Hello,
    Link,
    Send,
)
from tests.runtime.dist_helpers import (
    BOUND,
    OTHER_SECRET,
    Echo,
    Inbox,
    Member,
    RawPeer,
    cluster,
    frame,
    wait_until,
)

TARGET = "target@test"
EVIL = "evil@test"
CONNECT_TIMEOUT = 0.5


@pytest.fixture
async def pair() -> AsyncIterator[tuple[Member, Member, Inbox]]:
    """The target (with an echo server and an inbox) and its connected friend."""
    async with cluster(
        TARGET,
        "friend@test",
        connect_timeout=CONNECT_TIMEOUT,
        heartbeat_interval=0.1,
        heartbeat_timeout=2.0,
    ) as (target, friend):
        await target.node.start_server(Echo, name="echo")
        inbox = Inbox(target.node, name="inbox")
        yield target, friend, inbox


async def still_serving(target: Member, friend: Member) -> None:
    """The friend's connection survived: a call through it round-trips."""
    with anyio.fail_after(BOUND):
        assert await friend.node.call(Name("echo", TARGET), ("echo", "still here")) == "still here"
    assert target.dist.is_connected(friend.name)
    assert friend.dist.is_connected(TARGET)


def events(logs: list[dict[str, Any]], name: str) -> list[dict[str, Any]]:
    """The captured log events called *name*."""
    return [e for e in logs if e["event"] == name]


def name_ext(name: str, node: str) -> msgpack.ExtType:
    """A Name as its ext type, built by hand."""
    return msgpack.ExtType(EXT_NAME, msgpack.packb([name, node]))


def nested(depth: int) -> Any:
    """A list nested *depth* levels deep."""
    value: Any = 0
    for _ in range(depth):
        value = [value]
    return value


def session_frame(*fields: Any) -> bytes:
    """A frame whose body is ``[*fields]``, packed without any of the encoder's checks."""
    return frame(msgpack.packb(list(fields)))


def valid_hello() -> bytes:
    """A well-formed HELLO frame."""
    return FrameEncoder(max_frame=HANDSHAKE_MAX_FRAME).encode(Hello((1,), EVIL, 7, b"n" * 32))


PRE_AUTH = {
    "random_bytes": (random.Random(1).randbytes(1000), "handshake"),
    "length_2_31": (struct.pack(">I", 2**31), "2147483648 bytes exceeds limit"),
    "deep_nesting": (session_frame(16, nested(200)), "malformed"),
    "unknown_ext_type": (session_frame(16, msgpack.ExtType(42, b"x")), "ext type 42"),
    "session_op_first": (FrameEncoder().encode(Heartbeat()), "unexpected opcode"),
    "empty_frame": (struct.pack(">I", 0), "empty frame"),
}


class TestBeforeAuthentication:
    @pytest.mark.parametrize("case", sorted(PRE_AUTH))
    async def test_bad_bytes_are_rejected(
        self, pair: tuple[Member, Member, Inbox], case: str
    ) -> None:
        """Garbage instead of a handshake: rejected with a clear reason, nobody else harmed."""
        target, friend, inbox = pair
        data, why = PRE_AUTH[case]
        with capture_logs() as logs:
            raw = await RawPeer.open(target.address)
            await raw.send(data)
            await raw.read_until_closed()
            await wait_until(lambda: bool(events(logs, "connection_rejected")))

        [rejected] = events(logs, "connection_rejected")
        assert why in rejected["reason"]
        assert rejected["node"] == TARGET
        assert target.dist.rejected_connections == 1
        assert inbox.messages == []
        await still_serving(target, friend)

    async def test_truncated_frame_then_eof(self, pair: tuple[Member, Member, Inbox]) -> None:
        """A HELLO cut short, then end of stream: rejected as closed mid-handshake."""
        target, friend, _ = pair
        with capture_logs() as logs:
            raw = await RawPeer.open(target.address)
            await raw.send(valid_hello()[:-5])
            await raw.stream.send_eof()
            await raw.read_until_closed()
            await wait_until(lambda: bool(events(logs, "connection_rejected")))

        assert "closed during the handshake" in events(logs, "connection_rejected")[0]["reason"]
        await still_serving(target, friend)

    async def test_slowloris_is_cut_at_connect_timeout(
        self, pair: tuple[Member, Member, Inbox]
    ) -> None:
        """A peer that never finishes the handshake is dropped after connect_timeout."""
        target, friend, _ = pair
        with capture_logs() as logs:
            raw = await RawPeer.open(target.address)
            await raw.send(valid_hello()[:3])  # then nothing, ever
            await raw.read_until_closed()
            await wait_until(lambda: bool(events(logs, "connection_rejected")))

        [rejected] = events(logs, "connection_rejected")
        assert f"not finished within {CONNECT_TIMEOUT} s" in rejected["reason"]
        await still_serving(target, friend)

    async def test_wrong_secret_never_reaches_application_code(
        self, pair: tuple[Member, Member, Inbox]
    ) -> None:
        """A wrong secret is refused; a SEND written right after the proof is never read."""
        target, friend, inbox = pair
        smuggled = FrameEncoder().encode(Send(Name("inbox", TARGET), "smuggled"))
        with capture_logs() as logs:
            raw = await RawPeer.open(target.address)
            with pytest.raises(AuthenticationFailed, match="wrong_secret"):
                await raw.authenticate(EVIL, TARGET, secret=OTHER_SECRET, after_proof=smuggled)
            await raw.read_until_closed()
            await wait_until(lambda: bool(events(logs, "connection_rejected")))

        assert "wrong_secret" in events(logs, "connection_rejected")[0]["reason"]
        assert not target.dist.is_connected(EVIL)
        await still_serving(target, friend)
        assert inbox.messages == []
        assert target.node.dead_letters == 0

    async def test_replayed_handshake_is_rejected(self, pair: tuple[Member, Member, Inbox]) -> None:
        """The recorded bytes of a successful handshake, replayed, do not authenticate."""
        target, friend, _ = pair
        first = await RawPeer.open(target.address)
        await first.authenticate(EVIL, TARGET)
        await wait_until(lambda: target.dist.is_connected(EVIL))
        await first.aclose()
        await wait_until(lambda: not target.dist.is_connected(EVIL))
        with capture_logs() as logs:
            replay = await RawPeer.open(target.address)
            await replay.send(b"".join(first.sent))
            await replay.read_until_closed()
            await wait_until(lambda: bool(events(logs, "connection_rejected")))

        assert "replay" in events(logs, "connection_rejected")[0]["reason"]
        assert not target.dist.is_connected(EVIL)
        await still_serving(target, friend)


def post_auth_cases(target_creation: int) -> dict[str, tuple[bytes, str]]:
    """Abusive bytes sent by an authenticated peer, and what the close reason must say."""
    inbox = name_ext("inbox", TARGET)
    third = Pid("third@test", 1, 1)
    encoder = FrameEncoder()
    return {
        "random_bytes": (random.Random(2).randbytes(1000), ""),
        "length_2_31": (struct.pack(">I", 2**31), "2147483648 bytes exceeds limit"),
        "deep_nesting": (session_frame(1, inbox, nested(200), None), "deeper than"),
        "unknown_ext_type": (
            session_frame(1, inbox, msgpack.ExtType(42, b"x"), None),
            "unknown ext type 42",
        ),
        "forged_link": (
            encoder.encode(Link(third, Pid(TARGET, 1, target_creation))),
            "forged operation",
        ),
        "send_to_other_node": (encoder.encode(Send(third, "x")), "not on target@test"),
        "handshake_op": (valid_hello(), "unexpected opcode"),
        "not_an_operation": (session_frame("hello"), "unknown or unexpected opcode"),
    }


class TestAfterAuthentication:
    @pytest.mark.parametrize(
        "case",
        [
            "random_bytes",
            "length_2_31",
            "deep_nesting",
            "unknown_ext_type",
            "forged_link",
            "send_to_other_node",
            "handshake_op",
            "not_an_operation",
        ],
    )
    async def test_bad_frames_close_that_connection_only(
        self, pair: tuple[Member, Member, Inbox], case: str
    ) -> None:
        """An authenticated peer sending a bad frame is disconnected; nobody else is."""
        target, friend, inbox = pair
        data, why = post_auth_cases(target.node.creation)[case]
        with capture_logs() as logs:
            raw = await RawPeer.open(target.address)
            await raw.authenticate(EVIL, TARGET)
            await wait_until(lambda: target.dist.is_connected(EVIL))
            await raw.send(data)
            await raw.read_until_closed()
            await wait_until(lambda: not target.dist.is_connected(EVIL))

        [closed] = [e for e in events(logs, "connection_closed") if e["peer"] == EVIL]
        assert why in closed["reason"]
        assert closed["node"] == TARGET
        assert inbox.messages == []
        await still_serving(target, friend)

    async def test_truncated_frame_then_eof(self, pair: tuple[Member, Member, Inbox]) -> None:
        """A session frame cut short by the end of the stream is reported as such."""
        target, friend, inbox = pair
        whole = FrameEncoder().encode(Send(inbox.pid, "never whole"))
        with capture_logs() as logs:
            raw = await RawPeer.open(target.address)
            await raw.authenticate(EVIL, TARGET)
            await raw.send(whole[:-3])
            await raw.stream.send_eof()
            await raw.read_until_closed()
            await wait_until(lambda: not target.dist.is_connected(EVIL))

        [closed] = [e for e in events(logs, "connection_closed") if e["peer"] == EVIL]
        assert "in the middle of a frame" in closed["reason"]
        assert inbox.messages == []
        await still_serving(target, friend)

    async def test_frame_for_unknown_pid_is_a_dead_letter(
        self, pair: tuple[Member, Member, Inbox]
    ) -> None:
        """A valid SEND to a pid that does not exist is counted and dropped; the link stays."""
        target, friend, inbox = pair
        raw = await RawPeer.open(target.address)
        await raw.authenticate(EVIL, TARGET)

        await raw.send_op(Send(Pid(TARGET, 999_999, target.node.creation), "nobody"))
        await raw.send_op(Send(Pid(TARGET, inbox.pid.serial, target.node.creation + 1), "old"))
        await raw.send_op(Send(inbox.pid, "somebody"))

        assert await inbox.wait_count(1) == ["somebody"]
        assert target.node.dead_letters == 2
        assert target.dist.is_connected(EVIL)
        await still_serving(target, friend)
        await raw.aclose()

    async def test_silent_peer_is_dropped_after_heartbeat_timeout(
        self, pair: tuple[Member, Member, Inbox]
    ) -> None:
        """An authenticated peer that then says nothing, not even heartbeats, is dropped."""
        target, friend, _ = pair
        with capture_logs() as logs:
            raw = await RawPeer.open(target.address)
            await raw.authenticate(EVIL, TARGET)
            await raw.read_until_closed()  # reads the target's heartbeats, answers none
            await wait_until(lambda: not target.dist.is_connected(EVIL))

        [closed] = [e for e in events(logs, "connection_closed") if e["peer"] == EVIL]
        assert "no heartbeat" in closed["reason"]
        await still_serving(target, friend)

    async def test_many_abusers_at_once(self, pair: tuple[Member, Member, Inbox]) -> None:
        """Twenty abusive connections at once, of every kind, harm nobody else."""
        target, friend, inbox = pair
        cases = post_auth_cases(target.node.creation)

        async def abuse(i: int) -> None:
            raw = await RawPeer.open(target.address)
            if i % 2:
                await raw.send(PRE_AUTH[sorted(PRE_AUTH)[i % len(PRE_AUTH)]][0])
            else:
                await raw.authenticate(f"evil{i}@test", TARGET)
                await raw.send(cases[sorted(cases)[i % len(cases)]][0])
            await raw.read_until_closed()

        with anyio.fail_after(BOUND):
            async with anyio.create_task_group() as tg:
                for i in range(20):
                    tg.start_soon(abuse, i)
                    tg.start_soon(still_serving, target, friend)

        assert inbox.messages == []
        await wait_until(lambda: target.dist.peers() == [friend.name])
