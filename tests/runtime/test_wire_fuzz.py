"""Fuzzing the decoders: whatever bytes arrive, the outcome is operations, a wait, or a
ProtocolError; never another exception, never a hang, never unbounded memory.

A modest number of examples runs by default. Run longer outside CI with e.g.
``REGENCY_FUZZ_EXAMPLES=100000 python -m pytest tests/runtime/test_wire_fuzz.py``.
"""

from __future__ import annotations

import itertools
import os
import struct
from datetime import timedelta

import msgpack
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from runtime.errors import AuthenticationFailed, ProtocolError
from runtime.handshake import Handshake, Role
from runtime.pid import Pid, Ref
from runtime.wire import (
    CallReply,
    CallRequest,
    FrameDecoder,
    FrameEncoder,
    Op,
    Send,
    SendRun,
    close_run,
    unpack_value,
)
from tests.runtime.test_wire import REG, values

EXAMPLES = int(os.environ.get("REGENCY_FUZZ_EXAMPLES", "100"))
MAX_FRAME = 4096

fuzz = settings(
    max_examples=EXAMPLES,
    deadline=timedelta(seconds=5),  # a real hang, not a slow machine
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def frame(body: bytes) -> bytes:
    """A frame holding *body* as is."""
    return struct.pack(">I", len(body)) + body


def chunked(data: bytes, cuts: list[int]) -> list[bytes]:
    """*data* cut at the given offsets (taken modulo its length)."""
    points = sorted({c % (len(data) + 1) for c in cuts} | {0, len(data)})
    return [data[a:b] for a, b in itertools.pairwise(points)]


def check_stream(chunks: list[bytes]) -> None:
    """Feed *chunks*; assert the decoder's contract holds after each one."""
    dec = FrameDecoder(REG, max_frame=MAX_FRAME)
    for chunk in chunks:
        try:
            dec.feed(chunk)
        except ProtocolError:
            assert dec.error is not None
            try:
                dec.feed(b"\x00")
            except ProtocolError:
                return
            raise AssertionError("a poisoned decoder accepted more data") from None
        # What stays buffered is at most one partial frame.
        assert dec.buffered < 4 + MAX_FRAME


ops = st.lists(
    st.builds(Send, st.just(Pid("a@h", 1, 1)), values, st.none())
    | st.builds(SendRun, st.just(Pid("a@h", 1, 1)), st.lists(values, min_size=1, max_size=4)),
    min_size=1,
    max_size=4,
)


@st.composite
def valid_streams(draw: st.DrawFn) -> bytes:
    """The frames of a few SENDs of arbitrary values."""
    return FrameEncoder(REG, max_frame=MAX_FRAME * 64).encode_many(draw(ops))


@st.composite
def mutated_streams(draw: st.DrawFn) -> bytes:
    """A valid stream with some bytes flipped, inserted, deleted, or its tail cut."""
    data = bytearray(draw(valid_streams()))
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["flip", "insert", "delete", "truncate"]))
        at = draw(st.integers(0, max(len(data) - 1, 0)))
        if kind == "flip" and data:
            data[at] = draw(st.integers(0, 255))
        elif kind == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=8))
        elif kind == "delete" and data:
            del data[at : at + draw(st.integers(1, 8))]
        elif kind == "truncate":
            del data[at:]
    return bytes(data)


ext_codes = st.sampled_from([1, 2, 3, 4, 5, 10]) | st.integers(0, 127)
ext_bodies = st.builds(
    lambda code, payload: msgpack.packb(
        [1, msgpack.ExtType(1, b"\x00" * 16 + b"n"), msgpack.ExtType(code, payload), None]
    ),
    ext_codes,
    st.binary(max_size=64)
    | st.builds(
        msgpack.packb, st.lists(st.integers(-(2**63), 2**64 - 1) | st.text(max_size=4), max_size=4)
    ),
)
bodies = st.binary(max_size=256) | ext_bodies
framed_garbage = st.lists(bodies, min_size=1, max_size=4).map(
    lambda bs: b"".join(frame(b) for b in bs)
)
streams = st.binary(max_size=1024) | framed_garbage | mutated_streams()
cuts = st.lists(st.integers(0, 10_000), max_size=6)


