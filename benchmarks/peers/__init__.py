"""Peers of the benchmark suites: what a user would pick instead of regency, and the limit.

Each module measures one family of peers for the messaging suite with the same jobs as
regency's side in :mod:`benchmarks.messaging`; a measurement function takes the number
of units of work ``n`` and returns the figure in the case's unit (msg/s, round trips/s,
calls/s, processes/s). Idle-memory figures are taken in a fresh interpreter by
:mod:`benchmarks.peers.idle_memory`, from ``hold_idle_*`` functions that keep ``n`` idle
processes alive around two probes.

Every job times the same span for every peer: from just before the first message (or
spawn) to the moment the last one has been handled by its receiver.
"""

from __future__ import annotations

from collections.abc import Callable

MAILBOX_BOUND = 65_536
"""Buffer of every bounded peer queue: the default bound of a regency mailbox."""

BUDGET = 256
"""Messages the limit peer handles between two yields to the scheduler."""

Probe = Callable[[], None]
"""Called by a ``hold_idle_*`` function before spawning and once all are idle."""


def rate(n: int, seconds: float) -> float:
    """Units per second; a span too short to time is reported as an error, not infinity."""
    if seconds <= 0:
        raise ValueError(f"{n} units in {seconds} s cannot be timed")
    return n / seconds
