"""Workers of an orchestrator group: run assigned tasks on their own nodes, survive failovers.

A worker is one process (:func:`run_worker`, usually under a supervisor: see
:func:`worker_child_spec` and :func:`start_worker`) on any node that can reach the group
members. It has a name, unique in the group: the ledger records assignments and results
under it. Behaviour, message by message:

* **Announcing.** At start and every ``hello_interval`` seconds it casts
  :class:`WorkerHello` ``(worker, pid, capacity, running)`` to the ledger service of
  every member, so whichever member leads (now or next) knows it and can monitor it.
* **Assignments.** It accepts :class:`Assignment` ``(task_id, payload, term,
  lease_until, orchestrator)`` only if ``term`` is at least the highest term it has seen
  (the fencing token); an older one is refused: it sends :class:`AssignmentRefused`
  ``(task_id, worker, term, seen_term)`` back to ``orchestrator`` and logs
  ``assignment_refused``; nothing runs. An accepted assignment raises the highest term
  seen. For a task it is already running, it only adopts the new term (a new leader
  renewing the assignment; the work is not restarted); for a task whose result it still
  holds, it delivers it again; otherwise it starts ``await handler(payload)`` in a task
  of its own. It accepts assignments beyond ``capacity`` (the orchestrator decides).
* **Heartbeats.** While a task runs, every ``progress_interval`` seconds it appends
  ``Progress(task_id, worker, term, "running", at)`` through the group (best effort),
  which extends the lease. If the ledger answers that the task is finished (completed
  by someone else, or cancelled) it cancels the handler and drops the task.
* **Results.** When the handler returns, the result is buffered as
  ``Complete(task_id, worker, result, at, term=assignment term)``; when it raises, as a
  retryable ``Fail(task_id, worker, term, error)``. A delivery task appends buffered
  results through any member (:class:`~supervisors.client.GroupClient`: forwarded to
  the leader, retried across failovers), oldest first. While no leader is reachable the
  handlers keep running and results stay buffered (``result_buffered``, once per
  result); each is delivered to whichever leader comes next (``result_delivered`` with
  the ledger's answer). Delivery is idempotent by task id: the first completion wins,
  a later one is a ``Duplicate``. A worker that restarts loses its buffer (its tasks'
  leases then expire and they are reassigned).

Log events (logger ``"regency"``, with ``node`` and ``worker`` bound): ``worker_started``,
``assignment_accepted`` (``task_id``, ``term``), ``assignment_refused`` (``task_id``,
``term``, ``seen_term``), ``task_failed_locally`` (the handler raised), ``result_buffered``,
``result_delivered`` (``result``), ``task_abandoned`` (finished elsewhere).
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Final, final

import anyio
import anyio.abc
import attrs
import structlog

from runtime import wire
from runtime.api import receive, self_pid
from runtime.node import Node, current_node
from runtime.pid import Name, Pid

from .client import LEDGER_SERVICE, GroupClient, GroupUnavailable
from .ledger import Complete, Fail, Progress, Refused, TaskFinished, describe
from .spec import ChildSpec, Restart, SupFlags
from .supervisor import start_supervisor, worker_spec

__all__ = [
    "Assignment",
    "AssignmentRefused",
    "Handler",
    "WorkerConfig",
    "WorkerHello",
    "run_worker",
    "start_worker",
    "worker_child_spec",
]

Handler = Callable[[Any], Awaitable[Any]]
"""A worker's task function: ``await handler(payload) -> result`` (plain msgpack data)."""

#: Results of delivered completions kept, to answer a repeated assignment.
_DELIVERED_KEPT: Final = 1024


@final
@attrs.frozen
class Assignment:
    """Orchestrator -> worker: run ``task_id`` under ``term`` until ``lease_until``."""

    task_id: str
    payload: Any
    term: int
    lease_until: float
    orchestrator: Pid


@final
@attrs.frozen
class AssignmentRefused:
    """Worker -> orchestrator: ``term`` is older than ``seen_term``; nothing runs."""

    task_id: str
    worker: str
    term: int
    seen_term: int


@final
@attrs.frozen
class WorkerHello:
    """Worker -> every member's ledger service (cast): here I am, with these tasks."""

    worker: str
    pid: Pid
    capacity: int
    running: tuple[str, ...] = ()


