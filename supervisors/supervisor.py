"""Supervisor: a process that starts, watches, restarts and stops its children.

Principles (OTP's ``supervisor``). A supervisor is a process that traps exits. It is
given :class:`~supervisors.spec.SupFlags` and an ordered list of
:class:`~supervisors.spec.ChildSpec` (see :mod:`supervisors.spec` for every key and
default). It starts its children in list order, each by calling the spec's
``start(*args)`` inside the supervisor process. A start function spawns a process
linked to its caller and returns its pid (``runtime.spawn_link(fn)``,
``await runtime.start_server(Cls, link=True)``, another supervisor's ``start``); it may
be sync or async. It may also return ``None``, meaning *ignore*: nothing runs, and the
spec is kept (not running) unless the child is temporary. The supervisor links itself
to each pid a start returns (a no-op when the start already linked it).

When a child exits, the supervisor decides what to do with the pure
:func:`supervisors.strategy.decide` (restart type x exit reason, strategy, restart
intensity, auto shutdown, backoff) and carries out its plan in order: stop the listed
children (newest first), forget specs, then either shut itself down or start the listed
children (oldest first). A restart delayed by a backoff is scheduled with ``send_after``;
meanwhile the supervisor keeps answering calls, and the child counts as running for
later decisions but has no pid. A restart whose start fails is retried by a message to
itself, and each retry counts against the restart intensity, as OTP's ``try_again``.

Operations on another node. The operations of this module work on a supervisor of another
node, named by its pid or ``Name(name, node)``, with the same results and errors, except
two that would move a :class:`~supervisors.spec.ChildSpec`, which holds a function:
``start_child`` raises ``TypeError`` in the caller (nothing is sent), and
``get_childspec`` raises ``runtime.ReplyNotSendable``.

Ordering guarantees: children start in list order (``start_child`` appends to the end)
and stop in reverse; every operation is handled one at a time, in arrival order.

Shutdown protocol, for one child (OTP's ``shutdown/2``): monitor it; with
``BRUTAL_KILL`` send ``Kill()``, otherwise send ``Shutdown()`` and wait up to its
``shutdown`` seconds for the ``Down`` (forever with ``INFINITY``), then send ``Kill()``
and wait for the ``Down``; then unlink it and drop its pending ``Exit`` message. Any
end other than ``Shutdown()`` (``Killed()`` after ``BRUTAL_KILL``; also ``Normal()`` or
``Shutdown(detail)`` for a non-permanent child) is logged as ``shutdown_error``. The
supervisor watches a monitor, not the link, so a child that unlinked cannot hang it.

The supervisor ends:

* when its *parent* (the process it was started linked to) exits with any reason: it
  stops its children in reverse order and exits with the parent's reason. An ``Exit``
  from any other pid that is not a current child is ignored (logged ``exit_ignored``).
* when restarts exceed the intensity, or when auto shutdown fires: it stops the other
  children in reverse order and exits ``Shutdown()``;
* by :func:`stop`, with the reason given;
* ``Kill()`` ends it at once; its children then get the trappable ``Killed``.

Log events (structlog, logger ``"regency"``), bound with ``node``, ``supervisor`` (its
pid) and ``supervisor_name`` (its registered name, if any); each event about a child
carries ``child_id``, and the error reports also ``offender`` (OTP's key) and ``reason``:

* ``child_started`` (info) -- a child was started (``pid``).
* ``child_restarted`` (info) -- a child was started again after an exit.
* ``child_ignored`` (info) -- a child's start returned ``None`` (*ignore*).
* ``restart_delayed`` (info) -- restarts wait ``delay`` seconds (backoff).
* ``child_terminated`` (error) -- a child exited abnormally (or a permanent child exited).
* ``child_exited`` (info) -- a non-permanent child exited in an orderly way.
* ``reached_max_restart_intensity`` (error) -- the supervisor gives up.
* ``auto_shutdown`` (info) -- a significant child's exit stops the supervisor.
* ``start_error`` (error) -- a child's start failed.
* ``shutdown_error`` (error) -- a child stopped with an unexpected reason.
* ``exit_ignored`` (info) -- an ``Exit`` from a pid that is neither parent nor child.
* ``supervisor_stopped`` (info) -- the supervisor exits (``reason``).

Deviations from OTP: ``which_children`` lists children in start order (OTP: reverse);
a transient child that exits in an orderly way keeps its spec, as in OTP, although
:class:`~supervisors.strategy.Plan` lists it in ``forget`` (the shell keeps every
non-temporary spec it is told to forget, as OTP's ``del_child`` does).
"""

