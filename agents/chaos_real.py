"""``regency chaos --real``: an orchestrator group and workers as OS processes, under faults.

::

    regency chaos --real --seed 7 --duration 30
    regency chaos --real --seed 7 --duration 60 --members 5 --workers 4 \\
        --faults kill,stop,partition,delay --json chaos.json --plot chaos.png

What a run does, in order:

1. **Start.** A :class:`~runtime.faultproxy.FaultProxy` in this process, then ``--members``
   group members (``o1``...) and ``--workers`` worker nodes (``w1``...) as subprocesses of
   ``python -m supervisors.member_app`` (logs in ``WORKDIR/NAME.log``, durable logs in
   ``WORKDIR/data``, this process's own log in ``WORKDIR/runner.log``; ``WORKDIR`` is
   ``--work-dir`` or a fresh ``/tmp/chaos_real_SEED_*``, kept after the run). Every
   address a node is given is a proxy route: member ``o1``
   reaches ``o2`` at the route ``o1 -> o2``, worker ``w1`` reaches ``o2`` at ``w1 ->
   o2``; so every byte between two nodes crosses the proxy. This process runs a node of
   its own (``chaos``: the client and the observer), whose routes are never faulted, so
   it sees every member throughout.
2. **Workload.** A :class:`~supervisors.client.GroupClient` submits ``--rate`` tasks per
   second (``{"job": "job-00042"}``, the job name as task id and idempotency key, so a
   retried submission never makes a second task). A submission that gets no answer is
   retried with the same key after the heal.
3. **Faults**, from a schedule drawn from ``--seed`` (:func:`make_schedule`), all inside
   ``--duration`` seconds, each healed when it ends. Two lanes run side by side: the
   *group* lane (member processes and the network) and the *worker* lane (worker
   processes). Kinds (``--faults``, comma-separated, or ``all``, ``process``,
   ``network``):

   * ``kill`` -- SIGKILL a node (a member: the current leader half the time); restart
     it from the same data directory when the fault ends.
   * ``stop`` -- SIGSTOP a node (the leader half the time), SIGCONT when it ends.
   * ``partition`` -- cut links in the proxy: one member isolated from everyone, or the
     members split into a majority and a minority (workers spread over both sides), or
     a worker cut off from the members; soft (bytes held: a black hole) or hard
     (connections reset and refused: a rejecting firewall), drawn per fault.
   * ``oneway`` -- one member can hear the others but not reach them, or the reverse.
   * ``delay`` -- latency and jitter on every link between nodes.
   * ``reset`` -- connections reset at random, at a rate per second ("drop": see
     :mod:`runtime.faultproxy` for why packet drop looks like this to TCP).

   At most one member is down, stopped or cut off at any moment (the group lane runs
   one fault at a time), which keeps every fault within the promise: *any minority*.
   A lane that runs late (a restart is slow on a loaded machine) shifts its later
   faults; one that would not fit in the duration any more is skipped and reported.

   Why a proxy, not network namespaces. The kernels this runs on have no ``netem``, so
   delay and resets need the proxy anyway; doing the cuts there too needs no root, cuts
   each *directed* link on its own (one-way partitions), can be soft or hard, and is
   controlled synchronously from this process, so a fault's start and end are exact
   instants of the run's clock. What it cannot do: cut a node's traffic to something
   outside the group (nothing else is there), or drop individual packets (TCP would
   retransmit them; see :mod:`runtime.faultproxy`).
4. **Heal.** Every link clean, every stopped process continued, every killed one
   restarted; then wait for a ready leader (bounded by ``--heal-bound``), resubmit the
   unanswered submissions, and wait (``--quiesce`` at most) until every task is final.
5. **Check** (:func:`check_run`), from the client's records, linearizable reads, the
   members' audit services (every ledger command each applied:
   :func:`supervisors.member_app.fetch_audit`) and the status polls:

   * *none lost*: every task the group accepted is known to the ledger;
   * *finished*: each is completed (with the answer its job must give) or failed;
   * *exactly once*: at most one ``Complete`` of a task was ever accepted;
   * *agreement*: members that applied the same log index applied the same command;
   * *fencing*: no fenced command of a term older than one already accepted was
     accepted, and at most one ``NewTerm`` leader was accepted per term;
   * *one leader per term*: no two members were seen leading the same term;
   * *recovery*: a leader was elected within ``--heal-bound`` seconds of the heal.

6. **Report.** A table (faults injected per kind, elections, leader changes, the
   longest time with no leader seen, the time to a leader after the heal, tasks
   accepted/completed/failed, executions, violations), then any violation with the
   command that reproduces the schedule. ``--json PATH`` writes everything (config,
   schedule, faults as injected, observations, tasks, checks). ``--plot PATH.png``
   draws the leader and term over time and the cumulative completions, with the fault
   intervals shaded (matplotlib, the ``chaos`` extra).

Reproducibility. The seed fixes the schedule: which faults, on which nodes, when and
for how long, and the proxy's random draws. Real processes are not deterministic
(scheduling, elections, who leads when a fault aims at "the leader"), so rerunning a
seed replays the same schedule, not the same history.

Exit status: 0 when every check passed; 1 on a violation (the seed and the command to
rerun are printed); 2 on a usage error; 3 when the group could not be started.

Entry point: :func:`main` (``regency chaos --real ...`` reaches it through
:mod:`runtime.sim.cli`, which imports this module only when ``--real`` is given).
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import logging
import math
import random
import secrets
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Final, final

import anyio
import anyio.abc
import attrs
import structlog

from supervisors.member_app import (
    kill_children,
    log_tail,
    spawn_child,
    wait_exit_or_kill,
    wait_ready_line,
)

if TYPE_CHECKING:
    from rich.console import Console

    from runtime.faultproxy import FaultProxy
    from runtime.node import Node
    from supervisors.client import GroupClient

__all__ = [
    "ALL_KINDS",
    "KIND_MIXES",
    "Fault",
    "FaultRecord",
    "Observation",
    "RealConfig",
    "RealResult",
    "check_run",
    "main",
    "make_schedule",
    "parse_kinds",
    "repro_command",
    "run_real",
    "write_plot",
]

#: Every fault kind, in report order.
ALL_KINDS: Final = ("kill", "stop", "partition", "oneway", "delay", "reset")
#: Names for sets of kinds.
KIND_MIXES: Final[dict[str, frozenset[str]]] = {
    "all": frozenset(ALL_KINDS),
    "process": frozenset({"kill", "stop"}),
    "network": frozenset({"partition", "oneway", "delay", "reset"}),
}
_GROUP_KINDS: Final = ("kill", "stop", "partition", "oneway", "delay", "reset")
_WORKER_KINDS: Final = ("kill", "stop")
#: The runner's own node: client and observer; its routes are never faulted.
CLIENT: Final = "chaos"
#: Seconds before the first fault (the group elects and settles).
WARMUP: Final = 1.0
#: Seconds between two status polls of one member.
POLL_INTERVAL: Final = 0.25
#: Seconds a status poll (a call with a 0.5 s timeout) may take before it counts as
#: unanswered and as a call that overran its timeout.
STATUS_BOUND: Final = 1.5
#: A fault that would last less than this (its lane ran late) is skipped.
MIN_FAULT: Final = 0.3
_FINAL_STATES: Final = frozenset({"completed", "failed", "cancelled"})


# --------------------------------------------------------------------------- config


@final
@attrs.frozen
class RealConfig:
    """One real chaos run (seconds unless said otherwise)."""

    seed: int
    duration: float = 30.0  #: seconds of workload and faults
    members: int = 3
    workers: int = 3
    faults: frozenset[str] = frozenset(ALL_KINDS)
    rate: float = 4.0  #: tasks submitted per second
    heal_bound: float = 15.0  #: a leader must be ready this long after the heal
    quiesce: float = 60.0  #: every task must be final this long after the heal
    work_dir: Path | None = None  #: logs and data; default a fresh /tmp/chaos_* dir

    @property
    def member_names(self) -> list[str]:
        """``o1``, ``o2``..."""
        return [f"o{i + 1}" for i in range(self.members)]

    @property
    def worker_names(self) -> list[str]:
        """``w1``, ``w2``..."""
        return [f"w{i + 1}" for i in range(self.workers)]


def parse_kinds(text: str) -> frozenset[str]:
    """Parse ``--faults``: kinds and mix names, comma-separated.

    Raises:
        ValueError: an unknown name.
    """
    out: set[str] = set()
    for part in filter(None, (p.strip() for p in text.split(","))):
        if part in KIND_MIXES:
            out |= KIND_MIXES[part]
        elif part in ALL_KINDS:
            out.add(part)
        elif part == "none":
            continue
        else:
            known = ", ".join([*ALL_KINDS, *KIND_MIXES, "none"])
            raise ValueError(f"unknown fault {part!r} (known: {known})")
    return frozenset(out)


def repro_command(cfg: RealConfig) -> str:
    """The command that replays ``cfg``'s fault schedule."""
    kinds = ",".join(k for k in ALL_KINDS if k in cfg.faults) or "none"
    return (
        f"regency chaos --real --seed {cfg.seed} --duration {cfg.duration:g} "
        f"--members {cfg.members} --workers {cfg.workers} --faults {kinds} --rate {cfg.rate:g}"
    )


