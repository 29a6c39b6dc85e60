"""Fixtures for the Raft core tests: the ``--rewrite`` option and quiet logging."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator

import pytest
import structlog


def pytest_addoption(parser: pytest.Parser) -> None:
    """Add ``--rewrite``: regenerate the expected output of testdata scenarios."""
    parser.addoption(
        "--rewrite",
        action="store_true",
        default=False,
        help="rewrite tests/runtime/raft/testdata/*.txt with the actual output",
    )


@pytest.fixture
def rewrite(request: pytest.FixtureRequest) -> bool:
    """Whether to rewrite scenario files (``--rewrite`` or ``REGENCY_REWRITE=1``)."""
    try:
        opt = bool(request.config.getoption("--rewrite"))
    except ValueError:  # option not registered when this conftest is not an initial one
        opt = False
    return opt or os.environ.get("REGENCY_REWRITE") == "1"


@pytest.fixture(autouse=True)
def _quiet_structlog() -> Iterator[None]:
    """Drop log events below WARNING during the raft tests, then restore the config."""
    old = structlog.get_config()
    structlog.configure(
        wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING),
        cache_logger_on_first_use=False,
    )
    try:
        yield
    finally:
        structlog.configure(**old)
