"""The segmented record file: framing, torn-tail recovery, corruption, rotation, atomic files."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from structlog.testing import capture_logs

from runtime.raft.records import (
    HEADER_BYTES,
    LogCorrupted,
    LogFailed,
    RecordLog,
    frame,
    read_atomic,
    segment_of,
    write_atomic,
)


def recover(directory: Path, **kwargs: object) -> tuple[RecordLog, list[bytes]]:
    """Open ``directory`` and return the log with the payloads it recovered."""
    seen: list[bytes] = []
    rlog = RecordLog.open(directory, visit=lambda _pos, payload: seen.append(payload), **kwargs)  # type: ignore[arg-type]
    return rlog, seen


def write_log(directory: Path, payloads: list[bytes], **kwargs: object) -> None:
    """Create a log holding ``payloads`` (synced) and close it."""
    with RecordLog.open(directory, **kwargs) as rlog:  # type: ignore[arg-type]
        rlog.append_many(payloads)
        rlog.sync()


def only_segment(directory: Path) -> Path:
    """The single segment file in ``directory``."""
    (path,) = sorted(directory.glob("*.wal"))
    return path


PAYLOADS = [b"alpha", b"", b"gamma-" * 10]


class TestRoundTrip:
    def test_records_survive_reopen_in_order(self, tmp_path: Path) -> None:
        """Synced records come back from open, in order, with the positions append gave."""
        with RecordLog.open(tmp_path) as rlog:
            positions = rlog.append_many(PAYLOADS)
            positions.append(rlog.append(b"delta"))
            rlog.sync()
        seen: list[tuple[int, bytes]] = []

        with RecordLog.open(tmp_path, visit=lambda p, b: seen.append((p, b))) as rlog:
            assert [*PAYLOADS, b"delta"] == rlog.read_many(positions)

        assert list(zip(positions, [*PAYLOADS, b"delta"], strict=True)) == seen

    def test_frame_layout_is_length_crc_payload(self) -> None:
        """A frame is a 4-byte length, a 4-byte CRC, then the payload."""
        framed = frame(b"xyz")

        assert (
            len(framed),
            framed[:4],
            framed[8:],
        ) == (HEADER_BYTES + 3, b"\x03\x00\x00\x00", b"xyz")

    def test_zeros_never_parse_as_a_record(self, tmp_path: Path) -> None:
        """An all-zero header is not a valid empty record (the CRC covers the length)."""
        write_log(tmp_path, [b"a"])
        seg = only_segment(tmp_path)
        with seg.open("ab") as f:
            f.write(b"\0" * 100)

        with capture_logs() as logs:
            rlog, seen = recover(tmp_path)
        rlog.close()

        assert seen == [b"a"]
        assert {"event": "torn_tail_truncated", "dropped_bytes": 100}.items() <= logs[0].items()

    def test_oversized_payload_is_refused_whole(self, tmp_path: Path) -> None:
        """A batch with a payload above max_record_bytes writes nothing."""
        with RecordLog.open(tmp_path, max_record_bytes=10) as rlog:
            with pytest.raises(ValueError, match="max_record_bytes"):
                rlog.append_many([b"ok", b"x" * 11])
            rlog.sync()

        _, seen = recover(tmp_path)
        assert seen == []


class TestTornTail:
    def test_cut_at_every_offset_of_last_record_keeps_the_rest(self, tmp_path: Path) -> None:
        """Cutting the last record anywhere recovers exactly the earlier records, and the
        log accepts appends afterwards."""
        src = tmp_path / "src"
        write_log(src, PAYLOADS)
        data = only_segment(src).read_bytes()
        last_start = len(data) - len(frame(PAYLOADS[-1]))
        for cut in range(last_start, len(data)):
            d = tmp_path / f"cut{cut}"
            d.mkdir()
            (d / only_segment(src).name).write_bytes(data[:cut])

            with capture_logs() as logs:
                rlog, seen = recover(d)
            with rlog:
                rlog.append(b"after")
                rlog.sync()
            _, again = recover(d)

            assert PAYLOADS[:-1] == seen
            assert [*PAYLOADS[:-1], b"after"] == again
            expected_logs = [] if cut == last_start else ["torn_tail_truncated"]
            assert expected_logs == [e["event"] for e in logs]

    @settings(max_examples=60, deadline=None)
    @given(
        payloads=st.lists(st.binary(max_size=40), min_size=1, max_size=6),
        where=st.floats(0, 1, exclude_max=True),
        flip=st.one_of(st.none(), st.integers(1, 255)),
        tail=st.binary(max_size=12).filter(lambda b: len(b) < HEADER_BYTES or b[:4] != bytes(4)),
    )
    def test_damaged_last_record_is_dropped_alone(
        self, payloads: list[bytes], where: float, flip: int | None, tail: bytes
    ) -> None:
        """A last record cut at a random point, or with a random byte flipped (optionally
        followed by junk), loses that record only."""
        with tempfile.TemporaryDirectory() as tmp:
            d = Path(tmp)
            write_log(d, payloads)
            seg = only_segment(d)
            data = bytearray(seg.read_bytes())
            last_len = len(frame(payloads[-1]))
            at = len(data) - last_len + int(where * last_len)
            if flip is None:
                del data[at:]
            else:
                data[at] ^= flip
                data += tail
            seg.write_bytes(bytes(data))

            rlog, seen = recover(d)
            rlog.close()

            assert payloads[:-1] == seen

    def test_flipped_byte_in_middle_record_is_corruption(self, tmp_path: Path) -> None:
        """A damaged record followed by valid ones raises LogCorrupted, whichever byte of
        it (length, CRC or payload) is flipped."""
        src = tmp_path / "src"
        write_log(src, [b"first", b"middle", b"last"])
        data = only_segment(src).read_bytes()
        start = len(frame(b"first"))
        for i in range(start, start + len(frame(b"middle"))):
            d = tmp_path / f"flip{i}"
            d.mkdir()
            damaged = bytearray(data)
            damaged[i] ^= 0x40
            (d / only_segment(src).name).write_bytes(bytes(damaged))

            with pytest.raises(LogCorrupted, match="before valid ones") as info:
                recover(d)

            assert start == info.value.offset

    def test_repair_truncates_at_corruption(self, tmp_path: Path) -> None:
        """With repair=True, open keeps the records before the damage and logs it."""
        write_log(tmp_path, [b"first", b"middle", b"last"])
        seg = only_segment(tmp_path)
        damaged = bytearray(seg.read_bytes())
        damaged[len(frame(b"first")) + HEADER_BYTES] ^= 1
        seg.write_bytes(bytes(damaged))

        with capture_logs() as logs:
            rlog, seen = recover(tmp_path, repair=True)
        rlog.close()

        assert seen == [b"first"]
        assert [e["event"] for e in logs] == ["corrupt_log_repaired"]


class TestSegments:
    def test_rotation_writes_header_and_drop_before_deletes_old(self, tmp_path: Path) -> None:
        """A new segment starts with the header records; drop_before deletes whole older
        segments, and what remains reopens."""
        payloads = [bytes([i]) * 20 for i in range(10)]
        with RecordLog.open(tmp_path, segment_bytes=64, segment_header=lambda: [b"HDR"]) as rlog:
            positions = rlog.append_many(payloads)
            rlog.sync()
            segs = sorted({segment_of(p) for p in positions})
            assert payloads == rlog.read_many(positions)

            dropped = rlog.drop_before(positions[-1])

        _, seen = recover(tmp_path)
        assert len(segs) - 1 == dropped
        last_seg = [
            b for p, b in zip(positions, payloads, strict=True) if segment_of(p) == segs[-1]
        ]
        assert [b"HDR", *last_seg] == seen
        assert len(segs) >= 3

    def test_cut_segment_that_is_not_last_is_corruption(self, tmp_path: Path) -> None:
        """Segments before the last are fsynced when full, so a cut one is corruption."""
        write_log(tmp_path, [b"x" * 50] * 4, segment_bytes=64)
        first = sorted(tmp_path.glob("*.wal"))[0]
        os.truncate(first, first.stat().st_size - 1)

        with pytest.raises(LogCorrupted, match="not the last"):
            recover(tmp_path)

    def test_missing_segment_is_corruption(self, tmp_path: Path) -> None:
        """A gap in the segment numbers raises LogCorrupted."""
        write_log(tmp_path, [b"x" * 50] * 4, segment_bytes=32)
        sorted(tmp_path.glob("*.wal"))[1].unlink()

        with pytest.raises(LogCorrupted, match="missing"):
            recover(tmp_path)

    def test_read_detects_later_damage(self, tmp_path: Path) -> None:
        """A record damaged after open fails its CRC check on read."""
        with RecordLog.open(tmp_path) as rlog:
            (pos,) = rlog.append_many([b"payload"])
            rlog.sync()
            seg = only_segment(tmp_path)
            data = bytearray(seg.read_bytes())
            data[-1] ^= 1
            seg.write_bytes(bytes(data))

            with pytest.raises(LogCorrupted, match="fails its check"):
                rlog.read(pos)


class TestFailures:
    def test_failed_fsync_fails_the_log(self, tmp_path: Path) -> None:
        """After an fsync error every call raises LogFailed; reopening recovers."""
        broken = False

        def fsync(fd: int) -> None:
            if broken:
                raise OSError(5, "EIO")
            os.fsync(fd)

        with RecordLog.open(tmp_path, fsync=fsync) as rlog:
            rlog.append(b"kept")
            rlog.sync()
            broken = True
            rlog.append(b"maybe")
            with pytest.raises(LogFailed):
                rlog.sync()
            with pytest.raises(LogFailed):
                rlog.append(b"refused")

        _, seen = recover(tmp_path)
        assert seen == [b"kept", b"maybe"]

    def test_sync_counts_one_fsync_per_dirty_file(self, tmp_path: Path) -> None:
        """sync fsyncs only when something changed: the segment, plus the directory once
        after a segment was created."""
        calls: list[int] = []

        def fsync(fd: int) -> None:
            calls.append(fd)
            os.fsync(fd)

        with RecordLog.open(tmp_path, fsync=fsync) as rlog:
            opened = len(calls)
            rlog.sync()
            rlog.append_many([b"a", b"b", b"c"])
            rlog.sync()

        assert (opened, len(calls) - opened) == (1, 1)


class TestAtomicFile:
    def test_replace_survives_crash_before_rename(self, tmp_path: Path) -> None:
        """A temp file left by a crash between write and rename does not affect the
        stored value, and the next write replaces it."""
        path = tmp_path / "state"
        write_atomic(path, b"old")
        (tmp_path / "state.tmp").write_bytes(frame(b"new")[:5])

        before = read_atomic(path)
        write_atomic(path, b"newer")

        assert (before, read_atomic(path)) == (b"old", b"newer")
        assert not (tmp_path / "state.tmp").exists()

    def test_missing_file_reads_none(self, tmp_path: Path) -> None:
        """read_atomic returns None when nothing was ever written."""
        assert read_atomic(tmp_path / "nothing") is None

    def test_damaged_file_is_corruption(self, tmp_path: Path) -> None:
        """A renamed-in file was fsynced first, so damage in it raises LogCorrupted."""
        path = tmp_path / "state"
        write_atomic(path, b"value")
        data = bytearray(path.read_bytes())
        data[-1] ^= 1
        path.write_bytes(bytes(data))

        with pytest.raises(LogCorrupted):
            read_atomic(path)
