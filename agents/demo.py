"""``regency demo supervision``: a supervision tree of agent-like workers healing injected crashes.

The demo builds this tree on one node (no model is needed yet: each agent's model
call is simulated, with a seeded "thinking" time of 10-50 ms)::

    root            one_for_one
    |- ledger       GenServer: records each task's result once (idempotent by task id)
    `- pipeline     rest_for_one
       |- dispatcher  GenServer: hands out tasks, monitors each assignee, leases
       `- workers   one_for_one, with restart backoff
          |- w1 ... wN  agents: pull a task, think, report to the ledger

``pipeline`` is ``rest_for_one`` because the workers start after the dispatcher and
hold its assignments: when the dispatcher dies its successor rebuilds the queue from
the ledger, and the workers that held the dead dispatcher's assignments must go too.
A crash of the workers' supervisor restarts only the workers.

Faults are injected from a seed (:class:`FaultPlan`): a model error mid-task (the
worker raises), a worker killed with ``Kill()``, a hung model call whose worker traps
exits and ignores ``Shutdown`` (its lease expires, the dispatcher has it replaced and
the supervisor enforces the shutdown timeout), a burst of 429s from a rate-limited
provider (restarts delayed by exponential backoff), and a malformed message that
crashes the dispatcher (its dependants restart by ``rest_for_one``).

No task is lost because of how the pieces work, not because the demo says so: the
dispatcher monitors the worker it assigned each task to and re-queues the task on its
``Down``; a worker silent past its lease loses its task the same way; a new dispatcher
re-reads the pending tasks from the ledger; the ledger records a result once and
rejects duplicates. The demo then verifies, from the ledger's records: every submitted
task completed exactly once with the expected result, none lost, the tree healthy.

The timeline is printed from the runtime's own structured log events (structlog:
``child_terminated``, ``child_restarted``, ``restart_delayed``, ``shutdown_error``,
``reached_max_restart_intensity``...), which the demo routes to its printer for the
duration of the run, plus the demo's own events (``task_requeued``, ``lease_expired``,
``fault_injected``...).

Entry points: :func:`supervision_main` (``regency demo supervision``; :func:`main`, the
``regency demo`` command, runs the failover demo of :mod:`agents.failover_demo` unless
told ``supervision``) and :func:`run_demo`, the
coroutine that runs one demo and returns a :class:`DemoResult`; tests run it under
trio's ``MockClock``.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import functools
import hashlib
import logging
import random
import sys
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, Final, Protocol, TextIO, final

import anyio
import attrs
import structlog

import runtime
import supervisors
from runtime import GenServer, Kill, Pid, Ref, RegencyError, ServerExited
from supervisors import Backoff, ChildSpec, ChildType, Strategy, SupFlags

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
    "DemoConfig",
    "DemoResult",
    "FaultPlan",
    "PlainPrinter",
    "Printer",
    "RichPrinter",
    "main",
    "run_demo",
    "supervision_main",
]

log = structlog.get_logger("regency.demo")

NODE_NAME: Final = "demo@localhost"
FAULT_KINDS: Final = ("crash", "kill", "hang", "rate_limit", "dispatcher")
"""Every kind of injected fault, in the order the summary lists them."""

STRATEGIES: Final = {
    "root": Strategy.ONE_FOR_ONE,
    "pipeline": Strategy.REST_FOR_ONE,
    "workers": Strategy.ONE_FOR_ONE,
}
ROOT_FLAGS: Final = SupFlags(Strategy.ONE_FOR_ONE, intensity=3, period=5.0)
PIPELINE_FLAGS: Final = SupFlags(Strategy.REST_FOR_ONE, intensity=3, period=5.0)
WORKERS_FLAGS: Final = SupFlags(Strategy.ONE_FOR_ONE, intensity=10, period=5.0)
WORKER_BACKOFF: Final = Backoff(initial=0.1, max=1.6, multiplier=2.0, jitter=0.2)
RATE_LIMITED_MODEL: Final = "model-b"


# -- configuration and the fault plan ---------------------------------------------------


@attrs.frozen
class DemoConfig:
    """One demo run's settings.

    Attributes:
        seed: drives the fault plan, the tasks, thinking times and backoff jitter.
        tasks: how many tasks to submit (>= 1). Default 40.
        workers: how many agent workers (>= 1); the last one calls the rate-limited
            provider when there are at least 2. Default 4.
        think_min: shortest simulated model call, in seconds. Default 0.01.
        think_max: longest simulated model call, in seconds. Default 0.05.
        lease: seconds a worker may hold a task before the dispatcher takes it back
            and has the worker replaced. Default 0.3 (6x the longest thinking).
        worker_shutdown: each worker's shutdown timeout, in seconds: how long its
            supervisor waits after ``Shutdown()`` before ``Kill()``. Default 0.2.
        stall_timeout: seconds without a completed task after which the run stops
            and reports the missing work as lost. Default 3.0.
        deadline: the longest a run may take, in seconds. Default 60.
        requeue_on_down: whether the dispatcher re-queues the task of a worker that
            went down. Only tests turn it off, to show the verification catches it.
        faults: the faults to inject; ``None`` (the default): drawn from ``seed`` by
            :meth:`FaultPlan.from_seed`. Tests pass one to isolate a mechanism.
    """

    seed: int = 1
    tasks: int = 40
    workers: int = 4
    think_min: float = 0.01
    think_max: float = 0.05
    lease: float = 0.3
    worker_shutdown: float = 0.2
    stall_timeout: float = 3.0
    deadline: float = 60.0
    requeue_on_down: bool = True
    faults: FaultPlan | None = None

    def __attrs_post_init__(self) -> None:
        if self.tasks < 1:
            raise ValueError(f"tasks must be >= 1, got {self.tasks}")
        if self.workers < 1:
            raise ValueError(f"workers must be >= 1, got {self.workers}")
        if not 0 < self.think_min <= self.think_max:
            raise ValueError("need 0 < think_min <= think_max")


@attrs.frozen
class FaultPlan:
    """Which faults a run injects, drawn from the seed.

    Model faults fire the first time the model works on the named task, whichever
    worker runs it. The storm and the dispatcher crash fire once the ledger has
    recorded the given number of completed tasks.

    Attributes:
        crash: tasks whose model call raises mid-task (the worker crashes).
        hang: tasks whose model call hangs (the worker traps exits and ignores them).
        kill: tasks whose worker the chaos process kills with ``Kill()``.
        storm_at: completed tasks after which the rate-limited provider answers 429
            to its next ``storm_calls`` calls; ``None``: no storm.
        storm_calls: how many 429s the storm lasts.
        dispatcher_crash_at: completed tasks after which a malformed message crashes
            the dispatcher; ``None``: no dispatcher crash.
    """

    crash: tuple[int, ...] = ()
    hang: tuple[int, ...] = ()
    kill: tuple[int, ...] = ()
    storm_at: int | None = None
    storm_calls: int = 3
    dispatcher_crash_at: int | None = None

    @classmethod
    def from_seed(cls, seed: int, tasks: int, workers: int) -> FaultPlan:
        """The plan for *seed*: one model error per third of the tasks, a hang early,
        a kill late, a 429 storm at 25% and a dispatcher crash at 60% of the tasks.

        Faults that do not fit (too few tasks, a single worker) are left out.
        """
        rng = random.Random(f"faults/{seed}")
        used: set[int] = set()

        def pick(lo: float, hi: float) -> tuple[int, ...]:
            candidates = [i for i in range(1, tasks + 1) if lo * tasks < i <= hi * tasks]
            candidates = [i for i in candidates if i not in used]
            if not candidates:
                return ()
            choice = rng.choice(candidates)
            used.add(choice)
            return (choice,)

        hang = pick(0.05, 0.2)
        kill = pick(0.65, 0.9)
        crash = pick(0.0, 1 / 3) + pick(1 / 3, 2 / 3) + pick(0.75, 1.0)
        return cls(
            crash=tuple(sorted(crash)),
            hang=hang,
            kill=kill,
            storm_at=max(1, tasks // 4) if workers >= 2 and tasks >= 4 else None,
            dispatcher_crash_at=tasks * 3 // 5 if tasks >= 4 else None,
        )

    def model_fault(self, task_id: int) -> str | None:
        """The model fault planned for *task_id*: ``"crash"``, ``"hang"``, ``"kill"`` or None."""
        for kind in ("crash", "hang", "kill"):
            if task_id in getattr(self, kind):
                return kind
        return None

    def planned(self) -> dict[str, int]:
        """How many faults of each kind the plan injects (a storm counts its 429s)."""
        return {
            "crash": len(self.crash),
            "kill": len(self.kill),
            "hang": len(self.hang),
            "rate_limit": self.storm_calls if self.storm_at is not None else 0,
            "dispatcher": 1 if self.dispatcher_crash_at is not None else 0,
        }


# -- messages --------------------------------------------------------------------------


@attrs.frozen
class Task:
    """A unit of agent work: an id (unique, from 1) and a prompt."""

    id: int
    prompt: str


@attrs.frozen
class Completion:
    """A result the ledger recorded: which task, the result, which worker, when."""

    task: int
    result: str
    worker: str
    at: float


@attrs.frozen
class Audit:
    """The ledger's contents, for the final verification."""

    submitted: tuple[int, ...]
    completions: tuple[Completion, ...]
    duplicates: int


