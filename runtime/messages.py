"""Messages the runtime itself puts in mailboxes."""

from __future__ import annotations

import attrs

from .pid import Name, Pid, Ref
from .reasons import ExitReason


@attrs.frozen(slots=True)
class Down:
    """A monitored process (or its node) is gone: delivered once per monitor.

    ``reason`` is the process's exit reason, ``NoProc()`` if it was already dead when
    the monitor was set, or ``NoConnection(node)`` if its node became unreachable.
    ``pid`` is what was monitored: the pid, or for a monitor set on a registered name,
    ``Name(name, node)`` with its node filled in (Erlang's ``{RegName, Node}``).
    """

    ref: Ref
    pid: Pid | Name
    reason: ExitReason


@attrs.frozen(slots=True)
class Exit:
    """An exit signal from a linked process, received as a message because we trap exits."""

    pid: Pid
    reason: ExitReason


@attrs.frozen(slots=True)
class NodeUp:
    """A connection to ``node`` came up: sent to the processes that called ``monitor_nodes``.

    Erlang's ``{nodeup, Node}``. A node that reconnects after a ``NodeDown`` is a new
    connection, and its subscribers see a new ``NodeUp``.
    """

    node: str


@attrs.frozen(slots=True)
class NodeDown:
    """The connection to ``node`` is lost: sent to the processes that called ``monitor_nodes``.

    Erlang's ``{nodedown, Node}``. It arrives after the links and monitors across that
    connection fired with ``NoConnection(node)``. The node may be dead or only
    unreachable: a peer killed on this host is seen at once (the operating system
    closes its sockets), a silent one after the distribution's heartbeat timeout.
    """

    node: str


@attrs.define(slots=True)  # not frozen: two of these are built per call (frozen costs 2.5x)
class Call:
    """A GenServer call: the caller waits for a reply addressed to ``ref``.

    ``caller`` is the calling process, or None for a call made outside any process.
    """

    ref: Ref
    request: object
    caller: Pid | None = None


@attrs.define(slots=True, eq=True, hash=True)  # treat as immutable; not frozen, for speed
class From:
    """Who is waiting for a GenServer's reply: the caller's pid and the call's ref.

    OTP's ``{Pid, Tag}``. Pass it to ``reply``; ``pid`` lets a server that defers its
    reply monitor the caller. ``pid`` is None for a call made outside any process.
    """

    pid: Pid | None
    ref: Ref


@attrs.frozen(slots=True)
class Cast:
    """A GenServer cast: no reply."""

    msg: object


@attrs.frozen(slots=True)
class TimerRef:
    """Names a timer started by ``send_after``; pass it to ``cancel_timer``."""

    ref: Ref


@attrs.frozen(slots=True)
class UnsendableReply:
    """Sent instead of a call's reply that could not be encoded for the wire.

    The caller's ``call`` raises ``ReplyNotSendable``; the server keeps running.
    """

    kind: str
    error: str


def _register() -> None:
    """Allow the runtime's own messages on the wire, under stable names."""
    from .wire import DEFAULT_REGISTRY

    for cls in (Call, Cast, Down, Exit, From, NodeDown, NodeUp, UnsendableReply):
        DEFAULT_REGISTRY.register(cls, f"regency.{cls.__name__}")


_register()
