"""Fixtures for the simulator tests: ``--sim-seed`` and quiet logging.

``pytest tests/runtime/sim -k NAME --sim-seed=1234`` reruns exactly the seed a failure
named (a test that sweeps many seeds then runs only that one). ``REGENCY_SIM_SEED=1234``
does the same where the option cannot be registered (pytest run from another directory).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator

import pytest
import structlog


def pytest_addoption(parser: pytest.Parser) -> None:
    """Add ``--sim-seed``: run only this seed in the simulator's seed sweeps."""
    parser.addoption(
        "--sim-seed",
        type=int,
        default=None,
        help="run only this seed in tests/runtime/sim (reproduce a reported violation)",
    )


@pytest.fixture
def sim_seed(request: pytest.FixtureRequest) -> int | None:
    """The seed given with ``--sim-seed`` (or ``REGENCY_SIM_SEED``), else None."""
    try:
        value = request.config.getoption("--sim-seed")
    except ValueError:  # option not registered when this conftest is not an initial one
        value = None
    if value is None and os.environ.get("REGENCY_SIM_SEED"):
        value = int(os.environ["REGENCY_SIM_SEED"])
    return None if value is None else int(value)


@pytest.fixture(autouse=True)
def _quiet_structlog() -> Iterator[None]:
    """Drop log events below WARNING during the simulator tests, then restore the config."""
    old = structlog.get_config()
    structlog.configure(
        wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING),
        cache_logger_on_first_use=False,
    )
    try:
        yield
    finally:
        structlog.configure(**old)
