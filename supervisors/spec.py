"""Child specifications and supervisor flags: what a supervisor is told to supervise.

A supervisor is configured by one :class:`SupFlags` and an ordered list of
:class:`ChildSpec`. The order is the start order; children stop in reverse order.

Supervisor flags (:class:`SupFlags`), all optional:

* ``strategy`` -- which children are restarted when one of them is restarted
  (default :attr:`Strategy.ONE_FOR_ONE`):

  - ``ONE_FOR_ONE``: only the child that exited.
  - ``REST_FOR_ONE``: the child that exited and every child after it in start order.
  - ``ONE_FOR_ALL``: every child.

* ``intensity`` and ``period`` -- at most ``intensity`` restarts within ``period``
  seconds (defaults 1 and 5.0). One more and the supervisor gives up: it stops its
  children and exits with ``Shutdown()``, and its own supervisor decides what happens.
* ``auto_shutdown`` -- whether the exit of *significant* children stops the
  supervisor (default :attr:`AutoShutdown.NEVER`).

Child spec keys (:class:`ChildSpec`); ``id`` and ``start`` are mandatory:

* ``id`` -- a non-empty name, unique among the supervisor's children.
* ``start`` -- a callable (sync or async) that spawns a process linked to the
  caller and returns its pid; called with ``*args``. Opaque to this module.
* ``args`` -- positional arguments for ``start``. Default ``()``.
* ``restart`` -- ``PERMANENT``: always restarted; ``TRANSIENT``: restarted only after
  an abnormal exit (anything but ``Normal()``, ``Shutdown()``, ``Shutdown(detail)``;
  ``Killed()`` *is* abnormal); ``TEMPORARY``: never restarted, and its spec is
  forgotten when it exits, even when a sibling's failure is what stopped it.
  Default ``PERMANENT``.
* ``type`` -- ``WORKER`` or ``SUPERVISOR``. Default ``WORKER``.
* ``shutdown`` -- how long the supervisor waits for the child to stop after sending
  it ``Shutdown()`` before killing it: seconds (a float >= 0), :data:`BRUTAL_KILL`
  (kill at once) or :data:`INFINITY` (wait forever). Default 5.0 for a worker and
  ``INFINITY`` for a supervisor.
* ``significant`` -- whether the child's exit counts for ``auto_shutdown``. A
  permanent child cannot be significant. Default ``False``. Unlike OTP, a
  significant child under ``auto_shutdown=NEVER`` is accepted; its significance is
  then ignored.
* ``backoff`` -- a :class:`Backoff` to wait before restarting the child (regency's
  addition; OTP restarts at once). Default ``None``: restart at once.

Every class here is frozen; change one with ``attrs.evolve``. Invalid values raise
:class:`BadChildSpec` or :class:`BadSupFlags` when the object is made.
"""

from __future__ import annotations

import enum
import math
import random
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Final

import attrs

__all__ = [
    "BRUTAL_KILL",
    "INFINITY",
    "AutoShutdown",
    "Backoff",
    "BadChildSpec",
    "BadSupFlags",
    "ChildSpec",
    "ChildType",
    "Restart",
    "ShutdownKind",
    "ShutdownTimeout",
    "Strategy",
    "SupFlags",
    "check_child_specs",
]


class BadChildSpec(ValueError):
    """A child spec (or its backoff) is invalid; the message names the field and value.

    Raised by the caller's own mistake when the spec is made, never later.
    """


class BadSupFlags(ValueError):
    """Supervisor flags are invalid (negative intensity, non-positive period)."""


class Restart(enum.Enum):
    """When a child that exited is restarted."""

    PERMANENT = "permanent"
    """Always."""
    TRANSIENT = "transient"
    """Only after an abnormal exit: not ``Normal()``, ``Shutdown()`` or ``Shutdown(detail)``."""
    TEMPORARY = "temporary"
    """Never; its spec is forgotten as soon as it exits."""


class ChildType(enum.Enum):
    """Whether a child is a worker or a supervisor (only changes the shutdown default)."""

    WORKER = "worker"
    SUPERVISOR = "supervisor"


class Strategy(enum.Enum):
    """Which children are restarted along with the one that exited."""

    ONE_FOR_ONE = "one_for_one"
    """Only the child that exited."""
    REST_FOR_ONE = "rest_for_one"
    """The child that exited and the children after it in start order."""
    ONE_FOR_ALL = "one_for_all"
    """Every child."""


