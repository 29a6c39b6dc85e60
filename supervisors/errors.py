"""The outcomes of supervisor operations that are not a plain success, as exceptions.

Each maps one of OTP's ``{error, ...}`` returns; each derives from the built-in whose
meaning it shares, and all from :class:`SupervisorError`.

================================  ==================================  =====================
OTP                               regency                             also an instance of
================================  ==================================  =====================
``{error, already_present}``      :class:`AlreadyPresent`             ``ValueError``
``{error, {already_started, P}}`` :class:`AlreadyStarted` (``.pid``)  ``ValueError``
``{error, running}``              :class:`Running`                    ``RuntimeError``
``{error, restarting}``           :class:`Restarting`                 ``RuntimeError``
``{error, not_found}``            :class:`NotFound`                   ``LookupError``
``{error, simple_one_for_one}``   :class:`NotSupported`               ``TypeError``
``{error, max_children}``         :class:`MaxChildren`                ``RuntimeError``
``{error, Reason}`` from a start  :class:`StartFailed` (``.id``,      ``runtime.StartFailed``
                                  ``.reason``)
================================  ==================================  =====================

A call to a supervisor that is not running raises ``runtime.ServerExited`` (OTP exits
the caller with ``noproc``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from runtime.errors import RegencyError
from runtime.errors import StartFailed as _RuntimeStartFailed

if TYPE_CHECKING:
    from runtime.pid import Pid
    from runtime.reasons import ExitReason

__all__ = [
    "AlreadyPresent",
    "AlreadyStarted",
    "MaxChildren",
    "NotFound",
    "NotSupported",
    "Restarting",
    "Running",
    "StartFailed",
    "SupervisorError",
]


class SupervisorError(RegencyError):
    """Base of the errors a supervisor operation raises (except :class:`StartFailed`).

    .. versionadded:: 0.1
    """


class AlreadyPresent(SupervisorError, ValueError):
    """``start_child``: a spec with this id is kept but its child is not running.

    Use ``restart_child`` to start it, or ``delete_child`` first to replace the spec.

    .. versionadded:: 0.1
    """

    def __init__(self, id: str) -> None:
        super().__init__(f"child {id!r} is already present (not running)")
        self.id = id


class AlreadyStarted(SupervisorError, ValueError):
    """``start_child``: a child with this id is already running as ``pid``.

    .. versionadded:: 0.1
    """

    def __init__(self, id: str, pid: Pid) -> None:
        super().__init__(f"child {id!r} is already started as {pid}")
        self.id = id
        self.pid = pid


class Running(SupervisorError, RuntimeError):
    """``restart_child`` or ``delete_child``: the child is running; terminate it first.

    .. versionadded:: 0.1
    """

    def __init__(self, id: str) -> None:
        super().__init__(f"child {id!r} is running")
        self.id = id


class Restarting(SupervisorError, RuntimeError):
    """``restart_child`` or ``delete_child``: the supervisor is restarting this child.

    Its restart is waiting for a backoff delay or retrying after a failed start.
    ``terminate_child`` cancels the pending restart.

    .. versionadded:: 0.1
    """

    def __init__(self, id: str) -> None:
        super().__init__(f"child {id!r} is being restarted")
        self.id = id


class NotFound(SupervisorError, LookupError):
    """The supervisor has no child with this id (or, for a dynamic supervisor, pid).

    .. versionadded:: 0.1
    """

    def __init__(self, key: object) -> None:
        super().__init__(f"no child {key!r}")
        self.key = key


class NotSupported(SupervisorError, TypeError):
    """The operation does not apply to this kind of supervisor.

    A ``DynamicSupervisor`` has no child ids: ``restart_child``, ``delete_child``,
    ``get_childspec`` and ``terminate_child`` by id raise this (OTP's
    ``{error, simple_one_for_one}``).

    .. versionadded:: 0.1
    """


class MaxChildren(SupervisorError, RuntimeError):
    """``start_child`` on a ``DynamicSupervisor`` that already has ``max_children``.

    .. versionadded:: 0.1
    """

    def __init__(self, limit: int) -> None:
        super().__init__(f"the dynamic supervisor already has max_children={limit} children")
        self.limit = limit


class StartFailed(_RuntimeStartFailed):
    """A child failed to start: its start function raised, or its process died in ``init``.

    ``id`` is the child's id and ``reason`` the child's exit reason (``Crashed`` for an
    exception raised by the start function). Raised by ``start_child``,
    ``restart_child``, and by starting a supervisor one of whose children failed (the
    children already started were stopped first, in reverse order).

    .. versionadded:: 0.1
    """

    def __init__(self, id: str, reason: ExitReason) -> None:
        super().__init__(reason)
        self.args = (f"child {id!r} failed to start: {reason}",)
        self.id = id