@fuzz
@given(streams, cuts)
def test_decoder_yields_ops_waits_or_raises_protocol_error(data: bytes, at: list[int]) -> None:
    """Arbitrary bytes, cut anywhere: ops, a wait, or ProtocolError; buffering bounded."""
    check_stream(chunked(data, at))


@fuzz
@given(valid_streams(), cuts)
def test_valid_streams_decode_however_they_are_cut(data: bytes, at: list[int]) -> None:
    """An intact stream never raises, and leaves nothing buffered at its end."""
    dec = FrameDecoder(REG, max_frame=MAX_FRAME * 64)
    for chunk in chunked(data, at):
        dec.feed(chunk)

    assert dec.buffered == 0


two_pids = st.sampled_from([Pid("a@h", 1, 1), Pid("a@h", 2, 1)])
mixed_ops = st.lists(
    st.builds(Send, two_pids, values, st.none() | two_pids)
    | st.builds(SendRun, two_pids, st.lists(values, min_size=1, max_size=4)),
    min_size=1,
    max_size=8,
)


def expanded(item: Op) -> list[Op]:
    """*item*, a SendRun as the SENDs it stands for."""
    if type(item) is SendRun:
        assert item.msgs
        return [Send(item.to, m) for m in item.msgs]
    return [item]


def decode_both(chunks: list[bytes]) -> tuple[bytes | str, bytes | str]:
    """What ``feed`` and ``feed_runs`` (runs expanded) make of *chunks*: the frames of
    the ops decoded (compared as bytes, so a NaN equals itself), then the error if any."""
    enc = FrameEncoder(REG, max_frame=MAX_FRAME * 64)
    plain = FrameDecoder(REG, max_frame=MAX_FRAME * 64)
    runs = FrameDecoder(REG, max_frame=MAX_FRAME * 64)
    outcomes: list[bytes | str] = []
    for dec, gather in ((plain, False), (runs, True)):
        got: list[Op] = []
        error = ""
        try:
            for chunk in chunks:
                for item in dec.feed_runs(chunk) if gather else dec.feed(chunk):
                    got += expanded(item)
        except ProtocolError as e:
            error = str(e)
        outcomes.append(enc.encode_many(got) + error.encode())
    return outcomes[0], outcomes[1]


@fuzz
@given(st.builds(lambda ops: FrameEncoder(REG).encode_many(ops), mixed_ops) | streams, cuts)
def test_feed_runs_decodes_as_feed_does(data: bytes, at: list[int]) -> None:
    """feed_runs returns feed's ops, SENDs of a run gathered, and fails where it fails."""
    plain, runs = decode_both(chunked(data, at))

    assert plain == runs


@fuzz
@given(st.binary(max_size=512) | bodies)
def test_value_decoder_returns_a_value_or_raises_protocol_error(data: bytes) -> None:
    """unpack_value on arbitrary bytes: a value, or ProtocolError."""
    try:
        unpack_value(data, registry=REG)
    except ProtocolError:
        pass


@fuzz
@given(st.sampled_from(list(Role)), st.binary(max_size=512) | framed_garbage, cuts)
def test_handshake_fails_only_with_authentication_failed(
    role: Role, data: bytes, at: list[int]
) -> None:
    """Garbage fed to either side of a handshake: nothing, or AuthenticationFailed."""
    hs = Handshake(role, name="a@h", creation=1, secret=b"s" * 32)
    hs.data_to_send()
    try:
        for chunk in chunked(data, at):
            hs.receive_data(chunk)
    except AuthenticationFailed:
        assert hs.failure is not None
    assert not hs.done


refs = st.builds(Ref, st.sampled_from(["a@h", "b@h"]), st.integers(0, 2**64 - 1), st.just(7))
callers = st.sampled_from([Pid("a@h", 3, 7), Pid("a@h", 4, 7), None])
call_ops = st.lists(
    st.builds(CallReply, refs, values, st.just(Pid("a@h", 0, 7)))
    | st.builds(CallRequest, two_pids, callers, refs, values),
    min_size=1,
    max_size=8,
)


@st.composite
def call_streams(draw: st.DrawFn) -> bytes:
    """The frames of a few CALLs and CALL_REPLYs, some bytes perhaps changed."""
    data = bytearray(FrameEncoder(REG, max_frame=MAX_FRAME * 64).encode_many(draw(call_ops)))
    for _ in range(draw(st.integers(0, 3))):
        at = draw(st.integers(0, len(data) - 1))
        data[at] = draw(st.integers(0, 255))
    return bytes(data)


