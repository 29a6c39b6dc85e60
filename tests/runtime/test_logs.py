"""runtime.logs.Logger: binds once, and follows structlog reconfiguration."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest
import structlog
from structlog.testing import capture_logs

from runtime.logs import Logger


@pytest.fixture(autouse=True)
def _restore_structlog() -> Iterator[None]:
    saved = structlog.get_config()
    yield
    structlog.configure(**saved)


def test_events_carry_the_bound_context() -> None:
    log = Logger("regency", node="n1").bind(pid="<n1.1>")
    with capture_logs() as logs:
        log.error("process_crashed", reason="boom")
    assert logs == [
        {
            "node": "n1",
            "pid": "<n1.1>",
            "reason": "boom",
            "event": "process_crashed",
            "log_level": "error",
        }
    ]


def test_follows_configuration_made_after_it() -> None:
    """A logger made before capture_logs (or configure) still lands in the new setup."""
    log = Logger("regency", node="n1")
    log.info("before")  # binds under the old configuration
    with capture_logs() as logs:
        log.info("during")
    log.info("after")
    assert [e["event"] for e in logs] == ["during"]

    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.ERROR))
    with capture_logs() as filtered:
        log.info("dropped")
        log.error("kept")
    assert [e["event"] for e in filtered] == ["kept"]


def test_binds_once_while_the_configuration_stands() -> None:
    log = Logger("regency")
    first = log._logger()
    assert log._logger() is first
    structlog.configure(processors=[structlog.processors.KeyValueRenderer()])
    assert log._logger() is not first


def test_enabled_says_whether_a_level_filter_drops_the_level() -> None:
    """enabled() is False only for levels a filtering wrapper drops, and follows configure."""
    log = Logger("regency")
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.ERROR))
    assert not log.enabled("debug")
    assert not log.enabled("info")
    assert log.enabled("error")
    assert log.enabled("critical")
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.DEBUG))
    assert log.enabled("debug")
    assert log.enabled("info")