from __future__ import annotations

import inspect
import random
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from typing import Any, ClassVar, TypeAlias, final

import anyio

import runtime
from runtime.errors import ServerExited
from runtime.errors import StartFailed as _RuntimeStartFailed
from runtime.genserver import GenServer, Stop, start_server
from runtime.messages import Exit
from runtime.node import Node, current_node
from runtime.pid import Name, Pid
from runtime.reasons import NORMAL, ExitReason, Shutdown

from .common import ChildInfo as ChildInfo
from .common import Counts as Counts
from .common import (
    _call,
    _ChildBase,
    _CountChildren,
    _DeleteChild,
    _GetChildSpec,
    _invoke_start,
    _parent_if,
    _RestartChild,
    _RestartDue,
    _shutdown_child,
    _StartChild,
    _StartError,
    _StopSupervisor,
    _SupervisorBase,
    _TerminateChild,
    _TryAgain,
    _WhichChildren,
)
from .errors import (
    AlreadyPresent,
    AlreadyStarted,
    NotFound,
    NotSupported,
    Restarting,
    Running,
    StartFailed,
)
from .spec import (
    INFINITY,
    Backoff,
    ChildSpec,
    ChildType,
    Restart,
    ShutdownTimeout,
    SupFlags,
    check_child_specs,
)
from .strategy import ChildExited, ChildState, Plan, decide

__all__ = [
    "ChildInfo",
    "Counts",
    "SupRef",
    "Supervisor",
    "count_children",
    "delete_child",
    "get_childspec",
    "restart_child",
    "server_spec",
    "start_child",
    "start_supervisor",
    "stop",
    "supervisor_spec",
    "terminate_child",
    "which_children",
    "worker_spec",
]

SupRef: TypeAlias = Pid | str | Name
"""A supervisor: its pid, its locally registered name, or ``Name(name, node)``."""


# -- the supervisor process --------------------------------------------------------------


@final
class _Child(_ChildBase):
    """The supervisor's record of one child (mutable; private)."""

    __slots__ = ("_down", "_up")

    def __init__(self, spec: ChildSpec) -> None:
        super().__init__(spec, None)
        # What decide() is told of it, running or not: made once, not on every exit.
        self._up = ChildState.from_spec(spec, running=True)
        self._down = ChildState.from_spec(spec, running=False)

    @property
    def running(self) -> bool:
        return self.pid is not None or self.pending is not None

    def state(self) -> ChildState:
        """The child as :func:`~supervisors.strategy.decide` sees it now."""
        return self._up if self.pid is not None or self.pending is not None else self._down


InitResult: TypeAlias = tuple[SupFlags, Sequence[ChildSpec]] | None
InitFn: TypeAlias = Callable[[], "InitResult | Awaitable[InitResult]"]


@final
class _Boot:
    """What a starting supervisor tells the process that started it."""

    __slots__ = ("failure", "ignored")

    def __init__(self) -> None:
        self.failure: StartFailed | None = None
        self.ignored = False


