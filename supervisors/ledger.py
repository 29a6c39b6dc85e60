"""The task ledger: the replicated state machine an orchestrator group resumes from.

Principles. :class:`TaskLedger` is a pure, deterministic state machine: no IO, no clock,
no randomness, no logging. Every node of an orchestrator group applies the same committed
Raft entries in the same order and ends in the same state, byte for byte
(:meth:`TaskLedger.snapshot`). Time comes in only as fields of commands (``submitted_at``,
``at``, ``now``: the proposer's clock, in seconds). It is the Raft driver's
``StateMachine``: ``apply(entry) -> result``, ``snapshot() -> bytes``, ``restore(data)``.

Outcomes. Applying a command yields exactly one result value, never an exception:

* :class:`Accepted` -- the command took effect (it may still change nothing, e.g. a sweep
  that found no expired lease);
* :class:`Duplicate` -- the command repeats one that already took effect; the state is
  unchanged and ``result.task`` is the recorded task;
* :class:`Refused` -- the command is not allowed in this state, or its bytes are not a
  command (``Malformed``); ``result.reason`` says why.

Only an ``Accepted`` command changes the state; a ``Duplicate`` or a ``Refused`` one
changes nothing at all (not the fencing term, not ``last_progress_at``).

Fencing. Every orchestrator command carries the issuing orchestrator's ``term`` (its Raft
term) as a fencing token. The ledger keeps ``fencing_term``, the highest term of any
accepted orchestrator command (0 at first). A fenced command whose term is *older* than
``fencing_term`` is ``Refused(StaleTerm(term, fencing_term))``; a command of the same term
is judged on its merits; an accepted command of a newer term raises ``fencing_term`` to
its term (and forgets ``leader`` unless it is a :class:`NewTerm`). A new orchestrator's
first command should be ``NewTerm``. Client and worker commands (``Submit``, ``Complete``,
``Account``) are not fenced: accepted work is never thrown away because the leader
changed.

Task states: ``PENDING`` (submitted, waiting for a worker), ``ASSIGNED`` (a worker holds
it under a lease), and the final states ``COMPLETED``, ``FAILED``, ``CANCELLED``. A task
is in exactly one state. The one way out of a final state is a late result: a
``Complete`` for a ``FAILED`` task is accepted (finished work is never thrown away).

Attempts. Each ``Assign`` that hands a task to a worker (not a renewal by the same worker)
is one attempt. A task that loses its assignment -- a retryable ``Fail``, an expired lease
found by ``Expire``, a ``WorkerDown`` -- goes back to ``PENDING`` if it has had fewer than
``max_attempts`` attempts, and is ``FAILED`` otherwise. ``max_attempts`` comes from the
``Submit`` or, if it has none, from :class:`LedgerConfig` (default 3).

Commands (frozen attrs classes, keyword-only; fenced ones marked *fenced*):

* :class:`Submit` ``(task_id, payload, submitted_at, idempotency_key=None,
  max_attempts=None)`` -- a new ``PENDING`` task: ``Accepted(task)``. If ``task_id`` is
  known, or ``idempotency_key`` names a known task: ``Duplicate(that task)``, whatever the
  payload.
* :class:`Assign` ``(task_id, worker, term, at, lease_until)`` *fenced* -- hand the task to
  ``worker`` until ``lease_until``: ``Accepted(task)`` with the task ``ASSIGNED``. Refused:
  ``BadLease`` if ``lease_until <= at``; ``UnknownTask``; ``TaskFinished`` if it is
  completed, failed or cancelled; ``LeaseHeld`` if another worker holds it with
  ``lease_until > at``; ``AttemptsExhausted`` if handing it over (an expired lease of another
  worker) would exceed ``max_attempts``. Assigning it again to the worker that holds it
  renews the assignment (term, lease) without counting an attempt.
* :class:`Progress` ``(task_id, worker, term, note, at)`` *fenced* -- a progress record
  (Magentic-One's progress ledger); extends the lease to at least ``at`` plus the lease's
  original length. Refused: ``UnknownTask``; ``TaskFinished``; ``NotAssigned`` if the task
  is not assigned to ``worker``. The last ``max_progress_notes`` records are kept per task.
* :class:`Complete` ``(task_id, worker, result, at, tokens=0, cost=0.0, term=None)`` --
  a result; not fenced. The first completion is recorded (``Accepted(task)``, the task
  ``COMPLETED`` with ``completed_by=worker``), whatever the task's state or assignment (a
  worker may deliver a result buffered while there was no leader, from an assignment that
  has since expired or moved); later ones are ``Duplicate(task)`` and never change the
  recorded result. Refused: ``UnknownTask``; ``TaskFinished`` if it was cancelled.
  ``tokens`` and ``cost`` are kept on the task as the result's own report; they are not
  added to :meth:`TaskLedger.usage` (report spend with ``Account``).
* :class:`Fail` ``(task_id, worker, term, error, retryable)`` *fenced* -- the assigned
  worker failed: retryable and attempts left: back to ``PENDING`` (``error`` kept);
  otherwise ``FAILED``. Refused: ``UnknownTask``; ``TaskFinished``; ``NotAssigned`` if the
  task is not assigned to ``worker`` (a failure of an old assignment never undoes a new one).
* :class:`Cancel` ``(task_id, term)`` *fenced* -- a pending or assigned task is
  ``CANCELLED``; a cancelled one is a ``Duplicate``. Refused: ``UnknownTask``;
  ``TaskFinished`` if completed or failed.
* :class:`Expire` ``(now, term)`` *fenced* -- the orchestrator's sweep: every assigned task
  with ``lease_until <= now`` loses its assignment (see Attempts). ``Accepted`` with
  ``released`` (back to pending) and ``failed`` (attempts exhausted) task ids.
* :class:`WorkerDown` ``(worker, term)`` *fenced* -- the same for every task assigned to
  ``worker``, whatever its lease.
* :class:`SetFacts` ``(term, facts)``, :class:`SetPlan` ``(term, plan)`` *fenced* -- replace
  the orchestrator's facts or plan (Magentic-One's task ledger). ``Accepted``.
* :class:`Account` ``(agent, tokens_in, tokens_out, cost, task_id=None, key=None)`` -- add
  spend to the agent's totals and, if ``task_id`` is given, to the task's (the task need
  not be known). Not fenced: spend is real whoever led. With a ``key`` already accounted:
  ``Duplicate`` (a retried proposal is counted once).
* :class:`NewTerm` ``(term, leader)`` -- a new orchestrator took over (``term`` >= 1):
  newer than ``fencing_term``: ``Accepted``, ``fencing_term = term``, ``leader = leader``.
  Equal to ``fencing_term``: ``Duplicate`` if ``leader`` is already recorded, ``Accepted``
  (recording ``leader``) if that term's leader is not known yet (another command raised
  the term first), else ``Refused(StaleTerm)`` (one leader per term). Older:
  ``Refused(StaleTerm)``.

Encoding. :func:`encode_command` writes one msgpack map: ``{"v": SCHEMA_VERSION, "op":
<the class's op>, <field>: <value>, ...}`` (never pickle). :func:`decode_command` reads it
strictly: an unknown version or op, a missing or unknown field, a value of the wrong type
(ids are non-empty str; terms, attempts and tokens are int >= 0, ``max_attempts`` >= 1;
times and costs are finite numbers, read as float; costs >= 0) or an opaque value
(``payload``, ``result``, ``facts``, ``plan``) that is not plain msgpack data (nil, bool,
int, finite float, str, bytes, list, map with str or bytes keys, nested at most
:data:`MAX_VALUE_DEPTH` deep) raises :class:`MalformedCommand`, and ``apply`` turns that
into ``Refused(Malformed(detail))`` with no change. Opaque values come back as decoded by
msgpack (a tuple becomes a list). Every node must understand every schema version in the
log: upgrade followers before leaders.

Applying. ``apply(entry)`` (the driver's protocol) takes a committed
:class:`~runtime.raft.core.Entry`; ``apply_data(data)`` takes its bytes; ``execute(cmd)``
encodes a command and applies it the same way (for tests and single-node use). All three
return the result value; only ``execute`` raises, for a command that does not encode.

Snapshots. :meth:`TaskLedger.snapshot` is the msgpack of the whole state, including the
config and task order (``{"v": SNAPSHOT_VERSION, ...}``); ``restore(snapshot())`` gives an
equal ledger, ``restore(b"")`` the empty one (keeping this ledger's config). A snapshot
that does not decode raises :class:`MalformedSnapshot` and leaves the ledger unchanged.

Queries are pure reads: :meth:`~TaskLedger.task`, :meth:`~TaskLedger.tasks`,
:meth:`~TaskLedger.pending`, :meth:`~TaskLedger.assigned`, :meth:`~TaskLedger.completed`,
:meth:`~TaskLedger.failed`, :meth:`~TaskLedger.cancelled` (each in submission order),
:meth:`~TaskLedger.counts`, :meth:`~TaskLedger.by_worker`, :meth:`~TaskLedger.usage`, and
the properties ``facts``, ``plan``, ``fencing_term``, ``leader``, ``last_progress_at`` (the
largest time of an accepted ``Submit``, ``Assign``, ``Progress`` or ``Complete``: what the
progress watchdog watches). The driver logs ``ledger_committed`` with :func:`describe`.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Callable, Iterable, Mapping
from typing import Any, ClassVar, Final, TypeAlias, final

import attrs
import msgpack

from runtime.raft.core import Entry, EntryKind

__all__ = [
    "MAX_VALUE_DEPTH",
    "SCHEMA_VERSION",
    "SNAPSHOT_VERSION",
    "Accepted",
    "Account",
    "Assign",
    "AttemptsExhausted",
    "BadLease",
    "Cancel",
    "Command",
    "Complete",
    "Duplicate",
    "Expire",
    "Fail",
    "LeaseHeld",
    "LedgerConfig",
    "Malformed",
    "MalformedCommand",
    "MalformedSnapshot",
    "NewTerm",
    "NotAssigned",
    "Progress",
    "ProgressNote",
    "Reason",
    "Refused",
    "Result",
    "SetFacts",
    "SetPlan",
    "StaleTerm",
    "Submit",
    "Task",
    "TaskCounts",
    "TaskFinished",
    "TaskLedger",
    "TaskState",
    "UnknownTask",
    "Usage",
    "UsageReport",
    "WorkerDown",
    "decode_command",
    "describe",
    "encode_command",
]

#: The command schema this code writes and reads (the ``"v"`` of every command).
SCHEMA_VERSION: Final = 1
#: The snapshot layout this code writes and reads.
SNAPSHOT_VERSION: Final = 1
#: How deeply an opaque value (payload, result, facts, plan) may nest lists and maps.
MAX_VALUE_DEPTH: Final = 64

_MAX_INT: Final = 2**63 - 1

#: An opaque msgpack value: nil, bool, int, float, str, bytes, list, map.
Value: TypeAlias = Any


class MalformedCommand(ValueError):
    """The bytes (or the command being encoded) are not a valid ledger command.

    The message names the field and what was wrong. ``apply`` never raises it; it
    answers ``Refused(Malformed(message))`` instead.
    """


class MalformedSnapshot(ValueError):
    """The data handed to ``restore`` is not a ledger snapshot this code can read."""


# --------------------------------------------------------------------------- values


class TaskState(enum.Enum):
    """Where a task is in its life. Values are stable in snapshots."""

    PENDING = "pending"
    """Submitted (or released), waiting for a worker."""
    ASSIGNED = "assigned"
    """A worker holds it under a lease."""
    COMPLETED = "completed"
    """A result is recorded. Final."""
    FAILED = "failed"
    """Failed for good (non-retryable, or attempts exhausted). Final, but a late result
    still completes it."""
    CANCELLED = "cancelled"
    """Cancelled by the orchestrator. Final."""


_FINISHED: Final = frozenset({TaskState.COMPLETED, TaskState.FAILED, TaskState.CANCELLED})


@final
@attrs.frozen
class ProgressNote:
    """One progress record of a task: who reported ``note``, at what time, in which term."""

    worker: str
    term: int
    note: str
    at: float


@final
@attrs.frozen(kw_only=True)
class Task:
    """A task as the ledger records it. Assignment fields are None unless ``ASSIGNED``."""

    task_id: str
    payload: Value
    submitted_at: float
    idempotency_key: str | None
    max_attempts: int  #: >= 1; from Submit, else the ledger config
    state: TaskState = TaskState.PENDING
    attempts: int = 0  #: assignments to a worker so far (renewals not counted)
    worker: str | None = None  #: the assignee, while ASSIGNED
    term: int | None = None  #: the term of the current assignment
    assigned_at: float | None = None
    lease_until: float | None = None
    lease_length: float | None = None  #: lease_until - at of the Assign; Progress extends by it
    result: Value = None
    completed_by: str | None = None
    completed_at: float | None = None
    completed_term: int | None = None  #: the term the completing worker reported, if any
    tokens: int = 0  #: as reported with the result
    cost: float = 0.0  #: as reported with the result
    error: str | None = None  #: the last failure (Fail's error, "lease expired", "worker down")
    progress: tuple[ProgressNote, ...] = ()  #: the last ``max_progress_notes`` records


@final
@attrs.frozen
class Usage:
    """Tokens and cost summed over ``Account`` commands."""

    tokens_in: int = 0
    tokens_out: int = 0
    cost: float = 0.0

    def plus(self, tokens_in: int, tokens_out: int, cost: float) -> Usage:
        """Return this usage with the given spend added."""
        return Usage(self.tokens_in + tokens_in, self.tokens_out + tokens_out, self.cost + cost)


@final
@attrs.frozen
class UsageReport:
    """Usage per agent and per task id (in first-accounted order), and the grand total."""

    agents: Mapping[str, Usage]
    tasks: Mapping[str, Usage]
    total: Usage


@final
@attrs.frozen
class TaskCounts:
    """How many tasks are in each state."""

    pending: int = 0
    assigned: int = 0
    completed: int = 0
    failed: int = 0
    cancelled: int = 0

    @property
    def total(self) -> int:
        """All tasks ever accepted."""
        return self.pending + self.assigned + self.completed + self.failed + self.cancelled


@final
@attrs.frozen
class LedgerConfig:
    """Policy shared by every node (it travels in snapshots).

    Raises:
        ValueError: ``max_attempts`` or ``max_progress_notes`` is below 1 or not an int.
    """

    max_attempts: int = 3  #: attempts per task unless its Submit says otherwise; >= 1
    max_progress_notes: int = 20  #: progress records kept per task (the newest); >= 1

    def __attrs_post_init__(self) -> None:
        for name in ("max_attempts", "max_progress_notes"):
            value = getattr(self, name)
            if type(value) is not int or value < 1:
                raise ValueError(f"LedgerConfig.{name} must be an int >= 1, got {value!r}")


# --------------------------------------------------------------------------- commands


@final
@attrs.frozen(kw_only=True)
class Submit:
    """A client submits a task. Not fenced; idempotent by task id and idempotency key."""

    op: ClassVar[str] = "submit"
    task_id: str
    payload: Value
    submitted_at: float
    idempotency_key: str | None = None
    max_attempts: int | None = None  #: None: the ledger config's


@final
@attrs.frozen(kw_only=True)
class Assign:
    """The orchestrator hands a task to a worker until ``lease_until``. Fenced."""

    op: ClassVar[str] = "assign"
    task_id: str
    worker: str
    term: int
    at: float  #: the orchestrator's now; a lease ending at or before it has expired
    lease_until: float


@final
@attrs.frozen(kw_only=True)
class Progress:
    """A progress record for an assigned task; extends its lease. Fenced."""

    op: ClassVar[str] = "progress"
    task_id: str
    worker: str
    term: int
    note: str
    at: float


@final
@attrs.frozen(kw_only=True)
class Complete:
    """A worker's result. Not fenced; the first completion wins."""

    op: ClassVar[str] = "complete"
    task_id: str
    worker: str
    result: Value
    at: float
    tokens: int = 0
    cost: float = 0.0
    term: int | None = None  #: the term of the assignment the worker worked under, if known


