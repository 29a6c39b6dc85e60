"""Leadership and the task ledger behind one small interface, in the failover code's terms.

An orchestrator group needs five things from its consensus engine, and nothing more:
who leads and under which *term*, a way to wait until this node leads, a way to step
aside, a fenced append to the task ledger, a linearizable read of it, and the stream of
committed changes. :class:`Coordinator` is that interface. :mod:`supervisors.failover`
(the singleton manager, the ledger service, the watchdog), :mod:`supervisors.workers`
and :mod:`supervisors.client` use nothing else, so an engine can be replaced without
touching them. Implementations:

* :class:`~supervisors.raft_coordinator.RaftCoordinator` -- the built-in Raft (the
  embedded default): the term is the Raft term;
* :class:`LocalCoordinator` (here) -- one node, always leading, no replication: unit
  tests and single-node use;
* an etcd implementation (separate): the term is the election's revision, fencing a
  transaction on it.

Terms. A *term* is the fencing token of one leadership: an int that grows with every
new leadership and is never reused. Orchestrator commands carry it (the ``term`` field of
the fenced ledger commands); the ledger refuses a command whose term is older than the
highest it accepted (``Refused(StaleTerm)``), and workers refuse assignments of an older
term than they have seen. A node leads *ready* once it has applied every entry committed
before its term: only then may it run the orchestrator.

Contract of every implementation (``c`` a coordinator):

* ``c.node`` -- this member's name.
* ``c.view()`` -- a :class:`LeaderView` now: ``leader`` (None when unknown, e.g. during an
  election), ``term``, ``is_leader``, ``ready``. Never blocks.
* ``await c.wait_view(predicate, timeout=None)`` -- the first view (now or after a change)
  for which ``predicate`` holds. Raises ``TimeoutError``; ``CoordinatorStopped`` once the
  coordinator stopped and the predicate still fails.
* ``await c.campaign(timeout=None)`` -- wait until this node leads and is ready; return
  the term. An engine that elects on its own (Raft) just waits; one that needs a request
  (etcd) makes it. Raises ``TimeoutError``, ``CoordinatorStopped``.
* ``await c.resign(to=None)`` -- hand leadership to another member (``to``, or the
  engine's choice) and return once this node no longer leads. Raises :class:`NotLeader`
  when it does not lead, ``TimeoutError`` when leadership did not move in time.
* ``await c.append(command, timeout=None)`` -- replicate one ledger command and return
  the ledger's result (``Accepted``, ``Duplicate`` or ``Refused``) once it is committed
  and applied here. Only the leader appends: elsewhere it raises :class:`NotLeader`
  (``hint``: the leader known, or None) at once, and nothing was appended, so retrying
  is safe. :class:`OutcomeUnknown` (leadership lost, timeout) means the command may still
  take effect: retry only idempotent commands (``Submit`` with its id/key, ``Complete``),
  or re-read. ``CoordinatorStopped`` when the coordinator is not running.
* ``await c.read(fn, timeout=None)`` -- run ``fn(ledger)`` on a state that reflects every
  append acknowledged before the call (linearizable; read index or lease) and return its
  result. Works on any member while a leader is known. Raises :class:`NotLeader` (no
  leader known: retry later), :class:`Unavailable` (not confirmed in time),
  ``CoordinatorStopped``. ``fn`` must not keep or change the ledger.
* ``c.peek(fn)`` -- ``fn(ledger)`` on the local state now: no round trip, possibly stale
  on a follower (status displays, the watchdog on the leader).
* ``c.watch()`` -- an async iterator of :class:`Applied` records, one per committed
  command applied on this node, in log order, starting with those applied after the
  call. A snapshot that replaces the state arrives as ``Applied(index, None, None)``.

Log events (logger ``"regency"``, ``node`` bound): ``ledger_committed`` (``term``,
``index``, ``result``: :func:`~supervisors.ledger.describe`) for every applied command.
"""

from __future__ import annotations

from collections import deque
from collections.abc import AsyncIterator, Callable
from typing import Protocol, TypeVar, final

import anyio
import anyio.lowlevel
import attrs
import structlog

from runtime import wire

