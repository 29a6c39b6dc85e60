"""Running a benchmark's driver as a regency process (shared by the suites)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import trio

import runtime

__all__ = ["run_driver"]


async def run_driver(node: runtime.Node, driver: Callable[[], Awaitable[Any]]) -> None:
    """Run ``driver`` as a process on ``node`` and wait for it; raise unless it ends Normal."""
    finished = trio.Event()
    outcome: list[runtime.ExitReason] = []

    def done(reason: runtime.ExitReason) -> None:
        outcome.append(reason)
        finished.set()

    node.monitor(None, node.spawn(driver), callback=done)
    await finished.wait()
    if not isinstance(outcome[0], runtime.Normal):
        raise RuntimeError(f"the driver ended {outcome[0]}")  # noqa: TRY004
