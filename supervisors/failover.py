"""Orchestrator failover: the orchestrator singleton on the group's leader, fenced by term.

An *orchestrator group* is N nodes (3 or 5) that each run :func:`start_group_member`.
Each member runs, under a local supervisor registered as :data:`GROUP_SUPERVISOR`
(``rest_for_one``, 5 restarts in 10 s), in this order:

1. ``coordinator`` -- the consensus member (:class:`~supervisors.raft_coordinator.
   RaftCoordinator` by default; any :class:`~supervisors.coordination.Coordinator`; one
   with an async ``serve()`` gets it run as this child);
2. ``ledger`` -- the ledger service, a GenServer registered as
   :data:`~supervisors.client.LEDGER_SERVICE` on every member (protocol in
   :mod:`supervisors.client`): appends client and worker commands when this node leads,
   forwards them once to the leader otherwise (or answers ``Redirect``), serves
   linearizable task reads and status, and keeps the worker registry from the workers'
   ``WorkerHello`` casts (a worker not heard from for ``worker_ttl`` is forgotten).
   Each request is served in a process of its own, so a slow commit blocks nobody;
3. ``orchestrators`` -- a supervisor (``one_for_one``, ``orchestrator_intensity``
   restarts in ``orchestrator_period``) registered as :data:`ORCHESTRATOR_SUPERVISOR`
   holding at most one child, ``orchestrator``;
4. ``singleton`` -- the singleton manager process.

The singleton manager, in a loop: ``term = await coordinator.campaign()`` (this node
leads and has applied everything committed before its term); append ``NewTerm(term,
node)`` (the first orchestrator command of the term; if it is refused, or leadership is
lost first, back to campaigning); start the orchestrator -- the user's GenServer class,
``init(ctx)`` with an :class:`OrchestratorContext` for ``term`` -- as the child
``orchestrator`` (permanent: restarted on a crash, within the supervisor's intensity);
then wait until this node no longer leads in ``term`` and **at once** terminate the
child (shutdown ``orchestrator_shutdown``: seconds or ``BRUTAL_KILL``) and delete its
spec, before anything else; log ``orchestrator_started`` / ``orchestrator_stopped``.
When the manager starts it first removes any orchestrator left from a previous
incarnation. A node therefore runs an orchestrator only while it leads the term the
orchestrator was started for, and even in the moment between losing leadership and
the termination, the context refuses to act (see below).

Fencing. Every command the orchestrator issues through ``ctx.append`` is stamped with
its term (the ``term`` field of the fenced ledger commands is replaced by ``ctx.term``);
``ctx.append`` and ``ctx.dispatch`` raise :class:`Deposed` as soon as the coordinator no
longer shows this node leading ``ctx.term``; the ledger refuses a command of a term
older than its fencing term (``Refused(StaleTerm)``), and workers refuse assignments of
a term older than the highest they have seen (:mod:`supervisors.workers`). A deposed
leader that keeps running (paused, partitioned) cannot get a command applied: the
coordinator only commits a term's entries with a quorum of that term.

The progress watchdog (in the manager, while it leads). Every ``watchdog_interval`` it
looks at the local ledger: there is *work* if a task is assigned, or a task is pending
while some worker is registered. If there is work and the ledger's
``last_progress_at`` (moved by Submit, Assign, Progress and Complete) has not changed for
``stall_deadline`` seconds, the orchestrator is stalled: log ``orchestrator_stalled``
and restart the orchestrator child under its supervisor. The ``max_stalls``-th stall
within ``stall_window`` seconds instead hands leadership to another member
(``coordinator.resign()``, logged ``leadership_resigned``); the orchestrator then stops
because this node no longer leads.

The default orchestrator, :class:`Dispatcher`, every ``dispatch_interval``: sweeps
expired leases (``Expire``), monitors every registered worker (a ``Down`` -- crash,
exit or ``NoConnection`` -- appends ``WorkerDown``, so the dead worker's tasks are
reassigned), on its first round renews the assignments of the previous term held by
live workers (``Assign`` to the same worker, no new attempt, and the assignment sent
again with the new term, which the worker adopts without restarting the work), and
assigns pending tasks to workers with free capacity (``Assign`` with ``lease``, then an
:class:`~supervisors.workers.Assignment`). Subclass it or supply any GenServer.

Log events (logger ``"regency"``, ``node`` bound, ``term`` where one applies):
``orchestrator_started``, ``orchestrator_stopped``, ``orchestrator_start_failed``,
``new_term_refused``, ``orchestrator_stalled``, ``leadership_resigned``,
``resign_failed``, ``worker_down``, ``assignment_refused_by_worker``.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Final, TypeVar, final

import anyio
import attrs
import structlog

import runtime
from runtime.errors import CallTimeout, ServerExited
from runtime.genserver import NOREPLY, GenServer
from runtime.messages import Down, From
from runtime.node import Node
from runtime.pid import Name, Pid, Ref
from runtime.raft.driver import DriverStorage

from .client import (
    LEDGER_SERVICE,
    Appended,
    GetStatus,
    GetTask,
    GroupStatus,
    LedgerAppend,
    Redirect,
    TaskAnswer,
    Uncertain,
)
from .coordination import (
    Coordinator,
    CoordinatorStopped,
    NotLeader,
    OutcomeUnknown,
    Unavailable,
    fenced_term,
)
from .errors import NotFound
from .ledger import (
    Accepted,
    Assign,
    Command,
    Expire,
    LedgerConfig,
    NewTerm,
    Refused,
    Result,
    Task,
    TaskLedger,
    WorkerDown,
    describe,
)
from .spec import BRUTAL_KILL, Restart, ShutdownTimeout, Strategy, SupFlags
from .supervisor import (
    delete_child,
    restart_child,
    server_spec,
    start_child,
    start_supervisor,
    stop,
    supervisor_spec,
    terminate_child,
    worker_spec,
)
from .workers import Assignment, AssignmentRefused, WorkerHello

__all__ = [
    "GROUP_SUPERVISOR",
    "ORCHESTRATOR_ID",
    "ORCHESTRATOR_NAME",
    "ORCHESTRATOR_SUPERVISOR",
    "Deposed",
    "Dispatcher",
    "GroupConfig",
    "GroupMember",
    "OrchestratorContext",
    "WorkerInfo",
    "WorkerRegistry",
    "start_group_member",
]

T = TypeVar("T")

#: The registered name of a member's group supervisor.
GROUP_SUPERVISOR: Final = "regency_group"
#: The registered name of the supervisor that holds the orchestrator child.
ORCHESTRATOR_SUPERVISOR: Final = "regency_orchestrators"
#: The child id of the orchestrator under :data:`ORCHESTRATOR_SUPERVISOR`.
ORCHESTRATOR_ID: Final = "orchestrator"
#: The registered name of the running orchestrator on the leader.
ORCHESTRATOR_NAME: Final = "regency_orchestrator"


class Deposed(NotLeader):
    """The orchestrator's term is over: this node no longer leads it. Nothing was done."""

    def __init__(self, term: int, hint: str | None) -> None:
        super().__init__(hint)
        self.args = (f"term {term} is over (leader hint: {hint})",)
        self.term = term


