"""What the raft suite's clusters share: processes on loopback and the measured jobs.

A cluster (:class:`ProcessCluster`) is three member processes of one system (regency's
``runtime.raft.app``, etcd, pysyncobj) on loopback, each with a data directory under one
temporary directory. It can signal a member (SIGKILL: a crash; SIGTERM: a graceful stop)
and restart it from its data directory. :meth:`ProcessCluster.close` kills every member
it started (SIGKILL) and removes the directory; it is idempotent and also runs at exit.

A :class:`RaftClient` is one system's client, opened inside one measurement (inside its
``trio.run``). Every job below is written once against that interface, so the three
systems run exactly the same job:

* :func:`commit_run` -- ``clients`` concurrent workers, each putting sequentially (a
  worker talks to the leader it knows and retries, elsewhere if need be, until the put
  is acknowledged); returns the elapsed time and every put's latency.
* :func:`failover_cycle` -- wait until all three members are healthy, find the leader
  and its term, signal it, then launch one put attempt at the survivors every
  :data:`ATTEMPT_INTERVAL` seconds (attempts run concurrently; an attempt that waits on
  a dead leader does not delay the next one) until one is acknowledged: the time from
  the signal to that acknowledgement is the figure. Then read the new term (a jump of
  more than one means the election took more than one round: a split vote), and restart
  the member from its data directory.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Protocol

import attrs
import trio

from supervisors.member_app import free_ports

__all__ = [
    "ATTEMPT_INTERVAL",
    "CycleResult",
    "ProcessCluster",
    "RaftClient",
    "Timing",
    "commit_run",
    "failover_cycle",
    "free_ports",
    "wait_healthy",
]

ATTEMPT_INTERVAL = 0.005
"""Seconds between two put attempts while a cluster recovers from a leader's loss."""

ATTEMPT_TIMEOUT = 2.0
"""Seconds one recovery attempt may wait before it is abandoned."""


@attrs.frozen
class Timing:
    """The Raft timings every system runs with."""

    heartbeat_ms: int = 50
    election_min_ms: int = 150

    @property
    def election_max_ms(self) -> int:
        """Election timeouts are drawn from [min, 2 * min)."""
        return 2 * self.election_min_ms


class ProcessCluster:
    """Three member processes of one system on loopback; see the module docstring.

    Subclasses say how to start a member (:meth:`argv`) and when it is up
    (:meth:`wait_up`); ``ready_line`` is a prefix the member prints on stdout when up,
    or None when readiness is polled instead.
    """

    name = "cluster"
    ready_line: str | None = None

    def __init__(self, members: Sequence[str], timing: Timing) -> None:
        self.members = list(members)
        self.timing = timing
        self.root = Path(tempfile.mkdtemp(prefix=f"raftbench_{self.name}_"))
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.kills = 0
        self._logs: dict[str, IO[bytes]] = {}
        self._closed = False
        atexit.register(self.close)

    # -- to override ------------------------------------------------------------------

    def argv(self, member: str) -> list[str]:
        """The command line of ``member``."""
        raise NotImplementedError

    def env(self) -> dict[str, str] | None:
        """The environment of every member (None: inherit)."""
        return None

    async def wait_up(self, member: str, timeout: float) -> None:
        """Return once ``member`` serves requests."""
        proc = self.procs[member]
        assert self.ready_line is not None
        assert proc.stdout is not None
        stdout = proc.stdout
        with trio.fail_after(timeout):
            while True:
                line = await trio.to_thread.run_sync(stdout.readline, abandon_on_cancel=True)
                if not line:
                    raise RuntimeError(
                        f"{self.name} member {member} exited: {self.log_tail(member)}"
                    )
                if line.decode().startswith(self.ready_line):
                    return

    # -- processes --------------------------------------------------------------------

    def spawn(self, member: str) -> None:
        """Start ``member`` (again, from its data directory)."""
        log = self._logs.get(member)
        if log is None:
            log = self._logs[member] = (self.root / f"{member}.log").open("ab")
        self.procs[member] = subprocess.Popen(
            self.argv(member),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE if self.ready_line else subprocess.DEVNULL,
            stderr=log,
            env=self.env(),
        )

    async def start(self, timeout: float = 30.0) -> None:
        """Start every member and wait until each is up."""
        for m in self.members:
            self.spawn(m)
        for m in self.members:
            await self.wait_up(m, timeout)

    def signal(self, member: str, sig: int) -> None:
        """Send ``sig`` to ``member``."""
        if sig == signal.SIGKILL:
            self.kills += 1
        self.procs[member].send_signal(sig)

    async def wait_exit(self, member: str, timeout: float = 10.0) -> None:
        """Wait for ``member`` to exit; SIGKILL it if it takes longer than ``timeout``."""
        proc = self.procs[member]
        deadline = time.monotonic() + timeout
        while proc.poll() is None:
            if time.monotonic() > deadline:
                proc.kill()
            await trio.sleep(0.01)
        if proc.stdout is not None:
            proc.stdout.close()

    async def restart(self, member: str, timeout: float = 30.0) -> None:
        """Restart ``member`` from its data directory once it has exited."""
        await self.wait_exit(member)
        self.spawn(member)
        await self.wait_up(member, timeout)

    def log_tail(self, member: str, n: int = 600) -> str:
        """The end of ``member``'s log, for error messages."""
        path = self.root / f"{member}.log"
        try:
            return path.read_bytes()[-n:].decode(errors="replace")
        except OSError:
            return ""

    def close(self) -> None:
        """Kill every member (SIGKILL), reap it and remove the data. Idempotent."""
        if self._closed:
            return
        self._closed = True
        for proc in self.procs.values():
            if proc.poll() is None:
                with contextlib.suppress(OSError):
                    proc.kill()
        for proc in self.procs.values():
            with contextlib.suppress(Exception):
                proc.wait(timeout=5)
            if proc.stdout is not None:
                proc.stdout.close()
        for log in self._logs.values():
            log.close()
        if not os.environ.get("REGENCY_BENCH_KEEP"):
            shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> ProcessCluster:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Worker(Protocol):
    """One sequential client: puts one key at a time, retrying until acknowledged."""

    async def put(self, key: str, value: bytes) -> None:
        """Put and return once the put is acknowledged (committed)."""
        ...


