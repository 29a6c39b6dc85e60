"""``regency demo``: a 3-node orchestrator group as real OS processes, its leader killed mid-run.

What it does, on loopback, with no API key:

1. starts three orchestrator-group members (``o1``..``o3``) and ``--workers`` worker
   nodes as OS processes (``python -m supervisors.member_app``, see
   :mod:`supervisors.member_app`), each member with a durable Raft log in a temporary
   directory;
2. submits ``--tasks`` jobs through a :class:`~supervisors.client.GroupClient` on the
   demo's own node, each with an idempotency key (``job-SEED-I``); the workers "think"
   for a seeded 400-1000 ms per job and answer deterministically;
3. SIGKILLs the leader once 30 % of the jobs are done and, after the killed member was
   restarted from its data directory and caught up, the new leader once 65 % are done
   (``--kills``); after the first failover, once the first five jobs are done, it
   submits them again with their keys, as a client that lost its answers would;
4. prints the timeline as it happens, from the processes' own JSON logs: who leads in
   which term (``orchestrator_started``), the kills, the failover time (the SIGKILL to
   the first ``Assign`` the successor's orchestrator commits, which it dispatches at
   once), the restarts and catch-ups, and tasks done;
5. verifies, and exits 0 only if all of it holds:

   * **none lost** -- a linearizable read of every task through the client: each is
     ``completed`` with its job's expected answer;
   * **completed exactly once** -- from the replicated log itself (every command the
     leader applied, through the members' audit service, after a linearizable read):
     exactly one accepted ``Complete`` per task, and exactly one task per job (no
     resubmission created a second); a repeated ``Complete`` is a *rejected duplicate*,
     harmless and counted;
   * **no stale-term command applied** -- walking the log in order, no fenced command
     (``Assign``, ``Progress``, ``Expire``, ``WorkerDown``, ``NewTerm``...) was accepted
     with a term below the highest term already accepted, and each term had one leader;
     the commands refused as stale are counted;
   * **finished work never redone** -- from the workers' own logs: no job started after
     its completion was committed. *Re-executions* (a job run twice because its lease
     expired or its worker died before reporting) are reported separately: they cost
     work, but only a *duplicated completion* -- a second result recorded -- would break
     exactly-once, and the ledger cannot record one.

Every child process is killed (SIGKILL) when the run ends, also on Ctrl-C and on
errors; children also die with the demo (``PR_SET_PDEATHSIG``).

Entry points: :func:`main` (``regency demo``; the one-process supervision demo is
``regency demo supervision``, see :mod:`agents.demo`) and :func:`run_failover_demo`.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import logging
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Protocol, TextIO, final

import anyio
import attrs
import structlog

from runtime import Distribution, Node
from runtime.errors import CallTimeout, MailboxFull, NoProcError, ServerExited
from runtime.pid import Name
from supervisors.client import GroupClient, GroupUnavailable
from supervisors.ledger import TaskState
from supervisors.member_app import (
    AUDIT_SERVICE,
    AuditRecord,
    GroupProcesses,
    expected_answer,
    fetch_audit,
)

from .console import (
    LiveBar,
    choose_printer,
    plain_rows,
    rich_console,
    rich_header,
    rich_table,
    write_json,
    write_line,
)

if TYPE_CHECKING:
    from rich.console import Console

__all__ = [
    "FailoverDemoConfig",
    "FailoverDemoResult",
    "FailoverPrinter",
    "KillRecord",
    "PlainFailoverPrinter",
    "RichFailoverPrinter",
    "Verification",
    "main",
    "run_failover_demo",
    "verify",
]

MEMBERS: Final = ("o1", "o2", "o3")
SECRET: Final = "regency-demo-secret-loopback-only"
#: The share of jobs done at which each kill happens.
KILL_AT: Final = (0.30, 0.65, 0.85)
#: How many jobs are submitted again (same keys) after the first failover.
RESUBMITTED: Final = 5
#: Fenced ops: their term must never be below the highest term already accepted.
_FENCED_OPS: Final = frozenset(
    {"assign", "progress", "fail", "cancel", "expire", "worker_down", "set_facts", "set_plan",
     "new_term"}
)  # fmt: skip


@final
@attrs.frozen
class FailoverDemoConfig:
    """One run's settings.

    Attributes:
        seed: names the jobs and seeds the workers' thinking times. Default 1.
        tasks: jobs to submit (>= 1). Default 60.
        workers: worker nodes (>= 1), each running 2 tasks at once. Default 3.
        kills: leader SIGKILLs (0..3), at 30 %, 65 % and 85 % of the jobs. Default 2.
        think_ms: (lowest, highest) thinking time per job, in ms. Default 400-1000.
        idempotent: submit with idempotency keys (the default). False is the broken
            variant tests use: no keys, so the resubmissions create second tasks.
        deadline: the longest the work may take, in seconds. Default 90.
        keep: keep the temporary directory (logs, data) instead of removing it.
    """

    seed: int = 1
    tasks: int = 60
    workers: int = 3
    kills: int = 2
    think_ms: tuple[float, float] = (400.0, 1000.0)
    idempotent: bool = True
    deadline: float = 90.0
    keep: bool = False

    def __attrs_post_init__(self) -> None:
        if self.tasks < 1 or self.workers < 1:
            raise ValueError("tasks and workers must be >= 1")
        if not 0 <= self.kills <= len(KILL_AT):
            raise ValueError(f"kills must be 0..{len(KILL_AT)}, got {self.kills}")


@final
@attrs.frozen
class KillRecord:
    """One leader SIGKILL: who, in which term, and how long until work moved again."""

    member: str
    term: int
    at: float  #: seconds since the start
    done_before: int  #: jobs completed when it happened
    new_leader: str | None
    new_term: int | None
    elected_ms: float | None  #: kill -> the successor's orchestrator started
    failover_ms: float | None  #: kill -> the successor's first committed Assign
    caught_up_s: float | None  #: kill -> the restarted member applied the leader's log


@final
@attrs.frozen
class Verification:
    """What the checks found (see the module docstring)."""

    jobs: int
    tasks_in_ledger: int
    completed_ok: int
    lost: tuple[str, ...]
    wrong_results: tuple[str, ...]
    duplicated_completions: tuple[str, ...]  #: tasks with more than one accepted Complete
    duplicated_jobs: tuple[str, ...]  #: jobs that became more than one task
    rejected_duplicates: int  #: repeated Completes the ledger answered Duplicate
    stale_accepted: int
    stale_refused: int
    terms: dict[int, str]  #: term -> the leader its NewTerm named
    leader_conflicts: int  #: terms whose NewTerm named two leaders
    executions: int
    re_executions: int
    redone_after_finish: tuple[str, ...]
    log_entries: int
    problems: tuple[str, ...]


@final
@attrs.frozen
class FailoverDemoResult:
    """A run: its settings, the kills, the verification and the timeline."""

    seed: int
    tasks: int
    workers: int
    kills_requested: int
    kills: tuple[KillRecord, ...]
    resubmitted_same_ids: int | None
    verification: Verification
    elapsed: float
    problems: tuple[str, ...]
    timeline: tuple[tuple[float, str, str], ...]

    @property
    def ok(self) -> bool:
        """True if every check held and every kill happened."""
        return not self.problems

    @property
    def exit_code(self) -> int:
        """0 if everything held, 1 otherwise."""
        return 0 if self.ok else 1

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready summary (what ``--json PATH`` writes)."""
        data = attrs.asdict(self, recurse=True)
        data["ok"] = self.ok
        data["exit_code"] = self.exit_code
        data["verification"]["terms"] = {str(k): v for k, v in self.verification.terms.items()}
        return data


