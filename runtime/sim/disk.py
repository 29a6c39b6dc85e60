"""A simulated disk: what was fsynced survives a crash, what was not may be lost.

:class:`SimDisk` belongs to one simulated node and outlives its crashes. Each incarnation
of the node gets a :class:`SimStorage` from :meth:`SimDisk.open`, which implements the
driver's :class:`~runtime.raft.driver.DriverStorage` with the same answers and errors as
:class:`~runtime.raft.core.MemoryStorage` and the durability contract of
:class:`~runtime.raft.durable.DurableStorage`:

* ``append`` and ``set_hard_state`` take effect at once in what the storage answers, and
  become durable when the job from ``begin_sync`` (called after them) runs;
* ``apply_snapshot``, ``create_snapshot`` and ``compact`` are durable on return, with
  every earlier write;
* :meth:`SimDisk.crash` keeps a random prefix (drawn from the disk's seeded rng) of the
  writes not yet synced, in order, and drops the rest, as a torn log tail would.

Fsync latency is simulated by :meth:`SimDisk.run_io` (the driver's ``run_io``): it sleeps
on the (mock) clock for a latency drawn from the disk's rng, then runs the job; a crash
during the sleep means the job never ran. :meth:`SimDisk.slow_until` makes the disk slow
for a while (a fault).

A deliberately broken mode proves the invariant checker can fail: ``"no_fsync"`` (the
disk acknowledges every fsync but makes nothing durable, so a crash loses everything).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from typing import Literal, TypeVar, final

import trio

from runtime.raft.core import Entry, HardState, MemoryStorage, Snapshot

__all__ = ["Broken", "SimDisk", "SimStorage"]

T = TypeVar("T")

#: A deliberately broken disk, for proving that the checker catches violations.
Broken = Literal["no_fsync"]


#: A buffered write, replayed onto the durable state when it is synced or survives a crash.
_Write = tuple[Literal["append"], tuple[Entry, ...]] | tuple[Literal["hard_state"], HardState]


def _replay(storage: MemoryStorage, op: _Write) -> None:
    if op[0] == "append":
        storage.append(op[1])
    else:
        storage.set_hard_state(op[1])


@final
class SimDisk:
    """One node's disk across its incarnations; see the module docstring."""

    def __init__(
        self,
        node: str,
        voters: Sequence[str],
        rng: random.Random,
        *,
        fsync_latency: tuple[float, float] = (0.0002, 0.002),
        broken: Broken | None = None,
    ) -> None:
        """Create an empty disk.

        Args:
            node: The owner's id (for messages).
            voters: The initial voter set the storage reports.
            rng: Draws latencies and what a crash keeps; derive it from the run's seed.
            fsync_latency: (min, max) seconds per fsync when the disk is healthy.
            broken: A deliberately broken mode (tests only), see the module docstring.
        """
        self.node = node
        self._rng = rng
        self._durable = MemoryStorage(voters)
        self._pending: list[_Write] = []
        self._synced = 0  # _pending[:_synced] are durable (moved out at each sync)
        self._generation = 0
        self._latency = fsync_latency
        self._slow_until = -1.0
        self._slow_latency = 0.0
        self.broken = broken
        self.fsyncs = 0
        """Sync jobs that ran."""
        self.lost_writes = 0
        """Buffered writes dropped by crashes."""

    def open(self) -> SimStorage:
        """Return the storage of a new incarnation, holding what is durable."""
        self._generation += 1
        return SimStorage(self, self._durable.copy(), self._generation)

    def crash(self) -> None:
        """Lose power: keep a random prefix of the unsynced writes, drop the rest.

        The current :class:`SimStorage` is dead afterwards (its writes are ignored).
        """
        unsynced = self._pending[self._synced :]
        keep = 0 if self.broken == "no_fsync" else self._rng.randint(0, len(unsynced))
        for op in unsynced[:keep]:
            _replay(self._durable, op)
        self.lost_writes += len(unsynced) - keep
        self._pending = []
        self._synced = 0
        self._generation += 1

    def slow_until(self, deadline: float, latency: float) -> None:
        """Make every fsync take about ``latency`` seconds until ``deadline`` (a fault)."""
        self._slow_until = deadline
        self._slow_latency = latency

    async def run_io(self, fn: Callable[[], T], /) -> T:
        """Sleep for one fsync latency on the clock, then run ``fn`` (the driver's run_io)."""
        now = trio.current_time()
        lo, hi = self._latency
        delay = lo + (hi - lo) * self._rng.random()
        if now < self._slow_until:
            delay += self._slow_latency * (0.5 + self._rng.random())
        await trio.sleep(delay)
        return fn()

    # -- used by SimStorage

    def _write(self, generation: int, op: _Write) -> bool:
        if generation != self._generation:
            return False
        self._pending.append(op)
        return True

    def _begin_sync(self, generation: int) -> Callable[[], None]:
        target = len(self._pending)

        def job() -> None:
            if generation != self._generation or self.broken == "no_fsync":
                return
            for op in self._pending[self._synced : target]:
                _replay(self._durable, op)
            self._synced = max(self._synced, target)
            if self._synced == len(self._pending):
                self._pending = []
                self._synced = 0
            self.fsyncs += 1

        return job

    def _sync_all(self, generation: int) -> bool:
        """Make every buffered write durable now (snapshot operations fsync)."""
        if generation != self._generation:
            return False
        if self.broken == "no_fsync":
            return False  # the lie covers snapshots too: nothing ever reaches the platter
        for op in self._pending[self._synced :]:
            _replay(self._durable, op)
        self._pending = []
        self._synced = 0
        return True

    @property
    def durable_hard_state(self) -> HardState:
        """The hard state a restart would find."""
        return self._durable.initial_state()[0]


