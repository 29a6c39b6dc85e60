"""Durable Raft storage on a segmented record file.

:class:`DurableStorage` implements the core's :class:`~runtime.raft.core.Storage` protocol
plus the writes a driver makes for each :class:`~runtime.raft.core.Ready`, with the same
answers and errors as :class:`~runtime.raft.core.MemoryStorage`. Group commit is the
driver's (:mod:`runtime.raft.driver`): one fsync covers every write of a turn.

**Layout.** A directory holds the log segments (``*.wal``, see
:mod:`runtime.raft.records`) and the latest snapshot in a file ``snapshot``. The log is
one stream of msgpack records, replayed in order on open:

* ``[0, term, index, kind, data]`` -- an entry. It replaces any entry at ``index`` and
  every entry after it (this is how Raft's truncation of a conflicting suffix is stored:
  no rewrite, the newer record wins on replay).
* ``[1, term, vote, commit]`` -- the hard state; the latest one wins.
* ``[2, index, term]`` -- compaction: entries up to ``index`` are gone, ``term`` is the
  term of ``index``.
* ``[3, index, term]`` -- a snapshot was installed: the whole log is discarded.

Every segment starts with the current hard state and compaction point, so deleting old
segments never loses them. The hard state lives in the log rather than in a file of its
own so that one fsync covers entries and hard state together.

**Durability contract.**

* :meth:`DurableStorage.append` and :meth:`DurableStorage.set_hard_state` change what the
  storage answers at once, but are durable only when a later :meth:`DurableStorage.sync`
  (or the function from :meth:`DurableStorage.begin_sync`) returns. A crash before then
  keeps a prefix of those writes, in order: if a hard state survives, every entry
  appended before it survived too.
* :meth:`DurableStorage.apply_snapshot`, :meth:`DurableStorage.create_snapshot` and
  :meth:`DurableStorage.compact` are durable when they return, together with every
  earlier write (they fsync). The snapshot file is replaced atomically (temp file,
  fsync, rename, directory fsync). Old segments are deleted only once the compaction
  that makes them unnecessary is durable, and only up to the snapshot's index.
* :meth:`DurableStorage.open` returns everything that was durable, and answers as the
  storage did at that point. One exception, after a crash inside ``apply_snapshot``
  (snapshot saved, log not yet reset): if the old log holds the snapshot's last entry
  with the snapshot's term, it is kept (it matches the snapshot, as Raft allows);
  otherwise it is discarded. The same check makes a Raft precondition visible: an entry
  at or below the snapshot's index is committed and must never be replaced (the core
  never does; ``MemoryStorage`` would accept it, this storage discards such a log on
  reopen).
* A write or fsync failure fails the storage for good (:class:`~runtime.raft.records.
  LogFailed`); reopen to recover. Damage that a crash cannot explain raises
  :class:`~runtime.raft.records.LogCorrupted` from ``open`` or from reads.

Memory: the storage keeps two ``array('q')`` per entry (term and record position), 16 bytes
per entry; entries themselves are read from the files (page cache) on demand.
"""

from __future__ import annotations

import os
from array import array
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, final

import msgpack
import structlog

from .core import (
    Entry,
    EntryKind,
    HardState,
    LogCompacted,
    LogUnavailable,
    Snapshot,
)
from .records import (
    DEFAULT_SEGMENT_BYTES,
    FsyncFn,
    LogCorrupted,
    RecordLog,
    read_atomic,
    write_atomic,
)

__all__ = ["DurableStorage"]

log = structlog.get_logger("runtime.raft.durable")

_ENTRY, _HARD_STATE, _COMPACT, _RESET = 0, 1, 2, 3
_SNAPSHOT_FILE = "snapshot"
_EMPTY_SNAPSHOT = Snapshot(0, 0, (), b"")
_KINDS = {int(k): k for k in EntryKind}


def _pack(obj: list[Any]) -> bytes:
    packed: bytes = msgpack.packb(obj, use_bin_type=True)
    return packed