@final
@attrs.frozen(kw_only=True)
class Fail:
    """The assigned worker failed the task. Fenced."""

    op: ClassVar[str] = "fail"
    task_id: str
    worker: str
    term: int
    error: str
    retryable: bool


@final
@attrs.frozen(kw_only=True)
class Cancel:
    """The orchestrator cancels a pending or assigned task. Fenced."""

    op: ClassVar[str] = "cancel"
    task_id: str
    term: int


@final
@attrs.frozen(kw_only=True)
class Expire:
    """The orchestrator's sweep: release every task whose lease ended by ``now``. Fenced."""

    op: ClassVar[str] = "expire"
    now: float
    term: int


@final
@attrs.frozen(kw_only=True)
class WorkerDown:
    """The orchestrator declares ``worker`` dead: release its tasks. Fenced."""

    op: ClassVar[str] = "worker_down"
    worker: str
    term: int


@final
@attrs.frozen(kw_only=True)
class SetFacts:
    """Replace the orchestrator's facts. Fenced."""

    op: ClassVar[str] = "set_facts"
    term: int
    facts: Value


@final
@attrs.frozen(kw_only=True)
class SetPlan:
    """Replace the orchestrator's plan. Fenced."""

    op: ClassVar[str] = "set_plan"
    term: int
    plan: Value