class AutoShutdown(enum.Enum):
    """Whether the exit of significant children shuts the supervisor down."""

    NEVER = "never"
    """Significant children are treated like any other."""
    ANY_SIGNIFICANT = "any_significant"
    """Shut down when any significant child exits and is not restarted."""
    ALL_SIGNIFICANT = "all_significant"
    """Shut down when a significant child exits, is not restarted, and no other is running."""


class ShutdownKind(enum.Enum):
    """The two shutdown values that are not a timeout."""

    BRUTAL_KILL = "brutal_kill"
    """Send ``Kill`` at once; do not ask the child to stop first."""
    INFINITY = "infinity"
    """Send ``Shutdown()`` and wait for the child to stop, however long it takes."""

    def __repr__(self) -> str:
        return self.name


BRUTAL_KILL: Final = ShutdownKind.BRUTAL_KILL
"""Shutdown value: kill the child at once."""
INFINITY: Final = ShutdownKind.INFINITY
"""Shutdown value: wait for the child to stop, without a timeout."""

ShutdownTimeout = float | ShutdownKind
"""A child's shutdown: seconds to wait (>= 0), :data:`BRUTAL_KILL` or :data:`INFINITY`."""


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


@attrs.frozen
class Backoff:
    """Exponential restart backoff with jitter, for one child.

    The n-th consecutive restart (``attempt`` n, counting from 0) waits
    ``d * (1 - jitter * u)`` seconds, where ``d = min(max, initial * multiplier ** n)``
    and ``u`` is drawn uniformly from [0, 1) with the injected rng. So a delay is
    never above ``max`` and never below ``(1 - jitter) * d``. Which restarts are
    consecutive is decided by :func:`supervisors.strategy.decide`: the count goes
    back to 0 once the child has run for ``reset_after`` seconds.

    Attributes:
        initial: delay of the first restart, in seconds (>= 0).
        max: the cap on the delay, in seconds (>= initial).
        multiplier: growth per attempt (>= 1). Default 2.0.
        jitter: the fraction of the delay taken off at random, in [0, 1]. Default 0.1.
        reset_after: seconds a restarted child must run before its next exit counts
            as a first failure again (> 0). Default ``None``: ``max`` seconds, but at
            least 1 second.

    Raises:
        BadChildSpec: a value is out of range.
    """

    initial: float
    max: float
    multiplier: float = 2.0
    jitter: float = 0.1
    reset_after: float | None = None

    def __attrs_post_init__(self) -> None:
        for name in ("initial", "max", "multiplier", "jitter"):
            value = getattr(self, name)
            if not _is_number(value) or not math.isfinite(value):
                raise BadChildSpec(f"backoff {name} must be a finite number, got {value!r}")
        if self.initial < 0:
            raise BadChildSpec(f"backoff initial must be >= 0, got {self.initial!r}")
        if self.max < self.initial:
            raise BadChildSpec(
                f"backoff max must be >= initial ({self.initial!r}), got {self.max!r}"
            )
        if self.multiplier < 1:
            raise BadChildSpec(f"backoff multiplier must be >= 1, got {self.multiplier!r}")
        if not 0 <= self.jitter <= 1:
            raise BadChildSpec(f"backoff jitter must be in [0, 1], got {self.jitter!r}")
        if self.reset_after is not None and (
            not _is_number(self.reset_after) or not self.reset_after > 0
        ):
            raise BadChildSpec(f"backoff reset_after must be > 0, got {self.reset_after!r}")

    @property
    def reset_interval(self) -> float:
        """Seconds a restarted child must run before its attempt count goes back to 0."""
        if self.reset_after is not None:
            return self.reset_after
        return max(self.max, 1.0)

    def delay(self, attempt: int, rng: random.Random) -> float:
        """Return the delay in seconds before restart number ``attempt`` (0-based).

        Draws exactly one number from ``rng``. The result lies in
        ``[(1 - jitter) * d, d]`` with ``d = min(max, initial * multiplier ** attempt)``.

        Raises:
            ValueError: ``attempt`` is negative.
        """
        if attempt < 0:
            raise ValueError(f"attempt must be >= 0, got {attempt!r}")
        try:
            base = min(self.max, self.initial * self.multiplier**attempt)
        except OverflowError:
            base = self.max
        return base * (1.0 - self.jitter * rng.random())


def _to_tuple(args: Iterable[Any]) -> tuple[Any, ...]:
    return tuple(args)


def _default_shutdown(spec: ChildSpec) -> ShutdownTimeout:
    return INFINITY if spec.type is ChildType.SUPERVISOR else 5.0