@final
@attrs.frozen
class GroupConfig:
    """Policy of an orchestrator group member (seconds unless said otherwise)."""

    lease: float = 10.0  #: how long an assignment lasts without a Progress heartbeat
    dispatch_interval: float = 0.2  #: between two rounds of the Dispatcher
    stall_deadline: float = 30.0  #: no ledger progress this long with work: a stall
    max_stalls: int = 3  #: this many stalls within stall_window: resign leadership
    stall_window: float = 300.0
    watchdog_interval: float = 1.0
    orchestrator_shutdown: ShutdownTimeout = 0.5  #: or BRUTAL_KILL
    orchestrator_intensity: int = 3  #: restarts of the orchestrator within the period
    orchestrator_period: float = 10.0
    worker_ttl: float = 5.0  #: forget a worker not heard from this long
    request_timeout: float = 5.0  #: a forwarded request, a read
    ledger: LedgerConfig = attrs.Factory(LedgerConfig)
    clock: Callable[[], float] = time.time  #: the ledger's clock: ``at``, ``now`` of commands


@final
@attrs.frozen
class WorkerInfo:
    """A registered worker: its ledger name, pid, capacity, and when last heard (local)."""

    name: str
    pid: Pid
    capacity: int
    running: tuple[str, ...]
    seen_at: float