@final
@attrs.frozen(kw_only=True)
class Account:
    """Token and cost spend of an agent, optionally for a task. Not fenced."""

    op: ClassVar[str] = "account"
    agent: str
    tokens_in: int
    tokens_out: int
    cost: float
    task_id: str | None = None
    key: str | None = None  #: idempotency key: a second Account with it is a Duplicate


@final
@attrs.frozen(kw_only=True)
class NewTerm:
    """A new orchestrator took over in ``term``: raises the fencing term."""

    op: ClassVar[str] = "new_term"
    term: int
    leader: str


Command: TypeAlias = (
    Submit
    | Assign
    | Progress
    | Complete
    | Fail
    | Cancel
    | Expire
    | WorkerDown
    | SetFacts
    | SetPlan
    | Account
    | NewTerm
)

_FencedCommand: TypeAlias = (
    Assign | Progress | Fail | Cancel | Expire | WorkerDown | SetFacts | SetPlan | NewTerm
)


# --------------------------------------------------------------------------- reasons


@final
@attrs.frozen
class StaleTerm:
    """The command's term is older than the ledger's fencing term."""

    code: ClassVar[str] = "stale_term"
    term: int
    fencing_term: int


@final
@attrs.frozen
class Malformed:
    """The entry is not a ledger command (``error`` says why)."""

    code: ClassVar[str] = "malformed"
    error: str