@attrs.frozen
class _Submit:
    tasks: tuple[Task, ...]


@attrs.frozen
class _Report:
    task: int
    result: str
    worker: str


@attrs.frozen
class _Pending:
    pass


@attrs.frozen
class _Progress:
    pass


@attrs.frozen
class _AuditRequest:
    pass


@attrs.frozen
class _Pull:
    worker: str
    pid: Pid


@attrs.frozen
class _Enqueue:
    tasks: tuple[Task, ...]


@attrs.frozen
class _Done:
    task: int
    pid: Pid


@attrs.frozen
class _LeaseExpired:
    task: int
    ref: Ref


@attrs.frozen
class _Malformed:
    """What the chaos process sends the dispatcher to crash it."""


@attrs.frozen
class _Victim:
    """Tells the chaos process which worker to kill: it just started on a kill task."""

    pid: Pid
    worker: str
    task: int


_STOP: Final = "stop"


# -- the simulated world: model providers and the faults they inject --------------------


class ModelError(Exception):
    """The simulated model returned something the agent cannot use."""


class RateLimited(Exception):
    """The simulated provider answered 429 Too Many Requests."""


@final
class World:
    """The world outside the tree: model providers, with the fault plan wired in.

    Shared by every process of a run (it stands for external services, not for
    process state). It counts model calls and the faults it injected.
    """

    def __init__(self, config: DemoConfig, plan: FaultPlan) -> None:
        self.config = config
        self.plan = plan
        self.rate_limited: dict[str, int] = collections.defaultdict(int)
        self.fired: set[int] = set()
        self.injected: collections.Counter[str] = collections.Counter()
        self.model_calls = 0
        self._attempts: collections.Counter[int] = collections.Counter()

    def model_of(self, index: int) -> str:
        """The model worker number *index* (from 1) calls."""
        last = index == self.config.workers and self.config.workers >= 2
        return RATE_LIMITED_MODEL if last else "model-a"

    def answer(self, task: Task) -> str:
        """The one correct result of *task* (what the simulated model returns)."""
        digest = hashlib.sha256(f"{self.config.seed}/{task.id}/{task.prompt}".encode())
        return f"{task.prompt}: {digest.hexdigest()[:12]}"

    def tasks(self) -> list[Task]:
        """The run's tasks, drawn from the seed."""
        rng = random.Random(f"tasks/{self.config.seed}")
        verbs = ("summarize", "triage", "classify", "extract entities from", "translate")
        things = ("report", "ticket", "email", "contract", "changelog", "incident")
        return [
            Task(i, f"{rng.choice(verbs)} {rng.choice(things)} #{rng.randrange(100, 1000)}")
            for i in range(1, self.config.tasks + 1)
        ]

    async def think(self, worker: str, model: str, task: Task) -> str:
        """Run *task* through *model* from inside worker *worker*'s process.

        Returns the answer after a seeded 10-50 ms. Raises :class:`RateLimited` during a
        storm on *model*, :class:`ModelError` for a planned crash; never returns for a
        planned hang; asks the chaos process to kill the caller for a planned kill.
        """
        self.model_calls += 1
        self._attempts[task.id] += 1
        if self.rate_limited[model] > 0:
            self.rate_limited[model] -= 1
            self.injected["rate_limit"] += 1
            raise RateLimited(f"{model}: 429 (task {task.id})")
        rng = random.Random(f"think/{self.config.seed}/{task.id}/{self._attempts[task.id]}")
        thinking = rng.uniform(self.config.think_min, self.config.think_max)
        fault = None if task.id in self.fired else self.plan.model_fault(task.id)
        if fault is not None:
            self.fired.add(task.id)
            self.injected[fault] += 1
        if fault == "crash":
            await anyio.sleep(thinking / 2)
            raise ModelError(f"malformed tool call (task {task.id})")
        if fault == "hang":
            log.info("fault_injected", fault="hang", worker=worker, task=task.id)
            runtime.trap_exit(True)  # deaf to Shutdown(): only Kill() ends it now
            await anyio.sleep_forever()
        if fault == "kill":
            self.injected[fault] -= 1  # counted by the chaos process when it kills
            runtime.send("chaos", _Victim(runtime.self_pid(), worker, task.id))
        await anyio.sleep(thinking)
        return self.answer(task)


