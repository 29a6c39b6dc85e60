"""Shared fixtures: run a scenario on each backend; trio runs under MockClock(autojump)."""

from __future__ import annotations

import asyncio
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

    return asyncio.run(main())


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    """Each test that takes this fixture runs once per backend."""
    return str(request.param)


@pytest.fixture
def run(backend: str) -> Callable[[Callable[[], Awaitable[Any]]], Any]:
    """``run(scenario)`` executes an async scenario on the parametrized backend."""
    return lambda fn: run_on(backend, fn)