@final
@attrs.frozen
class UnknownTask:
    """No task with this id was ever submitted."""

    code: ClassVar[str] = "unknown_task"
    task_id: str


@final
@attrs.frozen
class TaskFinished:
    """The task is already in a final ``state`` that the command may not leave."""

    code: ClassVar[str] = "task_finished"
    task_id: str
    state: TaskState


@final
@attrs.frozen
class LeaseHeld:
    """Another worker holds the task under a lease that has not expired."""

    code: ClassVar[str] = "lease_held"
    task_id: str
    worker: str
    lease_until: float


@final
@attrs.frozen
class NotAssigned:
    """The task is not assigned to ``worker`` (``assignee`` holds it, or nobody)."""

    code: ClassVar[str] = "not_assigned"
    task_id: str
    worker: str
    assignee: str | None


@final
@attrs.frozen
class BadLease:
    """The lease ends at or before the assignment's own time."""

    code: ClassVar[str] = "bad_lease"
    task_id: str
    at: float
    lease_until: float


@final
@attrs.frozen
class AttemptsExhausted:
    """Another assignment would exceed the task's ``max_attempts``."""

    code: ClassVar[str] = "attempts_exhausted"
    task_id: str
    attempts: int


Reason: TypeAlias = (
    StaleTerm
    | Malformed
    | UnknownTask
    | TaskFinished
    | LeaseHeld
    | NotAssigned
    | BadLease
    | AttemptsExhausted
)


# --------------------------------------------------------------------------- results


@final
@attrs.frozen
class Accepted:
    """The command took effect. ``task``: the task afterwards (task commands).

    ``released`` and ``failed`` list the task ids an ``Expire`` or ``WorkerDown`` sent
    back to pending or failed (attempts exhausted), in submission order.
    """

    duplicate: ClassVar[bool] = False
    op: str
    task: Task | None = None
    released: tuple[str, ...] = ()
    failed: tuple[str, ...] = ()


@final
@attrs.frozen
class Duplicate:
    """The command repeats one that took effect; nothing changed. ``task``: as recorded."""

    duplicate: ClassVar[bool] = True
    op: str
    task: Task | None = None


@final
@attrs.frozen
class Refused:
    """The command was not allowed (or not a command); nothing changed."""

    duplicate: ClassVar[bool] = False
    op: str | None  #: None when the entry did not decode
    reason: Reason


Result: TypeAlias = Accepted | Duplicate | Refused


def describe(result: Result) -> str:
    """Return a compact one-line summary of ``result`` for a log line.

    Examples: ``"accepted assign t1 assigned"``, ``"duplicate complete t1"``,
    ``"refused cancel: stale_term 3 < 5"``, ``"accepted expire released=t1,t2 failed=t3"``.
    """
    match result:
        case Accepted(op=op, task=task, released=released, failed=failed):
            parts = [f"accepted {op}"]
            if task is not None:
                parts.append(f"{task.task_id} {task.state.value}")
            if released:
                parts.append("released=" + ",".join(released))
            if failed:
                parts.append("failed=" + ",".join(failed))
            return " ".join(parts)
        case Duplicate(op=op, task=task):
            return f"duplicate {op}" + ("" if task is None else f" {task.task_id}")
        case Refused(op=op, reason=reason):
            return f"refused {op or '?'}: {_describe_reason(reason)}"


def _describe_reason(reason: Reason) -> str:
    match reason:
        case StaleTerm(term=term, fencing_term=fencing):
            return f"stale_term {term} < {fencing}"
        case Malformed(error=error):
            return f"malformed {error}"
        case UnknownTask(task_id=task_id):
            return f"unknown_task {task_id}"
        case TaskFinished(task_id=task_id, state=state):
            return f"task_finished {task_id} {state.value}"
        case LeaseHeld(task_id=task_id, worker=worker, lease_until=until):
            return f"lease_held {task_id} by {worker} until {until}"
        case NotAssigned(task_id=task_id, worker=worker, assignee=assignee):
            return f"not_assigned {task_id} to {worker} (assignee {assignee})"
        case BadLease(task_id=task_id, at=at, lease_until=until):
            return f"bad_lease {task_id} until {until} <= at {at}"
        case AttemptsExhausted(task_id=task_id, attempts=attempts):
            return f"attempts_exhausted {task_id} after {attempts}"


# --------------------------------------------------------------------------- codec

_Check: TypeAlias = Callable[[object, str], object]


def _expect(what: str, ok: Callable[[Any], bool]) -> _Check:
    """A check that passes a value *ok* accepts, as it is, and refuses any other."""

    def check(value: object, name: str) -> object:
        if not ok(value):
            raise MalformedCommand(f"{name}: expected {what}, got {value!r:.60}")
        return value

    return check


def _int_from(low: int) -> Callable[[Any], bool]:
    return lambda v: isinstance(v, int) and not isinstance(v, bool) and low <= v <= _MAX_INT


_ident: Final = _expect("a non-empty str", lambda v: type(v) is str and v != "")
_text: Final = _expect("a str", lambda v: type(v) is str)
_natural: Final = _expect("an int >= 0", _int_from(0))
_positive: Final = _expect("an int >= 1", _int_from(1))
_flag: Final = _expect("a bool", lambda v: type(v) is bool)