# -- the tree's processes ----------------------------------------------------------------


@final
class LedgerStore:
    """Where the ledger keeps its records: outlives any one ledger process.

    The stand-in for the replicated log that the failover issue brings.
    """

    def __init__(self) -> None:
        self.submitted: dict[int, Task] = {}
        self.completions: list[Completion] = []
        self.done: dict[int, Completion] = {}
        self.duplicates = 0


class Ledger(GenServer):
    """Records task submissions and results; a result is recorded once per task id.

    Calls: ``_Submit(tasks)`` -> how many were new; ``_Report(task, result, worker)``
    -> True if recorded, False for a duplicate (rejected, counted); ``_Pending()`` ->
    the submitted tasks without a result, in id order; ``_Progress()`` -> how many
    tasks have a result; ``_AuditRequest()`` -> an :class:`Audit`.
    """

    async def init(self, store: LedgerStore) -> None:
        """Attach to *store*; a restarted ledger finds its records there."""
        self.store = store

    async def handle_call(self, request: Any, from_: runtime.From) -> Any:
        """Answer one of the ledger's calls (see the class doc)."""
        store = self.store
        match request:
            case _Submit(tasks):
                new = [t for t in tasks if t.id not in store.submitted]
                for task in new:
                    store.submitted[task.id] = task
                return len(new)
            case _Report(task, result, worker):
                if task in store.done:
                    store.duplicates += 1
                    first = store.done[task].worker
                    log.info("duplicate_rejected", task=task, worker=worker, first=first)
                    return False
                done = Completion(task, result, worker, anyio.current_time())
                store.done[task] = done
                store.completions.append(done)
                log.info(
                    "task_completed",
                    task=task,
                    worker=worker,
                    done=len(store.done),
                    total=len(store.submitted),
                )
                return True
            case _Pending():
                return [t for i, t in sorted(store.submitted.items()) if i not in store.done]
            case _Progress():
                return len(store.done)
            case _AuditRequest():
                return Audit(tuple(store.submitted), tuple(store.completions), store.duplicates)
        return await super().handle_call(request, from_)


@attrs.frozen
class _Assignment:
    task: Task
    worker: str
    pid: Pid
    ref: Ref
    timer: runtime.TimerRef


class Dispatcher(GenServer):
    """Hands out tasks and takes back those of workers that went down or fell silent.

    On start it queues the ledger's pending tasks (so a restarted dispatcher resumes
    where the ledger says). ``_Pull(worker, pid)`` is answered with the next task, or
    later when there is none; each assignment monitors the worker and starts a lease.
    On the worker's ``Down`` the task goes back to the head of the queue; when the
    lease expires first, the task goes back likewise and the worker is replaced
    (``terminate_child`` then ``restart_child`` on the workers' supervisor).
    ``_Done(task, pid)`` ends an assignment; ``_Enqueue(tasks)`` adds tasks.
    """

    async def init(self, config: DemoConfig) -> None:
        """Queue the ledger's pending tasks."""
        self.config = config
        pending: list[Task] = await runtime.call("ledger", _Pending())
        self.queue: collections.deque[Task] = collections.deque(pending)
        self.waiting: collections.deque[tuple[runtime.From, str, Pid]] = collections.deque()
        self.assigned: dict[int, _Assignment] = {}
        self.by_ref: dict[Ref, int] = {}
        log.info("dispatcher_started", pending=len(pending))

    async def handle_call(self, request: Any, from_: runtime.From) -> Any:
        """Answer ``_Pull``: a task now, or later (``NOREPLY``) when the queue is empty."""
        if isinstance(request, _Pull):
            if self.queue:
                return self._assign(self.queue.popleft(), request.worker, request.pid)
            self.waiting.append((from_, request.worker, request.pid))
            return runtime.NOREPLY
        return await super().handle_call(request, from_)

    async def handle_cast(self, msg: Any) -> None:
        """Handle ``_Done``, ``_Enqueue``; a ``_Malformed`` message crashes the server."""
        match msg:
            case _Done(task_id, pid):
                held = self.assigned.get(task_id)
                if held is not None and held.pid == pid:
                    self._release(held)
            case _Enqueue(tasks):
                queued = {t.id for t in self.queue}
                for task in tasks:
                    if task.id not in queued and task.id not in self.assigned:
                        self.queue.append(task)
                self._serve()
            case _Malformed():
                raise ValueError("malformed message: an assignment without a task")
            case _:
                await super().handle_cast(msg)

    async def handle_info(self, msg: Any) -> None:
        """Handle a worker's ``Down`` and lease expiries."""
        match msg:
            case runtime.Down(ref, _pid, reason):
                task_id = self.by_ref.pop(ref, None)
                if task_id is None:
                    return
                a = self.assigned.pop(task_id)
                runtime.cancel_timer(a.timer)
                if not self.config.requeue_on_down:  # the deliberately broken variant
                    log.info("assignment_forgotten", task=task_id, worker=a.worker)
                    return
                self.queue.appendleft(a.task)
                log.info("task_requeued", task=task_id, worker=a.worker, reason=str(reason))
                self._serve()
            case _LeaseExpired(task_id, ref):
                held = self.assigned.get(task_id)
                if held is None or held.ref != ref:
                    return
                self._release(held)
                self.queue.appendleft(held.task)
                log.info("lease_expired", task=task_id, worker=held.worker, lease=self.config.lease)
                runtime.spawn(_replace_worker, held.worker, held.pid)
                self._serve()
            case _:
                await super().handle_info(msg)

    def _assign(self, task: Task, worker: str, pid: Pid) -> Task:
        ref = runtime.monitor(pid)
        timer = runtime.send_after(
            self.config.lease, runtime.self_pid(), _LeaseExpired(task.id, ref)
        )
        self.assigned[task.id] = _Assignment(task, worker, pid, ref, timer)
        self.by_ref[ref] = task.id
        return task

    def _release(self, a: _Assignment) -> None:
        del self.assigned[a.task.id]
        self.by_ref.pop(a.ref, None)
        runtime.demonitor(a.ref, flush=True)
        runtime.cancel_timer(a.timer)

    def _serve(self) -> None:
        while self.queue and self.waiting:
            from_, worker, pid = self.waiting.popleft()
            runtime.reply(from_, self._assign(self.queue.popleft(), worker, pid))