@final
class _SupervisorServer(_SupervisorBase[str, _Child]):
    """The supervisor process (a GenServer that traps exits)."""

    def __init__(
        self, init_fn: InitFn, parent: Pid | None, rng: random.Random | None, boot: _Boot
    ) -> None:
        super().__init__(SupFlags(), parent, rng)
        self._init_fn = init_fn
        self._boot = boot

    # -- start -------------------------------------------------------------------------

    async def init(self) -> None:
        await super().init()
        result: Any = self._init_fn()
        if inspect.isawaitable(result):
            result = await result
        if result is None:
            self._boot.ignored = True
            self._stopped = True
            raise Stop(NORMAL)
        flags, specs = result
        if not isinstance(flags, SupFlags):
            raise TypeError(f"supervisor init returned flags {flags!r}, not SupFlags")
        specs = list(specs)
        check_child_specs(specs)
        self._flags = flags
        for spec in specs:
            child = _Child(spec)
            self._children[spec.id] = child
            try:
                await self._start(child, "child_started")
            except _StartError as e:
                self._boot.failure = StartFailed(spec.id, e.reason)
                del self._children[spec.id]
                await self._terminate_children()
                self._stopped = True
                raise Stop(Shutdown(f"failed_to_start_child:{spec.id}")) from None

    async def _start(self, child: _Child, event: str) -> Pid | None:
        """Start *child* now. Raises _StartError (logged ``start_error``)."""
        spec = child.spec
        pid = await _invoke_start(spec, self._log)
        child.pending = None
        child.pid = pid
        if pid is None:
            if spec.restart is Restart.TEMPORARY:
                self._forget(spec.id)
            self._log.info("child_ignored", child_id=spec.id)
        else:
            self._by_pid[pid] = spec.id
            if self._log.enabled("info"):
                self._log.info(event, child_id=spec.id, pid=str(pid))
        return pid

    # -- stop --------------------------------------------------------------------------

    async def _stop_child(self, child: _Child) -> None:
        """Stop one child by the shutdown protocol; cancel its pending restart."""
        child.pending = None
        pid = child.pid
        if pid is None:
            return
        reason = await _shutdown_child(pid, child.spec.shutdown)
        self._by_pid.pop(pid, None)
        child.pid = None
        self._report_shutdown(child.spec, reason)

    async def _terminate_children(self) -> None:
        """Stop every child, newest first; temporary children are forgotten."""
        for child in reversed(list(self._children.values())):
            await self._stop_child(child)
            if child.spec.restart is Restart.TEMPORARY:
                self._forget(child.spec.id)

    def _forget(self, id: str) -> None:
        child = self._children.pop(id, None)
        if child is not None and child.pid is not None:
            self._by_pid.pop(child.pid, None)
        self._history = self._history.forget(id)

    # -- exits -------------------------------------------------------------------------

    async def _on_exit(self, msg: Exit) -> None:
        id = self._by_pid.get(msg.pid)
        if id is None and msg.pid == self._parent:
            await self._shut_down(msg.reason)
        if id is None:
            self._log.info("exit_ignored", pid=str(msg.pid), reason=str(msg.reason))
            return
        child = self._children[id]
        states = self._states()
        del self._by_pid[msg.pid]
        child.pid = None
        plan = decide(
            self._flags,
            states,
            ChildExited(id, msg.reason),
            self._history,
            self._now(),
            self._rng_(),
        )
        await self._carry_out(plan, id, msg.reason)

    async def _try_again(self, msg: _TryAgain) -> None:
        child = self._children.get(msg.key)
        if child is None or child.pending != msg.token:
            return  # the restart was cancelled or superseded meanwhile
        # A failed restart is always retried (OTP's try_again), whatever the reason:
        # decide on it as if the child were permanent.
        states = [
            ChildState(s.id, Restart.PERMANENT, False, True, s.backoff) if s.id == msg.key else s
            for s in self._states()
        ]
        plan = decide(
            self._flags,
            states,
            ChildExited(msg.key, msg.reason),
            self._history,
            self._now(),
            self._rng_(),
        )
        await self._carry_out(plan, msg.key, msg.reason)

    def _states(self) -> list[ChildState]:
        return [c.state() for c in self._children.values()]

    async def _carry_out(self, plan: Plan, id: str, reason: ExitReason) -> None:
        """Carry out *plan* for the exit of child *id*, in Plan's documented order."""
        self._history = plan.history
        log = self._log
        match plan.label:
            case "child_terminated" | "reached_max_restart_intensity":
                if log.enabled("error"):
                    log.error("child_terminated", child_id=id, offender=id, reason=str(reason))
            case "child_exited" | "auto_shutdown":
                if log.enabled("info"):
                    log.info("child_exited", child_id=id, reason=str(reason))
            case "stale_exit":
                if log.enabled("debug"):
                    log.debug("stale_exit", child_id=id, reason=str(reason))
        for stop_id in plan.stop:
            await self._stop_child(self._children[stop_id])
        for forget_id in plan.forget:
            child = self._children[forget_id]
            if child.spec.restart is Restart.TEMPORARY:
                self._forget(forget_id)
            else:  # OTP keeps the spec of a non-temporary child, not running
                child.pending = None
        if plan.shutdown_self is not None:
            if plan.label == "reached_max_restart_intensity":
                self._log.error(
                    "reached_max_restart_intensity", child_id=id, offender=id, reason=str(reason)
                )
            else:
                self._log.info("auto_shutdown", child_id=id)
            await self._shut_down(plan.shutdown_self)
        if plan.start:
            self._token += 1
            token = self._token
            for start_id in plan.start:
                self._children[start_id].pending = token
            if plan.delay > 0:
                self._log.info("restart_delayed", child_id=id, delay=plan.delay)
                runtime.send_after(plan.delay, runtime.self_pid(), _RestartDue(token, plan.start))
            else:
                await self._start_pending(token, plan.start)

    async def _start_pending(self, token: int, ids: Sequence[str]) -> None:
        """Start, in order, the children of *ids* still pending under *token*."""
        for id in ids:
            child = self._children.get(id)
            if child is None or child.pending != token:
                continue
            try:
                await self._start(child, "child_restarted")
            except _StartError as e:
                child.pending = token  # still restarting; so are the rest of ids
                runtime.send(runtime.self_pid(), _TryAgain(id, token, e.reason))
                return

    # -- calls -------------------------------------------------------------------------

    async def _handle(self, request: Any) -> Any:
        match request:
            case _StartChild(spec):
                return await self._start_child(spec)
            case _TerminateChild(key):
                if not isinstance(key, str):
                    raise NotFound(key)
                child = self._find(key)
                await self._stop_child(child)
                if child.spec.restart is Restart.TEMPORARY:
                    self._forget(key)
                return None
            case _RestartChild(id):
                child = self._find(id)
                self._check_stopped(child)
                try:
                    return await self._start(child, "child_started")
                except _StartError as e:
                    raise StartFailed(id, e.reason) from None
            case _DeleteChild(id):
                self._check_stopped(self._find(id))
                self._forget(id)
                return None
            case _GetChildSpec(id):
                return self._find(id).spec
        raise NotSupported(f"a supervisor does not handle {request!r}")

    def _find(self, id: str) -> _Child:
        child = self._children.get(id)
        if child is None:
            raise NotFound(id)
        return child

    @staticmethod
    def _check_stopped(child: _Child) -> None:
        if child.pid is not None:
            raise Running(child.spec.id)
        if child.pending is not None:
            raise Restarting(child.spec.id)

    async def _start_child(self, spec: ChildSpec) -> Any:
        if not isinstance(spec, ChildSpec):
            raise NotSupported(f"start_child needs a ChildSpec, got {spec!r}")
        old = self._children.get(spec.id)
        if old is not None:
            if old.pid is not None:
                raise AlreadyStarted(spec.id, old.pid)
            raise AlreadyPresent(spec.id)
        child = _Child(spec)
        self._children[spec.id] = child
        try:
            return await self._start(child, "child_started")
        except _StartError as e:
            self._children.pop(spec.id, None)
            raise StartFailed(spec.id, e.reason) from None


