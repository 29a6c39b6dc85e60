"""Three Raft members as real OS processes (``python -m runtime.raft.app``) on loopback.

The test's own node is the client, over the distribution layer. Every wait is bounded
generously (never asserted fast): this checks what survives a crash, not speed.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import pytest

from runtime import Distribution, Node
from runtime.raft.app import KVClient
from supervisors.member_app import free_ports

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[3]
SECRET = "raft-cluster-processes-test-secret"
MEMBERS = ["r1", "r2", "r3"]
BOUND = 20.0  # seconds any single wait may take before the test fails


class Cluster:
    """Three member processes with data directories under ``root``."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.ports = dict(zip(MEMBERS, free_ports(3), strict=True))
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, member: str) -> None:
        """Start ``member`` (again) from its data directory; returns once it printed ready."""
        argv = [
            sys.executable, "-m", "runtime.raft.app",
            "--id", member,
            "--listen", f"127.0.0.1:{self.ports[member]}",
            "--data", str(self.root / member),
        ]  # fmt: skip
        for other in MEMBERS:
            if other != member:
                argv += ["--peer", f"{other}=127.0.0.1:{self.ports[other]}"]
        env = {**os.environ, "REGENCY_SECRET": SECRET, "PYTHONPATH": str(ROOT)}
        with (self.root / f"{member}.log").open("ab") as log:
            proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=log, env=env, cwd=ROOT)
        self.procs[member] = proc
        assert proc.stdout is not None
        line = proc.stdout.readline().decode()
        assert line.split()[:2] == ["ready", member], (line, self.log(member))

    def log(self, member: str) -> str:
        """The tail of ``member``'s stderr log."""
        return (self.root / f"{member}.log").read_text(errors="replace")[-2000:]

    def kill_all(self) -> None:
        """SIGKILL every member still running and reap it."""
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.kill()
            proc.wait()
            if proc.stdout is not None:
                proc.stdout.close()


@asynccontextmanager
async def client_node(cluster: Cluster) -> AsyncIterator[Node]:
    """A node in the test process that knows every member's address."""
    async with Node("client") as node:
        dist = await Distribution(node, secret=SECRET.encode()).start()
        for m, port in cluster.ports.items():
            dist.add_peer(m, "127.0.0.1", port)
        yield node


async def leader_of(client: KVClient, members: list[str]) -> tuple[str, int]:
    """Wait until one of ``members`` is a ready leader; return its id and term."""
    with anyio.fail_after(BOUND):
        while True:
            for m in members:
                st = await client.status(m)
                if st and st["role"] == "leader" and st["leader_ready"]:
                    return m, st["term"]
            await anyio.sleep(0.02)


async def caught_up(client: KVClient, member: str) -> None:
    """Wait until ``member`` follows a leader and applied everything it committed."""
    with anyio.fail_after(BOUND):
        while True:
            st = await client.status(member)
            if st and st["leader"] is not None:
                lead = await client.status(st["leader"])
                if lead and st["applied"] >= lead["commit"]:
                    return
            await anyio.sleep(0.02)


async def test_acknowledged_writes_survive_a_leader_crash_and_a_handover(tmp_path: Path) -> None:
    """Every acknowledged write is on all three members once, across SIGKILL and SIGTERM."""
    cluster = Cluster(tmp_path)
    try:
        for m in MEMBERS:
            cluster.start(m)
        async with client_node(cluster) as node:
            probe = KVClient(node, MEMBERS)
            await leader_of(probe, MEMBERS)

            # Four clients write concurrently; the leader is killed after 20 acks. Two of
            # them let a member hold their put through the election (leader_wait).
            acked: dict[str, int] = {}
            writers, per_writer = 4, 15

            twenty_acked = anyio.Event()

            async def writer(w: int) -> None:
                client = KVClient(
                    node, MEMBERS, client_id=f"writer{w}", leader_wait=1.0 if w % 2 else 0.0
                )
                for i in range(per_writer):
                    key = f"w{w}-{i}"
                    await client.put(key, w * 1000 + i, deadline=BOUND)
                    acked[key] = w * 1000 + i
                    if len(acked) >= 20:
                        twenty_acked.set()

            killed: list[str] = []

            async def killer() -> None:
                await twenty_acked.wait()
                leader, _ = await leader_of(probe, MEMBERS)
                cluster.procs[leader].send_signal(signal.SIGKILL)
                killed.append(leader)

            async with anyio.create_task_group() as tg:
                tg.start_soon(killer)
                for w in range(writers):
                    tg.start_soon(writer, w)
            assert len(acked) == writers * per_writer
            assert len(killed) == 1

            # The killed member comes back from its data directory and catches up.
            dead = killed[0]
            cluster.procs[dead].wait()
            cluster.start(dead)
            await caught_up(probe, dead)

            for m in MEMBERS:
                dump = await probe.dump(m, deadline=BOUND)
                assert {k: dump[k][0] for k in acked} == acked, m
                assert all(version == 1 for _, version in dump.values()), m

            # A graceful stop of the leader hands leadership over.
            leader, term = await leader_of(probe, MEMBERS)
            cluster.procs[leader].send_signal(signal.SIGTERM)
            others = [m for m in MEMBERS if m != leader]
            _, new_term = await leader_of(probe, others)
            assert new_term > term
            assert cluster.procs[leader].wait(timeout=BOUND) == 0, cluster.log(leader)
            # handed over, not left to an election timeout
            whole_log = (cluster.root / f"{leader}.log").read_text(errors="replace")
            assert '"leadership_transfer_started"' in whole_log, cluster.log(leader)
            result: dict[str, Any] = await KVClient(node, others).put("after", 1, deadline=BOUND)
            assert result["duplicate"] is False
    finally:
        cluster.kill_all()
