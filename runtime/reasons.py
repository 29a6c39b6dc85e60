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

import linecache

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


@attrs.frozen(slots=True, eq=False)
class Crashed(ExitReason):
    """An uncaught exception ended the process.

    ``exc`` is the exception itself, present only on the node where it was raised and
    ignored by equality; ``kind``, ``message`` and ``traceback`` travel. A reason made
    by :meth:`from_exception` formats its traceback on first use, so a crash nobody
    reads (a filtered crash report, a restart) does not pay for it.
    """

    kind: str
    message: str
    _traceback: str | None = attrs.field(default="", alias="traceback", repr=False)
    exc: BaseException | None = attrs.field(default=None, repr=False)

    @classmethod
    def from_exception(cls, exc: BaseException) -> Crashed:
        """Capture *exc* (one reason per exception, then reused)."""
        cached = getattr(exc, "_regency_crashed", None)
        if type(cached) is cls:
            return cached
        crashed = cls(type(exc).__qualname__, str(exc), None, exc)
        try:
            exc._regency_crashed = crashed  # type: ignore[attr-defined]
        except AttributeError:  # pragma: no cover - exceptions with __slots__
            pass
        return crashed

    @property
    def traceback(self) -> str:
        """The traceback as text ("" when unknown)."""
        text = self._traceback
        if text is None:
            text = _format_traceback(self.exc) if self.exc is not None else ""
            object.__setattr__(self, "_traceback", text)
        return text

    def __eq__(self, other: object) -> bool:
        if type(other) is not Crashed:
            return NotImplemented
        return (self.kind, self.message, self.traceback) == (
            other.kind,
            other.message,
            other.traceback,
        )

    def __hash__(self) -> int:
        return hash((Crashed, self.kind, self.message))

    def __repr__(self) -> str:
        return f"Crashed(kind={self.kind!r}, message={self.message!r})"

    def __str__(self) -> str:
        return f"{self.kind}({self.message})"


def _format_traceback(exc: BaseException) -> str:
    """The traceback as text, without Python 3.11's caret lines.

    ``traceback.format_exception`` parses each frame's source line to place its carets,
    which made formatting half the cost of a supervised restart; the frames, their
    source lines and the chain of causes are what a crash report needs.
    """
    parts: list[str] = []
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        lines = ["Traceback (most recent call last):\n"]
        tb = current.__traceback__
        while tb is not None:  # extract_tb would also compute column positions
            code = tb.tb_frame.f_code
            lines.append(f'  File "{code.co_filename}", line {tb.tb_lineno}, in {code.co_name}\n')
            source = linecache.getline(code.co_filename, tb.tb_lineno).strip()
            if source:
                lines.append(f"    {source}\n")
            tb = tb.tb_next
        text = str(current)
        lines.append(
            f"{type(current).__qualname__}: {text}\n" if text else f"{type(current).__qualname__}\n"
        )
        parts.append("".join(lines))
        if current.__cause__ is not None:
            parts.append(
                "\nThe above exception was the direct cause of the following exception:\n\n"
            )
            current = current.__cause__
        elif current.__context__ is not None and not current.__suppress_context__:
            parts.append(
                "\nDuring handling of the above exception, another exception occurred:\n\n"
            )
            current = current.__context__
        else:
            current = None
    return "".join(reversed(parts))


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
