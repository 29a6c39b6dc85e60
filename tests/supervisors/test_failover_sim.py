"""Orchestrator failover in the simulator: many seeds of crashes and partitions on fake time.

Three group members, two worker nodes and a client node run on a
:class:`~runtime.sim.localnet.LocalNetwork` under trio's ``MockClock`` (autojump), each
member on a :class:`~runtime.sim.disk.SimDisk`. Every seed draws its own faults: the
leader's node crashed (and restarted on its disk) or partitioned away, a worker node
crashed or partitioned. Afterwards everything heals and the checks run on the union of
the committed commands every member applied (merged by log index). A failing check
names its seed; rerun it alone with ``REGENCY_SIM_SEED=<seed> pytest <this file> -k <test>``.
"""

from __future__ import annotations

import itertools
import os
import random
from collections import Counter
from collections.abc import Callable
from typing import Any

import anyio
import pytest
import trio
import trio.testing
from structlog.testing import capture_logs

import runtime
from runtime import Node
from runtime.genserver import GenServer
from runtime.sim.disk import SimDisk
from runtime.sim.localnet import LocalNetwork
from supervisors.client import GroupClient
from supervisors.coordination import Applied, fenced_term
from supervisors.failover import (
    Dispatcher,
    GroupConfig,
    GroupMember,
    OrchestratorContext,
    start_group_member,
)
from supervisors.ledger import (
    Accepted,
    Complete,
    NewTerm,
    Refused,
    SetFacts,
    StaleTerm,
    TaskState,
    describe,
)
from supervisors.workers import Assignment, AssignmentRefused, WorkerConfig, start_worker

MEMBERS = ["m1", "m2", "m3"]
WORKERS = ["w1", "w2"]
SEEDS = 30


def _seeds() -> list[int]:
    chosen = os.environ.get("REGENCY_SIM_SEED")
    return [int(chosen)] if chosen else list(range(SEEDS))