async def _replace_worker(worker: str, pid: Pid) -> None:
    """Replace a silent worker: stop it by the shutdown protocol, then start it again."""
    try:
        children = await supervisors.which_children("workers", timeout=5.0)
        if not any(c.id == worker and c.pid == pid for c in children):
            return  # already gone (restarted by its supervisor meanwhile)
        await supervisors.terminate_child("workers", worker, timeout=10.0)
        new = await supervisors.restart_child("workers", worker, timeout=10.0)
        log.info("worker_replaced", worker=worker, pid=str(new))
    except RegencyError as e:  # the workers' supervisor was itself restarted meanwhile
        log.info("worker_replace_skipped", worker=worker, reason=repr(e))


async def _agent(worker: str, model: str, world: World) -> None:
    """An agent worker: pull a task, think, report to the ledger, tell the dispatcher."""
    me = runtime.self_pid()
    while True:
        task = await _pull(worker, me)
        result = await world.think(worker, model, task)
        await runtime.call("ledger", _Report(task.id, result, worker), timeout=5.0)
        runtime.cast("dispatcher", _Done(task.id, me))


async def _pull(worker: str, me: Pid) -> Task:
    """The next task from the dispatcher, waiting while it is being restarted."""
    while True:
        try:
            task: Task = await runtime.call("dispatcher", _Pull(worker, me), timeout=None)
            return task
        except ServerExited:
            # The dispatcher died; pipeline's rest_for_one is about to restart us too.
            await anyio.sleep(0.01)


async def _chaos(plan: FaultPlan, world: World) -> None:
    """The chaos process: kills victims at once; starts the storm and the dispatcher crash."""
    storm_due = plan.storm_at is not None
    crash_due = plan.dispatcher_crash_at is not None
    while True:
        try:
            msg = await runtime.receive(timeout=0.005)
        except runtime.ReceiveTimeout:
            msg = None
        if msg == _STOP:
            return
        if isinstance(msg, _Victim):
            world.injected["kill"] += 1
            log.info("fault_injected", fault="kill", worker=msg.worker, task=msg.task)
            runtime.send_exit(msg.pid, Kill())
            continue
        if not (storm_due or crash_due):
            continue
        try:
            done: int = await runtime.call("ledger", _Progress(), timeout=1.0)
        except (ServerExited, runtime.CallTimeout):
            continue
        if storm_due and plan.storm_at is not None and done >= plan.storm_at:
            storm_due = False
            world.rate_limited[RATE_LIMITED_MODEL] += plan.storm_calls
            log.info(
                "fault_injected",
                fault="rate_limit",
                model=RATE_LIMITED_MODEL,
                calls=plan.storm_calls,
            )
        if crash_due and plan.dispatcher_crash_at is not None and done >= plan.dispatcher_crash_at:
            crash_due = False
            world.injected["dispatcher"] += 1
            log.info("fault_injected", fault="dispatcher")
            runtime.cast("dispatcher", _Malformed())


async def _start_sup(
    children: Sequence[ChildSpec], flags: SupFlags, name: str, rng: random.Random
) -> Pid:
    return await supervisors.start_supervisor(children, flags, name=name, link=True, rng=rng)


def _nested(id: str, children: Sequence[ChildSpec], flags: SupFlags, seed: int) -> ChildSpec:
    """A nested supervisor registered as *id*, with seeded backoff jitter."""
    rng = random.Random(f"jitter/{seed}/{id}")
    return ChildSpec(
        id, _start_sup, args=(list(children), flags, id, rng), type=ChildType.SUPERVISOR
    )


def build_tree(config: DemoConfig, world: World, store: LedgerStore) -> list[ChildSpec]:
    """The root supervisor's children: the ledger, then the dispatcher-and-workers pipeline."""
    workers = [
        supervisors.worker_spec(
            f"w{i}",
            _agent,
            f"w{i}",
            world.model_of(i),
            world,
            name=f"w{i}",
            shutdown=config.worker_shutdown,
            backoff=WORKER_BACKOFF,
        )
        for i in range(1, config.workers + 1)
    ]
    pipeline = [
        supervisors.server_spec("dispatcher", Dispatcher, config, name="dispatcher"),
        _nested("workers", workers, WORKERS_FLAGS, config.seed),
    ]
    return [
        supervisors.server_spec("ledger", Ledger, store, name="ledger"),
        _nested("pipeline", pipeline, PIPELINE_FLAGS, config.seed),
    ]


# -- the result ------------------------------------------------------------------------


@attrs.frozen
class ChildRow:
    """One line of the final tree: a child of supervisor ``parent``."""

    parent: str
    id: str
    pid: str | None
    type: str
    restarting: bool


@attrs.frozen
class SupCounts:
    """``count_children`` of one supervisor."""

    supervisor: str
    specs: int
    active: int
    supervisors: int
    workers: int


@attrs.frozen
class TimelineEntry:
    """One printed line of the timeline: seconds since start, kind, text."""

    t: float
    kind: str
    text: str


@attrs.frozen
class DemoResult:
    """What a run did and what the verification found.

    ``ok`` is true only if every submitted task completed exactly once with its
    expected result, nothing was lost and the tree ended healthy; ``problems`` says
    what failed otherwise.
    """

    seed: int
    tasks: int
    workers: int
    submitted: int
    completed: int
    records: int
    duplicates_rejected: int
    lost: tuple[int, ...]
    wrong_results: tuple[int, ...]
    model_calls: int
    restarts: dict[str, int]
    replaced: int
    faults_planned: dict[str, int]
    faults_injected: dict[str, int]
    faults_observed: dict[str, int]
    tree: tuple[ChildRow, ...]
    counts: tuple[SupCounts, ...]
    elapsed: float
    stalled: bool
    problems: tuple[str, ...]
    timeline: tuple[TimelineEntry, ...]

    @property
    def ok(self) -> bool:
        """True if the verification passed."""
        return not self.problems

    @property
    def exit_code(self) -> int:
        """0 if everything held, 1 otherwise."""
        return 0 if self.ok else 1

    @property
    def total_restarts(self) -> int:
        """Restarts by supervisors (``child_restarted``), plus workers replaced."""
        return sum(self.restarts.values()) + self.replaced

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready summary (what ``--json PATH`` writes)."""
        data = attrs.asdict(self, recurse=True)
        data["lost"] = list(self.lost)
        data["ok"] = self.ok
        data["exit_code"] = self.exit_code
        data["total_restarts"] = self.total_restarts
        return data


# -- printing ----------------------------------------------------------------------------


class Printer(Protocol):
    """Where a run's output goes."""

    def header(self, lines: Sequence[str]) -> None:
        """Print the introduction (the tree and the fault plan)."""

    def event(self, t: float, kind: str, text: str) -> None:
        """Print one timeline line: *t* seconds since start, its *kind*, its text."""

    def progress(self, done: int, total: int) -> None:
        """Report that *done* of *total* tasks are completed."""

    def summary(self, result: DemoResult) -> None:
        """Print the verification and the final tree."""

    def close(self) -> None:
        """Finish any live display."""