@final
class WorkerRegistry:
    """The workers a member heard from (``WorkerHello``), newest pid per name."""

    def __init__(self, ttl: float) -> None:
        self.ttl = ttl
        self._workers: dict[str, WorkerInfo] = {}

    def hello(self, msg: WorkerHello) -> None:
        """Record a hello (now, by the local clock)."""
        self._workers[msg.worker] = WorkerInfo(
            msg.worker, msg.pid, msg.capacity, msg.running, anyio.current_time()
        )

    def live(self) -> list[WorkerInfo]:
        """Workers heard from within ``ttl``, by name."""
        horizon = anyio.current_time() - self.ttl
        return sorted(
            (w for w in self._workers.values() if w.seen_at >= horizon), key=lambda w: w.name
        )

    def forget(self, name: str, pid: Pid) -> None:
        """Drop ``name`` if it is still registered with ``pid``."""
        info = self._workers.get(name)
        if info is not None and info.pid == pid:
            del self._workers[name]


@final
class OrchestratorContext:
    """What an orchestrator of one term may do; handed to its ``init(ctx)``.

    Attributes:
        node: this member's name.
        term: the term (fencing token) the orchestrator runs for.
        config: the group's policy.
        coordinator: the member's coordinator (prefer the methods below).
        registry: the member's worker registry.
    """

    def __init__(
        self,
        node: str,
        term: int,
        config: GroupConfig,
        coordinator: Coordinator,
        registry: WorkerRegistry,
    ) -> None:
        self.node = node
        self.term = term
        self.config = config
        self.coordinator = coordinator
        self.registry = registry

    def current(self) -> bool:
        """True while this node leads ``term``."""
        view = self.coordinator.view()
        return view.is_leader and view.term == self.term

    def _check(self) -> None:
        if not self.current():
            raise Deposed(self.term, self.coordinator.view().leader)

    def stamp(self, command: Command) -> Command:
        """``command`` with its fencing term set to ``term`` (unfenced ones unchanged)."""
        if fenced_term(command) is None:
            return command
        return attrs.evolve(command, term=self.term)  # type: ignore[arg-type]

    async def append(self, command: Command, timeout: float | None = None) -> Result:
        """Append ``command`` stamped with ``term``; the ledger's result.

        Raises:
            Deposed: this node no longer leads ``term`` (nothing appended).
            NotLeader, OutcomeUnknown, CoordinatorStopped: from the coordinator.
        """
        self._check()
        return await self.coordinator.append(self.stamp(command), timeout)

    async def read(self, fn: Callable[[TaskLedger], T], timeout: float | None = None) -> T:
        """``fn(ledger)`` on a linearizable state (see ``Coordinator.read``)."""
        self._check()
        return await self.coordinator.read(fn, timeout)

    def peek(self, fn: Callable[[TaskLedger], T]) -> T:
        """``fn(ledger)`` on the local state (the leader's is current up to in-flight appends)."""
        return self.coordinator.peek(fn)

    def now(self) -> float:
        """The ledger's clock."""
        return float(self.config.clock())

    def workers(self) -> list[WorkerInfo]:
        """The live registered workers."""
        return self.registry.live()

    def dispatch(self, worker: Pid, task: Task, lease_until: float) -> None:
        """Send ``task`` to ``worker`` as an Assignment of ``term`` (call after ``Assign``).

        Raises:
            Deposed: this node no longer leads ``term`` (nothing sent).
        """
        self._check()
        runtime.send(
            worker,
            Assignment(task.task_id, task.payload, self.term, lease_until, runtime.self_pid()),
        )


# --------------------------------------------------------------------------- Dispatcher


@final
@attrs.frozen
class _Tick:
    pass