@attrs.frozen
class ChildSpec:
    """How to start, restart and stop one child. See the module doc for each key.

    ``id`` and ``start`` are positional; every other key is keyword-only.

    Raises:
        BadChildSpec: the id is empty or not a string, ``start`` is not callable,
            ``shutdown`` is negative or not a number/:data:`BRUTAL_KILL`/:data:`INFINITY`,
            an enum field has a value of the wrong type, or the child is
            significant and permanent.
    """

    id: str
    start: Callable[..., Any]
    args: tuple[Any, ...] = attrs.field(default=(), kw_only=True, converter=_to_tuple)
    restart: Restart = attrs.field(default=Restart.PERMANENT, kw_only=True)
    type: ChildType = attrs.field(default=ChildType.WORKER, kw_only=True)
    shutdown: ShutdownTimeout = attrs.field(
        default=attrs.Factory(_default_shutdown, takes_self=True), kw_only=True
    )
    significant: bool = attrs.field(default=False, kw_only=True)
    backoff: Backoff | None = attrs.field(default=None, kw_only=True)

    def __attrs_post_init__(self) -> None:
        if not isinstance(self.id, str) or not self.id:
            raise BadChildSpec(f"child id must be a non-empty string, got {self.id!r}")
        where = f"child {self.id!r}"
        if not callable(self.start):
            raise BadChildSpec(f"{where}: start must be callable, got {self.start!r}")
        if not isinstance(self.restart, Restart):
            raise BadChildSpec(f"{where}: restart must be a Restart, got {self.restart!r}")
        if not isinstance(self.type, ChildType):
            raise BadChildSpec(f"{where}: type must be a ChildType, got {self.type!r}")
        shutdown: object = self.shutdown
        if not isinstance(shutdown, ShutdownKind):
            if not isinstance(shutdown, int | float) or isinstance(shutdown, bool):
                raise BadChildSpec(
                    f"{where}: shutdown must be seconds, BRUTAL_KILL or INFINITY, got {shutdown!r}"
                )
            if not 0 <= shutdown < math.inf:
                raise BadChildSpec(
                    f"{where}: shutdown must be finite seconds >= 0 (or INFINITY), got {shutdown!r}"
                )
        if not isinstance(self.significant, bool):
            raise BadChildSpec(f"{where}: significant must be a bool, got {self.significant!r}")
        if self.significant and self.restart is Restart.PERMANENT:
            raise BadChildSpec(
                f"{where}: a permanent child cannot be significant (make it transient or temporary)"
            )
        if self.backoff is not None and not isinstance(self.backoff, Backoff):
            raise BadChildSpec(f"{where}: backoff must be a Backoff, got {self.backoff!r}")


def check_child_specs(specs: Sequence[ChildSpec]) -> None:
    """Check a supervisor's list of child specs as a whole.

    Each spec is already valid on its own; this checks what only the list shows.

    Raises:
        BadChildSpec: an item is not a :class:`ChildSpec`, or two specs share an id.
    """
    seen: set[str] = set()
    for spec in specs:
        if not isinstance(spec, ChildSpec):
            raise BadChildSpec(f"expected a ChildSpec, got {spec!r}")
        if spec.id in seen:
            raise BadChildSpec(f"duplicate child id {spec.id!r}")
        seen.add(spec.id)


@attrs.frozen
class SupFlags:
    """A supervisor's flags. See the module doc.

    Attributes:
        strategy: default :attr:`Strategy.ONE_FOR_ONE`.
        intensity: the most restarts allowed within ``period`` (an int >= 0);
            0 means the first restart already gives up. Default 1.
        period: the window for ``intensity``, in seconds (> 0). Default 5.0.
        auto_shutdown: default :attr:`AutoShutdown.NEVER`.

    Raises:
        BadSupFlags: a value is out of range or of the wrong type.
    """

    strategy: Strategy = Strategy.ONE_FOR_ONE
    intensity: int = 1
    period: float = 5.0
    auto_shutdown: AutoShutdown = AutoShutdown.NEVER

    def __attrs_post_init__(self) -> None:
        if not isinstance(self.strategy, Strategy):
            raise BadSupFlags(f"strategy must be a Strategy, got {self.strategy!r}")
        if not isinstance(self.intensity, int) or isinstance(self.intensity, bool):
            raise BadSupFlags(f"intensity must be an int, got {self.intensity!r}")
        if self.intensity < 0:
            raise BadSupFlags(f"intensity must be >= 0, got {self.intensity!r}")
        if not _is_number(self.period) or not self.period > 0:
            raise BadSupFlags(f"period must be seconds > 0, got {self.period!r}")
        if not isinstance(self.auto_shutdown, AutoShutdown):
            raise BadSupFlags(f"auto_shutdown must be an AutoShutdown, got {self.auto_shutdown!r}")
