"""Nodes and processes: spawn, exit signals, links, monitors, names and timers.

A :class:`Node` owns a set of processes and runs them in its own task group. It is an
async context manager; leaving it stops every process still running (each ends with
``Shutdown("node_stopped")``) and waits for them.

A process is a task with a :class:`~runtime.pid.Pid` and a :class:`~runtime.mailbox.Mailbox`.
An uncaught exception ends that process alone, with ``Crashed`` as its exit reason and a
``process_crashed`` report in the log; the node and its other processes keep running.

Exit signals follow Erlang. When a process ends, every linked process gets an exit
signal with its reason:

* reason ``Normal``: ignored, unless the receiver traps exits (then an ``Exit`` message);
* any other reason: the receiver ends with the same reason, unless it traps exits;
* ``Kill`` sent with ``exit(pid, Kill())``: ends the receiver with ``Killed`` even if it
  traps exits. A process that ends ``Killed`` sends ``Killed``, which can be trapped.

Monitors are one-way: the watcher gets exactly one ``Down`` message, with the reason,
``NoProc()`` if the target was already dead, or ``NoConnection(node)`` if its node is lost.

Remote pids are handed to the node's distribution layer (see ``runtime.dist``); with no
distribution, a remote link or monitor fires at once with ``NoConnection``.
"""

from __future__ import annotations

import heapq
import math
import os
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from contextvars import ContextVar
from itertools import islice
from typing import Any, Final, Protocol, final

import anyio
import anyio.abc
import structlog

from .backend import Backend, CancelScope, Parkable, TaskGroup
from .errors import (
    AlreadyRegistered,
    CallTimeout,
    MailboxFull,
    NodeClosed,
    NoProcError,
    NotInProcess,
    ProcessExit,
    ReplyNotSendable,
    ServerExited,
    Unregistered,
)
from .logs import Logger
from .mailbox import _EMPTY, DEFAULT_BOUND, DEFAULT_BUDGET, Mailbox
from .messages import Call, Cast, Down, Exit, From, NodeDown, NodeUp, TimerRef, UnsendableReply
from .pid import Name, Pid, Ref
from .reasons import (
    KILLED,
    NOPROC,
    NORMAL,
    Crashed,
    ExitReason,
    Kill,
    NoConnection,
    Shutdown,
)

log = structlog.get_logger("regency")

Dest = Pid | str | Name
"""Where a message can go: a pid, a locally registered name, or ``Name(name, node)``."""

DownCallback = Callable[[ExitReason], None]

_current_process: ContextVar[Process | None] = ContextVar("regency_process", default=None)
_current_node: ContextVar[Node | None] = ContextVar("regency_node", default=None)
_process_or_none: Final = _current_process.get
_current_mailbox: ContextVar[Mailbox | None] = ContextVar("regency_mailbox", default=None)
_mailbox_or_none: Final = _current_mailbox.get
"""The calling process's mailbox, or None: what the message fast paths need of it."""
"""The calling process, or None. Other modules call this rather than
``_current_process.get()``: on Python 3.11 a method call on an imported name compiles to
an attribute load that builds a bound method per call, about 30 ns on every message."""

TERMINATE_TIMEOUT = 5.0
"""Seconds a process's cleanup (GenServer ``terminate``) may take when it is stopped."""


class Remote(Protocol):
    """What a node asks of its distribution layer. Every method returns at once."""

    def send(self, to: Pid | Name, msg: object) -> None:
        """Send *msg* to a pid or name on another node (FIFO per sender/receiver pair)."""

    def link(self, frm: Pid, to: Pid) -> None:
        """Tell *to*'s node that local *frm* is now linked to it."""

    def unlink(self, frm: Pid, to: Pid) -> None:
        """Remove the link between local *frm* and remote *to*."""

    def exit(self, frm: Pid, to: Pid, reason: ExitReason, *, link: bool) -> None:
        """Deliver an exit signal (from a dying linked process when *link*)."""

    def monitor(self, ref: Ref, watcher: Pid | None, target: Pid | Name) -> None:
        """Ask *target*'s node to monitor it on behalf of local *watcher*."""

    def demonitor(self, ref: Ref, target: Pid | Name) -> None:
        """Cancel a monitor set with :meth:`monitor`."""

    def down(self, ref: Ref, target: Pid | Name, reason: ExitReason, watcher_node: str) -> None:
        """Tell *watcher_node* that the local process (or name) *target* it monitored is gone."""

    def reply(self, ref: Ref, value: object) -> None:
        """Deliver a call's reply to the node that made *ref*."""

    def call(self, ref: Ref, target: Pid | Name, request: object, caller: Pid | None) -> bool:
        """Monitor *target* on its node under *ref* for this node, then send it
        ``Call(ref, request, caller)``, in that order (one operation).

        Returns True if *target*'s node drops that monitor itself when it replies to
        *ref*: then a call answered needs no :meth:`demonitor`. Nothing is sent if it
        raises (as :meth:`send` raises).
        """

    def send_wait(self, to: Pid | Name, msg: object) -> Awaitable[None]:
        """Like :meth:`send`, waiting while the connection's buffer is full; await it."""

    def close(self) -> None:
        """Close every connection; called when the node stops."""


class _Monitor:
    """One monitor: *watcher* (None: the runtime itself) watches *target*."""

    __slots__ = ("callback", "ref", "target", "watcher")

    def __init__(
        self, ref: Ref, watcher: Pid | None, target: Pid | Name, callback: DownCallback | None
    ) -> None:
        self.ref = ref
        self.watcher = watcher
        self.target = target
        self.callback = callback


@final
class _ReplySlot(_Monitor, Parkable):
    """Where one pending call's reply (or its server's exit) lands.

    A local call registers the slot itself as its monitor on the server (``_fire_down``
    calls :meth:`fail`): one object per call instead of a slot, a monitor record and a
    bound method. A remote call's monitor holds :meth:`fail` as its callback instead.
    """

    __slots__ = ("_backend", "_waiter", "done", "reason", "timed_out", "value")

    def __init__(self, backend: Backend, ref: Ref | None, target: Pid | Name | None) -> None:
        # ref and target are set for a local call's slot (its own monitor record).
        self.ref = ref  # type: ignore[assignment]
        self.target = target  # type: ignore[assignment]
        self.watcher = None
        self.callback = None
        self._backend = backend
        self._waiter: Any = None
        self.done = False
        self.timed_out = False
        self.value: object = None
        self.reason: ExitReason | None = None

    def answer(self, value: object) -> None:
        """Answer the slot with *value* and wake its waiter, unless it is done already."""
        if not self.done:
            self.value = value
            self._finish()

    def fail(self, reason: ExitReason) -> None:
        """The server is gone (the call's monitor fired): wake the caller with *reason*."""
        if not self.done:
            self.reason = reason
            self._finish()

    def _finish(self) -> None:
        self.done = True
        w = self._waiter
        if w is not None:
            self._waiter = None
            self._backend.unpark(w)