@final
class SimStorage:
    """One incarnation's view of a :class:`SimDisk`: a ``DriverStorage``."""

    def __init__(self, disk: SimDisk, state: MemoryStorage, generation: int) -> None:
        """Internal: use :meth:`SimDisk.open`."""
        self._disk = disk
        self._s = state
        self._gen = generation

    # -- Storage: answered by the incarnation's MemoryStorage, with its errors

    def initial_state(self) -> tuple[HardState, tuple[str, ...]]:
        """Return the saved hard state and the voters (the snapshot's, if it has any)."""
        return self._s.initial_state()

    def first_index(self) -> int:
        """Return the index of the first entry available."""
        return self._s.first_index()

    def last_index(self) -> int:
        """Return the index of the last entry."""
        return self._s.last_index()

    def term(self, index: int) -> int:
        """Return the term of the entry at ``index``; see ``Storage.term``."""
        return self._s.term(index)

    def entries(self, lo: int, hi: int) -> Sequence[Entry]:
        """Return the entries with ``lo <= index < hi``; see ``Storage.entries``."""
        return self._s.entries(lo, hi)

    def snapshot(self) -> Snapshot:
        """Return the most recent snapshot."""
        return self._s.snapshot()

    # -- writes

    def append(self, entries: Sequence[Entry]) -> None:
        """Append entries (buffered until the next sync)."""
        entries = tuple(entries)
        self._s.append(entries)
        self._disk._write(self._gen, ("append", entries))

    def set_hard_state(self, hard_state: HardState) -> None:
        """Save the hard state (buffered until the next sync)."""
        self._s.set_hard_state(hard_state)
        self._disk._write(self._gen, ("hard_state", hard_state))

    def apply_snapshot(self, snapshot: Snapshot) -> None:
        """Install a snapshot, discarding the log; durable on return."""
        self._s.apply_snapshot(snapshot)
        if self._disk._sync_all(self._gen):
            self._disk._durable.apply_snapshot(snapshot)

    def create_snapshot(self, snapshot: Snapshot) -> None:
        """Keep a locally made snapshot; durable on return."""
        self._s.create_snapshot(snapshot)
        if self._disk._sync_all(self._gen):
            self._disk._durable.create_snapshot(snapshot)

    def compact(self, index: int) -> None:
        """Discard entries up to ``index``; durable on return."""
        self._s.compact(index)
        if self._disk._sync_all(self._gen):
            self._disk._durable.compact(index)

    def begin_sync(self) -> Callable[[], None]:
        """Return the job that makes every earlier write durable."""
        return self._disk._begin_sync(self._gen)

    # -- inspection

    def log(self) -> list[Entry]:
        """Return the entries after the snapshot (for the checker)."""
        return list(self._s.entries(self._s.first_index(), self._s.last_index() + 1))
