"""The restart decision: what a supervisor does when one of its children exits.

A pure function, :func:`decide`: no IO, no clock (``now`` is passed in, monotonic
seconds), no randomness but the ``random.Random`` passed in for backoff jitter. The
supervisor process feeds it the exit and carries out the returned :class:`Plan`:

1. stop ``plan.stop``, one after another, in that order (reverse start order), each
   by its spec's shutdown protocol;
2. forget the specs in ``plan.forget``;
3. if ``plan.shutdown_self`` is set: exit with that reason (``plan.start`` is empty);
4. otherwise wait ``plan.delay`` seconds, then start ``plan.start`` in that order
   (start order);
5. keep ``plan.history`` for the next call, and log one line labelled ``plan.label``.

What happens to the child that exited, by restart type and exit reason (OTP's
``do_restart``). An exit is *orderly* if its reason is ``Normal()``, ``Shutdown()`` or
``Shutdown(detail)``; anything else is abnormal, including ``Killed()``,
``NoConnection(node)``, ``Crashed(...)`` and ``Abnormal(value)``.

================  ==============  =========================  ===================
restart           exit            outcome                    label
================  ==============  =========================  ===================
permanent         any             restarted (by strategy)    ``child_terminated``
transient         orderly         kept, not running          ``child_exited``
transient         abnormal        restarted (by strategy)    ``child_terminated``
temporary         orderly         spec deleted               ``child_exited``
temporary         abnormal        spec deleted               ``child_terminated``
================  ==============  =========================  ===================

A restart by strategy (the exited child is ``X``):

* ``ONE_FOR_ONE``: start ``[X]``.
* ``REST_FOR_ONE``: stop the running children after ``X`` in reverse start order,
  then start ``X`` and the children after it in start order.
* ``ONE_FOR_ALL``: stop every other running child in reverse start order, then
  start every child in start order.

Temporary children caught in a ``REST_FOR_ONE`` or ``ONE_FOR_ALL`` restart are
stopped and forgotten, never started again. As in OTP, a non-temporary child in the
restarted range that was not running (terminated by ``terminate_child``, or whose
start returned ``ignore``) is started too. Other children are not touched.

Restart intensity: every restart (including one delayed by backoff) is recorded in
``History.restarts``. If, counting this one, more than ``intensity`` restarts fall
within the last ``period`` seconds, the supervisor gives up instead of restarting:
``stop`` lists every other running child in reverse start order, ``shutdown_self`` is
``Shutdown()`` and the label is ``reached_max_restart_intensity``. A restart exactly
``period`` seconds old still counts (OTP keeps restarts with ``R >= Now - Period``);
times are compared exactly, as floats, where OTP rounds to whole seconds. With
intensity 0 the first restart gives up.

Auto shutdown: when a *significant* child exits and is not restarted (a transient one
exiting orderly, or a temporary one), ``ANY_SIGNIFICANT`` gives up at once and
``ALL_SIGNIFICANT`` gives up if no other significant child is running: ``stop`` lists
every other running child in reverse start order, ``forget`` the exited child,
``shutdown_self`` is ``Shutdown()`` and the label ``auto_shutdown``. With ``NEVER``
significance is ignored. Children stopped by a sibling's restart never trigger it.

Backoff (regency's addition): if the exited child's spec has a :class:`Backoff`,
the plan's ``delay`` is ``backoff.delay(attempt, rng)``, where ``attempt`` counts the
child's consecutive restarts from 0 and goes back to 0 once the child has run
``backoff.reset_interval`` seconds since its last restart was due. The delay applies
to the whole start list. Without a backoff the delay is 0 and ``rng`` is not used.

An exit of a child id that is unknown or not running (a stale exit) yields a plan
that does nothing: empty lists, the history unchanged, label ``stale_exit``.
"""

from __future__ import annotations

import bisect
import enum
import random
from collections.abc import Mapping, Sequence
from typing import Literal

import attrs

from runtime.reasons import SHUTDOWN, ExitReason, Normal, Shutdown

from .spec import AutoShutdown, Backoff, ChildSpec, Restart, Strategy, SupFlags

__all__ = [
    "BackoffState",
    "ChildExited",
    "ChildState",
    "Event",
    "History",
    "Label",
    "Plan",
    "decide",
    "should_restart",
]

Label = Literal[
    "child_terminated",
    "child_exited",
    "reached_max_restart_intensity",
    "auto_shutdown",
    "stale_exit",
]
"""The log event for a plan. ``child_terminated`` is an error report (as in OTP);
``child_exited`` an orderly exit OTP does not report; ``stale_exit`` did nothing."""


