"""Busy-waiting before the event loop sleeps, as BEAM's schedulers do (``+sbwt``).

Right after a node has sent or received over a connection, the next frame (the reply to
a call just made, the next request of a client) is often a few tens of microseconds
away. Blocking in the kernel's IO wait then costs the wake-up of a sleeping process,
which on a virtual machine (a halted vCPU woken through the hypervisor) can take longer
than the wait itself. So, for a short window after the last traffic of a connection
(heartbeats aside: an idle cluster does not spin), :class:`BusyWait` polls the loop's
own IO wait (trio's epoll or kqueue descriptor, readable as soon as any event the loop
waits for is ready: a socket, a worker thread's result, a signal) instead of letting
trio block at once. The poll ends at the first ready event, at the window's end, or at
the loop's own timeout (its next deadline), whichever comes first; then trio's wait
returns at once or sleeps as it would have. Between two polls it yields the CPU
(``sched_yield``), so a process or thread that is waiting for this CPU runs first.

It runs only when the loop has nothing else to do (trio calls ``before_io_wait`` with a
timeout above zero only when no task is runnable), so it takes no time from work, only
from idleness; and it leaves trio's hook table while no window is open, so that a node
without recent traffic does not pay for the hook at each pass of the loop. One instance
serves every distribution layer of a trio run. It is off where spinning would take the
CPU from the very process it waits for (a single CPU), on asyncio, which has no such
hook, and where trio does not expose its IO wait's descriptor. The cost is the CPU of
the window after each burst of traffic; ``Distribution(busy_wait=0)``, ``regency node
--busy-wait 0`` or the environment variable ``REGENCY_BUSY_WAIT=0`` turns it off.
"""

from __future__ import annotations

import math
import os
import select
import time
from typing import Any, Final, Protocol

import trio

__all__ = [
    "DEFAULT_BUSY_WAIT",
    "ENV_VAR",
    "BusyWait",
    "busy_wait_for_run",
    "default_busy_wait",
    "parse_window",
]

DEFAULT_BUSY_WAIT: Final = 0.0005
"""Seconds a node polls after its connections' last traffic before it sleeps."""

ENV_VAR: Final = "REGENCY_BUSY_WAIT"
"""The environment variable that, when set, replaces :data:`DEFAULT_BUSY_WAIT`."""


def default_busy_wait() -> float:
    """The busy-wait window of a distribution layer not given one: ``REGENCY_BUSY_WAIT``
    (seconds) if set, else :data:`DEFAULT_BUSY_WAIT`.

    Raises:
        ValueError: the variable is not a number of seconds, 0 or more.
    """
    text = os.environ.get(ENV_VAR)
    if text is None:
        return DEFAULT_BUSY_WAIT
    try:
        return parse_window(text)
    except ValueError:
        raise ValueError(f"{ENV_VAR} must be 0 or more seconds, not {text!r}") from None


def parse_window(text: str) -> float:
    """A busy-wait window from *text*: a number of seconds, 0 or more.

    Raises:
        ValueError: it is not.
    """
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not value >= 0:
        raise ValueError(f"expected 0 or more seconds, got {text!r}")
    return value


class Traffic(Protocol):
    """When a connection last sent or received anything but a heartbeat (the event
    loop's clock; an idle connection's heartbeats do not start a window), whether that
    traffic was sent, and when it last received anything (infinite while it handles
    what it received)."""

    active_at: float
    active_out: bool
    received_at: float


