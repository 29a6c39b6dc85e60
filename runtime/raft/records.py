"""A durable, segmented file of checksummed records (synchronous file IO, no event loop).

This module knows nothing about Raft; :mod:`runtime.raft.durable` builds the Raft log on it.

**Record format.** Each record is a frame::

    length: u32 little-endian     number of payload bytes
    crc:    u32 little-endian     zlib.crc32 of the 4 length bytes, then of the payload
    payload: length bytes

The CRC covers the length field too, so a run of zero bytes (what an unwritten page reads
as after a crash) never parses as a valid empty record. CRC-32 (zlib) is used because it
is in the standard library and runs at memory speed; it detects every burst error up to
32 bits and random damage with probability 1 - 2**-32.

**Segments.** Records live in segment files named ``<seq:016x>.wal`` (``seq`` counts up
from 1, without gaps). Appends go to the last (active) segment; once it holds at least
``segment_bytes`` bytes the next append starts a new segment. A new segment begins with
the records returned by the ``segment_header`` callback (a caller uses this to repeat its
latest metadata so that dropping old segments never loses it). A record's *position* is
an ``int`` that encodes its segment and byte offset; positions grow with append order.

**Crash-safety contract.**

* :meth:`RecordLog.append` and :meth:`RecordLog.append_many` only write to the page
  cache. Nothing is durable until :meth:`RecordLog.sync` returns.
* When :meth:`RecordLog.sync` returns, every record appended before the call is on
  stable storage (the data is fsynced, and the directory is fsynced if a segment was
  created since the last sync), and :meth:`RecordLog.open` after any crash returns at
  least those records, in order.
* Records appended after the last completed ``sync`` may survive a crash in part: open
  then keeps a prefix of them.
* Rotation fsyncs the full segment before the next one is created, so every segment but
  the last is complete on disk. Deleting segments (:meth:`RecordLog.drop_before`) fsyncs
  the directory after each unlink, so the segments on disk are always consecutive.
* If a write or fsync fails the log is *failed*: every later call raises
  :class:`LogFailed` (after a failed fsync the kernel may have dropped the dirty pages,
  so retrying could report success for lost data). Reopen the directory to recover.

**Recovery policy** (:meth:`RecordLog.open`). Every segment is scanned and every CRC
checked. At the first record that does not parse (cut short, length out of range, CRC
mismatch), the log decides between two cases:

* *Torn tail*: the bad record is in the last segment and no valid frame starts anywhere
  after it. This is what an interrupted, never-acknowledged append looks like (a record
  cut anywhere, garbage or zeros after the last good record). The file is truncated at
  the bad record, the truncation is fsynced, and a ``torn_tail_truncated`` warning is
  logged. Everything before it is kept.
* *Corruption*: the bad record is in a segment other than the last, or a valid frame
  starts somewhere after it. Valid data after a damaged record means data that may have
  been acknowledged is damaged, so :class:`LogCorrupted` is raised rather than silently
  dropping it. ``open(..., repair=True)`` instead truncates at the bad record, deletes the
  later segments and logs ``corrupt_log_repaired`` (an operator's decision: data is lost).

One limitation: a filesystem that persists the pages of an unsynced append out of order
could leave a hole before a valid frame; open reports that as corruption (safe, but needs
``repair=True``). A payload that itself embeds a valid frame, cut inside, can do the same.

This class is not thread-safe, with one exception made for group commit: the function
returned by :meth:`RecordLog.begin_sync` may run in another thread while the owner keeps
appending (see its docstring).
"""

from __future__ import annotations

import itertools
import os
import re
import struct
import zlib
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Final, final

import attrs
import structlog

from ..errors import RegencyError

__all__ = [
    "DEFAULT_MAX_RECORD_BYTES",
    "DEFAULT_SEGMENT_BYTES",
    "LogCorrupted",
    "LogFailed",
    "RecordLog",
    "fsync_dir",
    "read_atomic",
    "write_atomic",
]

log = structlog.get_logger("runtime.raft.records")

_HEADER: Final = struct.Struct("<II")
_LENGTH: Final = struct.Struct("<I")
HEADER_BYTES: Final = _HEADER.size
DEFAULT_SEGMENT_BYTES: Final = 64 * 1024 * 1024
DEFAULT_MAX_RECORD_BYTES: Final = 64 * 1024 * 1024
_SEGMENT_NAME: Final = re.compile(r"^([0-9a-f]{16})\.wal$")
_OFFSET_BITS: Final = 40
_OFFSET_MASK: Final = (1 << _OFFSET_BITS) - 1
_READ_SPAN_BYTES: Final = 1 << 20