# -- starting a supervisor ---------------------------------------------------------------


async def _start(
    init_fn: InitFn,
    *,
    name: str | None,
    link: bool,
    node: Node | None,
    rng: random.Random | None,
) -> Pid | None:
    node = node if node is not None else current_node()
    boot = _Boot()
    server_ = _SupervisorServer(init_fn, _parent_if(link), rng, boot)
    try:
        return await node.start_server(server_, name=name, link=link, timeout=None)
    except _RuntimeStartFailed as e:
        if boot.ignored:
            return None
        if boot.failure is not None:
            raise boot.failure from None
        raise StartFailed("<init>", e.reason) from None


async def start_supervisor(
    children: Sequence[ChildSpec],
    flags: SupFlags = SupFlags(),  # noqa: B008 - frozen, so a shared default is safe
    *,
    name: str | None = None,
    link: bool = False,
    node: Node | None = None,
    rng: random.Random | None = None,
) -> Pid:
    """Start a supervisor of *children* with *flags*; return its pid once all started.

    Call it from a process (``link=True`` links the supervisor to it: the supervisor's
    parent, whose exit stops the supervisor) or from main code inside
    ``async with runtime.Node()`` (then there is no parent; stop it with :func:`stop`).
    Children are started in list order; the call returns when every start returned.

    Args:
        children: the child specs, in start order; ids must be unique.
        flags: strategy, intensity/period, auto shutdown. Default ``SupFlags()``.
        name: register the supervisor under this local name.
        link: link the supervisor to the calling process (``start_link``).
        node: the node to run on (default: the current node).
        rng: the source of backoff jitter (default: seeded from the node and pid).

    Returns:
        The supervisor's pid.

    Raises:
        StartFailed: a child failed to start (``.id``, ``.reason``); the children
            already started were stopped in reverse order, and the supervisor exited
            ``Shutdown("failed_to_start_child:<id>")``. Also raised, with id
            ``"<init>"``, if the supervisor itself failed before starting children.
        BadChildSpec: *children* has a duplicate id or a non-spec (raised as
            ``StartFailed`` with a ``Crashed`` reason).
        AlreadyRegistered: *name* is taken.
    """
    specs = list(children)

    def init_fn() -> InitResult:
        return flags, specs

    pid = await _start(init_fn, name=name, link=link, node=node, rng=rng)
    assert pid is not None
    return pid