@attrs.frozen
class ChildState:
    """What :func:`decide` needs to know about one child, in start order.

    Attributes:
        id: the child's id, unique among its siblings.
        restart: its restart type. Default ``PERMANENT``.
        significant: whether it counts for auto shutdown. Default ``False``.
        running: ``True`` while it has a live process or a restart of it is pending
            (waiting for backoff or a retry); ``False`` when its spec is kept but no
            process runs (after ``terminate_child``, or a start that returned ``ignore``).
            Default ``True``.
        backoff: its restart backoff, or ``None`` (restart at once). Default ``None``.
    """

    id: str
    restart: Restart = Restart.PERMANENT
    significant: bool = False
    running: bool = True
    backoff: Backoff | None = None

    @classmethod
    def from_spec(cls, spec: ChildSpec, *, running: bool = True) -> ChildState:
        """The state of the child described by ``spec``."""
        return cls(spec.id, spec.restart, spec.significant, running, spec.backoff)


@attrs.frozen
class ChildExited:
    """The process of child ``id`` exited with ``reason``."""

    id: str
    reason: ExitReason


Event = ChildExited
"""The events :func:`decide` handles."""


@attrs.frozen
class BackoffState:
    """A child's backoff bookkeeping.

    Attributes:
        attempts: consecutive restarts so far (the next restart's attempt number).
        due_at: when its last restart was due: the decision's ``now`` plus its delay.
    """

    attempts: int
    due_at: float


@attrs.frozen
class History:
    """What :func:`decide` remembers between calls. Start with ``History()``.

    Attributes:
        restarts: times of past restarts still inside the intensity period, oldest
            first. Default ``()``.
        backoff: backoff bookkeeping by child id, for children with a backoff that
            have been restarted. Treat as read-only. Default empty.
    """

    restarts: tuple[float, ...] = ()
    backoff: Mapping[str, BackoffState] = attrs.field(factory=dict, hash=False)

    def forget(self, *ids: str) -> History:
        """The same history without the backoff bookkeeping of ``ids``.

        Call it when a child's spec is deleted or replaced outside :func:`decide`;
        unknown ids are ignored.
        """
        if not ids or not self.backoff or not any(i in self.backoff for i in ids):
            return self
        return attrs.evolve(self, backoff={k: v for k, v in self.backoff.items() if k not in ids})


@attrs.frozen(kw_only=True)
class Plan:
    """What the supervisor must do, in this order: stop, forget, then exit or start.

    Attributes:
        stop: ids to stop, in stop order (reverse start order). Default ``()``.
        forget: ids that stop for good, as OTP's ``del_child``: a temporary child's
            spec is deleted; any other is kept, not running, until
            ``restart_child`` or ``delete_child``. Default ``()``.
        shutdown_self: if not ``None``, exit with this reason after stopping ``stop``
            (always ``Shutdown()``); ``start`` is then empty. Default ``None``.
        delay: seconds to wait between stopping and starting (backoff), >= 0.
            Default 0.0.
        start: ids to start, in start order. Default ``()``.
        history: the history to pass to the next :func:`decide`.
        label: the log event of this decision (see :data:`Label`).
    """

    stop: tuple[str, ...] = ()
    forget: tuple[str, ...] = ()
    shutdown_self: ExitReason | None = None
    delay: float = 0.0
    start: tuple[str, ...] = ()
    history: History
    label: Label


# Enum members bound once: reading one off its class costs a descriptor call each time.
_TEMPORARY = Restart.TEMPORARY
_ONE_FOR_ONE = Strategy.ONE_FOR_ONE
_REST_FOR_ONE = Strategy.REST_FOR_ONE
_ONE_FOR_ALL = Strategy.ONE_FOR_ALL


class _Action(enum.Enum):
    RESTART = "restart"
    FORGET = "forget"


def _on_exit(restart: Restart, reason: ExitReason) -> tuple[_Action, Label]:
    """OTP's do_restart: one row per (restart type, reason class)."""
    match restart, reason:
        case Restart.PERMANENT, _:
            return _Action.RESTART, "child_terminated"
        case Restart.TRANSIENT, Normal() | Shutdown():
            return _Action.FORGET, "child_exited"
        case Restart.TRANSIENT, _:
            return _Action.RESTART, "child_terminated"
        case Restart.TEMPORARY, Normal() | Shutdown():
            return _Action.FORGET, "child_exited"
        case Restart.TEMPORARY, _:
            return _Action.FORGET, "child_terminated"
    raise AssertionError(f"unhandled restart type {restart!r}")


def should_restart(restart: Restart, reason: ExitReason) -> bool:
    """Whether a child of this restart type that exited with ``reason`` is restarted.

    ``PERMANENT``: always. ``TRANSIENT``: unless the reason is ``Normal()``,
    ``Shutdown()`` or ``Shutdown(detail)``. ``TEMPORARY``: never. Whether the restart
    then happens depends on the intensity (see :func:`decide`).
    """
    action, _ = _on_exit(restart, reason)
    return action is _Action.RESTART