from .ledger import (
    Accepted,
    Account,
    Assign,
    AttemptsExhausted,
    BadLease,
    Cancel,
    Command,
    Complete,
    Duplicate,
    Expire,
    Fail,
    LeaseHeld,
    LedgerConfig,
    Malformed,
    NewTerm,
    NotAssigned,
    Progress,
    ProgressNote,
    Refused,
    Result,
    SetFacts,
    SetPlan,
    StaleTerm,
    Submit,
    Task,
    TaskCounts,
    TaskFinished,
    TaskLedger,
    TaskState,
    UnknownTask,
    WorkerDown,
    describe,
)

__all__ = [
    "Applied",
    "AppliedFeed",
    "CoordinationError",
    "Coordinator",
    "CoordinatorStopped",
    "LeaderView",
    "LocalCoordinator",
    "NotLeader",
    "OutcomeUnknown",
    "Unavailable",
    "fenced_term",
]

T = TypeVar("T")

# The ledger's values travel between nodes (client requests, results, task queries).
for _cls in (
    Submit,
    Assign,
    Progress,
    Complete,
    Fail,
    Cancel,
    Expire,
    WorkerDown,
    SetFacts,
    SetPlan,
    Account,
    NewTerm,
    Accepted,
    Duplicate,
    Refused,
    Task,
    TaskState,
    TaskCounts,
    ProgressNote,
    StaleTerm,
    Malformed,
    UnknownTask,
    TaskFinished,
    LeaseHeld,
    NotAssigned,
    BadLease,
    AttemptsExhausted,
):
    wire.DEFAULT_REGISTRY.register(_cls, f"regency.ledger.{_cls.__name__}")


class CoordinationError(Exception):
    """Base of the coordinator's errors."""


class NotLeader(CoordinationError):
    """This node does not lead; nothing was done. ``hint``: the leader known, or None."""

    def __init__(self, hint: str | None) -> None:
        super().__init__(f"not the leader (leader hint: {hint})")
        self.hint = hint


class OutcomeUnknown(CoordinationError):
    """The append may or may not take effect (leadership lost, or no answer in time).

    Retry idempotent commands (the ledger deduplicates them) or re-read the ledger.
    """


class Unavailable(CoordinationError, TimeoutError):
    """A read could not be confirmed in time (no quorum reachable?). Retry later."""


class CoordinatorStopped(CoordinationError):
    """The coordinator is not running (stopped, crashed, or not started yet)."""


@final
@attrs.frozen
class LeaderView:
    """Who leads, as this node sees it now.

    ``leader`` is None while no leader is known; ``term`` is the newest term this node
    knows; ``ready`` is True only on the leader once it applied everything committed
    before its term (then it may run the orchestrator).
    """

    leader: str | None
    term: int
    is_leader: bool
    ready: bool


@final
@attrs.frozen
class Applied:
    """One committed command applied on this node, or a snapshot (``command`` None)."""

    index: int
    command: Command | None
    result: Result | None


def fenced_term(command: Command) -> int | None:
    """The fencing term a command carries (None for Submit, Complete and Account)."""
    if isinstance(command, Submit | Complete | Account):
        return None
    return command.term


class Coordinator(Protocol):
    """Leadership and the ledger of one group member; see the module docstring."""

    @property
    def node(self) -> str:
        """This member's name."""
        ...

    def view(self) -> LeaderView:
        """Who leads now, as this node sees it."""
        ...

    async def wait_view(
        self, predicate: Callable[[LeaderView], bool], timeout: float | None = None
    ) -> LeaderView:
        """Wait for a view that satisfies ``predicate``."""
        ...

    async def campaign(self, timeout: float | None = None) -> int:
        """Wait until this node leads and is ready; return the term."""
        ...

    async def resign(self, to: str | None = None, timeout: float | None = None) -> None:
        """Hand leadership to another member."""
        ...

    async def append(self, command: Command, timeout: float | None = None) -> Result:
        """Replicate a ledger command (leader only); return the ledger's result."""
        ...

    async def read(self, fn: Callable[[TaskLedger], T], timeout: float | None = None) -> T:
        """Run ``fn`` on a linearizable state of the ledger."""
        ...

    def peek(self, fn: Callable[[TaskLedger], T]) -> T:
        """Run ``fn`` on the local state now (possibly stale on a follower)."""
        ...

    def watch(self) -> AsyncIterator[Applied]:
        """Committed changes applied here, in log order, from now on."""
        ...


