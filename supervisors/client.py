"""The group client: submit tasks and await results from any node, across failovers.

Every member of an orchestrator group runs the *ledger service*, a GenServer registered
as :data:`LEDGER_SERVICE` (see :mod:`supervisors.failover`). A :class:`GroupClient` talks
only to ledger services, by name, so it runs on any node that can reach a member (a
member itself, a worker node, a node of its own), inside a process or from main code
inside ``async with Node()``.

The protocol (messages registered on the wire as ``regency.group.*``), each a call:

* :class:`LedgerAppend` ``(command, forwarded=False)`` -- append one ledger command. The
  service appends it when its node leads; otherwise it forwards it once to the leader it
  knows (``forwarded=True``), or answers :class:`Redirect` ``(leader)`` when it knows
  none or the request was already forwarded. Answers: :class:`Appended` ``(result)``
  with the ledger's ``Accepted``/``Duplicate``/``Refused``; ``Redirect``;
  :class:`Uncertain` ``(detail)`` when the outcome is unknown (leadership lost, timeout).
* :class:`GetTask` ``(task_id)`` -- a linearizable read of one task: :class:`TaskAnswer`
  ``(task)`` (``None``: never submitted), ``Redirect(None)`` during an election, or
  ``Uncertain``.
* :class:`GetStatus` ``()`` -- the member's own view, not linearizable:
  :class:`GroupStatus`.

Retries. :meth:`GroupClient.append` sends to the leader it last heard of (at first the
first member), follows ``Redirect`` hints, moves to the next member when one does not
answer (``ServerExited``, ``CallTimeout``, a full mailbox), and backs off (from
``backoff`` doubling up to ``max_backoff``, with jitter) after each failed round, until
``timeout``; then it raises :class:`GroupUnavailable`. It retries after ``Uncertain``
too, so it must only be given idempotent commands: ``Submit`` (the task id and the
idempotency key are kept across retries, so a retried submit returns the same task and
never creates a second), ``Complete`` (first wins), ``Account`` with a ``key``,
``Progress`` (a second one only extends the lease again) and ``Fail`` (a repeated one
is refused ``NotAssigned``).

Outcomes of :meth:`GroupClient.submit`: the task id (of the new task, or of the task the
key already names); :class:`SubmitRefused` if the ledger refused it (e.g. malformed
payload); :class:`GroupUnavailable`. :meth:`GroupClient.wait` returns the task once it is
final (completed, failed or cancelled); :meth:`GroupClient.wait_result` returns the
result of a completed task and raises :class:`TaskFailed` for a failed or cancelled one;
both raise ``TimeoutError`` after ``timeout`` and :class:`UnknownTaskId` for an id the
ledger never accepted.
"""

from __future__ import annotations

import random
import time
import uuid
from collections.abc import Callable, Sequence
from typing import Any, Final, final

import anyio
import attrs
import structlog

from runtime import wire
from runtime.errors import CallTimeout, MailboxFull, NoProcError, ServerExited
from runtime.node import Node
from runtime.pid import Name

from .ledger import (
    Accepted,
    Command,
    Duplicate,
    Refused,
    Result,
    Submit,
    Task,
    TaskCounts,
    TaskState,
)

__all__ = [
    "LEDGER_SERVICE",
    "Appended",
    "GetStatus",
    "GetTask",
    "GroupClient",
    "GroupStatus",
    "GroupUnavailable",
    "LedgerAppend",
    "Redirect",
    "SubmitRefused",
    "TaskAnswer",
    "TaskFailed",
    "Uncertain",
    "UnknownTaskId",
]

#: The registered name of the ledger service on every group member.
LEDGER_SERVICE: Final = "regency_ledger"


# --------------------------------------------------------------------------- protocol


@final
@attrs.frozen
class LedgerAppend:
    """Call: append ``command``; ``forwarded`` once a member passed it to the leader."""

    command: Command
    forwarded: bool = False


@final
@attrs.frozen
class GetTask:
    """Call: a linearizable read of the task ``task_id``."""

    task_id: str


@final
@attrs.frozen
class GetStatus:
    """Call: the member's view of the group (not linearizable)."""