def frames_of(data: bytes) -> list[bytes]:
    """*data* split after each frame its length prefixes delimit (the rest last)."""
    out: list[bytes] = []
    off = 0
    while len(data) - off >= 4:
        end = min(len(data), off + 4 + struct.unpack_from(">I", data, off)[0])
        out.append(data[off:end])
        off = end
    return [*out, data[off:]] if off < len(data) else out


def decode_each(chunks: list[bytes], fresh: bool) -> tuple[bytes, bool]:
    """The frames of the ops decoded from *chunks*, fed one at a time to one decoder, or
    each to a new decoder (*fresh*: no fast path), and whether one raised."""
    enc = FrameEncoder(REG, max_frame=MAX_FRAME * 64)
    dec = FrameDecoder(REG, max_frame=MAX_FRAME * 64)
    got: list[Op] = []
    try:
        for chunk in chunks:
            if fresh:
                dec = FrameDecoder(REG, max_frame=MAX_FRAME * 64)
            got += dec.feed(chunk)
    except ProtocolError:
        return enc.encode_many(got), True
    return enc.encode_many(got), False


@fuzz
@given(call_streams())
def test_fast_paths_of_calls_and_replies_decode_as_the_general_path(data: bytes) -> None:
    """CALL and CALL_REPLY frames like the one before (the fast paths) decode to the
    same operations as a new decoder makes of each, and fail where it fails."""
    chunks = frames_of(data)

    assert decode_each(chunks, fresh=True) == decode_each(chunks, fresh=False)


@st.composite
def built_runs(draw: st.DrawFn) -> tuple[bytes, list[Op]]:
    """Frames as a sender's buffer holds them: SEND_RUNs begun by ``open_run``, grown by
    appending messages and finished by ``close_run`` (the distribution's fast path),
    between other frames; and the operations they stand for."""
    enc = FrameEncoder(REG, max_frame=MAX_FRAME * 64)
    buf = bytearray()
    ops: list[Op] = []
    for op in draw(mixed_ops):
        if type(op) is SendRun:
            at = len(buf)
            enc.open_run(buf, op.to, enc.message(op.msgs[0]))
            for m in op.msgs[1:]:
                buf += enc.message(m)
            close_run(buf, at, len(op.msgs))
        else:
            buf += enc.encode(op)
        ops.append(op)
    return bytes(buf), ops


@fuzz
@given(built_runs(), cuts)
def test_runs_built_in_place_decode_as_the_general_path(
    built: tuple[bytes, list[Op]], at: list[int]
) -> None:
    """A SEND_RUN built in place (array32 head, count written last) decodes to the same
    operations as the general encoder's frame of it, by feed and feed_runs alike,
    however the stream is cut."""
    data, ops = built
    general = FrameEncoder(REG, max_frame=MAX_FRAME * 64).encode_many(ops)
    expected = [x for op in ops for x in expanded(op)]
    for stream in (data, general):
        for gather in (False, True):
            dec = FrameDecoder(REG, max_frame=MAX_FRAME * 64)
            got: list[Op] = []
            for chunk in chunked(stream, at):
                for item in dec.feed_runs(chunk) if gather else dec.feed(chunk):
                    got += expanded(item)
            assert dec.buffered == 0
            enc = FrameEncoder(REG, max_frame=MAX_FRAME * 64)
            assert enc.encode_many(expected) == enc.encode_many(got)  # NaN equals itself


@fuzz
@given(
    built_runs().map(lambda b: b[0]),
    st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)), min_size=1, max_size=3),
    cuts,
)
def test_runs_built_in_place_with_bytes_changed_decode_or_fail_cleanly(
    data: bytes, changes: list[tuple[int, int]], at: list[int]
) -> None:
    """Such a stream with bytes changed: feed and feed_runs agree, and fail cleanly."""
    mutated = bytearray(data)
    for where, value in changes:
        mutated[where % len(mutated)] = value
    plain, runs = decode_both(chunked(bytes(mutated), at))

    assert plain == runs
    check_stream(chunked(bytes(mutated), at))