@final
class _Timeouts(Parkable):
    """One task per node that times out pending calls: cheaper than a cancel scope per call.

    A call with a timeout pushes ``(deadline, seq, slot)`` on a heap; the task sleeps
    until the earliest deadline, marks slots that are still waiting as timed out and
    wakes them. Answered slots are dropped lazily: from the head when a call is added,
    and by rebuilding the heap when more than half of it is answered, so it stays
    proportional to the calls in flight.
    """

    __slots__ = ("_backend", "_closed", "_heap", "_next", "_seq", "_waiter")

    def __init__(self, backend: Backend) -> None:
        self._backend = backend
        self._heap: list[tuple[float, int, _ReplySlot]] = []
        self._seq = 0
        self._next = math.inf
        self._waiter: Any = None
        self._closed = False

    def add(self, slot: _ReplySlot, deadline: float) -> None:
        """Time *slot* out at *deadline* unless it is answered first."""
        heap = self._heap
        # Drop answered calls at the head now, not when the task next wakes: with one
        # timeout for every call the head is the oldest call, and an entry kept
        # alive for a thousand calls would only feed the garbage collector.
        while heap and heap[0][2].done:
            heapq.heappop(heap)
        self._seq += 1
        heapq.heappush(heap, (deadline, self._seq, slot))
        if len(heap) > 1024 and self._seq % 1024 == 0:
            live = [e for e in heap if not e[2].done]
            if len(live) * 2 < len(heap):
                heapq.heapify(live)
                self._heap = live
        if deadline < self._next:
            self._wake()

    def _wake(self) -> None:
        w = self._waiter
        if w is not None:
            self._waiter = None
            self._backend.unpark(w)

    def close(self) -> None:
        """Stop the task (the node is stopping)."""
        self._closed = True
        self._wake()

    async def run(self) -> None:
        """The task: sleep until the earliest deadline, time out what is still waiting."""
        backend = self._backend
        while not self._closed:
            heap = self._heap
            while heap and heap[0][2].done:
                heapq.heappop(heap)
            if not heap:
                self._next = math.inf
                await backend.park(self)
                continue
            deadline, _, slot = heap[0]
            if deadline <= backend.current_time():
                heapq.heappop(heap)
                slot.timed_out = True
                slot.done = True
                w = slot._waiter
                if w is not None:
                    slot._waiter = None
                    backend.unpark(w)
                continue
            self._next = deadline
            with backend.move_on_at(deadline):
                await backend.park(self)
            self._next = math.inf


def _no_clock() -> float:
    raise NodeClosed("the node is not running")


@final
class Process:
    """The runtime's record of one process. User code sees only its :class:`Pid`."""

    __slots__ = (
        "_idle",
        "_pending",
        "_scope",
        "alive",
        "links",
        "mailbox",
        "monitors",
        "name",
        "node",
        "pid",
        "trap_exit",
        "watchers",
    )

    def __init__(self, pid: Pid, node: Node, mailbox: Mailbox) -> None:
        self.pid = pid
        self.node = node
        self.mailbox = mailbox
        self.alive = True
        self.trap_exit = False
        self.name: str | None = None
        self.links: set[Pid] | None = None
        # Monitors others hold on us, by ref; a local call's monitor is keyed by its
        # reply slot itself (hashed by identity, cheaper than a Ref).
        self.watchers: dict[Ref | _ReplySlot, _Monitor] | None = None
        self.monitors: dict[Ref, Pid | Name] | None = None  # monitors we hold on others
        self._scope: CancelScope | None = None
        self._pending: ExitReason | None = None
        # Parked in a GenServer's receive loop with nothing to run on the way out (no
        # terminate callback): an exit signal that ends it may end it at once.
        self._idle = False

    def __repr__(self) -> str:
        return f"<Process {self.pid}{' ' + self.name if self.name else ''}>"