@final
class AppliedFeed:
    """Fan-out of :class:`Applied` records to any number of ``watch`` iterators.

    Publishing never blocks; each subscriber has its own unbounded queue and sees every
    record published after :meth:`subscribe` returned (``aclose`` it when done).
    """

    def __init__(self) -> None:
        self._subs: list[_Subscription] = []

    def publish(self, record: Applied) -> None:
        """Queue ``record`` for every current subscriber."""
        for sub in self._subs:
            sub.queue.append(record)
            sub.wake.set()

    def subscribe(self) -> AsyncIterator[Applied]:
        """Return an iterator over the records published from now on, in order."""
        sub = _Subscription(self)
        self._subs.append(sub)
        return sub


@final
class _Subscription:
    def __init__(self, feed: AppliedFeed) -> None:
        self.feed = feed
        self.queue: deque[Applied] = deque()
        self.wake = anyio.Event()

    def __aiter__(self) -> _Subscription:
        return self

    async def __anext__(self) -> Applied:
        while not self.queue:
            if self.wake.is_set():
                self.wake = anyio.Event()
            await self.wake.wait()
        return self.queue.popleft()

    async def aclose(self) -> None:
        """Stop receiving records."""
        if self in self.feed._subs:
            self.feed._subs.remove(self)


@final
class LocalCoordinator:
    """A one-node coordinator: always the ready leader of ``term``; no replication.

    Appends apply at once to an in-memory :class:`TaskLedger`. :meth:`depose` and
    :meth:`elect` change the view (tests of the manager); while deposed, ``append``
    raises :class:`NotLeader` and ``campaign`` waits.
    """

    def __init__(
        self, node: str, *, term: int = 1, ledger_config: LedgerConfig | None = None
    ) -> None:
        self._node = node
        self.ledger = TaskLedger(ledger_config or LedgerConfig())
        self._view = LeaderView(node, term, True, True)
        self._changed = anyio.Event()
        self._feed = AppliedFeed()
        self._index = 0
        self.history: list[tuple[Command, Result]] = []
        """Every command appended, with its result, in order."""
        self._log = structlog.get_logger("regency", node=node)

    @property
    def node(self) -> str:
        """This member's name."""
        return self._node

    def _set(self, view: LeaderView) -> None:
        self._view = view
        changed, self._changed = self._changed, anyio.Event()
        changed.set()

    def depose(self, leader: str | None = None) -> None:
        """Stop leading (another node, ``leader``, leads in the next term)."""
        self._set(LeaderView(leader, self._view.term + 1, False, False))

    def elect(self) -> int:
        """Lead again, in a new term; returns it."""
        term = self._view.term + 1
        self._set(LeaderView(self._node, term, True, True))
        return term

    def view(self) -> LeaderView:
        """The current view."""
        return self._view

    async def wait_view(
        self, predicate: Callable[[LeaderView], bool], timeout: float | None = None
    ) -> LeaderView:
        """Wait for a view satisfying ``predicate``; raises ``TimeoutError``."""
        with anyio.fail_after(timeout):
            while not predicate(self._view):
                await self._changed.wait()
        return self._view

    async def campaign(self, timeout: float | None = None) -> int:
        """Wait until leading; return the term."""
        view = await self.wait_view(lambda v: v.is_leader and v.ready, timeout)
        return view.term

    async def resign(self, to: str | None = None, timeout: float | None = None) -> None:
        """Stop leading (``to`` leads next). Raises NotLeader when not leading."""
        if not self._view.is_leader:
            raise NotLeader(self._view.leader)
        self.depose(to)

    async def append(self, command: Command, timeout: float | None = None) -> Result:
        """Apply ``command`` now; raises NotLeader when deposed."""
        if not self._view.is_leader:
            raise NotLeader(self._view.leader)
        result = self.ledger.execute(command)
        self._index += 1
        self.history.append((command, result))
        self._log.info(
            "ledger_committed", term=self._view.term, index=self._index, result=describe(result)
        )
        self._feed.publish(Applied(self._index, command, result))
        await anyio.lowlevel.checkpoint()
        return result

    async def read(self, fn: Callable[[TaskLedger], T], timeout: float | None = None) -> T:
        """``fn(ledger)``: always current on one node."""
        await anyio.lowlevel.checkpoint()
        return fn(self.ledger)

    def peek(self, fn: Callable[[TaskLedger], T]) -> T:
        """``fn(ledger)`` now."""
        return fn(self.ledger)

    def watch(self) -> AsyncIterator[Applied]:
        """Commands applied from now on."""
        return self._feed.subscribe()
