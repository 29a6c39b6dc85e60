"""The wire codec: frames, operations, values, limits and the message registry."""

from __future__ import annotations

import enum
import struct
import sys
import threading
import tracemalloc
from typing import Any

import attrs
import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from runtime.errors import ProtocolError, Unregistered
from runtime.pid import Name, Pid, Ref
from runtime.reasons import (
    KILL,
    KILLED,
    NOPROC,
    NORMAL,
    SHUTDOWN,
    Abnormal,
    Crashed,
    NoConnection,
    Shutdown,
)
from runtime.wire import (
    DEFAULT_REGISTRY,
    MAX_DEPTH,
    MAX_FRAME,
    CallReply,
    CallRequest,
    Challenge,
    Demonitor,
    Down,
    Exit,
    FrameDecoder,
    FrameEncoder,
    Goodbye,
    Heartbeat,
    Hello,
    Link,
    LinkExit,
    Monitor,
    Op,
    Proof,
    Registry,
    Reject,
    Send,
    SendRun,
    Unlink,
    close_run,
    encode,
    encode_many,
    message,
    pack_value,
    register_message,
    unpack_value,
)

# --------------------------------------------------------------------------- fixtures

REG = Registry()


@REG.message(name="test.Point")
@attrs.frozen
class Point:
    """A registered message with two fields of any type."""

    x: object
    y: object = None


class Color(enum.Enum):
    """A registered plain enum."""

    RED = "red"
    GREEN = "green"


class Level(enum.IntEnum):
    """A registered int enum."""

    LOW = 1
    HIGH = 2


REG.register(Color, "test.Color")
REG.register(Level, "test.Level")


@REG.message(name="test.Job")
@attrs.frozen
class Job:
    """A registered message with an enum field, a keyword-only field and a validator."""

    id: int = attrs.field(validator=attrs.validators.ge(0))
    level: Level = Level.LOW
    tags: tuple[str, ...] = attrs.field(default=(), kw_only=True)


@message(name="tests.runtime.test_wire.Shortcut")
@attrs.frozen
class Shortcut:
    """Registered in the default registry with the module-level decorator."""

    a: int


class Mode(enum.Enum):
    """Registered in the default registry with register_message."""

    ON = 1


register_message(Mode, "tests.runtime.test_wire.Mode")


@attrs.frozen
class NotRegistered:
    """Never registered anywhere."""

    x: int


P = Pid("a@host", 12, 1)
Q = Pid("b@host", 99, 7)
R = Ref("a@host", 5, 1)

ALL_OPS: list[Op] = [
    Send(P, ("ping", Q), Q),
    Send(Name("ledger", "b@host"), {"k": [1, 2]}, None),
    Send(Name("local"), b"raw"),
    Link(P, Q),
    Unlink(P, Q),
    Exit(P, Q, KILL),
    Exit(P, Q, Crashed("ValueError", "bad", "Traceback...")),
    LinkExit(P, Q, Abnormal(("error", [1, {"x": None}]))),
    LinkExit(P, Q, Shutdown("stopping")),
    Monitor(R, P, Q),
    Monitor(R, P, Name("ledger", "b@host")),
    Demonitor(R, Q),
    Down(R, Q, NoConnection("b@host"), P),
    Down(R, Name("n"), NOPROC, P),
    CallReply(R, [1, 2.5, "three"], P),
    CallRequest(P, Q, R, ("get", 7)),
    CallRequest(Name("ledger", "b@host"), None, R, 7),
    CallRequest(P, None, R, {"k": [1, 2]}),
    SendRun(P, [1, "two", (3, Q), [4.5, {"k": None}]]),
    SendRun(Q, [None]),
    Heartbeat(),
    Goodbye("node stopping"),
    Exit(P, Q, NORMAL),
    Exit(P, Q, SHUTDOWN),
    Exit(P, Q, KILLED),
]


def frame(body: bytes) -> bytes:
    """A frame holding *body* as is."""
    return struct.pack(">I", len(body)) + body


def pid_ext(pid: Pid) -> msgpack.ExtType:
    """The ext value of *pid*, built by hand from the documented layout."""
    return msgpack.ExtType(1, struct.pack(">QQ", pid.serial, pid.creation) + pid.node.encode())


def nested_lists(levels: int) -> Any:
    """A list nested *levels* deep."""
    value: Any = None
    for _ in range(levels):
        value = [value]
    return value


def nested_tuples(levels: int) -> Any:
    """A tuple nested *levels* deep."""
    value: Any = None
    for _ in range(levels):
        value = (value,)
    return value


def roundtrip(op: Op, registry: Registry = REG) -> Op:
    """Encode *op* and decode it again."""
    ops = FrameDecoder(registry).feed(FrameEncoder(registry).encode(op))
    assert len(ops) == 1
    return ops[0]


