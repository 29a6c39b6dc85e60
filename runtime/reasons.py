"""Exit reasons.

Every process ends with exactly one reason, a value (never a string):

* :class:`Normal` -- the function returned. Linked processes are not affected.
* :class:`Shutdown` -- asked to stop by its supervisor (or anyone) with an orderly
  reason; ``detail`` is optional context. Treated like ``Normal`` by ``transient``
  restart, but it does propagate over links (as in OTP).
* :class:`Kill` -- the untrappable signal. A process that receives it ends with
  :class:`Killed`; linked processes see ``Killed`` (which *can* be trapped).
* :class:`Crashed` -- an uncaught exception; carries the exception's type, message and
  traceback as text so it can cross the wire, and the exception itself when local.
* :class:`NoProc` -- a monitor or call on a pid that was already dead.
* :class:`NoConnection` -- the process's node became unreachable.
* :class:`Abnormal` -- any other reason given by user code to ``exit``.
"""

from __future__ import annotations

import traceback as _tb

import attrs


class ExitReason:
    """Base of every exit reason."""

    __slots__ = ()

    @property
    def is_normal(self) -> bool:
        """True only for :class:`Normal`: the one reason that does not kill a linked process."""
        return False

    @property
    def is_orderly(self) -> bool:
        """True for :class:`Normal` and :class:`Shutdown`: reasons a transient child accepts."""
        return False


@attrs.frozen(slots=True)
class Normal(ExitReason):
    """The process finished its work."""

    @property
    def is_normal(self) -> bool:
        return True

    @property
    def is_orderly(self) -> bool:
        return True

    def __str__(self) -> str:
        return "normal"


@attrs.frozen(slots=True)
class Shutdown(ExitReason):
    """An orderly stop requested from outside (by a supervisor, or a node going down)."""

    detail: str | None = None

    @property
    def is_orderly(self) -> bool:
        return True

    def __str__(self) -> str:
        return "shutdown" if self.detail is None else f"shutdown({self.detail})"


@attrs.frozen(slots=True)
class Kill(ExitReason):
    """The untrappable exit signal. Only ever a signal; the process then exits ``Killed``."""

    def __str__(self) -> str:
        return "kill"


@attrs.frozen(slots=True)
class Killed(ExitReason):
    """The reason of a process that was sent :class:`Kill`."""

    def __str__(self) -> str:
        return "killed"


@attrs.frozen(slots=True)
class Crashed(ExitReason):
    """An uncaught exception ended the process.

    ``exc`` is the exception itself, present only on the node where it was raised and
    ignored by equality; ``kind``, ``message`` and ``traceback`` travel.
    """

    kind: str
    message: str
    traceback: str = ""
    exc: BaseException | None = attrs.field(default=None, eq=False, repr=False)

    @classmethod
    def from_exception(cls, exc: BaseException) -> Crashed:
        """Capture *exc* with its traceback."""
        tb = "".join(_tb.format_exception(type(exc), exc, exc.__traceback__))
        return cls(type(exc).__qualname__, str(exc), tb, exc)

    def __str__(self) -> str:
        return f"{self.kind}({self.message})"


@attrs.frozen(slots=True)
class NoProc(ExitReason):
    """The process did not exist (already dead, or never was)."""

    def __str__(self) -> str:
        return "noproc"


@attrs.frozen(slots=True)
class NoConnection(ExitReason):
    """The node hosting the process became unreachable."""

    node: str

    def __str__(self) -> str:
        return f"noconnection({self.node})"


@attrs.frozen(slots=True)
class Abnormal(ExitReason):
    """Any other reason, given by user code: ``exit(pid, Abnormal("bad_input"))``."""

    value: object

    def __str__(self) -> str:
        return repr(self.value)


NORMAL = Normal()
KILL = Kill()
KILLED = Killed()
NOPROC = NoProc()
SHUTDOWN = Shutdown()