class Dispatcher(GenServer):
    """The default orchestrator: leases tasks to workers; see the module docstring.

    Override :meth:`round` to change the policy (call ``super().round()`` for the sweep
    and the assignments).
    """

    ctx: OrchestratorContext

    async def init(self, *args: Any) -> None:
        """``init(ctx)``: remember the context and schedule the first round at once."""
        (ctx,) = args
        self.ctx = ctx
        self.watched: dict[Pid, tuple[str, Ref]] = {}
        self.adopted = False
        self.log = structlog.get_logger("regency", node=ctx.node, term=ctx.term)
        runtime.send(runtime.self_pid(), _Tick())

    async def handle_info(self, msg: Any) -> None:
        """Rounds, worker ``Down`` messages and refusals."""
        if isinstance(msg, _Tick):
            try:
                await self.round()
            except (OutcomeUnknown, Unavailable, CoordinatorStopped) as exc:
                self.log.info("dispatch_round_failed", error=str(exc))
            runtime.send_after(self.ctx.config.dispatch_interval, runtime.self_pid(), _Tick())
        elif isinstance(msg, Down) and isinstance(msg.pid, Pid):  # workers are watched by pid
            watched = self.watched.pop(msg.pid, None)
            if watched is not None:
                name = watched[0]
                self.log.info("worker_down", worker=name, reason=str(msg.reason))
                self.ctx.registry.forget(name, msg.pid)
                if not any(n == name for n, _ in self.watched.values()):
                    await self.ctx.append(WorkerDown(worker=name, term=self.ctx.term))
        elif isinstance(msg, AssignmentRefused):
            self.log.warning(
                "assignment_refused_by_worker",
                worker=msg.worker,
                task_id=msg.task_id,
                seen_term=msg.seen_term,
            )
        else:
            await super().handle_info(msg)

    async def round(self) -> None:
        """One round: watch workers, sweep leases, adopt, assign."""
        ctx = self.ctx
        workers = {w.name: w for w in ctx.workers()}
        for w in workers.values():
            if w.pid not in self.watched:
                self.watched[w.pid] = (w.name, runtime.monitor(w.pid))
        now = ctx.now()
        if ctx.peek(
            lambda led: any(
                t.lease_until is not None and t.lease_until <= now for t in led.assigned()
            )
        ):
            await ctx.append(Expire(now=now, term=ctx.term))
        pending, assigned = await ctx.read(lambda led: (led.pending(), led.assigned()))
        lease = ctx.config.lease
        if not self.adopted:
            self.adopted = True
            for t in assigned:
                holder = workers.get(t.worker or "")
                if holder is not None and (t.term or 0) < ctx.term:
                    await self._assign(t, holder, now, now + lease)
        load = dict.fromkeys(workers, 0)
        for t in assigned:
            if t.worker in load:
                load[t.worker] += 1
        for t in pending:
            free = [w for w in workers.values() if load[w.name] < w.capacity]
            if not free:
                break
            w = min(free, key=lambda w: (load[w.name] / w.capacity, w.name))
            if await self._assign(t, w, now, now + lease):
                load[w.name] += 1

    async def _assign(self, task: Task, worker: WorkerInfo, now: float, until: float) -> bool:
        result = await self.ctx.append(
            Assign(
                task_id=task.task_id,
                worker=worker.name,
                term=self.ctx.term,
                at=now,
                lease_until=until,
            )
        )
        if isinstance(result, Accepted) and result.task is not None:
            self.ctx.dispatch(worker.pid, result.task, until)
            return True
        return False


# --------------------------------------------------------------------------- ledger service


class LedgerService(GenServer):
    """The ledger service of a member (registered :data:`~supervisors.client.LEDGER_SERVICE`)."""

    async def init(self, *args: Any) -> None:
        """``init(coordinator, registry, config)``."""
        self.coord: Coordinator
        self.registry: WorkerRegistry
        self.config: GroupConfig
        self.coord, self.registry, self.config = args
        self.node = runtime.node()

    async def handle_call(self, request: Any, from_: From) -> Any:
        """Append, GetTask (in a process of their own), GetStatus (at once)."""
        if isinstance(request, LedgerAppend):
            self.node.spawn(self._append, request, from_)
            return NOREPLY
        if isinstance(request, GetTask):
            self.node.spawn(self._get_task, request.task_id, from_)
            return NOREPLY
        if isinstance(request, GetStatus):
            view = self.coord.view()
            counts, fencing, named = self.coord.peek(
                lambda led: (led.counts(), led.fencing_term, led.leader)
            )
            return GroupStatus(
                self.coord.node, view.leader, view.term, view.is_leader, counts, fencing, named
            )
        return await super().handle_call(request, from_)

    async def handle_cast(self, msg: Any) -> None:
        """``WorkerHello``: record the worker."""
        if isinstance(msg, WorkerHello):
            self.registry.hello(msg)
        else:
            await super().handle_cast(msg)

    async def _append(self, request: LedgerAppend, from_: From) -> None:
        answer: object
        view = self.coord.view()
        if view.is_leader:
            try:
                answer = Appended(await self.coord.append(request.command))
            except NotLeader as exc:
                answer = Redirect(exc.hint)
            except (OutcomeUnknown, CoordinatorStopped) as exc:
                answer = Uncertain(str(exc))
        elif request.forwarded or view.leader is None or view.leader == self.coord.node:
            answer = Redirect(view.leader)
        else:
            try:
                answer = await self.node.call(
                    Name(LEDGER_SERVICE, view.leader),
                    LedgerAppend(request.command, forwarded=True),
                    timeout=self.config.request_timeout,
                )
            except (ServerExited, CallTimeout) as exc:
                answer = Uncertain(f"forward to {view.leader} failed: {exc}")
        self.node.reply(from_, answer)

    async def _get_task(self, task_id: str, from_: From) -> None:
        answer: object
        try:
            answer = TaskAnswer(
                await self.coord.read(lambda led: led.task(task_id), self.config.request_timeout)
            )
        except NotLeader as exc:
            answer = Redirect(exc.hint)
        except (Unavailable, CoordinatorStopped) as exc:
            answer = Uncertain(str(exc))
        self.node.reply(from_, answer)