# --------------------------------------------------------------------------- strategies

pids = st.builds(Pid, st.text(max_size=12), st.integers(0, 2**64 - 1), st.integers(0, 2**64 - 1))
refs = st.builds(Ref, st.text(max_size=12), st.integers(0, 2**64 - 1), st.integers(0, 2**64 - 1))
names = st.builds(Name, st.text(max_size=12), st.none() | st.text(max_size=12))
leaf_reasons = st.sampled_from([NORMAL, SHUTDOWN, KILL, KILLED, NOPROC]) | st.builds(
    Crashed, st.text(max_size=10), st.text(max_size=10), st.text(max_size=10)
)
scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats(allow_nan=False)
    | st.text(max_size=20)
    | st.binary(max_size=20)
    | pids
    | refs
    | names
    | leaf_reasons
    | st.sampled_from(list(Color) + list(Level))
)
values = st.recursive(
    scalars,
    lambda children: (
        st.lists(children, max_size=4)
        | st.lists(children, max_size=4).map(tuple)
        | st.dictionaries(st.text(max_size=8) | st.binary(max_size=8), children, max_size=4)
        | st.builds(Point, children, children)
        | st.builds(Abnormal, children)
    ),
    max_leaves=24,
)


def same(a: object, b: object) -> bool:
    """Equal and of the same types all the way down (1 == True, but not on the wire)."""
    return a == b and repr(a) == repr(b)


# --------------------------------------------------------------------------- operations


