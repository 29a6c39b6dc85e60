"""What a Supervisor and a DynamicSupervisor share (internal).

* The records a supervisor reports (:class:`ChildInfo`, :class:`Counts`), re-exported by
  :mod:`supervisors.supervisor`.
* The call protocol between the client functions and the supervisor processes. Every
  request and reply except ``start_child``'s is registered on the wire
  (``"regency.sup.<Name>"``), so the operations work on a supervisor of another node. A
  failed outcome travels as a :class:`_Failure`: the error's class name and its
  constructor arguments, rebuilt into the same exception by the caller. A
  :class:`~supervisors.spec.ChildSpec` holds a function and cannot travel:
  :func:`_call` refuses ``start_child`` to another node with ``TypeError``, and
  ``get_childspec`` from another node fails with ``runtime.ReplyNotSendable``.
* Starting one child (:func:`_invoke_start`) and the shutdown protocol for one child
  (:func:`_shutdown_child`, :func:`_shutdown_ok`), as the module doc of
  :mod:`supervisors.supervisor` states them.
* :class:`_SupervisorBase`, the part of both supervisor processes that is the same: the
  logger's context, the calls that report or stop, and stopping the supervisor.
"""

from __future__ import annotations

import inspect
import random
from collections.abc import Callable, Sequence
from typing import Any, Final, Generic, NoReturn, TypeVar

import attrs
import structlog

import runtime
from runtime import wire
from runtime.backend import Backend
from runtime.errors import CallTimeout, ReceiveTimeout
from runtime.errors import StartFailed as _RuntimeStartFailed
from runtime.genserver import GenServer, Stop
from runtime.logs import Logger
from runtime.messages import Down, Exit
from runtime.node import Node, current_node
from runtime.pid import Name, Pid
from runtime.reasons import KILL, SHUTDOWN, Crashed, ExitReason, Killed, NoProc, Normal, Shutdown

from .errors import (
    AlreadyPresent,
    AlreadyStarted,
    MaxChildren,
    NotFound,
    NotSupported,
    Restarting,
    Running,
    StartFailed,
    SupervisorError,
)
from .spec import BRUTAL_KILL, INFINITY, ChildSpec, ChildType, Restart, ShutdownTimeout, SupFlags
from .strategy import History

log = structlog.get_logger("regency")


# -- public records --------------------------------------------------------------------


@attrs.frozen
class ChildInfo:
    """One child, as :func:`~supervisors.supervisor.which_children` reports it.

    Attributes:
        id: the child's id (under a ``DynamicSupervisor``, its spec's id, not unique).
        pid: its process, or ``None`` when it is not running or is being restarted.
        type: worker or supervisor.
        restart: its restart type.
        restarting: ``True`` while a restart of it is pending (OTP's ``restarting``).
    """

    id: str
    pid: Pid | None
    type: ChildType
    restart: Restart
    restarting: bool = False


@attrs.frozen
class Counts:
    """Child counts, as :func:`~supervisors.supervisor.count_children` reports them.

    OTP's proplist.

    Attributes:
        specs: child specs kept, running or not.
        active: children with a live process (not those being restarted).
        supervisors: specs of type supervisor, running or not.
        workers: specs of type worker, running or not.
    """

    specs: int
    active: int
    supervisors: int
    workers: int


# -- the protocol between the client functions and the supervisor processes -----------


@attrs.frozen
class _StartChild:
    spec: ChildSpec


@attrs.frozen
class _TerminateChild:
    key: str | Pid


@attrs.frozen
class _RestartChild:
    id: str


@attrs.frozen
class _DeleteChild:
    id: str


@attrs.frozen
class _GetChildSpec:
    id: str


@attrs.frozen
class _WhichChildren:
    pass


@attrs.frozen
class _CountChildren:
    pass


@attrs.frozen
class _StopSupervisor:
    reason: ExitReason


# The errors a call may answer with, and how each is rebuilt from what travels.
_ERROR_ARGS: Final[dict[type[Exception], Callable[[Any], tuple[Any, ...]]]] = {
    AlreadyPresent: lambda e: (e.id,),
    AlreadyStarted: lambda e: (e.id, e.pid),
    Running: lambda e: (e.id,),
    Restarting: lambda e: (e.id,),
    NotFound: lambda e: (e.key,),
    NotSupported: lambda e: tuple(e.args),
    MaxChildren: lambda e: (e.limit,),
    StartFailed: lambda e: (e.id, e.reason),
}
_ERRORS: Final = {cls.__name__: cls for cls in _ERROR_ARGS}


@attrs.frozen
class _Failure:
    """A call's failed outcome, which the client function raises.

    ``kind`` names one of the errors of :mod:`supervisors.errors` and ``args`` are its
    constructor arguments, so that it can travel between nodes.
    """

    kind: str
    args: tuple[Any, ...]

    @staticmethod
    def of(error: SupervisorError | StartFailed) -> _Failure:
        """The failure that :meth:`error` turns back into an equal *error*."""
        return _Failure(type(error).__name__, _ERROR_ARGS[type(error)](error))

    def error(self) -> Exception:
        """The exception to raise in the caller."""
        return _ERRORS[self.kind](*self.args)


