"""Orchestrator failover over real loopback TCP: three members and two worker nodes in one process.

Real time with generous bounds; no assertion depends on speed. Every claim is checked
from the ledger (the committed commands each member applied), not from timing.
"""

from __future__ import annotations

import contextlib
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import pytest

from runtime import Distribution, Node
from supervisors.client import GroupClient
from supervisors.coordination import Applied
from supervisors.failover import GroupConfig, GroupMember, start_group_member
from supervisors.ledger import Accepted, Assign, Complete, TaskState
from supervisors.workers import WorkerConfig, start_worker

SECRET = b"failover-test-secret-0123456789"
MEMBERS = ["m1", "m2", "m3"]
WORKERS = ["w1", "w2"]
CONFIG = GroupConfig(lease=3.0, dispatch_interval=0.05, worker_ttl=3.0, stall_deadline=60.0)
WCONFIG = WorkerConfig(hello_interval=0.2, progress_interval=0.5, retry_interval=0.05)


class Cluster:
    """Five nodes on loopback: members m1..m3 and worker nodes w1, w2."""

    def __init__(self) -> None:
        self.nodes: dict[str, Node] = {}
        self.members: dict[str, GroupMember] = {}
        self.runs: list[tuple[str, Any]] = []  # (worker, payload) per handler run
        self.applied: dict[str, list[Applied]] = {}

    async def start(self, stack: contextlib.AsyncExitStack, tmp: Path, delay: float) -> None:
        dists: dict[str, Distribution] = {}
        for name in MEMBERS + WORKERS:
            node = await stack.enter_async_context(Node(name))
            self.nodes[name] = node
            dists[name] = await Distribution(node, secret=SECRET).start(listen=("127.0.0.1", 0))
        for name, dist in dists.items():
            for other, odist in dists.items():
                if other != name:
                    assert odist.address is not None
                    dist.add_peer(other, *odist.address)
        tg = await stack.enter_async_context(anyio.create_task_group())
        stack.callback(tg.cancel_scope.cancel)
        for name in MEMBERS:
            member = await start_group_member(
                self.nodes[name], MEMBERS, config=CONFIG, data_dir=tmp
            )
            self.members[name] = member
            self.applied[name] = []
            tg.start_soon(self._record, name, member)
        for name in WORKERS:

            async def handler(payload: Any, name: str = name) -> Any:
                self.runs.append((name, payload))
                await anyio.sleep(delay)
                return {"double": payload * 2}

            await start_worker(
                self.nodes[name], MEMBERS, handler, name=name, capacity=2, config=WCONFIG
            )

    async def _record(self, name: str, member: GroupMember) -> None:
        async for rec in member.coordinator.watch():
            self.applied[name].append(rec)

    async def leader(self, exclude: str | None = None) -> str:
        with anyio.fail_after(20):
            while True:
                for name, m in self.members.items():
                    view = m.coordinator.view()
                    if name != exclude and view.is_leader and view.ready:
                        return name
                await anyio.sleep(0.02)

    def orchestrators(self) -> dict[str, bool]:
        out = {}
        for name, m in self.members.items():
            if not self.nodes[name].closing:
                out[name] = m.orchestrator() is not None
        return out


async def _until(predicate: Callable[[], bool]) -> None:
    while True:
        if predicate():
            return
        await anyio.sleep(0.02)


def _accepted(records: list[Applied], cls: type) -> list[Any]:
    return [
        r.command for r in records if isinstance(r.command, cls) and isinstance(r.result, Accepted)
    ]


@pytest.mark.slow
async def test_tasks_from_a_follower_complete_exactly_once(tmp_path: Path) -> None:
    """Tasks submitted through a non-leader member complete once; only the leader orchestrates."""
    async with contextlib.AsyncExitStack() as stack:
        c = Cluster()
        await c.start(stack, tmp_path, delay=0.02)
        leader = await c.leader()
        follower = next(n for n in MEMBERS if n != leader)
        client = GroupClient(c.nodes[follower], MEMBERS, timeout=20)
        with anyio.fail_after(60):
            ids = [await client.submit(i, key=f"k{i}") for i in range(10)]
            again = await client.submit(3, key="k3")  # a retried submit: same task
            results = [await client.wait_result(t, timeout=30) for t in ids]
            running = c.orchestrators()

        assert again == ids[3]
        assert results == [{"double": 2 * i} for i in range(10)]
        assert running == {n: n == leader for n in MEMBERS}
        ledger = c.members[leader].coordinator.peek(lambda led: led)
        assert len(ledger.tasks()) == 10
        assert all(t.state is TaskState.COMPLETED for t in ledger.tasks())
        completes = Counter(cmd.task_id for cmd in _accepted(c.applied[leader], Complete))
        assert set(completes.values()) == {1}


@pytest.mark.slow
async def test_leader_node_stop_fails_over_without_redoing_finished_tasks(tmp_path: Path) -> None:
    """Stopping the leader's node moves the orchestrator; finished tasks are never reassigned."""
    async with contextlib.AsyncExitStack() as stack:
        c = Cluster()
        await c.start(stack, tmp_path, delay=0.3)
        old = await c.leader()
        entry = next(n for n in MEMBERS if n != old)
        client = GroupClient(c.nodes[entry], MEMBERS, timeout=30)
        with anyio.fail_after(90):
            ids = [await client.submit(i, key=f"k{i}") for i in range(16)]
            survivor = c.members[entry].coordinator
            await _until(lambda: survivor.peek(lambda led: len(led.completed())) >= 4)
            done_before = {t.task_id for t in survivor.peek(lambda led: led.completed())}
            index_before = c.applied[entry][-1].index
            c.nodes[old].stop()  # a crash, as far as the cluster is concerned
            new = await c.leader(exclude=old)
            results = [await client.wait_result(t, timeout=60) for t in ids]
            running = c.orchestrators()

        assert new != old
        assert results == [{"double": 2 * i} for i in range(16)]
        assert running == {n: n == new for n in MEMBERS if n != old}
        records = c.applied[new]
        completes = Counter(cmd.task_id for cmd in _accepted(records, Complete))
        assert set(completes) == set(ids)
        assert set(completes.values()) == {1}
        after = [r for r in records if r.index > index_before]
        reassigned = {cmd.task_id for cmd in _accepted(after, Assign)} & done_before
        assert reassigned == set()
