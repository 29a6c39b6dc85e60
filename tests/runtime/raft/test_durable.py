"""DurableStorage answers as MemoryStorage does, keeps what was synced across reopen and
crashes (group commit is tested with the driver, in test_driver.py)."""

from __future__ import annotations

import os
import shutil
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from runtime.raft.core import (
    Entry,
    EntryKind,
    HardState,
    LogCompacted,
    LogUnavailable,
    MemoryStorage,
    Snapshot,
)
from runtime.raft.durable import DurableStorage
from runtime.raft.records import LogCorrupted, RecordLog, write_atomic

Storage = DurableStorage | MemoryStorage


def ents(lo: int, hi: int, term: int = 1) -> list[Entry]:
    """Entries lo..hi-1 of ``term``, each with distinct data."""
    return [Entry(term, i, EntryKind.NORMAL, f"e{i}t{term}".encode()) for i in range(lo, hi)]


def answers(s: Storage) -> dict[str, Any]:
    """Everything the core can ask of a storage, as one comparable value."""
    first, last = s.first_index(), s.last_index()
    out: dict[str, Any] = {
        "initial_state": s.initial_state(),
        "first": first,
        "last": last,
        "snapshot": s.snapshot(),
        "terms": [s.term(i) for i in range(first - 1, last + 1)],
        "entries": tuple(s.entries(first, last + 1)),
    }
    calls: list[tuple[str, Callable[[], object]]] = [
        ("term_below", lambda: s.term(first - 2)),
        ("term_above", lambda: s.term(last + 1)),
        ("entries_below", lambda: s.entries(first - 1, last + 1)),
        ("entries_above", lambda: s.entries(first, last + 2)),
    ]
    for name, call in calls:
        try:
            out[name] = call()
        except (LogCompacted, LogUnavailable) as exc:
            out[name] = type(exc)
    return out


def reopen(s: DurableStorage, **kwargs: Any) -> DurableStorage:
    """Close ``s`` (without syncing) and open its directory again."""
    s.close()
    return DurableStorage.open(s.directory, **kwargs)


class TestRoundTrip:
    def test_fresh_storage_answers_like_memory_storage(self, tmp_path: Path) -> None:
        """A new directory gives the answers of an empty MemoryStorage."""
        with DurableStorage.open(tmp_path / "new", voters=("a", "b")) as s:
            assert answers(s) == answers(MemoryStorage(("a", "b")))

    def test_synced_writes_survive_reopen(self, tmp_path: Path) -> None:
        """Entries, hard state and snapshot come back after close and open."""
        mem = MemoryStorage(("a",))
        s = DurableStorage.open(tmp_path, voters=("a",))
        for st_ in (mem, s):
            st_.append(ents(1, 11))
            st_.set_hard_state(HardState(3, "a", 7))
            st_.create_snapshot(Snapshot(5, 1, ("a", "b"), b"state"))
        s.sync()

        s = reopen(s, voters=("a",))

        assert answers(s) == answers(mem)
        s.close()

    def test_conflicting_suffix_is_replaced(self, tmp_path: Path) -> None:
        """Appending at an index already held replaces it and everything after it,
        also after reopen."""
        s = DurableStorage.open(tmp_path)
        s.append(ents(1, 11))
        s.append(ents(5, 7, term=2))
        s.sync()

        s = reopen(s)

        assert (s.last_index(), [s.term(i) for i in range(1, 7)]) == (6, [1, 1, 1, 1, 2, 2])
        assert ents(5, 7, term=2) == list(s.entries(5, 7))
        s.close()

    def test_gap_is_refused(self, tmp_path: Path) -> None:
        """Appending after a gap raises ValueError and writes nothing."""
        with DurableStorage.open(tmp_path) as s:
            s.append(ents(1, 3))
            with pytest.raises(ValueError, match="missing log entries"):
                s.append(ents(5, 6))

            assert s.last_index() == 2