@final
@attrs.frozen
class Appended:
    """Answer: the command was committed; ``result`` is the ledger's."""

    result: Result


@final
@attrs.frozen
class Redirect:
    """Answer: this member does not lead; ``leader`` is the one it knows, or None."""

    leader: str | None


@final
@attrs.frozen
class Uncertain:
    """Answer: the outcome is unknown (leadership lost, timeout); retry if idempotent."""

    detail: str


@final
@attrs.frozen
class TaskAnswer:
    """Answer to :class:`GetTask`: the task, or None if it was never submitted."""

    task: Task | None


@final
@attrs.frozen
class GroupStatus:
    """A member's view: who leads in which term, and the task counts of its ledger."""

    node: str
    leader: str | None
    term: int
    is_leader: bool
    counts: TaskCounts
    fencing_term: int
    orchestrator_leader: str | None  #: the leader named by the last NewTerm


for _cls in (
    LedgerAppend,
    GetTask,
    GetStatus,
    Appended,
    Redirect,
    Uncertain,
    TaskAnswer,
    GroupStatus,
):
    wire.DEFAULT_REGISTRY.register(_cls, f"regency.group.{_cls.__name__}")


# --------------------------------------------------------------------------- errors


class GroupUnavailable(TimeoutError):
    """No member answered the request within its timeout (no leader, all unreachable)."""


class SubmitRefused(ValueError):
    """The ledger refused the submission; ``result`` says why."""

    def __init__(self, result: Refused) -> None:
        super().__init__(f"submission refused: {result.reason!r}")
        self.result = result


class UnknownTaskId(LookupError):
    """The ledger never accepted a task with this id."""


class TaskFailed(Exception):
    """The task ended failed or cancelled; ``task`` is its final record."""

    def __init__(self, task: Task) -> None:
        super().__init__(f"task {task.task_id} {task.state.value}: {task.error}")
        self.task = task


_FINAL: Final = frozenset({TaskState.COMPLETED, TaskState.FAILED, TaskState.CANCELLED})


# --------------------------------------------------------------------------- the client


