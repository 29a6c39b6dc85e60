"""Messages the runtime itself puts in mailboxes."""

from __future__ import annotations

import attrs

from .pid import Pid, Ref
from .reasons import ExitReason


@attrs.frozen(slots=True)
class Down:
    """A monitored process (or its node) is gone: delivered once per monitor.

    ``reason`` is the process's exit reason, ``NoProc()`` if it was already dead when
    the monitor was set, or ``NoConnection(node)`` if its node became unreachable.
    """

    ref: Ref
    pid: Pid
    reason: ExitReason


@attrs.frozen(slots=True)
class Exit:
    """An exit signal from a linked process, received as a message because we trap exits."""

    pid: Pid
    reason: ExitReason


@attrs.frozen(slots=True)
class Call:
    """A GenServer call: the caller waits for a reply addressed to ``ref``."""

    ref: Ref
    request: object


@attrs.frozen(slots=True)
class Cast:
    """A GenServer cast: no reply."""

    msg: object


@attrs.frozen(slots=True)
class TimerRef:
    """Names a timer started by ``send_after``; pass it to ``cancel_timer``."""

    ref: Ref