class TestCompaction:
    def test_compact_drops_whole_segments_and_survives_reopen(self, tmp_path: Path) -> None:
        """After a snapshot and compact, old segments are deleted; reopen answers the same."""
        s = DurableStorage.open(tmp_path, segment_bytes=512)
        for i in range(1, 201, 10):
            s.append(ents(i, i + 10))
            s.set_hard_state(HardState(1, None, i + 9))
        s.sync()
        before = len(list(tmp_path.glob("*.wal")))
        s.create_snapshot(Snapshot(150, 1, ("a",), b"s"))

        s.compact(150)
        expected = answers(s)
        s = reopen(s, segment_bytes=512)

        assert expected == answers(s)
        assert (s.first_index(), s.last_index()) == (151, 200)
        assert len(list(tmp_path.glob("*.wal"))) < before
        s.close()

    def test_apply_snapshot_discards_log_durably(self, tmp_path: Path) -> None:
        """An installed snapshot replaces the whole log, and the reset is durable."""
        s = DurableStorage.open(tmp_path, segment_bytes=256)
        s.append(ents(1, 50))
        s.set_hard_state(HardState(2, "b", 10))
        s.apply_snapshot(Snapshot(100, 3, ("a", "b", "c"), b"snap"))
        s.append(ents(101, 103, term=3))
        s.sync()

        s = reopen(s, segment_bytes=256)

        assert (s.first_index(), s.last_index(), s.term(100)) == (101, 102, 3)
        assert (HardState(2, "b", 10), ("a", "b", "c")) == s.initial_state()
        assert len(list(tmp_path.glob("*.wal"))) == 1
        s.close()

    @pytest.mark.parametrize(("snap_term", "kept"), [(1, True), (2, False)])
    def test_crash_inside_apply_snapshot(self, tmp_path: Path, snap_term: int, kept: bool) -> None:
        """A snapshot saved without the log reset keeps a log that matches it at the
        snapshot's index, and discards one that does not."""
        s = DurableStorage.open(tmp_path)
        s.append(ents(1, 20))
        s.sync()
        s.close()
        snap = Snapshot(10, snap_term, ("a",), b"x")
        write_atomic(tmp_path / "snapshot", msgpack.packb([10, snap_term, ["a"], b"x"]))

        s = DurableStorage.open(tmp_path)

        assert snap == s.snapshot()
        assert ((1, 19) if kept else (11, 10)) == (s.first_index(), s.last_index())
        s.close()

    def test_snapshot_temp_file_left_by_crash_is_ignored(self, tmp_path: Path) -> None:
        """A crash between writing the new snapshot and renaming it keeps the old one."""
        s = DurableStorage.open(tmp_path)
        s.append(ents(1, 5))
        s.create_snapshot(Snapshot(2, 1, (), b"old"))
        s.close()
        (tmp_path / "snapshot.tmp").write_bytes(b"\x00partial")

        s = DurableStorage.open(tmp_path)

        assert s.snapshot().data == b"old"
        assert not (tmp_path / "snapshot.tmp").exists()
        s.close()


class TestCrash:
    @settings(max_examples=40, deadline=None)
    @given(
        ops=st.lists(
            st.one_of(
                st.tuples(st.just("append"), st.integers(0, 3), st.integers(1, 4)),
                st.tuples(st.just("hs"), st.integers(0, 5), st.integers(0, 40)),
            ),
            min_size=1,
            max_size=12,
        ),
        synced=st.integers(0, 12),
        cut=st.floats(0, 1),
    )
    def test_crash_keeps_synced_writes_and_a_prefix_of_the_rest(
        self, ops: list[tuple[str, int, int]], synced: int, cut: float
    ) -> None:
        """Cut the last segment anywhere after the last sync: reopen answers as the
        storage did after some write made since that sync."""
        with tempfile.TemporaryDirectory() as tmp:
            d = Path(tmp)
            s = DurableStorage.open(d)
            mem = MemoryStorage()
            states = [answers(mem)]
            synced = min(synced, len(ops))
            synced_size = 0
            seg = max(d.glob("*.wal"))
            for n, (op, a, b) in enumerate(ops):
                if n == synced:
                    s.sync()
                    synced_size = seg.stat().st_size
                    states = [answers(mem)]
                if op == "append":
                    lo = max(1, mem.last_index() + 1 - a)
                    batch = ents(lo, lo + 1, term=b)  # one record: boundaries are states
                    mem.append(batch)
                    s.append(batch)
                else:
                    hs = HardState(a, None if a % 2 else "x", b)
                    mem.set_hard_state(hs)
                    s.set_hard_state(hs)
                states.append(answers(mem))
            if synced == len(ops):
                s.sync()
                synced_size = seg.stat().st_size
                states = [answers(mem)]
            s.close()
            size = seg.stat().st_size
            os.truncate(seg, synced_size + int(cut * (size - synced_size)))

            with DurableStorage.open(d) as s:
                assert answers(s) in states