FsyncFn = Callable[[int], None]


class LogCorrupted(RegencyError):
    """Stored data is damaged in a way a crash cannot explain.

    Raised by :meth:`RecordLog.open` for a bad record followed by valid ones or a bad
    record in a segment that is not the last, for a missing segment, by reads whose CRC
    no longer matches, and by :func:`read_atomic` for a damaged file. ``path`` and
    ``offset`` locate the damage (``offset`` is ``None`` when it concerns a whole file).
    """

    def __init__(self, message: str, path: Path | str, offset: int | None = None) -> None:
        where = f"{path}" if offset is None else f"{path} at offset {offset}"
        super().__init__(f"{message} ({where})")
        self.path = Path(path)
        self.offset = offset


class LogFailed(RegencyError):
    """An earlier write or fsync failed, so the log refuses to go on.

    After a failed fsync the kernel may already have discarded the unwritten pages;
    retrying could report durability for data that is gone. Close the log and reopen the
    directory: recovery keeps what really reached the disk. The original ``OSError`` is
    the ``__cause__``.
    """


def frame(payload: bytes) -> bytes:
    """Return ``payload`` framed as one record (length, CRC, payload)."""
    length = _LENGTH.pack(len(payload))
    crc = zlib.crc32(payload, zlib.crc32(length))
    return length + _LENGTH.pack(crc) + payload


def fsync_dir(directory: Path | str, fsync: FsyncFn = os.fsync) -> None:
    """Fsync ``directory`` so that creations, renames and unlinks in it are durable."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fsync(fd)
    finally:
        os.close(fd)


def write_atomic(path: Path | str, payload: bytes, fsync: FsyncFn = os.fsync) -> None:
    """Replace the file ``path`` by one framed record holding ``payload``, atomically.

    Writes ``<path>.tmp``, fsyncs it, renames it over ``path`` and fsyncs the directory.
    When this returns the new content is durable. A crash at any point leaves either the
    old content or the new one at ``path`` (never a mix), plus possibly a stale
    ``.tmp`` file that :func:`read_atomic` ignores and the next write replaces.
    """
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        _write_all(fd, frame(payload), 0)
        fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    fsync_dir(path.parent, fsync)


def read_atomic(path: Path | str) -> bytes | None:
    """Return the payload stored by :func:`write_atomic` at ``path``, or ``None`` if absent.

    Raises:
        LogCorrupted: the file exists but is not exactly one valid record (it was fsynced
            before being renamed into place, so this is damage, not a torn write).
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    end, bad = _scan(data, DEFAULT_MAX_RECORD_BYTES * 16, None, 0)
    if bad or end != len(data) or end == 0:
        raise LogCorrupted("damaged file", path, 0 if end == 0 else end)
    return data[HEADER_BYTES:]


def position(seq: int, offset: int) -> int:
    """Encode a segment number and byte offset as a record position."""
    return (seq << _OFFSET_BITS) | offset


def segment_of(pos: int) -> int:
    """The segment number of a record position."""
    return pos >> _OFFSET_BITS


def _write_all(fd: int, data: bytes | bytearray | memoryview, offset: int) -> None:
    view = memoryview(data)
    while view:
        n = os.pwrite(fd, view, offset)
        view = view[n:]
        offset += n


def _parse_at(buf: bytes | memoryview, offset: int, max_record: int) -> int | None:
    """Return the end offset of a valid record at ``offset`` in ``buf``, else ``None``."""
    if offset + HEADER_BYTES > len(buf):
        return None
    length, crc = _HEADER.unpack_from(buf, offset)
    end: int = offset + HEADER_BYTES + length
    if length > max_record or end > len(buf):
        return None
    view = memoryview(buf)
    if zlib.crc32(view[offset + HEADER_BYTES : end], zlib.crc32(view[offset : offset + 4])) != crc:
        return None
    return end


def _scan(
    buf: bytes,
    max_record: int,
    visit: Callable[[int, bytes], None] | None,
    base: int,
) -> tuple[int, bool]:
    """Parse records from the start of ``buf``; return (end of valid prefix, bad record?)."""
    offset = 0
    size = len(buf)
    unpack = _HEADER.unpack_from
    crc32 = zlib.crc32
    while offset < size:
        start = offset + HEADER_BYTES
        if start > size:
            return offset, True
        length, crc = unpack(buf, offset)
        end = start + length
        if length > max_record or end > size:
            return offset, True
        payload = buf[start:end]
        if crc32(payload, crc32(buf[offset : start - 4])) != crc:
            return offset, True
        if visit is not None:
            visit(base | offset, payload)
        offset = end
    return offset, False