for _cls in (Assignment, AssignmentRefused, WorkerHello):
    wire.DEFAULT_REGISTRY.register(_cls, f"regency.group.{_cls.__name__}")


@final
@attrs.frozen
class WorkerConfig:
    """A worker's timings (seconds) and clock."""

    hello_interval: float = 1.0  #: between WorkerHello casts to every member
    progress_interval: float = 1.0  #: between Progress heartbeats; well below the lease
    retry_interval: float = 0.2  #: first pause between delivery rounds (doubles to 2 s)
    request_timeout: float = 3.0  #: one delivery attempt, retries included
    clock: Callable[[], float] = time.time  #: the ledger's clock (``at`` of commands)


@final
class _Running:
    __slots__ = ("scope", "term")

    def __init__(self, term: int) -> None:
        self.term = term
        self.scope = anyio.CancelScope()


@final
class _Worker:
    def __init__(
        self,
        name: str,
        members: Sequence[str],
        handler: Handler,
        capacity: int,
        config: WorkerConfig,
    ) -> None:
        self.name = name
        self.members = tuple(members)
        self.handler = handler
        self.capacity = capacity
        self.config = config
        self.node: Node = current_node()
        self.pid = self_pid()
        self.client = GroupClient(
            self.node,
            members,
            timeout=config.request_timeout,
            call_timeout=config.request_timeout,
            clock=config.clock,
        )
        self.highest_term = 0
        self.running: dict[str, _Running] = {}
        self.buffer: OrderedDict[str, Complete | Fail] = OrderedDict()
        self.buffered_logged: set[str] = set()
        self.delivered: OrderedDict[str, Complete] = OrderedDict()
        self.wake = anyio.Event()
        self.log = structlog.get_logger("regency", node=self.node.name, worker=name)

    def hello(self) -> None:
        msg = WorkerHello(self.name, self.pid, self.capacity, tuple(self.running))
        for member in self.members:
            self.node.cast(Name(LEDGER_SERVICE, member), msg)

    async def hello_loop(self) -> None:
        while True:
            self.hello()
            await anyio.sleep(self.config.hello_interval)

    def buffer_result(self, task_id: str, outcome: Complete | Fail) -> None:
        self.buffer[task_id] = outcome
        self.wake.set()

    async def deliver_loop(self) -> None:
        pause = self.config.retry_interval
        while True:
            if not self.buffer:
                self.wake = anyio.Event()
                await self.wake.wait()
            task_id, outcome = next(iter(self.buffer.items()))
            try:
                result = await self.client.append(outcome, timeout=self.config.request_timeout)
            except GroupUnavailable:
                for tid in self.buffer:
                    if tid not in self.buffered_logged:
                        self.buffered_logged.add(tid)
                        self.log.info("result_buffered", task_id=tid, op=self.buffer[tid].op)
                await anyio.sleep(pause)
                pause = min(pause * 2, 2.0)
                continue
            pause = self.config.retry_interval
            self.buffer.pop(task_id, None)
            self.buffered_logged.discard(task_id)
            if isinstance(outcome, Complete):
                self.delivered[task_id] = outcome
                while len(self.delivered) > _DELIVERED_KEPT:
                    self.delivered.popitem(last=False)
            self.log.info("result_delivered", task_id=task_id, result=describe(result))

    async def heartbeat(self, task_id: str, run: _Running) -> None:
        while True:
            await anyio.sleep(self.config.progress_interval)
            command = Progress(
                task_id=task_id,
                worker=self.name,
                term=run.term,
                note="running",
                at=float(self.config.clock()),
            )
            try:
                result = await self.client.append(command, timeout=self.config.progress_interval)
            except GroupUnavailable:
                continue
            if isinstance(result, Refused) and isinstance(result.reason, TaskFinished):
                self.log.info("task_abandoned", task_id=task_id, state=result.reason.state.value)
                run.scope.cancel()
                return

    async def run_task(self, assignment: Assignment, run: _Running) -> None:
        task_id = assignment.task_id
        outcome: Complete | Fail | None = None
        with run.scope:
            async with anyio.create_task_group() as tg:
                tg.start_soon(self.heartbeat, task_id, run)
                try:
                    value = await self.handler(assignment.payload)
                except Exception as exc:
                    self.log.warning("task_failed_locally", task_id=task_id, error=repr(exc))
                    outcome = Fail(
                        task_id=task_id,
                        worker=self.name,
                        term=run.term,
                        error=f"{type(exc).__name__}: {exc}"[:500],
                        retryable=True,
                    )
                else:
                    outcome = Complete(
                        task_id=task_id,
                        worker=self.name,
                        result=value,
                        at=float(self.config.clock()),
                        term=run.term,
                    )
                tg.cancel_scope.cancel()
        if self.running.get(task_id) is run:
            del self.running[task_id]
        if outcome is not None:
            self.buffer_result(task_id, outcome)

    def on_assignment(self, a: Assignment, tg: anyio.abc.TaskGroup) -> None:
        if a.term < self.highest_term:
            self.log.info(
                "assignment_refused", task_id=a.task_id, term=a.term, seen_term=self.highest_term
            )
            self.node.send(
                a.orchestrator, AssignmentRefused(a.task_id, self.name, a.term, self.highest_term)
            )
            return
        self.highest_term = a.term
        current = self.running.get(a.task_id)
        if current is not None:
            current.term = max(current.term, a.term)
            return
        if a.task_id in self.buffer:
            return  # done; its delivery is under way
        done = self.delivered.get(a.task_id)
        if done is not None:
            self.buffer_result(a.task_id, done)
            return
        self.log.info("assignment_accepted", task_id=a.task_id, term=a.term)
        run = _Running(a.term)
        self.running[a.task_id] = run
        tg.start_soon(self.run_task, a, run)

    async def main(self) -> None:
        self.log.info("worker_started", capacity=self.capacity, members=list(self.members))
        async with anyio.create_task_group() as tg:
            tg.start_soon(self.hello_loop)
            tg.start_soon(self.deliver_loop)
            while True:
                msg = await receive()
                if type(msg) is Assignment:
                    self.on_assignment(msg, tg)
                else:
                    self.log.warning("unexpected_message", msg=repr(msg)[:200])