@final
class DurableStorage:
    """Raft storage in a directory: the core's ``Storage`` plus the driver's writes.

    Answers exactly as :class:`~runtime.raft.core.MemoryStorage` given the same calls;
    what is durable when is in the module docstring. Not thread-safe, except that the
    function returned by :meth:`begin_sync` may run in a worker thread (see there).
    """

    def __init__(self, directory: Path, voters: tuple[str, ...], fsync: FsyncFn) -> None:
        """Internal: use :meth:`DurableStorage.open`."""
        self._dir = directory
        self._voters = voters
        self._fsync = fsync
        self._hard_state = HardState(0, None, 0)
        self._snapshot = _EMPTY_SNAPSHOT
        self._base_index = 0  # the last compacted entry (the dummy of MemoryStorage)
        self._base_term = 0
        self._terms = array("q")  # terms of entries base+1 .. last
        self._pos = array("q")  # their record positions
        self._run_start = 1  # index of _terms[0]: base + 1 except while replaying a gap
        self._log: RecordLog | None = None

    # -- opening -------------------------------------------------------------------------

    @classmethod
    def open(
        cls,
        directory: Path | str,
        *,
        voters: Sequence[str] = (),
        segment_bytes: int = DEFAULT_SEGMENT_BYTES,
        fsync: FsyncFn = os.fsync,
        repair: bool = False,
    ) -> DurableStorage:
        """Open (creating if needed) the storage in ``directory`` and recover it.

        Args:
            directory: where the segments and the snapshot live; created if missing.
            voters: reported by :meth:`initial_state` while no snapshot with voters is
                installed (as ``MemoryStorage(voters)``); not stored, pass them each time.
            segment_bytes: size at which the log starts a new segment; whole segments
                are the unit of deletion after compaction.
            fsync: makes a file descriptor durable (inject a counter or fake in tests).
            repair: truncate at a damaged record instead of raising (see
                :meth:`RecordLog.open`); data after it is lost.

        Raises:
            LogCorrupted: the files hold damage a crash cannot explain.
            OSError: the directory cannot be read or written.
        """
        directory = Path(directory)
        self = cls(directory, tuple(voters), fsync)
        rlog = RecordLog.open(
            directory,
            visit=self._replay,
            segment_bytes=segment_bytes,
            fsync=fsync,
            segment_header=self._segment_header,
            repair=repair,
        )
        self._log = rlog
        try:
            (directory / (_SNAPSHOT_FILE + ".tmp")).unlink(missing_ok=True)
            stored = read_atomic(directory / _SNAPSHOT_FILE)
            if stored is not None:
                index, term, snap_voters, data = msgpack.unpackb(stored)
                self._snapshot = Snapshot(index, term, tuple(snap_voters), data)
            self._reconcile()
        except BaseException:
            rlog.close()
            raise
        log.info(
            "raft_storage_opened",
            path=str(directory),
            first_index=self.first_index(),
            last_index=self.last_index(),
            snapshot_index=self._snapshot.index,
            term=self._hard_state.term,
        )
        return self

    def _replay(self, pos: int, payload: bytes) -> None:
        try:
            self._replay_record(pos, msgpack.unpackb(payload))
        except (ValueError, TypeError, IndexError) as exc:
            raise LogCorrupted(f"undecodable record ({exc})", self._dir) from exc

    def _replay_record(self, pos: int, rec: list[Any]) -> None:
        tag = rec[0]
        if tag == _ENTRY:
            term, index = rec[1], rec[2]
            if index <= self._base_index:
                return
            start = self._run_start
            if start <= index <= start + len(self._terms):
                del self._terms[index - start :], self._pos[index - start :]
            else:
                # Not joined to what came before: start a new run. This is legal only in
                # a segment whose compaction record is stale (older segments deleted) and a
                # later record compacts up to the run; _reconcile checks that it did.
                self._run_start = index
                del self._terms[:], self._pos[:]
            self._terms.append(term)
            self._pos.append(pos)
        elif tag == _HARD_STATE:
            self._hard_state = HardState(rec[1], rec[2], rec[3])
        elif tag == _COMPACT:
            self._compact_to(rec[1], rec[2])
        elif tag == _RESET:
            self._reset_to(rec[1], rec[2])
        else:
            raise LogCorrupted(f"unknown record tag {tag}", self._dir, None)

    def _reconcile(self) -> None:
        """Check the replayed log against the snapshot; see the module's contract."""
        if self._terms and self._run_start != self._base_index + 1:
            raise LogCorrupted(
                f"entries {self._run_start}.. do not follow entry {self._base_index}", self._dir
            )
        self._run_start = self._base_index + 1
        snap = self._snapshot
        if snap.index > self._base_index:
            last = self.last_index()
            if snap.index > last or self._terms[snap.index - self._base_index - 1] != snap.term:
                log.warning(
                    "snapshot_install_completed",
                    path=str(self._dir),
                    index=snap.index,
                    discarded_entries=len(self._terms),
                )
                self._reset_to(snap.index, snap.term)
        elif snap.index < self._base_index and self._base_index > 0:
            raise LogCorrupted(
                f"log compacted to {self._base_index} beyond snapshot {snap.index}", self._dir
            )

    def _segment_header(self) -> list[bytes]:
        hs = self._hard_state
        return [
            _pack([_HARD_STATE, hs.term, hs.vote, hs.commit]),
            _pack([_COMPACT, self._base_index, self._base_term]),
        ]

    def _compact_to(self, index: int, term: int) -> None:
        if index < self._base_index:
            return  # a stale segment header
        drop = max(0, min(index + 1 - self._run_start, len(self._terms)))
        del self._terms[:drop], self._pos[:drop]
        self._run_start += drop
        if not self._terms:
            self._run_start = index + 1
        self._base_index, self._base_term = index, term

    def _reset_to(self, index: int, term: int) -> None:
        del self._terms[:], self._pos[:]
        self._base_index, self._base_term = index, term
        self._run_start = index + 1

    @property
    def _rlog(self) -> RecordLog:
        if self._log is None:
            raise ValueError("the storage is closed")
        return self._log

    # -- Storage protocol ----------------------------------------------------------------

    def initial_state(self) -> tuple[HardState, tuple[str, ...]]:
        """Return the saved hard state and the voters (the snapshot's, if it has any)."""
        return self._hard_state, self._snapshot.voters or self._voters

    def first_index(self) -> int:
        """Return the index of the first entry available (1 for a fresh log)."""
        return self._base_index + 1

    def last_index(self) -> int:
        """Return the index of the last entry (``first_index() - 1`` when empty)."""
        return self._base_index + len(self._terms)

    def term(self, index: int) -> int:
        """Return the term of the entry at ``index`` (from memory, no IO).

        Raises:
            LogCompacted: ``index < first_index() - 1``.
            LogUnavailable: ``index > last_index()``.
        """
        base = self._base_index
        if index < base:
            raise LogCompacted(f"raft: index {index} compacted (first {base + 1})")
        if index == base:
            return self._base_term
        if index - base > len(self._terms):
            raise LogUnavailable(f"raft: index {index} unavailable (last {self.last_index()})")
        return self._terms[index - base - 1]

    def entries(self, lo: int, hi: int) -> Sequence[Entry]:
        """Return the entries with ``lo <= index < hi``, read from the segment files.

        Raises:
            LogCompacted: ``lo < first_index()``.
            LogUnavailable: ``hi > last_index() + 1``.
            LogCorrupted: a record no longer passes its CRC check.
        """
        base = self._base_index
        if lo <= base:
            raise LogCompacted(f"raft: index {lo} compacted (first {base + 1})")
        if hi > self.last_index() + 1:
            raise LogUnavailable(f"raft: index {hi - 1} unavailable (last {self.last_index()})")
        positions = self._pos[lo - base - 1 : hi - base - 1]
        out = []
        unpackb = msgpack.unpackb
        for expected, payload in enumerate(self._rlog.read_many(positions), lo):
            tag, term, index, kind, data = unpackb(payload)
            if tag != _ENTRY or index != expected:
                raise LogCorrupted(f"record for entry {expected} holds {index}", self._dir)
            out.append(Entry(term, index, _KINDS.get(kind) or EntryKind(kind), data))
        return tuple(out)

    def snapshot(self) -> Snapshot:
        """Return the most recent snapshot (index 0 and no data if none)."""
        return self._snapshot

    # -- writes --------------------------------------------------------------------------

    def append(self, entries: Sequence[Entry]) -> None:
        """Append entries, replacing any stored entry at their indexes and all after it.

        Entries at or before the compaction point are skipped. Durable after :meth:`sync`.

        Raises:
            ValueError: the entries would leave a gap after the last stored index.
            LogFailed: an earlier write or fsync failed.
        """
        if not entries:
            return
        first = self.first_index()
        if entries[-1].index < first:
            return
        if entries[0].index < first:
            entries = entries[first - entries[0].index :]
        keep = entries[0].index - first
        if keep > len(self._terms):
            raise ValueError(
                f"raft: missing log entries (last {self.last_index()}, "
                f"appending at {entries[0].index})"
            )
        positions = self._rlog.append_many(
            [_pack([_ENTRY, e.term, e.index, int(e.kind), e.data]) for e in entries]
        )
        del self._terms[keep:], self._pos[keep:]
        self._terms.extend(e.term for e in entries)
        self._pos.extend(positions)

    def set_hard_state(self, hard_state: HardState) -> None:
        """Save the hard state. Durable after :meth:`sync`, with every earlier append."""
        hs = hard_state
        self._rlog.append(_pack([_HARD_STATE, hs.term, hs.vote, hs.commit]))
        self._hard_state = hard_state

    def apply_snapshot(self, snapshot: Snapshot) -> None:
        """Install a snapshot received from the leader, discarding the whole log.

        Durable when this returns (the snapshot file is replaced atomically, then the
        reset of the log is fsynced and the old segments deleted).

        Raises:
            LogCompacted: the snapshot is not newer than the current one.
        """
        if snapshot.index <= self._snapshot.index:
            raise LogCompacted(f"raft: snapshot at {snapshot.index} is out of date")
        self._save_snapshot(snapshot)
        self._rlog.append(_pack([_RESET, snapshot.index, snapshot.term]))
        self._reset_to(snapshot.index, snapshot.term)
        self._rlog.sync()
        self._rlog.drop_before(1 << 62)

    def create_snapshot(self, snapshot: Snapshot) -> None:
        """Keep a snapshot made locally (``RaftNode.compact``); the log is unchanged.

        Durable when this returns (atomic replace of the snapshot file).

        Raises:
            LogCompacted: the snapshot is not newer than the current one.
            LogUnavailable: the snapshot is beyond the last entry.
        """
        if snapshot.index <= self._snapshot.index:
            raise LogCompacted(f"raft: snapshot at {snapshot.index} is out of date")
        if snapshot.index > self.last_index():
            raise LogUnavailable(f"raft: snapshot at {snapshot.index} is beyond the log")
        self._save_snapshot(snapshot)

    def compact(self, index: int) -> None:
        """Discard the entries up to and including ``index``, which a snapshot must cover.

        Durable when this returns, with every earlier write; then deletes the segments
        that hold only discarded entries.

        Raises:
            LogCompacted: ``index`` is already compacted.
            LogUnavailable: ``index`` is beyond the last entry.
            ValueError: ``index`` is beyond the latest snapshot.
        """
        base = self._base_index
        if index <= base:
            raise LogCompacted(f"raft: index {index} already compacted")
        if index > self.last_index():
            raise LogUnavailable(f"raft: compact {index} beyond last {self.last_index()}")
        if index > self._snapshot.index:
            raise ValueError(f"raft: compact {index} beyond snapshot {self._snapshot.index}")
        term = self._terms[index - base - 1]
        keep_from = self._pos[index - base] if index < self.last_index() else 1 << 62
        self._rlog.append(_pack([_COMPACT, index, term]))
        self._compact_to(index, term)
        self._rlog.sync()
        dropped = self._rlog.drop_before(keep_from)
        if dropped:
            log.info("segments_dropped", path=str(self._dir), count=dropped, index=index)

    def _save_snapshot(self, snap: Snapshot) -> None:
        payload = _pack([snap.index, snap.term, list(snap.voters), snap.data])
        write_atomic(self._dir / _SNAPSHOT_FILE, payload, self._fsync)
        self._snapshot = snap

    # -- durability ----------------------------------------------------------------------

    def sync(self) -> None:
        """Make every write so far durable (one fsync for entries and hard state).

        Raises:
            LogFailed: the fsync failed; the storage is failed from now on.
        """
        self._rlog.sync()

    def begin_sync(self) -> Callable[[], None]:
        """Start a sync; the returned function makes every write made before this call
        durable, and may run in a worker thread while this storage keeps being used on
        the owner's thread (the driver's fsync runs so). Call it exactly once.
        """
        return self._rlog.begin_sync()

    @property
    def directory(self) -> Path:
        """The storage's directory."""
        return self._dir

    def close(self) -> None:
        """Close the files without syncing. Idempotent."""
        if self._log is not None:
            self._log.close()
            self._log = None

    def __enter__(self) -> DurableStorage:
        """Return self."""
        return self

    def __exit__(self, *exc: object) -> None:
        """Close the storage (without syncing)."""
        self.close()
