"""Raft over real loopback TCP between three nodes in one process."""

from __future__ import annotations

import contextlib
import logging
from typing import Any

import anyio
import msgpack
import pytest
import structlog
from structlog.testing import capture_logs

from runtime import Distribution, Node
from runtime.raft import dist_transport
from runtime.raft.core import Entry, EntryKind, Message, MsgType, Snapshot
from runtime.raft.dist_transport import DistTransport, decode, encode
from runtime.raft.driver import RaftDriver, raft_config
from runtime.raft.durable import DurableStorage

SECRET = b"raft-transport-test-secret"


class Log:
    """A state machine that records what it applied."""

    def __init__(self) -> None:
        self.applied: list[bytes] = []

    def apply(self, entry: Entry) -> object:
        if entry.kind is EntryKind.NORMAL:
            self.applied.append(entry.data)
        return len(self.applied)

    def snapshot(self) -> bytes:
        return b"\n".join(self.applied)

    def restore(self, data: bytes) -> None:
        self.applied = data.split(b"\n") if data else []


async def _member(
    stack: contextlib.AsyncExitStack, name: str, names: list[str]
) -> tuple[Node, Distribution]:
    node = await stack.enter_async_context(Node(name))
    dist = await Distribution(node, secret=SECRET).start(listen=("127.0.0.1", 0))
    return node, dist


async def _members(
    stack: contextlib.AsyncExitStack, names: list[str]
) -> list[tuple[Node, Distribution]]:
    """A node per name on loopback, each knowing every other's address."""
    members = [await _member(stack, n, names) for n in names]
    for node, dist in members:
        for other_node, other_dist in members:
            if other_node is not node:
                assert other_dist.address is not None
                dist.add_peer(other_node.name, *other_dist.address)
    return members


@pytest.mark.slow
async def test_three_members_elect_and_replicate_over_tcp(tmp_path: Any) -> None:
    """Three members connected by distribution elect one leader and apply the same log."""
    names = ["r1", "r2", "r3"]
    async with contextlib.AsyncExitStack() as stack:
        members = await _members(stack, names)
        tg = await stack.enter_async_context(anyio.create_task_group())
        drivers: list[RaftDriver] = []
        logs: list[Log] = []
        for node, _dist in members:
            sm = Log()
            transport = DistTransport(node, compact=True)
            storage = DurableStorage.open(tmp_path / node.name, voters=names)
            driver = RaftDriver(raft_config(node.name, names), storage, transport, sm)
            transport.serve(driver)
            await tg.start(driver.run)
            drivers.append(driver)
            logs.append(sm)
        with anyio.fail_after(10):
            leader = await drivers[0].wait_for_leader()
        lead = drivers[names.index(leader)]
        results = [await lead.propose(f"cmd{i}".encode(), timeout=5) for i in range(20)]
        assert results == list(range(1, 21))
        for d in drivers:  # a read index covers every committed entry: all 20 applied
            await d.read_index(timeout=5)
        assert [len(sm.applied) for sm in logs] == [20, 20, 20]
        assert all(sm.applied == logs[0].applied for sm in logs)
        for d in drivers:
            await d.stop()
        tg.cancel_scope.cancel()


def test_messages_round_trip_through_their_wire_form() -> None:
    """encode/decode keep every field of every kind of message, enums as enums."""
    msgs = [
        Message(MsgType.PRE_VOTE, "a", "b", 3, log_term=2, index=7),
        Message(
            MsgType.APPEND,
            "a",
            "b",
            4,
            log_term=3,
            index=9,
            entries=(Entry(4, 10, EntryKind.NOOP), Entry(4, 11, EntryKind.NORMAL, b"x\x00y")),
            commit=9,
        ),
        Message(MsgType.APPEND_RESP, "b", "a", 4, reject=True, reject_hint=5, log_term=2),
        Message(MsgType.SNAPSHOT, "a", "c", 5, snapshot=Snapshot(20, 5, ("a", "b", "c"), b"state")),
        Message(MsgType.HEARTBEAT, "a", "b", 5, commit=3, context=b"\x01\x02"),
    ]
    for m in msgs:
        back = decode(encode(m))
        assert back == m
        assert type(back.type) is MsgType
        assert all(type(e.kind) is EntryKind for e in back.entries)


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\xc1",
        msgpack.packb([1, 2, 3]),
        msgpack.packb([99, "a", "b", 1, 0, 0, [], 0, False, 0, None, b""]),
        msgpack.packb([5, "a", "b", 1, 0, 0, [[1, 2, 7, b""]], 0, False, 0, None, b""]),
        msgpack.packb([5, "a", "b", "1", 0, 0, [], 0, False, 0, None, b""]),
        msgpack.packb([5, "a", 2, 1, 0, 0, [], 0, False, 0, None, b""]),
        msgpack.packb([9, "a", "b", 1, 0, 0, [], 0, False, 0, [1, 1, ["a"], "s"], b""]),
    ],
)
def test_decode_refuses_what_is_not_a_raft_message(data: bytes) -> None:
    """Garbage from a peer is a ValueError (the receiver logs and drops it), never a crash."""
    with pytest.raises(ValueError):
        decode(data)


async def test_reset_connection_keeps_the_leader_and_a_lost_leader_is_replaced(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A follower whose connection to a live leader was reset redials it and keeps it
    (no election); when the leader's node is gone, the redial is refused and the
    followers elect a new leader without waiting for their election timeouts (30 s
    here, so nothing else can elect one within the test's bounds)."""
    monkeypatch.setattr(dist_transport, "REDIAL_TIMEOUT", 10.0)  # no flake under load
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.INFO))
    names = ["r1", "r2", "r3"]
    async with contextlib.AsyncExitStack() as stack:
        members = await _members(stack, names)
        tg = await stack.enter_async_context(anyio.create_task_group())
        drivers: list[RaftDriver] = []
        for node, _dist in members:
            storage = DurableStorage.open(tmp_path / node.name, voters=names)
            config = raft_config(node.name, names, election_ticks=3000)
            driver = RaftDriver(config, storage, DistTransport(node), Log())
            DistTransport(node).serve(driver)
            await tg.start(driver.run)
            drivers.append(driver)
        drivers[0].campaign()
        with anyio.fail_after(10):
            leader = await drivers[0].wait_for_leader()
            await drivers[names.index(leader)].read_index()
        term = drivers[0].status().term
        follower = next(n for n in names if n != leader)
        f_dist = members[names.index(follower)][1]

        with capture_logs() as logs:
            conn = f_dist._peers[leader].conn
            assert conn is not None
            conn.scope.cancel()  # reset: both ends see the connection close
            with anyio.fail_after(10):
                while not any(e["event"] == "member_reconnected" for e in logs):  # noqa: ASYNC110
                    await anyio.sleep(0.01)
        assert not any(e["event"] == "leader_lost" for e in logs)
        assert drivers[names.index(follower)].status().leader == leader

        with capture_logs() as logs:
            members[names.index(leader)][1].close()  # the leader's node is unreachable
            others = [d for d in drivers if d.id != leader]
            with anyio.fail_after(10):
                new = await others[0].wait_for(
                    lambda st: st.leader not in (None, leader) and st.term > term
                )
        lost = {e["node"] for e in logs if e["event"] == "leader_lost"}
        assert lost  # the first to campaign learnt it this way (timeouts are 30 s)
        assert lost <= {d.id for d in others}
        assert new.leader in {d.id for d in others}
        for d in drivers:
            await d.stop(timeout=0.5)  # the cut-off old leader cannot hand over
        tg.cancel_scope.cancel()
