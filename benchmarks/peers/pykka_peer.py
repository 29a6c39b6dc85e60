"""The pykka peer: thread-based actors (one OS thread and one ``queue.Queue`` each).

Measured as a pykka user would use it: ``tell`` for one-way messages, two actors
telling each other for ping-pong, ``ask`` (blocking on the reply future) for calls,
``start`` for spawning. The driver is the main thread. Each job's clock stops when the
receiving actor has handled the last message (signalled by a ``threading.Event``).
"""

from __future__ import annotations

import threading
import time
from typing import Any

from benchmarks.peers import Probe, rate

pykka: Any
try:
    import pykka
except ImportError:  # pragma: no cover - reported as a skipped peer
    pykka = None

PACKAGE = "pykka"
"""The PyPI package this peer needs."""


def missing() -> str | None:
    """Why this peer cannot run here, or None when it can."""
    if pykka is None:
        return "pykka is not installed (pip install pykka)"
    return None


def _base() -> type[Any]:
    assert pykka is not None, missing()
    return pykka.ThreadingActor  # type: ignore[no-any-return]


def one_way(n: int) -> float:
    """Messages/s told from the main thread to one actor."""

    class Counter(_base()):  # type: ignore[misc]
        def __init__(self, done: threading.Event) -> None:
            super().__init__()
            self.left = n
            self.done = done

        def on_receive(self, message: Any) -> None:
            self.left -= 1
            if not self.left:
                self.done.set()

    done = threading.Event()
    ref = Counter.start(done)
    try:
        t0 = time.perf_counter()
        for i in range(n):
            ref.tell(i)
        done.wait()
        t1 = time.perf_counter()
    finally:
        ref.stop()
    return rate(n, t1 - t0)


def ping_pong(n: int) -> float:
    """Round trips/s between two actors telling each other."""

    class Player(_base()):  # type: ignore[misc]
        def __init__(self, done: threading.Event | None) -> None:
            super().__init__()
            self.other: Any = None
            self.done = done

        def on_receive(self, message: Any) -> None:
            if isinstance(message, tuple):  # ("partner", ref)
                self.other = message[1]
            elif self.done is None:  # the ponger bounces every ball
                self.other.tell(message)
            elif message + 1 < n:  # the pinger serves the next ball
                self.other.tell(message + 1)
            else:
                self.done.set()

    done = threading.Event()
    pinger = Player.start(done)
    ponger = Player.start(None)
    try:
        pinger.ask(("partner", ponger))
        ponger.ask(("partner", pinger))
        t0 = time.perf_counter()
        ponger.tell(0)
        done.wait()
        t1 = time.perf_counter()
    finally:
        pinger.stop()
        ponger.stop()
    return rate(n, t1 - t0)


def call(n: int) -> float:
    """Calls/s: ``ask`` from the main thread, blocking on each reply."""

    class Echo(_base()):  # type: ignore[misc]
        def on_receive(self, message: Any) -> Any:
            return message

    ref = Echo.start()
    try:
        t0 = time.perf_counter()
        for i in range(n):
            ref.ask(i)
        t1 = time.perf_counter()
    finally:
        ref.stop()
    return rate(n, t1 - t0)


def spawn(n: int) -> float:
    """Actors started per second, each counting itself in ``on_start`` and then stopping."""
    lock = threading.Lock()
    done = threading.Event()
    left = n

    class Ephemeral(_base()):  # type: ignore[misc]
        def on_start(self) -> None:
            nonlocal left
            with lock:
                left -= 1
                if not left:
                    done.set()
            self.stop()

    t0 = time.perf_counter()
    for _ in range(n):
        Ephemeral.start()
    done.wait()
    t1 = time.perf_counter()
    assert pykka is not None
    pykka.ActorRegistry.stop_all()
    return rate(n, t1 - t0)


def hold_idle(n: int, before: Probe, after: Probe) -> None:
    """``n`` started actors, each idle in its thread waiting on its inbox.

    For a throwaway interpreter (see :mod:`benchmarks.peers.idle_memory`): the actors run
    on daemon threads and are left running, since stopping thousands of pykka actors
    takes longer than starting them.
    """

    class Idle(_base()):  # type: ignore[misc]
        use_daemon_thread = True

        def on_receive(self, message: Any) -> Any:
            return message

    assert pykka is not None
    before()
    refs = [Idle.start() for _ in range(n)]
    for ref in refs:  # each actor answered: its loop now waits on its empty inbox
        ref.ask("ready?")
    after()
