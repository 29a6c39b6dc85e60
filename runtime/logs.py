"""A structlog logger that binds once and follows later reconfiguration.

``structlog.get_logger(**context)`` returns a lazy proxy that builds a new bound
logger on every call unless ``cache_logger_on_first_use`` is set, and with that set
it never sees a later ``structlog.configure``. The runtime logs on hot paths (every
crash, exit and restart), and users configure structlog after making a node (tests
capture logs with ``structlog.testing.capture_logs``). :class:`Logger` keeps its bound
logger while the configuration's processors, wrapper class, context class and logger
factory are the same objects, and binds again when any of them changes: a filtered
event costs a third of a lazy proxy's rebind.

The configuration is read from structlog's own record of it when that exists (one
attribute load per setting, where ``structlog.get_config()`` builds a dict per event),
else through ``get_config()``. :meth:`Logger.enabled` says whether an event at a level
would pass a level-filtering wrapper (``structlog.make_filtering_bound_logger``), so a
caller on a hot path can skip formatting the event's values when it would be dropped.
"""

from __future__ import annotations

import logging
from typing import Any

import structlog

__all__ = ["Logger"]


def _config_record() -> Any:
    """structlog's configuration record (read here, never written), or None."""
    try:
        from structlog._config import _CONFIG
    except ImportError:  # pragma: no cover - a structlog without it
        return None
    names = (
        "default_processors",
        "default_wrapper_class",
        "logger_factory",
        "default_context_class",
    )
    return _CONFIG if all(hasattr(_CONFIG, n) for n in names) else None


_STRUCTLOG_CONFIG: Any = _config_record()

# What a level-filtering wrapper class has for the methods of the levels it drops.
_DROPPED = getattr(structlog.make_filtering_bound_logger(logging.CRITICAL), "info", None)


class Logger:
    """Log through structlog with *context* bound; see the module doc.

    Args:
        args: positional arguments of ``structlog.get_logger`` (the logger factory's).
        context: key-value pairs bound to every event.
    """

    __slots__ = (
        "_args",
        "_bound",
        "_context",
        "_context_class",
        "_factory",
        "_processors",
        "_wrapper",
    )

    def __init__(self, *args: Any, **context: Any) -> None:
        self._args = args
        self._context = context
        self._bound: Any = None
        self._processors: Any = None
        self._wrapper: Any = None
        self._factory: Any = None
        self._context_class: Any = None

    def _logger(self) -> Any:
        c = _STRUCTLOG_CONFIG
        if c is not None:
            processors = c.default_processors
            wrapper = c.default_wrapper_class
            factory = c.logger_factory
            context_class = c.default_context_class
        else:  # pragma: no cover - see the import
            config = structlog.get_config()
            processors = config["processors"]
            wrapper = config["wrapper_class"]
            factory = config["logger_factory"]
            context_class = config["context_class"]
        # Identity, not equality: capture_logs mutates the processor list in place,
        # and a bound logger holds the list object it was made with.
        if (
            processors is not self._processors
            or wrapper is not self._wrapper
            or factory is not self._factory
            or context_class is not self._context_class
            or self._bound is None
        ):
            self._bound = structlog.get_logger(*self._args, **self._context).bind()
            self._processors = processors
            self._wrapper = wrapper
            self._factory = factory
            self._context_class = context_class
        return self._bound

    def enabled(self, level: str) -> bool:
        """Whether an event at *level* (``"info"``, ``"error"``...) may be logged now.

        False only when the configured wrapper drops the level outright (a
        ``make_filtering_bound_logger`` below it); any other setup may log it.
        """
        return getattr(type(self._logger()), level, None) is not _DROPPED

    def bind(self, **context: Any) -> Logger:
        """A logger with *context* bound on top of this one's."""
        return Logger(*self._args, **{**self._context, **context})

    def debug(self, event: str, **kw: Any) -> Any:
        """Log *event* at debug level."""
        return self._logger().debug(event, **kw)

    def info(self, event: str, **kw: Any) -> Any:
        """Log *event* at info level."""
        return self._logger().info(event, **kw)

    def warning(self, event: str, **kw: Any) -> Any:
        """Log *event* at warning level."""
        return self._logger().warning(event, **kw)

    def error(self, event: str, **kw: Any) -> Any:
        """Log *event* at error level."""
        return self._logger().error(event, **kw)

    def exception(self, event: str, **kw: Any) -> Any:
        """Log *event* at error level with the exception being handled."""
        return self._logger().exception(event, **kw)

    def critical(self, event: str, **kw: Any) -> Any:
        """Log *event* at critical level."""
        return self._logger().critical(event, **kw)