class StorageConformance(RuleBasedStateMachine):
    """The same calls on DurableStorage and MemoryStorage give the same answers, also
    after reopening the durable one."""

    def __init__(self) -> None:
        super().__init__()
        self.tmp = tempfile.mkdtemp()
        self.mem = MemoryStorage(("a", "b", "c"))
        self.dur = DurableStorage.open(self.tmp, voters=("a", "b", "c"), segment_bytes=300)

    def both(self, call: Callable[[Storage], None]) -> None:
        """Run ``call`` on both storages; they must raise the same error or none."""
        results: list[type[Exception] | None] = []
        for s in (self.mem, self.dur):
            try:
                call(s)
                results.append(None)
            except (LogCompacted, LogUnavailable, ValueError) as exc:
                results.append(type(exc))
        assert results[0] == results[1]

    @rule(back=st.integers(0, 6), n=st.integers(0, 6), term=st.integers(1, 9))
    def append(self, back: int, n: int, term: int) -> None:
        """Append n entries starting up to ``back`` entries before the end: they may
        conflict, or start before the compaction point. As in Raft, nothing the snapshot
        covers is replaced (those entries are committed; the core skips them)."""
        lo = max(1, self.mem.last_index() + 1 - back)
        snap = self.mem.snapshot().index
        if lo <= snap and self.mem.first_index() <= snap:
            lo = snap + 1
        batch = ents(lo, lo + n, term)
        self.both(lambda s: s.append(batch))

    @rule(gap=st.integers(2, 3))
    def append_after_gap(self, gap: int) -> None:
        """Appending after a gap fails on both."""
        lo = self.mem.last_index() + gap
        self.both(lambda s: s.append(ents(lo, lo + 1)))

    @rule(term=st.integers(0, 9), vote=st.sampled_from([None, "a", "b"]), commit=st.integers(0, 50))
    def set_hard_state(self, term: int, vote: str | None, commit: int) -> None:
        """Save a hard state."""
        self.both(lambda s: s.set_hard_state(HardState(term, vote, commit)))

    @rule(ahead=st.integers(-2, 3), data=st.binary(max_size=8))
    def create_snapshot(self, ahead: int, data: bytes) -> None:
        """Keep a local snapshot (possibly out of date or beyond the log)."""
        index = self.mem.last_index() - ahead
        term = (
            self.mem.term(index)
            if self.mem.first_index() - 1 <= index <= self.mem.last_index()
            else 1
        )
        snap = Snapshot(index, term, ("a", "b"), data)
        self.both(lambda s: s.create_snapshot(snap))

    @rule(back=st.integers(-1, 4))
    def compact(self, back: int) -> None:
        """Compact up to (or past) the snapshot."""
        index = self.mem.snapshot().index - back
        self.both(lambda s: s.compact(index))

    @rule(ahead=st.integers(-3, 10), term=st.integers(1, 9))
    def apply_snapshot(self, ahead: int, term: int) -> None:
        """Install a snapshot from a leader (possibly out of date)."""
        snap = Snapshot(self.mem.last_index() + ahead, term, ("c",), b"leader")
        self.both(lambda s: s.apply_snapshot(snap))

    @rule()
    def sync_and_reopen(self) -> None:
        """Everything synced comes back."""
        self.dur.sync()
        self.dur = reopen(self.dur, voters=("a", "b", "c"), segment_bytes=300)

    @invariant()
    def same_answers(self) -> None:
        """Both storages answer every question alike."""
        assert answers(self.mem) == answers(self.dur)

    def teardown(self) -> None:
        """Remove the directory."""
        self.dur.close()
        shutil.rmtree(self.tmp)


TestStorageConformance = StorageConformance.TestCase
TestStorageConformance.settings = settings(max_examples=40, stateful_step_count=30, deadline=None)


def counting_fsync(delay: float = 0.0) -> tuple[Callable[[int], None], list[int]]:
    """An fsync that counts its calls (and sleeps ``delay`` seconds, like a slow disk)."""
    calls: list[int] = []
    lock = threading.Lock()

    def fsync(fd: int) -> None:
        time.sleep(delay)
        os.fsync(fd)
        with lock:
            calls.append(fd)

    return fsync, calls


def test_damaged_entry_record_is_reported_on_read(tmp_path: Path) -> None:
    """A record damaged after open raises LogCorrupted from entries()."""
    with DurableStorage.open(tmp_path) as s:
        s.append(ents(1, 3))
        s.sync()
        seg = max(tmp_path.glob("*.wal"))
        data = bytearray(seg.read_bytes())
        data[-2] ^= 0xFF
        seg.write_bytes(bytes(data))

        with pytest.raises(LogCorrupted):
            s.entries(1, 3)


def test_undecodable_record_is_corruption(tmp_path: Path) -> None:
    """A record with a valid CRC that is not a storage record raises LogCorrupted."""
    with DurableStorage.open(tmp_path) as s:
        s.append(ents(1, 2))
        s.sync()
    with RecordLog.open(tmp_path) as rlog:
        rlog.append(b"\xc1 not msgpack")
        rlog.sync()

    with pytest.raises(LogCorrupted, match="undecodable"):
        DurableStorage.open(tmp_path)