@final
class Node:
    """A runtime node: the processes of one OS process, under one name.

    Args:
        name: the node's name, unique in a cluster (``"a@host"`` by convention).
        mailbox_bound: default bound of each process's mailbox, in messages.
        creation: distinguishes this life of the node from earlier ones with the same
            name; drawn at random when not given.
    """

    def __init__(
        self,
        name: str = "nonode@nohost",
        *,
        mailbox_bound: int = DEFAULT_BOUND,
        creation: int | None = None,
    ) -> None:
        if not name:
            raise ValueError("a node needs a non-empty name")
        self.name = name
        self.creation = (
            creation if creation is not None else int.from_bytes(os.urandom(4), "big") or 1
        )
        self.mailbox_bound = mailbox_bound
        self.pid = Pid(name, 0, self.creation)  # the node itself, as a sender of signals
        self.dead_letters = 0
        self.remote: Remote | None = None
        self._procs: dict[int, Process] = {}
        self._names: dict[str, Pid] = {}
        self._remote_monitors: dict[Ref, _Monitor] = {}
        # The local servers of calls from other nodes not answered yet, by the call's
        # ref: the reply drops the call's monitor (see remote_call).
        self._served: dict[Ref, Process] = {}
        self._pending: dict[int, _ReplySlot] = {}
        self._timers: dict[int, CancelScope] = {}
        self._node_watchers: dict[Pid, Process] = {}  # monitor_nodes subscribers
        self._up: set[str] = set()  # nodes connected to (NodeUp given, NodeDown not yet)
        self._serial = 0
        self._budget = DEFAULT_BUDGET  # reductions of callers outside any process
        self._ref_serial = 0
        self._tg: TaskGroup | None = None
        self._timeouts: _Timeouts | None = None
        self._now: Callable[[], float] = _no_clock
        self._tg_cm: AbstractAsyncContextManager[TaskGroup] | None = None
        self._backend: Backend | None = None
        self._closing = False
        self._stopped = False
        self._node_token: Any = None
        # Bound lazily: structlog configured after the node is made still applies.
        self._log = Logger("regency", node=name)

    # -- lifecycle -------------------------------------------------------------------

    async def __aenter__(self) -> Node:
        if self._tg is not None:
            raise RuntimeError("a Node can be entered only once")
        self._backend = Backend.current()
        self._tg_cm = self._backend.open_task_group()
        self._tg = await self._tg_cm.__aenter__()
        self._timeouts = _Timeouts(self._backend)
        self._now = self._backend.clock()
        self._tg.start_soon(self._timeouts.run, name="regency.timeouts")
        self._node_token = _current_node.set(self)
        return self

    async def __aexit__(self, *exc_info: object) -> bool | None:
        try:
            self.stop()
        finally:
            try:
                _current_node.reset(self._node_token)
            except ValueError:  # exited from another context; nothing to restore
                pass
        assert self._tg_cm is not None
        return await self._tg_cm.__aexit__(*exc_info)  # type: ignore[arg-type]

    def stop(self) -> None:
        """Stop every process (reason ``Shutdown("node_stopped")``). Idempotent.

        Newest processes are stopped first. Nothing new can be spawned afterwards.
        Distribution stays up until the last process has ended, so the exit signals and
        ``Down`` messages of the processes that stop still reach other nodes.
        """
        self._closing = True
        reason = Shutdown("node_stopped")
        for proc in reversed(list(self._procs.values())):
            self._terminate(proc, reason)
        for scope in self._timers.values():
            scope.cancel()
        if not self._procs:
            self._finish_stop()

    def _finish_stop(self) -> None:
        """The last process of a stopping node has ended: close what served them."""
        if self._stopped:
            return
        self._stopped = True
        if self._timeouts is not None:
            self._timeouts.close()
        if self.remote is not None:
            self.remote.close()

    @property
    def closing(self) -> bool:
        """True once :meth:`stop` was called."""
        return self._closing

    # -- spawning --------------------------------------------------------------------

    def spawn(
        self,
        fn: Callable[..., Awaitable[Any]],
        *args: Any,
        link_to: Pid | None = None,
        trap_exit: bool = False,
        name: str | None = None,
        mailbox_bound: int | None = None,
    ) -> Pid:
        """Start ``fn(*args)`` as a new process and return its pid at once.

        Args:
            fn: an async function; the process ends when it returns (``Normal``),
                raises (``Crashed``) or calls ``runtime.exit(reason)``.
            link_to: link the new process to this pid before it runs (``spawn_link``).
            trap_exit: start with exits trapped.
            name: register the process under this local name before it runs.
            mailbox_bound: this process's mailbox bound (default: the node's).

        Raises:
            NodeClosed: the node is stopping.
            AlreadyRegistered: *name* is taken.
        """
        tg = self._tg
        if tg is None or self._closing:
            raise NodeClosed(f"node {self.name} is not running")
        if name is not None and name in self._names:
            raise AlreadyRegistered(f"name {name!r} is registered to {self._names[name]}")
        self._serial += 1
        pid = Pid(self.name, self._serial, self.creation)
        assert self._backend is not None
        proc = Process(pid, self, Mailbox(pid, self._backend, mailbox_bound or self.mailbox_bound))
        proc.trap_exit = trap_exit
        self._procs[pid.serial] = proc
        if name is not None:
            self._names[name] = pid
            proc.name = name
        if link_to is not None:
            self._link(link_to, proc)
        tg.start_soon(self._run, proc, fn, args, name="regency.process")
        return pid

    async def _run(self, proc: Process, fn: Callable[..., Awaitable[Any]], args: Any) -> None:
        _current_process.set(proc)
        _current_mailbox.set(proc.mailbox)
        reason: ExitReason | None = proc._pending
        try:
            if reason is None:
                assert self._backend is not None
                with self._backend.cancel_scope() as scope:
                    proc._scope = scope
                    try:
                        await fn(*args)
                        reason = NORMAL
                    except ProcessExit as e:
                        reason = e.reason
                    except Exception as e:
                        reason = Crashed.from_exception(e)
                if proc._pending is not None:  # an exit signal landed
                    reason = proc._pending
        finally:
            if reason is None:  # cancelled from outside the runtime
                reason = proc._pending or Shutdown("cancelled")
            if isinstance(reason, Kill):
                reason = KILLED
            if proc.alive:  # not already ended by the signal itself (see exit)
                self._exit(proc, reason)

    def _exit(self, proc: Process, reason: ExitReason) -> None:
        """Everything that happens when a process ends: links, monitors, names, report."""
        proc.alive = False
        self._procs.pop(proc.pid.serial, None)
        if proc.name is not None and self._names.get(proc.name) == proc.pid:
            del self._names[proc.name]
        left = proc.mailbox.close()
        if self._node_watchers:
            self._node_watchers.pop(proc.pid, None)
        if proc.monitors:
            for ref, target in list(proc.monitors.items()):
                self._demonitor(ref, target, proc)
        if proc.links:
            pid = proc.pid
            for other in list(proc.links):
                if other.node == self.name:
                    partner = self._lookup(other)
                    if partner is not None:
                        if partner.links:
                            partner.links.discard(pid)
                        self._signal(partner, pid, reason, link=True)
                elif self.remote is not None:
                    self.remote.exit(pid, other, reason, link=True)
        if proc.watchers:
            for rec in list(proc.watchers.values()):
                self._fire_down(rec, reason)
        if isinstance(reason, Crashed):
            # A local crash is logged with exc_info, not a formatted traceback:
            # structlog renders it only when the event passes the level filter
            # (format_exc_info, dict_tracebacks, or the console renderer), so a
            # filtered crash report costs no formatting. A crash that came over the
            # wire has only the sender's text. A level filtered out costs no event.
            if self._log.enabled("error"):
                self._log_crash(proc, reason, left)
        elif not reason.is_orderly and self._log.enabled("info"):
            self._log.info("process_exited", pid=str(proc.pid), name=proc.name, reason=str(reason))
        if self._closing and not self._procs:
            self._finish_stop()  # after this process's signals went out

    def _log_crash(self, proc: Process, reason: Crashed, left: int) -> None:
        self._log.error(
            "process_crashed",
            pid=str(proc.pid),
            name=proc.name,
            reason=str(reason),
            dropped_messages=left,
            **(
                {"exc_info": reason.exc}
                if reason.exc is not None
                else {"traceback": reason.traceback}
            ),
        )

    def _lookup(self, pid: Pid) -> Process | None:
        proc = self._procs.get(pid.serial)
        if proc is None or pid.creation != self.creation or pid.node != self.name:
            return None
        return proc

    def process(self, pid: Pid) -> Process:
        """The live local process *pid*. Raises NoProcError if it is not alive here."""
        proc = self._lookup(pid)
        if proc is None:
            raise NoProcError(f"no live process {pid} on {self.name}")
        return proc

    def is_alive(self, pid: Pid) -> bool:
        """True if *pid* is a live process of this node."""
        return self._lookup(pid) is not None

    @property
    def process_count(self) -> int:
        """How many processes are alive on this node."""
        return len(self._procs)

    # -- exit signals ----------------------------------------------------------------

    def _terminate(self, proc: Process, reason: ExitReason) -> None:
        if not proc.alive or proc._pending is not None:
            return
        proc._pending = reason
        if proc._scope is not None:
            assert self._backend is not None
            self._backend.interrupt(proc.mailbox, proc._scope, ProcessExit(reason))

    def _signal(self, target: Process, frm: Pid, reason: ExitReason, *, link: bool) -> None:
        """Deliver one exit signal to a local process, as Erlang does."""
        if not target.alive:
            return
        if isinstance(reason, Kill) and not link:
            self._terminate(target, KILLED)
        elif target.trap_exit:
            target.mailbox.force(Exit(frm, KILLED if isinstance(reason, Kill) else reason))
        elif reason.is_normal:
            if frm == target.pid:
                self._terminate(target, reason)
        else:
            self._terminate(target, KILLED if isinstance(reason, Kill) else reason)

    def exit(self, pid: Pid, reason: ExitReason, *, frm: Pid | None = None) -> None:
        """Send the exit signal *reason* to *pid* (Erlang's ``exit/2``).

        ``Kill()`` ends the process ``Killed`` even if it traps exits. ``Normal()`` is
        ignored unless the process traps exits. A dead pid is ignored.
        """
        sender = frm if frm is not None else self.pid
        if pid.node == self.name:
            proc = self._lookup(pid)
            if proc is not None:
                mb = proc.mailbox
                idle = proc._idle and proc._pending is None and mb._waiter is not None
                self._signal(proc, sender, reason, link=False)
                # The signal ended an idle server: it rescheduled the parked task with
                # the reason raised (trio).
                if idle and proc._pending is not None and mb._waiter is None:
                    # An idle GenServer (see ``Process._idle``) woken that way has
                    # nothing left to run: its task only unwinds through the runtime's
                    # own frames. Its end (links, monitors, name, report) is the same now
                    # as when the task gets there, a scheduler pass or two later, and
                    # Erlang allows it: a signal to a process waiting in ``receive``
                    # takes effect at once. So the sender sees the end at once
                    # (``exit_and_wait`` need not park), and the task, when it unwinds,
                    # finds the process already ended (``_run``).
                    self._exit(proc, proc._pending)
        elif self.remote is not None:
            self.remote.exit(sender, pid, reason, link=False)

    def set_trap_exit(self, pid: Pid, flag: bool) -> bool:
        """Set whether local *pid* traps exits; returns the old value."""
        proc = self.process(pid)
        old, proc.trap_exit = proc.trap_exit, flag
        return old

    # -- links -----------------------------------------------------------------------

    def link(self, a: Pid, b: Pid) -> None:
        """Link local process *a* with *b* (local or remote). Idempotent.

        If *b* is not alive, *a* gets an exit signal ``NoProc()`` (``NoConnection`` for an
        unreachable node), as Erlang's ``link/1`` does.
        """
        self._link(b, self.process(a))

    def _link(self, other: Pid, proc: Process) -> None:
        if other == proc.pid:
            return
        if other.node == self.name:
            target = self._lookup(other)
            if target is None:
                self._signal(proc, other, NOPROC, link=True)
                return
            if target.links is None:
                target.links = set()
            target.links.add(proc.pid)
        elif self.remote is None:
            self._signal(proc, other, NoConnection(other.node), link=True)
            return
        else:
            self.remote.link(proc.pid, other)
        if proc.links is None:
            proc.links = set()
        proc.links.add(other)

    def unlink(self, a: Pid, b: Pid) -> None:
        """Remove the link between local *a* and *b*, if any. Idempotent."""
        proc = self._lookup(a)
        if proc is not None and proc.links:
            proc.links.discard(b)
        if b.node == self.name:
            other = self._lookup(b)
            if other is not None and other.links:
                other.links.discard(a)
        elif self.remote is not None:
            self.remote.unlink(a, b)

    # -- monitors --------------------------------------------------------------------

    def make_ref(self) -> Ref:
        """A new reference, unique to this node's life."""
        self._ref_serial += 1
        return Ref(self.name, self._ref_serial, self.creation)

    def monitor(
        self, watcher: Pid | None, target: Pid | Name | str, *, callback: DownCallback | None = None
    ) -> Ref:
        """Monitor *target* for *watcher*; returns the monitor's ref.

        The watcher gets one ``Down(ref, pid, reason)`` message when the target ends, at
        once with ``NoProc()`` if it is not alive (or the name is not registered). With
        *callback*, the callback is called with the reason instead of a message.
        """
        ref = self.make_ref()
        wproc = self._lookup(watcher) if watcher is not None else None
        if isinstance(target, str) or (
            isinstance(target, Name) and target.node in (None, self.name)
        ):
            name = target if isinstance(target, str) else target.name
            target_pid = self._names.get(name)
            rec = _Monitor(ref, watcher, Name(name, self.name), callback)
        elif isinstance(target, Name):
            rec = _Monitor(ref, watcher, target, callback)
            return self._monitor_remote(rec, wproc, target)
        else:
            target_pid = target
            rec = _Monitor(ref, watcher, target, callback)
            if target.node != self.name:
                return self._monitor_remote(rec, wproc, target)
        tproc = self._lookup(target_pid) if target_pid is not None else None
        if wproc is not None and tproc is not None:
            if wproc.monitors is None:
                wproc.monitors = {}
            wproc.monitors[ref] = tproc.pid
        if tproc is None:
            self._fire_down(rec, NOPROC)
        else:
            if tproc.watchers is None:
                tproc.watchers = {}
            tproc.watchers[ref] = rec
        return ref

    def _monitor_remote(self, rec: _Monitor, wproc: Process | None, target: Pid | Name) -> Ref:
        if wproc is not None:
            if wproc.monitors is None:
                wproc.monitors = {}
            wproc.monitors[rec.ref] = target
        self._remote_monitors[rec.ref] = rec
        if self.remote is None:
            node = target.node if isinstance(target, Pid) else str(target.node)
            self._fire_down(rec, NoConnection(node))
        else:
            self.remote.monitor(rec.ref, rec.watcher, target)
        return rec.ref

    def demonitor(self, ref: Ref) -> bool:
        """Cancel a monitor; returns False if it had already fired or was cancelled."""
        rec = self._remote_monitors.get(ref)
        if rec is not None:
            wproc = self._lookup(rec.watcher) if rec.watcher else None
            return self._demonitor(ref, rec.target, wproc)
        me = _current_process.get()
        if me is not None and me.monitors and ref in me.monitors:
            return self._demonitor(ref, me.monitors[ref], me)
        for proc in (p for p in self._procs.values() if p.watchers and ref in p.watchers):
            rec = proc.watchers.pop(ref) if proc.watchers else None
            if rec is not None and rec.watcher is not None:
                wproc = self._lookup(rec.watcher)
                if wproc is not None and wproc.monitors:
                    wproc.monitors.pop(ref, None)
            return True
        return False

    def _demonitor(self, ref: Ref, target: Pid | Name, wproc: Process | None) -> bool:
        if wproc is not None and wproc.monitors:
            wproc.monitors.pop(ref, None)
        rec = self._remote_monitors.pop(ref, None)
        if rec is not None:
            if self.remote is not None:
                self.remote.demonitor(ref, target)
            return True
        if isinstance(target, Pid):
            tproc = self._lookup(target)
            if tproc is not None and tproc.watchers:
                return tproc.watchers.pop(ref, None) is not None
        return False

    def _fire_down(self, rec: _Monitor, reason: ExitReason) -> None:
        if type(rec) is _ReplySlot:  # a call's monitor on its server, local or remote
            if rec.target.node != self.name:
                self._remote_monitors.pop(rec.ref, None)
            rec.fail(reason)
            return
        self._remote_monitors.pop(rec.ref, None)
        if rec.callback is not None:
            rec.callback(reason)
            return
        watcher = rec.watcher
        if watcher is None:
            return
        if watcher.node != self.name:
            if self._served:
                self._served.pop(rec.ref, None)
            if self.remote is not None:
                self.remote.down(rec.ref, rec.target, reason, watcher.node)
            return
        wproc = self._lookup(watcher)
        if wproc is not None:
            if wproc.monitors:
                wproc.monitors.pop(rec.ref, None)
            wproc.mailbox.force(Down(rec.ref, rec.target, reason))

    # -- names -----------------------------------------------------------------------

    def register(self, name: str, pid: Pid) -> None:
        """Register local *pid* under *name*; freed when the process ends.

        Raises:
            AlreadyRegistered: the name is taken, or the process already has a name.
            NoProcError: *pid* is not alive on this node.
        """
        proc = self.process(pid)
        if name in self._names:
            raise AlreadyRegistered(f"name {name!r} is registered to {self._names[name]}")
        if proc.name is not None:
            raise AlreadyRegistered(f"{pid} is already registered as {proc.name!r}")
        self._names[name] = pid
        proc.name = name

    def unregister(self, name: str) -> None:
        """Remove *name*. Raises NoProcError if it is not registered."""
        pid = self._names.pop(name, None)
        if pid is None:
            raise NoProcError(f"name {name!r} is not registered on {self.name}")
        proc = self._lookup(pid)
        if proc is not None:
            proc.name = None

    def whereis(self, name: str) -> Pid | None:
        """The pid registered under *name* on this node, or None."""
        return self._names.get(name)

    def registered(self) -> list[str]:
        """All names registered on this node."""
        return list(self._names)

    # -- sending ---------------------------------------------------------------------

    def _resolve(self, dest: Dest) -> Pid | Name:
        if isinstance(dest, str):
            pid = self._names.get(dest)
            if pid is None:
                raise NoProcError(f"name {dest!r} is not registered on {self.name}")
            return pid
        if isinstance(dest, Name) and (dest.node is None or dest.node == self.name):
            pid = self._names.get(dest.name)
            if pid is None:
                raise NoProcError(f"name {dest.name!r} is not registered on {self.name}")
            return pid
        return dest

    def send(self, dest: Dest, msg: object) -> None:
        """Send *msg* to *dest* without waiting (Erlang's ``!``).

        A message to a dead local pid is discarded and counted in ``dead_letters``, as in
        Erlang; a message to an unreachable node is discarded likewise.

        Raises:
            MailboxFull: the receiver's mailbox is at its bound; nothing was enqueued.
            NoProcError: *dest* is a name that is not registered.
        """
        to = dest if type(dest) is Pid else self._resolve(dest)
        if to.node == self.name and type(to) is Pid:
            proc = self._procs.get(to.serial)
            if proc is not None and to.creation == self.creation:
                proc.mailbox.put(msg)
            else:
                self.dead_letters += 1
        elif self.remote is not None:
            self.remote.send(to, msg)
        else:
            self.dead_letters += 1

    def send_wait(self, dest: Dest, msg: object) -> Awaitable[None]:
        """Send *msg*, waiting for room if the receiver's mailbox is full (backpressure);
        await it.

        To another node it is the distribution's ``send_wait`` itself: no coroutine of
        this node's per message.
        """
        to = dest if type(dest) is Pid else self._resolve(dest)
        if to.node != self.name and self.remote is not None:
            return self.remote.send_wait(to, msg)
        return self._send_wait_here(to, msg)

    async def _send_wait_here(self, to: Pid | Name, msg: object) -> None:
        if to.node == self.name and type(to) is Pid:
            proc = self._procs.get(to.serial)
            if proc is not None and to.creation == self.creation:
                mb = proc.mailbox
                if len(mb._q) < mb.bound:
                    mb.put(msg)
                    # One reduction, charged inline: this is the hot path of a sender.
                    me = _current_process.get()
                    if me is not None:
                        own = me.mailbox
                        own._budget -= 1
                        if own._budget > 0:
                            return
                        own._budget = DEFAULT_BUDGET
                        assert self._backend is not None
                        await self._backend.checkpoint()
                    else:
                        await self._budget_checkpoint()
                else:
                    await mb.put_wait(msg)
            else:
                self.dead_letters += 1
        else:  # another node, and no distribution to reach it
            self.dead_letters += 1

    def _charge(self) -> bool:
        """Charge the caller one reduction; True when its budget is spent: it must yield
        (``await checkpoint()``)."""
        proc = _current_process.get()
        if proc is not None:
            mb = proc.mailbox
            mb._budget -= 1
            if mb._budget > 0:
                return False
            mb._budget = DEFAULT_BUDGET
            return True
        self._budget -= 1
        if self._budget > 0:
            return False
        self._budget = DEFAULT_BUDGET
        return True

    def _checkpoint(self) -> Awaitable[None]:
        """Yield to the scheduler once (the running loop's checkpoint); await it."""
        assert self._backend is not None
        return self._backend.checkpoint()

    async def _budget_checkpoint(self) -> None:
        """Charge one reduction to the caller; yield when its budget is spent."""
        if self._charge():
            await self._checkpoint()

    async def deliver(self, to: Pid | str, msg: object) -> None:
        """Deliver *msg* that arrived from another node, waiting while the mailbox is full.

        Used by the distribution layer, so a full mailbox slows the connection (TCP
        backpressure) instead of losing the message.
        """
        pid = self._names.get(to) if isinstance(to, str) else to
        proc = self._lookup(pid) if pid is not None else None
        if proc is None:
            self.dead_letters += 1
            return
        mb = proc.mailbox
        if len(mb) < mb.bound:
            mb.put(msg)
        else:
            await mb.put_wait(msg)

    async def deliver_many(self, to: Pid, msgs: list[object]) -> None:
        """Deliver *msgs*, in order, as :meth:`deliver` delivers each (for a run of
        messages from one connection to one process)."""
        proc = self._lookup(to)
        if proc is None:
            self.dead_letters += len(msgs)
            return
        mb = proc.mailbox
        i, n = 0, len(msgs)
        while True:
            room = mb.bound - len(mb)
            if room > 0:
                # put() makes the queue and wakes the receiver; the rest join it at C speed.
                j = min(n, i + room)
                mb.put(msgs[i])
                if j > i + 1:
                    mb._q.extend(islice(msgs, i + 1, j))
                i = j
            if i == n:
                return
            await mb.put_wait(msgs[i])  # full: wait for room, as deliver() does
            i += 1
            if i == n:
                return
            if mb.closed:  # the process ended meanwhile: the rest are dead letters
                self.dead_letters += n - i
                return

    # -- calls and replies -----------------------------------------------------------

    async def start_server(
        self,
        server: Any,
        *args: Any,
        name: str | None = None,
        link: bool = False,
        timeout: float | None = 5.0,
    ) -> Pid:
        """Start a GenServer on this node; see :func:`runtime.genserver.start_server`."""
        start = _start_server if _start_server is not None else _load_start_server()
        return await start(self, server, *args, name=name, link=link, timeout=timeout)

    async def call(self, dest: Dest, request: object, timeout: float | None = 5.0) -> Any:
        """Call the GenServer at *dest* and wait for its reply.

        The server is monitored for the duration of the call, so a server that is dead,
        or dies before replying, fails the call at once.

        Raises:
            ServerExited: the server was dead or exited first; ``.reason`` says why.
            CallTimeout: no reply within *timeout* seconds (``None``: wait forever).
            MailboxFull: the server's mailbox is at its bound.
        """
        target: Pid | Name | None
        if type(dest) is Pid:
            target = dest
        elif type(dest) is str:  # a local name: no NoProcError to build and convert
            target = self._names.get(dest)
            if target is None:
                raise ServerExited(NOPROC)
        else:
            try:
                target = self._resolve(dest)
            except NoProcError:
                raise ServerExited(NOPROC) from None
        caller = _current_process.get()
        caller_pid = caller.pid if caller is not None else None
        if type(target) is not Pid or target.node != self.name:
            return await self._call_remote(target, request, caller_pid, timeout)
        # A server on this node: the protocol of _call_remote, inlined (this is the hot
        # path of every local call): the reply slot is itself the call's monitor record.
        proc = self._procs.get(target.serial)
        if proc is None or target.creation != self.creation:
            raise ServerExited(NOPROC)
        self._ref_serial += 1
        serial = self._ref_serial
        ref = Ref(self.name, serial, self.creation)
        backend = self._backend
        assert backend is not None
        slot = _ReplySlot(backend, ref, target)
        watchers = proc.watchers
        if watchers is None:
            watchers = proc.watchers = {}
        watchers[slot] = slot
        pending = self._pending
        pending[serial] = slot
        try:
            mb = proc.mailbox  # Mailbox.put inlined
            q = mb._q
            if len(q) >= mb.bound or q is _EMPTY:
                mb.put(Call(ref, request, caller_pid))
            else:
                q.append(Call(ref, request, caller_pid))
                w = mb._waiter
                if w is not None:
                    mb._waiter = None
                    backend.unpark(w)
            if timeout is not None:
                assert self._timeouts is not None
                self._timeouts.add(slot, self._now() + timeout)
            park = backend.park
            while not slot.done:
                await park(slot)
        finally:
            del pending[serial]
            if proc.watchers is not None:
                proc.watchers.pop(slot, None)
        if slot.reason is None and not slot.timed_out and type(slot.value) is not UnsendableReply:
            return slot.value
        return _slot_outcome(slot, timeout)

    async def _call_remote(
        self, target: Pid | Name, request: object, caller: Pid | None, timeout: float | None
    ) -> Any:
        """A call to a server on another node: monitor it and send the call (one
        operation, see ``Remote.call``), wait for the reply.

        The reply slot is itself the call's monitor record, kept with the monitors on
        other nodes: a DOWN or a lost connection fails it as it fails any monitor.
        """
        node = target.node if type(target) is Pid else str(target.node)
        remote = self.remote
        if remote is None:  # a monitor on an unreachable node fires at once
            raise ServerExited(NoConnection(node))
        self._ref_serial += 1
        serial = self._ref_serial
        ref = Ref(self.name, serial, self.creation)
        backend = self._backend
        assert backend is not None
        slot = _ReplySlot(backend, ref, target)
        monitors = self._remote_monitors
        monitors[ref] = slot
        pending = self._pending
        pending[serial] = slot
        try:
            dropped = remote.call(ref, target, request, caller)
        except BaseException:
            del pending[serial]
            monitors.pop(ref, None)
            raise
        try:
            return await self._wait_slot(slot, timeout)
        finally:
            del pending[serial]
            # Answered: the server's node dropped the monitor when it replied.
            if monitors.pop(ref, None) is not None and not (
                dropped and slot.done and slot.reason is None and not slot.timed_out
            ):
                remote.demonitor(ref, target)

    async def exit_and_wait(
        self, pid: Pid, reason: ExitReason, *, frm: Pid | None = None, timeout: float | None = None
    ) -> ExitReason:
        """Send *pid* the exit signal *reason* and wait until it has ended; return how.

        The process is monitored first, so its end is never missed, and the wait takes
        no message from any mailbox. A pid that is already dead returns ``NoProc()`` at
        once, without a signal (``NoConnection`` when its node is unreachable). This is
        the shutdown step of a supervisor (OTP's ``shutdown/2``), and ``proc_lib:stop``.

        Raises:
            CallTimeout: it had not ended within *timeout* seconds; it keeps running.
        """
        if pid.node == self.name:  # a local process: its slot is its own monitor record
            proc = self._lookup(pid)
            if proc is None:
                return NOPROC
            slot = self._watch(proc)
            try:
                self.exit(pid, reason, frm=frm)
                if slot.done:
                    # It ended at once (an idle server): one reduction charged, so
                    # stopping many in a row still yields now and then.
                    if self._charge():
                        await self._checkpoint()
                else:  # the end is the slot's reason, not a ServerExited to catch
                    await self._park_until_done(slot, timeout)
            finally:
                self._unwatch(proc, slot)
            if slot.timed_out:
                raise CallTimeout(f"no reply within {timeout} s")
            if slot.reason is None:
                raise AssertionError(f"the monitor slot of {pid} got a value")
            return slot.reason
        ref, slot = self._open_slot(None, pid)
        try:
            if not slot.done:
                self.exit(pid, reason, frm=frm)
            await self._wait_slot(slot, timeout)
        except ServerExited as e:
            return e.reason
        finally:
            self._close_slot(ref, pid)
        raise AssertionError(f"the monitor slot of {pid} got a value")

    def _watch(self, proc: Process) -> _ReplySlot:
        """A slot that fails with *proc*'s exit reason when it ends.

        The slot is itself the monitor record, as a local call's is: no ref, no
        ``Down``. Drop it with :meth:`_unwatch`. A starting server also answers it
        (:meth:`_ReplySlot.answer`) once its ``init`` is done.
        """
        assert self._backend is not None
        slot = _ReplySlot(self._backend, None, proc.pid)
        watchers = proc.watchers
        if watchers is None:
            watchers = proc.watchers = {}
        watchers[slot] = slot
        return slot

    @staticmethod
    def _unwatch(proc: Process, slot: _ReplySlot) -> None:
        if proc.watchers:
            proc.watchers.pop(slot, None)

    def _open_slot(self, watcher: Pid | None, target: Pid | Name) -> tuple[Ref, _ReplySlot]:
        assert self._backend is not None
        slot = _ReplySlot(self._backend, None, None)
        ref = self.monitor(None, target, callback=slot.fail)
        self._pending[ref.serial] = slot
        return ref, slot

    def _close_slot(self, ref: Ref, target: Pid | Name) -> None:
        del self._pending[ref.serial]
        self._demonitor(ref, target, None)

    async def _wait_slot(self, slot: _ReplySlot, timeout: float | None) -> Any:
        """The value *slot* is answered with, or the error that ended it."""
        if not slot.done:
            await self._park_until_done(slot, timeout)
        return _slot_outcome(slot, timeout)

    async def _park_until_done(self, slot: _ReplySlot, timeout: float | None) -> None:
        """Park until *slot* is done: answered, failed, or timed out after *timeout*."""
        if timeout is not None:
            assert self._timeouts is not None
            self._timeouts.add(slot, self._now() + timeout)
        park = slot._backend.park
        while not slot.done:
            await park(slot)

    def reply(self, to: From | Ref, value: object) -> None:
        """Reply to the call *to* (a GenServer's ``from_``, or its ref), from any process.

        A reply to a call that already timed out is discarded.
        """
        ref = to.ref if type(to) is From else to
        assert isinstance(ref, Ref)
        if ref.node != self.name:
            served = self._served
            if served:
                # The call's monitor ends with its reply (see remote_call).
                proc = served.pop(ref, None)
                if proc is not None and proc.watchers:
                    proc.watchers.pop(ref, None)
            if self.remote is not None:
                try:
                    self.remote.reply(ref, value)
                except (Unregistered, TypeError, ValueError) as e:
                    # The caller must learn why, and the replying server must not crash.
                    self._log.warning("reply_not_sendable", ref=str(ref), error=str(e))
                    self.remote.reply(ref, UnsendableReply(type(value).__qualname__, str(e)))
            return
        slot = self._pending.get(ref.serial)
        if slot is None or slot.done or ref.creation != self.creation:
            return
        slot.done = True
        slot.value = value
        w = slot._waiter
        if w is not None:
            slot._waiter = None
            assert self._backend is not None
            self._backend.unpark(w)

    def cast(self, dest: Dest, msg: object) -> None:
        """Send a GenServer cast; never fails because the server is dead (as OTP)."""
        try:
            self.send(dest, Cast(msg))
        except NoProcError:
            self.dead_letters += 1

    # -- timers ----------------------------------------------------------------------

    def send_after(self, delay: float, dest: Dest, msg: object) -> TimerRef:
        """Send *msg* to *dest* after *delay* seconds; cancel with :meth:`cancel_timer`.

        If the receiver's mailbox is full when the timer fires, the timer waits for room
        rather than dropping the message.
        """
        if self._tg is None or self._closing:
            raise NodeClosed(f"node {self.name} is not running")
        ref = self.make_ref()
        assert self._backend is not None
        scope = self._backend.cancel_scope()
        self._timers[ref.serial] = scope
        self._tg.start_soon(self._fire_timer, ref, scope, delay, dest, msg, name="regency.timer")
        return TimerRef(ref)

    async def _fire_timer(
        self, ref: Ref, scope: CancelScope, delay: float, dest: Dest, msg: object
    ) -> None:
        with scope:
            await anyio.sleep(delay)
            self._timers.pop(ref.serial, None)
            try:
                await self.send_wait(dest, msg)
            except NoProcError:
                self.dead_letters += 1
        self._timers.pop(ref.serial, None)

    def cancel_timer(self, timer: TimerRef) -> bool:
        """Cancel a timer; returns False if it already fired or was cancelled."""
        scope = self._timers.pop(timer.ref.serial, None)
        if scope is None:
            return False
        scope.cancel()
        return True

    # -- incoming from other nodes ---------------------------------------------------

    def remote_link(self, frm: Pid, to: Pid) -> None:
        """A remote process *frm* linked itself to local *to*."""
        proc = self._lookup(to)
        if proc is None:
            if self.remote is not None:
                self.remote.exit(to, frm, NOPROC, link=True)
            return
        if proc.links is None:
            proc.links = set()
        proc.links.add(frm)

    def remote_unlink(self, frm: Pid, to: Pid) -> None:
        """A remote process *frm* removed its link to local *to*."""
        proc = self._lookup(to)
        if proc is not None and proc.links:
            proc.links.discard(frm)

    def remote_exit(self, frm: Pid, to: Pid, reason: ExitReason, *, link: bool) -> None:
        """An exit signal from a remote process arrived for local *to*."""
        proc = self._lookup(to)
        if proc is None:
            return
        if link:
            if not proc.links or frm not in proc.links:
                return  # the link was removed meanwhile: the signal is stale
            proc.links.discard(frm)
        self._signal(proc, frm, reason, link=link)

    def remote_monitor(self, ref: Ref, watcher: Pid | None, target: Pid | str) -> None:
        """A remote *watcher* monitors local *target*; DOWN goes back over the wire."""
        tpid = self._names.get(target) if isinstance(target, str) else target
        tproc = self._lookup(tpid) if tpid is not None else None
        rec = _Monitor(
            ref, watcher, Name(target, self.name) if isinstance(target, str) else target, None
        )
        if tproc is None:
            if self.remote is not None:
                self.remote.down(ref, rec.target, NOPROC, ref.node)
            return
        if tproc.watchers is None:
            tproc.watchers = {}
        tproc.watchers[ref] = rec

    async def remote_call(
        self, ref: Ref, watcher: Pid, target: Pid | str, request: object, caller: Pid | None
    ) -> None:
        """A call from another node (``Remote.call``): *watcher* (that node) monitors
        local *target* under *ref* until the reply to *ref* leaves, then
        ``Call(ref, request, caller)`` is delivered as :meth:`deliver` delivers.
        """
        tpid = self._names.get(target) if isinstance(target, str) else target
        tproc = self._lookup(tpid) if tpid is not None else None
        if tproc is None:
            self.dead_letters += 1
            if self.remote is not None:
                what = Name(target, self.name) if isinstance(target, str) else target
                self.remote.down(ref, what, NOPROC, ref.node)
            return
        watchers = tproc.watchers
        if watchers is None:
            watchers = tproc.watchers = {}
        watchers[ref] = _Monitor(ref, watcher, tproc.pid, None)
        self._served[ref] = tproc
        mb = tproc.mailbox
        if len(mb) < mb.bound:
            mb.put(Call(ref, request, caller))
        else:
            await mb.put_wait(Call(ref, request, caller))

    def remote_demonitor(self, ref: Ref, target: Pid | str) -> None:
        """A remote watcher cancelled its monitor on local *target*."""
        if self._served:
            self._served.pop(ref, None)
        tpid = self._names.get(target) if isinstance(target, str) else target
        tproc = self._lookup(tpid) if tpid is not None else None
        if tproc is not None and tproc.watchers:
            tproc.watchers.pop(ref, None)
        elif tproc is None:  # by ref alone, when a name was used
            for proc in self._procs.values():
                if proc.watchers and ref in proc.watchers:
                    del proc.watchers[ref]
                    break

    def remote_down(self, ref: Ref, reason: ExitReason) -> None:
        """A process this node monitors on another node is gone."""
        rec = self._remote_monitors.pop(ref, None)
        if rec is None:
            return
        self._fire_down(rec, reason)

    def monitor_nodes(self, pid: Pid, flag: bool = True) -> None:
        """Subscribe (or with ``flag=False`` unsubscribe) *pid* to connection events.

        A subscriber receives ``NodeUp(node)`` each time a connection to another node
        is established, and ``NodeDown(node)`` each time one is lost, as Erlang's
        ``net_kernel:monitor_nodes(true)`` delivers ``{nodeup, Node}`` and
        ``{nodedown, Node}``. Subscribing twice is one subscription; it ends with the
        process.

        Raises:
            NoProcError: *pid* is not a live process of this node.
        """
        proc = self._lookup(pid) if pid.node == self.name else None
        if flag:
            if proc is None:
                raise NoProcError(f"{pid} is not a live process on {self.name}")
            self._node_watchers[pid] = proc
        else:
            self._node_watchers.pop(pid, None)

    def node_up(self, node: str) -> None:
        """A connection to *node* is established: tell the ``monitor_nodes`` subscribers."""
        self._up.add(node)
        if self._node_watchers:
            msg = NodeUp(node)
            for proc in list(self._node_watchers.values()):
                proc.mailbox.force(msg)

    def node_down(self, node: str) -> None:
        """The connection to *node* is lost: fire its links and monitors with ``NoConnection``.

        Monitors on that node's processes deliver ``Down(..., NoConnection(node))``;
        local processes linked to its processes get the exit signal ``NoConnection(node)``;
        its processes' monitors on local processes are forgotten. Then, if *node* was
        connected (``node_up``), each ``monitor_nodes`` subscriber receives
        ``NodeDown(node)``; a connection attempt that failed tells them nothing.
        """
        reason = NoConnection(node)
        for rec in [r for r in self._remote_monitors.values() if _node_of(r) == node]:
            self._fire_down(rec, reason)
        for proc in list(self._procs.values()):
            if proc.watchers:
                for ref in [
                    r for r, m in proc.watchers.items() if m.watcher and m.watcher.node == node
                ]:
                    self._served.pop(proc.watchers.pop(ref).ref, None)
            if proc.links:
                gone = [p for p in proc.links if p.node == node]
                for p in gone:
                    proc.links.discard(p)
                    self._signal(proc, p, reason, link=True)
        if node in self._up:
            self._up.discard(node)
            msg = NodeDown(node)
            for wproc in list(self._node_watchers.values()):
                wproc.mailbox.force(msg)
            self._log.warning("node_down", peer=node)
        else:  # a dial that failed, or a node never reached: nothing went down
            self._log.debug("node_down", peer=node)


