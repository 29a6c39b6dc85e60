"""The Raft consensus core: a pure state machine in the style of etcd-io/raft.

Principles. The core does no IO, reads no clock and draws randomness only from the
``random.Random`` in its :class:`Config`. Time arrives as :meth:`RaftNode.tick`, input as
:meth:`RaftNode.step`, :meth:`RaftNode.propose`, :meth:`RaftNode.read_index` and
:meth:`RaftNode.transfer_leader`; output leaves as a :class:`Ready` batch, which the caller
handles and then confirms with :meth:`RaftNode.advance`::

    node.tick(); node.step(msg)
    if node.has_ready():
        rd = node.ready()
        send rd.early_messages                                            # at once
        storage: save rd.snapshot, then rd.entries, then rd.hard_state   # durably
        send rd.messages                                                  # only now
        apply rd.committed in order; serve rd.read_states once applied >= their index
        node.advance(rd)

Ordering guarantees. ``Ready.messages`` may promise what its entries, hard state and
snapshot contain (a vote, an acknowledgement), so they must be sent only after those are
durable. ``Ready.early_messages`` promise nothing about this node's unpersisted state (a
leader's appends and heartbeats, Raft thesis section 10.2.1), so they may leave before
or while the batch is persisted: a leader writes its log in parallel with replicating it.
A leader counts its own log towards a commit only up to the entries :meth:`RaftNode.advance`
confirmed durable. Committed entries are handed out once each, in index order, and only
after the entries themselves were handed out for persisting (possibly in the same Ready).

Features. Leader election with randomized timeouts; pre-vote (default on), so a node that
rejoins after a partition cannot disrupt a healthy leader; check-quorum (default on), so a
leader that has not heard from a quorum within an election timeout steps down; leader
stickiness, so a follower that heard from its leader within the election timeout neither
grants votes nor changes term; log replication with the consistency check and fast
conflict backtracking; flow control (probe, replicate and snapshot states, ``max_inflight``);
commit only by counting replicas of an entry of the current term (a no-op entry opens each
term); snapshots, log compaction and catching up a lagging follower by snapshot; leadership
transfer; linearizable reads with read-index. Membership is the static voter set from
storage or config; configuration changes are not implemented yet (``EntryKind`` leaves
room for them).

Logging goes to ``structlog.get_logger("regency.raft")`` with snake_case past-tense events
(``became_leader``, ``stepped_down``, ``snapshot_restored``...), each carrying ``node`` and
``term``.
"""

from __future__ import annotations

import enum
import random
from collections.abc import Callable, Iterable, Sequence
from typing import Final, Protocol, final

import attrs
import structlog

from .progress import Progress, ProgressState

__all__ = [
    "CAMPAIGN_TRANSFER",
    "EARLY_MESSAGE_TYPES",
    "EMPTY_SNAPSHOT",
    "Config",
    "Entry",
    "EntryKind",
    "HardState",
    "LogCompacted",
    "LogUnavailable",
    "MemoryStorage",
    "Message",
    "MsgType",
    "NotLeader",
    "ProposalDropped",
    "RaftError",
    "RaftNode",
    "ReadState",
    "Ready",
    "Role",
    "Snapshot",
    "SoftState",
    "Storage",
]

_log = structlog.get_logger("regency.raft")

#: ``Message.context`` of a vote request sent on a leader's behalf (leadership transfer):
#: it bypasses the voters' leader stickiness.
CAMPAIGN_TRANSFER: Final = b"transfer"


# --------------------------------------------------------------------------- errors


class RaftError(Exception):
    """Base of the errors raised by the Raft core."""


class ProposalDropped(RaftError):
    """The proposal was not accepted: no leader is known here, or a transfer is in progress."""


class NotLeader(ProposalDropped):
    """This node is not the leader; ``leader_hint`` names the leader it knows of, if any."""

    def __init__(self, leader_hint: str | None) -> None:
        """Create the error.

        Args:
            leader_hint: The id of the leader this node last heard from, or None.
        """
        super().__init__(f"raft: not the leader (leader hint: {leader_hint})")
        self.leader_hint = leader_hint


class LogCompacted(RaftError):
    """The requested log index is at or before the last snapshot and no longer available."""


class LogUnavailable(RaftError):
    """The requested log index is beyond the last entry in storage."""


# --------------------------------------------------------------------------- values


class Role(enum.Enum):
    """What a node currently does in the cluster."""

    FOLLOWER = "follower"
    PRE_CANDIDATE = "pre_candidate"
    CANDIDATE = "candidate"
    LEADER = "leader"


class EntryKind(enum.IntEnum):
    """What a log entry carries. Values 2 and up are reserved (configuration changes)."""

    NORMAL = 0  #: an application command, ``data`` is opaque
    NOOP = 1  #: the empty entry a new leader appends to commit its term; ``data`` is b""


@attrs.frozen
class Entry:
    """One log entry: ``data`` proposed in ``term`` and stored at ``index`` (1-based)."""

    term: int
    index: int
    kind: EntryKind = EntryKind.NORMAL
    data: bytes = b""


@attrs.frozen
class HardState:
    """The state that must be durable before messages are sent: term, vote and commit index."""

    term: int
    vote: str | None
    commit: int


@attrs.frozen
class SoftState:
    """Volatile state worth reporting: the known leader, this node's role and term."""

    leader: str | None
    role: Role
    term: int


@attrs.frozen
class Snapshot:
    """State machine state up to and including ``index`` (of ``term``), with the voter set.

    ``index == 0`` is the empty snapshot (nothing compacted yet).
    """

    index: int
    term: int
    voters: tuple[str, ...]
    data: bytes


#: The snapshot of a log that was never compacted.
EMPTY_SNAPSHOT: Final = Snapshot(0, 0, (), b"")


class MsgType(enum.IntEnum):
    """The kinds of message Raft nodes exchange. Values are stable on the wire."""

    PRE_VOTE = 1  #: index/log_term: the candidate's last entry; term: the term it would use
    PRE_VOTE_RESP = 2  #: reject: not granted; term: the request's term when granted
    VOTE = 3  #: as PRE_VOTE; context CAMPAIGN_TRANSFER bypasses leader stickiness
    VOTE_RESP = 4
    APPEND = 5  #: entries after (index, log_term), and the leader's commit index
    APPEND_RESP = 6  #: index: last matching index; or reject with reject_hint/log_term
    HEARTBEAT = 7  #: commit: min(leader commit, follower match); context: read-index round
    HEARTBEAT_RESP = 8  #: context echoed from the heartbeat
    SNAPSHOT = 9  #: snapshot to install; answered with APPEND_RESP
    TIMEOUT_NOW = 10  #: leadership transfer: campaign now, skipping pre-vote
    READ_INDEX = 11  #: follower to leader, term 0: confirm leadership for context
    READ_INDEX_RESP = 12  #: leader to follower: index to read at, for context
    TRANSFER_LEADER = 13  #: follower to leader, term 0: transfer to the id in context


@attrs.frozen
class Message:
    """A message between two Raft nodes. Every field is a plain msgpack-able value.

    ``term == 0`` marks a message forwarded on behalf of a local request (``READ_INDEX``,
    ``TRANSFER_LEADER``); it is not checked against the receiver's term.
    """

    type: MsgType
    frm: str
    to: str
    term: int
    log_term: int = 0
    index: int = 0
    entries: tuple[Entry, ...] = ()
    commit: int = 0
    reject: bool = False
    reject_hint: int = 0
    snapshot: Snapshot | None = None
    context: bytes = b""


@attrs.frozen
class ReadState:
    """A confirmed linearizable read: serve the read for ``context`` once applied >= ``index``."""

    index: int
    context: bytes


#: The messages that may be sent before the Ready that carries them is durable: none of
#: them promises anything about the sender's unpersisted entries, term or vote. A leader's
#: ``APPEND`` may carry entries it has not persisted yet: the receiver checks them against
#: its own log, and the leader counts its own copy towards a commit only once durable.
#: Votes, vote requests (the candidate's own vote must be durable first) and every
#: response (``APPEND_RESP``, ``VOTE_RESP``, ``PRE_VOTE_RESP``, ``HEARTBEAT_RESP``) wait.
EARLY_MESSAGE_TYPES: Final = frozenset(
    {
        MsgType.APPEND,
        MsgType.HEARTBEAT,
        MsgType.SNAPSHOT,
        MsgType.TIMEOUT_NOW,
        MsgType.READ_INDEX,
        MsgType.READ_INDEX_RESP,
        MsgType.TRANSFER_LEADER,
    }
)