# --------------------------------------------------------------------------- the manager


@final
class _Manager:
    def __init__(
        self,
        coord: Coordinator,
        orchestrator: type[GenServer],
        registry: WorkerRegistry,
        config: GroupConfig,
    ) -> None:
        self.coord = coord
        self.orchestrator = orchestrator
        self.registry = registry
        self.config = config
        self.log = structlog.get_logger("regency", node=coord.node)

    async def remove_orchestrator(self) -> None:
        try:
            await terminate_child(ORCHESTRATOR_SUPERVISOR, ORCHESTRATOR_ID)
            await delete_child(ORCHESTRATOR_SUPERVISOR, ORCHESTRATOR_ID)
        except NotFound:
            pass

    async def run(self) -> None:
        await self.remove_orchestrator()
        while True:
            term = await self.coord.campaign()

            def gone(v: Any, term: int = term) -> bool:
                return not (v.is_leader and v.term == term)

            try:
                result = await self.coord.append(NewTerm(term=term, leader=self.coord.node))
            except (NotLeader, OutcomeUnknown, CoordinatorStopped) as exc:
                self.log.info("new_term_failed", term=term, error=str(exc))
                await self.coord.wait_view(gone)
                continue
            if isinstance(result, Refused):
                self.log.error("new_term_refused", term=term, result=describe(result))
                await self.coord.wait_view(gone)
                continue
            await self.lead(term, gone)

    async def lead(self, term: int, gone: Callable[[Any], bool]) -> None:
        log = self.log.bind(term=term)
        ctx = OrchestratorContext(self.coord.node, term, self.config, self.coord, self.registry)
        spec = server_spec(
            ORCHESTRATOR_ID,
            self.orchestrator,
            ctx,
            name=ORCHESTRATOR_NAME,
            restart=Restart.PERMANENT,
            shutdown=self.config.orchestrator_shutdown,
        )
        try:
            pid = await start_child(ORCHESTRATOR_SUPERVISOR, spec)
        except Exception as exc:
            log.exception("orchestrator_start_failed", error=repr(exc))
            with anyio.move_on_after(self.config.watchdog_interval):
                await self.coord.wait_view(gone)
            await self.remove_orchestrator()
            return
        log.info("orchestrator_started", pid=str(pid))
        async with anyio.create_task_group() as tg:
            tg.start_soon(self.watchdog, term, tg.cancel_scope)
            await self.coord.wait_view(gone)
            tg.cancel_scope.cancel()
        await self.remove_orchestrator()
        log.info("orchestrator_stopped", reason="leadership_lost", view=str(self.coord.view()))

    def has_work(self) -> bool:
        assigned, pending = self.coord.peek(lambda led: (bool(led.assigned()), bool(led.pending())))
        return assigned or (pending and bool(self.registry.live()))

    async def watchdog(self, term: int, scope: anyio.CancelScope) -> None:
        cfg = self.config
        stalls: deque[float] = deque()
        seen = self.coord.peek(lambda led: led.last_progress_at)
        since = anyio.current_time()
        while True:
            await anyio.sleep(cfg.watchdog_interval)
            now = anyio.current_time()
            progress = self.coord.peek(lambda led: led.last_progress_at)
            if progress != seen or not self.has_work():
                seen, since = progress, now
                continue
            if now - since < cfg.stall_deadline:
                continue
            while stalls and stalls[0] <= now - cfg.stall_window:
                stalls.popleft()
            stalls.append(now)
            self.log.warning(
                "orchestrator_stalled", term=term, idle_for=now - since, stalls=len(stalls)
            )
            since = now
            if len(stalls) >= cfg.max_stalls:
                self.log.warning("leadership_resigned", term=term, stalls=len(stalls))
                try:
                    await self.coord.resign()
                except (NotLeader, TimeoutError, CoordinatorStopped, ValueError) as exc:
                    self.log.warning("resign_failed", term=term, error=str(exc))
                stalls.clear()
                continue
            try:
                await terminate_child(ORCHESTRATOR_SUPERVISOR, ORCHESTRATOR_ID)
                await restart_child(ORCHESTRATOR_SUPERVISOR, ORCHESTRATOR_ID)
            except Exception as exc:
                self.log.warning("orchestrator_restart_failed", term=term, error=repr(exc))


