"""DynamicSupervisor: a supervisor of children started on demand (Elixir's DynamicSupervisor).

Principles. A dynamic supervisor starts with no children. Children are added at run
time with ``start_child(dsup, spec)``, each from its own :class:`~supervisors.spec.ChildSpec`
(ids need not be unique and are only reported back); there is no ordering between
children. The strategy is always one-for-one: only the child that exited is restarted,
by its spec's restart type (``PERMANENT`` always, ``TRANSIENT`` after an abnormal exit,
``TEMPORARY`` never), with its spec's backoff, and the restart intensity applies as for
a :class:`~supervisors.supervisor.Supervisor`: more than ``intensity`` restarts within
``period`` seconds and the supervisor stops every child and exits ``Shutdown()``. A
child that is not restarted is removed. ``significant`` is ignored.

Flags (:class:`DynamicFlags`), all optional: ``intensity`` (default 3), ``period``
(default 5.0 seconds) -- Elixir's defaults, where OTP's ``supervisor`` uses 1 and 5 --
and ``max_children`` (default ``None``: no limit).

Operations (the functions of :mod:`supervisors.supervisor`, which serve both kinds):

* ``start_child(dsup, spec) -> Pid | None`` -- starts a child. ``None`` if its start
  returned ``None`` (*ignore*; nothing is kept). Raises ``MaxChildren`` when the
  supervisor already has ``max_children`` children (running or being restarted), and
  ``StartFailed`` (``.id``, ``.reason``) when the start failed.
* ``terminate_child(dsup, pid)`` -- stops the child by the shutdown protocol and removes
  it. A child being restarted is found by the pid it had before. ``NotFound`` for a pid
  that is not a child; ``NotSupported`` for an id.
* ``which_children(dsup)``, ``count_children(dsup)`` -- as for a ``Supervisor``;
  ``specs`` counts the children, running or not.
* ``restart_child``, ``delete_child``, ``get_childspec`` -- raise ``NotSupported``.
* ``stop(dsup, reason)`` -- stops every child, then exits with *reason*.

Shutdown. When the dynamic supervisor stops (its parent exited, ``stop``, or intensity
reached), its children are stopped **concurrently**, as both OTP's supervisor (for
``simple_one_for_one``) and Elixir's DynamicSupervisor do: it monitors every child and
sends each ``Shutdown()`` (``Kill()`` for ``BRUTAL_KILL``), in reverse start order, then
waits for all of them, killing each child whose own ``shutdown`` timeout expires. So
stopping N children that each take the full timeout takes one timeout, not N. Each
unexpected end is logged ``shutdown_error``. The log events are those of a
``Supervisor`` (there is no ``auto_shutdown``).
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any, final

import anyio
import attrs

import runtime
from runtime.errors import ReceiveTimeout
from runtime.messages import Down, Exit
from runtime.node import Node, current_node
from runtime.pid import Pid, Ref
from runtime.reasons import KILL, SHUTDOWN, ExitReason

from .common import (
    _ChildBase,
    _invoke_start,
    _parent_if,
    _RestartDue,
    _shutdown_child,
    _StartChild,
    _StartError,
    _SupervisorBase,
    _TerminateChild,
    _TryAgain,
    _unlink_flush,
)
from .errors import MaxChildren, NotFound, NotSupported, StartFailed
from .spec import (
    BRUTAL_KILL,
    INFINITY,
    BadSupFlags,
    ChildSpec,
    ChildType,
    Restart,
    ShutdownTimeout,
    SupFlags,
)
from .strategy import ChildExited, ChildState, decide

__all__ = [
    "DynamicFlags",
    "DynamicSupervisor",
    "dynamic_supervisor_spec",
    "start_dynamic_supervisor",
]


@attrs.frozen
class DynamicFlags:
    """A dynamic supervisor's flags.

    Attributes:
        intensity: the most restarts allowed within ``period`` (int >= 0). Default 3.
        period: the window for ``intensity``, in seconds (> 0). Default 5.0.
        max_children: the most children at once (int >= 0), or ``None`` for no limit.
            Default ``None``.

    Raises:
        BadSupFlags: a value is out of range or of the wrong type.
    """

    intensity: int = 3
    period: float = 5.0
    max_children: int | None = None

    def __attrs_post_init__(self) -> None:
        # SupFlags checks intensity and period the same way.
        SupFlags(intensity=self.intensity, period=self.period)
        m = self.max_children
        if m is not None and (not isinstance(m, int) or isinstance(m, bool) or m < 0):
            raise BadSupFlags(f"max_children must be an int >= 0 or None, got {m!r}")


@final
class _DChild(_ChildBase):
    __slots__ = ("key", "last_pid")

    def __init__(self, key: int, spec: ChildSpec, pid: Pid) -> None:
        super().__init__(spec, pid)
        self.key = key
        self.last_pid = pid


@final
class _DynamicServer(_SupervisorBase[int, _DChild]):
    """The dynamic supervisor process (a GenServer that traps exits)."""

    def __init__(self, flags: DynamicFlags, parent: Pid | None, rng: random.Random | None) -> None:
        super().__init__(SupFlags(intensity=flags.intensity, period=flags.period), parent, rng)
        self._max = flags.max_children
        self._serial = 0

    # -- calls -------------------------------------------------------------------------

    async def _handle(self, request: Any) -> Any:
        match request:
            case _StartChild(spec):
                return await self._start_child(spec)
            case _TerminateChild(key):
                if not isinstance(key, Pid):
                    raise NotSupported("a DynamicSupervisor's children are named by pid")
                child = self._by_pid_child(key)
                if child is None:
                    raise NotFound(key)
                await self._stop_one(child)
                return None
        raise NotSupported(f"a DynamicSupervisor does not handle {type(request).__name__}")

    def _by_pid_child(self, pid: Pid) -> _DChild | None:
        key = self._by_pid.get(pid)
        return None if key is None else self._children.get(key)

    async def _start_child(self, spec: ChildSpec) -> Any:
        if not isinstance(spec, ChildSpec):
            raise NotSupported(f"start_child needs a ChildSpec, got {spec!r}")
        if self._max is not None and len(self._children) >= self._max:
            raise MaxChildren(self._max)
        try:
            pid = await _invoke_start(spec, self._log)
        except _StartError as e:
            raise StartFailed(spec.id, e.reason) from None
        if pid is None:
            self._log.info("child_ignored", child_id=spec.id)
            return None
        self._serial += 1
        child = _DChild(self._serial, spec, pid)
        self._children[child.key] = child
        self._by_pid[pid] = child.key
        if self._log.enabled("info"):
            self._log.info("child_started", child_id=spec.id, pid=str(pid))
        return pid

    def _remove(self, child: _DChild) -> None:
        self._children.pop(child.key, None)
        if self._by_pid.get(child.last_pid) == child.key:
            del self._by_pid[child.last_pid]
        self._history = self._history.forget(str(child.key))

    async def _stop_one(self, child: _DChild) -> None:
        child.pending = None
        pid = child.pid
        self._remove(child)
        if pid is None:
            return
        reason = await _shutdown_child(pid, child.spec.shutdown)
        self._report_shutdown(child.spec, reason)

    async def _terminate_children(self) -> None:
        """Stop every child concurrently; each is killed when its own timeout expires."""
        kids = list(reversed(self._children.values()))
        self._children.clear()
        self._by_pid.clear()
        waiting: dict[Ref, tuple[Pid, ChildSpec]] = {}
        deadlines: dict[Ref, float] = {}
        now = anyio.current_time()
        for child in kids:
            child.pending = None
            pid = child.pid
            if pid is None:
                continue
            ref = runtime.monitor(pid)
            waiting[ref] = (pid, child.spec)
            shutdown: ShutdownTimeout = child.spec.shutdown
            if shutdown is BRUTAL_KILL:
                runtime.send_exit(pid, KILL)
            else:
                runtime.send_exit(pid, SHUTDOWN)
                if shutdown is not INFINITY:
                    assert isinstance(shutdown, int | float)
                    deadlines[ref] = now + shutdown
        while waiting:
            timeout = None
            if deadlines:
                first = min(deadlines.values())
                timeout = max(0.0, first - anyio.current_time())
            try:
                down: Down = await runtime.receive(
                    lambda m: type(m) is Down and m.ref in waiting, timeout=timeout
                )
            except ReceiveTimeout:
                for ref in [r for r, d in deadlines.items() if d <= first]:
                    runtime.send_exit(waiting[ref][0], KILL)
                    del deadlines[ref]
                continue
            pid, spec = waiting.pop(down.ref)
            deadlines.pop(down.ref, None)
            self._report_shutdown(spec, await _unlink_flush(pid, down.reason))

    # -- exits and restarts ------------------------------------------------------------

    async def _try_again(self, msg: _TryAgain) -> None:
        child = self._children.get(msg.key)
        if child is not None and child.pending == msg.token:
            await self._decide(child, msg.reason, retry=True)

    async def _on_exit(self, msg: Exit) -> None:
        child = self._by_pid_child(msg.pid)
        if child is None or child.pid != msg.pid:
            if msg.pid == self._parent:
                await self._shut_down(msg.reason)
            self._log.info("exit_ignored", pid=str(msg.pid), reason=str(msg.reason))
            return
        child.pid = None
        await self._decide(child, msg.reason, retry=False)

    async def _decide(self, child: _DChild, reason: ExitReason, *, retry: bool) -> None:
        spec = child.spec
        restart = Restart.PERMANENT if retry else spec.restart
        state = ChildState(str(child.key), restart, False, True, spec.backoff)
        plan = decide(
            self._flags,
            [state],
            ChildExited(state.id, reason),
            self._history,
            self._now(),
            self._rng_(),
        )
        self._history = plan.history
        log = self._log
        if plan.label in ("child_terminated", "reached_max_restart_intensity"):
            if log.enabled("error"):
                log.error(
                    "child_terminated", child_id=spec.id, offender=spec.id, reason=str(reason)
                )
        elif log.enabled("info"):
            log.info("child_exited", child_id=spec.id, reason=str(reason))
        if plan.shutdown_self is not None:
            self._log.error(
                "reached_max_restart_intensity",
                child_id=spec.id,
                offender=spec.id,
                reason=str(reason),
            )
            await self._shut_down(plan.shutdown_self)
        if not plan.start:
            self._remove(child)
            return
        self._token += 1
        child.pending = self._token
        if plan.delay > 0:
            self._log.info("restart_delayed", child_id=spec.id, delay=plan.delay)
            runtime.send_after(
                plan.delay, runtime.self_pid(), _RestartDue(self._token, (child.key,))
            )
        else:
            await self._start_pending(self._token, (child.key,))

    async def _start_pending(self, token: int, keys: Sequence[int]) -> None:
        for key in keys:
            child = self._children.get(key)
            if child is None or child.pending != token:
                continue
            spec = child.spec
            try:
                pid = await _invoke_start(spec, self._log)
            except _StartError as e:
                runtime.send(runtime.self_pid(), _TryAgain(key, token, e.reason))
                continue
            child.pending = None
            if pid is None:  # a restart that returned ignore: the child is gone
                self._remove(child)
                self._log.info("child_ignored", child_id=spec.id)
                continue
            self._by_pid.pop(child.last_pid, None)
            child.pid = child.last_pid = pid
            self._by_pid[pid] = key
            if self._log.enabled("info"):
                self._log.info("child_restarted", child_id=spec.id, pid=str(pid))


# -- starting ------------------------------------------------------------------------


async def start_dynamic_supervisor(
    flags: DynamicFlags = DynamicFlags(),
    *,
    name: str | None = None,
    link: bool = False,
    node: Node | None = None,
    rng: random.Random | None = None,
) -> Pid:
    """Start a dynamic supervisor with no children; return its pid.

    Args:
        flags: intensity, period and max_children. Default ``DynamicFlags()``.
        name: register it under this local name.
        link: link it to the calling process, its parent (whose exit stops it).
        node: the node to run on (default: the current node).
        rng: the source of backoff jitter (default: seeded from the node and pid).

    Raises:
        AlreadyRegistered: *name* is taken.
    """
    node = node if node is not None else current_node()
    srv = _DynamicServer(flags, _parent_if(link), rng)
    return await node.start_server(srv, name=name, link=link, timeout=None)


class DynamicSupervisor:
    """A dynamic supervisor defined by a class; override :meth:`init` to compute flags.

    ``await DynamicSupervisor.start(max_children=10)`` starts one with those flags;
    subclasses may override :meth:`init` to compute them from ``start``'s arguments.
    """

    def init(self, *args: Any, **kwargs: Any) -> DynamicFlags:
        """Return the flags; the default builds ``DynamicFlags(*args, **kwargs)``."""
        return DynamicFlags(*args, **kwargs)

    @classmethod
    async def start(
        cls,
        *args: Any,
        name: str | None = None,
        link: bool = False,
        node: Node | None = None,
        rng: random.Random | None = None,
        **kwargs: Any,
    ) -> Pid:
        """Start it with the flags ``init(*args, **kwargs)`` returns; see
        :func:`start_dynamic_supervisor` for the other arguments and outcomes."""
        flags = cls().init(*args, **kwargs)
        return await start_dynamic_supervisor(flags, name=name, link=link, node=node, rng=rng)


async def _start_nested(flags: DynamicFlags, name: str | None) -> Pid:
    return await start_dynamic_supervisor(flags, name=name, link=True)


def dynamic_supervisor_spec(
    id: str,
    flags: DynamicFlags = DynamicFlags(),
    *,
    name: str | None = None,
    restart: Restart = Restart.PERMANENT,
    shutdown: ShutdownTimeout = INFINITY,
) -> ChildSpec:
    """A spec for a dynamic supervisor under another supervisor (type ``SUPERVISOR``)."""
    return ChildSpec(
        id,
        _start_nested,
        args=(flags, name),
        type=ChildType.SUPERVISOR,
        restart=restart,
        shutdown=shutdown,
    )