# --------------------------------------------------------------------------- printing


class FailoverPrinter(Protocol):
    """Where a run's output goes."""

    def header(self, lines: Sequence[str]) -> None:
        """Print the introduction."""

    def event(self, t: float, kind: str, text: str) -> None:
        """Print one timeline line, ``t`` seconds since the start."""

    def progress(self, done: int, total: int) -> None:
        """Report ``done`` of ``total`` jobs completed."""

    def summary(self, result: FailoverDemoResult) -> None:
        """Print the verification."""

    def close(self) -> None:
        """Finish any live display."""


STYLES: Final = {
    "start": "bold",
    "leader": "bold green",
    "kill": "bold red",
    "failover": "bold yellow",
    "restart": "cyan",
    "client": "blue",
    "fence": "magenta",
    "progress": "blue",
    "note": "dim",
}


def summary_rows(r: FailoverDemoResult) -> list[tuple[str, str, str]]:
    """(label, value, note) rows of the verification."""
    v = r.verification
    rows = [
        ("jobs submitted", str(v.jobs), f"{v.tasks_in_ledger} tasks in the ledger"),
        (
            "completed, right answer",
            str(v.completed_ok),
            "linearizable read of every task through the client",
        ),
        ("lost", str(len(v.lost)), ", ".join(v.lost[:5])),
        (
            "duplicated completions",
            str(len(v.duplicated_completions)),
            f"accepted Complete per task from the log ({v.log_entries} entries);"
            f" {v.rejected_duplicates} repeated Complete(s) rejected as duplicates",
        ),
        (
            "jobs that became 2+ tasks",
            str(len(v.duplicated_jobs)),
            "idempotency keys" if not v.duplicated_jobs else ", ".join(v.duplicated_jobs[:5]),
        ),
        (
            "stale-term commands applied",
            str(v.stale_accepted),
            f"{v.stale_refused} refused as stale; terms "
            + ", ".join(f"{t}:{n}" for t, n in sorted(v.terms.items())),
        ),
        (
            "finished work redone",
            str(len(v.redone_after_finish)),
            f"{v.executions} executions, {v.re_executions} re-execution(s) of unfinished work",
        ),
    ]
    for i, k in enumerate(r.kills, 1):
        fo = f"{k.failover_ms:.0f} ms" if k.failover_ms is not None else "n/a"
        el = f"{k.elected_ms:.0f} ms" if k.elected_ms is not None else "n/a"
        rows.append(
            (
                f"failover {i}",
                fo,
                f"SIGKILL {k.member} (term {k.term}) -> {k.new_leader} term {k.new_term}"
                f" dispatching; orchestrator up after {el}",
            )
        )
    if r.resubmitted_same_ids is not None:
        rows.append(
            (
                "resubmitted after failover",
                str(RESUBMITTED),
                f"{r.resubmitted_same_ids} got their original task id back",
            )
        )
    rows.append(("run time", f"{r.elapsed:.1f} s", ""))
    return rows


