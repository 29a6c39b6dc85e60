"""The small shim between the runtime and its event loop.

The runtime is written against anyio and runs on trio or asyncio. anyio has no
primitive to park one task and wake it from another without allocating an event per
wait, and that wait is the whole cost of a mailbox; so this module offers the one
operation the mailbox needs, ``park``/``unpark``, done natively per backend:
``trio.lowlevel.wait_task_rescheduled`` on trio, a bare future on asyncio.
"""

from __future__ import annotations

import asyncio
import types
from collections.abc import Awaitable, Callable, Generator
from contextlib import AbstractAsyncContextManager, AbstractContextManager
from typing import Any, Final, Protocol, final

import anyio
import outcome
import sniffio
import trio


class CancelScope(Protocol):
    """What the runtime uses of a cancel scope (trio's or anyio's)."""

    def cancel(self) -> None:
        """Cancel everything inside the scope."""

    def __enter__(self) -> Any: ...
    def __exit__(self, *exc: object) -> bool | None: ...


class TaskGroup(Protocol):
    """What the runtime uses of a task group (a trio nursery or an anyio task group)."""

    def start_soon(self, fn: Callable[..., Awaitable[Any]], *args: Any, name: Any = None) -> None:
        """Start ``fn(*args)`` as a new task."""

    @property
    def cancel_scope(self) -> Any:
        """The group's cancel scope."""


class Waitable(Protocol):
    """An object with one parking slot, ``_waiter``, holding the parked task's token."""

    _waiter: Any

    def _abort(self, raise_cancel: Any) -> Any:
        """Called by trio when the parked task is cancelled: clear ``_waiter``."""


class Parkable:
    """Mixin giving a class the ``_abort`` that trio calls when a parked task is cancelled.

    One bound method instead of a closure per wait keeps a parked process small.
    """

    __slots__ = ()
    _waiter: Any

    def _abort(self, raise_cancel: Any) -> trio.lowlevel.Abort:
        self._waiter = None
        return trio.lowlevel.Abort.SUCCEEDED


@final
class Backend:
    """Park/unpark and checkpoint for the running event loop. One instance per node."""

    __slots__ = (
        "cancel_scope",
        "checkpoint",
        "current_time",
        "interrupt",
        "move_on_after",
        "move_on_at",
        "name",
        "open_task_group",
        "park",
        "unpark",
    )

    def __init__(self, name: str) -> None:
        self.name = name
        self.park: Callable[[Waitable], Awaitable[Any]]
        self.unpark: Callable[[Any], None]
        self.checkpoint: Callable[[], Awaitable[None]]
        # A cancel scope with a timeout: trio's own is about twice as cheap as anyio's
        # wrapper around it, and a call with a timeout enters one per call.
        self.move_on_after: Callable[[float], AbstractContextManager[Any]]
        self.move_on_at: Callable[[float], AbstractContextManager[Any]]
        self.current_time: Callable[[], float]
        # Spawning a process enters a cancel scope and starts a task: on trio, anyio's
        # wrappers cost four times trio's own calls, so trio is used directly.
        self.cancel_scope: Callable[[], CancelScope]
        self.open_task_group: Callable[[], AbstractAsyncContextManager[TaskGroup]]
        # Ends a process: cancels its scope, waking it first when it is parked straight
        # in its mailbox (see _trio_interrupt).
        self.interrupt: Callable[[Waitable, Any, BaseException], None]
        if name == "trio":
            self.interrupt = _trio_interrupt
            self.cancel_scope = trio.CancelScope  # type: ignore[assignment]
            self.open_task_group = trio.open_nursery
            self.park = _trio_park
            self.unpark = trio.lowlevel.reschedule
            self.checkpoint = trio.lowlevel.checkpoint
            self.move_on_after = trio.move_on_after
            self.move_on_at = trio.move_on_at
            self.current_time = trio.current_time
        elif name == "asyncio":
            self.park = _asyncio_park
            self.unpark = _asyncio_unpark
            self.checkpoint = _asyncio_checkpoint
            self.move_on_after = anyio.move_on_after
            self.move_on_at = _anyio_move_on_at
            self.current_time = anyio.current_time
            self.interrupt = _cancel_only
            self.cancel_scope = anyio.CancelScope  # type: ignore[assignment]
            self.open_task_group = anyio.create_task_group  # type: ignore[assignment]
        else:  # pragma: no cover - sniffio only reports the two
            raise RuntimeError(f"unsupported async library {name!r}")

    def clock(self) -> Callable[[], float]:
        """The running loop's clock (``current_time``), bound once: cheaper per reading.

        Call from inside the loop; the result is valid for that loop's life only.
        """
        if self.name == "trio":
            return trio.lowlevel.current_clock().current_time
        return asyncio.get_running_loop().time

    @classmethod
    def current(cls) -> Backend:
        """The backend of the event loop this is called from."""
        name = sniffio.current_async_library()
        cached = _BACKENDS.get(name)
        if cached is None:
            cached = _BACKENDS[name] = cls(name)
        return cached


@types.coroutine
def _finished() -> Generator[Any, None, None]:
    return
    yield  # a generator-based coroutine that has finished


DONE: Final = _finished()
"""An awaitable that is already done: awaiting it returns None at once, in C. What a
send returns on its fast path, when it enqueued at once and need not yield."""
DONE.close()


_BACKENDS: dict[str, Backend] = {}
_current_task = trio.lowlevel.current_task
_wait_task_rescheduled = trio.lowlevel.wait_task_rescheduled


def _trio_park(holder: Waitable) -> Awaitable[Any]:
    """Park the current trio task in ``holder._waiter`` until unparked or cancelled; await it.

    A plain function returning trio's own awaitable: one coroutine frame less per wait.
    """
    holder._waiter = _current_task()
    return _wait_task_rescheduled(holder._abort)


def _trio_interrupt(holder: Waitable, scope: Any, exc: BaseException) -> None:
    """Cancel *scope*, a process's own; if its task is parked in *holder* with no scope
    of its own in between, first wake it with *exc* raised at the park.

    Delivering ``Cancelled`` to a parked task costs trio an abort call plus raising and
    capturing the exception with its traceback: half the cost of stopping a process. A
    task parked directly under the process's scope has no inner scope that could
    shield it or catch ``Cancelled`` for its own deadline, so raising *exc* there ends
    it the same way; the scope is still cancelled, so any later wait in its cleanup
    fails as before. trio's ``_cancel_status`` is private: if it ever goes, the check
    fails and every stop takes the plain cancel.
    """
    task = holder._waiter
    if task is not None and getattr(task, "_cancel_status", None) is getattr(
        scope, "_cancel_status", False
    ):
        holder._waiter = None
        trio.lowlevel.reschedule(task, outcome.Error(exc))
    scope.cancel()


def _cancel_only(holder: Waitable, scope: Any, exc: BaseException) -> None:
    scope.cancel()


async def _asyncio_park(holder: Waitable) -> None:
    """Park the current asyncio task in ``holder._waiter`` until unparked or cancelled."""
    fut = asyncio.get_running_loop().create_future()
    holder._waiter = fut
    try:
        await fut
    finally:
        if holder._waiter is fut:
            holder._waiter = None


def _asyncio_unpark(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


def _anyio_move_on_at(deadline: float) -> AbstractContextManager[Any]:
    return anyio.CancelScope(deadline=deadline)


async def _asyncio_checkpoint() -> None:
    await asyncio.sleep(0)
