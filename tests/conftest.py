"""Shared fixtures: run a scenario on each backend.

trio runs under ``MockClock(autojump_threshold=0)``: time jumps to the next deadline
whenever every task is blocked, so timing is exact and costs nothing. asyncio has no
mock clock, so its loop here runs on a clock 50 times faster than real time: a
scenario that waits "2 seconds" takes 40 ms. No assertion depends on real time.
"""

from __future__ import annotations

import asyncio
import selectors
import time
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
import trio
import trio.testing

BACKENDS = ["trio", "asyncio"]


def run_on(backend: str, fn: Callable[[], Awaitable[Any]]) -> Any:
    """Run *fn* to completion on *backend*; trio gets an autojumping MockClock."""
    if backend == "trio":
        return trio.run(fn, clock=trio.testing.MockClock(autojump_threshold=0))

    async def main() -> Any:
        return await fn()

    with asyncio.Runner(loop_factory=_fast_loop) as runner:
        return runner.run(main())


TIME_SCALE = 50.0


class _FastSelector(selectors.DefaultSelector):  # type: ignore[misc,valid-type]
    def select(self, timeout: float | None = None) -> Any:
        return super().select(None if timeout is None else timeout / TIME_SCALE)


class _FastLoop(asyncio.SelectorEventLoop):
    def time(self) -> float:
        return time.monotonic() * TIME_SCALE


def _fast_loop() -> asyncio.AbstractEventLoop:
    return _FastLoop(_FastSelector())


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    """Each test that takes this fixture runs once per backend."""
    return str(request.param)


@pytest.fixture
def run(backend: str) -> Callable[[Callable[[], Awaitable[Any]]], Any]:
    """``run(scenario)`` executes an async scenario on the parametrized backend."""
    return lambda fn: run_on(backend, fn)