@attrs.frozen
class Ready:
    """A batch of work for the caller, returned by :meth:`RaftNode.ready`.

    Handle it in this order, then call :meth:`RaftNode.advance` with it:

    0. ``early_messages``: send them at any time before :meth:`RaftNode.advance`; best
       first, so a leader's appends travel while it persists (its types are
       :data:`EARLY_MESSAGE_TYPES`).
    1. ``snapshot`` (if not None): install it in storage, replacing the whole log.
    2. ``entries``: append them to storage; an entry at an index storage already holds
       replaces that entry and everything after it.
    3. ``hard_state`` (if not None): save it. Steps 1-3 must be durable before step 4.
    4. ``messages``: send them. They may promise what steps 1-3 made durable (a vote,
       an acknowledgement of entries), so never before.
    5. ``committed``: apply them to the state machine, in order (``NOOP`` entries too, as
       no-ops). A ``snapshot`` in the same batch is applied first.
    6. ``read_states``: serve each read once the applied index reaches its ``index``.

    ``soft_state`` is None when unchanged since the last Ready.
    """

    soft_state: SoftState | None
    hard_state: HardState | None
    entries: tuple[Entry, ...]
    snapshot: Snapshot | None
    committed: tuple[Entry, ...]
    messages: tuple[Message, ...]
    read_states: tuple[ReadState, ...]
    early_messages: tuple[Message, ...] = ()


def _to_voters(voters: Iterable[str]) -> tuple[str, ...]:
    return tuple(voters)


def _default_rng(config: Config) -> random.Random:
    return random.Random(config.id)


def _check_ticks(config: Config, attribute: attrs.Attribute[int], value: int) -> None:
    if value < 1:
        raise ValueError(f"{attribute.name} must be >= 1, got {value}")


@attrs.frozen
class Config:
    """How one Raft node behaves.

    The election timeout is drawn uniformly from ``[election_ticks, 2 * election_ticks)``
    with ``rng.randrange(election_ticks)`` each time a node becomes follower,
    pre-candidate, candidate or leader, as in the Raft paper and etcd (which does not
    redraw for a pre-candidate). Leader stickiness and check-quorum use the
    minimum, ``election_ticks``.
    """

    id: str  # this node's id; a voter only if it is listed in the voter set
    voters: tuple[str, ...] = attrs.field(converter=_to_voters)  # initial voters; storage's win
    election_ticks: int = attrs.field(default=10, validator=_check_ticks)  # ticks; minimum
    # election timeout and check-quorum period; > heartbeat_ticks, 10x is a good choice
    heartbeat_ticks: int = attrs.field(default=1, validator=_check_ticks)  # ticks between
    # leader heartbeats
    pre_vote: bool = True  # ask for pre-votes before bumping the term (no disruption)
    check_quorum: bool = True  # leader steps down after an election timeout without quorum
    max_entries_per_msg: int = attrs.field(default=256, validator=_check_ticks)  # entries
    # per APPEND message
    max_inflight: int = attrs.field(default=256, validator=_check_ticks)  # unacknowledged
    # APPEND messages per follower in replicate state
    campaign_on_leader_loss: bool = True  # a follower told by ``peer_down`` that its
    # leader's connection is lost campaigns within a few ticks, not at its election
    # timeout (needs pre_vote, which keeps a live leader from being deposed)
    defer_commit_broadcast: bool = False  # a leader whose commit index advanced tells the
    # followers with its next APPEND, or with an empty one at its next tick, rather than
    # with an empty APPEND to each at once (etcd's behaviour, the default): with one
    # client proposing sequentially that halves the messages per commit
    rng: random.Random = attrs.field(
        default=attrs.Factory(_default_rng, takes_self=True), eq=False
    )  # election jitter; default seeded with the node id, inject a seeded one in tests

    def __attrs_post_init__(self) -> None:
        """Check the constraints between fields.

        Raises:
            ValueError: ``election_ticks <= heartbeat_ticks``.
        """
        if self.election_ticks <= self.heartbeat_ticks:
            raise ValueError("election_ticks must be greater than heartbeat_ticks")


# --------------------------------------------------------------------------- storage


class Storage(Protocol):
    """What the core reads of the stable log. The caller writes it (see :class:`Ready`).

    Indexes available are ``first_index() - 1`` (the last compacted entry, for its term
    only) through ``last_index()``; ``snapshot().index >= first_index() - 1``.
    """

    def initial_state(self) -> tuple[HardState, tuple[str, ...]]:
        """Return the saved hard state and voter set (empty: use the config's voters)."""
        ...

    def first_index(self) -> int:
        """Return the index of the first entry available (1 for a fresh log)."""
        ...

    def last_index(self) -> int:
        """Return the index of the last entry (first_index() - 1 when the log is empty)."""
        ...

    def term(self, index: int) -> int:
        """Return the term of the entry at ``index``.

        Raises:
            LogCompacted: ``index < first_index() - 1``.
            LogUnavailable: ``index > last_index()``.
        """
        ...

    def entries(self, lo: int, hi: int) -> Sequence[Entry]:
        """Return the entries with ``lo <= index < hi``.

        Raises:
            LogCompacted: ``lo < first_index()``.
            LogUnavailable: ``hi > last_index() + 1``.
        """
        ...

    def snapshot(self) -> Snapshot:
        """Return the most recent snapshot (index 0, like ``EMPTY_SNAPSHOT``, if none)."""
        ...


@final
class MemoryStorage:
    """An in-memory :class:`Storage`, for tests and the simulator."""

    def __init__(self, voters: Sequence[str] = ()) -> None:
        """Create an empty log.

        Args:
            voters: The voter set reported by :meth:`initial_state` until a snapshot is
                installed; empty means "use the config's voters".
        """
        self._hard_state = HardState(0, None, 0)
        self._voters = tuple(voters)
        self._snapshot = EMPTY_SNAPSHOT
        # _ents[0] is a dummy entry at the snapshot's index and term.
        self._ents: list[Entry] = [Entry(0, 0, EntryKind.NOOP)]

    def copy(self) -> MemoryStorage:
        """Return an independent copy: later writes to either do not show in the other."""
        other = MemoryStorage(self._voters)
        other._hard_state = self._hard_state
        other._snapshot = self._snapshot
        other._ents = list(self._ents)
        return other

    def initial_state(self) -> tuple[HardState, tuple[str, ...]]:
        """Return the saved hard state and the voters (the snapshot's, if it has any)."""
        return self._hard_state, self._snapshot.voters or self._voters

    def first_index(self) -> int:
        """Return the index of the first entry available."""
        return self._ents[0].index + 1

    def last_index(self) -> int:
        """Return the index of the last entry."""
        return self._ents[0].index + len(self._ents) - 1

    def term(self, index: int) -> int:
        """Return the term of the entry at ``index``; see :meth:`Storage.term`."""
        offset = self._ents[0].index
        if index < offset:
            raise LogCompacted(f"raft: index {index} compacted (first {offset + 1})")
        if index - offset >= len(self._ents):
            raise LogUnavailable(f"raft: index {index} unavailable (last {self.last_index()})")
        return self._ents[index - offset].term

    def entries(self, lo: int, hi: int) -> Sequence[Entry]:
        """Return the entries with ``lo <= index < hi``; see :meth:`Storage.entries`."""
        offset = self._ents[0].index
        if lo <= offset:
            raise LogCompacted(f"raft: index {lo} compacted (first {offset + 1})")
        if hi > self.last_index() + 1:
            raise LogUnavailable(f"raft: index {hi - 1} unavailable (last {self.last_index()})")
        return tuple(self._ents[lo - offset : hi - offset])

    def snapshot(self) -> Snapshot:
        """Return the most recent snapshot."""
        return self._snapshot

    def set_hard_state(self, hard_state: HardState) -> None:
        """Save the hard state."""
        self._hard_state = hard_state

    def append(self, entries: Sequence[Entry]) -> None:
        """Append entries, replacing any stored entry at their indexes and all after it.

        Entries at or before the snapshot are skipped.

        Raises:
            ValueError: The entries would leave a gap after the last stored index.
        """
        if not entries:
            return
        first = self.first_index()
        if entries[-1].index < first:
            return
        if entries[0].index < first:
            entries = entries[first - entries[0].index :]
        offset = entries[0].index - self._ents[0].index
        if offset > len(self._ents):
            raise ValueError(
                f"raft: missing log entries (last {self.last_index()}, "
                f"appending at {entries[0].index})"
            )
        del self._ents[offset:]
        self._ents.extend(entries)

    def apply_snapshot(self, snapshot: Snapshot) -> None:
        """Install a snapshot received from the leader, discarding the whole log.

        Raises:
            LogCompacted: The snapshot is not newer than the current one.
        """
        if snapshot.index <= self._snapshot.index:
            raise LogCompacted(f"raft: snapshot at {snapshot.index} is out of date")
        self._snapshot = snapshot
        self._ents = [Entry(snapshot.term, snapshot.index, EntryKind.NOOP)]

    def create_snapshot(self, snapshot: Snapshot) -> None:
        """Keep a snapshot made locally (:meth:`RaftNode.compact`); the log is unchanged.

        Raises:
            LogCompacted: The snapshot is not newer than the current one.
            LogUnavailable: The snapshot is beyond the last entry.
        """
        if snapshot.index <= self._snapshot.index:
            raise LogCompacted(f"raft: snapshot at {snapshot.index} is out of date")
        if snapshot.index > self.last_index():
            raise LogUnavailable(f"raft: snapshot at {snapshot.index} is beyond the log")
        self._snapshot = snapshot

    def compact(self, index: int) -> None:
        """Discard the entries up to and including ``index``, which a snapshot must cover.

        Raises:
            LogCompacted: ``index`` is already compacted.
            LogUnavailable: ``index`` is beyond the last entry.
            ValueError: ``index`` is beyond the latest snapshot.
        """
        offset = self._ents[0].index
        if index <= offset:
            raise LogCompacted(f"raft: index {index} already compacted")
        if index > self.last_index():
            raise LogUnavailable(f"raft: compact {index} beyond last {self.last_index()}")
        if index > self._snapshot.index:
            raise ValueError(f"raft: compact {index} beyond snapshot {self._snapshot.index}")
        term = self._ents[index - offset].term
        self._ents = [Entry(term, index, EntryKind.NOOP), *self._ents[index - offset + 1 :]]