async def _run_manager(
    coord: Coordinator, orchestrator: type[GenServer], registry: WorkerRegistry, config: GroupConfig
) -> None:
    await _Manager(coord, orchestrator, registry, config).run()


async def _serve_coordinator(coord: Any) -> None:
    await coord.serve()


# --------------------------------------------------------------------------- membership


@final
@attrs.define
class GroupMember:
    """A running group member: its coordinator, supervisor and worker registry."""

    node: Node
    coordinator: Coordinator
    supervisor: Pid
    registry: WorkerRegistry
    config: GroupConfig

    def orchestrator(self) -> Pid | None:
        """The orchestrator's pid if it runs on this member now (registered as
        :data:`ORCHESTRATOR_NAME`), else None."""
        return self.node.whereis(ORCHESTRATOR_NAME)

    async def stop(self) -> None:
        """Stop the member's supervisor (and so every child). Idempotent."""
        try:
            await stop(self.supervisor)
        except ServerExited:
            pass


async def start_group_member(
    node: Node,
    members: Sequence[str],
    *,
    orchestrator: type[GenServer] = Dispatcher,
    config: GroupConfig | None = None,
    coordinator: Coordinator | None = None,
    storage: Callable[[], DriverStorage] | None = None,
    data_dir: Path | str | None = None,
    coordinator_options: dict[str, Any] | None = None,
) -> GroupMember:
    """Start this node's member of the orchestrator group; see the module docstring.

    Args:
        node: the member's node (entered, with distribution to the other members).
        members: every member's node name, this one included.
        orchestrator: the orchestrator's GenServer class; ``init(ctx)``.
        config: the group's policy (the same on every member).
        coordinator: the consensus member to use; default a ``RaftCoordinator`` on
            ``storage`` (or a ``DurableStorage`` in ``data_dir / node.name``).
        coordinator_options: extra keyword arguments for the default ``RaftCoordinator``.

    Raises:
        ValueError: no coordinator, storage or data_dir given.
        StartFailed: a child failed to start.
        AlreadyRegistered: this node already runs a group member.
    """
    cfg = config if config is not None else GroupConfig()
    if coordinator is None:
        from .raft_coordinator import RaftCoordinator

        if storage is None:
            if data_dir is None:
                raise ValueError("give a coordinator, a storage factory or a data_dir")
            from runtime.raft.durable import DurableStorage

            path = Path(data_dir) / node.name
            voters = tuple(members)

            def storage() -> DriverStorage:
                return DurableStorage.open(path, voters=voters)

        coordinator = RaftCoordinator(
            node, members, storage=storage, ledger_config=cfg.ledger, **(coordinator_options or {})
        )
    registry = WorkerRegistry(cfg.worker_ttl)
    children = []
    if callable(getattr(coordinator, "serve", None)):
        children.append(worker_spec("coordinator", _serve_coordinator, coordinator, shutdown=2.0))
    children += [
        server_spec("ledger", LedgerService, coordinator, registry, cfg, name=LEDGER_SERVICE),
        supervisor_spec(
            "orchestrators",
            [],
            flags=SupFlags(intensity=cfg.orchestrator_intensity, period=cfg.orchestrator_period),
            name=ORCHESTRATOR_SUPERVISOR,
        ),
        worker_spec(
            "singleton",
            _run_manager,
            coordinator,
            orchestrator,
            registry,
            cfg,
            name="regency_singleton",
            shutdown=BRUTAL_KILL,
        ),
    ]
    sup = await start_supervisor(
        children,
        SupFlags(strategy=Strategy.REST_FOR_ONE, intensity=5, period=10.0),
        name=GROUP_SUPERVISOR,
        node=node,
    )
    return GroupMember(node, coordinator, sup, registry, cfg)