class Supervisor:
    """A supervisor defined by a callback class, OTP's callback-module style.

    Subclass it and implement :meth:`init`; start it with
    ``await MySup.start(*args, name=..., link=...)``; put it under another supervisor
    with ``supervisor_spec("id", MySup, *args)``.
    """

    rng: ClassVar[random.Random | None] = None
    """The backoff jitter source for instances; ``None``: seeded from node and pid."""

    def init(self, *args: Any) -> InitResult | Awaitable[InitResult]:
        """Return ``(SupFlags, [ChildSpec, ...])``, or ``None`` to *ignore*.

        Runs inside the new supervisor process, before any child starts; may be sync
        or async. Raising fails the start (``StartFailed`` with id ``"<init>"``).
        Returning ``None`` makes the supervisor exit ``Normal()`` at once, and
        :meth:`start` return ``None`` (OTP's ``ignore``).
        """
        raise NotImplementedError(f"{type(self).__qualname__} must implement init")

    @classmethod
    async def start(
        cls,
        *args: Any,
        name: str | None = None,
        link: bool = False,
        node: Node | None = None,
    ) -> Pid | None:
        """Start the supervisor: run ``init(*args)`` in it, then start the children.

        Returns its pid, or ``None`` if ``init`` returned ``None``. Raises as
        :func:`start_supervisor` does.
        """
        instance = cls()

        def init_fn() -> InitResult | Awaitable[InitResult]:
            return instance.init(*args)

        return await _start(init_fn, name=name, link=link, node=node, rng=cls.rng)


# -- operations ----------------------------------------------------------------------


async def start_child(sup: SupRef, spec: ChildSpec, *, timeout: float | None = None) -> Pid | None:
    """Add *spec* to the supervisor and start its child (appended to the start order).

    On a ``DynamicSupervisor`` ids need not be unique; see :mod:`supervisors.dynamic`.

    Returns:
        The child's pid, or ``None`` if its start returned ``None`` (*ignore*): the spec
        is then kept, not running, unless the child is temporary.

    Raises:
        AlreadyStarted: a child with this id runs (``.pid``); nothing changed.
        AlreadyPresent: a spec with this id is kept but not running (or restarting).
        StartFailed: the start failed (``.reason``); the spec is not kept.
        MaxChildren: (dynamic supervisor) it already has ``max_children`` children.
        TypeError: the supervisor is on another node, where a spec cannot travel.
        ServerExited: the supervisor is not running.
        CallTimeout: no answer within *timeout* seconds (default: wait forever).
    """
    return await _call(sup, _StartChild(spec), timeout)  # type: ignore[no-any-return]


