"""What a Raft leader knows about each follower's log, and how fast it may send to it.

A :class:`Progress` is in one of three states:

- ``PROBE``: the leader does not know where the follower's log ends. It sends at most one
  append per heartbeat interval and walks ``next`` back on each rejection until the logs match.
- ``REPLICATE``: the logs matched; the leader streams appends optimistically, advancing ``next``
  as it sends, and stops when ``max_inflight`` appends are unacknowledged.
- ``SNAPSHOT``: the entries the follower needs were compacted; the leader sent a snapshot and
  sends nothing else until the follower acknowledges it (or the snapshot times out).
"""

from __future__ import annotations

import enum
from collections import deque
from typing import final


class ProgressState(enum.Enum):
    """Replication state of one follower, as seen by the leader."""

    PROBE = "probe"
    REPLICATE = "replicate"
    SNAPSHOT = "snapshot"


@final
class Inflights:
    """A bounded window of appends sent but not yet acknowledged, by last entry index."""

    __slots__ = ("_capacity", "_indexes")

    def __init__(self, capacity: int) -> None:
        """Create an empty window.

        Args:
            capacity: The most unacknowledged appends allowed at once (>= 1).
        """
        self._capacity = capacity
        self._indexes: deque[int] = deque()

    @property
    def count(self) -> int:
        """The number of unacknowledged appends."""
        return len(self._indexes)

    def full(self) -> bool:
        """Return whether no further append may be sent."""
        return len(self._indexes) >= self._capacity

    def add(self, last_index: int) -> None:
        """Record an append whose last entry is ``last_index``; indexes must increase."""
        self._indexes.append(last_index)

    def free_le(self, index: int) -> None:
        """Forget every append whose last entry is at or below ``index`` (it was acknowledged)."""
        while self._indexes and self._indexes[0] <= index:
            self._indexes.popleft()

    def free_first_one(self) -> None:
        """Forget the oldest append, letting one more through (used on a heartbeat response)."""
        if self._indexes:
            self._indexes.popleft()

    def reset(self) -> None:
        """Forget all appends."""
        self._indexes.clear()


@final
class Progress:
    """The leader's view of one follower's log.

    Attributes:
        match: Highest index known to be replicated on the follower (0 when unknown).
        next: Index of the next entry to send.
        state: The replication state; see the module docstring.
        pending_snapshot: Index of the snapshot in flight, in state ``SNAPSHOT``.
        snapshot_ticks: Leader ticks since the snapshot in flight was sent.
        probe_sent: In state ``PROBE``, whether an append was sent since the last heartbeat
            response (then further appends wait).
        recent_active: Whether the follower was heard from in the current check-quorum period.
        inflights: Unacknowledged appends, in state ``REPLICATE``.
    """

    __slots__ = (
        "inflights",
        "match",
        "next",
        "pending_snapshot",
        "probe_sent",
        "recent_active",
        "snapshot_ticks",
        "state",
    )

    def __init__(self, next_index: int, max_inflight: int) -> None:
        """Create a progress in state ``PROBE`` with nothing matched.

        Args:
            next_index: The first index to probe with (usually the leader's last index + 1).
            max_inflight: Capacity of the inflight window.
        """
        self.match = 0
        self.next = next_index
        self.state = ProgressState.PROBE
        self.pending_snapshot = 0
        self.snapshot_ticks = 0
        self.probe_sent = False
        self.recent_active = False
        self.inflights = Inflights(max_inflight)

    def _reset_state(self, state: ProgressState) -> None:
        self.probe_sent = False
        self.pending_snapshot = 0
        self.snapshot_ticks = 0
        self.state = state
        self.inflights.reset()

    def become_probe(self) -> None:
        """Enter state ``PROBE``; ``next`` restarts after the match (or the snapshot sent)."""
        if self.state is ProgressState.SNAPSHOT:
            pending = self.pending_snapshot
            self._reset_state(ProgressState.PROBE)
            self.next = max(self.match + 1, pending + 1)
        else:
            self._reset_state(ProgressState.PROBE)
            self.next = self.match + 1

    def become_replicate(self) -> None:
        """Enter state ``REPLICATE``, streaming from ``match + 1``."""
        self._reset_state(ProgressState.REPLICATE)
        self.next = self.match + 1

    def become_snapshot(self, snapshot_index: int) -> None:
        """Enter state ``SNAPSHOT`` after sending the snapshot at ``snapshot_index``."""
        self._reset_state(ProgressState.SNAPSHOT)
        self.pending_snapshot = snapshot_index

    def maybe_update(self, index: int) -> bool:
        """Record that the follower acknowledged its log up to ``index``.

        Returns:
            True if ``match`` advanced; False for a stale acknowledgement.
        """
        updated = False
        if self.match < index:
            self.match = index
            updated = True
            self.probe_sent = False
        self.next = max(self.next, index + 1)
        return updated

    def maybe_decr_to(self, rejected: int, match_hint: int) -> bool:
        """Move ``next`` back after the follower rejected an append at ``rejected``.

        Args:
            rejected: The ``index`` (previous entry index) of the rejected append.
            match_hint: The highest index that may match, computed from the follower's hint.

        Returns:
            True if ``next`` moved and an append should be sent; False if the rejection is
            stale (it answers an append that is no longer the latest).
        """
        if self.state is ProgressState.REPLICATE:
            if rejected <= self.match:
                return False
            self.next = self.match + 1
            return True
        if self.next - 1 != rejected:
            return False
        self.next = max(min(rejected, match_hint + 1), 1)
        self.probe_sent = False
        return True

    def is_paused(self) -> bool:
        """Return whether the leader must hold back appends to this follower for now."""
        if self.state is ProgressState.PROBE:
            return self.probe_sent
        if self.state is ProgressState.REPLICATE:
            return self.inflights.full()
        return True

    def sent_entries(self, count: int, last_index: int) -> None:
        """Record that an append of ``count`` entries ending at ``last_index`` was sent."""
        if self.state is ProgressState.REPLICATE:
            if count:
                self.next = last_index + 1
                self.inflights.add(last_index)
        elif self.state is ProgressState.PROBE:
            self.probe_sent = True

    def __repr__(self) -> str:
        """Describe the progress like ``StateReplicate match=3 next=4``."""
        extra = ""
        if self.state is ProgressState.SNAPSHOT:
            extra = f" pending_snapshot={self.pending_snapshot}"
        elif self.state is ProgressState.PROBE and self.probe_sent:
            extra = " paused"
        elif self.inflights.count:
            extra = f" inflight={self.inflights.count}"
        return f"{self.state.name} match={self.match} next={self.next}{extra}"
