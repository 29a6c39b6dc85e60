"""Every exception the runtime raises, named for who caused it.

``...Error`` means a mistake by the caller; a condition (``MailboxFull``, ``CallTimeout``)
drops the suffix. :class:`ProcessExit` derives from ``BaseException`` so a bare
``except Exception`` in user code cannot swallow an exit.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .pid import Pid
    from .reasons import ExitReason


class RegencyError(Exception):
    """Base of the runtime's ordinary errors."""


class MailboxFull(RegencyError):
    """The receiver's mailbox is at its bound; the message was not enqueued.

    Raised to the sender of a non-blocking ``send``. Use ``await send_wait(...)`` to
    wait for room instead.
    """

    def __init__(self, pid: Pid, bound: int) -> None:
        super().__init__(f"mailbox of {pid} is full ({bound} messages)")
        self.pid = pid
        self.bound = bound


class PeerBusy(MailboxFull):
    """The connection to the receiver's node has too much unsent data; nothing was queued.

    Raised to the sender of a non-blocking ``send`` to another node; ``send_wait``
    waits for the connection to drain instead.
    """


class NoProcError(RegencyError, LookupError):
    """A name is not registered, or an operation that needs a live process found none."""


class NotInProcess(RegencyError, RuntimeError):
    """A process-only function (``receive``, ``self_pid``...) was called outside a process."""


class CallTimeout(RegencyError, TimeoutError):
    """A ``call`` got no reply within its timeout. The server may still handle it later."""


class ServerExited(RegencyError):
    """The server of a ``call`` exited (before or while handling it); ``reason`` says why."""

    def __init__(self, reason: ExitReason) -> None:
        # The message is formatted when read: a client that retries a name between
        # lives catches one of these per attempt and never prints it.
        super().__init__(reason)
        self.reason = reason

    def __str__(self) -> str:
        return f"server exited: {self.reason}"


class AlreadyRegistered(RegencyError, ValueError):
    """The name is taken by a live process, or the process already has a name."""


class NodeClosed(RegencyError, RuntimeError):
    """The node is shutting down or has stopped; nothing new starts on it."""


class ProcessExit(BaseException):
    """Raised inside a process to end it with ``reason``; see ``runtime.exit``.

    An exit signal that ends a process waiting in ``receive``, outside any cancel scope
    of its own, raises this there too; one that finds it waiting anywhere else cancels
    it (``trio.Cancelled``). Either way its cleanup runs and any wait in that cleanup
    fails. Derives from ``BaseException`` so ``except Exception`` cannot swallow it.
    """

    def __init__(self, reason: ExitReason) -> None:
        super().__init__(reason)
        self.reason = reason


class ReplyNotSendable(RegencyError):
    """The server on another node replied with a value that cannot travel on the wire.

    The server is unaffected; register the reply's class (``runtime.message``) to fix it.
    """


class Unregistered(RegencyError, TypeError):
    """A message of a class that was never registered for the wire was sent to another node."""


class ProtocolError(RegencyError):
    """A peer broke the wire protocol (malformed, oversized, forged or unexpected frame)."""


class AuthenticationFailed(ProtocolError):
    """The handshake failed: wrong secret, replayed challenge, or wrong node name."""


class ReceiveTimeout(RegencyError, TimeoutError):
    """``receive`` found no (matching) message within its timeout."""


class StartFailed(RegencyError):
    """A process failed to start (its ``init`` raised or it exited before acknowledging)."""

    def __init__(self, reason: ExitReason) -> None:
        super().__init__(f"start failed: {reason}")
        self.reason = reason