def verdict(r: FailoverDemoResult) -> str:
    """The last line: OK or FAILED with the problems."""
    v = r.verification
    if r.ok:
        return (
            f"OK: {v.completed_ok}/{v.jobs} jobs completed exactly once across"
            f" {len(r.kills)} leader kill(s); none lost, no stale-term command applied."
        )
    return "FAILED: " + "; ".join(r.problems)


@final
class PlainFailoverPrinter:
    """Plain lines, for pipes, logs and ``--plain``."""

    def __init__(self, out: TextIO | None = None) -> None:
        self.out = out if out is not None else sys.stdout
        self._tenth = 0

    def _write(self, text: str) -> None:
        write_line(self.out, text)

    def header(self, lines: Sequence[str]) -> None:
        """Print the introduction."""
        for line in lines:
            self._write(line)

    def event(self, t: float, kind: str, text: str) -> None:
        """Print ``  t.ttts  kind      text``."""
        self._write(f"{t:7.2f}s  {kind:<9} {text}")

    def progress(self, done: int, total: int) -> None:
        """Print nothing: the timeline carries ``tasks done`` lines."""

    def summary(self, result: FailoverDemoResult) -> None:
        """Print the verification and the verdict."""
        self._write("")
        self._write("verification (from the replicated ledger and the workers' logs)")
        plain_rows(self.out, summary_rows(result), label_width=28, value_width=9)
        self._write("")
        self._write(verdict(result))

    def close(self) -> None:
        """Nothing to finish."""


@final
class RichFailoverPrinter:
    """Colored timeline lines with a live progress bar, for a terminal."""

    def __init__(self, console: Console | None = None) -> None:
        self.console: Console = rich_console(console)
        self._bar = LiveBar(self.console, "jobs done", "jobs")

    def header(self, lines: Sequence[str]) -> None:
        """Print the introduction."""
        rich_header(self.console, lines)

    def event(self, t: float, kind: str, text: str) -> None:
        """Print one colored timeline line."""
        from rich.text import Text

        self.console.print(
            Text.assemble((f"{t:7.2f}s  ", "dim"), (f"{kind:<9}", STYLES.get(kind, "")), " ", text)
        )

    def progress(self, done: int, total: int) -> None:
        """Update the live bar."""
        self._bar.update(done, total)

    def summary(self, result: FailoverDemoResult) -> None:
        """Print the verification table and the verdict."""
        from rich.text import Text

        self.close()
        rich_table(
            self.console,
            "verification (from the replicated ledger and the workers' logs)",
            summary_rows(result),
        )
        self.console.print(Text(verdict(result), style="bold green" if result.ok else "bold red"))

    def close(self) -> None:
        """Stop the live bar."""
        self._bar.stop()


# --------------------------------------------------------------------------- the run