def _valid_frame_after(buf: bytes, bad: int, max_record: int) -> int | None:
    """Offset of the first valid frame starting after ``bad``, or ``None``."""
    if not buf[bad:].strip(b"\0"):
        return None
    for q in range(bad + 1, len(buf) - HEADER_BYTES + 1):
        if _parse_at(buf, q, max_record) is not None:
            return q
    return None


@attrs.define
class _Segment:
    seq: int
    path: Path
    fd: int
    size: int
    dirty: bool = False


@final
class RecordLog:
    """An append-only sequence of records in segment files; see the module docstring.

    Create with :meth:`RecordLog.open`. Use as a context manager or call :meth:`close`.
    """

    def __init__(
        self,
        directory: Path,
        segments: list[_Segment],
        *,
        segment_bytes: int,
        max_record_bytes: int,
        fsync: FsyncFn,
        segment_header: Callable[[], Iterable[bytes]] | None,
    ) -> None:
        """Internal: use :meth:`RecordLog.open`."""
        self._dir = directory
        self._segments = segments
        self._segment_bytes = segment_bytes
        self._max_record = max_record_bytes
        self._fsync = fsync
        self._segment_header = segment_header
        self._dir_dirty = False
        self._failed: BaseException | None = None
        self._closed = False

    # -- opening -------------------------------------------------------------------------

    @classmethod
    def open(
        cls,
        directory: Path | str,
        *,
        visit: Callable[[int, bytes], None] | None = None,
        segment_bytes: int = DEFAULT_SEGMENT_BYTES,
        max_record_bytes: int = DEFAULT_MAX_RECORD_BYTES,
        fsync: FsyncFn = os.fsync,
        segment_header: Callable[[], Iterable[bytes]] | None = None,
        repair: bool = False,
    ) -> RecordLog:
        """Open (creating if needed) the log in ``directory`` and recover it.

        Args:
            directory: holds the ``*.wal`` segment files; created if missing. Other files
                in it are left alone.
            visit: called as ``visit(position, payload)`` for every recovered record, in
                order, before this returns.
            segment_bytes: an append starts a new segment once the active one holds at
                least this many bytes.
            max_record_bytes: largest payload accepted; a stored length above it counts
                as a bad record.
            fsync: the function that makes a file descriptor durable (``os.fsync``;
                inject a counter or a fake in tests). Used for files and directories.
            segment_header: returns the records written at the start of each new segment.
            repair: truncate at the first bad record even when that is corruption (see
                the module docstring); logs ``corrupt_log_repaired``.

        Raises:
            LogCorrupted: a damaged record that is not a torn tail, or a missing segment.
            OSError: the directory or a segment cannot be read or written.
        """
        directory = Path(directory)
        if not directory.is_dir():
            directory.mkdir(parents=True, exist_ok=True)
            fsync_dir(directory.parent, fsync)
        found: list[tuple[int, Path]] = []
        for entry in directory.iterdir():
            m = _SEGMENT_NAME.match(entry.name)
            if m:
                found.append((int(m.group(1), 16), entry))
        found.sort()
        for (a, pa), (b, _) in itertools.pairwise(found):
            if b != a + 1:
                raise LogCorrupted(f"segment {a + 1:016x} is missing", pa)
        segments: list[_Segment] = []
        try:
            for i, (seq, path) in enumerate(found):
                last = i == len(found) - 1
                size, repaired = cls._recover_segment(
                    seq, path, last, max_record_bytes, visit, fsync, repair
                )
                fd = os.open(path, os.O_RDWR)
                segments.append(_Segment(seq, path, fd, size))
                if repaired:  # the later segments follow the damage: they go too
                    for _, later in reversed(found[i + 1 :]):
                        later.unlink()
                        fsync_dir(directory, fsync)
                    break
            self = cls(
                directory,
                segments,
                segment_bytes=segment_bytes,
                max_record_bytes=max_record_bytes,
                fsync=fsync,
                segment_header=segment_header,
            )
            if not segments:
                self._new_segment(1)
                self.sync()
        except BaseException:
            for seg in segments:
                os.close(seg.fd)
            raise
        return self

    @staticmethod
    def _recover_segment(
        seq: int,
        path: Path,
        last: bool,
        max_record: int,
        visit: Callable[[int, bytes], None] | None,
        fsync: FsyncFn,
        repair: bool,
    ) -> tuple[int, bool]:
        """Scan one segment; return its kept size and whether corruption was repaired."""
        buf = path.read_bytes()
        end, bad = _scan(buf, max_record, visit, position(seq, 0))
        if not bad:
            return end, False
        later = _valid_frame_after(buf, end, max_record)
        torn = last and later is None
        if not torn and not repair:
            reason = "damaged record before valid ones" if later is not None else "damaged record"
            if not last:
                reason += " in a segment that is not the last"
            raise LogCorrupted(reason, path, end)
        fd = os.open(path, os.O_RDWR)
        try:
            os.ftruncate(fd, end)
            fsync(fd)
        finally:
            os.close(fd)
        if torn:
            log.warning(
                "torn_tail_truncated", path=str(path), offset=end, dropped_bytes=len(buf) - end
            )
            return end, False
        log.error("corrupt_log_repaired", path=str(path), offset=end, dropped_bytes=len(buf) - end)
        return end, True

    # -- appending -----------------------------------------------------------------------

    def append(self, payload: bytes) -> int:
        """Append one record (not yet durable; see :meth:`sync`); return its position."""
        return self.append_many((payload,))[0]

    def append_many(self, payloads: Iterable[bytes]) -> list[int]:
        """Append records in order with as few writes as possible; return their positions.

        Nothing is durable until :meth:`sync` returns. May start a new segment (which
        fsyncs the full one first).

        Raises:
            ValueError: a payload is larger than ``max_record_bytes`` (nothing is written).
            LogFailed: an earlier write or fsync failed, or this one did.
        """
        self._check()
        batch = list(payloads)
        for payload in batch:
            if len(payload) > self._max_record:
                raise ValueError(
                    f"record of {len(payload)} bytes exceeds max_record_bytes={self._max_record}"
                )
        positions: list[int] = []
        buf = bytearray()
        seg = self._segments[-1]
        start = seg.size
        for payload in batch:
            if start + len(buf) >= self._segment_bytes and start + len(buf) > 0:
                self._flush(seg, start, buf)
                buf = bytearray()
                self._rotate()
                seg = self._segments[-1]
                start = seg.size
            positions.append(position(seg.seq, start + len(buf)))
            buf += frame(payload)
        self._flush(seg, start, buf)
        return positions

    def _flush(self, seg: _Segment, start: int, buf: bytearray) -> None:
        if not buf:
            return
        try:
            _write_all(seg.fd, buf, start)
        except OSError as exc:
            try:
                os.ftruncate(seg.fd, start)
            except OSError:
                self._failed = exc
                raise LogFailed(f"write to {seg.path} failed") from exc
            raise
        seg.size = start + len(buf)
        seg.dirty = True

    def _rotate(self) -> None:
        old = self._segments[-1]
        if old.dirty:
            self._fsync_or_fail(old.fd)
            old.dirty = False
        self._new_segment(old.seq + 1)

    def _new_segment(self, seq: int) -> None:
        path = self._dir / f"{seq:016x}.wal"
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
        self._segments.append(_Segment(seq, path, fd, 0))
        self._dir_dirty = True
        if self._segment_header is not None:
            header = b"".join(frame(p) for p in self._segment_header())
            self._flush(self._segments[-1], 0, bytearray(header))

    def _fsync_or_fail(self, fd: int) -> None:
        try:
            self._fsync(fd)
        except OSError as exc:
            self._failed = exc
            raise LogFailed("fsync failed") from exc

    # -- syncing -------------------------------------------------------------------------

    def sync(self) -> None:
        """Make every record appended so far durable; see the module's contract.

        Raises:
            LogFailed: the fsync failed (the log is failed from now on).
        """
        self.begin_sync()()

    def begin_sync(self) -> Callable[[], None]:
        """Start a sync: return a function that, when it returns, made durable every
        record appended before this call.

        The returned function touches only file descriptors of its own (duplicates), so it
        may run in a worker thread while this log keeps being appended to, rotated or
        compacted on the owner's thread; records appended after ``begin_sync`` are left
        for the next sync. Call it exactly once. It raises :class:`LogFailed` if an fsync
        fails, and the log is failed from then on.
        """
        self._check()
        fds = [os.dup(seg.fd) for seg in self._segments if seg.dirty]
        for seg in self._segments:
            seg.dirty = False
        if self._dir_dirty:
            fds.append(os.open(self._dir, os.O_RDONLY | os.O_DIRECTORY))
            self._dir_dirty = False

        def run() -> None:
            try:
                for fd in fds:
                    try:
                        self._fsync(fd)
                    except OSError as exc:
                        self._failed = exc
                        raise LogFailed("fsync failed") from exc
            finally:
                for fd in fds:
                    os.close(fd)

        return run

    # -- reading -------------------------------------------------------------------------

    def read(self, pos: int) -> bytes:
        """Return the payload of the record at position ``pos``.

        Raises:
            LogCorrupted: the record no longer passes its CRC check.
            KeyError: ``pos`` is in a segment that was dropped or never existed.
        """
        return self.read_many((pos,))[0]

    def read_many(self, positions: Sequence[int]) -> list[bytes]:
        """Return the payloads at ``positions`` (in the order given), reading nearby
        records of one segment with a single system call.

        Raises:
            LogCorrupted: a record no longer passes its CRC check.
            KeyError: a position is in a segment that was dropped or never existed.
        """
        self._check()
        out: list[bytes] = []
        i = 0
        n = len(positions)
        unpack = _HEADER.unpack_from
        crc32 = zlib.crc32
        while i < n:
            seq = segment_of(positions[i])
            seg = self._segment(seq)
            lo = positions[i] & _OFFSET_MASK
            j = i + 1
            while (
                j < n
                and segment_of(positions[j]) == seq
                and lo <= (positions[j] & _OFFSET_MASK) < lo + _READ_SPAN_BYTES
            ):
                j += 1
            hi_off = max(p & _OFFSET_MASK for p in positions[i:j])
            head = os.pread(seg.fd, HEADER_BYTES, hi_off)
            if len(head) < HEADER_BYTES:
                raise LogCorrupted("record beyond end of segment", seg.path, hi_off)
            (length,) = _LENGTH.unpack_from(head)
            buf = os.pread(seg.fd, hi_off + HEADER_BYTES + length - lo, lo)
            size = len(buf)
            for p in positions[i:j]:
                off = (p & _OFFSET_MASK) - lo
                start = off + HEADER_BYTES
                if start <= size:
                    length, crc = unpack(buf, off)
                    payload = buf[start : start + length]
                    if len(payload) == length and crc32(payload, crc32(buf[off : off + 4])) == crc:
                        out.append(payload)
                        continue
                raise LogCorrupted("record fails its check on read", seg.path, off + lo)
            i = j
        return out

    def _segment(self, seq: int) -> _Segment:
        first = self._segments[0].seq
        k = seq - first
        if k < 0 or k >= len(self._segments):
            raise KeyError(f"segment {seq:016x} is not in the log")
        return self._segments[k]

    # -- compaction ----------------------------------------------------------------------

    @property
    def active_segment(self) -> int:
        """The number of the segment new records go to."""
        return self._segments[-1].seq

    @property
    def first_segment(self) -> int:
        """The number of the oldest segment still kept."""
        return self._segments[0].seq

    def drop_before(self, pos: int) -> int:
        """Delete every whole segment older than the one holding position ``pos``.

        Never deletes the active segment. Deletes oldest first and fsyncs the directory
        after each unlink, so a crash leaves a consecutive run of segments. The deletion
        is durable when this returns. Returns the number of segments deleted.
        """
        self._check()
        keep = min(segment_of(pos), self.active_segment)
        dropped = 0
        while self._segments[0].seq < keep:
            seg = self._segments.pop(0)
            os.close(seg.fd)
            seg.path.unlink()
            fsync_dir(self._dir, self._fsync)
            dropped += 1
        return dropped

    # -- lifecycle -----------------------------------------------------------------------

    def _check(self) -> None:
        if self._closed:
            raise ValueError("the record log is closed")
        if self._failed is not None:
            raise LogFailed("an earlier write or fsync failed; reopen the log") from self._failed

    @property
    def directory(self) -> Path:
        """The directory holding the segments."""
        return self._dir

    @property
    def size_bytes(self) -> int:
        """Total bytes of all segments kept."""
        return sum(seg.size for seg in self._segments)

    def close(self) -> None:
        """Close the segment files without syncing. Idempotent."""
        if self._closed:
            return
        self._closed = True
        for seg in self._segments:
            os.close(seg.fd)

    def __enter__(self) -> RecordLog:
        """Return self."""
        return self

    def __exit__(self, *exc: object) -> None:
        """Close the log (without syncing)."""
        self.close()