class TestOperations:
    @pytest.mark.parametrize("op", ALL_OPS, ids=lambda op: type(op).__name__)
    def test_every_operation_round_trips(self, op: Op) -> None:
        """Each operation decodes to an equal operation of the same class."""
        back = roundtrip(op)

        assert op == back
        assert type(op) is type(back)

    @pytest.mark.parametrize("caller", [Q, None])
    @pytest.mark.parametrize("request_", [7, "text", None, ("get", [1, {"k": P}])])
    def test_call_frame_is_the_documented_array(self, caller: Pid | None, request_: object) -> None:
        """A CALL is ``[12, to, caller, ref, request]``, whichever path encodes it."""
        ref_ext = msgpack.ExtType(2, struct.pack(">QQ", R.serial, R.creation) + R.node.encode())
        enc = FrameEncoder(REG)
        body = msgpack.packb(
            [12, pid_ext(P), None if caller is None else pid_ext(caller), ref_ext, 7],
        )
        expected = frame(body) if request_ == 7 else None

        for _ in range(2):  # the second time from the kept head
            got = enc.encode(CallRequest(P, caller, R, request_))
            assert got == enc.encode_call(P, caller, R, request_)
            if expected is not None:
                assert expected == got
            assert [CallRequest(P, caller, R, request_)] == FrameDecoder(REG).feed(got)

    @pytest.mark.parametrize("value", [7, "text", None, ("get", [1, {"k": P}])])
    def test_encode_reply_makes_the_frame_of_the_operation(self, value: object) -> None:
        """encode_reply makes the bytes encode makes of the CALL_REPLY, whichever path."""
        enc = FrameEncoder(REG)

        assert FrameEncoder(REG).encode(CallReply(R, value, P)) == enc.encode_reply(R, value, P)
        assert [CallReply(R, value, P)] == FrameDecoder(REG).feed(enc.encode_reply(R, value, P))

    def test_send_run_frame_is_the_documented_array(self) -> None:
        """A SEND_RUN is ``[13, to, *msgs]``; the frame :meth:`FrameEncoder.open_run`
        begins and :func:`close_run` finishes (array32 head) holds the same value, and
        both decode to the operation."""
        msgs = [1, "two", (3, Q), None, 2**64 - 1]
        enc = FrameEncoder(REG)
        general = enc.encode(SendRun(P, msgs))
        assert (
            frame(
                msgpack.packb(
                    [
                        13,
                        pid_ext(P),
                        1,
                        "two",
                        msgpack.ExtType(4, msgpack.packb([3, pid_ext(Q)])),
                        None,
                        2**64 - 1,
                    ]
                )
            )
            == general
        )

        buf = bytearray(b"before")
        enc.open_run(buf, P, enc.message(msgs[0]))
        for m in msgs[1:]:
            buf += enc.message(m)
        close_run(buf, 6, len(msgs))
        built = bytes(buf[6:])
        assert built[4] == 0xDD  # the count is written in place, in 4 bytes
        assert len(built) - 4 == enc.run_head_size(P) + sum(len(enc.message(m)) for m in msgs)
        assert msgpack.unpackb(
            built[4:], strict_map_key=False, ext_hook=lambda c, d: (c, d)
        ) == msgpack.unpackb(general[4:], ext_hook=lambda c, d: (c, d))
        for data in (general, built):
            assert [SendRun(P, msgs)] == FrameDecoder(REG).feed(data)

    def test_feed_runs_joins_runs_and_sends_to_one_pid(self) -> None:
        """feed_runs gathers SEND_RUNs and SENDs with no sender to one pid, in order, into
        one SendRun; feed returns each operation as it came."""
        enc = FrameEncoder(REG)
        ops: list[Op] = [
            Send(P, 0),
            SendRun(P, [1, 2]),
            Send(P, 3),
            SendRun(P, [4]),
            SendRun(Q, [5]),
            Send(P, 6, Q),
            SendRun(P, [7]),
        ]
        data = enc.encode_many(ops)

        assert ops == FrameDecoder(REG).feed(data)
        assert [
            Send(P, 0),
            SendRun(P, [1, 2, 3, 4]),
            SendRun(Q, [5]),
            Send(P, 6, Q),
            SendRun(P, [7]),
        ] == FrameDecoder(REG).feed_runs(data)

    def test_operations_of_different_classes_are_unequal(self) -> None:
        """LINK and UNLINK with the same fields are different operations."""
        assert Link(P, Q) != Unlink(P, Q)
        assert Link(P, Q) == Link(P, Q)
        assert hash(Link(P, Q)) == hash(Link(P, Q))

    def test_encode_many_is_the_concatenation_of_frames(self) -> None:
        """encode_many writes the frames of all operations, in order, in one buffer."""
        enc = FrameEncoder(REG)

        assert enc.encode_many(ALL_OPS) == b"".join(enc.encode(op) for op in ALL_OPS)

    def test_module_shortcuts_use_the_default_registry(self) -> None:
        """encode and encode_many work with the default registry."""
        data = encode_many([Heartbeat(), Link(P, Q)]) + encode(Goodbye())

        assert [Heartbeat(), Link(P, Q), Goodbye("")] == FrameDecoder().feed(data)

    def test_module_shortcuts_are_safe_across_threads(self) -> None:
        """Threads encoding at once through encode() never mix their frames."""
        op = Send(P, [("x", Q, (i, (i,))) for i in range(20)], Q)
        expected = encode(op)
        results: list[bool] = []
        old = sys.getswitchinterval()
        sys.setswitchinterval(1e-6)
        try:

            def work() -> None:
                results.append(all(encode(op) == expected for _ in range(300)))

            threads = [threading.Thread(target=work) for _ in range(4)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
        finally:
            sys.setswitchinterval(old)

        assert results == [True] * 4

    def test_handshake_operations_round_trip_on_a_handshake_decoder(self) -> None:
        """HELLO, CHALLENGE, PROOF and REJECT decode only in handshake mode."""
        ops: list[Op] = [
            Hello((1, 2), "a@h", 3, b"n" * 32),
            Challenge(2, "b@h", 4, b"m" * 32),
            Proof(b"d" * 32),
            Reject("no"),
        ]

        assert ops == FrameDecoder(handshake=True).feed(encode_many(ops))

    def test_session_decoder_refuses_handshake_operations(self) -> None:
        """A HELLO after the handshake is a protocol error."""
        with pytest.raises(ProtocolError, match="opcode 16"):
            FrameDecoder().feed(encode(Hello((1,), "a", 0, b"n" * 32)))

    def test_handshake_decoder_refuses_session_operations(self) -> None:
        """Before authentication, a SEND is a protocol error."""
        with pytest.raises(ProtocolError, match="opcode 10"):
            FrameDecoder(handshake=True).feed(encode(Heartbeat()))
        with pytest.raises(ProtocolError):  # the pid's ext, or else the opcode
            FrameDecoder(handshake=True).feed(encode(SendRun(P, [1])))

    def test_handshake_decoder_refuses_ext_types(self) -> None:
        """Before authentication, no ext type (pid, registered class ...) is decoded."""
        body = msgpack.packb([18, pid_ext(P)])

        with pytest.raises(ProtocolError, match="ext type 1 is not allowed"):
            FrameDecoder(handshake=True).feed(frame(body))

    @pytest.mark.parametrize(
        "op",
        [
            Send("not a pid", 1),  # type: ignore[arg-type]
            Send(P, 1, "not a pid"),  # type: ignore[arg-type]
            Link(P, Name("x")),  # type: ignore[arg-type]
            Exit(P, Q, "normal"),  # type: ignore[arg-type]
            Monitor(P, P, Q),  # type: ignore[arg-type]
            CallReply(R, 1, R),  # type: ignore[arg-type]
            CallRequest(P, Q, P, 1),  # type: ignore[arg-type]
            CallRequest(P, "caller", R, 1),  # type: ignore[arg-type]
            CallRequest("to", Q, R, 1),  # type: ignore[arg-type]
            SendRun(P, []),
            SendRun(Name("x"), [1]),  # type: ignore[arg-type]
            SendRun(P, (1, 2)),  # type: ignore[arg-type]
            Goodbye(3),  # type: ignore[arg-type]
        ],
    )
    def test_malformed_operation_is_refused_by_the_sender(self, op: Op) -> None:
        """The encoder checks fields as the peer will, so a local mistake is a TypeError."""
        with pytest.raises(TypeError, match="malformed"):
            encode(op)

    def test_non_operation_is_refused(self) -> None:
        """Only operations are framed."""
        with pytest.raises(TypeError, match="not a wire operation"):
            encode(("ping", P))  # type: ignore[arg-type]

    @pytest.mark.parametrize(
        "body",
        [
            msgpack.packb(7),
            msgpack.packb([]),
            msgpack.packb(["send"]),
            msgpack.packb([True]),
            msgpack.packb([1.0, None, None, None]),
            msgpack.packb([99]),
            msgpack.packb([1, "pid", None, None]),
            msgpack.packb([2, pid_ext(P)]),
            msgpack.packb([10, None]),
            msgpack.packb([13, pid_ext(P)]),
            msgpack.packb([13, "pid", 1]),
            msgpack.packb([13, msgpack.ExtType(5, msgpack.packb(["n", None])), 1]),
        ],
    )
    def test_malformed_operation_is_a_protocol_error(self, body: bytes) -> None:
        """A body that is not a well-formed operation poisons the decoder."""
        dec = FrameDecoder()

        with pytest.raises(ProtocolError):
            dec.feed(frame(body))


# --------------------------------------------------------------------------- frames


class TestFrames:
    def test_frames_split_at_every_byte_boundary(self) -> None:
        """However the stream is cut in two, the same operations come out."""
        data = FrameEncoder(REG).encode_many(ALL_OPS)

        for cut in range(len(data) + 1):
            dec = FrameDecoder(REG)
            ops = dec.feed(data[:cut]) + dec.feed(data[cut:])

            assert ops == ALL_OPS, cut
            assert dec.buffered == 0

    def test_frames_fed_one_byte_at_a_time(self) -> None:
        """A stream fed byte by byte yields each operation as its last byte arrives."""
        data = FrameEncoder(REG).encode_many(ALL_OPS)
        dec = FrameDecoder(REG)

        ops = [op for i in range(len(data)) for op in dec.feed(data[i : i + 1])]

        assert ops == ALL_OPS

    def test_many_frames_in_one_feed(self) -> None:
        """Thousands of frames in one chunk all come out, in order."""
        ops = [Send(P, i, Q) for i in range(5000)]

        assert ops == FrameDecoder().feed(encode_many(ops))

    def test_truncated_frame_waits_for_more(self) -> None:
        """A partial frame is kept, not an error; the rest completes it."""
        data = encode(Send(P, "x" * 100, Q))
        dec = FrameDecoder()

        assert dec.feed(data[:-1]) == []
        assert len(data) - 1 == dec.buffered
        assert [Send(P, "x" * 100, Q)] == dec.feed(data[-1:])

    def test_length_over_the_limit_is_rejected_before_its_body(self) -> None:
        """A 2**31 length prefix fails at once, without buffering or allocating the body."""
        dec = FrameDecoder()
        tracemalloc.start()
        try:
            with pytest.raises(
                ProtocolError, match="frame of 2147483648 bytes exceeds limit 8388608"
            ):
                dec.feed(struct.pack(">I", 2**31))
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()

        assert dec.buffered == 0
        assert peak < 64 * 1024

    def test_limit_is_per_decoder(self) -> None:
        """A frame exactly at max_frame passes; one byte more is rejected."""
        body = msgpack.packb([11, "x" * 20])
        small = FrameDecoder(max_frame=len(body))

        assert [Goodbye("x" * 20)] == small.feed(frame(body))
        with pytest.raises(ProtocolError, match=f"exceeds limit {len(body) - 1}"):
            FrameDecoder(max_frame=len(body) - 1).feed(frame(body))

    def test_encoder_refuses_a_frame_over_its_limit(self) -> None:
        """The sender never produces a frame its peer would reject; it stays usable."""
        enc = FrameEncoder(max_frame=100)

        with pytest.raises(ValueError, match="exceeds limit 100"):
            enc.encode(Send(P, "x" * 200))
        assert enc.encode(Heartbeat()) == encode(Heartbeat())

    def test_empty_frame_is_rejected(self) -> None:
        """A zero length can only be a desynchronized stream."""
        with pytest.raises(ProtocolError, match="empty frame"):
            FrameDecoder().feed(b"\x00\x00\x00\x00")

    def test_trailing_bytes_in_a_body_are_rejected(self) -> None:
        """A body holds exactly one value."""
        with pytest.raises(ProtocolError, match="ExtraData"):
            FrameDecoder().feed(frame(msgpack.packb([10]) + b"\xc0"))

    def test_body_shorter_than_its_value_is_rejected(self) -> None:
        """A frame cut inside its value does not read into the next frame."""
        body = msgpack.packb([11, "abcdef"])

        with pytest.raises(ProtocolError):
            FrameDecoder().feed(frame(body[:-2]) + encode(Heartbeat()))

    def test_decoder_is_poisoned_after_an_error(self) -> None:
        """After one error every feed raises: the stream is desynchronized."""
        dec = FrameDecoder()
        with pytest.raises(ProtocolError):
            dec.feed(b"\xff\xff\xff\xff")

        with pytest.raises(ProtocolError, match="earlier error"):
            dec.feed(encode(Heartbeat()))
        assert dec.error is not None

    def test_garbage_body_is_a_protocol_error(self) -> None:
        """Garbage in a frame never decodes into operations by accident."""
        with pytest.raises(ProtocolError):
            FrameDecoder().feed(frame(bytes(range(256)) * 4))

    def test_garbage_length_waits_or_fails(self) -> None:
        """Random bytes read as a length either wait for that much, or exceed the limit."""
        dec = FrameDecoder()

        assert dec.feed(bytes(range(256)) * 4) == []  # length 0x00010203: wait for it
        with pytest.raises(ProtocolError, match="exceeds limit"):
            FrameDecoder().feed(bytes(range(255, -1, -1)))

    def test_limit_decodes_some_and_keeps_the_rest(self) -> None:
        """feed(limit=n) stops after n operations; take_buffered hands over the rest."""
        data = encode_many([Heartbeat(), Goodbye("a"), Goodbye("b")])
        dec = FrameDecoder()

        assert [Heartbeat()] == dec.feed(data, limit=1)
        assert [Goodbye("a")] == dec.feed(b"", limit=1)
        rest = dec.take_buffered()

        assert dec.buffered == 0
        assert [Goodbye("b")] == FrameDecoder().feed(rest)


# --------------------------------------------------------------------------- values


class TestValues:
    @settings(max_examples=150, deadline=None)
    @given(values)
    def test_values_round_trip_in_a_send(self, value: object) -> None:
        """Any value made of the supported types comes back equal, with the same types."""
        back = roundtrip(Send(P, value, Q))

        assert isinstance(back, Send)
        assert same(value, back.msg)

    @settings(max_examples=100, deadline=None)
    @given(values)
    def test_values_round_trip_in_a_call(self, value: object) -> None:
        """Any value comes back equal as a CALL's request (the encoder's fast path, or
        the general one)."""
        back = roundtrip(CallRequest(P, Q, R, value))

        assert isinstance(back, CallRequest)
        assert same(value, back.request)

    @settings(max_examples=100, deadline=None)
    @given(values)
    def test_values_round_trip_bare(self, value: object) -> None:
        """pack_value and unpack_value round-trip without a frame."""
        assert same(value, unpack_value(pack_value(value, registry=REG), registry=REG))

    def test_tuples_stay_tuples_and_lists_stay_lists(self) -> None:
        """Messages like ("ping", pid) arrive as tuples, payload lists as lists."""
        value = ("ping", P, [1, (2, [3])], ())

        back = roundtrip(Send(P, value))

        assert isinstance(back, Send)
        assert same(value, back.msg)

    def test_crashed_travels_without_its_exception(self) -> None:
        """kind, message and traceback cross the wire; the exception object does not."""
        try:
            int("boom")
        except ValueError as exc:
            reason = Crashed.from_exception(exc)

        back = roundtrip(Exit(P, Q, reason))

        assert isinstance(back, Exit)
        assert isinstance(back.reason, Crashed)
        assert (reason.kind, reason.message, reason.traceback) == (
            back.reason.kind,
            back.reason.message,
            back.reason.traceback,
        )
        assert back.reason.exc is None

    def test_timestamp_passes_as_msgpack_defines_it(self) -> None:
        """msgpack's own Timestamp ext (-1) is allowed."""
        stamp = msgpack.Timestamp(1_700_000_000, 5)

        assert Send(P, stamp) == roundtrip(Send(P, stamp))

    def test_bytearray_arrives_as_bytes(self) -> None:
        """bytearray and memoryview travel as bytes."""
        back = roundtrip(Send(P, [bytearray(b"ab"), memoryview(b"cd")]))

        assert isinstance(back, Send)
        assert same([b"ab", b"cd"], back.msg)

    @pytest.mark.parametrize("value", [2**64, -(2**63) - 1])
    def test_integer_beyond_64_bits_is_refused_by_the_sender(self, value: int) -> None:
        """msgpack ints have 64 bits; a bigger one is a ValueError on the sender."""
        with pytest.raises(ValueError, match="64 bits"):
            encode(Send(P, [value]))

    def test_dict_key_that_is_not_a_string_is_refused_by_the_sender(self) -> None:
        """Peers accept only str and bytes map keys, so the sender refuses others."""
        enc = FrameEncoder()

        with pytest.raises(ValueError, match="dict key 1"):
            enc.encode(Send(P, {"ok": {1: "x"}}))
        assert enc.encode(Send(P, {"ok": {b"k": "x"}}))

    def test_dict_key_that_is_not_a_string_is_a_protocol_error(self) -> None:
        """A forged map with an int key is rejected (strict map keys)."""
        body = msgpack.packb([1, pid_ext(P), {1: 2}, None])

        with pytest.raises(ProtocolError, match="map key"):
            FrameDecoder().feed(frame(body))

    def test_pid_with_bad_fields_is_refused_by_the_sender(self) -> None:
        """A pid whose serial does not fit 64 bits cannot travel."""
        with pytest.raises(ValueError, match="cannot travel"):
            encode(Send(Pid("a", -1), None))

    @pytest.mark.parametrize(
        "ext",
        [
            msgpack.ExtType(1, b"short"),
            msgpack.ExtType(1, b"\x00" * 16 + b"\xff"),
            msgpack.ExtType(3, msgpack.packb([42])),
            msgpack.ExtType(3, msgpack.packb([4, "only kind"])),
            msgpack.ExtType(3, msgpack.packb("normal")),
            msgpack.ExtType(4, msgpack.packb({"not": "an array"})),
            msgpack.ExtType(5, msgpack.packb(["name", 3])),
            msgpack.ExtType(10, msgpack.packb([])),
            msgpack.ExtType(10, msgpack.packb([None, 1])),
        ],
    )
    def test_malformed_ext_value_is_a_protocol_error(self, ext: msgpack.ExtType) -> None:
        """Each ext payload is checked against its layout."""
        body = msgpack.packb([1, pid_ext(P), ext, None])

        with pytest.raises(ProtocolError, match="malformed"):
            FrameDecoder().feed(frame(body))

    @pytest.mark.parametrize("code", [0, 6, 9, 11, 42, 127, -2, -128])
    def test_unknown_ext_type_is_a_protocol_error(self, code: int) -> None:
        """Only the documented ext types decode."""
        ext = b"\xd4" + struct.pack(">b", code) + b"x"  # fixext 1
        body = b"\x94\x01" + msgpack.packb(pid_ext(P)) + ext + b"\xc0"

        with pytest.raises(ProtocolError, match=f"unknown ext type {code}"):
            FrameDecoder().feed(frame(body))


# --------------------------------------------------------------------------- limits


class TestLimits:
    def test_deeply_nested_arrays_are_rejected_cleanly(self) -> None:
        """100000 nested arrays: a ProtocolError, no RecursionError, no crash."""
        body = b"\x94\x01" + msgpack.packb(pid_ext(P)) + b"\x91" * 100_000 + b"\xc0\xc0"

        with pytest.raises(ProtocolError):
            FrameDecoder().feed(frame(body))

    @pytest.mark.parametrize("code", [9, 12])
    def test_depth_limit_holds_on_the_fast_paths_of_calls_and_replies(self, code: int) -> None:
        """A CALL_REPLY or CALL like the one before (its fast path) is held to the depth
        limit: a value MAX_DEPTH deep with its operation passes, one level more fails."""
        ref = msgpack.ExtType(2, struct.pack(">QQ", 6, R.creation) + R.node.encode())

        def body(value: object) -> bytes:
            if code == 9:
                return msgpack.packb([9, ref, value, pid_ext(P)])
            return msgpack.packb([12, pid_ext(P), pid_ext(Q), ref, value])

        first = CallReply(R, 1, P) if code == 9 else CallRequest(P, Q, R, 1)
        dec = FrameDecoder(REG)
        assert [first] == dec.feed(FrameEncoder(REG).encode(first))

        (ok,) = dec.feed(frame(body(nested_lists(MAX_DEPTH - 1))))
        assert nested_lists(MAX_DEPTH - 1) == ok[1 if code == 9 else 3]
        with pytest.raises(ProtocolError, match="deeper"):
            dec.feed(frame(body(nested_lists(MAX_DEPTH))))

    @pytest.mark.parametrize("make", [nested_lists, nested_tuples])
    @pytest.mark.parametrize("runs", [False, True])
    def test_depth_limit_of_a_send_run_is_that_of_a_send(self, make: Any, runs: bool) -> None:
        """Each message of a SEND_RUN sits where a SEND's does (level 2): MAX_DEPTH - 1
        deep travels, one level more fails on the sender and on the receiver, wherever
        it is in the run, and however many small messages come before it."""
        lax = FrameEncoder(max_depth=MAX_DEPTH + 10)
        small = list(range(300))
        for msgs in ([make(MAX_DEPTH - 1)], [*small, make(MAX_DEPTH - 1), 1]):
            dec = FrameDecoder()
            got = (dec.feed_runs if runs else dec.feed)(encode(SendRun(P, msgs)))
            assert [SendRun(P, msgs)] == got
        for msgs in ([make(MAX_DEPTH)], [*small, make(MAX_DEPTH), 1]):
            with pytest.raises(ValueError, match="nested deeper"):
                encode(SendRun(P, msgs))
            dec = FrameDecoder()
            with pytest.raises(ProtocolError, match="nested deeper"):
                (dec.feed_runs if runs else dec.feed)(lax.encode(SendRun(P, msgs)))

    def test_deeply_nested_tuples_are_rejected_cleanly(self) -> None:
        """100000 nested tuple exts (each decoded by a hook) stop at the depth limit."""
        levels = 100_000
        payloads = []  # payload length of each level, innermost first
        inner = 1  # b"\xc0"
        for _ in range(levels):
            inner = 1 + inner  # array header + inner value
            payloads.append(inner)
            inner += 6  # ext32 header: 0xc9, length, type
        heads = [b"\xc9" + struct.pack(">I", n) + b"\x04\x91" for n in reversed(payloads)]
        value = b"".join(heads) + b"\xc0"
        body = b"\x94\x01" + msgpack.packb(pid_ext(P)) + value + b"\xc0"

        with pytest.raises(ProtocolError, match="nested deeper than 64"):
            FrameDecoder().feed(frame(body))

    @pytest.mark.parametrize("make", [nested_lists, nested_tuples])
    def test_depth_limit_is_the_same_for_sender_and_receiver(self, make: Any) -> None:
        """A SEND (level 1) of a value MAX_DEPTH - 1 deep travels; one level more fails on
        the sender with ValueError, and on a receiver fed by a laxer sender with
        ProtocolError."""
        ok = Send(P, make(MAX_DEPTH - 1))
        too_deep = Send(P, make(MAX_DEPTH))

        assert ok == roundtrip(ok)
        with pytest.raises(ValueError, match="nested deeper"):
            encode(too_deep)
        with pytest.raises(ProtocolError, match="nested deeper"):
            FrameDecoder().feed(FrameEncoder(max_depth=MAX_DEPTH + 10).encode(too_deep))

    def test_enum_members_count_as_a_level(self) -> None:
        """An enum member is one level, on both sides."""

        def make(levels: int) -> Any:
            value: Any = Level.LOW
            for _ in range(levels - 1):
                value = [value]
            return value

        ok = Send(P, make(MAX_DEPTH - 1))
        too_deep = Send(P, make(MAX_DEPTH))

        assert ok == roundtrip(ok)
        with pytest.raises(ValueError, match="nested deeper"):
            FrameEncoder(REG).encode(too_deep)
        data = FrameEncoder(REG, max_depth=MAX_DEPTH + 1).encode(too_deep)
        with pytest.raises(ProtocolError, match="nested deeper"):
            FrameDecoder(REG).feed(data)

    def test_depth_counts_dicts_registered_classes_and_reasons(self) -> None:
        """Every kind of container is one level."""
        value: Any = None
        for i in range(MAX_DEPTH):
            value = [{"k": value}, Point(value), Abnormal(value)][i % 3]

        with pytest.raises(ValueError, match="nested deeper"):
            FrameEncoder(REG).encode(Send(P, value))
        data = FrameEncoder(REG, max_depth=MAX_DEPTH + 1).encode(Send(P, value))
        with pytest.raises(ProtocolError, match="nested deeper"):
            FrameDecoder(REG).feed(data)

    @pytest.mark.parametrize(
        ("header", "error"),
        [
            (b"\xdb", "incomplete"),  # str 32
            (b"\xc6", "incomplete"),  # bin 32
            (b"\xc9", "incomplete"),  # ext 32
            (b"\xdd", "max_array_len"),  # array 32
            (b"\xdf", "max_map_len"),  # map 32
        ],
    )
    def test_oversized_value_inside_a_frame_is_rejected_without_allocating(
        self, header: bytes, error: str
    ) -> None:
        """A string, bin, ext, array or map claiming 2**31 inside a small frame fails
        before anything of that size is allocated: no length may exceed the frame."""
        body = b"\x92\x0b" + header + struct.pack(">I", 2**31) + b"\x04"
        tracemalloc.start()
        try:
            with pytest.raises(ProtocolError, match=error):
                FrameDecoder().feed(frame(body))
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()

        assert peak < 64 * 1024

    def test_deep_value_on_the_sender_leaves_the_encoder_usable(self) -> None:
        """A refused value does not corrupt the encoder's state."""
        enc = FrameEncoder()
        with pytest.raises(ValueError, match="nested deeper"):
            enc.encode(Send(P, nested_tuples(1000)))
        with pytest.raises(ValueError, match=r"nested deeper|recursion"):
            enc.encode(Send(P, nested_lists(1000)))

        assert enc.encode(Send(P, (1,))) == encode(Send(P, (1,)))


# --------------------------------------------------------------------------- registry


class TestRegistry:
    def test_registered_classes_and_enums_round_trip(self) -> None:
        """Nested registered classes, enums and keyword-only fields come back equal."""
        value = Point(Job(3, Level.HIGH, tags=("a", "b")), [Color.GREEN, Point(1)])

        back = roundtrip(Send(P, value))

        assert isinstance(back, Send)
        assert same(value, back.msg)

    def test_unregistered_class_fails_on_the_sender(self) -> None:
        """Sending an instance of an unregistered class names the class."""
        with pytest.raises(Unregistered, match=r"test_wire\.NotRegistered is not registered"):
            FrameEncoder(REG).encode(Send(P, [NotRegistered(1)]))

    @pytest.mark.parametrize(
        "value",
        [{1, 2}, frozenset(), object(), Level.LOW, str],
    )
    def test_other_types_are_unregistered(self, value: object) -> None:
        """Sets, plain objects, classes and unregistered enums cannot travel."""
        with pytest.raises(Unregistered):
            encode(Send(P, value))

    def test_unknown_registered_name_is_a_protocol_error(self) -> None:
        """A type name the receiver never registered is refused, never imported."""
        data = FrameEncoder(REG).encode(Send(P, Point(1, 2)))

        with pytest.raises(ProtocolError, match=r"unknown message type 'test\.Point'"):
            FrameDecoder(Registry()).feed(data)

    def test_fields_that_fail_validation_are_a_protocol_error(self) -> None:
        """The class's validators run on decode."""
        body = msgpack.packb(
            [1, pid_ext(P), msgpack.ExtType(10, msgpack.packb(["test.Job", -1])), None]
        )

        with pytest.raises(ProtocolError, match=r"cannot build 'test\.Job'"):
            FrameDecoder(REG).feed(frame(body))

    def test_unknown_enum_value_is_a_protocol_error(self) -> None:
        """An enum value the receiver does not know is refused."""
        body = msgpack.packb(
            [1, pid_ext(P), msgpack.ExtType(10, msgpack.packb(["test.Level", 9])), None]
        )

        with pytest.raises(ProtocolError, match=r"cannot build 'test\.Level'"):
            FrameDecoder(REG).feed(frame(body))

    def test_missing_trailing_fields_take_their_defaults(self) -> None:
        """A sender with an older schema (fewer fields) still decodes."""
        body = msgpack.packb(
            [1, pid_ext(P), msgpack.ExtType(10, msgpack.packb(["test.Point", 5])), None]
        )

        assert [Send(P, Point(5))] == FrameDecoder(REG).feed(frame(body))

    def test_default_name_is_module_and_qualname(self) -> None:
        """Without a name, the class is known by module.qualname."""
        reg = Registry()

        @reg.message
        @attrs.frozen
        class Local:
            a: int

        assert reg.name_of(Local) == f"{__name__}.{Local.__qualname__}"
        assert Local in reg
        assert NotRegistered not in reg

    def test_registries_are_separate(self) -> None:
        """A class registered in one registry is unknown to another."""
        assert Point in REG
        assert Point not in DEFAULT_REGISTRY
        with pytest.raises(Unregistered):
            encode(Send(P, Point(1)))

    def test_registration_is_idempotent_but_names_are_unique(self) -> None:
        """Re-registering the same pair is fine; reusing a name or class is not."""
        reg = Registry()
        reg.register(Point, "p")
        reg.register(Point, "p")

        with pytest.raises(ValueError, match="already registered as 'p'"):
            reg.register(Point, "q")
        with pytest.raises(ValueError, match="already taken"):
            reg.register(Job, "p")

    @pytest.mark.parametrize("cls", [int, tuple, Pid, NotRegistered.__init__.__class__])
    def test_only_attrs_classes_and_enums_register(self, cls: type) -> None:
        """Built-in types, pids and arbitrary classes are refused."""
        with pytest.raises((TypeError, ValueError)):
            Registry().register(cls)

    def test_register_message_and_message_use_the_default_registry(self) -> None:
        """The module-level shortcuts register in DEFAULT_REGISTRY."""
        assert Shortcut in DEFAULT_REGISTRY
        assert Mode in DEFAULT_REGISTRY
        assert Send(P, Shortcut(1), None) == roundtrip(Send(P, Shortcut(1)), DEFAULT_REGISTRY)
        assert Send(P, Mode.ON, None) == roundtrip(Send(P, Mode.ON), DEFAULT_REGISTRY)
        assert MAX_FRAME == 8 * 1024 * 1024
