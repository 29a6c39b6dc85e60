"""Erlang-style functions for code running inside a process.

Each acts for the calling process on its node: ``send``, ``receive``, ``spawn_link``,
``monitor``... Outside a process, inside an ``async with Node()`` block, the functions
that need no calling process (``send``, ``spawn``, ``call``...) act on that node.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from .backend import DONE
from .dist import Distribution
from .errors import NotInProcess, ProcessExit
from .mailbox import _EMPTY, DEFAULT_BUDGET, Mailbox
from .messages import Down, From, TimerRef
from .node import (
    Dest,
    Node,
    _mailbox_or_none,
    _process_or_none,
    current_node,
    current_process,
)
from .pid import Name, Pid, Ref
from .reasons import ExitReason


def self_pid() -> Pid:
    """The calling process's pid (Erlang's ``self()``)."""
    return current_process().pid


# send, send_wait and receive carry the local fast path inline (one Python frame per
# message instead of four): a live local pid whose mailbox has room. Anything else falls
# back to the Node and Mailbox methods, which state the full behaviour. A sender keeps
# the mailbox it last sent to (``Mailbox._peer``): sending to the same pid object again
# skips the lookup, and the receiver's death is seen as its mailbox being closed. They
# find the caller's own mailbox in a ContextVar of its own (``_mailbox_or_none``), one
# attribute load less per message than through its Process. Likewise a pid on another
# node (``Mailbox._far_pid``) goes straight to the distribution layer that took the last
# message to it.


def _node_of(own: Mailbox | None, dest: Dest) -> Node:
    """The current node; if *dest* is a pid on another node that its distribution layer
    (a :class:`~runtime.dist.Distribution`) serves, remembered as *own*'s far peer."""
    node = current_node()
    if own is not None and type(dest) is Pid and dest.node != node.name:
        remote = node.remote
        if type(remote) is Distribution:
            # Once that layer closes, its send and send_wait hand back to the node.
            own._far = remote
            own._far_pid = dest
    return node


def _peer_mailbox(own: Mailbox, dest: Dest) -> Mailbox | None:
    """The mailbox of *dest* if it is a live local process, remembered as *own*'s peer."""
    me = _process_or_none()
    assert me is not None
    node = me.node
    if type(dest) is not Pid or dest.node != node.name or dest.creation != node.creation:
        return None
    proc = node._procs.get(dest.serial)
    if proc is None:
        return None
    mb = proc.mailbox
    if mb._q is _EMPTY:  # a mailbox that never held a message takes the slow path once
        return None
    own._peer = mb
    own._peer_pid = dest
    return mb


def send(dest: Dest, msg: object) -> None:
    """Send *msg* without waiting; see :meth:`Node.send` for every outcome."""
    own = _mailbox_or_none()
    if own is not None:
        if dest is own._far_pid:
            own._far.send(dest, msg)
            return
        mb = own._peer if dest is own._peer_pid else _peer_mailbox(own, dest)
        if mb is not None and len(mb._q) < mb.bound:  # a closed mailbox has bound 0
            mb._q.append(msg)
            w = mb._waiter
            if w is not None:
                mb._waiter = None
                mb._backend.unpark(w)
            return
    _node_of(own, dest).send(dest, msg)


def send_wait(dest: Dest, msg: object) -> Awaitable[None]:
    """Send *msg*, waiting while the receiver's mailbox is full (backpressure); await it.

    When the mailbox has room the message is enqueued at once, and the awaitable only
    charges the sender's reduction budget (yielding when it is spent).
    """
    own = _mailbox_or_none()
    if own is not None:
        if dest is own._far_pid:
            return own._far.send_wait(dest, msg)  # type: ignore[no-any-return]
        mb = own._peer if dest is own._peer_pid else _peer_mailbox(own, dest)
        if mb is not None:
            q = mb._q
            if len(q) < mb.bound:  # a closed mailbox has bound 0
                q.append(msg)
                w = mb._waiter
                if w is not None:
                    mb._waiter = None
                    mb._backend.unpark(w)
                budget = own._budget  # one reduction charged to the sender
                if budget > 1:
                    own._budget = budget - 1
                    return DONE
                own._budget = DEFAULT_BUDGET
                return own._backend.checkpoint()
    return _node_of(own, dest).send_wait(dest, msg)


async def receive(match: Callable[[Any], bool] | None = None, timeout: float | None = None) -> Any:
    """Take the oldest message (the oldest for which ``match(msg)`` is true).

    Messages that do not match stay in the mailbox in their order. Waits up to
    *timeout* seconds (``None``: forever; ``0``: only what is already there).

    Raises:
        ReceiveTimeout: nothing (matching) arrived in time.
        NotInProcess: called outside a process.
    """
    mb = _mailbox_or_none()
    if mb is None:
        raise NotInProcess("this must be called from inside a process")
    if match is not None:
        return await mb.get_match(match, timeout)
    q = mb._q
    if not q:
        if timeout is not None:
            return await mb.get(timeout)
        park = mb._backend.park
        while not mb._q:
            await park(mb)
        q = mb._q
    msg = q.popleft()
    if mb._senders:
        mb._wake_sender()
    budget = mb._budget
    if budget > 1:
        mb._budget = budget - 1
        return msg
    mb._budget = DEFAULT_BUDGET
    await mb._backend.checkpoint()
    return msg


def spawn(fn: Callable[..., Awaitable[Any]], *args: Any, **opts: Any) -> Pid:
    """Start ``fn(*args)`` as a new process; see :meth:`Node.spawn`."""
    if opts:
        return current_node().spawn(fn, *args, **opts)
    return current_node().spawn(fn, *args)


