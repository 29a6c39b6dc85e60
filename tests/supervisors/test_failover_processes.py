"""Orchestrator failover with every member and worker in its own OS process.

Three members and two worker nodes run ``python -m supervisors.member_app`` on loopback
(:class:`~supervisors.member_app.GroupProcesses`); the test process is a client node.
The claims are checked from the replicated log (every command the leader applied,
through the members' audit service after a linearizable read), never from timing.
"""

from __future__ import annotations

import signal
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import pytest

from runtime import Distribution, Node
from runtime.errors import CallTimeout, MailboxFull, NoProcError, ServerExited
from runtime.pid import Name
from supervisors.client import GroupClient
from supervisors.member_app import (
    AUDIT_SERVICE,
    AuditRecord,
    GroupProcesses,
    expected_answer,
    fetch_audit,
)

pytestmark = pytest.mark.slow

SECRET = "failover-process-test-secret-0123"
FENCED = {"assign", "progress", "fail", "cancel", "expire", "worker_down", "new_term"}


@asynccontextmanager
async def group(tmp: Path, think: str) -> AsyncIterator[tuple[GroupProcesses, Node, GroupClient]]:
    """Three members, two workers and a client node; every child killed at the end."""
    g = GroupProcesses(
        tmp, ("o1", "o2", "o3"), ("w1", "w2"), secret=SECRET, worker_args=["--think-ms", think]
    )
    try:
        await g.start()
        async with Node("tester") as node:
            dist = await Distribution(node, secret=SECRET.encode()).start()
            for m, port in g.ports.items():
                dist.add_peer(m, "127.0.0.1", port)
            yield g, node, GroupClient(node, g.members, timeout=30)
            node.stop()
    finally:
        g.close()


async def view(node: Node, member: str) -> dict[str, Any] | None:
    """``member``'s own view of the group, or None if it does not answer."""
    try:
        answer = await node.call(Name(AUDIT_SERVICE, member), "view", timeout=1.0)
    except (ServerExited, CallTimeout, MailboxFull, NoProcError):
        return None
    return answer if isinstance(answer, dict) else None


async def leader(node: Node, members: list[str], newer_than: int = 0) -> tuple[str, int]:
    """The member that leads, ready, in a term above ``newer_than``."""
    with anyio.fail_after(30):
        while True:
            for m in members:
                v = await view(node, m)
                if v and v["is_leader"] and v["ready"] and v["term"] > newer_than:
                    return m, int(v["term"])
            await anyio.sleep(0.05)


async def until_completed(client: GroupClient, n: int) -> None:
    """Return once the member that answers has ``n`` tasks completed."""
    while True:
        if (await client.status(timeout=10)).counts.completed >= n:
            return
        await anyio.sleep(0.05)


def accepted_completes(records: list[AuditRecord]) -> Counter[str]:
    """Accepted ``Complete`` commands per task id."""
    return Counter(r[2] for r in records if r[1] == "complete" and r[6] == "accepted")


def stale_accepted(records: list[AuditRecord]) -> list[AuditRecord]:
    """Accepted fenced commands whose term is below the highest already accepted."""
    fencing, bad = 0, []
    for r in records:
        if r[1] in FENCED and r[6] == "accepted" and r[4] is not None:
            if r[4] < fencing:
                bad.append(r)
            fencing = max(fencing, r[4])
    return bad


async def test_sigkill_of_the_leader_mid_workload_completes_every_task_once(
    tmp_path: Path,
) -> None:
    """SIGKILL the leader with work in flight: every task completes once, right answer."""
    async with group(tmp_path, "100:300") as (g, node, client):
        old, term = await leader(node, g.members)
        jobs = [f"job{i}" for i in range(30)]
        with anyio.fail_after(90):
            ids = [await client.submit({"job": j}, key=j) for j in jobs]
            await until_completed(client, 8)
            g.signal(old, signal.SIGKILL)
            new, new_term = await leader(node, [m for m in g.members if m != old], term)
            results = [await client.wait_result(t, timeout=60) for t in ids]
            records = await fetch_audit(node, new)

    assert new != old
    assert new_term > term
    assert [r["answer"] for r in results] == [expected_answer(j) for j in jobs]
    assert accepted_completes(records) == Counter(dict.fromkeys(ids, 1))
    assert stale_accepted(records) == []
    new_terms = [(r[4], r[5]) for r in records if r[1] == "new_term" and r[6] == "accepted"]
    assert (term, old) in new_terms
    assert (new_term, new) in new_terms


async def test_a_paused_deposed_leader_gets_none_of_its_commands_applied(
    tmp_path: Path,
) -> None:
    """SIGSTOP the leader past an election timeout, SIGCONT: nothing of its term applies after."""
    async with group(tmp_path, "200:400") as (g, node, client):
        old, term = await leader(node, g.members)
        jobs = [f"job{i}" for i in range(24)]
        with anyio.fail_after(90):
            ids = [await client.submit({"job": j}, key=j) for j in jobs[:12]]
            await until_completed(client, 3)
            g.signal(old, signal.SIGSTOP)
            others = [m for m in g.members if m != old]
            new, new_term = await leader(node, others, term)
            await anyio.sleep(1.0)  # well past the 300 ms maximum election timeout
            ids += [await client.submit({"job": j}, key=j) for j in jobs[12:]]
            g.signal(old, signal.SIGCONT)
            results = [await client.wait_result(t, timeout=60) for t in ids]
            await anyio.sleep(1.0)  # the resumed node has long heard of the new term
            after = await view(node, old)
            records = await fetch_audit(node, new)
        old_log = g.log_tail(old, 200_000)

    assert new != old
    assert [r["answer"] for r in results] == [expected_answer(j) for j in jobs]
    assert after is not None
    assert (after["is_leader"], after["term"] >= new_term) == (False, True)
    assert "orchestrator_stopped" in old_log
    first_new = next(
        r[0] for r in records if r[1] == "new_term" and r[6] == "accepted" and r[4] == new_term
    )
    of_old_term_after = [
        r
        for r in records
        if r[0] > first_new and r[1] in FENCED and r[6] == "accepted" and r[4] == term
    ]
    assert of_old_term_after == []
    assert stale_accepted(records) == []
    assert accepted_completes(records) == Counter(dict.fromkeys(ids, 1))


def test_free_ports_come_from_below_the_ephemeral_range() -> None:
    """Ports handed to child processes cannot be taken meanwhile by an outgoing dial."""
    import socket

    from supervisors.member_app import _ephemeral_low, free_ports

    ports = free_ports(8)
    assert len(set(ports)) == 8
    assert all(1024 <= p < _ephemeral_low() for p in ports)
    for port in ports:  # each is still free right after
        with socket.socket() as s:
            s.bind(("127.0.0.1", port))