@final
class _Watch:
    """The timeline, read from the children's JSON logs."""

    def __init__(self, group: GroupProcesses, out: FailoverPrinter, total: int) -> None:
        self.group = group
        self.out = out
        self.total = total
        self.t0 = time.time()
        self.entries: list[tuple[float, str, str]] = []
        self.seen_index: set[int] = set()
        self.done: set[str] = set()  # task ids with an accepted Complete
        self.completed_at: dict[str, float] = {}
        self.orchestrators: dict[int, tuple[str, float]] = {}  # term -> (member, ts)
        self.first_assign: dict[int, float] = {}  # entry term -> ts
        self.started: list[tuple[str, float, str]] = []  # (job, ts, worker)
        self.stale_refused = 0
        self._last_tick = -1
        self.changed = anyio.Event()

    def now(self) -> float:
        return time.time() - self.t0

    def emit(self, kind: str, text: str, ts: float | None = None) -> None:
        t = (ts if ts is not None else time.time()) - self.t0
        self.entries.append((round(t, 3), kind, text))
        self.out.event(t, kind, text)

    def leader(self) -> tuple[str, int] | None:
        if not self.orchestrators:
            return None
        term = max(self.orchestrators)
        return self.orchestrators[term][0], term

    def poll(self) -> None:
        for ev in self.group.events():
            name = ev.get("event")
            ts = ev.get("ts") or time.time()
            if name == "orchestrator_started":
                term = int(ev.get("term", 0))
                if term not in self.orchestrators:
                    self.orchestrators[term] = (ev["src"], ts)
                    self.emit("leader", f"{ev['src']} leads term {term}: orchestrator started", ts)
            elif name == "ledger_committed":
                index = int(ev.get("index", 0))
                if index in self.seen_index:
                    continue
                self.seen_index.add(index)
                result = str(ev.get("result", ""))
                term = int(ev.get("term", 0))
                if result.startswith("accepted assign") and term not in self.first_assign:
                    self.first_assign[term] = ts
                elif result.startswith("accepted complete"):
                    tid = result.split()[2]
                    self.done.add(tid)
                    self.completed_at.setdefault(tid, ts)
                elif "stale_term" in result:
                    self.stale_refused += 1
                    if self.stale_refused <= 3:
                        self.emit("fence", f"ledger refused a stale command: {result}", ts)
            elif name == "task_started":
                self.started.append((str(ev.get("job")), ts, ev["src"]))
        self.out.progress(len(self.done), self.total)
        tick = len(self.done) * 10 // max(self.total, 1)
        if tick > self._last_tick:
            self._last_tick = tick
            if self.done:
                self.emit("progress", f"tasks done {len(self.done)}/{self.total}")
        self.changed.set()
        self.changed = anyio.Event()

    async def run(self) -> None:
        while True:
            self.poll()
            await anyio.sleep(0.05)


async def _view(node: Node, member: str) -> dict[str, Any] | None:
    try:
        answer = await node.call(Name(AUDIT_SERVICE, member), "view", timeout=1.0)
    except (ServerExited, CallTimeout, MailboxFull, NoProcError):
        return None
    return answer if isinstance(answer, dict) else None


async def current_leader(node: Node, group: GroupProcesses) -> dict[str, Any] | None:
    """The view of the live member that leads (and is ready) in the highest term."""
    best: dict[str, Any] | None = None
    for m in group.members:
        if not group.alive(m):
            continue
        v = await _view(node, m)
        if v and v["is_leader"] and v["ready"] and (best is None or v["term"] > best["term"]):
            best = v
    return best


async def wait_caught_up(node: Node, group: GroupProcesses, member: str, timeout: float) -> None:
    """Wait until ``member`` follows the leader and applied what the leader had applied."""
    with anyio.fail_after(timeout):
        while True:
            lead = await current_leader(node, group)
            mine = await _view(node, member)
            if (
                lead is not None
                and mine is not None
                and lead["node"] != member
                and mine["leader"] == lead["node"]
                and mine["applied"] >= lead["applied"]
            ):
                return
            await anyio.sleep(0.05)