def spawn_link(fn: Callable[..., Awaitable[Any]], *args: Any, **opts: Any) -> Pid:
    """Start ``fn(*args)`` linked to the calling process, atomically."""
    proc = current_process()
    return proc.node.spawn(fn, *args, link_to=proc.pid, **opts)


def spawn_monitor(fn: Callable[..., Awaitable[Any]], *args: Any, **opts: Any) -> tuple[Pid, Ref]:
    """Start ``fn(*args)`` monitored by the calling process; returns (pid, ref)."""
    proc = current_process()
    pid = proc.node.spawn(fn, *args, **opts)
    return pid, proc.node.monitor(proc.pid, pid)


def link(pid: Pid) -> None:
    """Link the calling process with *pid*; see :meth:`Node.link`."""
    proc = current_process()
    links = proc.links
    if links is not None and pid in links:
        return  # already linked (both ends record a link together): nothing to do
    proc.node.link(proc.pid, pid)


def unlink(pid: Pid) -> None:
    """Remove the link between the calling process and *pid*. Idempotent."""
    proc = current_process()
    proc.node.unlink(proc.pid, pid)


def monitor(target: Pid | Name | str) -> Ref:
    """Monitor *target*: one ``Down`` message arrives when it ends (at once if dead)."""
    proc = current_process()
    return proc.node.monitor(proc.pid, target)


def monitor_nodes(flag: bool = True) -> None:
    """Subscribe the calling process to connection events (``flag=False``: unsubscribe).

    It then receives ``NodeUp(node)`` when a connection to another node comes up and
    ``NodeDown(node)`` when one is lost (Erlang's ``net_kernel:monitor_nodes/1``).
    """
    proc = current_process()
    proc.node.monitor_nodes(proc.pid, flag)


def demonitor(ref: Ref, *, flush: bool = False) -> bool:
    """Cancel a monitor. With *flush*, also remove its ``Down`` message if it arrived.

    Returns False if the monitor had already fired or was cancelled.
    """
    proc = current_process()
    active = proc.node.demonitor(ref)
    if flush:
        proc.mailbox.remove_first(lambda m: type(m) is Down and m.ref == ref)
    return active


def trap_exit(flag: bool = True) -> bool:
    """Set whether the calling process traps exits; returns the old value.

    A trapping process receives exit signals as ``Exit(pid, reason)`` messages instead
    of dying, except ``Kill``.
    """
    proc = current_process()
    old, proc.trap_exit = proc.trap_exit, flag
    return old


def exit(reason: ExitReason) -> None:
    """End the calling process with *reason*. Never returns."""
    raise ProcessExit(reason)


def send_exit(pid: Pid, reason: ExitReason) -> None:
    """Send the exit signal *reason* to *pid* (Erlang's ``exit/2``); see :meth:`Node.exit`."""
    node = current_node()
    me = _process_or_none()
    node.exit(pid, reason, frm=me.pid if me is not None else None)


async def exit_and_wait(pid: Pid, reason: ExitReason, timeout: float | None = None) -> ExitReason:
    """Send *pid* the exit signal *reason*, wait until it ends, and return how it ended.

    See :meth:`Node.exit_and_wait`; the signal comes from the calling process.
    """
    me = _process_or_none()
    if me is None:
        return await current_node().exit_and_wait(pid, reason, timeout=timeout)
    return await me.node.exit_and_wait(pid, reason, frm=me.pid, timeout=timeout)


def register(name: str, pid: Pid | None = None) -> None:
    """Register *pid* (default: the calling process) under *name* on this node."""
    node = current_node()
    node.register(name, pid if pid is not None else self_pid())


def unregister(name: str) -> None:
    """Remove a registered name. Raises NoProcError if it is not registered."""
    current_node().unregister(name)


def whereis(name: str) -> Pid | None:
    """The pid registered under *name* on this node, or None."""
    return current_node().whereis(name)


def send_after(delay: float, dest: Dest, msg: object) -> TimerRef:
    """Send *msg* to *dest* after *delay* seconds; returns a cancellable timer."""
    return current_node().send_after(delay, dest, msg)


def cancel_timer(timer: TimerRef) -> bool:
    """Cancel a timer; False if it already fired or was cancelled."""
    return current_node().cancel_timer(timer)


def call(dest: Dest, request: object, timeout: float | None = 5.0) -> Awaitable[Any]:
    """Call a GenServer and wait for its reply; await it. See :meth:`Node.call`."""
    me = _process_or_none()
    return (me.node if me is not None else current_node()).call(dest, request, timeout)


def cast(dest: Dest, msg: object) -> None:
    """Send a GenServer cast. Never fails for a dead server."""
    current_node().cast(dest, msg)


def reply(from_: From | Ref, value: object) -> None:
    """Reply to a call that a GenServer deferred by returning ``NOREPLY``."""
    current_node().reply(from_, value)


async def start_server(server: Any, *args: Any, link: bool = False, **opts: Any) -> Pid:
    """Start a GenServer on this node (linked to the caller with *link*)."""
    return await current_node().start_server(server, *args, link=link, **opts)


def node() -> Node:
    """The current node."""
    return current_node()


__all__ = [
    "call",
    "cancel_timer",
    "cast",
    "demonitor",
    "exit",
    "link",
    "monitor",
    "monitor_nodes",
    "node",
    "receive",
    "register",
    "reply",
    "self_pid",
    "send",
    "send_after",
    "send_exit",
    "send_wait",
    "spawn",
    "spawn_link",
    "spawn_monitor",
    "start_server",
    "trap_exit",
    "unlink",
    "unregister",
    "whereis",
]