for _cls in (
    ChildInfo,
    Counts,
    ChildType,
    Restart,
    _TerminateChild,
    _RestartChild,
    _DeleteChild,
    _GetChildSpec,
    _WhichChildren,
    _CountChildren,
    _StopSupervisor,
    _Failure,
):
    wire.DEFAULT_REGISTRY.register(_cls, f"regency.sup.{_cls.__name__.lstrip('_')}")


def _is_remote(sup: Pid | str | Name) -> bool:
    """Whether *sup* names a process of another node than the current one."""
    node = sup.node if isinstance(sup, Pid | Name) else None
    return node is not None and node != current_node().name


async def _call(sup: Pid | str | Name, request: object, timeout: float | None) -> Any:
    """Call the supervisor; raise the error of a :class:`_Failure` answer.

    Raises:
        TypeError: *request* starts a child from a spec on another node.
    """
    if type(request) is _StartChild and _is_remote(sup):
        raise TypeError(
            f"start_child cannot send a ChildSpec to {sup}, on another node: its start is a "
            "function, and functions do not travel; start the child from a process on the "
            "supervisor's node"
        )
    result = await runtime.call(sup, request, timeout=timeout)
    if isinstance(result, _Failure):
        raise result.error()
    return result


@attrs.frozen
class _RestartDue:
    """A backoff delay is over: start the children still pending under ``token``."""

    token: int
    keys: tuple[Any, ...]


@attrs.frozen
class _TryAgain:
    """The start of ``key`` failed during a restart: restart it again (OTP's try_again)."""

    key: Any
    token: int
    reason: ExitReason


# -- starting and stopping one child ----------------------------------------------------


class _StartError(Exception):
    """A child's start failed with ``reason`` (internal)."""

    def __init__(self, reason: ExitReason) -> None:
        super().__init__(reason)
        self.reason = reason


async def _invoke_start(spec: ChildSpec, log: Any) -> Pid | None:
    """Run ``spec.start(*spec.args)`` in the calling (supervisor) process.

    Returns the child's pid, linked to the caller, or None for *ignore*.

    Raises:
        _StartError: the start raised, or returned something that is not a pid; logged
            as ``start_error`` on *log*.
    """
    reason: ExitReason
    try:
        result: Any = spec.start(*spec.args)
        if inspect.isawaitable(result):
            result = await result
    except _RuntimeStartFailed as e:
        reason = e.reason
    except Exception as e:
        reason = Crashed.from_exception(e)
    else:
        if result is None:
            return None
        if isinstance(result, Pid):
            runtime.link(result)
            return result
        bad = TypeError(f"start of child {spec.id!r} returned {result!r}, not a Pid or None")
        reason = Crashed.from_exception(bad)
    log.error("start_error", child_id=spec.id, offender=spec.id, reason=str(reason))
    raise _StartError(reason) from None


_NODE_STOPPED = Shutdown("node_stopped")
"""The reason of every process of a stopping node: not a shutdown error of ours."""


def _shutdown_ok(spec: ChildSpec, reason: ExitReason) -> bool:
    """Whether a child stopped by the shutdown protocol ended as expected (OTP)."""
    if reason == SHUTDOWN:
        return True
    if spec.shutdown is BRUTAL_KILL and isinstance(reason, Killed):
        return True
    return spec.restart is not Restart.PERMANENT and isinstance(reason, Normal | Shutdown)


async def _unlink_flush(pid: Pid, reason: ExitReason) -> ExitReason:
    """Unlink *pid* and drop its pending Exit message (OTP's ``unlink_flush``).

    Returns *reason*, or the Exit message's reason when the monitor said ``NoProc``
    (the child was already dead when the shutdown began).
    """
    runtime.unlink(pid)
    try:
        msg = await runtime.receive(lambda m: type(m) is Exit and m.pid == pid, timeout=0)
    except ReceiveTimeout:
        return reason
    return msg.reason if isinstance(reason, NoProc) else reason


async def _shutdown_child(pid: Pid, shutdown: ShutdownTimeout) -> ExitReason:
    """Stop one child by the shutdown protocol; return the reason it ended with.

    The signal is sent from this process: a child supervisor checks its parent.
    """
    if shutdown is BRUTAL_KILL:
        reason = await runtime.exit_and_wait(pid, KILL)
    else:
        timeout = None if shutdown is INFINITY else shutdown
        assert timeout is None or isinstance(timeout, int | float)
        try:
            reason = await runtime.exit_and_wait(pid, SHUTDOWN, timeout)
        except CallTimeout:
            reason = await runtime.exit_and_wait(pid, KILL)
    return await _unlink_flush(pid, reason)


def _no_clock() -> float:
    raise RuntimeError("the supervisor has not started")


def _make_rng(node: Node, pid: Pid) -> random.Random:
    return random.Random(f"{node.name}/{node.creation}/{pid.serial}")


