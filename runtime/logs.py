"""A structlog logger that binds once and follows later reconfiguration.

``structlog.get_logger(**context)`` returns a lazy proxy that builds a new bound
logger on every call unless ``cache_logger_on_first_use`` is set, and with that set
it never sees a later ``structlog.configure``. The runtime logs on hot paths (every
crash, exit and restart), and users configure structlog after making a node (tests
capture logs with ``structlog.testing.capture_logs``). :class:`Logger` keeps its bound
logger while the configuration's processors, wrapper class, context class and logger
factory are the same objects, and binds again when any of them changes: a filtered
event costs a third of a lazy proxy's rebind.
"""

from __future__ import annotations

from typing import Any

import structlog

__all__ = ["Logger"]


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