def verify(
    jobs: dict[str, list[str]],
    tasks: dict[str, Any],
    records: Sequence[AuditRecord],
    started: Sequence[tuple[str, float, str]],
    completed_at: dict[str, float],
) -> Verification:
    """Check a run (see the module docstring).

    Args:
        jobs: job -> the task ids its submissions returned.
        tasks: task id -> the ledger's task (a linearizable read), or None.
        records: the leader's applied commands (:data:`AuditRecord`), in log order.
        started: (job, ts, worker) per execution, from the workers' logs.
        completed_at: task id -> when its Complete was committed (log timestamp).
    """
    problems: list[str] = []
    task_job = {tid: job for job, tids in jobs.items() for tid in tids}
    lost: list[str] = []
    wrong: list[str] = []
    ok = 0
    for tid, job in task_job.items():
        t = tasks.get(tid)
        if t is None or t.state is not TaskState.COMPLETED:
            lost.append(job)
        elif not isinstance(t.result, dict) or t.result.get("answer") != expected_answer(job):
            wrong.append(job)
        else:
            ok += 1
    accepted_complete: collections.Counter[str] = collections.Counter()
    rejected = 0
    fencing = 0
    stale_accepted = 0
    stale_refused = 0
    terms: dict[int, str] = {}
    conflicts = 0
    submits_by_key: dict[str, set[str]] = collections.defaultdict(set)
    for index, op, task_id, _worker, term, key, kind, detail in records:
        if op == "complete":
            if kind == "accepted":
                accepted_complete[task_id] += 1
            elif kind == "duplicate":
                rejected += 1
        if op == "submit" and kind == "accepted":
            submits_by_key[key or task_id].add(task_id)
        if kind == "refused" and "stale_term" in str(detail):
            stale_refused += 1
        if op in _FENCED_OPS and kind == "accepted" and term is not None:
            if term < fencing:
                stale_accepted += 1
                problems.append(f"log index {index}: {op} of term {term} accepted after {fencing}")
            fencing = max(fencing, term)
        new_term = op == "new_term" and kind in ("accepted", "duplicate") and term is not None
        if new_term and terms.setdefault(term, key) != key:
            conflicts += 1
    duplicated = sorted(t for t, n in accepted_complete.items() if n > 1)
    in_ledger = sum(len(s) for s in submits_by_key.values())
    doubled_jobs = sorted(j for j, tids in jobs.items() if len(set(tids)) > 1)
    per_job = collections.Counter(job for job, _, _ in started)
    re_exec = sum(n - 1 for n in per_job.values() if n > 1)
    finish_by_job: dict[str, float] = {}
    for t, ts in completed_at.items():
        if t in task_job:
            job = task_job[t]
            finish_by_job[job] = min(ts, finish_by_job.get(job, ts))
    redone = sorted(
        {job for job, ts, _ in started if job in finish_by_job and ts > finish_by_job[job]}
    )
    if lost:
        problems.append(f"{len(lost)} job(s) lost: {', '.join(lost[:5])}")
    if wrong:
        problems.append(f"{len(wrong)} wrong result(s): {', '.join(wrong[:5])}")
    if duplicated:
        problems.append(f"{len(duplicated)} task(s) completed more than once")
    if doubled_jobs:
        problems.append(
            f"{len(doubled_jobs)} job(s) became two tasks and ran twice:"
            f" {', '.join(doubled_jobs[:5])}"
        )
    if conflicts:
        problems.append(f"{conflicts} term(s) had two leaders")
    if redone:
        problems.append(f"finished work redone for {', '.join(redone[:5])}")
    if in_ledger != len(task_job):
        problems.append(f"the ledger holds {in_ledger} tasks for {len(task_job)} submitted")
    return Verification(
        jobs=len(jobs),
        tasks_in_ledger=in_ledger,
        completed_ok=ok,
        lost=tuple(lost),
        wrong_results=tuple(wrong),
        duplicated_completions=tuple(duplicated),
        duplicated_jobs=tuple(doubled_jobs),
        rejected_duplicates=rejected,
        stale_accepted=stale_accepted,
        stale_refused=stale_refused,
        terms=terms,
        leader_conflicts=conflicts,
        executions=len(started),
        re_executions=re_exec,
        redone_after_finish=tuple(redone),
        log_entries=len(records),
        problems=tuple(problems),
    )


def header_lines(config: FailoverDemoConfig) -> list[str]:
    """The introduction."""
    lo, hi = config.think_ms
    kills = " and ".join(f"{int(KILL_AT[i] * 100)} %" for i in range(config.kills)) or "never"
    return [
        f"regency demo: a 3-node orchestrator group and {config.workers} workers as OS"
        f" processes on loopback (seed {config.seed})",
        "  members o1 o2 o3: Raft (10 ms ticks, 50 ms heartbeats, elections a few ticks"
        " after the leader's connections close, else after 150-300 ms), durable logs,"
        " the orchestrator only on the leader",
        f"  workers w1..w{config.workers}: 2 tasks at a time, {lo:.0f}-{hi:.0f} ms of"
        " seeded 'thinking' per job (no model, no API key)",
        f"  {config.tasks} jobs, each with an idempotency key; the leader is SIGKILLed at"
        f" {kills} of the jobs done",
        *([] if config.idempotent else ["  BROKEN VARIANT: submissions without idempotency keys"]),
        "",
        "timeline (seconds since start)",
    ]