async def run_worker(
    name: str,
    members: Sequence[str],
    handler: Handler,
    capacity: int = 1,
    config: WorkerConfig | None = None,
) -> None:
    """The body of a worker process; see the module docstring. Runs until stopped.

    Args:
        name: the worker's id in the ledger, unique in the group.
        members: the group's member node names.
        handler: ``await handler(payload) -> result`` for each task.
        capacity: how many tasks it runs at once (what it announces).
        config: timings and clock.
    """
    if capacity < 1:
        raise ValueError(f"capacity must be >= 1, got {capacity}")
    await _Worker(name, members, handler, capacity, config or WorkerConfig()).main()


def worker_child_spec(
    name: str,
    members: Sequence[str],
    handler: Handler,
    *,
    capacity: int = 1,
    config: WorkerConfig | None = None,
    id: str | None = None,
    restart: Restart = Restart.PERMANENT,
) -> ChildSpec:
    """A child spec running :func:`run_worker` under the caller's own supervisor."""
    return worker_spec(
        id or f"worker:{name}",
        run_worker,
        name,
        tuple(members),
        handler,
        capacity,
        config,
        restart=restart,
        shutdown=1.0,
    )


async def start_worker(
    node: Node,
    members: Sequence[str],
    handler: Handler,
    *,
    name: str | None = None,
    capacity: int = 1,
    config: WorkerConfig | None = None,
    flags: SupFlags | None = None,
) -> Pid:
    """Start a worker under a supervisor of its own on ``node``; return the supervisor's pid.

    The supervisor is registered as ``"regency_worker_sup:" + name`` (default name
    ``"worker@" + node.name``) and restarts the worker (default flags: 5 restarts in
    10 s). Stop it with ``supervisors.stop(pid)``.

    Raises:
        StartFailed: the worker could not start.
        AlreadyRegistered: a worker of this name runs on this node already.
    """
    wname = name if name is not None else f"worker@{node.name}"
    spec = worker_child_spec(wname, members, handler, capacity=capacity, config=config)
    return await start_supervisor(
        [spec],
        flags if flags is not None else SupFlags(intensity=5, period=10.0),
        name=f"regency_worker_sup:{wname}",
        node=node,
    )