def decide(
    flags: SupFlags,
    children: Sequence[ChildState],
    event: Event,
    history: History,
    now: float,
    rng: random.Random,
) -> Plan:
    """Decide what to do about ``event``; see the module doc for every outcome.

    Args:
        flags: the supervisor's flags.
        children: every child whose spec the supervisor keeps, in start order.
        event: the exit to handle.
        history: the ``history`` of the previous plan, or ``History()`` at first.
        now: the current time, in monotonic seconds (never decreasing between calls).
        rng: the source of backoff jitter; used only when the exited child has a backoff.

    Returns:
        The plan. ``decide`` changes nothing itself.

    Raises:
        ValueError: two children share an id.
    """
    ids = [c.id for c in children]
    if len(set(ids)) != len(ids):
        raise ValueError(f"duplicate child ids in {ids!r}")
    index = ids.index(event.id) if event.id in ids else None
    if index is None or not children[index].running:
        return Plan(history=history, label="stale_exit")
    child = children[index]
    action, label = _on_exit(child.restart, event.reason)
    match action:
        case _Action.RESTART:
            return _restart(flags, children, index, history, now, rng, label)
        case _Action.FORGET:
            return _forget(flags, children, index, history, label)


def _others_in_stop_order(children: Sequence[ChildState], index: int) -> tuple[str, ...]:
    return tuple(c.id for i, c in reversed(list(enumerate(children))) if i != index and c.running)


def _forget(
    flags: SupFlags,
    children: Sequence[ChildState],
    index: int,
    history: History,
    label: Label,
) -> Plan:
    child = children[index]
    history = history.forget(child.id)
    if _auto_shutdown(flags.auto_shutdown, children, index):
        return Plan(
            stop=_others_in_stop_order(children, index),
            forget=(child.id,),
            shutdown_self=SHUTDOWN,
            history=history,
            label="auto_shutdown",
        )
    return Plan(forget=(child.id,), history=history, label=label)


def _auto_shutdown(mode: AutoShutdown, children: Sequence[ChildState], index: int) -> bool:
    """OTP's do_auto_shutdown, for a child that exited and is not restarted."""
    match mode, children[index].significant:
        case AutoShutdown.NEVER, _:
            return False
        case _, False:
            return False
        case AutoShutdown.ANY_SIGNIFICANT, True:
            return True
        case AutoShutdown.ALL_SIGNIFICANT, True:
            return not any(
                c.running and c.significant for i, c in enumerate(children) if i != index
            )
    raise AssertionError(f"unhandled auto_shutdown {mode!r}")


def _restart(
    flags: SupFlags,
    children: Sequence[ChildState],
    index: int,
    history: History,
    now: float,
    rng: random.Random,
    label: Label,
) -> Plan:
    # ``restarts`` is oldest first and ``now`` never decreases: one bisect finds the
    # first restart still inside the period, and one C-level copy adds this one (a
    # slice of the whole tuple is the tuple itself).
    kept = history.restarts[bisect.bisect_left(history.restarts, now - flags.period) :]
    restarts = kept + (now,)  # noqa: RUF005 - one copy; (*kept, now) makes two
    history = History(restarts, history.backoff)  # attrs.evolve's introspection costs 4x
    if len(restarts) > flags.intensity:
        return Plan(
            stop=_others_in_stop_order(children, index),
            shutdown_self=SHUTDOWN,
            history=history,
            label="reached_max_restart_intensity",
        )

    exited = children[index]
    strategy = flags.strategy
    # The children the strategy restarts, in start order: [first, len(children)).
    if strategy is _ONE_FOR_ONE:
        delay, history = _backoff(exited, history, now, rng)
        return Plan(delay=delay, start=(exited.id,), history=history, label=label)
    if strategy is _REST_FOR_ONE:
        first = index
    elif strategy is _ONE_FOR_ALL:
        first = 0
    else:  # pragma: no cover - Strategy has the three
        raise AssertionError(f"unhandled strategy {strategy!r}")
    bystanders = [c for i, c in enumerate(children[first:], first) if i != index]
    temporary = tuple(c.id for c in bystanders if c.restart is _TEMPORARY)
    delay, history = _backoff(exited, history, now, rng)
    return Plan(
        stop=tuple(c.id for c in reversed(bystanders) if c.running),
        forget=temporary,
        delay=delay,
        start=tuple(
            c.id
            for i, c in enumerate(children[first:], first)
            if i == index or c.restart is not _TEMPORARY
        ),
        history=history.forget(*temporary) if temporary else history,
        label=label,
    )


def _backoff(
    child: ChildState, history: History, now: float, rng: random.Random
) -> tuple[float, History]:
    """The delay before restarting ``child``, and the history that records it."""
    if child.backoff is None:
        return 0.0, history.forget(child.id)
    last = history.backoff.get(child.id)
    ran_long_enough = last is None or now - last.due_at >= child.backoff.reset_interval
    attempt = 0 if ran_long_enough or last is None else last.attempts
    delay = child.backoff.delay(attempt, rng)
    backoff = {**history.backoff, child.id: BackoffState(attempt + 1, now + delay)}
    return delay, History(history.restarts, backoff)
