"""The small shim between the runtime and its event loop.

The runtime is written against anyio and runs on trio or asyncio. anyio has no
primitive to park one task and wake it from another without allocating an event per
wait, and that wait is the whole cost of a mailbox; so this module offers the one
operation the mailbox needs, ``park``/``unpark``, done natively per backend:
``trio.lowlevel.wait_task_rescheduled`` on trio, a bare future on asyncio.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from contextlib import AbstractContextManager
from typing import Any, Protocol, final

import anyio
import sniffio
import trio


class Waitable(Protocol):
    """An object with one parking slot, ``_waiter``, holding the parked task's token."""

    _waiter: Any


@final
class Backend:
    """Park/unpark and checkpoint for the running event loop. One instance per node."""

    __slots__ = ("checkpoint", "move_on_after", "name", "park", "unpark")

    def __init__(self, name: str) -> None:
        self.name = name
        self.park: Callable[[Waitable], Awaitable[None]]
        self.unpark: Callable[[Any], None]
        self.checkpoint: Callable[[], Awaitable[None]]
        # A cancel scope with a timeout: trio's own is about twice as cheap as anyio's
        # wrapper around it, and a call with a timeout enters one per call.
        self.move_on_after: Callable[[float], AbstractContextManager[Any]]
        if name == "trio":
            self.park = _trio_park
            self.unpark = trio.lowlevel.reschedule
            self.checkpoint = trio.lowlevel.checkpoint
            self.move_on_after = trio.move_on_after
        elif name == "asyncio":
            self.park = _asyncio_park
            self.unpark = _asyncio_unpark
            self.checkpoint = _asyncio_checkpoint
            self.move_on_after = anyio.move_on_after
        else:  # pragma: no cover - sniffio only reports the two
            raise RuntimeError(f"unsupported async library {name!r}")

    @classmethod
    def current(cls) -> Backend:
        """The backend of the event loop this is called from."""
        name = sniffio.current_async_library()
        cached = _BACKENDS.get(name)
        if cached is None:
            cached = _BACKENDS[name] = cls(name)
        return cached


_BACKENDS: dict[str, Backend] = {}


async def _trio_park(holder: Waitable) -> None:
    """Park the current trio task in ``holder._waiter`` until unparked or cancelled."""
    holder._waiter = trio.lowlevel.current_task()

    def abort(_: Any) -> trio.lowlevel.Abort:
        holder._waiter = None
        return trio.lowlevel.Abort.SUCCEEDED

    await trio.lowlevel.wait_task_rescheduled(abort)


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


async def _asyncio_checkpoint() -> None:
    await asyncio.sleep(0)
