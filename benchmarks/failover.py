"""The failover suite: a real 3-member orchestrator group on loopback, its leader killed.

The group is three ``python -m supervisors.member_app member`` processes (o1..o3, the
default Raft timings: 10 ms ticks, a heartbeat every 50 ms, election timeouts drawn
from [150, 300) ms, pre-vote, fsync on every acknowledgement) and three worker processes
(w1..w3, two tasks at a time, 100-200 ms of seeded thinking per task), started once for
the whole suite; the benchmark process is a client node. While a case runs, a steady
workload keeps about twelve tasks outstanding (submitted with idempotency keys), so the
orchestrator always has work to dispatch: six assigned, six pending.

Cases (names fixed by BENCHMARKS.md):

``failover_p50_ms``, ``failover_p99_ms``
    Wait until the three members are up and caught up, SIGKILL the leader, and time
    from the signal until the successor's orchestrator dispatches again: the first
    ``Assign`` of a newer term committed by the group (the ``ledger_committed`` log
    event, whose time the member stamps when it applies the entry; the orchestrator
    sends the ``Assignment`` to the worker right after). The killed member is then
    restarted from its data directory. Percentiles per round, medians over rounds (the
    progress lines also give the percentiles and the maximum of every loss so far).
``handover_p99_ms`` (and ``handover_p50_ms``)
    The same with SIGTERM: the leader transfers leadership (Raft leadership transfer)
    before it stops.
``tasks_lost``, ``tasks_duplicated``
    After the cases above: every task the workload submitted is checked in the
    replicated log (the leader's applied commands, read after a linearizable read):
    *lost* = no accepted ``Complete`` within 60 s of the workload's end; *duplicated* =
    more than one accepted ``Complete`` for a task, or more than one task for one
    idempotency key. Both must be 0.

Peer: ``etcd`` (when installed) for ``failover_*`` and ``handover_*``: etcd's own leader
failover with the same timings, measured as the signal until a write commits again
(the raft suite's job, :func:`benchmarks.raft.failover_measure`). This is etcd's
consensus alone, with no orchestrator on top; regency's figure includes the new
leader's orchestrator starting and committing its first ``NewTerm`` and ``Assign``.

Targets (read from the output, never asserted): crash failover p99 <= the maximum
election timeout + 150 ms = 450 ms with the default timings; handover p99 <= 100 ms;
0 tasks lost, 0 duplicated.
"""

from __future__ import annotations

import itertools
import logging
import os
import shutil
import signal
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import structlog
import trio

from benchmarks.harness import Case, Measure, Metric, Skip, SuiteContext, percentile
from runtime import Distribution, Node
from runtime.errors import CallTimeout, MailboxFull, NoProcError, ServerExited
from runtime.pid import Name
from supervisors.client import GroupClient, GroupUnavailable
from supervisors.member_app import AUDIT_SERVICE, GroupProcesses, fetch_audit

__all__ = ["FULL", "QUICK", "BenchGroup", "Sizes", "build_cases", "cases", "start"]

SECRET = "failover-bench-secret-loopback"
ELECTION_MIN_MS = 150
ELECTION_MAX_MS = 300
HEARTBEAT_MS = 50
TICK_MS = 10
OUTSTANDING = 12
THINK_MS = "100:200"
CRASH_TARGET_MS = ELECTION_MAX_MS + 150
HANDOVER_TARGET_MS = 100


class Sizes:
    """Leader losses per measurement round."""

    def __init__(self, kills: int, handovers: int) -> None:
        self.kills = kills
        self.handovers = handovers


QUICK = Sizes(kills=2, handovers=2)
FULL = Sizes(kills=6, handovers=4)


