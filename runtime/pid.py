"""Process identifiers and references.

A :class:`Pid` names one process for its whole life and never names another: it is
``(node, serial, creation)``. ``creation`` changes each time a node with the same name
starts again, so a pid from a node's previous life is never confused with a new
process that happens to reuse the serial.
"""

from __future__ import annotations

import attrs


@attrs.frozen(order=True, slots=True, cache_hash=True)
class Pid:
    """A process identifier: location transparent, hashable, ordered, msgpack-safe."""

    node: str
    serial: int
    creation: int = 0

    def __str__(self) -> str:
        return f"<{self.node}.{self.serial}.{self.creation}>"

    def __repr__(self) -> str:
        return f"Pid({self.node!r}, {self.serial}, {self.creation})"


@attrs.frozen(order=True, slots=True, cache_hash=True)
class Ref:
    """A unique reference, made by a node: monitors, calls and timers are named by one."""

    node: str
    serial: int
    creation: int = 0

    def __str__(self) -> str:
        return f"#Ref<{self.node}.{self.serial}.{self.creation}>"


@attrs.frozen(slots=True)
class Name:
    """A registered name, optionally on another node: ``Name("ledger", "b@host")``."""

    name: str
    node: str | None = None
