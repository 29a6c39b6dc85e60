"""Busy-waiting before the event loop sleeps, as BEAM's schedulers do (``+sbwt``).

Right after a node has sent or received over a connection, the next frame (the reply
to a call just made, the next request of a client) is often a few tens of
microseconds away. Blocking in the kernel's IO wait then costs the wake-up of a
sleeping process, which on a virtual machine (a halted vCPU woken through the
hypervisor) can take longer than the wait itself. So, for a short window after the
last traffic of a connection, :class:`BusyWait` polls the connections' sockets instead
of letting trio's loop block at once; it stops at the first readable socket, at the
window's end, or when the loop's own timeout (its next deadline) comes first.

It runs only when the loop has nothing else to do (trio calls ``before_io_wait`` with a
timeout above zero only when no task is runnable), so it takes no time from work, only
from idleness. One instance serves every distribution layer of a trio run. It is off
where spinning would take the CPU from the very process it waits for (a single CPU),
and on asyncio, which has no such hook. The cost is the CPU of the window after each
burst of traffic; ``Distribution(busy_wait=0)`` turns it off.
"""

from __future__ import annotations

import os
import select
import time
from typing import Final, Protocol

import trio

__all__ = ["DEFAULT_BUSY_WAIT", "BusyWait", "busy_wait_for_run"]

DEFAULT_BUSY_WAIT: Final = 0.0005
"""Seconds a node polls its connections after their last traffic before it sleeps."""


class Traffic(Protocol):
    """When a connection last sent and received (the event loop's clock)."""

    sent_at: float
    received_at: float


class BusyWait(trio.abc.Instrument):
    """Polls registered sockets for up to their window after their last traffic, each
    time the trio loop is about to block in its IO wait."""

    def __init__(self) -> None:
        self._poll = select.poll()
        self._conns: dict[int, tuple[Traffic, float]] = {}
        self._clock = trio.lowlevel.current_clock().current_time
        self.spins = 0
        """IO waits preceded by polling."""
        self.answered = 0
        """Polls that ended because a socket became readable."""

    def add(self, fd: int, conn: Traffic, window: float) -> None:
        """Poll socket *fd* for up to *window* seconds after *conn*'s last traffic."""
        if fd not in self._conns:
            self._poll.register(fd, select.POLLIN)
        self._conns[fd] = (conn, window)

    def discard(self, fd: int) -> None:
        """Stop polling *fd* (before it is closed); nothing if it is not polled."""
        if self._conns.pop(fd, None) is not None:
            self._poll.unregister(fd)

    def before_io_wait(self, timeout: float) -> None:
        if timeout <= 0 or not self._conns:
            return
        now = self._clock()
        spin = 0.0
        for conn, window in self._conns.values():
            last = conn.sent_at
            received = conn.received_at
            if last < received <= now:  # received_at is infinite while a chunk is handled
                last = received
            left = last + window - now
            if left > spin:
                spin = left
        if spin <= 0:
            return
        self.spins += 1
        clock = time.perf_counter
        end = clock() + min(spin, timeout)
        poll = self._poll.poll
        while not poll(0):
            if clock() >= end:
                return
        self.answered += 1


_RUN: Final = trio.lowlevel.RunVar[BusyWait | None]("regency_busy_wait")


def busy_wait_for_run() -> BusyWait | None:
    """This trio run's :class:`BusyWait`, installed on first use; None where it would not
    help: a single CPU, or no ``select.poll``."""
    try:
        return _RUN.get()
    except LookupError:
        pass
    instance: BusyWait | None = None
    if hasattr(select, "poll") and _cpus() > 1:
        instance = BusyWait()
        trio.lowlevel.add_instrument(instance)
    _RUN.set(instance)
    return instance


def _cpus() -> int:
    """The CPUs this process may run on."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1