class SimGroup:
    """A group, its workers and a client on one simulated network; faults by seed."""

    def __init__(
        self,
        seed: int,
        nursery: trio.Nursery,
        *,
        orchestrator: type[GenServer] = Dispatcher,
        config: GroupConfig | None = None,
    ) -> None:
        self.seed = seed
        self.rng = random.Random(seed)
        self.nursery = nursery
        self.net = LocalNetwork(self.rng.getrandbits(64), detect_after=0.5)
        self.orchestrator = orchestrator
        self.config = config or GroupConfig(
            lease=2.0,
            dispatch_interval=0.05,
            worker_ttl=2.0,
            stall_deadline=1000.0,
            clock=trio.current_time,
        )
        self.wconfig = WorkerConfig(
            hello_interval=0.2, progress_interval=0.4, retry_interval=0.05, clock=trio.current_time
        )
        self.disks = {
            m: SimDisk(m, MEMBERS, random.Random(self.rng.getrandbits(64))) for m in MEMBERS
        }
        self.creations = itertools.count(1)
        self.members: dict[str, GroupMember] = {}
        self.scopes: dict[str, trio.CancelScope] = {}
        self.nodes: dict[str, Node] = {}
        self.records: dict[int, Applied] = {}
        self.conflicts: list[str] = []
        self.runs: Counter[str] = Counter()

    def fail(self, what: str) -> str:
        return f"seed {self.seed}: {what} (rerun: REGENCY_SIM_SEED={self.seed} pytest {__file__})"

    def record(self, rec: Applied) -> None:
        if rec.command is None and rec.result is None:
            return  # a snapshot
        old = self.records.get(rec.index)
        if old is None:
            self.records[rec.index] = rec
        elif (old.command, old.result and describe(old.result)) != (
            rec.command,
            rec.result and describe(rec.result),
        ):
            self.conflicts.append(f"index {rec.index}: {old} != {rec}")

    async def _member(self, name: str, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        disk = self.disks[name]
        with trio.CancelScope() as scope:
            self.scopes[name] = scope
            async with Node(name, creation=next(self.creations)) as node:
                self.net.attach(node)
                self.nodes[name] = node
                member = await start_group_member(
                    node,
                    MEMBERS,
                    orchestrator=self.orchestrator,
                    config=self.config,
                    storage=disk.open,
                    coordinator_options={
                        "rng": random.Random(self.rng.getrandbits(64)),
                        "tick_phase": self.rng.random() * 0.01,
                        "run_io": disk.run_io,
                    },
                )
                self.members[name] = member
                feed = member.coordinator.watch()
                task_status.started()
                async for rec in feed:
                    self.record(rec)

    async def _worker(self, name: str, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        rng = random.Random(self.rng.getrandbits(64))

        async def handler(payload: Any) -> Any:
            self.runs[str(payload)] += 1
            await trio.sleep(0.2 + 1.3 * rng.random())
            return {"double": payload * 2}

        with trio.CancelScope() as scope:
            self.scopes[name] = scope
            async with Node(name, creation=next(self.creations)) as node:
                self.net.attach(node)
                self.nodes[name] = node
                await start_worker(
                    node, MEMBERS, handler, name=name, capacity=2, config=self.wconfig
                )
                task_status.started()
                await trio.sleep_forever()

    async def start(self, workers: bool = True) -> None:
        await self.nursery.start(self.net.run)
        for m in MEMBERS:
            await self.nursery.start(self._member, m)
        if workers:
            for w in WORKERS:
                await self.nursery.start(self._worker, w)
        node = Node("client", creation=next(self.creations))
        self.client_node = await self.nursery_enter(node)
        self.net.attach(self.client_node)
        self.client = GroupClient(self.client_node, MEMBERS, timeout=60.0, clock=trio.current_time)

    async def nursery_enter(self, node: Node) -> Node:
        async def hold(*, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
            async with node:
                task_status.started()
                await trio.sleep_forever()

        await self.nursery.start(hold)
        return node

    def leader(self) -> str | None:
        for name, m in self.members.items():
            node = self.nodes[name]
            view = m.coordinator.view()
            if not node.closing and view.is_leader and view.ready:
                return name
        return None

    async def wait_leader(self, exclude: str | None = None, timeout: float = 20.0) -> str:
        with trio.fail_after(timeout):
            while True:
                leader = self.leader()
                if leader is not None and leader != exclude:
                    return leader
                await trio.sleep(0.05)

    async def crash(self, name: str, down_for: float) -> None:
        self.net.crash(name)
        if name in self.disks:
            self.disks[name].crash()
        self.scopes[name].cancel()
        await trio.sleep(down_for)
        await self.nursery.start(self._member if name in MEMBERS else self._worker, name)

    async def partition(self, name: str, for_: float) -> None:
        others = [n for n in [*MEMBERS, *WORKERS, "client"] if n != name]
        self.net.partition([name], others)
        await trio.sleep(for_)
        self.net.heal()

    async def faults(self, count: int) -> None:
        for _ in range(count):
            await trio.sleep(0.3 + self.rng.random())
            kind = self.rng.choice(
                ["crash_leader", "partition_leader", "crash_worker", "partition_worker"]
            )
            length = 0.5 + 2.0 * self.rng.random()
            if kind.endswith("leader"):
                target = self.leader()
                if target is None:
                    continue
            else:
                target = self.rng.choice(WORKERS)
            if kind.startswith("crash"):
                await self.crash(target, length)
            else:
                await self.partition(target, length)

    def check_log(self) -> None:
        """Fencing and one-leader-per-term, replayed over the merged committed log."""
        assert not self.conflicts, self.fail(
            f"members applied different logs: {self.conflicts[:3]}"
        )
        fencing = 0
        leaders: dict[int, str] = {}
        for index in sorted(self.records):
            rec = self.records[index]
            assert rec.command is not None
            assert rec.result is not None
            term = fenced_term(rec.command)
            if term is None:
                continue
            if isinstance(rec.result, Accepted):
                assert term >= fencing, self.fail(f"stale command applied at {index}: {rec}")
                fencing = term
                if isinstance(rec.command, NewTerm):
                    assert leaders.setdefault(term, rec.command.leader) == rec.command.leader, (
                        self.fail(f"two leaders of term {term}")
                    )
            elif isinstance(rec.result, Refused) and isinstance(rec.result.reason, StaleTerm):
                assert term < fencing, self.fail(f"refused as stale but not stale at {index}")


@pytest.mark.parametrize("seed", _seeds())
async def test_failover_seeds_keep_every_task_once_and_fence_old_terms(
    seed: int, autojump_clock: trio.testing.MockClock
) -> None:
    """Under seeded crashes and partitions each task completes once; no stale command applies."""
    with capture_logs():
        async with trio.open_nursery() as nursery:
            g = SimGroup(seed, nursery)
            await g.start()
            await g.wait_leader()
            ids = [await g.client.submit(i, key=f"k{i}") for i in range(8)]

            async def more() -> None:
                for i in range(8, 12):
                    await trio.sleep(0.5)
                    ids.append(await g.client.submit(i, key=f"k{i}"))

            async with trio.open_nursery() as inner:
                inner.start_soon(more)
                inner.start_soon(g.faults, 3)
            g.net.heal()
            tasks = [await g.client.wait(t, timeout=120) for t in ids]
            await trio.sleep(1.0)  # let every member apply the tail
            nursery.cancel_scope.cancel()

    assert len(set(ids)) == 12, g.fail("a retried submit created a duplicate")
    for t in tasks:
        assert t.state in (TaskState.COMPLETED, TaskState.FAILED), g.fail(f"{t.task_id} {t.state}")
        if t.state is TaskState.COMPLETED:
            assert t.result == {"double": 2 * t.payload}, g.fail(f"wrong result {t}")
    assert sum(t.state is TaskState.COMPLETED for t in tasks) >= 1, g.fail("nothing completed")
    completes = Counter(
        r.command.task_id
        for r in g.records.values()
        if isinstance(r.command, Complete) and isinstance(r.result, Accepted)
    )
    assert all(n == 1 for n in completes.values()), g.fail(f"completed twice: {completes}")
    g.check_log()


class Chatty(GenServer):
    """An orchestrator that appends SetFacts every 0.1 s and records every attempt."""

    attempts: list[tuple[int, float]] = []

    async def init(self, *args: Any) -> None:
        (self.ctx,) = args
        runtime.send(runtime.self_pid(), "tick")

    async def handle_info(self, msg: Any) -> None:
        ctx: OrchestratorContext = self.ctx
        now = ctx.now()
        if ctx.coordinator.view().is_leader:
            Chatty.attempts.append((ctx.term, now))
        try:
            await ctx.append(
                SetFacts(term=ctx.term, facts={"at": now, "by": ctx.node}), timeout=1.0
            )
        except Exception:
            pass
        runtime.send_after(0.1, runtime.self_pid(), "tick")


async def test_deposed_leader_paused_then_resumed_gets_nothing_applied(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A leader paused and cut off keeps its orchestrator running; none of its commands apply."""
    Chatty.attempts = []
    config = GroupConfig(stall_deadline=1000.0, clock=trio.current_time, dispatch_interval=0.05)
    with capture_logs():
        async with trio.open_nursery() as nursery:
            g = SimGroup(7, nursery, orchestrator=Chatty, config=config)
            await g.start(workers=True)
            old = await g.wait_leader()
            await trio.sleep(0.5)
            old_term = g.members[old].coordinator.view().term
            driver = g.members[old].coordinator.driver  # type: ignore[attr-defined]
            driver.pause_for(2.0)
            g.net.partition([old], [n for n in MEMBERS if n != old])
            new = await g.wait_leader(exclude=old)
            new_term = g.members[new].coordinator.view().term
            still_running = g.members[old].orchestrator() is not None
            await trio.sleep(3.0)  # the old leader resumes, still cut off from the members
            g.net.heal()
            await trio.sleep(2.0)
            # A worker refuses an assignment of the deposed term once it saw the new one.
            probe = g.client_node
            refused: list[Any] = []

            async def inbox() -> None:
                while True:
                    refused.append(await runtime.receive())

            pid = probe.spawn(inbox)
            worker_pid = g.members[new].registry.live()[0].pid
            probe.send(worker_pid, Assignment("x-stale", 1, new_term, 1e9, pid))  # raises seen term
            probe.send(worker_pid, Assignment("x-old", 1, old_term, 1e9, pid))
            await trio.sleep(0.5)
            nursery.cancel_scope.cancel()

    assert new != old
    assert still_running, "the deposed leader's orchestrator ran on while cut off"
    deposed_attempts = [a for a in Chatty.attempts if a[0] == old_term]
    assert deposed_attempts, "the old orchestrator tried to act"
    newterm_index = min(
        i
        for i, r in g.records.items()
        if isinstance(r.command, NewTerm) and r.command.term == new_term
    )
    late = [
        r
        for i, r in g.records.items()
        if i > newterm_index and r.command is not None and fenced_term(r.command) == old_term
    ]
    assert late == []
    g.check_log()
    assert any(isinstance(m, AssignmentRefused) and m.task_id == "x-old" for m in refused)


class Staller(GenServer):
    """An orchestrator that never does anything: a hung model call."""

    async def init(self, *args: Any) -> None:
        (self.ctx,) = args


async def test_watchdog_restarts_a_stalled_orchestrator_then_hands_leadership_over(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """No ledger progress restarts the orchestrator; the second stall moves leadership."""
    config = GroupConfig(
        stall_deadline=2.0,
        watchdog_interval=0.25,
        max_stalls=2,
        stall_window=100.0,
        clock=trio.current_time,
    )
    with capture_logs() as logs:
        async with trio.open_nursery() as nursery:
            g = SimGroup(11, nursery, orchestrator=Staller, config=config)
            await g.start()
            old = await g.wait_leader()
            first = g.members[old].orchestrator()
            await g.client.submit("stuck", key="stuck")
            await _until(lambda: any(e["event"] == "orchestrator_stalled" for e in logs))
            await trio.sleep(0.5)
            second = g.members[old].orchestrator()
            new = await g.wait_leader(exclude=old, timeout=30)
            nursery.cancel_scope.cancel()

    stalls = [e for e in logs if e["event"] == "orchestrator_stalled"]
    resigned = [e for e in logs if e["event"] == "leadership_resigned"]
    assert first is not None
    assert second is not None
    assert first != second
    assert stalls[0]["node"] == old
    assert resigned
    assert resigned[0]["node"] == old
    assert new != old


async def _until(predicate: Callable[[], bool]) -> None:
    with trio.fail_after(60):
        while True:
            if predicate():
                return
            await anyio.sleep(0.05)