def _configure_client_logs(path: Path) -> dict[str, Any]:
    """Send this process's own log events to ``path`` (JSON); return the old config."""
    old = structlog.get_config()
    structlog.configure(
        processors=[
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso"),
            structlog.processors.JSONRenderer(),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.INFO),
        logger_factory=structlog.WriteLoggerFactory(path.open("a")),
        cache_logger_on_first_use=False,
    )
    return old


async def run_failover_demo(
    config: FailoverDemoConfig, printer: FailoverPrinter
) -> FailoverDemoResult:
    """Run one demo (see the module docstring) and return what it found.

    Every child process is killed before this returns or raises.
    """
    root = Path(tempfile.mkdtemp(prefix="regency_demo_"))
    old_logs = _configure_client_logs(root / "demo.log")
    worker_names = [f"w{i}" for i in range(1, config.workers + 1)]
    lo, hi = config.think_ms
    group = GroupProcesses(
        root,
        MEMBERS,
        worker_names,
        secret=SECRET,
        worker_args=["--think-ms", f"{lo}:{hi}", "--seed", str(config.seed), "--capacity", "2"],
    )
    printer.header(header_lines(config))
    watch = _Watch(group, printer, config.tasks)
    problems: list[str] = []
    kills: list[KillRecord] = []
    resubmitted_same: int | None = None
    verification: Verification | None = None
    try:
        verification, kills, resubmitted_same = await _run(config, group, watch, problems)
    except (GroupUnavailable, TimeoutError, RuntimeError) as exc:
        problems.append(f"the run broke off: {type(exc).__name__}: {exc}")
        watch.emit("note", f"the run broke off: {exc}")
    except BaseException:  # Ctrl-C, cancellation: nothing to keep
        if not config.keep:
            shutil.rmtree(root, ignore_errors=True)
        raise
    finally:
        group.close()
        structlog.configure(**old_logs)
    if verification is None or verification.problems or problems or config.keep:
        watch.emit("note", f"logs and data kept in {root}")
    else:
        shutil.rmtree(root, ignore_errors=True)
    if verification is None:
        verification = verify({}, {}, [], [], {})
    printer.close()
    problems += verification.problems
    if len(kills) < config.kills:
        problems.append(f"only {len(kills)} of {config.kills} kill(s) happened")
    for i, k in enumerate(kills, 1):
        if k.failover_ms is None:
            problems.append(f"after kill {i} no new leader dispatched work")
    return FailoverDemoResult(
        seed=config.seed,
        tasks=config.tasks,
        workers=config.workers,
        kills_requested=config.kills,
        kills=tuple(kills),
        resubmitted_same_ids=resubmitted_same,
        verification=verification,
        elapsed=round(watch.now(), 2),
        problems=tuple(problems),
        timeline=tuple(watch.entries),
    )