async def terminate_child(sup: SupRef, child: str | Pid, *, timeout: float | None = None) -> None:
    """Stop a child by the shutdown protocol; it is not restarted.

    On a ``Supervisor``, *child* is an id: the spec is kept (not running) so
    :func:`restart_child` can start it again, except a temporary child's, which is
    deleted. A pending restart of the child is cancelled. Stopping a child that is not
    running succeeds. On a ``DynamicSupervisor``, *child* is a pid and the child is
    removed.

    Raises:
        NotFound: no child with this id (for a ``Supervisor``, also any pid), or no
            child with this pid (dynamic).
        NotSupported: an id given to a ``DynamicSupervisor``.
        ServerExited: the supervisor is not running.
        CallTimeout: no answer within *timeout* seconds.
    """
    await _call(sup, _TerminateChild(child), timeout)


async def restart_child(sup: SupRef, id: str, *, timeout: float | None = None) -> Pid | None:
    """Start again the kept spec of a child that is not running. Does not count as a restart.

    Returns:
        The new pid, or ``None`` if the start returned ``None`` (the spec stays kept).

    Raises:
        NotFound: no spec with this id.
        Running: the child is running.
        Restarting: a restart of the child is pending.
        StartFailed: its start failed; the spec stays kept, not running.
        NotSupported: on a ``DynamicSupervisor``.
        ServerExited: the supervisor is not running.
        CallTimeout: no answer within *timeout* seconds.
    """
    return await _call(sup, _RestartChild(id), timeout)  # type: ignore[no-any-return]


async def delete_child(sup: SupRef, id: str, *, timeout: float | None = None) -> None:
    """Delete the kept spec of a child that is not running.

    Raises:
        NotFound: no spec with this id.
        Running: the child is running (terminate it first).
        Restarting: a restart of the child is pending (terminate it first).
        NotSupported: on a ``DynamicSupervisor``.
        ServerExited: the supervisor is not running.
        CallTimeout: no answer within *timeout* seconds.
    """
    await _call(sup, _DeleteChild(id), timeout)


async def get_childspec(sup: SupRef, id: str, *, timeout: float | None = None) -> ChildSpec:
    """The spec of child *id*.

    Raises:
        NotFound: no spec with this id.
        NotSupported: on a ``DynamicSupervisor``.
        ReplyNotSendable: the supervisor is on another node, where a spec cannot travel.
        ServerExited: the supervisor is not running.
    """
    return await _call(sup, _GetChildSpec(id), timeout)  # type: ignore[no-any-return]


async def which_children(sup: SupRef, *, timeout: float | None = None) -> list[ChildInfo]:
    """Every child, in start order: id, pid (``None`` if not running), type, restart.

    Raises:
        ServerExited: the supervisor is not running.
        CallTimeout: no answer within *timeout* seconds.
    """
    return await _call(sup, _WhichChildren(), timeout)  # type: ignore[no-any-return]


async def count_children(sup: SupRef, *, timeout: float | None = None) -> Counts:
    """Counts of specs, active children, supervisors and workers; see :class:`Counts`.

    Raises:
        ServerExited: the supervisor is not running.
        CallTimeout: no answer within *timeout* seconds.
    """
    return await _call(sup, _CountChildren(), timeout)  # type: ignore[no-any-return]


async def stop(sup: SupRef, reason: ExitReason = NORMAL, *, timeout: float | None = None) -> None:
    """Stop the supervisor: its children stop in reverse order, then it exits *reason*.

    Returns once the supervisor has exited.

    Raises:
        ServerExited: the supervisor was not running.
        CallTimeout: it did not stop its children within *timeout* seconds.
    """
    node = current_node()
    done = anyio.Event()
    ref = node.monitor(None, sup, callback=lambda _reason: done.set())
    try:
        await _call(sup, _StopSupervisor(reason), timeout)
    except ServerExited:
        node.demonitor(ref)
        raise
    await done.wait()