# --------------------------------------------------------------------------- the log


@final
class _Unstable:
    """Entries (and a snapshot) not yet handed over to storage, starting at ``offset``."""

    __slots__ = ("entries", "offset", "snapshot")

    def __init__(self, offset: int) -> None:
        self.snapshot: Snapshot | None = None
        self.entries: list[Entry] = []
        self.offset = offset

    def maybe_first_index(self) -> int | None:
        return self.snapshot.index + 1 if self.snapshot is not None else None

    def maybe_last_index(self) -> int | None:
        if self.entries:
            return self.offset + len(self.entries) - 1
        if self.snapshot is not None:
            return self.snapshot.index
        return None

    def maybe_term(self, index: int) -> int | None:
        if index < self.offset:
            if self.snapshot is not None and self.snapshot.index == index:
                return self.snapshot.term
            return None
        last = self.maybe_last_index()
        if last is None or index > last:
            return None
        if self.snapshot is not None and index == self.snapshot.index and not self.entries:
            return self.snapshot.term
        return self.entries[index - self.offset].term

    def stable_to(self, index: int, term: int) -> None:
        if index < self.offset or self.maybe_term(index) != term:
            return
        del self.entries[: index + 1 - self.offset]
        self.offset = index + 1

    def stable_snap_to(self, index: int) -> None:
        if self.snapshot is not None and self.snapshot.index == index:
            self.snapshot = None

    def restore(self, snapshot: Snapshot) -> None:
        self.offset = snapshot.index + 1
        self.entries = []
        self.snapshot = snapshot

    def truncate_and_append(self, entries: Sequence[Entry]) -> None:
        after = entries[0].index
        if after == self.offset + len(self.entries):
            self.entries.extend(entries)
        elif after <= self.offset:
            # Replace everything unstable; storage's suffix from `after` is overwritten later.
            self.offset = after
            self.entries = list(entries)
        else:
            del self.entries[after - self.offset :]
            self.entries.extend(entries)

    def slice(self, lo: int, hi: int) -> list[Entry]:
        return self.entries[lo - self.offset : hi - self.offset]


@final
class _RaftLog:
    """The node's view of the log: storage plus the unstable tail, and commit/applied marks."""

    __slots__ = ("applied", "committed", "storage", "unstable")

    def __init__(self, storage: Storage) -> None:
        self.storage = storage
        first = storage.first_index()
        self.unstable = _Unstable(storage.last_index() + 1)
        self.committed = first - 1
        self.applied = first - 1

    def first_index(self) -> int:
        i = self.unstable.maybe_first_index()
        return i if i is not None else self.storage.first_index()

    def last_index(self) -> int:
        i = self.unstable.maybe_last_index()
        return i if i is not None else self.storage.last_index()

    def term(self, index: int) -> int | None:
        """Return the term at ``index``, or None if compacted or beyond the log."""
        if index < self.first_index() - 1 or index > self.last_index():
            return None
        t = self.unstable.maybe_term(index)
        if t is not None:
            return t
        try:
            return self.storage.term(index)
        except (LogCompacted, LogUnavailable):
            return None

    def stable_index(self) -> int:
        """Return the last index confirmed durable (handed out and advanced), 0 if unsure.

        While a snapshot waits to be persisted nothing is counted: storage still holds
        the log the snapshot replaces.
        """
        if self.unstable.snapshot is not None:
            return 0
        return self.unstable.offset - 1

    def last_term(self) -> int:
        t = self.term(self.last_index())
        if t is None:  # pragma: no cover - storage broke its contract
            raise AssertionError("raft: term of the last index is unavailable")
        return t

    def match_term(self, index: int, term: int) -> bool:
        return self.term(index) == term

    def is_up_to_date(self, last_index: int, term: int) -> bool:
        """Return whether a log ending at (last_index, term) is at least as new as ours."""
        our_term = self.last_term()
        return term > our_term or (term == our_term and last_index >= self.last_index())

    def slice(self, lo: int, hi: int) -> list[Entry]:
        """Return the entries with ``lo <= index < hi``.

        Raises:
            LogCompacted: ``lo`` is compacted.
        """
        if lo < self.first_index():
            raise LogCompacted(f"raft: index {lo} compacted")
        hi = min(hi, self.last_index() + 1)
        if lo >= hi:
            return []
        ents: list[Entry] = []
        offset = self.unstable.offset
        if lo < offset:
            ents.extend(self.storage.entries(lo, min(hi, offset)))
        if hi > offset:
            ents.extend(self.unstable.slice(max(lo, offset), hi))
        return ents

    def find_conflict(self, entries: Sequence[Entry]) -> int:
        """Return the index of the first entry that is new or conflicts, or 0 if none."""
        for e in entries:
            if not self.match_term(e.index, e.term):
                return e.index
        return 0

    def find_conflict_by_term(self, index: int, term: int) -> tuple[int, int]:
        """Return the last index <= ``index`` whose term is <= ``term``, with that term.

        An index whose term is unknown (compacted) is returned with term 0: it may match.
        """
        while index > 0:
            our_term = self.term(index)
            if our_term is None:
                return index, 0
            if our_term <= term:
                return index, our_term
            index -= 1
        return 0, 0

    def maybe_append(
        self, index: int, log_term: int, committed: int, entries: Sequence[Entry]
    ) -> int | None:
        """Append entries following (index, log_term) if that entry matches ours.

        Returns:
            The last index the leader's message vouches for, or None if the check failed.
        """
        if not self.match_term(index, log_term):
            return None
        last_new = index + len(entries)
        ci = self.find_conflict(entries)
        if ci:
            if ci <= self.committed:
                raise AssertionError(
                    f"raft: entry {ci} conflicts with committed entry (committed {self.committed})"
                )
            self.append(entries[ci - index - 1 :])
        self.commit_to(min(committed, last_new))
        return last_new

    def append(self, entries: Sequence[Entry]) -> int:
        if entries:
            if entries[0].index - 1 < self.committed:
                raise AssertionError(
                    f"raft: append at {entries[0].index} is behind commit {self.committed}"
                )
            self.unstable.truncate_and_append(entries)
        return self.last_index()

    def commit_to(self, index: int) -> None:
        if index > self.committed:
            if index > self.last_index():
                raise AssertionError(
                    f"raft: commit {index} is beyond the last index {self.last_index()}"
                )
            self.committed = index

    def maybe_commit(self, index: int, term: int) -> bool:
        """Commit up to ``index`` if that entry belongs to ``term`` (the leader's term)."""
        if index > self.committed and self.term(index) == term:
            self.commit_to(index)
            return True
        return False

    def applied_to(self, index: int) -> None:
        if index > self.committed or index < self.applied:
            raise AssertionError(
                f"raft: applied {index} out of range [{self.applied}, {self.committed}]"
            )
        self.applied = index

    def next_committed(self) -> list[Entry]:
        lo = max(self.applied + 1, self.first_index())
        if self.committed + 1 > lo:
            return self.slice(lo, self.committed + 1)
        return []

    def has_next_committed(self) -> bool:
        return self.committed + 1 > max(self.applied + 1, self.first_index())

    def restore(self, snapshot: Snapshot) -> None:
        self.committed = snapshot.index
        self.unstable.restore(snapshot)