async def _run(
    config: FailoverDemoConfig, group: GroupProcesses, watch: _Watch, problems: list[str]
) -> tuple[Verification, list[KillRecord], int | None]:
    """Start the processes, submit, kill, wait, verify (see :func:`run_failover_demo`)."""
    watch.emit("start", f"starting {len(MEMBERS)} members and {config.workers} workers")
    await group.start()
    pids = ", ".join(f"{n}={p.pid}" for n, p in group.procs.items())
    watch.emit("start", f"all processes ready ({pids})")
    async with Node(f"demo-{config.seed}") as node:
        dist = await Distribution(node, secret=SECRET.encode()).start()
        for m, port in group.ports.items():
            dist.add_peer(m, "127.0.0.1", port)
        client = GroupClient(node, MEMBERS, timeout=30.0)
        lead = None
        with anyio.move_on_after(30):
            while lead is None:
                lead = await current_leader(node, group)
                await anyio.sleep(0.05 if lead is None else 0)
        if lead is None:
            tails = "; ".join(f"{m}: {group.log_tail(m, 300)!r}" for m in MEMBERS)
            raise TimeoutError(f"no member led within 30 s of starting ({tails})")
        async with anyio.create_task_group() as tg:
            tg.start_soon(watch.run)
            jobs: dict[str, list[str]] = {}
            keys = [f"job-{config.seed}-{i}" for i in range(config.tasks)]
            for key in keys:
                tid = await client.submit({"job": key}, key=key if config.idempotent else None)
                jobs[key] = [tid]
            watch.emit("client", f"{len(keys)} jobs submitted through {client.leader_hint}")
            kills, resubmitted_same, problem = await _chaos(
                config, node, group, client, watch, jobs, keys
            )
            if problem:
                problems.append(problem)
            problem = await _wait_done(config, watch, jobs)
            if problem:
                problems.append(problem)
            tg.cancel_scope.cancel()
        watch.poll()
        watch.emit("note", "verifying: a linearizable read of every task, the leader's log")
        tasks: dict[str, Any] = {}
        for tids in jobs.values():
            for tid in tids:
                tasks[tid] = await client.task(tid, timeout=20.0)
        lead = await current_leader(node, group)
        records = await fetch_audit(node, lead["node"] if lead else MEMBERS[0], timeout=20.0)
        watch.poll()
        node.stop()
    return (
        verify(jobs, tasks, records, watch.started, watch.completed_at),
        kills,
        resubmitted_same,
    )


async def _wait_until(watch: _Watch, predicate: Any, timeout: float) -> bool:
    with anyio.move_on_after(timeout):
        while not predicate():
            await watch.changed.wait()
        return True
    return False


async def _chaos(
    config: FailoverDemoConfig,
    node: Node,
    group: GroupProcesses,
    client: GroupClient,
    watch: _Watch,
    jobs: dict[str, list[str]],
    keys: list[str],
) -> tuple[list[KillRecord], int | None, str | None]:
    """Kill the leader at each threshold, restart it, resubmit after the first failover."""
    kills: list[KillRecord] = []
    resubmitted: int | None = None
    for i in range(config.kills):
        goal = max(1, int(KILL_AT[i] * config.tasks))
        if not await _wait_until(watch, lambda g=goal: len(watch.done) >= g, config.deadline):
            return kills, resubmitted, f"kill {i + 1}: {goal} jobs not done in time"
        if len(watch.done) >= config.tasks:
            return kills, resubmitted, f"kill {i + 1}: every job was done before it"
        lead = None
        with anyio.move_on_after(10):
            while lead is None:
                lead = await current_leader(node, group)
                await anyio.sleep(0.02 if lead is None else 0)
        if lead is None:
            return kills, resubmitted, f"kill {i + 1}: no leader found"
        victim, term = str(lead["node"]), int(lead["term"])
        done_before = len(watch.done)
        kill_ts = time.time()
        group.signal(victim, signal.SIGKILL)
        watch.emit(
            "kill",
            f"SIGKILL {victim} (leader, term {term}) with {done_before}/{config.tasks} done",
            kill_ts,
        )
        await _wait_until(
            watch, lambda t=term: any(k > t for k in watch.first_assign), config.deadline
        )
        newer = sorted(k for k in watch.first_assign if k > term)
        new_term = newer[0] if newer else None
        elected = watch.orchestrators.get(new_term) if new_term is not None else None
        failover_ms = (watch.first_assign[new_term] - kill_ts) * 1000 if new_term else None
        if new_term is not None and elected is not None:
            watch.emit(
                "failover",
                f"{elected[0]} term {new_term} dispatching again {failover_ms:.0f} ms after"
                f" the SIGKILL (orchestrator up after {(elected[1] - kill_ts) * 1000:.0f} ms)",
                watch.first_assign[new_term],
            )
        if i == 0:
            # Resubmitted once their first tasks are done: the case a retrying client
            # must not get wrong (finished work run again), and, for the broken
            # variant, a deterministic count of it rather than a race with the workers.
            firsts = [jobs[key][0] for key in keys[:RESUBMITTED]]
            if not await _wait_until(
                watch, lambda f=firsts: all(t in watch.done for t in f), config.deadline
            ):
                return kills, resubmitted, "the jobs to resubmit were not done in time"
            resubmitted = 0
            for key in keys[:RESUBMITTED]:
                with contextlib.suppress(GroupUnavailable):
                    tid = await client.submit(
                        {"job": key}, key=key if config.idempotent else None, timeout=20.0
                    )
                    resubmitted += tid == jobs[key][0]
                    if tid not in jobs[key]:
                        jobs[key].append(tid)
            watch.emit(
                "client",
                f"resubmitted {RESUBMITTED} jobs (a client retrying after the failover):"
                f" {resubmitted} got their original task id back",
            )
        await group.restart(victim)
        watch.emit("restart", f"{victim} restarted from its data directory (pid"
                   f" {group.procs[victim].pid}), replaying its log")  # fmt: skip
        caught: float | None = None
        try:
            await wait_caught_up(node, group, victim, timeout=30.0)
            caught = time.time() - kill_ts
            watch.emit("restart", f"{victim} caught up: a follower with the leader's log")
        except TimeoutError:
            watch.emit("restart", f"{victim} did not catch up within 30 s")
        kills.append(
            KillRecord(
                member=victim,
                term=term,
                at=round(kill_ts - watch.t0, 3),
                done_before=done_before,
                new_leader=elected[0] if elected else None,
                new_term=new_term,
                elected_ms=round((elected[1] - kill_ts) * 1000, 1) if elected else None,
                failover_ms=round(failover_ms, 1) if failover_ms is not None else None,
                caught_up_s=round(caught, 2) if caught is not None else None,
            )
        )
    return kills, resubmitted, None