_start_server: Callable[..., Awaitable[Pid]] | None = None
"""runtime.genserver.start_server, imported on first use (genserver imports this module):
an import statement per start cost as much as a tenth of the start."""


def _load_start_server() -> Callable[..., Awaitable[Pid]]:
    global _start_server
    from .genserver import start_server

    _start_server = start_server
    return start_server


def _slot_outcome(slot: _ReplySlot, timeout: float | None) -> Any:
    """The value of an answered call, or the error that ended it."""
    if slot.timed_out:
        raise CallTimeout(f"no reply within {timeout} s")
    if slot.reason is not None:
        raise ServerExited(slot.reason)
    value = slot.value
    if type(value) is UnsendableReply:
        raise ReplyNotSendable(f"the {value.kind} reply could not travel: {value.error}")
    return value


def _node_of(rec: _Monitor) -> str | None:
    return rec.target.node


def current_process() -> Process:
    """The process this code runs in. Raises NotInProcess outside a process."""
    proc = _current_process.get()
    if proc is None:
        raise NotInProcess("this must be called from inside a process")
    return proc


def current_node() -> Node:
    """The node of the current process, or the innermost ``async with Node()`` block."""
    proc = _current_process.get()
    if proc is not None:
        return proc.node
    node = _current_node.get()
    if node is None:
        raise NotInProcess("no current node: call this inside a process or `async with Node()`")
    return node


__all__ = [
    "Dest",
    "MailboxFull",
    "Node",
    "Process",
    "Remote",
    "current_node",
    "current_process",
]