TAGS: Final = {
    "start": "start",
    "chaos": "chaos",
    "crash": "crash",
    "restart": "restart",
    "backoff": "backoff",
    "requeue": "requeue",
    "lease": "lease",
    "ledger": "ledger",
    "progress": "progress",
    "note": "note",
}
STYLES: Final = {
    "start": "bold",
    "chaos": "magenta",
    "crash": "bold red",
    "restart": "green",
    "backoff": "yellow",
    "requeue": "cyan",
    "lease": "yellow",
    "ledger": "cyan",
    "progress": "blue",
    "note": "dim",
}


def _summary_rows(r: DemoResult) -> list[tuple[str, str, str]]:
    """(label, value, note) rows of the verification."""
    restarts = ", ".join(f"{k} {v}" for k, v in sorted(r.restarts.items()) if v) or "none"
    if r.replaced:
        restarts += f"; {r.replaced} silent worker(s) replaced by the dispatcher"
    faults = ", ".join(
        f"{k} {r.faults_injected.get(k, 0)}/{r.faults_observed.get(k, 0)}" for k in FAULT_KINDS
    )
    lost = ", ".join(map(str, r.lost[:10])) + (" ..." if len(r.lost) > 10 else "")
    return [
        ("tasks submitted", str(r.submitted), "accepted by the ledger"),
        (
            "completed exactly once",
            str(r.completed),
            f"{r.records} ledger records, {r.completed} distinct task ids,"
            f" {len(r.wrong_results)} wrong results",
        ),
        (
            "duplicate reports rejected",
            str(r.duplicates_rejected),
            "a task re-run after its worker died is recorded once",
        ),
        ("lost (submitted - completed)", str(len(r.lost)), f"tasks {lost}" if r.lost else ""),
        (
            "model calls",
            str(r.model_calls),
            f"{r.model_calls - r.completed} interrupted or repeated",
        ),
        ("restarts performed", str(r.total_restarts), restarts),
        ("faults injected/observed", "", faults),
        ("run time", f"{r.elapsed:.2f} s", ""),
    ]


def _verdict(r: DemoResult) -> str:
    if r.ok:
        return (
            f"OK: {r.completed}/{r.submitted} tasks completed exactly once, none lost;"
            f" the tree healed through {r.total_restarts} restarts."
        )
    return "FAILED: " + "; ".join(r.problems)


def _tree_lines(r: DemoResult, *, ascii_only: bool) -> list[str]:
    """The final tree as indented lines, from which_children and count_children."""
    tee, elbow, bar = ("|- ", "`- ", "|  ") if ascii_only else ("├─ ", "└─ ", "│  ")
    by_parent: dict[str, list[ChildRow]] = collections.defaultdict(list)
    for row in r.tree:
        by_parent[row.parent].append(row)
    counts = {c.supervisor: c for c in r.counts}

    def label(sup: str) -> str:
        c = counts.get(sup)
        strategy = STRATEGIES[sup].value if sup in STRATEGIES else ""
        if c is None:
            return f"{sup} ({strategy})"
        return f"{sup} ({strategy}; specs {c.specs}, active {c.active})"

    lines = [label("root")]

    def walk(sup: str, prefix: str) -> None:
        rows = by_parent.get(sup, [])
        for i, row in enumerate(rows):
            last = i == len(rows) - 1
            state = row.pid or ("restarting" if row.restarting else "not running")
            text = label(row.id) + f" {state}" if row.type == "supervisor" else f"{row.id} {state}"
            lines.append(prefix + (elbow if last else tee) + text)
            walk(row.id, prefix + ("   " if last else bar))

    walk("root", "")
    return lines


@final
class PlainPrinter:
    """Plain ASCII lines, for pipes, logs and ``--plain``."""

    def __init__(self, out: TextIO | None = None) -> None:
        self.out = out if out is not None else sys.stdout
        self._quarter = 0

    def _write(self, text: str) -> None:
        write_line(self.out, text)

    def header(self, lines: Sequence[str]) -> None:
        """Print the introduction."""
        for line in lines:
            self._write(line.replace("├─", "|-").replace("└─", "`-").replace("│", "|"))

    def event(self, t: float, kind: str, text: str) -> None:
        """Print ``  t.ttts  kind      text``."""
        self._write(f"{t:8.3f}s  {TAGS.get(kind, kind):<9} {text}")

    def progress(self, done: int, total: int) -> None:
        """Print a progress line at each quarter of the tasks."""
        quarter = done * 4 // max(total, 1)
        if quarter > self._quarter:
            self._quarter = quarter
            self._write(f"{'':10}{'progress':<9} {done}/{total} tasks completed")

    def summary(self, result: DemoResult) -> None:
        """Print the verification table, the final tree and the verdict."""
        self._write("")
        self._write("verification (from the ledger's records)")
        plain_rows(self.out, _summary_rows(result), label_width=29, value_width=7)
        self._write("")
        self._write("final tree (which_children / count_children)")
        for line in _tree_lines(result, ascii_only=True):
            self._write("  " + line)
        self._write("")
        self._write(_verdict(result))

    def close(self) -> None:
        """Nothing to finish."""


@final
class RichPrinter:
    """Colored lines with a live progress bar, for a terminal."""

    def __init__(self, console: Console | None = None) -> None:
        self.console: Console = rich_console(console)
        self._bar = LiveBar(self.console, "tasks", "tasks")

    def header(self, lines: Sequence[str]) -> None:
        """Print the introduction."""
        rich_header(self.console, lines)

    def event(self, t: float, kind: str, text: str) -> None:
        """Print one colored timeline line."""
        from rich.text import Text

        self.console.print(
            Text.assemble(
                (f"{t:8.3f}s  ", "dim"),
                (f"{TAGS.get(kind, kind):<9}", STYLES.get(kind, "")),
                " ",
                (text, "dim" if kind == "note" else ""),
            )
        )

    def progress(self, done: int, total: int) -> None:
        """Update the live bar."""
        self._bar.update(done, total)

    def summary(self, result: DemoResult) -> None:
        """Print the verification table, the final tree and the verdict."""
        from rich.text import Text

        self.close()
        rich_table(self.console, "verification (from the ledger's records)", _summary_rows(result))
        self.console.print(Text("final tree (which_children / count_children)", style="italic"))
        for line in _tree_lines(result, ascii_only=False):
            self.console.print(Text("  " + line))
        self.console.print()
        style = "bold green" if result.ok else "bold red"
        self.console.print(Text(_verdict(result), style=style))

    def close(self) -> None:
        """Stop the live bar."""
        self._bar.stop()


