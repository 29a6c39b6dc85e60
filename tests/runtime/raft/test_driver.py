"""The Raft driver on fake time: ordering contracts, proposals, reads, transfer, snapshots.

Every test runs under ``MockClock(autojump_threshold=0)`` (the ``autojump_clock``
fixture) on the simulator's in-memory network and disk, except the last, which uses the
real ``DurableStorage`` (real fsyncs in a worker thread) on the real clock.
"""

from __future__ import annotations

import logging
import random
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TypeVar

import pytest
import structlog
import trio
import trio.lowlevel
import trio.testing
from structlog.testing import capture_logs

from runtime.raft.core import Entry, Message, MsgType, NotLeader, Role
from runtime.raft.driver import (
    DriverStopped,
    LeadershipLost,
    RaftDriver,
    Status,
    raft_config,
)
from runtime.raft.durable import DurableStorage
from runtime.sim.disk import SimDisk
from runtime.sim.network import SimNetwork

T = TypeVar("T")


class ListMachine:
    """A state machine that appends each command and returns the new length."""

    def __init__(self) -> None:
        self.items: list[bytes] = []

    def apply(self, entry: Entry) -> object:
        self.items.append(entry.data)
        return len(self.items)

    def snapshot(self) -> bytes:
        return b"\n".join(self.items)

    def restore(self, data: bytes) -> None:
        self.items = data.split(b"\n") if data else []


class Cluster:
    """Drivers on a SimNetwork and SimDisks, in one nursery."""

    def __init__(self, nursery: trio.Nursery, n: int, seed: int = 1, **kw: object) -> None:
        self.nursery = nursery
        self.ids = [f"n{i + 1}" for i in range(n)]
        rng = random.Random(seed)
        self.net = SimNetwork(self.ids, random.Random(rng.getrandbits(64)))
        self.disks = {i: SimDisk(i, self.ids, random.Random(rng.getrandbits(64))) for i in self.ids}
        self.rngs = {i: random.Random(rng.getrandbits(64)) for i in self.ids}
        self.kw = kw
        self.drivers: dict[str, RaftDriver] = {}
        self.machines: dict[str, ListMachine] = {}
        self.scopes: dict[str, trio.CancelScope] = {}
        self.sent: list[tuple[str, Message]] = []
        self.broken: list[str] = []  # persist-before-send violations seen by the transport
        self.gates: dict[str, trio.Event] = {}  # a node's storage jobs wait for its gate
        nursery.start_soon(self.net.run)

    async def start(self, nid: str) -> RaftDriver:
        disk = self.disks[nid]
        net = self.net
        sent = self.sent
        broken = self.broken

        class Recording:
            def send(self, to: str, msg: Message) -> None:
                sent.append((nid, msg))
                # Persist before send: what a message promises is already durable (pre-votes
                # carry a prospective term, which is never saved).
                hs = disk.durable_hard_state
                if msg.type not in (MsgType.PRE_VOTE, MsgType.PRE_VOTE_RESP) and hs.term < msg.term:
                    broken.append(f"{msg} sent before term {msg.term} was durable ({hs})")
                if msg.type is MsgType.VOTE_RESP and not msg.reject and hs.vote != msg.to:
                    broken.append(f"{msg} sent before the vote was durable ({hs})")
                net.send(nid, to, msg)

        gates = self.gates

        async def run_io(fn: Callable[[], T]) -> T:
            gate = gates.get(nid)
            if gate is not None:
                await gate.wait()
            return await disk.run_io(fn)

        sm = ListMachine()
        d = RaftDriver(
            raft_config(nid, self.ids, rng=self.rngs[nid]),
            disk.open(),
            Recording(),
            sm,
            run_io=run_io,
            **self.kw,  # type: ignore[arg-type]
        )
        self.drivers[nid], self.machines[nid] = d, sm
        scope = self.scopes[nid] = trio.CancelScope()

        async def run() -> None:
            with scope:
                await d.run()

        self.nursery.start_soon(run)
        self.net.attach(nid, d.deliver, d.peer_down)
        await trio.lowlevel.checkpoint()
        return d

    async def start_all(self) -> None:
        for nid in self.ids:
            await self.start(nid)

    def crash(self, nid: str) -> None:
        self.net.detach(nid)
        self.scopes[nid].cancel()
        self.disks[nid].crash()

    async def leader(self, timeout: float = 5.0) -> RaftDriver:
        with trio.fail_after(timeout):
            while True:
                for d in self.drivers.values():
                    st = d.status()
                    if st.role is Role.LEADER and st.leader_ready:
                        return d
                await trio.sleep(0.01)