class BenchGroup:
    """The suite's group of processes, the tasks its workload submitted, and its logs."""

    def __init__(self, root: Path) -> None:
        self.processes = GroupProcesses(
            root,
            ("o1", "o2", "o3"),
            ("w1", "w2", "w3"),
            secret=SECRET,
            member_args=[
                "--tick-ms", str(TICK_MS),
                "--heartbeat-ticks", str(HEARTBEAT_MS // TICK_MS),
                "--election-ticks", str(ELECTION_MIN_MS // TICK_MS),
            ],
            worker_args=["--think-ms", THINK_MS, "--capacity", "2"],
        )  # fmt: skip
        self.submitted: dict[str, str] = {}  # key -> task id
        self.keys = itertools.count()
        self.kills = 0
        self.sigterms = 0
        self.samples: dict[str, list[float]] = {}  # every figure so far, by case prefix
        # entry term -> earliest time an accepted Assign of that term was applied
        self.first_assign: dict[int, float] = {}

    def scan(self) -> None:
        """Read the members' new log events."""
        for ev in self.processes.events():
            if ev.get("event") != "ledger_committed":
                continue
            if str(ev.get("result", "")).startswith("accepted assign") and ev.get("ts"):
                term = int(ev.get("term", 0))
                ts = float(ev["ts"])
                self.first_assign[term] = min(ts, self.first_assign.get(term, ts))

    def close(self) -> None:
        """Kill every process of the group."""
        self.processes.close()


async def _view(node: Node, member: str) -> dict[str, Any] | None:
    try:
        answer = await node.call(Name(AUDIT_SERVICE, member), "view", timeout=1.0)
    except (ServerExited, CallTimeout, MailboxFull, NoProcError):
        return None
    return answer if isinstance(answer, dict) else None


async def wait_healthy(node: Node, group: BenchGroup, timeout: float = 60.0) -> tuple[str, int]:
    """Wait until a leader leads and both followers follow it, caught up; (leader, term)."""
    procs = group.processes
    with trio.fail_after(timeout):
        while True:
            views = {m: await _view(node, m) for m in procs.members if procs.alive(m)}
            lead = [v for v in views.values() if v and v["is_leader"] and v["ready"]]
            if len(views) == len(procs.members) and len(lead) == 1:
                leader = lead[0]
                if all(
                    v is not None
                    and (v is leader or (v["leader"] == leader["node"]
                                         and v["applied"] >= leader["applied"] - 20))
                    for v in views.values()
                ):  # fmt: skip
                    return str(leader["node"]), int(leader["term"])
            await trio.sleep(0.05)


async def _workload(client: GroupClient, group: BenchGroup) -> None:
    """Keep about OUTSTANDING tasks pending or assigned, forever."""
    while True:
        try:
            st = await client.status(timeout=2.0)
            missing = OUTSTANDING - (st.counts.pending + st.counts.assigned)
        except GroupUnavailable:
            missing = 0
        for _ in range(max(0, missing)):
            key = f"bench-{os.getpid()}-{next(group.keys)}"
            try:
                group.submitted[key] = await client.submit({"job": key}, key=key, timeout=10.0)
            except GroupUnavailable:
                break
        await trio.sleep(0.05)


def _with_group(
    group: BenchGroup, job: Callable[[Node, GroupClient], Any], workload: bool = True
) -> Any:
    """Run ``job(node, client)`` in a fresh ``trio.run`` (with the workload running)."""

    async def main() -> Any:
        async with Node(f"fobench-{os.getpid()}-{time.time_ns()}") as node:
            dist = await Distribution(node, secret=SECRET.encode()).start()
            for m, port in group.processes.ports.items():
                dist.add_peer(m, "127.0.0.1", port)
            client = GroupClient(node, group.processes.members, timeout=30.0)
            try:
                async with trio.open_nursery() as nursery:
                    if workload:
                        nursery.start_soon(_workload, client, group)
                    result = await job(node, client)
                    nursery.cancel_scope.cancel()
                return result
            finally:
                node.stop()

    return trio.run(main)


async def _cycle(node: Node, group: BenchGroup, sig: int) -> float:
    """One leader loss by ``sig``: ms from the signal to the successor's first Assign."""
    procs = group.processes
    leader, term = await wait_healthy(node, group)
    await trio.sleep(0.2)  # let the assignments settle in this term
    group.scan()
    t0 = time.time()
    procs.signal(leader, sig)
    if sig == signal.SIGKILL:
        group.kills += 1
    else:
        group.sigterms += 1
    with trio.fail_after(30):
        while True:
            group.scan()
            newer = [ts for t, ts in group.first_assign.items() if t > term]
            if newer:
                ms = (min(newer) - t0) * 1000
                break
            await trio.sleep(0.01)
    await procs.restart(leader)
    return ms


def failover_measure(
    group: BenchGroup, sig: int, prefix: str, note: Callable[[str], None]
) -> Measure:
    """``n`` leader losses by ``sig`` per call: the percentiles of their failover times."""

    def measure(n: int) -> Mapping[str, float]:
        async def job(node: Node, client: GroupClient) -> list[float]:
            out = []
            for _ in range(n):
                out.append(await _cycle(node, group, sig))
            return out

        ms: list[float] = _with_group(group, job)
        pooled = group.samples.setdefault(prefix, [])
        pooled += ms
        note(
            f"  regency {prefix}: " + ", ".join(f"{x:.0f}" for x in ms) + " ms; all"
            f" {len(pooled)} so far: p50 {percentile(pooled, 50):.0f}, p99"
            f" {percentile(pooled, 99):.0f}, max {max(pooled):.0f} ms"
        )
        return {
            f"{prefix}_p50_ms": percentile(ms, 50),
            f"{prefix}_p99_ms": percentile(ms, 99),
        }

    return measure


def integrity_measure(group: BenchGroup, note: Callable[[str], None]) -> Measure:
    """Lost and duplicated tasks among every task the workload submitted so far."""

    def measure(n: int) -> Mapping[str, float]:
        async def job(node: Node, client: GroupClient) -> tuple[int, int, int]:
            leader, _ = await wait_healthy(node, group)
            wanted = set(group.submitted.values())
            deadline = trio.current_time() + 60
            while True:
                records = await fetch_audit(node, leader, timeout=30)
                completes = Counter(
                    r[2] for r in records if r[1] == "complete" and r[6] == "accepted"
                )
                lost = wanted - set(completes)
                if not lost or trio.current_time() > deadline:
                    break
                await trio.sleep(0.5)
            by_key = Counter(r[5] for r in records if r[1] == "submit" and r[6] == "accepted")
            dup = sum(1 for c in completes.values() if c > 1)
            dup += sum(1 for k, c in by_key.items() if k in group.submitted and c > 1)
            return len(lost), dup, len(wanted)

        lost, dup, total = _with_group(group, job, workload=False)
        note(f"  regency: {total} tasks submitted, {lost} lost, {dup} duplicated")
        return {"tasks_lost": float(lost), "tasks_duplicated": float(dup)}

    return measure


def _params(**extra: object) -> dict[str, object]:
    params: dict[str, object] = {
        "election_timeout_max_ms": ELECTION_MAX_MS,
        "election_timeout_min_ms": ELECTION_MIN_MS,
        "heartbeat_ms": HEARTBEAT_MS,
        "tick_ms": TICK_MS,
        "nodes": 3,
        "workers": 3,
        "outstanding_tasks": OUTSTANDING,
        "think_ms": THINK_MS,
        "measured_until": "the successor's first committed Assign (it dispatches at once)",
        "etcd_measured_until": "a write commits again (no orchestrator on etcd)",
    }
    params.update(extra)
    return params


def _etcd(ctx: SuiteContext) -> Any:
    from benchmarks import raft
    from benchmarks.peers import raft_etcd

    if not raft_etcd.available():
        return Skip("etcd is not installed (Debian package etcd-server)")
    return raft._start(ctx, raft_etcd.EtcdCluster(raft.TIMING))


class _LiveParams(Mapping[str, object]):
    """Params whose kill counts are read when the row is written (after the measuring)."""

    def __init__(self, group: BenchGroup, base: dict[str, object]) -> None:
        self.group = group
        self.base = base

    def _all(self) -> dict[str, object]:
        return {**self.base, "kills": self.group.kills, "sigterms": self.group.sigterms}

    def __getitem__(self, key: str) -> object:
        return self._all()[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._all())

    def __len__(self) -> int:
        return len(self._all())


def start(ctx: SuiteContext) -> tuple[BenchGroup, Any]:
    """Start the group (removed with ``ctx.resources``) and etcd's cluster, or its Skip."""
    root = Path(tempfile.mkdtemp(prefix="fobench_"))
    group = BenchGroup(root)
    if not os.environ.get("REGENCY_BENCH_KEEP"):
        ctx.resources.callback(shutil.rmtree, root, True)
    ctx.resources.callback(group.close)
    started = time.perf_counter()
    trio.run(group.processes.start)
    ctx.note(f"  regency: 3 members and 3 workers up in {time.perf_counter() - started:.1f} s")
    return group, _etcd(ctx)


def build_cases(ctx: SuiteContext, group: BenchGroup, etcd: Any, sizes: Sizes) -> Iterator[Case]:
    """The suite's cases over a running group (and etcd's cluster, or its Skip)."""
    from benchmarks import raft

    def peer(sig: int, prefix: str) -> dict[str, Measure | Skip]:
        if isinstance(etcd, Skip):
            return {"etcd": etcd}
        return {"etcd": raft.failover_measure(etcd, sig, prefix, ctx.note)}

    kills = sizes.kills * ctx.repeats
    ctx.note(f"  failover: {sizes.kills} SIGKILLs per round, {kills} in all;"
             f" target p99 <= {CRASH_TARGET_MS} ms")  # fmt: skip
    yield Case(
        metrics=(
            Metric("failover_p50_ms", "ms", "lower"),
            Metric("failover_p99_ms", "ms", "lower"),
        ),
        subject=failover_measure(group, signal.SIGKILL, "failover", ctx.note),
        peers=peer(signal.SIGKILL, "failover"),
        size=sizes.kills,
        size_param="kills_per_round",
        params=_params(kills=kills, target_p99_ms=CRASH_TARGET_MS),
        warmup_size=0,
    )
    handovers = sizes.handovers * ctx.repeats
    ctx.note(f"  handover: {sizes.handovers} SIGTERMs per round, {handovers} in all;"
             f" target p99 <= {HANDOVER_TARGET_MS} ms")  # fmt: skip
    yield Case(
        metrics=(
            Metric("handover_p99_ms", "ms", "lower"),
            Metric("handover_p50_ms", "ms", "lower"),
        ),
        subject=failover_measure(group, signal.SIGTERM, "handover", ctx.note),
        peers=peer(signal.SIGTERM, "handover"),
        size=sizes.handovers,
        size_param="handovers_per_round",
        params=_params(kills=0, sigterms=handovers, target_p99_ms=HANDOVER_TARGET_MS),
        warmup_size=0,
    )
    yield Case(
        metrics=(
            Metric("tasks_lost", "tasks", "lower"),
            Metric("tasks_duplicated", "tasks", "lower"),
        ),
        subject=integrity_measure(group, ctx.note),
        peers={},
        size=1,
        size_param="checks",
        params=_LiveParams(group, _params()),
        warmup_size=0,
    )


def cases(ctx: SuiteContext) -> Iterator[Case]:
    """Start the group (and etcd), then yield the cases."""
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.ERROR))
    sizes = QUICK if ctx.quick else FULL
    if not ctx.quick and sizes.kills * ctx.repeats < 30:
        sizes.kills = -(-30 // ctx.repeats)  # at least 30 kills in full mode
    group, etcd = start(ctx)
    yield from build_cases(ctx, group, etcd, sizes)