def _parent_if(link: bool) -> Pid | None:
    """The calling process when *link* is set and there is one: the new supervisor's parent."""
    if not link:
        return None
    try:
        return runtime.self_pid()
    except runtime.NotInProcess:
        return None


# -- the supervisor processes ------------------------------------------------------------


class _ChildBase:
    """A supervisor's record of one child (mutable; private)."""

    __slots__ = ("pending", "pid", "spec")

    def __init__(self, spec: ChildSpec, pid: Pid | None) -> None:
        self.spec = spec
        self.pid: Pid | None = pid
        self.pending: int | None = None  # token of a pending restart

    def info(self) -> ChildInfo:
        s = self.spec
        return ChildInfo(s.id, self.pid, s.type, s.restart, self.pending is not None)


_K = TypeVar("_K")
_C = TypeVar("_C", bound=_ChildBase)


class _SupervisorBase(GenServer, Generic[_K, _C]):
    """What both supervisor processes do alike: a GenServer that traps exits.

    A subclass keeps its children in ``_children`` by key (in start order) and the key of
    each child's pid in ``_by_pid``, answers its own requests in :meth:`_handle` and stops
    its children in :meth:`_terminate_children`.
    """

    def __init__(self, flags: SupFlags, parent: Pid | None, rng: random.Random | None) -> None:
        self._flags = flags
        self._parent = parent
        self._rng = rng
        self._children: dict[_K, _C] = {}
        self._by_pid: dict[Pid, _K] = {}
        self._history = History()
        self._token = 0
        self._log: Any = log
        self._stopped = False
        self._now: Callable[[], float] = _no_clock  # the loop's clock, once running

    async def init(self) -> None:
        """Trap exits; bind the logger to the node, the pid and the registered name."""
        runtime.trap_exit(True)
        node = runtime.node()
        me = runtime.self_pid()
        name = node.process(me).name
        # A lazy logger: structlog configured later still applies.
        context = {"node": node.name, "supervisor": str(me)}
        if name is not None:
            context["supervisor_name"] = name
        self._log = Logger("regency", **context)
        self._now = Backend.current().clock()
        if self._rng is None:
            self._rng = _make_rng(node, me)

    def _rng_(self) -> random.Random:
        assert self._rng is not None
        return self._rng

    # -- calls -------------------------------------------------------------------------

    async def handle_call(self, request: Any, from_: runtime.From) -> Any:
        """Answer a request; a failed outcome is answered as a :class:`_Failure`."""
        try:
            match request:
                case _WhichChildren():
                    return [c.info() for c in self._children.values()]
                case _CountChildren():
                    kids = list(self._children.values())
                    sups = sum(1 for c in kids if c.spec.type is ChildType.SUPERVISOR)
                    active = sum(1 for c in kids if c.pid is not None)
                    return Counts(len(kids), active, sups, len(kids) - sups)
                case _StopSupervisor(reason):
                    await self._stop_children(reason)
                    raise Stop(reason, reply=None)
            return await self._handle(request)
        except (SupervisorError, StartFailed) as e:
            return _Failure.of(e)

    async def _handle(self, request: Any) -> Any:
        raise NotImplementedError

    def _report_shutdown(self, spec: ChildSpec, reason: ExitReason) -> None:
        """Log ``shutdown_error`` if the child stopped with an unexpected *reason*.

        A child ended by its node stopping is not a shutdown error of the supervisor's.
        """
        if runtime.current_node().closing and reason == _NODE_STOPPED:
            return
        if not _shutdown_ok(spec, reason):
            self._log.error(
                "shutdown_error", child_id=spec.id, offender=spec.id, reason=str(reason)
            )

    # -- exits and restarts ------------------------------------------------------------

    async def handle_info(self, msg: Any) -> None:
        """Handle a child's (or the parent's) exit and the supervisor's own timers."""
        t = type(msg)
        if t is Exit:
            await self._on_exit(msg)
        elif t is _RestartDue:
            await self._start_pending(msg.token, msg.keys)
        elif t is _TryAgain:
            await self._try_again(msg)
        elif t is Down:
            pass  # a monitor of a shutdown we gave up on; nothing to do
        else:
            await super().handle_info(msg)

    async def _on_exit(self, msg: Exit) -> None:
        raise NotImplementedError

    async def _start_pending(self, token: int, keys: Sequence[_K]) -> None:
        raise NotImplementedError

    async def _try_again(self, msg: _TryAgain) -> None:
        raise NotImplementedError

    # -- stopping the supervisor ---------------------------------------------------------

    async def _terminate_children(self) -> None:
        raise NotImplementedError

    async def _stop_children(self, reason: ExitReason) -> None:
        """Stop every child; the supervisor is about to exit with *reason*."""
        await self._terminate_children()
        self._stopped = True
        self._log.info("supervisor_stopped", reason=str(reason))

    async def _shut_down(self, reason: ExitReason) -> NoReturn:
        """Stop every child and exit with *reason*."""
        await self._stop_children(reason)
        raise Stop(reason)

    async def terminate(self, reason: ExitReason) -> None:
        """Stop the children, unless the supervisor already did before exiting."""
        if not self._stopped:
            await self._stop_children(reason)