# --------------------------------------------------------------------------- the node


@attrs.define
class _ReadRequest:
    index: int
    frm: str
    acks: set[str]


class _Poll(enum.Enum):
    PENDING = 0
    WON = 1
    LOST = 2


@final
class RaftNode:
    """One Raft peer as a pure state machine. Not thread-safe; drive it from one task.

    A node starts as a follower in the term saved in storage. It never raises for a stale
    or unknown message: it ignores it (logged at debug).
    """

    def __init__(self, config: Config, storage: Storage) -> None:
        """Create a node from its config and the state saved in storage.

        After a restart, ``applied_index`` starts at the storage snapshot's index, so the
        committed entries after it are handed out again in ``Ready.committed``.

        Args:
            config: How this node behaves.
            storage: The stable log; the caller keeps writing it as :class:`Ready` asks.

        Raises:
            ValueError: No voters in storage nor config, or the saved commit index is
                outside the log.
        """
        self._cfg = config
        self._id = config.id
        self._storage = storage
        self._rlog = _RaftLog(storage)
        hard_state, voters = storage.initial_state()
        self._voters: tuple[str, ...] = tuple(voters) or config.voters
        if not self._voters:
            raise ValueError("raft: no voters in storage nor config")
        self._term = 0
        self._vote: str | None = None
        self._lead: str | None = None
        self._role = Role.FOLLOWER
        self._prs: dict[str, Progress] = {}
        self._votes: dict[str, bool] = {}
        # Pre-vote requests that arrived while this node's leader lease ran: answered at
        # the first tick the lease has run out, dropped when the leader is heard from.
        self._deferred_pre_votes: dict[str, Message] = {}
        self._commit_broadcast_due = False
        self._msgs: list[Message] = []
        self._early_msgs: list[Message] = []
        self._read_states: list[ReadState] = []
        self._election_elapsed = 0
        self._heartbeat_elapsed = 0
        self._randomized_election_timeout = config.election_ticks
        self._lead_transferee: str | None = None
        self._pending_reads: dict[bytes, _ReadRequest] = {}
        self._read_queue: list[bytes] = []
        self._reads_awaiting_commit: list[Message] = []
        self._step_fn: Callable[[Message], None] = self._step_follower
        self._tick_fn: Callable[[], None] = self._tick_election
        if hard_state != HardState(0, None, 0):
            if not (self._rlog.committed <= hard_state.commit <= self._rlog.last_index()):
                raise ValueError(
                    f"raft: saved commit {hard_state.commit} is outside "
                    f"[{self._rlog.committed}, {self._rlog.last_index()}]"
                )
            self._rlog.committed = hard_state.commit
            self._term = hard_state.term
            self._vote = hard_state.vote
        self._become_follower(self._term, None)
        self._prev_soft = self._soft_state()
        self._prev_hard = self._hard_state()
        _log.info(
            "node_started",
            node=self._id,
            term=self._term,
            commit=self._rlog.committed,
            applied=self._rlog.applied,
            last_index=self._rlog.last_index(),
            voters=self._voters,
        )

    # ------------------------------------------------------------------ properties

    @property
    def id(self) -> str:
        """This node's id."""
        return self._id

    @property
    def term(self) -> int:
        """The current term."""
        return self._term

    @property
    def vote(self) -> str | None:
        """Whom this node voted for in the current term, if anyone."""
        return self._vote

    @property
    def role(self) -> Role:
        """The current role."""
        return self._role

    @property
    def leader(self) -> str | None:
        """The leader of the current term as far as this node knows, or None."""
        return self._lead

    @property
    def voters(self) -> tuple[str, ...]:
        """The voter set."""
        return self._voters

    @property
    def commit_index(self) -> int:
        """The highest index known to be committed."""
        return self._rlog.committed

    @property
    def applied_index(self) -> int:
        """The highest index the caller confirmed applied (through :meth:`advance`)."""
        return self._rlog.applied

    @property
    def last_index(self) -> int:
        """The index of the last entry in the log (stable or not)."""
        return self._rlog.last_index()

    @property
    def first_index(self) -> int:
        """The index of the first entry still in the log (after the latest snapshot)."""
        return self._rlog.first_index()

    @property
    def lead_transferee(self) -> str | None:
        """The target of the leadership transfer in progress, if any (leader only)."""
        return self._lead_transferee

    @property
    def election_elapsed(self) -> int:
        """Ticks since the election timer was last reset."""
        return self._election_elapsed

    @property
    def randomized_election_timeout(self) -> int:
        """The current election timeout in ticks, in [election_ticks, 2 * election_ticks)."""
        return self._randomized_election_timeout

    @property
    def has_commit_broadcast_due(self) -> bool:
        """Whether this leader's next tick tells the followers a new commit index.

        Only with ``Config.defer_commit_broadcast``; a driver that sleeps through idle
        ticks must wake for the next one.
        """
        return self._commit_broadcast_due

    @property
    def has_deferred_pre_votes(self) -> bool:
        """Whether pre-vote requests wait for this node's leader lease to run out."""
        return bool(self._deferred_pre_votes)

    def progress(self) -> dict[str, Progress]:
        """Return the leader's view of every voter's log (empty unless leader); read only."""
        return dict(self._prs) if self._role is Role.LEADER else {}

    def log_entries(self, lo: int, hi: int) -> list[Entry]:
        """Return the entries with ``lo <= index < hi``, stable or not.

        Raises:
            LogCompacted: ``lo < first_index``.
        """
        return self._rlog.slice(lo, hi)

    def log_term(self, index: int) -> int | None:
        """Return the term of the entry at ``index``, or None if compacted or absent."""
        return self._rlog.term(index)

    # ------------------------------------------------------------------ inputs

    def tick(self) -> None:
        """Advance logical time by one tick: maybe campaign, heartbeat or step down."""
        self._tick_fn()

    def campaign(self) -> None:
        """Start an election now (with a pre-vote round first when ``pre_vote`` is on).

        Does nothing on a leader or on a node that is not a voter.
        """
        self._hup(transfer=False)

    def peer_down(self, peer: str) -> None:
        """The shell lost ``peer``: its connection closed and could not be made again (the
        peer's process died and its operating system refused the redial), or the
        transport's own heartbeat declared it unreachable.

        A follower whose leader is ``peer`` stops counting itself in that leader's lease
        and, with ``campaign_on_leader_loss`` and ``pre_vote`` on, campaigns after
        :meth:`leader_loss_delay` ticks instead of waiting out its election timeout
        (150-300 ms by default). A crashed leader is usually seen this way within a
        millisecond, so most of a crash failover's time goes. The delay is staggered by
        the follower's rank among the other voters, so the survivors start their
        pre-votes apart and do not refuse each other (``_competing_pre_vote``). Pending
        pre-votes deferred by the lease are answered at once.

        Nothing here can depose a leader that is alive: the campaign starts with a
        pre-vote, which a voter still in that leader's lease ignores (it has not lost its
        own connection). Only when ``pre_vote`` is off is an early campaign not attempted,
        since it would raise the term. A leader moves ``peer``'s progress from replicate
        to probe, as what was in flight may be lost (etcd's ``ReportUnreachable``).
        Anything else ignores the call.
        """
        if self._role is Role.LEADER:
            pr = self._prs.get(peer)
            if pr is not None and pr.state is ProgressState.REPLICATE:
                pr.become_probe()
            return
        cfg = self._cfg
        if (
            self._role is not Role.FOLLOWER
            or self._lead != peer
            or not (cfg.campaign_on_leader_loss and cfg.pre_vote)
        ):
            return
        self._lead = None
        delay = self.leader_loss_delay(peer)
        if delay is not None:
            self._randomized_election_timeout = min(
                self._randomized_election_timeout, self._election_elapsed + delay
            )
        _log.info("leader_lost", node=self._id, term=self._term, leader=peer, campaign_in=delay)
        if self._deferred_pre_votes:
            self._answer_deferred_pre_votes()

    def leader_loss_delay(self, leader: str) -> int | None:
        """Ticks after which this node campaigns once it has lost ``leader`` (``peer_down``).

        ``1 + stagger * rank``, where ``rank`` is this node's place among the other
        voters in sorted order and ``stagger`` is ``max(2, election_ticks // 8)``: with
        10 ms ticks the survivors of a three-node group start 10 ms apart at least, far
        more than a pre-vote round trip. ``None`` for a node that is not a voter.
        """
        others = sorted(v for v in self._voters if v != leader)
        if self._id not in others:
            return None
        return 1 + max(2, self._cfg.election_ticks // 8) * others.index(self._id)

    def propose(self, data: bytes) -> int:
        """Append a command to the log, to be committed and applied on every node.

        Args:
            data: The command, opaque to Raft.

        Returns:
            The index assigned to the entry. The entry may still be lost if this node loses
            leadership before it commits; watch ``Ready.committed`` for that index and term.

        Raises:
            NotLeader: This node is not the leader (``leader_hint`` names the known leader).
            ProposalDropped: A leadership transfer is in progress.
        """
        if self._role is not Role.LEADER:
            raise NotLeader(self._lead)
        if self._lead_transferee is not None:
            raise ProposalDropped(
                f"raft: leadership transfer to {self._lead_transferee} in progress"
            )
        index = self._append_entry(EntryKind.NORMAL, data)
        self._bcast_append()
        return index

    def transfer_leader(self, to: str) -> None:
        """Hand leadership to ``to``: stop taking proposals, catch it up, tell it to campaign.

        On a follower the request is forwarded to the leader. The transfer is abandoned if
        it has not finished within an election timeout; a new request replaces an older one.

        Raises:
            NotLeader: No leader is known to forward the request to.
        """
        if self._role is Role.LEADER:
            self._handle_transfer(to)
        elif self._lead is not None:
            self._send(
                Message(MsgType.TRANSFER_LEADER, self._id, self._lead, 0, context=to.encode())
            )
        else:
            raise NotLeader(None)

    def read_index(self, context: bytes) -> None:
        """Request a linearizable read; a ReadState with ``context`` appears in a later Ready.

        It appears once the leader has committed an entry of its term and a quorum confirmed
        it is still leader. ``context`` must be unique among reads in flight. The request is
        silently dropped if leadership changes first: callers retry after a timeout.

        Raises:
            NotLeader: No leader is known (a follower forwards the request to its leader).
        """
        msg = Message(MsgType.READ_INDEX, self._id, self._id, 0, context=context)
        if self._role is Role.LEADER:
            self._handle_read_index(msg)
        elif self._lead is not None:
            self._send(attrs.evolve(msg, to=self._lead))
        else:
            raise NotLeader(None)

    def step(self, msg: Message) -> None:
        """Handle a message from another node. Stale or unexpected messages are ignored."""
        if msg.to != self._id:
            _log.debug("message_ignored", node=self._id, reason="wrong_recipient", to=msg.to)
            return
        if msg.term == 0:
            pass  # forwarded local request: no term check
        elif msg.term > self._term:
            if msg.type in (MsgType.VOTE, MsgType.PRE_VOTE):
                force = msg.context == CAMPAIGN_TRANSFER
                if not force and self._in_lease():
                    if msg.type is MsgType.PRE_VOTE:
                        self._deferred_pre_votes[msg.frm] = msg
                    _log.info(
                        "vote_ignored",
                        node=self._id,
                        term=self._term,
                        candidate=msg.frm,
                        candidate_term=msg.term,
                        type=msg.type.name,
                        leader=self._lead,
                        remaining_ticks=self._cfg.election_ticks - self._election_elapsed,
                    )
                    return
            if msg.type is MsgType.PRE_VOTE:
                pass  # never change term for a pre-vote
            elif msg.type is MsgType.PRE_VOTE_RESP and not msg.reject:
                pass  # the pre-candidate bumps its term once it has a quorum
            elif msg.type in (MsgType.APPEND, MsgType.HEARTBEAT, MsgType.SNAPSHOT):
                self._become_follower(msg.term, msg.frm)
            else:
                self._become_follower(msg.term, None)
        elif msg.term < self._term:
            if (self._cfg.check_quorum or self._cfg.pre_vote) and msg.type in (
                MsgType.HEARTBEAT,
                MsgType.APPEND,
            ):
                # A stale leader (e.g. after a partition) learns our term and steps down.
                self._send(Message(MsgType.APPEND_RESP, self._id, msg.frm, self._term))
            elif msg.type is MsgType.PRE_VOTE:
                self._send(
                    Message(MsgType.PRE_VOTE_RESP, self._id, msg.frm, self._term, reject=True)
                )
            else:
                _log.debug(
                    "message_ignored",
                    node=self._id,
                    term=self._term,
                    reason="stale_term",
                    frm=msg.frm,
                    msg_term=msg.term,
                )
            return

        if msg.type in (MsgType.VOTE, MsgType.PRE_VOTE):
            self._handle_vote_request(msg)
        else:
            self._step_fn(msg)

    # ------------------------------------------------------------------ ready/advance

    def _soft_state(self) -> SoftState:
        return SoftState(self._lead, self._role, self._term)

    def _hard_state(self) -> HardState:
        return HardState(self._term, self._vote, self._rlog.committed)

    def has_ready(self) -> bool:
        """Return whether :meth:`ready` has anything for the caller to handle."""
        u = self._rlog.unstable
        return bool(
            self._msgs
            or self._early_msgs
            or u.entries
            or u.snapshot is not None
            or self._read_states
            or self._soft_state() != self._prev_soft
            or self._hard_state() != self._prev_hard
            or self._rlog.has_next_committed()
        )

    def ready(self) -> Ready:
        """Return the work to do now; see :class:`Ready` for the order.

        Messages and read states are handed out once; entries, hard state, snapshot and
        committed entries are handed out again until :meth:`advance` confirms them, so call
        :meth:`advance` with this Ready before asking for the next one.
        """
        soft = self._soft_state()
        hard = self._hard_state()
        rd = Ready(
            soft_state=soft if soft != self._prev_soft else None,
            hard_state=hard if hard != self._prev_hard else None,
            entries=tuple(self._rlog.unstable.entries),
            snapshot=self._rlog.unstable.snapshot,
            committed=tuple(self._rlog.next_committed()),
            messages=tuple(self._msgs),
            read_states=tuple(self._read_states),
            early_messages=tuple(self._early_msgs),
        )
        self._prev_soft = soft
        self._msgs = []
        self._early_msgs = []
        self._read_states = []
        return rd

    def advance(self, rd: Ready) -> None:
        """Confirm that ``rd`` was handled: persisted, sent and applied.

        On a leader, the entries ``rd`` persisted now count towards a commit (as the
        leader's own acknowledgement); a commit this allows shows in the next Ready.

        Args:
            rd: The batch last returned by :meth:`ready`.
        """
        if rd.hard_state is not None:
            self._prev_hard = rd.hard_state
        applied = 0
        if rd.snapshot is not None:
            applied = rd.snapshot.index
        if rd.committed:
            applied = rd.committed[-1].index
        if applied > self._rlog.applied:
            self._rlog.applied_to(applied)
        if rd.entries:
            last = rd.entries[-1]
            self._rlog.unstable.stable_to(last.index, last.term)
        if rd.snapshot is not None:
            self._rlog.unstable.stable_snap_to(rd.snapshot.index)
        # The leader's self-acknowledgement: only what is durable here counts.
        if (
            rd.entries
            and self._role is Role.LEADER
            and self._prs[self._id].maybe_update(self._rlog.stable_index())
            and self._maybe_commit()
        ):
            self._commit_advanced()

    def compact(self, index: int, data: bytes) -> Snapshot:
        """Make a snapshot of the state machine at ``index``, for log compaction.

        Call it after the application captured its state (``data``) with everything up to
        ``index`` applied. The caller then saves the snapshot and discards the log up to
        ``index`` (``MemoryStorage.create_snapshot`` then ``compact``). A follower that
        needs the discarded entries later receives this snapshot instead.

        Returns:
            The snapshot, with the term of the entry at ``index`` and the voter set.

        Raises:
            LogCompacted: ``index`` is not after the current snapshot.
            ValueError: ``index`` is beyond ``applied_index``.
        """
        if index > self._rlog.applied:
            raise ValueError(f"raft: compact {index} beyond applied {self._rlog.applied}")
        current = self._storage.snapshot().index
        term = self._rlog.term(index)
        if index <= current or term is None:
            raise LogCompacted(f"raft: compact {index} is not after snapshot {current}")
        _log.info("snapshot_created", node=self._id, term=self._term, index=index)
        return Snapshot(index, term, self._voters, data)

    # ------------------------------------------------------------------ roles

    def _reset(self, term: int) -> None:
        if term != self._term:
            self._term = term
            self._vote = None
        self._lead = None
        self._election_elapsed = 0
        self._heartbeat_elapsed = 0
        self._randomized_election_timeout = self._cfg.election_ticks + self._cfg.rng.randrange(
            self._cfg.election_ticks
        )
        self._lead_transferee = None
        self._votes = {}
        self._deferred_pre_votes = {}
        self._commit_broadcast_due = False
        last = self._rlog.last_index()
        self._prs = {}
        for v in self._voters:
            pr = Progress(last + 1, self._cfg.max_inflight)
            if v == self._id:
                pr.match = self._rlog.stable_index()  # unpersisted entries never count
                pr.recent_active = True
            self._prs[v] = pr
        self._pending_reads = {}
        self._read_queue = []
        self._reads_awaiting_commit = []

    def _become_follower(self, term: int, lead: str | None) -> None:
        self._reset(term)
        self._step_fn, self._tick_fn = self._step_follower, self._tick_election
        self._lead = lead
        self._role = Role.FOLLOWER
        _log.info("became_follower", node=self._id, term=self._term, leader=lead)

    def _become_pre_candidate(self) -> None:
        if self._role is Role.LEADER:
            raise AssertionError("raft: invalid transition [leader -> pre-candidate]")
        # A pre-candidate keeps its term and vote; the vote tally resets, and the round
        # lasts one fresh randomized timeout (two pre-candidates that stay pending do not
        # keep timing out in step).
        self._step_fn, self._tick_fn = self._step_candidate, self._tick_election
        self._votes = {}
        self._lead = None
        self._election_elapsed = 0
        self._randomized_election_timeout = self._cfg.election_ticks + self._cfg.rng.randrange(
            self._cfg.election_ticks
        )
        self._role = Role.PRE_CANDIDATE
        _log.info("became_pre_candidate", node=self._id, term=self._term)

    def _become_candidate(self) -> None:
        if self._role is Role.LEADER:
            raise AssertionError("raft: invalid transition [leader -> candidate]")
        self._reset(self._term + 1)
        self._step_fn, self._tick_fn = self._step_candidate, self._tick_election
        self._vote = self._id
        self._role = Role.CANDIDATE
        _log.info("became_candidate", node=self._id, term=self._term)

    def _become_leader(self) -> None:
        if self._role is Role.FOLLOWER:
            raise AssertionError("raft: invalid transition [follower -> leader]")
        self._reset(self._term)
        self._step_fn, self._tick_fn = self._step_leader, self._tick_heartbeat
        self._lead = self._id
        self._role = Role.LEADER
        self._prs[self._id].become_replicate()
        _log.info("became_leader", node=self._id, term=self._term)
        # The no-op commits the new term, and with it every earlier entry (Figure 8).
        self._append_entry(EntryKind.NOOP, b"")
        self._bcast_append()

    def _retry_soon(self) -> None:
        """Campaign again within ``[1, election_ticks]`` ticks after a pre-vote refusal.

        A voter refuses a pre-vote outright (one in its leader lease ignores it instead)
        when its log is more up to date, or when it timed out at the same moment and is
        a pre-candidate itself (``_competing_pre_vote``). In that second case, with the
        leader dead, two followers refuse each other and neither can win: each waited
        out a whole round, a fresh randomized timeout of 150-300 ms by default, which
        made such failovers the slowest of all. A pre-vote round changes no term and no
        vote, so trying again sooner disrupts no one; the new draw keeps the two apart.
        (If the refuser's log was more up to date it wins its own election meanwhile,
        and its first message resets this timeout.) On a follower that lost the round
        the timeout counts from now; on a pre-candidate still waiting for other answers
        it only ever shortens the round.
        """
        retry = 1 + self._cfg.rng.randrange(self._cfg.election_ticks)
        if self._role is Role.PRE_CANDIDATE:
            retry = min(self._randomized_election_timeout, self._election_elapsed + retry)
        self._randomized_election_timeout = retry

    def _promotable(self) -> bool:
        return self._id in self._voters

    def _in_lease(self) -> bool:
        """Whether this node heard from a leader within the minimum election timeout."""
        return (
            (self._cfg.check_quorum or self._cfg.pre_vote)
            and self._lead is not None
            and self._election_elapsed < self._cfg.election_ticks
        )

    # ------------------------------------------------------------------ ticks

    def _tick_election(self) -> None:
        self._election_elapsed += 1
        if self._promotable() and self._election_elapsed >= self._randomized_election_timeout:
            self._election_elapsed = 0
            self._hup(transfer=False)
        if self._deferred_pre_votes and not self._in_lease():
            self._answer_deferred_pre_votes()

    def _answer_deferred_pre_votes(self) -> None:
        """Answer the pre-vote requests ignored while the leader lease ran.

        A follower ignores a pre-vote while it heard from its leader within the minimum
        election timeout (leader stickiness). When the leader has died, the first
        follower to time out asks the other one, whose lease may still run for a tick:
        both last heard the leader at about the same instant, but each counts ticks at
        its own phase, and their timeouts are drawn separately, so the asker may be one
        tick ahead. Ignoring it for good would cost the asker a whole new randomized
        timeout (or wait for the other follower's own timeout); instead the request is
        kept and handled, like a fresh one, at the first tick without a lease, and
        dropped as soon as the leader is heard from again (it is alive after all). A
        pre-vote changes no term and no vote, so answering it late is as safe as
        answering a request sent again. This runs after this node's own timeout check,
        so a node that times out in the same tick answers as a pre-candidate of this
        tick (see ``_competing_pre_vote``), as it would have answered a request that
        arrived then. (Restarting this node's timer when it grants, so that it does not
        campaign against the asker, was tried: a five-node property test then found a
        schedule that never settled on a leader.)
        """
        pending, self._deferred_pre_votes = self._deferred_pre_votes, {}
        for msg in pending.values():
            _log.info(
                "deferred_pre_vote_answered", node=self._id, term=self._term, candidate=msg.frm
            )
            self.step(msg)

    def _tick_heartbeat(self) -> None:
        self._heartbeat_elapsed += 1
        self._election_elapsed += 1
        if self._election_elapsed >= self._cfg.election_ticks:
            self._election_elapsed = 0
            if self._cfg.check_quorum and not self._quorum_active():
                _log.info("stepped_down", node=self._id, term=self._term, reason="lost_quorum")
                self._become_follower(self._term, None)
                return
            if self._lead_transferee is not None:
                _log.info(
                    "leader_transfer_aborted",
                    node=self._id,
                    term=self._term,
                    to=self._lead_transferee,
                    reason="timeout",
                )
                self._lead_transferee = None
        for peer, pr in self._prs.items():
            if pr.state is ProgressState.SNAPSHOT:
                pr.snapshot_ticks += 1
                if pr.snapshot_ticks > self._cfg.election_ticks:
                    # No acknowledgement: assume it was lost, probe (and resend) again.
                    _log.info(
                        "snapshot_timed_out",
                        node=self._id,
                        term=self._term,
                        to=peer,
                        index=pr.pending_snapshot,
                    )
                    pr.pending_snapshot = 0
                    pr.become_probe()
        if self._commit_broadcast_due:
            self._bcast_append()
        if self._heartbeat_elapsed >= self._cfg.heartbeat_ticks:
            self._heartbeat_elapsed = 0
            self._bcast_heartbeat()

    def _quorum_active(self) -> bool:
        active = 0
        for v, pr in self._prs.items():
            if v == self._id or pr.recent_active:
                active += 1
            if v != self._id:
                pr.recent_active = False
        return active >= self._quorum()

    def _quorum(self) -> int:
        return len(self._voters) // 2 + 1

    # ------------------------------------------------------------------ elections

    def _hup(self, *, transfer: bool) -> None:
        if self._role is Role.LEADER:
            _log.debug("campaign_ignored", node=self._id, term=self._term, reason="leader")
            return
        if not self._promotable():
            _log.warning("campaign_ignored", node=self._id, term=self._term, reason="not_a_voter")
            return
        if self._cfg.pre_vote and not transfer:
            self._campaign(pre=True, transfer=False)
        else:
            self._campaign(pre=False, transfer=transfer)

    def _campaign(self, *, pre: bool, transfer: bool) -> None:
        if pre:
            self._become_pre_candidate()
            vote_type, term = MsgType.PRE_VOTE, self._term + 1
        else:
            self._become_candidate()
            vote_type, term = MsgType.VOTE, self._term
        if self._poll(self._id, granted=True) is _Poll.WON:
            # A single voter wins on its own vote.
            if pre:
                self._campaign(pre=False, transfer=transfer)
            else:
                self._become_leader()
            return
        last_index, last_term = self._rlog.last_index(), self._rlog.last_term()
        context = CAMPAIGN_TRANSFER if transfer else b""
        for v in self._voters:
            if v != self._id:
                self._send(
                    Message(
                        vote_type,
                        self._id,
                        v,
                        term,
                        log_term=last_term,
                        index=last_index,
                        context=context,
                    )
                )

    def _poll(self, frm: str, *, granted: bool) -> _Poll:
        self._votes.setdefault(frm, granted)
        yes = sum(1 for v in self._voters if self._votes.get(v) is True)
        no = sum(1 for v in self._voters if self._votes.get(v) is False)
        if yes >= self._quorum():
            return _Poll.WON
        if no > len(self._voters) - self._quorum():
            return _Poll.LOST
        return _Poll.PENDING

    def _handle_vote_request(self, msg: Message) -> None:
        resp_type = MsgType.PRE_VOTE_RESP if msg.type is MsgType.PRE_VOTE else MsgType.VOTE_RESP
        can_vote = (
            self._vote == msg.frm
            or (self._vote is None and self._lead is None)
            or (msg.type is MsgType.PRE_VOTE and msg.term > self._term)
        )
        if can_vote and self._competing_pre_vote(msg):
            # Both would win the pre-vote, then split the vote: keep our round.
            self._send(Message(resp_type, self._id, msg.frm, self._term, reject=True))
            _log.info(
                "vote_rejected",
                node=self._id,
                term=self._term,
                candidate=msg.frm,
                type=msg.type.name,
                vote=self._vote,
                reason="own_pre_campaign",
            )
        elif can_vote and self._rlog.is_up_to_date(msg.index, msg.log_term):
            # The granted response carries the request's term, so a pre-candidate counts it.
            self._send(Message(resp_type, self._id, msg.frm, msg.term))
            if msg.type is MsgType.VOTE:
                self._election_elapsed = 0
                self._vote = msg.frm
            _log.info(
                "vote_granted",
                node=self._id,
                term=self._term,
                candidate=msg.frm,
                type=msg.type.name,
            )
        else:
            self._send(Message(resp_type, self._id, msg.frm, self._term, reject=True))
            _log.info(
                "vote_rejected",
                node=self._id,
                term=self._term,
                candidate=msg.frm,
                type=msg.type.name,
                vote=self._vote,
            )

    def _competing_pre_vote(self, msg: Message) -> bool:
        """Whether ``msg`` is a pre-vote that competes with our own pre-campaign of this tick.

        A pre-candidate that asked for pre-votes for the same next term within the
        current tick (its timer fired while the peer's request was in flight or queued
        behind it) refuses a peer whose log is not more up to date than its own. Granting
        it would let both win their pre-votes, both become candidates and split the real
        vote (each votes for itself), which costs another election timeout and a term.
        Refusing is one-sided unless both timers fired within the same tick: the older
        pre-candidate grants the younger one, which wins. Safety does not depend on it
        (refusing a vote never does), and liveness keeps resting on randomized timeouts:
        the window is one tick per round, and each round draws a fresh timeout, so a
        pre-candidate that cannot win never blocks a peer for long. Votes (not pre-votes)
        are unaffected.
        """
        if (
            msg.type is not MsgType.PRE_VOTE
            or self._role is not Role.PRE_CANDIDATE
            or msg.term != self._term + 1
            or self._election_elapsed > 0
        ):
            return False
        our_term, our_index = self._rlog.last_term(), self._rlog.last_index()
        more_up_to_date = msg.log_term > our_term or (
            msg.log_term == our_term and msg.index > our_index
        )
        return not more_up_to_date

    # ------------------------------------------------------------------ role steps

    def _heard_from_leader(self, leader: str) -> None:
        self._election_elapsed = 0
        self._lead = leader
        if self._deferred_pre_votes:
            self._deferred_pre_votes = {}

    def _step_follower(self, msg: Message) -> None:
        t = msg.type
        if t is MsgType.APPEND:
            self._heard_from_leader(msg.frm)
            self._handle_append(msg)
        elif t is MsgType.HEARTBEAT:
            self._heard_from_leader(msg.frm)
            self._handle_heartbeat(msg)
        elif t is MsgType.SNAPSHOT:
            self._heard_from_leader(msg.frm)
            self._handle_snapshot(msg)
        elif t is MsgType.TIMEOUT_NOW:
            _log.info("transfer_campaign_started", node=self._id, term=self._term, frm=msg.frm)
            self._hup(transfer=True)
        elif t is MsgType.READ_INDEX_RESP:
            self._read_states.append(ReadState(msg.index, msg.context))
        else:
            _log.debug("message_ignored", node=self._id, term=self._term, type=t.name)

    def _step_candidate(self, msg: Message) -> None:
        t = msg.type
        my_resp = MsgType.PRE_VOTE_RESP if self._role is Role.PRE_CANDIDATE else MsgType.VOTE_RESP
        if t is MsgType.APPEND:
            self._become_follower(msg.term, msg.frm)
            self._handle_append(msg)
        elif t is MsgType.HEARTBEAT:
            self._become_follower(msg.term, msg.frm)
            self._handle_heartbeat(msg)
        elif t is MsgType.SNAPSHOT:
            self._become_follower(msg.term, msg.frm)
            self._handle_snapshot(msg)
        elif t is my_resp:
            result = self._poll(msg.frm, granted=not msg.reject)
            if result is _Poll.WON:
                if self._role is Role.PRE_CANDIDATE:
                    self._campaign(pre=False, transfer=False)
                else:
                    self._become_leader()
            elif result is _Poll.LOST:
                _log.info("election_lost", node=self._id, term=self._term)
                pre = self._role is Role.PRE_CANDIDATE
                self._become_follower(self._term, None)
                if pre:
                    self._retry_soon()
            elif msg.reject and self._role is Role.PRE_CANDIDATE:
                self._retry_soon()
        else:
            _log.debug("message_ignored", node=self._id, term=self._term, type=t.name)

    def _step_leader(self, msg: Message) -> None:
        t = msg.type
        if t is MsgType.TRANSFER_LEADER:
            self._handle_transfer(msg.context.decode())
            return
        if t is MsgType.READ_INDEX:
            self._handle_read_index(msg)
            return
        pr = self._prs.get(msg.frm)
        if pr is None:
            _log.debug("message_ignored", node=self._id, term=self._term, reason="unknown_peer")
            return
        if t is MsgType.APPEND_RESP:
            pr.recent_active = True
            if msg.reject:
                self._handle_append_reject(msg, pr)
            else:
                self._handle_append_ack(msg, pr)
        elif t is MsgType.HEARTBEAT_RESP:
            pr.recent_active = True
            pr.probe_sent = False
            if pr.state is ProgressState.REPLICATE and pr.inflights.full():
                pr.inflights.free_first_one()
            if pr.match < self._rlog.last_index():
                self._maybe_send_append(msg.frm, send_if_empty=True)
            if msg.context:
                self._handle_read_ack(msg)
        else:
            _log.debug("message_ignored", node=self._id, term=self._term, type=t.name)

    # ------------------------------------------------------------------ replication

    def _append_entry(self, kind: EntryKind, data: bytes) -> int:
        index = self._rlog.last_index() + 1
        self._rlog.append([Entry(self._term, index, kind, data)])
        # Not acknowledged by ourselves yet: :meth:`advance` does, once it is durable.
        return index

    def _maybe_commit(self) -> bool:
        matches = sorted((self._prs[v].match for v in self._voters), reverse=True)
        if not self._rlog.maybe_commit(matches[self._quorum() - 1], self._term):
            return False
        if self._reads_awaiting_commit and self._committed_in_term():
            waiting, self._reads_awaiting_commit = self._reads_awaiting_commit, []
            for m in waiting:
                self._handle_read_index(m)
        return True

    def _committed_in_term(self) -> bool:
        return self._rlog.term(self._rlog.committed) == self._term

    def _commit_advanced(self) -> None:
        if self._cfg.defer_commit_broadcast:
            self._commit_broadcast_due = True
        else:
            self._bcast_append()

    def _bcast_append(self) -> None:
        # Every follower that is not paused gets an APPEND, carrying the commit index; a
        # paused one learns it from the acknowledgement that unpauses it, or a heartbeat.
        self._commit_broadcast_due = False
        for v in self._voters:
            if v != self._id:
                self._maybe_send_append(v, send_if_empty=True)

    def _maybe_send_append(self, to: str, *, send_if_empty: bool) -> bool:
        pr = self._prs[to]
        if pr.is_paused():
            return False
        prev_index = pr.next - 1
        prev_term = self._rlog.term(prev_index)
        entries: list[Entry] | None = None
        if prev_term is not None:
            try:
                entries = self._rlog.slice(pr.next, pr.next + self._cfg.max_entries_per_msg)
            except LogCompacted:
                entries = None
        if prev_term is None or entries is None:
            return self._send_snapshot(to, pr)
        if not entries and not send_if_empty:
            return False
        self._send(
            Message(
                MsgType.APPEND,
                self._id,
                to,
                self._term,
                log_term=prev_term,
                index=prev_index,
                entries=tuple(entries),
                commit=self._rlog.committed,
            )
        )
        if entries:
            pr.sent_entries(len(entries), entries[-1].index)
        else:
            pr.sent_entries(0, prev_index)
        return True

    def _send_snapshot(self, to: str, pr: Progress) -> bool:
        if not pr.recent_active:
            _log.debug("snapshot_deferred", node=self._id, term=self._term, to=to)
            return False
        snapshot = self._storage.snapshot()
        if snapshot.index == 0:  # pragma: no cover - storage broke its contract
            raise AssertionError("raft: entries were compacted but storage has no snapshot")
        pr.become_snapshot(snapshot.index)
        _log.info(
            "snapshot_sent",
            node=self._id,
            term=self._term,
            to=to,
            index=snapshot.index,
            snapshot_term=snapshot.term,
        )
        self._send(Message(MsgType.SNAPSHOT, self._id, to, self._term, snapshot=snapshot))
        return True

    def _handle_append_ack(self, msg: Message, pr: Progress) -> None:
        old_paused = pr.is_paused()
        if not pr.maybe_update(msg.index):
            return
        if pr.state is ProgressState.PROBE:
            pr.become_replicate()
        elif pr.state is ProgressState.SNAPSHOT and pr.match >= pr.pending_snapshot:
            pr.become_probe()
            pr.become_replicate()
        elif pr.state is ProgressState.REPLICATE:
            pr.inflights.free_le(msg.index)
        if self._maybe_commit():
            self._commit_advanced()
        elif old_paused:
            self._maybe_send_append(msg.frm, send_if_empty=True)
        while self._maybe_send_append(msg.frm, send_if_empty=False):
            pass
        if msg.frm == self._lead_transferee and pr.match == self._rlog.last_index():
            self._send_timeout_now(msg.frm)

    def _handle_append_reject(self, msg: Message, pr: Progress) -> None:
        _log.debug(
            "append_rejected",
            node=self._id,
            term=self._term,
            frm=msg.frm,
            index=msg.index,
            hint=msg.reject_hint,
            hint_term=msg.log_term,
        )
        next_probe = msg.reject_hint
        if msg.log_term > 0:
            # Skip every entry of ours whose term cannot match the follower's hint.
            next_probe, _ = self._rlog.find_conflict_by_term(msg.reject_hint, msg.log_term)
        if pr.maybe_decr_to(msg.index, next_probe):
            if pr.state is ProgressState.REPLICATE:
                pr.become_probe()
            self._maybe_send_append(msg.frm, send_if_empty=True)

    def _handle_append(self, msg: Message) -> None:
        if msg.index < self._rlog.committed:
            self._send(
                Message(
                    MsgType.APPEND_RESP, self._id, msg.frm, self._term, index=self._rlog.committed
                )
            )
            return
        last_new = self._rlog.maybe_append(msg.index, msg.log_term, msg.commit, msg.entries)
        if last_new is not None:
            self._send(Message(MsgType.APPEND_RESP, self._id, msg.frm, self._term, index=last_new))
            return
        # Fast backtracking: point the leader at our last entry whose term could match.
        hint_index = min(msg.index, self._rlog.last_index())
        hint_index, hint_term = self._rlog.find_conflict_by_term(hint_index, msg.log_term)
        _log.debug(
            "append_refused",
            node=self._id,
            term=self._term,
            index=msg.index,
            log_term=msg.log_term,
            hint=hint_index,
            hint_term=hint_term,
        )
        self._send(
            Message(
                MsgType.APPEND_RESP,
                self._id,
                msg.frm,
                self._term,
                index=msg.index,
                reject=True,
                reject_hint=hint_index,
                log_term=hint_term,
            )
        )

    def _bcast_heartbeat(self) -> None:
        context = self._read_queue[-1] if self._read_queue else b""
        for v in self._voters:
            if v != self._id:
                pr = self._prs[v]
                self._send(
                    Message(
                        MsgType.HEARTBEAT,
                        self._id,
                        v,
                        self._term,
                        commit=min(pr.match, self._rlog.committed),
                        context=context,
                    )
                )

    def _handle_heartbeat(self, msg: Message) -> None:
        self._rlog.commit_to(msg.commit)
        self._send(
            Message(MsgType.HEARTBEAT_RESP, self._id, msg.frm, self._term, context=msg.context)
        )

    def _handle_snapshot(self, msg: Message) -> None:
        snapshot = msg.snapshot
        if snapshot is None:
            _log.debug("message_ignored", node=self._id, term=self._term, reason="no_snapshot")
            return
        if self._restore(snapshot):
            _log.info(
                "snapshot_restored",
                node=self._id,
                term=self._term,
                index=snapshot.index,
                snapshot_term=snapshot.term,
            )
            index = self._rlog.last_index()
        else:
            _log.info(
                "snapshot_ignored",
                node=self._id,
                term=self._term,
                index=snapshot.index,
                commit=self._rlog.committed,
            )
            index = self._rlog.committed
        self._send(Message(MsgType.APPEND_RESP, self._id, msg.frm, self._term, index=index))

    def _restore(self, snapshot: Snapshot) -> bool:
        if snapshot.index <= self._rlog.committed:
            return False
        if self._id not in snapshot.voters:
            return False
        if self._rlog.match_term(snapshot.index, snapshot.term):
            # We already hold the snapshot's last entry: just fast-forward the commit.
            self._rlog.commit_to(snapshot.index)
            return False
        self._rlog.restore(snapshot)
        self._voters = snapshot.voters
        return True

    # ------------------------------------------------------------------ transfer

    def _handle_transfer(self, to: str) -> None:
        if self._lead_transferee is not None:
            if self._lead_transferee == to:
                _log.info(
                    "leader_transfer_ignored",
                    node=self._id,
                    term=self._term,
                    to=to,
                    reason="in_progress",
                )
                return
            _log.info(
                "leader_transfer_aborted",
                node=self._id,
                term=self._term,
                to=self._lead_transferee,
                reason="replaced",
            )
            self._lead_transferee = None
        if to == self._id:
            _log.debug("leader_transfer_ignored", node=self._id, term=self._term, reason="self")
            return
        pr = self._prs.get(to)
        if pr is None:
            _log.info(
                "leader_transfer_ignored", node=self._id, term=self._term, to=to, reason="unknown"
            )
            return
        self._election_elapsed = 0  # the transfer must finish within one election timeout
        self._lead_transferee = to
        _log.info("leader_transfer_started", node=self._id, term=self._term, to=to)
        if pr.match == self._rlog.last_index():
            self._send_timeout_now(to)
        else:
            self._maybe_send_append(to, send_if_empty=True)

    def _send_timeout_now(self, to: str) -> None:
        _log.info("timeout_now_sent", node=self._id, term=self._term, to=to)
        self._send(Message(MsgType.TIMEOUT_NOW, self._id, to, self._term))

    # ------------------------------------------------------------------ read index

    def _handle_read_index(self, msg: Message) -> None:
        if len(self._voters) == 1:
            self._respond_read(msg.frm, self._rlog.committed, msg.context)
            return
        if not self._committed_in_term():
            # The leader's commit index may be stale until its no-op commits.
            self._reads_awaiting_commit.append(msg)
            return
        if msg.context in self._pending_reads:
            _log.debug("read_index_ignored", node=self._id, term=self._term, reason="duplicate")
            return
        self._pending_reads[msg.context] = _ReadRequest(self._rlog.committed, msg.frm, {self._id})
        self._read_queue.append(msg.context)
        self._bcast_heartbeat()

    def _handle_read_ack(self, msg: Message) -> None:
        req = self._pending_reads.get(msg.context)
        if req is None:
            return
        req.acks.add(msg.frm)
        if sum(1 for v in self._voters if v in req.acks) < self._quorum():
            return
        # Confirmed: this read and every read queued before it.
        i = self._read_queue.index(msg.context)
        done, self._read_queue = self._read_queue[: i + 1], self._read_queue[i + 1 :]
        for ctx in done:
            r = self._pending_reads.pop(ctx)
            self._respond_read(r.frm, r.index, ctx)

    def _respond_read(self, to: str, index: int, context: bytes) -> None:
        if to == self._id:
            self._read_states.append(ReadState(index, context))
        else:
            self._send(
                Message(
                    MsgType.READ_INDEX_RESP, self._id, to, self._term, index=index, context=context
                )
            )

    # ------------------------------------------------------------------ output

    def _send(self, msg: Message) -> None:
        if msg.type in EARLY_MESSAGE_TYPES:
            self._early_msgs.append(msg)
        else:
            self._msgs.append(msg)