@asynccontextmanager
async def cluster(n: int, **kw: object) -> AsyncIterator[Cluster]:
    async with trio.open_nursery() as nursery:
        c = Cluster(nursery, n, **kw)
        yield c
        nursery.cancel_scope.cancel()
    assert c.broken == []


async def test_single_node_propose_returns_the_state_machine_result(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A single voter elects itself; propose returns what apply returned."""
    async with cluster(1) as c:
        await c.start_all()
        d = c.drivers["n1"]
        assert await d.wait_for_leader(timeout=1) == "n1"

        results = [await d.propose(f"x{i}".encode()) for i in range(3)]

        assert results == [1, 2, 3]
        assert c.machines["n1"].items == [b"x0", b"x1", b"x2"]


async def test_proposal_wakes_the_driver_at_once(autojump_clock: trio.testing.MockClock) -> None:
    """A proposal is handled immediately, not at the next tick (ticks here are 10 s apart)."""
    async with cluster(1, tick_interval=10.0) as c:
        d = await c.start("n1")
        d.campaign()
        await d.wait_for(lambda s: s.leader_ready, timeout=1)
        t0 = trio.current_time()

        await d.propose(b"now")

        assert trio.current_time() - t0 < 0.01  # one simulated fsync, no tick wait


async def test_three_nodes_elect_and_replicate(autojump_clock: trio.testing.MockClock) -> None:
    """Within the election window a leader emerges; an acked entry is applied everywhere."""
    async with cluster(3) as c:
        await c.start_all()
        leader = await c.leader()
        assert trio.current_time() < 1.0

        assert await leader.propose(b"a") == 1
        await trio.sleep(0.2)

        assert all(m.items == [b"a"] for m in c.machines.values())
        assert any(m.type is MsgType.APPEND for _, m in c.sent)  # persist-before-send held


async def test_leader_replicates_while_its_own_fsync_runs(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """The leader's appends leave before its fsync (thesis 10.2.1): the followers store and
    acknowledge the entry meanwhile, but the leader commits, applies and answers only
    after its own write is durable."""
    async with cluster(3) as c:
        await c.start_all()
        leader = await c.leader()
        await trio.sleep(0.1)
        followers = [d for d in c.drivers.values() if d is not leader]
        index = leader.status().last_index + 1
        c.gates[leader.id] = gate = trio.Event()  # the leader's next fsync hangs
        result: list[object] = []

        async def propose() -> None:
            result.append(await leader.propose(b"x"))

        c.nursery.start_soon(propose)
        await trio.sleep(0.05)  # well within an election timeout

        assert all(f.status().last_index == index for f in followers)  # replicated early
        assert result == []
        assert leader.status().commit < index
        assert b"x" not in c.machines[leader.id].items
        gate.set()
        await trio.sleep(0.05)
        assert result == [1]
        assert leader.status().applied >= index


async def test_leader_crash_before_its_fsync_loses_nothing_acknowledged(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A leader that crashes after sending its appends and before its fsync never applied
    nor acknowledged the entry; the followers, a majority, hold it, so the next leader
    commits it (allowed: it is durable on a quorum) and every node applies it once."""
    async with cluster(3) as c:
        await c.start_all()
        leader = await c.leader()
        await trio.sleep(0.1)
        index = leader.status().last_index + 1
        c.gates[leader.id] = trio.Event()  # never set: the fsync never finishes
        outcome: list[BaseException] = []

        async def propose() -> None:
            try:
                await leader.propose(b"x")
            except DriverStopped as exc:
                outcome.append(exc)

        c.nursery.start_soon(propose)
        await trio.sleep(0.05)
        assert b"x" not in c.machines[leader.id].items
        c.crash(leader.id)
        del c.gates[leader.id]
        del c.drivers[leader.id]  # its last status still says leader
        new = await c.leader()
        await trio.sleep(0.2)

        assert new.id != leader.id
        assert len(outcome) == 1  # the client learns nothing: the outcome is unknown
        assert all(c.machines[f].items == [b"x"] for f in c.ids if f != leader.id)
        restarted = await c.start(leader.id)
        await trio.sleep(0.5)
        assert restarted.status().applied >= index
        assert c.machines[leader.id].items == [b"x"]


@pytest.mark.parametrize("closes", [True, False], ids=["connection-closed", "silent"])
async def test_crashed_leader_seen_by_its_closed_connection_is_replaced_within_ticks(
    autojump_clock: trio.testing.MockClock, closes: bool
) -> None:
    """When the survivors see the dead leader's connections close (``peer_down``), a
    new leader is ready within a few 10 ms ticks, well inside the minimum election
    timeout (150 ms); a leader that dies silently (its host, or a cut network) is
    replaced only after the election timeout. Virtual time, so exact."""
    async with cluster(3) as c:
        await c.start_all()
        old = await c.leader()
        await trio.sleep(1.0)  # settled: every follower heard a heartbeat recently
        died = trio.current_time()
        c.crash(old.id)
        del c.drivers[old.id]
        if closes:
            for nid in c.ids:
                if nid != old.id:
                    c.net.connection_lost(old.id, nid)
        new = await c.leader()
        took = trio.current_time() - died

        assert new.id != old.id
        assert new.status().term == old.status().term + 1  # one round, no split vote
        if closes:
            assert took < 0.06
        else:
            assert took >= 0.15 - 0.05  # the timeout counts from the last heartbeat


async def test_follower_propose_fails_fast_with_leader_hint(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """NotLeader carries the leader's id and is raised without waiting."""
    async with cluster(3) as c:
        await c.start_all()
        leader = await c.leader()
        await trio.sleep(0.2)
        follower = next(d for d in c.drivers.values() if d is not leader)
        t0 = trio.current_time()

        with pytest.raises(NotLeader) as info:
            await follower.propose(b"x")

        assert leader.id == info.value.leader_hint
        assert t0 == trio.current_time()


async def test_propose_during_election_fails_fast(autojump_clock: trio.testing.MockClock) -> None:
    """Before any leader exists, propose raises NotLeader(None) at once."""
    async with cluster(3) as c:
        await c.start_all()

        with pytest.raises(NotLeader) as info:
            await c.drivers["n1"].propose(b"x")

        assert info.value.leader_hint is None
        assert trio.current_time() == 0


async def test_cut_off_leader_fails_pending_proposal_with_leadership_lost(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A leader that loses its quorum steps down (check-quorum) and fails its proposals."""
    async with cluster(3) as c:
        await c.start_all()
        leader = await c.leader()
        others = [i for i in c.ids if i != leader.id]
        c.net.partition([leader.id], others)
        t0 = trio.current_time()

        with pytest.raises(LeadershipLost):
            await leader.propose(b"lost?")

        assert trio.current_time() - t0 <= 2 * 0.15 + 0.05  # within check-quorum's period
        assert Role.LEADER is not leader.status().role


async def test_propose_nowait_reports_each_outcome_to_its_callback(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """propose_nowait: the result once applied, LeadershipLost after losing the quorum,
    and NotLeader raised at once on a follower (the callback is then never called)."""
    async with cluster(3) as c:
        await c.start_all()
        leader = await c.leader()
        outcomes: list[tuple[object, BaseException | None]] = []
        applied = trio.Event()

        def done(result: object, error: BaseException | None) -> None:
            outcomes.append((result, error))
            applied.set()

        leader.propose_nowait(b"a", done)
        with trio.fail_after(1):
            await applied.wait()
        assert outcomes == [(1, None)]
        assert c.machines[leader.id].items == [b"a"]

        follower = next(d for d in c.drivers.values() if d is not leader)
        await trio.sleep(0.1)
        with pytest.raises(NotLeader):
            follower.propose_nowait(b"b", done)

        c.net.partition([leader.id], [i for i in c.ids if i != leader.id])
        applied = trio.Event()
        leader.propose_nowait(b"lost?", done)
        with trio.fail_after(1):
            await applied.wait()
        assert outcomes[-1][0] is None
        assert isinstance(outcomes[-1][1], LeadershipLost)
        assert len(outcomes) == 2


async def test_transfer_leadership_to_named_node(autojump_clock: trio.testing.MockClock) -> None:
    """transfer_leadership hands over to the target, faster than an election timeout."""
    async with cluster(3) as c:
        await c.start_all()
        leader = await c.leader()
        target = next(i for i in c.ids if i != leader.id)
        t0 = trio.current_time()

        assert target == await leader.transfer_leadership(target)
        new = await c.drivers[target].wait_for(lambda s: s.role is Role.LEADER, timeout=1)

        assert target == new.leader
        assert trio.current_time() - t0 < 0.15


async def test_stop_hands_leadership_over_first(autojump_clock: trio.testing.MockClock) -> None:
    """Stopping a leader transfers leadership, then fails later requests with DriverStopped."""
    async with cluster(3) as c:
        await c.start_all()
        leader = await c.leader()
        t0 = trio.current_time()

        await leader.stop()
        others = [d for d in c.drivers.values() if d is not leader]
        st = await others[0].wait_for(lambda s: s.leader not in (None, leader.id), timeout=1)

        assert st.leader != leader.id
        assert trio.current_time() - t0 < 0.15
        with pytest.raises(DriverStopped):
            await leader.propose(b"x")


async def test_read_index_on_leader_and_follower(autojump_clock: trio.testing.MockClock) -> None:
    """A linearizable read sees every write acknowledged before it, on any node."""
    async with cluster(3) as c:
        await c.start_all()
        leader = await c.leader()
        await leader.propose(b"w1")
        follower = next(d for d in c.drivers.values() if d is not leader)
        await follower.wait_for_leader(timeout=1)

        on_leader = await leader.linearizable_read(lambda: list(c.machines[leader.id].items))
        on_follower = await follower.linearizable_read(
            lambda: list(c.machines[follower.id].items), timeout=1
        )

        assert on_leader == [b"w1"]
        assert on_follower == [b"w1"]


async def test_snapshot_and_restart_restores_the_state_machine(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Every snapshot_entries applied the log is compacted; a restart restores from it."""
    async with cluster(1, snapshot_entries=5, snapshot_keep=2) as c:
        d = await c.start("n1")
        await d.wait_for(lambda s: s.leader_ready, timeout=1)
        for i in range(12):
            await d.propose(f"e{i}".encode())
        assert c.disks["n1"].open().snapshot().index >= 10
        c.crash("n1")
        await trio.sleep(0.01)

        d2 = await c.start("n1")
        await d2.wait_for(lambda s: s.leader_ready, timeout=1)

        assert [f"e{i}".encode() for i in range(12)] == c.machines["n1"].items


async def test_role_changes_are_logged_and_watched(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """leader_elected carries node and term; on_status sees every change."""
    seen: list[Status] = []
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.INFO))
    with capture_logs() as logs:
        async with cluster(3, on_status=seen.append) as c:
            await c.start_all()
            leader = await c.leader()
            term = leader.status().term

    elected = [e for e in logs if e["event"] == "leader_elected"]
    assert {"node": leader.id, "term": term}.items() <= elected[-1].items()
    assert any(s.role is Role.LEADER and s.leader_ready for s in seen)


async def test_watch_yields_the_leader(autojump_clock: trio.testing.MockClock) -> None:
    """watch() yields the current status, then each change."""
    async with cluster(1) as c:
        d = await c.start("n1")
        roles: list[Role] = []
        async for st in d.watch():
            roles.append(st.role)
            if st.leader_ready:
                break

        assert roles[0] == Role.FOLLOWER
        assert roles[-1] == Role.LEADER


async def test_durable_storage_group_commit(tmp_path: Path) -> None:
    """On DurableStorage, concurrent proposals share fsyncs (real clock, real files)."""
    storage = DurableStorage.open(tmp_path / "n1", voters=["n1"])

    class Nowhere:
        def send(self, to: str, msg: Message) -> None:
            raise AssertionError("a single node sends nothing")

    sm = ListMachine()
    d = RaftDriver(raft_config("n1", ["n1"]), storage, Nowhere(), sm)
    results: list[object] = []

    async def one(i: int) -> None:
        results.append(await d.propose(f"p{i}".encode(), timeout=10))

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(d.run)
            await d.wait_for(lambda s: s.leader_ready)
            before = d.fsyncs
            async with trio.open_nursery() as inner:
                for i in range(50):
                    inner.start_soon(one, i)
            await d.stop()
    storage.close()

    assert list(range(1, 51)) == sorted(results)  # type: ignore[type-var]
    assert d.fsyncs - before < 50
    reopened = DurableStorage.open(tmp_path / "n1", voters=["n1"])
    assert reopened.last_index() >= 51
    reopened.close()


def test_wire_round_trip_and_malformed_frames() -> None:
    """Raft messages survive the wire codec they travel by; malformed bytes are refused."""
    import runtime.raft.dist_transport  # noqa: F401 - registers the Raft classes
    from runtime.errors import ProtocolError
    from runtime.raft.core import EntryKind, Snapshot
    from runtime.wire import pack_value, unpack_value

    msg = Message(
        MsgType.APPEND,
        "n1",
        "n2",
        7,
        log_term=6,
        index=41,
        entries=(Entry(7, 42, EntryKind.NOOP), Entry(7, 43, EntryKind.NORMAL, b"\x00cmd")),
        commit=40,
        context=b"ctx",
    )
    snap = Message(
        MsgType.SNAPSHOT, "n1", "n3", 7, snapshot=Snapshot(40, 6, ("n1", "n2", "n3"), b"s")
    )

    assert unpack_value(pack_value(msg)) == msg
    assert unpack_value(pack_value(snap)) == snap
    for bad in (b"", b"\xc1", pack_value(msg)[:-3], b"\xc7\x03\x0a\x01\x02\x03"):
        with pytest.raises(ProtocolError):
            unpack_value(bad)