# -- child spec helpers ------------------------------------------------------------------


def _spawn_worker(fn: Callable[..., Awaitable[Any]], name: str | None, *args: Any) -> Pid:
    return runtime.spawn_link(fn, *args, name=name)


def _start_gen_server(
    cls: type[GenServer], name: str | None, timeout: float | None, *args: Any
) -> Coroutine[Any, Any, Pid]:
    # Returns GenServer's start coroutine itself, not a wrapper around it: every await
    # frame between the supervisor and the parked start is resumed on each switch.
    return start_server(current_node(), cls, *args, link=True, name=name, timeout=timeout)


def worker_spec(
    id: str,
    fn: Callable[..., Awaitable[Any]],
    *args: Any,
    name: str | None = None,
    restart: Restart = Restart.PERMANENT,
    shutdown: ShutdownTimeout = 5.0,
    significant: bool = False,
    backoff: Backoff | None = None,
) -> ChildSpec:
    """A spec for a worker process running ``await fn(*args)``, linked to its supervisor.

    Args:
        id: the child's id.
        fn: the async function the process runs; it ends ``Normal()`` when it returns.
        args: its arguments.
        name: register each incarnation of the process under this local name.
        restart, shutdown, significant, backoff: as in :class:`ChildSpec`.
    """
    return ChildSpec(
        id,
        _spawn_worker,
        args=(fn, name, *args),
        restart=restart,
        shutdown=shutdown,
        significant=significant,
        backoff=backoff,
    )


def server_spec(
    id: str,
    cls: type[GenServer],
    *args: Any,
    name: str | None = None,
    init_timeout: float | None = 5.0,
    restart: Restart = Restart.PERMANENT,
    shutdown: ShutdownTimeout = 5.0,
    significant: bool = False,
    backoff: Backoff | None = None,
) -> ChildSpec:
    """A spec for a GenServer of class *cls* (a fresh instance per start), ``init(*args)``.

    Args:
        id: the child's id.
        cls: the GenServer class.
        args: the arguments of its ``init``.
        name: register the server under this local name.
        init_timeout: seconds its ``init`` may take (then the start fails).
        restart, shutdown, significant, backoff: as in :class:`ChildSpec`.
    """
    return ChildSpec(
        id,
        _start_gen_server,
        args=(cls, name, init_timeout, *args),
        restart=restart,
        shutdown=shutdown,
        significant=significant,
        backoff=backoff,
    )


async def _start_nested(children: Sequence[ChildSpec], flags: SupFlags, name: str | None) -> Pid:
    return await start_supervisor(children, flags, name=name, link=True)


async def _start_nested_cls(cls: type[Supervisor], name: str | None, *args: Any) -> Pid | None:
    return await cls.start(*args, name=name, link=True)


def supervisor_spec(
    id: str,
    children: Sequence[ChildSpec] | type[Supervisor],
    *args: Any,
    flags: SupFlags | None = None,
    name: str | None = None,
    restart: Restart = Restart.PERMANENT,
    shutdown: ShutdownTimeout = INFINITY,
    significant: bool = False,
    backoff: Backoff | None = None,
) -> ChildSpec:
    """A spec for a nested supervisor (type ``SUPERVISOR``, shutdown ``INFINITY``).

    Either ``supervisor_spec(id, [specs...], flags=SupFlags(...))`` or
    ``supervisor_spec(id, MySupervisor, *init_args)``.

    Raises:
        TypeError: *flags* given with a :class:`Supervisor` class, or *args* with a list.
    """
    if isinstance(children, type):
        if flags is not None:
            raise TypeError("flags come from the Supervisor class's init, not from flags=")
        start: Callable[..., Any] = _start_nested_cls
        start_args: tuple[Any, ...] = (children, name, *args)
    else:
        if args:
            raise TypeError("extra positional arguments need a Supervisor class")
        start = _start_nested
        start_args = (list(children), flags if flags is not None else SupFlags(), name)
    return ChildSpec(
        id,
        start,
        args=start_args,
        type=ChildType.SUPERVISOR,
        restart=restart,
        shutdown=shutdown,
        significant=significant,
        backoff=backoff,
    )