def _number(value: object, name: str) -> float:
    if not isinstance(value, int | float) or isinstance(value, bool) or not math.isfinite(value):
        raise MalformedCommand(f"{name}: expected a finite number, got {value!r:.60}")
    return float(value)


def _time(value: object, name: str) -> object:
    return _number(value, name)


def _money(value: object, name: str) -> object:
    number = _number(value, name)
    if number < 0:
        raise MalformedCommand(f"{name}: expected a number >= 0, got {value!r:.60}")
    return number


def _value(value: object, name: str) -> object:
    stack: list[tuple[object, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if item is None or isinstance(item, bool | str | bytes):
            continue
        if isinstance(item, int):
            if not -(2**63) <= item < 2**64:
                raise MalformedCommand(f"{name}: int out of msgpack range")
            continue
        if isinstance(item, float):
            if not math.isfinite(item):
                raise MalformedCommand(f"{name}: non-finite float {item!r}")
            continue
        if depth >= MAX_VALUE_DEPTH:
            raise MalformedCommand(f"{name}: nested deeper than {MAX_VALUE_DEPTH}")
        if isinstance(item, list | tuple):
            stack.extend((x, depth + 1) for x in item)
            continue
        if isinstance(item, dict):
            for key, x in item.items():
                if not isinstance(key, str | bytes):
                    raise MalformedCommand(f"{name}: map key {key!r:.60} is not str or bytes")
                stack.append((x, depth + 1))
            continue
        raise MalformedCommand(f"{name}: {type(item).__name__} is not plain msgpack data")
    return value


def _optional(check: _Check) -> _Check:
    def optional(value: object, name: str) -> object:
        return None if value is None else check(value, name)

    return optional


_SCHEMA: Final[dict[type[Command], tuple[tuple[str, _Check], ...]]] = {
    Submit: (
        ("task_id", _ident),
        ("payload", _value),
        ("submitted_at", _time),
        ("idempotency_key", _optional(_ident)),
        ("max_attempts", _optional(_positive)),
    ),
    Assign: (
        ("task_id", _ident),
        ("worker", _ident),
        ("term", _natural),
        ("at", _time),
        ("lease_until", _time),
    ),
    Progress: (
        ("task_id", _ident),
        ("worker", _ident),
        ("term", _natural),
        ("note", _text),
        ("at", _time),
    ),
    Complete: (
        ("task_id", _ident),
        ("worker", _ident),
        ("result", _value),
        ("at", _time),
        ("tokens", _natural),
        ("cost", _money),
        ("term", _optional(_natural)),
    ),
    Fail: (
        ("task_id", _ident),
        ("worker", _ident),
        ("term", _natural),
        ("error", _text),
        ("retryable", _flag),
    ),
    Cancel: (("task_id", _ident), ("term", _natural)),
    Expire: (("now", _time), ("term", _natural)),
    WorkerDown: (("worker", _ident), ("term", _natural)),
    SetFacts: (("term", _natural), ("facts", _value)),
    SetPlan: (("term", _natural), ("plan", _value)),
    Account: (
        ("agent", _ident),
        ("tokens_in", _natural),
        ("tokens_out", _natural),
        ("cost", _money),
        ("task_id", _optional(_ident)),
        ("key", _optional(_ident)),
    ),
    NewTerm: (("term", _positive), ("leader", _ident)),
}
_BY_OP: Final[dict[str, type[Command]]] = {cls.op: cls for cls in _SCHEMA}
_REQUIRED: Final[dict[type[Command], frozenset[str]]] = {
    cls: frozenset(f.name for f in attrs.fields(cls) if f.default is attrs.NOTHING)
    for cls in _SCHEMA
}


def encode_command(cmd: Command) -> bytes:
    """Return the msgpack bytes of ``cmd`` (schema :data:`SCHEMA_VERSION`).

    Raises:
        MalformedCommand: A field has a value the schema does not allow (the same checks
            :func:`decode_command` makes), so a command that encodes always decodes.
        TypeError: ``cmd`` is not a ledger command.
    """
    fields = _SCHEMA.get(type(cmd))
    if fields is None:
        raise TypeError(f"not a ledger command: {cmd!r:.80}")
    wire: dict[str, object] = {"v": SCHEMA_VERSION, "op": cmd.op}
    for name, check in fields:
        check(getattr(cmd, name), f"{cmd.op}.{name}")
        wire[name] = getattr(cmd, name)
    data: bytes = msgpack.packb(wire, use_bin_type=True)
    return data


def _no_ext(code: int, data: bytes) -> object:
    raise MalformedCommand(f"msgpack ext type {code} is not allowed")


def decode_command(data: bytes) -> Command:
    """Return the command that :func:`encode_command` wrote into ``data``.

    Raises:
        MalformedCommand: ``data`` is not msgpack, not a map, of another schema version,
            names an unknown op, lacks a required field, has an unknown field, or has a
            value of the wrong type (see the module doc). Never any other exception.
    """
    try:
        wire = msgpack.unpackb(
            data, raw=False, strict_map_key=True, use_list=True, ext_hook=_no_ext, timestamp=0
        )
    except MalformedCommand:
        raise
    except Exception as exc:  # msgpack raises a zoo of ValueError/TypeError subclasses
        raise MalformedCommand(f"not msgpack: {type(exc).__name__}: {exc}") from None
    if type(wire) is not dict:
        raise MalformedCommand(f"expected a map, got {type(wire).__name__}")
    version = wire.pop("v", None)
    if type(version) is not int or version != SCHEMA_VERSION:
        raise MalformedCommand(f"unsupported schema version {version!r:.20}")
    op = wire.pop("op", None)
    cls = _BY_OP.get(op) if type(op) is str else None
    if cls is None:
        raise MalformedCommand(f"unknown op {op!r:.40}")
    fields = _SCHEMA[cls]
    unknown = wire.keys() - {name for name, _ in fields}
    if unknown:
        raise MalformedCommand(f"{op}: unknown fields {sorted(unknown)!r:.80}")
    missing = _REQUIRED[cls] - wire.keys()
    if missing:
        raise MalformedCommand(f"{op}: missing fields {sorted(missing)!r}")
    kwargs: dict[str, Any] = {
        name: check(wire[name], f"{op}.{name}") for name, check in fields if name in wire
    }
    return cls(**kwargs)


# --------------------------------------------------------------------------- the ledger


def _fenced_term(cmd: Command) -> int | None:
    return cmd.term if isinstance(cmd, _FencedCommand) else None


@final
class TaskLedger:
    """The replicated task ledger (see the module doc for every command and outcome).

    Implements the Raft driver's ``StateMachine``. Equality compares the whole state
    (two ledgers are equal when their snapshots are).
    """

    def __init__(self, config: LedgerConfig | None = None) -> None:
        """Create an empty ledger with ``config`` (default :class:`LedgerConfig()`)."""
        self._config = LedgerConfig() if config is None else config
        self._reset()

    def _reset(self) -> None:
        self._tasks: dict[str, Task] = {}
        self._keys: dict[str, str] = {}
        self._fencing_term = 0
        self._leader: str | None = None
        self._facts: Value = None
        self._plan: Value = None
        self._last_progress_at: float | None = None
        self._agent_usage: dict[str, Usage] = {}
        self._task_usage: dict[str, Usage] = {}
        self._account_keys: dict[str, None] = {}

    # ----------------------------------------------------------------- StateMachine

    def apply(self, entry: Entry) -> Result:
        """Apply one committed Raft entry; return its result (never raises).

        A ``NORMAL`` entry's data is decoded and applied as :meth:`apply_data` does;
        any other kind is ``Refused(None, Malformed(...))`` and changes nothing.
        """
        if entry.kind is not EntryKind.NORMAL:
            return Refused(None, Malformed(f"entry kind {entry.kind.name} is not a command"))
        return self.apply_data(entry.data)

    def apply_data(self, data: bytes) -> Result:
        """Decode ``data`` and apply the command; bytes that do not decode are refused.

        Returns:
            The command's result, or ``Refused(None, Malformed(detail))`` with no change.
        """
        try:
            cmd = decode_command(data)
        except MalformedCommand as exc:
            return Refused(None, Malformed(str(exc)))
        return self._apply(cmd)

    def execute(self, cmd: Command) -> Result:
        """Apply ``cmd`` as if it had come through the log (encoded, then decoded).

        Raises:
            MalformedCommand: ``cmd`` does not encode (see :func:`encode_command`).
        """
        return self.apply_data(encode_command(cmd))

    def snapshot(self) -> bytes:
        """Return the whole state as msgpack (layout :data:`SNAPSHOT_VERSION`)."""
        wire = {
            "v": SNAPSHOT_VERSION,
            "config": [self._config.max_attempts, self._config.max_progress_notes],
            "fencing_term": self._fencing_term,
            "leader": self._leader,
            "facts": self._facts,
            "plan": self._plan,
            "last_progress_at": self._last_progress_at,
            "tasks": [_task_to_wire(t) for t in self._tasks.values()],
            "agent_usage": [[k, *attrs.astuple(u)] for k, u in self._agent_usage.items()],
            "task_usage": [[k, *attrs.astuple(u)] for k, u in self._task_usage.items()],
            "account_keys": list(self._account_keys),
        }
        data: bytes = msgpack.packb(wire, use_bin_type=True)
        return data

    def restore(self, data: bytes) -> None:
        """Replace the whole state with a snapshot's; ``b""`` is the empty state.

        Raises:
            MalformedSnapshot: ``data`` is not a snapshot of :data:`SNAPSHOT_VERSION`; the
                ledger is unchanged.
        """
        if not data:
            self._reset()
            return
        try:
            wire = msgpack.unpackb(data, raw=False, strict_map_key=True, use_list=True)
            version = wire["v"]
        except Exception as exc:
            raise MalformedSnapshot(f"not a ledger snapshot: {type(exc).__name__}: {exc}") from None
        if version != SNAPSHOT_VERSION:
            raise MalformedSnapshot(f"unsupported snapshot version {version!r:.20}")
        try:
            config = LedgerConfig(*wire["config"])
            tasks = {t.task_id: t for t in map(_task_from_wire, wire["tasks"])}
            agent_usage = {k: Usage(*u) for k, *u in wire["agent_usage"]}
            task_usage = {k: Usage(*u) for k, *u in wire["task_usage"]}
            account_keys = dict.fromkeys(wire["account_keys"])
            fencing_term, leader = wire["fencing_term"], wire["leader"]
            facts, plan, last = wire["facts"], wire["plan"], wire["last_progress_at"]
        except Exception as exc:
            raise MalformedSnapshot(f"bad ledger snapshot: {type(exc).__name__}: {exc}") from None
        self._config = config
        self._reset()
        self._tasks = tasks
        self._keys = {t.idempotency_key: t.task_id for t in tasks.values() if t.idempotency_key}
        self._fencing_term, self._leader = fencing_term, leader
        self._facts, self._plan, self._last_progress_at = facts, plan, last
        self._agent_usage, self._task_usage = agent_usage, task_usage
        self._account_keys = account_keys

    # ----------------------------------------------------------------- queries

    @property
    def config(self) -> LedgerConfig:
        """The policy in force (replaced by ``restore``)."""
        return self._config

    @property
    def fencing_term(self) -> int:
        """The highest term of any accepted orchestrator command; 0 before the first."""
        return self._fencing_term

    @property
    def leader(self) -> str | None:
        """The leader named by the last accepted ``NewTerm`` of ``fencing_term``, if any."""
        return self._leader

    @property
    def facts(self) -> Value:
        """The orchestrator's facts (None until the first ``SetFacts``)."""
        return self._facts

    @property
    def plan(self) -> Value:
        """The orchestrator's plan (None until the first ``SetPlan``)."""
        return self._plan

    @property
    def last_progress_at(self) -> float | None:
        """The largest time of an accepted Submit, Assign, Progress or Complete; or None."""
        return self._last_progress_at

    def task(self, task_id: str) -> Task | None:
        """Return the task with this id, or None if it was never submitted."""
        return self._tasks.get(task_id)

    def tasks(self) -> tuple[Task, ...]:
        """Return every task, in submission order."""
        return tuple(self._tasks.values())

    def _in_state(self, state: TaskState) -> tuple[Task, ...]:
        return tuple(t for t in self._tasks.values() if t.state is state)

    def pending(self) -> tuple[Task, ...]:
        """Return the pending tasks in submission order (the next to assign first)."""
        return self._in_state(TaskState.PENDING)

    def assigned(self) -> tuple[Task, ...]:
        """Return the assigned tasks in submission order."""
        return self._in_state(TaskState.ASSIGNED)

    def completed(self) -> tuple[Task, ...]:
        """Return the completed tasks in submission order."""
        return self._in_state(TaskState.COMPLETED)

    def failed(self) -> tuple[Task, ...]:
        """Return the failed tasks in submission order."""
        return self._in_state(TaskState.FAILED)

    def cancelled(self) -> tuple[Task, ...]:
        """Return the cancelled tasks in submission order."""
        return self._in_state(TaskState.CANCELLED)

    def by_worker(self, worker: str) -> tuple[Task, ...]:
        """Return the tasks currently assigned to ``worker``, in submission order."""
        return tuple(
            t for t in self._tasks.values() if t.state is TaskState.ASSIGNED and t.worker == worker
        )

    def counts(self) -> TaskCounts:
        """Return how many tasks are in each state."""
        n = dict.fromkeys(TaskState, 0)
        for t in self._tasks.values():
            n[t.state] += 1
        return TaskCounts(
            pending=n[TaskState.PENDING],
            assigned=n[TaskState.ASSIGNED],
            completed=n[TaskState.COMPLETED],
            failed=n[TaskState.FAILED],
            cancelled=n[TaskState.CANCELLED],
        )

    def usage(self) -> UsageReport:
        """Return the ``Account`` totals per agent, per task and overall."""
        total = Usage()
        for u in self._agent_usage.values():
            total = total.plus(u.tokens_in, u.tokens_out, u.cost)
        return UsageReport(dict(self._agent_usage), dict(self._task_usage), total)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, TaskLedger):
            return NotImplemented
        return self.snapshot() == other.snapshot()

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        c = self.counts()
        return (
            f"<TaskLedger term={self._fencing_term} pending={c.pending} assigned={c.assigned}"
            f" completed={c.completed} failed={c.failed} cancelled={c.cancelled}>"
        )

    # ----------------------------------------------------------------- transitions

    def _apply(self, cmd: Command) -> Result:
        term = _fenced_term(cmd)
        if term is not None and term < self._fencing_term:
            return Refused(cmd.op, StaleTerm(term, self._fencing_term))
        result = self._dispatch(cmd)
        if isinstance(result, Accepted) and term is not None and term > self._fencing_term:
            self._fencing_term = term
            self._leader = cmd.leader if isinstance(cmd, NewTerm) else None
        return result

    def _dispatch(self, cmd: Command) -> Result:
        match cmd:
            case Submit():
                return self._submit(cmd)
            case Assign():
                return self._assign(cmd)
            case Progress():
                return self._progress(cmd)
            case Complete():
                return self._complete(cmd)
            case Fail():
                return self._fail(cmd)
            case Cancel():
                return self._cancel(cmd)
            case Expire(now=now):
                return self._release_where(
                    cmd.op,
                    lambda t: t.lease_until is not None and t.lease_until <= now,
                    "lease expired",
                )
            case WorkerDown(worker=worker):
                return self._release_where(cmd.op, lambda t: t.worker == worker, "worker down")
            case SetFacts():
                self._facts = cmd.facts
                return Accepted(cmd.op)
            case SetPlan():
                self._plan = cmd.plan
                return Accepted(cmd.op)
            case Account():
                return self._account(cmd)
            case NewTerm():
                return self._new_term(cmd)

    def _progressed(self, at: float) -> None:
        if self._last_progress_at is None or at > self._last_progress_at:
            self._last_progress_at = at

    def _put(self, op: str, task: Task) -> Accepted:
        self._tasks[task.task_id] = task
        return Accepted(op, task)

    def _submit(self, cmd: Submit) -> Result:
        existing = self._tasks.get(cmd.task_id)
        if existing is None and cmd.idempotency_key is not None:
            key_owner = self._keys.get(cmd.idempotency_key)
            existing = None if key_owner is None else self._tasks[key_owner]
        if existing is not None:
            return Duplicate(cmd.op, existing)
        task = Task(
            task_id=cmd.task_id,
            payload=cmd.payload,
            submitted_at=cmd.submitted_at,
            idempotency_key=cmd.idempotency_key,
            max_attempts=self._config.max_attempts
            if cmd.max_attempts is None
            else cmd.max_attempts,
        )
        if cmd.idempotency_key is not None:
            self._keys[cmd.idempotency_key] = cmd.task_id
        self._progressed(cmd.submitted_at)
        return self._put(cmd.op, task)

    def _assign(self, cmd: Assign) -> Result:
        if cmd.lease_until <= cmd.at:
            return Refused(cmd.op, BadLease(cmd.task_id, cmd.at, cmd.lease_until))
        task = self._tasks.get(cmd.task_id)
        if task is None:
            return Refused(cmd.op, UnknownTask(cmd.task_id))
        if task.state in _FINISHED:
            return Refused(cmd.op, TaskFinished(task.task_id, task.state))
        renewal = task.state is TaskState.ASSIGNED and task.worker == cmd.worker
        if task.state is TaskState.ASSIGNED and not renewal:
            assert task.worker is not None
            assert task.lease_until is not None
            if task.lease_until > cmd.at:
                return Refused(cmd.op, LeaseHeld(task.task_id, task.worker, task.lease_until))
        if not renewal and task.attempts >= task.max_attempts:
            return Refused(cmd.op, AttemptsExhausted(task.task_id, task.attempts))
        self._progressed(cmd.at)
        return self._put(
            cmd.op,
            attrs.evolve(
                task,
                state=TaskState.ASSIGNED,
                attempts=task.attempts if renewal else task.attempts + 1,
                worker=cmd.worker,
                term=cmd.term,
                assigned_at=cmd.at,
                lease_until=cmd.lease_until,
                lease_length=cmd.lease_until - cmd.at,
            ),
        )

    def _held_by(self, op: str, task_id: str, worker: str) -> Task | Refused:
        """Return the task if ``worker`` holds it, else the refusal."""
        task = self._tasks.get(task_id)
        if task is None:
            return Refused(op, UnknownTask(task_id))
        if task.state in _FINISHED:
            return Refused(op, TaskFinished(task_id, task.state))
        if task.state is not TaskState.ASSIGNED or task.worker != worker:
            return Refused(op, NotAssigned(task_id, worker, task.worker))
        return task

    def _progress(self, cmd: Progress) -> Result:
        task = self._held_by(cmd.op, cmd.task_id, cmd.worker)
        if isinstance(task, Refused):
            return task
        assert task.lease_until is not None
        assert task.lease_length is not None
        note = ProgressNote(cmd.worker, cmd.term, cmd.note, cmd.at)
        notes = (*task.progress, note)[-self._config.max_progress_notes :]
        self._progressed(cmd.at)
        return self._put(
            cmd.op,
            attrs.evolve(
                task, progress=notes, lease_until=max(task.lease_until, cmd.at + task.lease_length)
            ),
        )

    def _complete(self, cmd: Complete) -> Result:
        task = self._tasks.get(cmd.task_id)
        if task is None:
            return Refused(cmd.op, UnknownTask(cmd.task_id))
        if task.state is TaskState.COMPLETED:
            return Duplicate(cmd.op, task)
        if task.state is TaskState.CANCELLED:
            return Refused(cmd.op, TaskFinished(task.task_id, task.state))
        self._progressed(cmd.at)
        return self._put(
            cmd.op,
            attrs.evolve(
                _unassigned(task, TaskState.COMPLETED),
                result=cmd.result,
                completed_by=cmd.worker,
                completed_at=cmd.at,
                completed_term=cmd.term,
                tokens=cmd.tokens,
                cost=cmd.cost,
            ),
        )

    def _fail(self, cmd: Fail) -> Result:
        task = self._held_by(cmd.op, cmd.task_id, cmd.worker)
        if isinstance(task, Refused):
            return task
        if cmd.retryable:
            return self._put(cmd.op, _released(task, cmd.error))
        return self._put(cmd.op, attrs.evolve(_unassigned(task, TaskState.FAILED), error=cmd.error))

    def _cancel(self, cmd: Cancel) -> Result:
        task = self._tasks.get(cmd.task_id)
        if task is None:
            return Refused(cmd.op, UnknownTask(cmd.task_id))
        if task.state is TaskState.CANCELLED:
            return Duplicate(cmd.op, task)
        if task.state in _FINISHED:
            return Refused(cmd.op, TaskFinished(task.task_id, task.state))
        return self._put(cmd.op, _unassigned(task, TaskState.CANCELLED))

    def _release_where(self, op: str, lost: Callable[[Task], bool], why: str) -> Result:
        released: list[str] = []
        failed: list[str] = []
        for task in list(self._tasks.values()):
            if task.state is TaskState.ASSIGNED and lost(task):
                after = _released(task, why)
                self._tasks[task.task_id] = after
                (released if after.state is TaskState.PENDING else failed).append(task.task_id)
        return Accepted(op, released=tuple(released), failed=tuple(failed))

    def _account(self, cmd: Account) -> Result:
        if cmd.key is not None:
            if cmd.key in self._account_keys:
                return Duplicate(cmd.op)
            self._account_keys[cmd.key] = None
        spend = (cmd.tokens_in, cmd.tokens_out, cmd.cost)
        self._agent_usage[cmd.agent] = self._agent_usage.get(cmd.agent, Usage()).plus(*spend)
        if cmd.task_id is not None:
            self._task_usage[cmd.task_id] = self._task_usage.get(cmd.task_id, Usage()).plus(*spend)
        return Accepted(cmd.op)

    def _new_term(self, cmd: NewTerm) -> Result:
        if cmd.term > self._fencing_term:
            return Accepted(cmd.op)  # _apply raises the term and records the leader
        if self._leader == cmd.leader:
            return Duplicate(cmd.op)
        if self._leader is None:
            self._leader = cmd.leader
            return Accepted(cmd.op)
        return Refused(cmd.op, StaleTerm(cmd.term, self._fencing_term))


def _unassigned(task: Task, state: TaskState) -> Task:
    return attrs.evolve(
        task,
        state=state,
        worker=None,
        term=None,
        assigned_at=None,
        lease_until=None,
        lease_length=None,
    )


def _released(task: Task, why: str) -> Task:
    """The task after losing its assignment: pending if attempts remain, else failed."""
    state = TaskState.PENDING if task.attempts < task.max_attempts else TaskState.FAILED
    return attrs.evolve(_unassigned(task, state), error=why)


# --------------------------------------------------------------------------- snapshot wire

_TASK_FIELDS: Final = tuple(f.name for f in attrs.fields(Task))


def _task_to_wire(task: Task) -> list[object]:
    row: list[object] = []
    for name in _TASK_FIELDS:
        value = getattr(task, name)
        if name == "state":
            value = value.value
        elif name == "progress":
            value = [attrs.astuple(n) for n in value]
        row.append(value)
    return row


def _task_from_wire(row: Iterable[object]) -> Task:
    values = dict(zip(_TASK_FIELDS, row, strict=True))
    values["state"] = TaskState(values["state"])
    values["progress"] = tuple(ProgressNote(*n) for n in values["progress"])  # type: ignore[attr-defined]
    return Task(**values)  # type: ignore[arg-type]