@final
class _NullPrinter:
    def header(self, lines: Sequence[str]) -> None:
        pass

    def event(self, t: float, kind: str, text: str) -> None:
        pass

    def progress(self, done: int, total: int) -> None:
        pass

    def summary(self, result: DemoResult) -> None:
        pass

    def close(self) -> None:
        pass


def header_lines(config: DemoConfig, plan: FaultPlan, world: World) -> list[str]:
    """The introduction: the tree and what each part is for, then the fault plan."""
    b = WORKER_BACKOFF
    lines = [
        f"regency demo: seed {config.seed}, {config.tasks} tasks, {config.workers} workers"
        " (simulated agents, no model needed)",
        "",
        "supervision tree",
        f"  root          one_for_one, at most {ROOT_FLAGS.intensity} restarts"
        f" in {ROOT_FLAGS.period:g} s",
        "  ├─ ledger     records each task's result once (idempotent by task id)",
        "  └─ pipeline   rest_for_one: the workers start after the dispatcher and hold its",
        "     │          assignments, so a dispatcher crash restarts them too",
        "     ├─ dispatcher  hands out tasks, monitors each assignee and re-queues its",
        f"     │              task on DOWN; takes back a task held past a {config.lease:g} s lease",
        f"     └─ workers one_for_one, at most {WORKERS_FLAGS.intensity} restarts"
        f" in {WORKERS_FLAGS.period:g} s, restarts delayed by",
        f"        │       backoff ({b.initial:g} s doubling to {b.max:g} s), each worker"
        f" has a {config.worker_shutdown:g} s shutdown timeout",
    ]
    for i in range(1, config.workers + 1):
        model = world.model_of(i)
        note = " (a rate-limited provider)" if model == RATE_LIMITED_MODEL else ""
        branch = "└─" if i == config.workers else "├─"
        lines.append(f"        {branch} w{i:<6} agent calling {model}{note}")
    lines += ["", f"fault plan (from --seed {config.seed})"]
    if plan.crash:
        tasks = ", ".join(map(str, plan.crash))
        lines.append(f"  - the model call fails mid-task on task(s) {tasks}: the worker crashes")
    if plan.hang:
        lines.append(
            f"  - the model call hangs on task {plan.hang[0]}: the worker traps exits, ignores"
            " shutdown"
        )
    if plan.kill:
        lines.append(f"  - Kill() is sent to the worker running task {plan.kill[0]}")
    if plan.storm_at is not None:
        lines.append(
            f"  - {RATE_LIMITED_MODEL} answers 429 to its next {plan.storm_calls} calls"
            f" once {plan.storm_at} tasks are done"
        )
    if plan.dispatcher_crash_at is not None:
        lines.append(
            f"  - a malformed message crashes the dispatcher once {plan.dispatcher_crash_at}"
            " tasks are done"
        )
    if not config.requeue_on_down:
        lines.append("  - BROKEN VARIANT: the dispatcher does not re-queue on DOWN")
    lines += ["", "timeline (seconds since start)"]
    return lines


# -- the timeline: structlog events -> printed lines -------------------------------------


