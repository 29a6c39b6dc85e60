"""Shared fixtures: run a scenario on each backend, on virtual time.

trio runs under ``MockClock(autojump_threshold=0)``: when every task is blocked, time
jumps to the next deadline, so timing is exact and costs nothing. asyncio gets the same
from a loop whose clock is virtual: when the loop has nothing ready to run and would
wait for its next timer, the clock jumps to that timer instead. Scenarios therefore
run deterministically on both backends, however loaded the machine is.
"""

from __future__ import annotations

import asyncio
import selectors
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

    with asyncio.Runner(loop_factory=_virtual_time_loop) as runner:
        return runner.run(main())


class _AutojumpSelector(selectors.DefaultSelector):  # type: ignore[misc,valid-type]
    """Polls instead of sleeping, and moves the loop's virtual clock forward instead."""

    loop: _VirtualTimeLoop

    def select(self, timeout: float | None = None) -> Any:
        if timeout is not None and timeout > 0:
            self.loop.virtual_now += timeout  # idle until the next timer: jump to it
            timeout = 0
        elif timeout is None:
            timeout = 5.0  # nothing scheduled: wait (really) for I/O from a thread
        return super().select(timeout)


class _VirtualTimeLoop(asyncio.SelectorEventLoop):
    def __init__(self) -> None:
        selector = _AutojumpSelector()
        self.virtual_now = 0.0
        super().__init__(selector)
        selector.loop = self

    def time(self) -> float:
        return self.virtual_now


def _virtual_time_loop() -> asyncio.AbstractEventLoop:
    return _VirtualTimeLoop()


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    """Each test that takes this fixture runs once per backend."""
    return str(request.param)


@pytest.fixture
def run(backend: str) -> Callable[[Callable[[], Awaitable[Any]]], Any]:
    """``run(scenario)`` executes an async scenario on the parametrized backend."""
    return lambda fn: run_on(backend, fn)