async def _wait_done(
    config: FailoverDemoConfig, watch: _Watch, jobs: dict[str, list[str]]
) -> str | None:
    """Wait until every submitted task has an accepted Complete (or stop at the deadline)."""
    wanted = {tid for tids in jobs.values() for tid in tids}
    ok = await _wait_until(watch, lambda: wanted <= watch.done, config.deadline)
    if not ok:
        return f"{len(wanted - watch.done)} task(s) not done within {config.deadline:g} s"
    watch.emit("progress", f"all {len(wanted)} tasks completed")
    return None


# --------------------------------------------------------------------------- the command


def _count(low: int, high: int) -> Any:
    def parse(text: str) -> int:
        value = int(text)
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"must be in {low}..{high}, got {value}")
        return value

    return parse


def build_parser(prog: str = "regency demo") -> argparse.ArgumentParser:
    """The command line of the failover demo."""
    parser = argparse.ArgumentParser(
        prog=prog,
        description="A 3-node orchestrator group and workers as OS processes; the leader is"
        " SIGKILLed mid-run; verified: every task completed exactly once, none lost, no"
        " stale-term command applied. (The one-process supervision demo:"
        " `regency demo supervision`.)",
    )
    parser.add_argument("--seed", type=int, default=1, help="names jobs, seeds thinking times")
    parser.add_argument("--tasks", type=_count(1, 10_000), default=60, help="jobs (default 60)")
    parser.add_argument(
        "--workers", type=_count(1, 16), default=3, help="worker processes (default 3)"
    )
    parser.add_argument(
        "--kills", type=_count(0, len(KILL_AT)), default=2, help="leader SIGKILLs (default 2)"
    )
    parser.add_argument("--plain", action="store_true", help="plain lines, no color or bar")
    parser.add_argument("--json", metavar="PATH", help="write a machine-readable summary")
    parser.add_argument("--keep", action="store_true", help="keep the logs and data directory")
    parser.add_argument(
        "--think-ms", default="400:1000", help=argparse.SUPPRESS
    )  # LO:HI per job (tests)
    parser.add_argument(
        "--broken-no-idempotency", action="store_true", help=argparse.SUPPRESS
    )  # the broken variant: resubmissions create second tasks
    return parser


def main(argv: list[str]) -> int:
    """``regency demo [--seed N] [--tasks N] [--workers N] [--kills N] [--plain] [--json PATH]``.

    Returns 0 when every check held, 1 otherwise, 2 for bad arguments, 130 on Ctrl-C.
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    lo, _, hi = args.think_ms.partition(":")
    config = FailoverDemoConfig(
        seed=args.seed,
        tasks=args.tasks,
        workers=args.workers,
        kills=args.kills,
        think_ms=(float(lo), float(hi or lo)),
        idempotent=not args.broken_no_idempotency,
        keep=args.keep,
    )
    printer: FailoverPrinter = choose_printer(args.plain, PlainFailoverPrinter, RichFailoverPrinter)
    import trio

    interrupted = False
    try:
        result = trio.run(run_failover_demo, config, printer)
    except* KeyboardInterrupt:  # bare, or grouped by a task group
        interrupted = True
    if interrupted:
        printer.close()
        print("interrupted; every child process was killed", file=sys.stderr)
        return 130
    printer.summary(result)
    if args.json:
        write_json(args.json, result.to_json())
    return result.exit_code