@final
class _Timeline:
    """Turns the runtime's and the demo's log events into timeline lines and counts."""

    def __init__(self, printer: Printer, config: DemoConfig) -> None:
        self.printer = printer
        self.config = config
        self.t0: float | None = None
        self.live = False  # True between the tree's start and the final verification
        self.entries: list[TimelineEntry] = []
        self.restarts: collections.Counter[str] = collections.Counter()
        self.observed: collections.Counter[str] = collections.Counter()
        self.replaced = 0
        self.offender: dict[str, str] = {}
        self._started: dict[str, list[str]] = {}
        self.errors: list[dict[str, Any]] = []

    def now(self) -> float:
        if self.t0 is None:
            return 0.0
        try:
            return anyio.current_time() - self.t0
        except Exception:  # outside the event loop
            return 0.0

    def emit(self, kind: str, text: str) -> None:
        """Print and keep one timeline line (after any children started just before)."""
        if self._started:
            started, self._started = self._started, {}
            for sup, ids in started.items():
                self.emit("note", f"{sup}: started {', '.join(ids)}")
        t = self.now()
        self.entries.append(TimelineEntry(round(t, 4), kind, text))
        self.printer.event(t, kind, text)

    def handle(self, method: str, ev: dict[str, Any]) -> None:
        """Handle one structlog event (called from the structlog processor)."""
        try:
            self._handle(method, ev)
        except Exception as e:  # never let printing break the run
            self.errors.append({"event": repr(ev), "error": repr(e)})

    def _handle(self, method: str, ev: dict[str, Any]) -> None:
        event = str(ev.get("event"))
        sup = str(ev.get("supervisor_name", ev.get("supervisor", "?")))
        cid = str(ev.get("child_id", "?"))
        reason = str(ev.get("reason", ""))
        strategy = STRATEGIES[sup].value if sup in STRATEGIES else "?"
        self._count(event, sup, cid, reason)
        if event == "task_completed":
            self.printer.progress(int(ev["done"]), int(ev["total"]))
            return
        if not self.live:
            return
        match event:
            case "child_terminated":
                self.offender[sup] = cid
                self.emit("crash", f"{cid} died: {reason}  [{sup}: {strategy}]")
            case "restart_delayed":
                delay = float(ev.get("delay", 0.0))
                self.emit(
                    "backoff", f"{sup}: restart of {cid} delayed {delay * 1000:.0f} ms (backoff)"
                )
            case "child_restarted":
                offender = self.offender.get(sup, cid)
                pid = ev.get("pid", "")
                if cid == offender or STRATEGIES.get(sup) is Strategy.ONE_FOR_ONE:
                    self.emit("restart", f"{sup}: restarted {cid} {pid} ({strategy})")
                else:
                    self.emit(
                        "restart",
                        f"{sup}: restarted {cid} {pid} too ({strategy}: it depends on {offender})",
                    )
            case "child_started":
                self._started.setdefault(sup, []).append(cid)
                return
            case "shutdown_error":
                if reason == "killed":
                    self.emit(
                        "crash",
                        f"{sup}: {cid} ignored shutdown for {self.config.worker_shutdown:g} s"
                        " -> killed (shutdown timeout enforced)",
                    )
                else:
                    self.emit("crash", f"{sup}: {cid} stopped with {reason} (shutdown_error)")
            case "reached_max_restart_intensity":
                self.emit(
                    "crash",
                    f"{sup}: restart intensity reached ({cid}): it exits, its parent decides",
                )
            case "supervisor_stopped":
                self.emit("note", f"{sup}: stopped its children, exited {reason}")
            case "fault_injected":
                self._fault(ev)
            case "task_requeued":
                self.emit(
                    "requeue",
                    f"dispatcher: task {ev['task']} re-queued ({ev['worker']} DOWN:"
                    f" {reason.split('(')[0]})",
                )
            case "assignment_forgotten":
                self.emit(
                    "requeue",
                    f"dispatcher: {ev['worker']} is DOWN; task {ev['task']} forgotten"
                    " (broken variant: no re-queue)",
                )
            case "lease_expired":
                self.emit(
                    "lease",
                    f"dispatcher: {ev['worker']} silent past its {ev['lease']:g} s lease:"
                    f" task {ev['task']} re-queued, {ev['worker']} to be replaced",
                )
            case "worker_replaced":
                self.emit("restart", f"workers: {ev['worker']} started again {ev['pid']}")
            case "worker_replace_skipped":
                self.emit("note", f"replacing {ev['worker']} skipped: {reason}")
            case "dispatcher_started":
                self.emit(
                    "ledger",
                    f"dispatcher (new): {ev['pending']} pending task(s) read from the ledger",
                )
            case "duplicate_rejected":
                self.emit(
                    "ledger",
                    f"ledger: task {ev['task']} already recorded (by {ev['first']});"
                    f" duplicate from {ev['worker']} rejected",
                )
            case "process_crashed" if ev.get("name") not in self._supervised():
                self.emit("crash", f"process {ev.get('pid')} crashed: {reason}")
            case _ if method in ("warning", "error", "critical") and event != "process_crashed":
                extra = " ".join(f"{k}={v}" for k, v in ev.items() if k not in ("event", "node"))
                self.emit("note", f"{event} {extra}")

    def _supervised(self) -> set[str]:
        names = {"ledger", "dispatcher", "pipeline", "workers", "root"}
        return names | {f"w{i}" for i in range(1, self.config.workers + 1)}

    def _count(self, event: str, sup: str, cid: str, reason: str) -> None:
        if event == "child_restarted":
            self.restarts[sup] += 1
        elif event == "worker_replaced":
            self.replaced += 1
        elif event == "child_terminated" and sup == "workers":
            if reason.startswith("ModelError"):
                self.observed["crash"] += 1
            elif reason.startswith("RateLimited"):
                self.observed["rate_limit"] += 1
            elif reason == "killed":
                self.observed["kill"] += 1
        elif event == "child_terminated" and sup == "pipeline" and cid == "dispatcher":
            self.observed["dispatcher"] += 1
        elif event == "shutdown_error" and sup == "workers":
            # A worker deaf to Shutdown() is killed; one that crashed by itself while its
            # supervisor was stopping it is reported here rather than as child_terminated.
            if reason == "killed":
                self.observed["hang"] += 1
            elif reason.startswith("ModelError"):
                self.observed["crash"] += 1
            elif reason.startswith("RateLimited"):
                self.observed["rate_limit"] += 1

    def _fault(self, ev: dict[str, Any]) -> None:
        fault = ev.get("fault")
        if fault == "kill":
            self.emit("chaos", f"chaos: Kill() -> {ev['worker']} (running task {ev['task']})")
        elif fault == "hang":
            self.emit(
                "chaos",
                f"{ev['worker']}: model call hangs on task {ev['task']} (trapping exits)",
            )
        elif fault == "rate_limit":
            self.emit("chaos", f"chaos: {ev['model']} starts answering 429 Too Many Requests")
        elif fault == "dispatcher":
            self.emit("chaos", "chaos: sends the dispatcher a malformed message")


@contextlib.contextmanager
def _route_logs(sink: Callable[[str, dict[str, Any]], None]) -> Iterator[None]:
    """Route every structlog event of INFO and above to *sink*; restore the config after.

    Must be entered before the node is made: loggers bound earlier keep their
    processors.
    """
    old = structlog.get_config()

    def processor(_logger: object, method: str, event: Any) -> Any:
        sink(method, dict(event))
        raise structlog.DropEvent

    structlog.configure(
        processors=[processor],
        wrapper_class=structlog.make_filtering_bound_logger(logging.INFO),
        cache_logger_on_first_use=False,
    )
    try:
        yield
    finally:
        structlog.configure(**old)


# -- the run -----------------------------------------------------------------------------


async def _wait_for_work(config: DemoConfig, timeline: _Timeline) -> str | None:
    """Wait until the ledger has every task; return why not (a problem) otherwise."""
    start = last_change = anyio.current_time()
    last_done = -1
    while True:
        await anyio.sleep(0.02)
        now = anyio.current_time()
        try:
            done: int = await runtime.call("ledger", _Progress(), timeout=5.0)
        except (ServerExited, runtime.CallTimeout) as e:
            return f"the ledger is unreachable ({e})"
        if done >= config.tasks:
            return None
        if done != last_done:
            last_done, last_change = done, now
        elif now - last_change > config.stall_timeout:
            return f"no task completed for {config.stall_timeout:g} s: work is stuck or lost"
        if now - start > config.deadline:
            return f"not finished within {config.deadline:g} s"


async def _settle_tree(timeout: float = 3.0) -> tuple[list[ChildRow], list[SupCounts], bool]:
    """Wait for pending restarts to finish; return the tree and whether all children run."""
    rows: list[ChildRow] = []
    counts: list[SupCounts] = []
    with anyio.move_on_after(timeout):
        while True:
            rows, counts = [], []
            try:
                for sup in ("root", "pipeline", "workers"):
                    for c in await supervisors.which_children(sup, timeout=2.0):
                        pid = None if c.pid is None else str(c.pid)
                        rows.append(ChildRow(sup, c.id, pid, c.type.value, c.restarting))
                    n = await supervisors.count_children(sup, timeout=2.0)
                    counts.append(SupCounts(sup, n.specs, n.active, n.supervisors, n.workers))
            except (ServerExited, runtime.CallTimeout):
                await anyio.sleep(0.02)
                continue
            if all(r.pid is not None for r in rows):
                return rows, counts, True
            await anyio.sleep(0.02)
    return rows, counts, False