class BusyWait(trio.abc.Instrument):
    """Each time the trio loop is about to block in its IO wait, polls that wait's
    descriptor *loop_fd* for up to the window of the watched connection whose traffic is
    the most recent.

    It polls only where polling pays, learnt per way of that last traffic: after
    sending (a call made, a reply given) and after receiving. A poll that the window
    ends, with nothing ready, stops polling that way; the next time it would poll it
    sleeps instead, and if the traffic that wakes it came within the window (a poll
    would have caught it), polling that way resumes. So a client's node keeps polling
    for replies, and a server's node whose next request comes much later stops polling
    after each reply. Without this, a window wasted after every reply cost its CPU for
    nothing, and on this project's virtual machine made calls 2 ms apart slower, not
    faster (p50 566 us against 397 us without busy-waiting).
    """

    def __init__(self, loop_fd: int, hooks: dict[str, dict[Any, None]] | None = None) -> None:
        # trio's table of installed hooks (None: not known); see arm().
        self._hooks = hooks
        self.armed = True
        """Whether trio calls :meth:`before_io_wait`; :meth:`arm` after traffic."""
        self._poll = select.poll()
        self._poll.register(loop_fd, select.POLLIN)
        self._conns: dict[Traffic, float] = {}
        self._clock = trio.lowlevel.current_clock().current_time
        # Per way of the last traffic (True: sent): whether to poll after it.
        self._polls = {False: True, True: True}
        # A wait not polled: its way, its start and the end of the window it skipped.
        self._skipped: tuple[bool, float, float] | None = None
        self.spins = 0
        """IO waits preceded by polling."""
        self.answered = 0
        """Polls that ended because an event was ready."""
        self.skipped = 0
        """IO waits within a window that were not polled: that way's polls had failed."""

    def watch(self, conn: Traffic, window: float) -> None:
        """Poll for up to *window* seconds after *conn*'s last traffic."""
        self._conns[conn] = window
        if not self.armed:
            self.arm()

    def arm(self) -> None:
        """Have trio call :meth:`before_io_wait` before each IO wait again: call it after
        traffic when :attr:`armed` is False.

        trio calls an installed instrument's hook at every pass of its loop, which made
        a local call about 7% dearer in a node with a distribution layer, traffic or
        not (a bare checkpoint 13%). So the
        hook takes itself out of trio's table once no window is open, and traffic puts
        it back, in trio's table directly (``add_instrument`` inspects the whole
        instrument each time). Without the table the hook stays in.
        """
        hooks = self._hooks
        if hooks is None:
            return
        if self not in hooks.get("_all", ()):  # trio removed it: it raised
            self._hooks = None
            return
        hooks.setdefault("before_io_wait", {})[self] = None
        self.armed = True

    def _disarm(self) -> None:
        hooks = self._hooks
        if hooks is None:
            return
        waiting = hooks.get("before_io_wait")
        if waiting is not None:
            waiting.pop(self, None)
            if not waiting:
                del hooks["before_io_wait"]
        self.armed = False

    def unwatch(self, conn: Traffic) -> None:
        """Stop watching *conn*; nothing if it is not watched."""
        self._conns.pop(conn, None)

    def before_io_wait(self, timeout: float) -> None:
        if timeout <= 0:
            return
        now = self._clock()
        skipped = self._skipped
        if skipped is not None:
            self._skipped = None
            way, start, end = skipped
            for conn in self._conns:
                if start < conn.received_at < end:  # a poll would have caught it
                    self._polls[way] = True
                    break
        spin = 0.0
        latest: Traffic | None = None
        for conn, window in self._conns.items():
            left = conn.active_at + window - now
            if left > spin:
                spin = left
                latest = conn
        if latest is None:
            self._disarm()  # until the next traffic
            return
        out = latest.active_out
        if not self._polls[out]:
            self.skipped += 1
            self._skipped = (out, now, now + spin)
            return
        self.spins += 1
        clock = time.perf_counter
        end = clock() + min(spin, timeout)
        poll = self._poll.poll
        yield_cpu = _yield_cpu
        while not poll(0):
            if clock() >= end:
                if spin <= timeout:  # the window ended, not the loop's wait (a timer)
                    self._polls[out] = False
                return
            yield_cpu()
        self.answered += 1


_RUN: Final = trio.lowlevel.RunVar[BusyWait | None]("regency_busy_wait")


def busy_wait_for_run() -> BusyWait | None:
    """This trio run's :class:`BusyWait`, installed on first use; None where it cannot
    help: a single CPU, no ``select.poll``, or no descriptor for trio's IO wait."""
    try:
        return _RUN.get()
    except LookupError:
        pass
    instance: BusyWait | None = None
    fd = _loop_fd()
    if fd is not None and hasattr(select, "poll") and _cpus() > 1:
        instance = BusyWait(fd, _hook_table())
        trio.lowlevel.add_instrument(instance)
        instance._disarm()  # until a connection is watched
    _RUN.set(instance)
    return instance


def _runner() -> object:
    """This trio run's runner (private to trio), or None."""
    return getattr(getattr(trio._core._run, "GLOBAL_RUN_CONTEXT", None), "runner", None)


def _loop_fd() -> int | None:
    """The descriptor of this trio run's IO wait (epoll on Linux, kqueue on BSD and
    macOS), which is readable once an event it waits for is ready; None if it has none.

    trio does not publish it, so it is read from the run's IO manager, and a trio that
    keeps it elsewhere makes this None (busy-waiting off), never an error; the tests
    check that the trio in use exposes it.
    """
    manager = getattr(_runner(), "io_manager", None)
    for attr in ("_epoll", "_kqueue"):
        wait = getattr(manager, attr, None)
        fileno = getattr(wait, "fileno", None)
        if fileno is not None:
            fd = fileno()
            return fd if isinstance(fd, int) else None
    return None


def _no_yield() -> None:
    pass


# After each empty poll the CPU goes to any process or thread waiting for it: with more
# busy processes than CPUs (a Raft group and its client on two), polling without this
# took the CPU from the very processes whose answers it waited for.
_yield_cpu: Final = getattr(os, "sched_yield", _no_yield)


def _hook_table() -> dict[str, dict[Any, None]] | None:
    """trio's table of installed instruments by hook (private to trio; None when this
    trio keeps it otherwise: the hook then stays installed)."""
    table = getattr(getattr(_runner(), "instruments", None), "data", None)
    if isinstance(table, dict) and isinstance(table.get("_all"), dict):
        return table
    return None


def _cpus() -> int:
    """The CPUs this process may run on."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1