class RaftClient(Protocol):
    """One system's client inside one measurement."""

    async def worker(self) -> Worker:
        """A new sequential client with its own connection(s)."""
        ...

    async def put_once(self, member: str, key: str, value: bytes) -> bool:
        """One put attempt through ``member``: True if acknowledged, False if refused."""
        ...

    async def leader(self) -> tuple[str | None, int]:
        """The leader the members report (None if none) and the highest term seen."""
        ...

    async def healthy(self, member: str) -> bool:
        """True when ``member`` follows a leader and has applied all it committed."""
        ...


async def wait_healthy(
    client: RaftClient, members: Sequence[str], timeout: float = 30.0
) -> tuple[str, int]:
    """Wait until a leader is known and every member is healthy; return (leader, term)."""
    with trio.fail_after(timeout):
        while True:
            leader, term = await client.leader()
            if leader is not None:
                oks = [await client.healthy(m) for m in members]
                if all(oks):
                    return leader, term
            await trio.sleep(0.02)


async def commit_run(
    client: RaftClient, n: int, clients: int, tag: str
) -> tuple[float, list[float]]:
    """``n`` puts by ``clients`` concurrent sequential workers; (seconds, latencies)."""
    workers = [await client.worker() for _ in range(clients)]
    latencies: list[float] = []
    per = [n // clients + (1 if i < n % clients else 0) for i in range(clients)]
    value = b"v" * 16

    async def work(i: int) -> None:
        w = workers[i]
        for j in range(per[i]):
            t = time.perf_counter()
            await w.put(f"{tag}-{i}-{j}", value)
            latencies.append(time.perf_counter() - t)

    start = time.perf_counter()
    async with trio.open_nursery() as nursery:
        for i in range(clients):
            nursery.start_soon(work, i)
    return time.perf_counter() - start, latencies


@attrs.frozen
class CycleResult:
    """One leader loss: milliseconds until a write committed again, and the term jump."""

    ms: float
    term_jump: int


async def recover(client: RaftClient, survivors: Sequence[str], t0: float, tag: str) -> float:
    """Attempt puts at the survivors every ATTEMPT_INTERVAL until one is acknowledged."""
    done = trio.Event()
    when: list[float] = []

    async def attempt(k: int) -> None:
        with trio.move_on_after(ATTEMPT_TIMEOUT):
            try:
                ok = await client.put_once(survivors[k % len(survivors)], f"{tag}-{k}", b"x")
            except (OSError, trio.BrokenResourceError, trio.ClosedResourceError):
                ok = False
            if ok and not done.is_set():
                when.append(time.perf_counter())
                done.set()

    async with trio.open_nursery() as nursery:
        k = 0
        while not done.is_set():
            nursery.start_soon(attempt, k)
            k += 1
            with trio.move_on_after(ATTEMPT_INTERVAL):
                await done.wait()
            if time.perf_counter() - t0 > 30:
                raise RuntimeError("no write committed within 30 s of losing the leader")
        nursery.cancel_scope.cancel()
    return (when[0] - t0) * 1000


async def failover_cycle(
    cluster: ProcessCluster, client: RaftClient, sig: int, tag: str
) -> CycleResult:
    """Signal the leader, time until a write commits again, restart it; see the module doc."""
    leader, term0 = await wait_healthy(client, cluster.members)
    survivors = [m for m in cluster.members if m != leader]
    t0 = time.perf_counter()
    cluster.signal(leader, sig)
    ms = await recover(client, survivors, t0, tag)
    with trio.fail_after(10):
        while True:
            new, term1 = await client.leader()
            if new is not None and new != leader:
                break
            await trio.sleep(0.01)
    await cluster.restart(leader)
    return CycleResult(ms, term1 - term0)