async def run_demo(config: DemoConfig, printer: Printer | None = None) -> DemoResult:
    """Run one demo: build the tree, submit the tasks, inject the faults, verify.

    Prints the introduction and the timeline to *printer* as it runs (nothing when
    ``None``); the caller prints the summary. Runs on the current trio (or asyncio)
    event loop, on its clock: under ``MockClock(autojump_threshold=0)`` it takes no
    real time.
    """
    out: Printer = printer if printer is not None else _NullPrinter()
    plan = config.faults or FaultPlan.from_seed(config.seed, config.tasks, config.workers)
    world = World(config, plan)
    store = LedgerStore()
    tasks = world.tasks()
    timeline = _Timeline(out, config)
    out.header(header_lines(config, plan, world))
    problems: list[str] = []
    with _route_logs(timeline.handle):
        async with runtime.Node(NODE_NAME, creation=1):
            timeline.t0 = anyio.current_time()
            await supervisors.start_supervisor(
                build_tree(config, world, store),
                ROOT_FLAGS,
                name="root",
                rng=random.Random(f"jitter/{config.seed}/root"),
            )
            runtime.spawn(_chaos, plan, world, name="chaos")
            timeline.live = True
            timeline.emit(
                "start",
                f"tree up: root, ledger, pipeline, dispatcher, workers, {config.workers} worker(s)",
            )
            await runtime.call("ledger", _Submit(tuple(tasks)))
            runtime.cast("dispatcher", _Enqueue(tuple(tasks)))
            timeline.emit("start", f"{len(tasks)} tasks submitted to the ledger")
            problem = await _wait_for_work(config, timeline)
            elapsed = timeline.now()
            if problem is not None:
                problems.append(problem)
                timeline.emit("crash", f"stopped waiting: {problem}")
            else:
                timeline.emit("start", "all tasks recorded; checking the tree and the ledger")
            rows, counts, healthy = await _settle_tree()
            timeline.live = False
            audit: Audit = Audit(tuple(store.submitted), tuple(store.completions), 0)
            try:
                audit = await runtime.call("ledger", _AuditRequest())
            except ServerExited:
                problems.append("the ledger is gone; audited its store directly")
            runtime.send("chaos", _STOP)
            with contextlib.suppress(ServerExited):
                await supervisors.stop("root")
    out.close()
    stalled = problem is not None
    return _verify(
        config, plan, world, timeline, audit, rows, counts, healthy, problems, elapsed, stalled
    )


def _verify(
    config: DemoConfig,
    plan: FaultPlan,
    world: World,
    timeline: _Timeline,
    audit: Audit,
    rows: list[ChildRow],
    counts: list[SupCounts],
    healthy: bool,
    problems: list[str],
    elapsed: float,
    stalled: bool,
) -> DemoResult:
    """Check the ledger's records against the submitted tasks and expected results."""
    by_task = collections.Counter(c.task for c in audit.completions)
    expected = {t.id: world.answer(t) for t in world.tasks()}
    submitted = set(audit.submitted)
    completed = {t for t, n in by_task.items() if n == 1 and t in submitted}
    lost = tuple(sorted(submitted - set(by_task)))
    doubled = sorted(t for t, n in by_task.items() if n > 1)
    wrong = tuple(sorted(c.task for c in audit.completions if expected.get(c.task) != c.result))
    if len(submitted) != config.tasks:
        problems.append(f"the ledger accepted {len(submitted)} of {config.tasks} tasks")
    if lost:
        problems.append(f"{len(lost)} task(s) lost: {', '.join(map(str, lost[:10]))}")
    if doubled:
        problems.append(f"task(s) recorded more than once: {doubled[:10]}")
    if wrong:
        problems.append(f"wrong result(s) recorded for task(s) {list(wrong[:10])}")
    if not healthy:
        problems.append("the tree did not end with every child running")
    if timeline.errors:
        problems.append(f"{len(timeline.errors)} log event(s) could not be printed")
    return DemoResult(
        seed=config.seed,
        tasks=config.tasks,
        workers=config.workers,
        submitted=len(submitted),
        completed=len(completed),
        records=len(audit.completions),
        duplicates_rejected=audit.duplicates,
        lost=lost,
        wrong_results=wrong,
        model_calls=world.model_calls,
        restarts=dict(timeline.restarts),
        replaced=timeline.replaced,
        faults_planned=plan.planned(),
        faults_injected={k: world.injected[k] for k in FAULT_KINDS},
        faults_observed={k: timeline.observed[k] for k in FAULT_KINDS},
        tree=tuple(rows),
        counts=tuple(counts),
        elapsed=round(elapsed, 4),
        stalled=stalled,
        problems=tuple(problems),
        timeline=tuple(timeline.entries),
    )


# -- the command ---------------------------------------------------------------------------


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def main(argv: list[str]) -> int:
    """``regency demo [supervision] ...``: which demo to run.

    ``regency demo supervision [...]`` (or ``--supervision``) runs this module's
    one-process supervision demo (:func:`supervision_main`); anything else runs the
    failover demo, :func:`agents.failover_demo.main`: a 3-node orchestrator group as OS
    processes with its leader killed mid-run. Returns the demo's exit status.
    """
    if argv[:1] == ["supervision"]:
        return supervision_main(argv[1:])
    if "--supervision" in argv:
        return supervision_main([a for a in argv if a != "--supervision"])
    from .failover_demo import main as failover_main

    return failover_main(argv)


def supervision_main(argv: list[str]) -> int:
    """``regency demo supervision [--seed N] [--tasks N] [--workers N] [--plain] [--json PATH]``.

    Returns 0 when every task completed exactly once and nothing was lost, 1 otherwise
    (2 for bad arguments, from argparse).
    """
    parser = argparse.ArgumentParser(
        prog="regency demo supervision",
        description="A supervision tree of agent workers healing injected crashes,"
        " verified: every task completed exactly once, none lost.",
    )
    parser.add_argument("--seed", type=int, default=1, help="fault plan seed (default 1)")
    parser.add_argument("--tasks", type=_positive, default=40, help="tasks (default 40)")
    parser.add_argument("--workers", type=_positive, default=4, help="workers (default 4)")
    parser.add_argument("--plain", action="store_true", help="plain lines, no color or bar")
    parser.add_argument("--json", metavar="PATH", help="write a machine-readable summary")
    args = parser.parse_args(argv)
    if args.workers > 64:
        parser.error("--workers must be at most 64")
    config = DemoConfig(seed=args.seed, tasks=args.tasks, workers=args.workers)
    printer: Printer = choose_printer(args.plain, PlainPrinter, RichPrinter)
    import trio

    result = trio.run(functools.partial(run_demo, config, printer))
    printer.summary(result)
    if args.json:
        write_json(args.json, result.to_json())
    return result.exit_code