@final
class GroupClient:
    """Submit tasks and read results through any member; see the module docstring.

    Args:
        node: the local node (with distribution to the members, unless it is one).
        members: the group's member node names.
        timeout: default seconds a request may take, retries included.
        call_timeout: seconds one call to one member may take.
        backoff, max_backoff: the first and the largest pause between rounds.
        poll_interval: seconds between reads while waiting for a result.
        clock: the time stamped on submissions (the ledger's clock; default wall time).
        rng: jitter of the backoff.
    """

    def __init__(
        self,
        node: Node,
        members: Sequence[str],
        *,
        timeout: float = 30.0,
        call_timeout: float = 5.0,
        backoff: float = 0.05,
        max_backoff: float = 1.0,
        poll_interval: float = 0.1,
        clock: Callable[[], float] | None = None,
        rng: random.Random | None = None,
    ) -> None:
        if not members:
            raise ValueError("a group client needs at least one member")
        self.node = node
        self.members = tuple(members)
        self.timeout = timeout
        self.call_timeout = call_timeout
        self.backoff = backoff
        self.max_backoff = max_backoff
        self.poll_interval = poll_interval
        self.clock: Callable[[], float] = clock if clock is not None else time.time
        self._rng = rng if rng is not None else random.Random()
        self._leader: str | None = None
        self._next = 0
        self._log = structlog.get_logger("regency", node=node.name)

    @property
    def leader_hint(self) -> str | None:
        """The member this client believes leads (None until it heard of one)."""
        return self._leader

    def _target(self) -> str:
        if self._leader is not None:
            return self._leader
        target = self.members[self._next % len(self.members)]
        self._next += 1
        return target

    async def _ask(self, request: object, timeout: float | None) -> object:
        """Send ``request`` until a member gives a final answer; see the module doc."""
        limit = self.timeout if timeout is None else timeout
        pause = self.backoff
        with anyio.move_on_after(limit):
            while True:
                target = self._target()
                try:
                    answer = await self.node.call(
                        Name(LEDGER_SERVICE, target), request, timeout=self.call_timeout
                    )
                except (ServerExited, CallTimeout, MailboxFull, NoProcError):
                    answer = Redirect(None)
                    self._leader = None
                if isinstance(answer, Redirect):
                    if answer.leader is not None and answer.leader != target:
                        self._leader = answer.leader
                        continue  # follow the hint at once
                    self._leader = None
                elif isinstance(answer, Uncertain):
                    self._leader = None
                else:
                    if isinstance(request, LedgerAppend):
                        self._leader = target
                    return answer
                await anyio.sleep(pause * (0.5 + self._rng.random()))
                pause = min(pause * 2, self.max_backoff)
        raise GroupUnavailable(f"no answer from the group {list(self.members)} within {limit} s")

    async def append(self, command: Command, timeout: float | None = None) -> Result:
        """Append an idempotent ``command`` through the leader; the ledger's result.

        Raises:
            GroupUnavailable: no committed answer within ``timeout`` (default the client's).
        """
        answer = await self._ask(LedgerAppend(command), timeout)
        assert isinstance(answer, Appended)
        return answer.result

    async def submit(
        self,
        payload: Any,
        *,
        key: str | None = None,
        task_id: str | None = None,
        max_attempts: int | None = None,
        timeout: float | None = None,
    ) -> str:
        """Submit a task; return its id. Never creates a duplicate.

        Args:
            payload: plain msgpack data for the worker.
            key: idempotency key: a second submit with the same key (from any client,
                before or after a failover) returns the first task's id.
            task_id: the id to give the task (default a new UUID). Kept across retries.
            max_attempts: attempts before the task fails (default: the ledger's).

        Raises:
            SubmitRefused: the ledger refused it (``.result``).
            GroupUnavailable: no answer in time; the task may or may not exist (submit
                again with the same ``key`` to find out without creating another).
        """
        tid = task_id if task_id is not None else uuid.uuid4().hex
        command = Submit(
            task_id=tid,
            payload=payload,
            submitted_at=float(self.clock()),
            idempotency_key=key,
            max_attempts=max_attempts,
        )
        result = await self.append(command, timeout)
        if isinstance(result, Accepted | Duplicate) and result.task is not None:
            return result.task.task_id
        assert isinstance(result, Refused)
        raise SubmitRefused(result)

    async def task(self, task_id: str, timeout: float | None = None) -> Task | None:
        """The task as the ledger records it now (linearizable), or None if unknown.

        Raises:
            GroupUnavailable: no answer in time.
        """
        answer = await self._ask(GetTask(task_id), timeout)
        assert isinstance(answer, TaskAnswer)
        return answer.task

    async def wait(self, task_id: str, timeout: float | None = None) -> Task:
        """Wait until the task is completed, failed or cancelled; return it.

        Raises:
            UnknownTaskId: the ledger never accepted this id.
            TimeoutError: not final within ``timeout`` (default the client's).
            GroupUnavailable: the group did not answer in time.
        """
        limit = self.timeout if timeout is None else timeout
        with anyio.fail_after(limit):
            while True:
                task = await self.task(task_id, timeout=limit)
                if task is None:
                    raise UnknownTaskId(task_id)
                if task.state in _FINAL:
                    return task
                await anyio.sleep(self.poll_interval)

    async def wait_result(self, task_id: str, timeout: float | None = None) -> Any:
        """The result of the task once completed.

        Raises:
            TaskFailed: it ended failed or cancelled (``.task``).
            UnknownTaskId, TimeoutError, GroupUnavailable: as :meth:`wait`.
        """
        task = await self.wait(task_id, timeout)
        if task.state is not TaskState.COMPLETED:
            raise TaskFailed(task)
        return task.result

    async def status(self, member: str | None = None, timeout: float | None = None) -> GroupStatus:
        """The view of ``member`` (default: whichever answers first, leader preferred).

        Raises:
            GroupUnavailable: no answer in time.
        """
        if member is None:
            answer = await self._ask(GetStatus(), timeout)
        else:
            answer = await self.node.call(
                Name(LEDGER_SERVICE, member),
                GetStatus(),
                timeout=self.call_timeout if timeout is None else timeout,
            )
        assert isinstance(answer, GroupStatus)
        return answer