# --------------------------------------------------------------------------- schedule


@final
@attrs.frozen
class Fault:
    """One planned fault: ``kind`` on ``targets`` from ``at`` for ``length`` seconds.

    A target ``"@leader"`` means the member that leads when the fault starts (any
    member if none is known). ``detail`` holds the kind's parameters: ``hard`` (a
    partition), ``groups`` (the sides of a partition), ``direction`` (``"out"``: the
    target cannot send; ``"in"``: it cannot hear), ``delay``/``jitter`` (seconds),
    ``rate`` (resets per second).
    """

    at: float
    length: float
    kind: str
    lane: str  #: "group" or "worker"
    targets: tuple[str, ...] = ()
    detail: dict[str, Any] = attrs.field(factory=dict, eq=False)

    def to_json(self) -> dict[str, Any]:
        """A JSON-able dict."""
        return {
            "at": round(self.at, 3),
            "length": round(self.length, 3),
            "kind": self.kind,
            "lane": self.lane,
            "targets": list(self.targets),
            "detail": self.detail,
        }


def _group_fault(
    rng: random.Random, kind: str, cfg: RealConfig
) -> tuple[tuple[str, ...], dict[str, Any]]:
    members, workers = cfg.member_names, cfg.worker_names
    if kind in ("kill", "stop"):
        return (("@leader",) if rng.random() < 0.5 else (rng.choice(members),)), {}
    if kind == "partition":
        hard = rng.random() < 0.3
        shape = rng.choice(["isolate", "split", "worker"] if workers else ["isolate", "split"])
        if shape == "worker" and workers:
            w = rng.choice(workers)
            return (w,), {"hard": hard, "groups": [[w], members]}
        if shape == "split" and len(members) >= 3:
            minority = rng.sample(members, (len(members) - 1) // 2)
            majority = [m for m in members if m not in minority]
            left, right = list(minority), list(majority)
            for w in workers:
                (left if rng.random() < 0.5 else right).append(w)
            return tuple(minority), {"hard": hard, "groups": [sorted(left), sorted(right)]}
        m = rng.choice(members)
        rest = [x for x in [*members, *workers] if x != m]
        return (m,), {"hard": hard, "groups": [[m], rest]}
    if kind == "oneway":
        return (rng.choice(members),), {"direction": rng.choice(["out", "in"])}
    if kind == "delay":
        return (), {
            "delay": round(rng.uniform(0.02, 0.2), 3),
            "jitter": round(rng.uniform(0, 0.1), 3),
        }
    if kind == "reset":
        return (), {"rate": round(rng.uniform(0.3, 2.0), 2)}
    raise ValueError(kind)


def make_schedule(cfg: RealConfig) -> list[Fault]:
    """The faults of ``cfg``'s run, drawn from its seed; pure and deterministic.

    Two lanes: the group lane (every kind in ``cfg.faults``; one fault at a time, so at
    most one member is affected at once) and the worker lane (``kill`` and ``stop`` of
    workers). Faults start after a warm-up of 1 s, last 1-4 s (less in short runs), are
    separated by 0.5-2 s, and all end by ``cfg.duration``.
    """
    rng = random.Random(f"regency-chaos-real/{cfg.seed}")
    longest = max(1.0, min(4.0, cfg.duration / 4))
    out: list[Fault] = []
    lanes: list[tuple[str, list[str]]] = [
        ("group", [k for k in _GROUP_KINDS if k in cfg.faults]),
        ("worker", [k for k in _WORKER_KINDS if k in cfg.faults] if cfg.workers else []),
    ]
    for lane, kinds in lanes:
        lane_rng = random.Random(rng.random())
        t = WARMUP + lane_rng.uniform(0, 1.0)
        while kinds:
            kind = lane_rng.choice(kinds)
            length = round(lane_rng.uniform(1.0, longest), 3)
            if t + length > cfg.duration:
                break
            if lane == "group":
                targets, detail = _group_fault(lane_rng, kind, cfg)
            else:
                targets, detail = (lane_rng.choice(cfg.worker_names),), {}
            out.append(Fault(round(t, 3), length, kind, lane, targets, detail))
            t += length + lane_rng.uniform(0.5, 2.0)
    out.sort(key=lambda f: (f.at, f.lane))
    return out


# --------------------------------------------------------------------------- records


@final
@attrs.define
class FaultRecord:
    """A fault as injected: the resolved targets and the real start and end (run time)."""

    kind: str
    lane: str
    targets: list[str]
    start: float
    end: float | None = None
    detail: dict[str, Any] = attrs.Factory(dict)

    def to_json(self) -> dict[str, Any]:
        """A JSON-able dict."""
        return {
            "kind": self.kind,
            "lane": self.lane,
            "targets": self.targets,
            "start": round(self.start, 3),
            "end": None if self.end is None else round(self.end, 3),
            "detail": self.detail,
        }


@final
@attrs.frozen
class Observation:
    """One status poll of one member at run time ``t``; ``ok`` False: no answer."""

    t: float
    member: str
    ok: bool
    leader: str | None = None
    term: int = 0
    is_leader: bool = False
    completed: int = 0
    failed: int = 0


@final
@attrs.define
class RealResult:
    """Everything one real run recorded and concluded."""

    config: RealConfig
    schedule: list[Fault]
    work_dir: Path
    injected: list[FaultRecord] = attrs.Factory(list)
    skipped: list[Fault] = attrs.Factory(list)  #: planned, but the lane ran out of time
    elected: dict[int, list[str]] = attrs.Factory(dict)  #: term -> leader_elected nodes (logs)
    observations: list[Observation] = attrs.Factory(list)
    accepted: dict[str, float] = attrs.Factory(dict)  #: task id -> run time accepted
    submit_latency: list[float] = attrs.Factory(list)
    unanswered: list[str] = attrs.Factory(list)  #: never answered, even after the heal
    finals: dict[str, dict[str, Any] | None] = attrs.Factory(dict)  #: task id -> final record
    audits: dict[str, list[list[Any]]] = attrs.Factory(dict)
    executions: dict[str, int] = attrs.Factory(dict)  #: job -> handler runs (worker logs)
    heal_at: float | None = None
    leader_after_heal: float | None = None  #: seconds from the heal to a ready leader
    quiesced_after: float | None = None
    violations: list[str] = attrs.Factory(list)
    error: str | None = None  #: the run itself failed (processes did not start...)
    overrun_calls: int = 0  #: status calls that outlived their own timeout by 1 s
    wall: float = 0.0

    @property
    def ok(self) -> bool:
        """No violation and no error."""
        return not self.violations and self.error is None

    # -- derived figures ----------------------------------------------------------------

    def leader_terms(self) -> dict[int, set[str]]:
        """Term -> the members seen leading it."""
        out: dict[int, set[str]] = defaultdict(set)
        for o in self.observations:
            if o.ok and o.is_leader:
                out[o.term].add(o.member)
        return dict(out)

    def leader_changes(self) -> int:
        """How often the leader seen changed (in time order)."""
        changes, last = 0, None
        for o in sorted(self.observations, key=lambda o: o.t):
            if o.ok and o.is_leader and o.member != last:
                changes += last is not None
                last = o.member
        return changes

    def max_unavailability(self) -> float:
        """The longest time between two polls that saw a leader (after the first one)."""
        seen = sorted(o.t for o in self.observations if o.ok and o.is_leader)
        gaps = [b - a for a, b in itertools.pairwise(seen)]
        return max(gaps, default=0.0)

    def completions(self) -> list[tuple[float, int]]:
        """Cumulative completions over time: the most any member reported so far."""
        best, out = 0, []
        for o in sorted(self.observations, key=lambda o: o.t):
            if o.ok and o.completed > best:
                best = o.completed
                out.append((o.t, best))
        return out

    def faults_by_kind(self) -> Counter[str]:
        """How many faults of each kind were injected."""
        return Counter(f.kind for f in self.injected)

    def task_counts(self) -> dict[str, int]:
        """Accepted, completed, failed and unfinished tasks, and unanswered submissions."""
        states = Counter((r or {}).get("state", "unknown") for r in self.finals.values())
        return {
            "accepted": len(self.accepted),
            "completed": states["completed"],
            "failed": states["failed"],
            "unfinished": len(self.accepted) - states["completed"] - states["failed"],
            "unanswered": len(self.unanswered),
            "executions": sum(self.executions.values()),
        }

    def summary(self) -> dict[str, Any]:
        """The figures of the report table, JSON-able."""
        terms = self.leader_terms()
        return {
            "seed": self.config.seed,
            "ok": self.ok,
            "faults": dict(sorted(self.faults_by_kind().items())),
            "elections": len(self.elected) if self.elected else len(terms),
            "leader_changes": self.leader_changes(),
            "max_unavailability": round(self.max_unavailability(), 3),
            "leader_after_heal": (
                None if self.leader_after_heal is None else round(self.leader_after_heal, 3)
            ),
            "quiesced_after": None
            if self.quiesced_after is None
            else round(self.quiesced_after, 3),
            "max_submit_latency": round(max(self.submit_latency, default=0.0), 3),
            "overrun_calls": self.overrun_calls,
            "tasks": self.task_counts(),
            "violations": len(self.violations),
            "wall_seconds": round(self.wall, 2),
        }

    def to_json(self) -> dict[str, Any]:
        """The whole report as a JSON-able dict."""
        cfg = self.config
        return {
            "summary": self.summary(),
            "config": {
                "seed": cfg.seed,
                "duration": cfg.duration,
                "members": cfg.members,
                "workers": cfg.workers,
                "faults": [k for k in ALL_KINDS if k in cfg.faults],
                "rate": cfg.rate,
                "heal_bound": cfg.heal_bound,
                "quiesce": cfg.quiesce,
            },
            "repro": repro_command(cfg),
            "deterministic": False,
            "work_dir": str(self.work_dir),
            "error": self.error,
            "violations": self.violations,
            "schedule": [f.to_json() for f in self.schedule],
            "injected": [f.to_json() for f in self.injected],
            "skipped": [f.to_json() for f in self.skipped],
            "elected": {str(t): nodes for t, nodes in sorted(self.elected.items())},
            "heal_at": self.heal_at,
            "leaders": {str(t): sorted(m) for t, m in sorted(self.leader_terms().items())},
            "observations": [attrs.asdict(o) for o in self.observations],
            "completions": self.completions(),
            "tasks": {
                tid: {"accepted_at": round(at, 3), "final": self.finals.get(tid)}
                for tid, at in sorted(self.accepted.items())
            },
            "unanswered": self.unanswered,
            "executions": self.executions,
        }


# --------------------------------------------------------------------------- checks


def check_run(
    accepted: Iterable[str],
    finals: dict[str, dict[str, Any] | None],
    audits: dict[str, list[list[Any]]],
    observations: Sequence[Observation],
    *,
    elected: dict[int, list[str]] | None = None,
    leader_after_heal: float | None,
    heal_bound: float,
    expected: Any = None,
) -> list[str]:
    """The invariant violations of a run (empty: all held); see the module docstring.

    Args:
        accepted: the task ids the group accepted (the client got an answer).
        finals: task id -> its final record as a linearizable read gave it (``state``,
            ``result``, ``completed_by``), or None if the ledger does not know it.
        audits: member -> its :data:`~supervisors.member_app.AuditRecord` list.
        observations: the status polls.
        elected: term -> the members that logged ``leader_elected`` for it.
        leader_after_heal: seconds from the heal to a ready leader, None if never.
        heal_bound: the bound on ``leader_after_heal``.
        expected: ``job -> answer`` of a completed task, or None not to check answers.
    """
    out: list[str] = []
    for tid in sorted(accepted):
        rec = finals.get(tid)
        if rec is None:
            out.append(f"lost: task {tid} was accepted but the ledger does not know it")
            continue
        state = rec.get("state")
        if state not in ("completed", "failed"):
            out.append(f"unfinished: task {tid} is still {state} after quiescence")
        elif state == "completed" and expected is not None:
            result = rec.get("result")
            answer = result.get("answer") if isinstance(result, dict) else None
            if answer != expected(tid):
                out.append(f"wrong result: task {tid} completed with {result!r}")
    # agreement between members on every index both applied
    by_index: dict[int, tuple[str, list[Any]]] = {}
    for member, records in sorted(audits.items()):
        for entry in records:
            if entry[1] == "snapshot":
                continue
            first = by_index.setdefault(int(entry[0]), (member, entry))
            if first[1] != entry:
                out.append(
                    f"disagreement at index {entry[0]}: {first[0]} applied {first[1]!r}, "
                    f"{member} applied {entry!r}"
                )
    log = [by_index[i][1] for i in sorted(by_index)]
    completes: Counter[str] = Counter()
    fencing = 0
    new_terms: dict[int, set[str]] = defaultdict(set)
    for entry in log:
        index, op, task_id, _worker, term, key, kind = entry[:7]
        if kind != "accepted":
            continue
        if op == "complete":
            completes[str(task_id)] += 1
        if op in ("submit", "complete", "account") or term is None:
            continue
        if term < fencing:
            out.append(
                f"stale term: {op} of term {term} accepted at index {index} "
                f"after term {fencing} was fenced in"
            )
        fencing = max(fencing, int(term))
        if op == "new_term":
            new_terms[int(term)].add(str(key))
    for tid, n in sorted(completes.items()):
        if n > 1:
            out.append(f"completed twice: task {tid} has {n} accepted completions")
    if audits:
        for tid in sorted(accepted):
            rec = finals.get(tid)
            if rec is not None and rec.get("state") == "completed" and completes[tid] != 1:
                out.append(f"completion not in the log: task {tid} ({completes[tid]} accepted)")
    for term, leaders in sorted(new_terms.items()):
        if len(leaders) > 1:
            out.append(f"two orchestrators in term {term}: {sorted(leaders)}")
    seen: dict[int, set[str]] = defaultdict(set)
    for o in observations:
        if o.ok and o.is_leader:
            seen[o.term].add(o.member)
    for term, leaders in sorted(seen.items()):
        if len(leaders) > 1:
            out.append(f"two leaders seen in term {term}: {sorted(leaders)}")
    for term, nodes in sorted((elected or {}).items()):
        if len(set(nodes)) > 1:
            out.append(f"two members logged leader_elected for term {term}: {sorted(set(nodes))}")
    if leader_after_heal is None:
        out.append(f"no leader within {heal_bound:g} s of the heal")
    elif leader_after_heal > heal_bound:
        out.append(f"leader only {leader_after_heal:.1f} s after the heal (bound {heal_bound:g} s)")
    return out


# --------------------------------------------------------------------------- processes


@final
class _Procs:
    """The run's subprocesses; every address a node gets is a proxy route."""

    def __init__(self, root: Path, cfg: RealConfig, secret: str, ports: dict[str, int]) -> None:
        self.root = root
        self.cfg = cfg
        self.secret = secret
        self.ports = ports
        self.routes: dict[tuple[str, str], tuple[str, int]] = {}
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.stopped: set[str] = set()
        self.killed: set[str] = set()
        self._logs: dict[str, IO[bytes]] = {}

    def argv(self, name: str) -> list[str]:
        """The command line of ``name``: its ``--member`` addresses are proxy routes."""
        peers: list[str] = []
        for m in self.cfg.member_names:
            host, port = ("127.0.0.1", self.ports[m]) if m == name else self.routes[(name, m)]
            peers += ["--member", f"{m}={host}:{port}"]
        base = [sys.executable, "-m", "supervisors.member_app"]
        if name in self.ports:
            return [
                *base,
                "member",
                "--name",
                name,
                "--listen",
                f"127.0.0.1:{self.ports[name]}",
                "--data",
                str(self.root / "data"),
                "--lease",
                "3",
                "--worker-ttl",
                "3",
                *peers,
            ]
        return [
            *base,
            "worker",
            "--name",
            name,
            "--seed",
            str(self.cfg.seed),
            "--think-ms",
            "100:400",
            "--capacity",
            "2",
            *peers,
        ]

    def spawn(self, name: str) -> None:
        self.procs[name] = spawn_child(self.root, name, self.argv(name), self.secret, self._logs)
        self.killed.discard(name)
        self.stopped.discard(name)

    async def wait_ready(self, name: str, timeout: float = 30.0) -> None:
        await wait_ready_line(
            self.procs[name],
            timeout,
            lambda: f"{name} exited before it was ready: {self.tail(name)}",
        )

    def signal(self, name: str, sig: int) -> None:
        proc = self.procs[name]
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(sig)
        if sig == signal.SIGSTOP:
            self.stopped.add(name)
        elif sig == signal.SIGCONT:
            self.stopped.discard(name)
        elif sig == signal.SIGKILL:
            self.killed.add(name)
            self.stopped.discard(name)

    async def reap(self, name: str, timeout: float = 10.0) -> None:
        await wait_exit_or_kill(self.procs[name], timeout)

    def tail(self, name: str, n: int = 600) -> str:
        return log_tail(self.root / f"{name}.log", n)

    async def stop_all(self) -> None:
        """SIGCONT, then SIGTERM every child; SIGKILL what has not exited after 5 s."""
        for proc in self.procs.values():
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.send_signal(signal.SIGCONT)
                    proc.send_signal(signal.SIGTERM)
        for name in self.procs:
            await self.reap(name, timeout=5.0)

    def close(self) -> None:
        """SIGKILL every child still running, reap it, close the logs. Idempotent."""
        kill_children(self.procs.values(), self._logs.values())
        self._logs.clear()

    def _events(self, name: str, event: str) -> Iterable[dict[str, Any]]:
        try:
            lines = (self.root / f"{name}.log").read_bytes().splitlines()
        except OSError:
            return
        needle = event.encode()
        for line in lines:
            if needle not in line:
                continue
            with contextlib.suppress(ValueError):
                ev = json.loads(line)
                if isinstance(ev, dict) and ev.get("event") == event:
                    yield ev

    def elections(self) -> dict[int, list[str]]:
        """Term -> the members that logged ``leader_elected`` for it (restarts included)."""
        out: dict[int, list[str]] = defaultdict(list)
        for m in self.cfg.member_names:
            for ev in self._events(m, "leader_elected"):
                out[int(ev.get("term", 0))].append(m)
        return dict(out)

    def executions(self) -> dict[str, int]:
        """Job -> how many times a worker's handler finished it (from the worker logs)."""
        out: Counter[str] = Counter()
        for w in self.cfg.worker_names:
            for ev in self._events(w, "task_executed"):
                out[str(ev.get("job"))] += 1
        return dict(out)


# --------------------------------------------------------------------------- the run


@final
class _Run:
    """One real chaos run; :meth:`run` fills a :class:`RealResult`."""

    def __init__(self, cfg: RealConfig, result: RealResult, on_event: Any = None) -> None:
        self.cfg = cfg
        self.result = result
        self.on_event = on_event or (lambda text: None)
        self.t0 = time.monotonic()
        self.procs: _Procs | None = None
        self.proxy: FaultProxy | None = None
        self.client: GroupClient | None = None
        self.node: Node | None = None
        self.latest: dict[str, Observation] = {}
        self.submitting = True
        self.pending_restarts: set[str] = set()

    def now(self) -> float:
        return time.monotonic() - self.t0

    # -- observer -------------------------------------------------------------------

    async def observe(self, member: str) -> None:
        from runtime.errors import RegencyError

        assert self.client is not None
        while True:
            t, started, epoch = self.now(), time.monotonic(), self.t0
            try:
                with anyio.fail_after(STATUS_BOUND):  # in case the call overruns its timeout
                    st = await self.client.status(member, timeout=0.5)
                obs = Observation(
                    t,
                    member,
                    True,
                    st.leader,
                    st.term,
                    st.is_leader,
                    st.counts.completed,
                    st.counts.failed,
                )
            except RegencyError:  # no answer: killed, stopped, or its node unreachable
                obs = Observation(t, member, False)
            except TimeoutError:
                self.result.overrun_calls += 1
                obs = Observation(t, member, False)
            if epoch == self.t0:  # not taken across the start of the run's clock
                self.result.observations.append(obs)
                self.latest[member] = obs
            await anyio.sleep(max(0.0, POLL_INTERVAL - (time.monotonic() - started)))

    def current_leader(self) -> str | None:
        fresh = [
            o
            for o in self.latest.values()
            if o.ok and o.is_leader and self.now() - o.t < 2 * POLL_INTERVAL + 0.5
        ]
        return max(fresh, key=lambda o: o.term).member if fresh else None

    # -- workload -------------------------------------------------------------------

    async def submit(self, job: str, timeout: float) -> bool:
        from supervisors.client import GroupUnavailable, SubmitRefused

        assert self.client is not None
        started = self.now()
        try:
            await self.client.submit({"job": job}, key=job, task_id=job, timeout=timeout)
        except GroupUnavailable:
            return False
        except SubmitRefused as exc:  # pragma: no cover - a well-formed payload
            self.result.violations.append(f"submission of {job} refused: {exc}")
            return True
        self.result.accepted.setdefault(job, self.now())
        self.result.submit_latency.append(self.now() - started)
        return True

    async def workload(self, unanswered: set[str]) -> None:
        limiter = anyio.CapacityLimiter(64)

        async def one(job: str) -> None:
            async with limiter:
                if not await self.submit(job, timeout=8.0):
                    unanswered.add(job)

        async with anyio.create_task_group() as tg:
            i = 0
            while self.submitting:
                tg.start_soon(one, f"job-{i:05d}")
                i += 1
                await anyio.sleep(1.0 / self.cfg.rate)

    # -- faults ---------------------------------------------------------------------

    def _resolve(self, fault: Fault) -> list[str]:
        out = []
        for t in fault.targets:
            if t == "@leader":
                leader = self.current_leader()
                out.append(leader or random.Random(fault.at).choice(self.cfg.member_names))
            else:
                out.append(t)
        return out

    def _others(self, node: str) -> list[str]:
        return [n for n in [*self.cfg.member_names, *self.cfg.worker_names] if n != node]

    def _apply(self, fault: Fault, targets: list[str]) -> None:
        assert self.procs is not None
        assert self.proxy is not None
        proxy, d = self.proxy, fault.detail
        nodes = [*self.cfg.member_names, *self.cfg.worker_names]
        if fault.kind == "kill":
            self.procs.signal(targets[0], signal.SIGKILL)
        elif fault.kind == "stop":
            self.procs.signal(targets[0], signal.SIGSTOP)
        elif fault.kind == "partition":
            proxy.partition(*d["groups"], hard=bool(d["hard"]))
        elif fault.kind == "oneway":
            m = targets[0]
            for other in self._others(m):
                if d["direction"] == "out":
                    proxy.cut(m, other, both=False)
                else:
                    proxy.cut(other, m, both=False)
        elif fault.kind == "delay":
            for i, a in enumerate(nodes):
                for b in nodes[i + 1 :]:
                    proxy.set_delay(a, b, float(d["delay"]), float(d["jitter"]))
        elif fault.kind == "reset":
            for i, a in enumerate(nodes):
                for b in nodes[i + 1 :]:
                    proxy.set_reset_rate(a, b, float(d["rate"]))

    async def _heal(self, fault: Fault, targets: list[str]) -> None:
        assert self.procs is not None
        assert self.proxy is not None
        if fault.kind == "kill":
            await self.restart(targets[0])
        elif fault.kind == "stop":
            self.procs.signal(targets[0], signal.SIGCONT)
        else:
            self.proxy.heal_all()  # the group lane runs one network fault at a time

    async def restart(self, name: str) -> None:
        assert self.procs is not None
        if name not in self.procs.killed:
            return
        self.pending_restarts.add(name)
        try:
            await self.procs.reap(name)
            self.procs.spawn(name)
            await self.procs.wait_ready(name)
        except (RuntimeError, TimeoutError) as exc:
            self.result.violations.append(f"{name} did not restart: {exc}")
        finally:
            self.pending_restarts.discard(name)

    async def lane(self, faults: list[Fault]) -> None:
        """Inject ``faults`` one after the other; a late lane (a slow restart) shifts
        the rest, each keeping its length but never running past the duration."""
        for fault in faults:
            await anyio.sleep(max(0.0, fault.at - self.now()))
            length = min(fault.length, self.cfg.duration - self.now())
            if length < MIN_FAULT:
                self.result.skipped.append(fault)
                continue
            targets = self._resolve(fault)
            rec = FaultRecord(fault.kind, fault.lane, targets, self.now(), detail=fault.detail)
            self.result.injected.append(rec)
            self._apply(fault, targets)
            self.on_event(f"{rec.start:6.1f}s  {fault.kind:<9} {','.join(targets) or 'all links'}")
            await anyio.sleep(length)
            healing = self.now()
            await self._heal(fault, targets)
            rec.end = self.now()
            if rec.end - healing > 0.05:
                rec.detail = {**rec.detail, "restart_s": round(rec.end - healing, 3)}

    async def heal_everything(self) -> None:
        assert self.procs is not None
        assert self.proxy is not None
        self.proxy.heal_all()
        for name in list(self.procs.stopped):
            self.procs.signal(name, signal.SIGCONT)
        async with anyio.create_task_group() as tg:
            for name in list(self.procs.killed):
                tg.start_soon(self.restart, name)
        for rec in self.result.injected:
            if rec.end is None:
                rec.end = self.now()

    # -- the whole run --------------------------------------------------------------

    async def run(self) -> None:
        from runtime.dist import Distribution
        from runtime.faultproxy import FaultProxy
        from runtime.node import Node
        from supervisors.client import GroupClient
        from supervisors.member_app import fetch_audit, free_ports

        cfg, result = self.cfg, self.result
        root = result.work_dir
        members, workers = cfg.member_names, cfg.worker_names
        secret = secrets.token_urlsafe(32)
        ports = dict(zip(members, free_ports(len(members)), strict=True))
        self.procs = procs = _Procs(root, cfg, secret, ports)
        try:
            async with FaultProxy(seed=cfg.seed) as proxy, Node(CLIENT) as node:
                self.proxy, self.node = proxy, node
                for m in members:
                    proxy.set_target(m, "127.0.0.1", ports[m])
                for src in [*members, *workers, CLIENT]:
                    for m in members:
                        if src != m:
                            procs.routes[(src, m)] = await proxy.route(src, m)
                dist = await Distribution(node, secret=secret.encode()).start()
                for m in members:
                    dist.add_peer(m, *procs.routes[(CLIENT, m)])
                self.on_event("starting the group")
                for name in [*members, *workers]:
                    procs.spawn(name)
                try:
                    async with anyio.create_task_group() as tg:
                        for name in [*members, *workers]:
                            tg.start_soon(procs.wait_ready, name)
                except* (RuntimeError, TimeoutError) as eg:
                    result.error = f"the group did not start: {eg.exceptions[0]}"
                if result.error is not None:
                    return
                self.client = client = GroupClient(
                    node, members, timeout=10.0, call_timeout=2.0, rng=random.Random(cfg.seed)
                )
                async with anyio.create_task_group() as obs:
                    for m in members:
                        obs.start_soon(self.observe, m)
                    await self._main(client, node, fetch_audit)
                    obs.cancel_scope.cancel()
        finally:
            with anyio.CancelScope(shield=True):
                with contextlib.suppress(Exception):
                    await procs.stop_all()
                procs.close()
                result.executions = procs.executions()
                result.elected = procs.elections()

    async def _main(self, client: GroupClient, node: Node, fetch_audit: Any) -> None:
        cfg, result = self.cfg, self.result
        with anyio.move_on_after(30.0):
            while self.current_leader() is None:  # noqa: ASYNC110 - polls land as they come
                await anyio.sleep(0.05)
        if self.current_leader() is None:
            result.error = "no leader was elected within 30 s of the start"
            return
        self.t0 = time.monotonic()  # the run's clock starts with the first leader
        result.observations.clear()
        self.latest.clear()
        self.on_event("leader elected; workload and faults start")
        schedule = result.schedule
        unanswered: set[str] = set()
        async with anyio.create_task_group() as tg:
            tg.start_soon(self.workload, unanswered)
            async with anyio.create_task_group() as lanes:
                for lane in ("group", "worker"):
                    lanes.start_soon(self.lane, [f for f in schedule if f.lane == lane])
                await anyio.sleep(max(0.0, cfg.duration - self.now()))
            self.submitting = False
        await self.heal_everything()
        result.heal_at = self.now()
        self.on_event(f"{result.heal_at:6.1f}s  healed everything; waiting for a leader")
        healed = result.heal_at
        with anyio.move_on_after(cfg.heal_bound + 5.0):
            while not any(  # noqa: ASYNC110 - polls land as they come
                o.ok and o.is_leader and o.t >= healed for o in self.latest.values()
            ):
                await anyio.sleep(0.05)
            result.leader_after_heal = min(
                o.t - healed for o in result.observations if o.ok and o.is_leader and o.t >= healed
            )
        deadline = time.monotonic() + cfg.quiesce
        for job in sorted(unanswered):
            if not await self.submit(job, timeout=max(1.0, deadline - time.monotonic())):
                result.unanswered.append(job)
        self.on_event(f"{self.now():6.1f}s  waiting for {len(result.accepted)} tasks to finish")
        await self.quiesce(client, deadline)
        result.quiesced_after = self.now() - result.heal_at
        for m in cfg.member_names:
            try:
                result.audits[m] = await fetch_audit(node, m, timeout=10.0)
            except TimeoutError:
                result.violations.append(f"no audit from {m} within 10 s after the heal")

    async def quiesce(self, client: GroupClient, deadline: float) -> None:
        from supervisors.client import GroupUnavailable

        todo = set(self.result.accepted)
        while todo and time.monotonic() < deadline:
            for tid in sorted(todo):
                try:
                    task = await client.task(tid, timeout=5.0)
                except GroupUnavailable:
                    break
                if task is None:
                    self.result.finals[tid] = None
                    continue
                self.result.finals[tid] = {
                    "state": task.state.value,
                    "result": task.result,
                    "completed_by": task.completed_by,
                    "attempts": task.attempts,
                    "error": task.error,
                }
                if task.state.value in _FINAL_STATES:
                    todo.discard(tid)
            if todo:
                await anyio.sleep(0.3)


async def run_real(cfg: RealConfig, on_event: Any = None) -> RealResult:
    """Run one real chaos run (see the module docstring) and check it.

    ``on_event(text)`` is called with a line for each phase and fault. Never raises for
    a fault of the group: problems are in ``result.violations`` or ``result.error``.
    Every child process is gone when it returns.
    """
    from supervisors.member_app import expected_answer

    work = cfg.work_dir or Path(tempfile.mkdtemp(prefix=f"chaos_real_{cfg.seed}_"))
    work.mkdir(parents=True, exist_ok=True)
    result = RealResult(cfg, make_schedule(cfg), work)
    started = time.perf_counter()
    run = _Run(cfg, result, on_event)
    try:
        await run.run()
    finally:
        result.wall = time.perf_counter() - started
    if result.error is None:
        result.violations += check_run(
            result.accepted,
            result.finals,
            result.audits,
            result.observations,
            elected=result.elected,
            leader_after_heal=result.leader_after_heal,
            heal_bound=cfg.heal_bound,
            expected=expected_answer,
        )
    return result


# --------------------------------------------------------------------------- plot


_KIND_COLORS: Final = {
    "kill": "#d62728",
    "stop": "#ff7f0e",
    "partition": "#9467bd",
    "oneway": "#8c564b",
    "delay": "#17becf",
    "reset": "#7f7f7f",
}


def write_plot(result: RealResult, path: Path) -> None:
    """Draw the run as a PNG: leader and term over time, cumulative completions, faults.

    Imports matplotlib (the ``chaos`` extra) with the Agg backend.

    Raises:
        ImportError: matplotlib is not installed.
    """
    import matplotlib as mpl

    mpl.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch
    from matplotlib.ticker import MaxNLocator

    members = result.config.member_names
    fig, (ax_lead, ax_term, ax_done) = plt.subplots(
        3, 1, figsize=(11, 7.5), sharex=True, gridspec_kw={"height_ratios": [2, 1.3, 2]}
    )
    end = max([o.t for o in result.observations] + [result.config.duration])
    band = 0.7 / (len(members) + 1)  # the leader panel's bottom row: the worker lane
    for rec in result.injected:
        color = _KIND_COLORS.get(rec.kind, "#cccccc")
        stop = rec.end if rec.end is not None else end
        for ax in (ax_lead, ax_term, ax_done):
            if rec.lane == "worker" and ax is ax_term:
                continue  # worker faults do not touch terms
            hi = band if (rec.lane == "worker" and ax is ax_lead) else 1.0
            ax.axvspan(rec.start, stop, ymin=0.0, ymax=hi, color=color, alpha=0.15, lw=0)
        ax_lead.text(
            (rec.start + stop) / 2,
            len(members) - 0.35 if rec.lane == "group" else -0.65,
            f"{rec.kind}\n{','.join(rec.targets)}" if rec.targets else rec.kind,
            ha="center",
            va="center",
            fontsize=7,
            color=color,
        )
    # who leads: one row per member, a mark at every poll where it led
    for i, m in enumerate(members):
        pts = [o for o in result.observations if o.member == m]
        up = [o.t for o in pts if o.ok]
        down = [o.t for o in pts if not o.ok]
        lead = [o.t for o in pts if o.ok and o.is_leader]
        ax_lead.scatter(up, [i] * len(up), s=3, color="#bbbbbb", marker="|")
        ax_lead.scatter(down, [i] * len(down), s=12, color="#d62728", marker="x", lw=0.7)
        ax_lead.scatter(lead, [i] * len(lead), s=22, color="#1f77b4", marker="s")
    ax_lead.set_yticks(range(len(members)), members)
    ax_lead.set_ylim(-1, len(members))
    ax_lead.set_ylabel("leader (blue)\nno answer (x)")
    ax_lead.set_title(
        f"regency chaos --real  seed {result.config.seed}  "
        f"({result.config.members} members, {result.config.workers} workers)  "
        + ("OK" if result.ok else f"{len(result.violations)} VIOLATIONS")
    )
    # the term each member reports
    for m in members:
        polls = sorted((o for o in result.observations if o.member == m), key=lambda o: o.t)
        if any(o.ok for o in polls):  # a gap where the member did not answer
            ys = [float(o.term) if o.ok else math.nan for o in polls]
            ax_term.step([o.t for o in polls], ys, where="post", label=m, lw=1)
    ax_term.set_ylabel("term")
    ax_term.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax_term.legend(loc="upper left", fontsize=7, ncol=len(members))
    # completions
    done = result.completions()
    accepted = sorted(result.accepted.values())
    if accepted:
        ax_done.step(
            accepted, range(1, len(accepted) + 1), where="post", label="accepted", color="#2ca02c"
        )
    if done:
        ax_done.step(
            [d[0] for d in done],
            [d[1] for d in done],
            where="post",
            label="completed",
            color="#1f77b4",
        )
    if result.heal_at is not None:
        for ax in (ax_lead, ax_term, ax_done):
            ax.axvline(result.heal_at, color="black", ls="--", lw=0.8)
        ax_done.text(
            result.heal_at,
            1.0,
            " heal",
            fontsize=8,
            va="top",
            transform=ax_done.get_xaxis_transform(),
        )
    ax_done.set_ylabel("tasks (cumulative)")
    ax_done.set_xlabel("seconds since the first leader")
    kinds = [k for k in ALL_KINDS if any(r.kind == k for r in result.injected)]
    handles = [Patch(color=_KIND_COLORS[k], alpha=0.3, label=k) for k in kinds]
    ax_done.legend(loc="upper left", fontsize=8)
    ax_done.set_xlim(0, end + 0.5)
    if handles:
        fig.legend(
            handles=handles,
            loc="lower center",
            ncol=len(handles),
            fontsize=8,
            frameon=False,
            title="faults (shaded; worker faults in the bottom band of the top panel)",
            title_fontsize=8,
        )
    fig.tight_layout(rect=(0, 0.06 if handles else 0, 1, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)


# --------------------------------------------------------------------------- command


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="regency chaos --real",
        description="Chaos run of an orchestrator group and workers as real processes.",
    )
    p.add_argument("--real", action="store_true", help="real processes (this mode)")
    p.add_argument("--seed", type=int, default=0, help="seeds the fault schedule")
    p.add_argument("--duration", type=float, default=30.0, help="seconds of workload and faults")
    p.add_argument("--members", type=int, choices=(3, 5), default=3)
    p.add_argument("--workers", type=int, default=3, help="worker nodes (0-16)")
    p.add_argument("--faults", default="all", help="kinds or a mix: " + ",".join(ALL_KINDS))
    p.add_argument("--rate", type=float, default=4.0, help="tasks submitted per second")
    p.add_argument("--heal-bound", type=float, default=15.0, help="seconds to a leader after heal")
    p.add_argument("--quiesce", type=float, default=60.0, help="seconds for every task to finish")
    p.add_argument(
        "--work-dir", type=Path, default=None, help="logs and data (default: a temp dir)"
    )
    p.add_argument("--json", type=Path, default=None, help="write the JSON report here")
    p.add_argument("--plot", type=Path, default=None, help="write a PNG plot here")
    return p


def _print_report(result: RealResult, console: Console) -> None:
    from rich.table import Table

    s = result.summary()
    cfg = result.config
    faults = Table(title=f"faults injected (seed {cfg.seed})", title_justify="left")
    for col in ("kind", "count", "seconds", "targets"):
        faults.add_column(col, justify="left" if col in ("kind", "targets") else "right")
    for kind in ALL_KINDS:
        recs = [r for r in result.injected if r.kind == kind]
        if recs:
            secs = sum((r.end if r.end is not None else r.start) - r.start for r in recs)
            targets = Counter(t for r in recs for t in r.targets or ["all links"])
            faults.add_row(
                kind,
                str(len(recs)),
                f"{secs:.1f}",
                ", ".join(f"{t} x{n}" if n > 1 else t for t, n in sorted(targets.items())),
            )
    if not result.injected:
        faults.add_row("none", "0", "0", "")
    console.print(faults)
    table = Table(
        title=f"regency chaos --real  seed {cfg.seed}  {cfg.members} members, "
        f"{cfg.workers} workers, {cfg.duration:g} s of faults"
    )
    columns = (
        "elections",
        "leader changes",
        "max no-leader",
        "leader after heal",
        "accepted",
        "completed",
        "failed",
        "executions",
        "violations",
    )
    for col in columns:
        table.add_column(col, justify="right")
    tasks = s["tasks"]
    lah = s["leader_after_heal"]
    table.add_row(
        str(s["elections"]),
        str(s["leader_changes"]),
        f"{s['max_unavailability']:.2f} s",
        "-" if lah is None else f"{lah:.2f} s",
        str(tasks["accepted"]),
        str(tasks["completed"]),
        str(tasks["failed"]),
        str(tasks["executions"]),
        f"[red]{s['violations']}[/red]" if s["violations"] else "[green]0[/green]",
    )
    console.print(table)
    console.print(
        f"{tasks['unanswered']} submissions never answered (never accepted, so no promise); "
        f"slowest accepted submission {s['max_submit_latency']:.2f} s; every task final "
        f"{s['quiesced_after'] or 0:.1f} s after the heal; {len(result.skipped)} planned faults "
        f"skipped (a lane ran late); {result.wall:.1f} s wall; logs in {result.work_dir}",
        markup=False,
    )


def main(argv: list[str]) -> int:
    """Run ``regency chaos --real`` with ``argv`` (without the command name); the status."""
    from rich.console import Console

    parser = _parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        return 0 if exc.code in (0, None) else 2
    console = Console()
    if console.width < 110:
        console = Console(width=110)
    try:
        kinds = parse_kinds(args.faults)
    except ValueError as exc:
        console.print(f"regency chaos: {exc}", markup=False)
        return 2
    if args.duration <= 0 or args.rate <= 0 or not 0 <= args.workers <= 16:
        console.print("regency chaos: --duration and --rate must be > 0, --workers 0-16")
        return 2
    cfg = RealConfig(
        seed=args.seed,
        duration=args.duration,
        members=args.members,
        workers=args.workers,
        faults=kinds,
        rate=args.rate,
        heal_bound=args.heal_bound,
        quiesce=args.quiesce,
        work_dir=args.work_dir,
    )
    if args.plot is not None:
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            console.print("regency chaos: --plot needs matplotlib: pip install 'regency[chaos]'")
            return 2
    old_logging = structlog.get_config()
    if cfg.work_dir is None:
        cfg = attrs.evolve(cfg, work_dir=Path(tempfile.mkdtemp(prefix=f"chaos_real_{cfg.seed}_")))
    assert cfg.work_dir is not None
    cfg.work_dir.mkdir(parents=True, exist_ok=True)
    # this process's own log events (the client's connection losses...) go to a file
    with (cfg.work_dir / "runner.log").open("a") as log_file:
        structlog.configure(
            processors=[
                structlog.processors.add_log_level,
                structlog.processors.TimeStamper(fmt="iso"),
                structlog.processors.JSONRenderer(),
            ],
            wrapper_class=structlog.make_filtering_bound_logger(logging.INFO),
            logger_factory=structlog.PrintLoggerFactory(log_file),
            cache_logger_on_first_use=False,
        )
        try:
            console.print(f"chaos --real seed {cfg.seed}: {len(make_schedule(cfg))} faults planned")
            result = anyio.run(
                run_real, cfg, lambda text: console.print(text, markup=False), backend="trio"
            )
        finally:
            structlog.configure(**old_logging)
    _print_report(result, console)
    if result.error is not None:
        console.print(f"[red]error:[/red] {result.error}")
    for v in result.violations:
        console.print(f"[red]violation:[/red] {v}")
    if not result.ok:
        console.print(
            f"seed {cfg.seed}; rerun the same fault schedule with: {repro_command(cfg)}\n"
            "(real processes are not deterministic: the schedule repeats, the history may not)",
            markup=False,
        )
    if args.json is not None:
        args.json.write_text(json.dumps(result.to_json(), indent=1, default=str))
        console.print(f"JSON report: {args.json}", markup=False)
    if args.plot is not None:
        write_plot(result, args.plot)
        console.print(f"plot: {args.plot}", markup=False)
    if result.error is not None:
        return 3
    return 0 if result.ok else 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main(sys.argv[1:]))
