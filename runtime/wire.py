"""The wire codec of distribution: frames, values and operations. Pure: no sockets, no clock.

Frames
    Every frame is a 4-byte big-endian unsigned length followed by that many bytes of
    msgpack, the *body*. A body is exactly one msgpack value: trailing bytes are an
    error. A length of zero, or above the decoder's ``max_frame`` (default
    :data:`MAX_FRAME`, 8 MiB), is rejected as soon as the four length bytes arrive,
    before any of the body is read or buffered.

Operations
    The body of every frame is an *operation*: a msgpack array ``[opcode, *fields]``.
    Each operation is a small immutable ``NamedTuple`` class below (compare them by
    class too: ``Link(a, b) != Unlink(a, b)``), so a shell dispatches with ``match``:

    ====  ==============  ====================================================
    code  class           meaning
    ====  ==============  ====================================================
     1    :class:`Send`        deliver ``msg`` to ``to`` (a Pid or a Name)
     2    :class:`Link`        ``from_`` links to ``to``
     3    :class:`Unlink`      ``from_`` removes its link to ``to``
     4    :class:`Exit`        an exit signal, ``exit(to, reason)`` sent by ``from_``
     5    :class:`LinkExit`    linked ``from_`` ended with ``reason``; ``to`` drops the
                               link, then handles the signal
     6    :class:`Monitor`     ``watcher`` monitors ``target`` under ``ref``
     7    :class:`Demonitor`   drop the monitor ``ref`` on ``target``
     8    :class:`Down`        the monitored ``target`` ended with ``reason``
     9    :class:`CallReply`   the reply ``value`` to the call ``ref`` of ``to``
    10    :class:`Heartbeat`   keep-alive; carries nothing
    11    :class:`Goodbye`     the sender closes the connection on purpose
    12    :class:`CallRequest` a call: MONITOR the server ``to`` for the caller's node
                               under ``ref``, then deliver ``Call(ref, request,
                               caller)`` to it; the monitor ends when the reply leaves
    13    :class:`SendRun`     deliver ``msgs``, in order, to the pid ``to``: what
                               consecutive SENDs with no sender do; the body is
                               ``[13, to, *msgs]``, one message at least
    16    :class:`Hello`       handshake: versions, name, creation, nonce
    17    :class:`Challenge`   handshake: chosen version, name, creation, nonce
    18    :class:`Proof`       handshake: an HMAC-SHA256 digest
    19    :class:`Reject`      handshake: the sender refuses, with a reason
    ====  ==============  ====================================================

    Opcodes 16-19 are accepted only by a decoder made with ``handshake=True`` (see
    :mod:`runtime.handshake`), and opcodes 1-12 only by one made without it.

Values
    Inside operations travel msgpack's own types (None, bool, int of 64 bits, float, str,
    bytes, list, dict with str or bytes keys) plus these ext types:

    ====  =========================================================================
    ext   value
    ====  =========================================================================
     1    :class:`~runtime.pid.Pid`: ``>QQ`` serial and creation, then the node in UTF-8
     2    :class:`~runtime.pid.Ref`: same layout as a Pid
     3    an :class:`~runtime.reasons.ExitReason`: ``[tag, *fields]``; ``Crashed``
          travels as kind, message and traceback, never with its exception
     4    a tuple: its items as a msgpack array. Tuples stay tuples and lists stay lists
     5    :class:`~runtime.pid.Name`: ``[name, node]``
    10    a registered class (see :class:`Registry`): ``[type name, *field values]``
    ====  =========================================================================

    ``msgpack.Timestamp`` (ext -1) passes as msgpack defines it; any other ext code is a
    :class:`~runtime.errors.ProtocolError`. ``bytearray`` and ``memoryview`` arrive as
    ``bytes``. Only exact built-in types travel: subclasses of them (an ``OrderedDict``,
    a ``NamedTuple``, an ``IntEnum`` that was not registered) and every other class
    raise :class:`~runtime.errors.Unregistered` on the sender. Nothing is ever pickled,
    evaluated or imported by a name read from the wire.

Limits
    A value may nest at most ``max_depth`` (default :data:`MAX_DEPTH`, 64) levels, where
    lists, tuples, dicts, instances of registered classes (enum members too) and exit
    reasons each count one level, and the operation itself is the first. The sender
    refuses a deeper value with ``ValueError``; the receiver rejects it with
    ``ProtocolError``, and its Python stack never grows with the depth of what it
    receives (msgpack's C decoder stops at 1024 levels, the ext hooks at the limit, the
    final check is iterative). Strings, byte strings, arrays, maps and ext payloads
    cannot be longer than the frame that holds them, so no allocation exceeds the frame
    limit.

Errors
    A decoder that raised :class:`~runtime.errors.ProtocolError` is *poisoned*: the stream
    is desynchronized, and every later :meth:`FrameDecoder.feed` raises again. The shell
    closes the connection. Encoding checks everything the peer will check, so a local
    mistake never costs the connection: it raises ``TypeError`` for something that is
    not a well-formed operation (``Send(to="x")``), :class:`~runtime.errors.Unregistered`
    (a ``TypeError``) for a value of a class that may not travel, and ``ValueError`` for
    a value out of range (an int beyond 64 bits, a str with surrogates, a dict key that
    is not str or bytes, too deep, a frame over the limit). The encoder stays usable.

Neither class is thread-safe: use one encoder and one decoder per connection. The
module-level shortcuts (:func:`encode`, :func:`pack_value` ...) keep one per thread.
"""

from __future__ import annotations

import enum
import operator
import struct
import threading
from collections.abc import Callable, Iterable
from typing import Any, Final, NamedTuple, TypeAlias, TypeVar, final, overload

import attrs
import msgpack

from .errors import ProtocolError, Unregistered
from .pid import Name, Pid, Ref
from .reasons import (
    KILL,
    KILLED,
    NOPROC,
    NORMAL,
    SHUTDOWN,
    Abnormal,
    Crashed,
    ExitReason,
    Kill,
    Killed,
    NoConnection,
    NoProc,
    Normal,
    Shutdown,
)

__all__ = [
    "DEFAULT_REGISTRY",
    "EXT_MESSAGE",
    "EXT_NAME",
    "EXT_PID",
    "EXT_REASON",
    "EXT_REF",
    "EXT_TUPLE",
    "HANDSHAKE_MAX_FRAME",
    "MAX_DEPTH",
    "MAX_FRAME",
    "OPCODES",
    "CallReply",
    "CallRequest",
    "Challenge",
    "Demonitor",
    "Down",
    "Exit",
    "FrameDecoder",
    "FrameEncoder",
    "Goodbye",
    "Heartbeat",
    "Hello",
    "Link",
    "LinkExit",
    "Monitor",
    "Op",
    "Proof",
    "Registry",
    "Reject",
    "Send",
    "SendRun",
    "Unlink",
    "close_run",
    "encode",
    "encode_many",
    "message",
    "pack_value",
    "register_message",
    "unpack_value",
]

MAX_FRAME: Final = 8 * 1024 * 1024
"""Default largest frame body, in bytes (8 MiB)."""

MAX_DEPTH: Final = 64
"""Default deepest nesting of a value, counting the operation as level 1."""

HANDSHAKE_MAX_FRAME: Final = 4096
"""Largest frame body accepted before the peer is authenticated."""

EXT_PID: Final = 1
EXT_REF: Final = 2
EXT_REASON: Final = 3
EXT_TUPLE: Final = 4
EXT_NAME: Final = 5
EXT_MESSAGE: Final = 10

_T = TypeVar("_T")
_C = TypeVar("_C", bound=type)

_LENGTH = struct.Struct(">I")
_IDENT = struct.Struct(">QQ")  # serial, creation of a Pid or Ref
_U64: Final = 2**64
_CACHE_MAX: Final = 4096  # entries of each pid/ref cache; cleared when full

_ExtType: Any = msgpack.ExtType
_new_tuple = tuple.__new__

# Bytes that can start a container (array, map, ext) in msgpack. A value nested D deep
# needs at least D of them in its encoding, so a body holding no more than ``max_depth``
# of them needs no walk to prove its depth. ``body.translate(_HEADS)`` maps each map
# head to 2, every other container head to 1 and all other bytes to 0.
_MAP_HEADS = frozenset(range(0x80, 0x90)) | {0xDE, 0xDF}
_CONTAINER_HEADS = frozenset(range(0x90, 0xA0)) | {
    0xC7,
    0xC8,
    0xC9,
    0xD4,
    0xD5,
    0xD6,
    0xD7,
    0xD8,
    0xDC,
    0xDD,
}
_HEADS = bytes(2 if b in _MAP_HEADS else 1 if b in _CONTAINER_HEADS else 0 for b in range(256))


# --------------------------------------------------------------------------- registry


@attrs.frozen
class _Entry:
    name: str
    cls: type
    # Field values of an instance, in order; None for an enum (encoded by its value).
    values: Callable[[Any], tuple[Any, ...]] | None
    # Builds an instance from decoded field values.
    build: Callable[[list[Any]], object]


def _getter(names: list[str]) -> Callable[[Any], tuple[Any, ...]]:
    if not names:
        return lambda obj: ()
    if len(names) == 1:
        get_one = operator.attrgetter(names[0])
        return lambda obj: (get_one(obj),)
    return operator.attrgetter(*names)


@final
class Registry:
    """The classes whose instances may travel, each under a name stable across processes.

    A class is known on the wire by its *name*, never by the order of registration:
    ``module.qualname`` by default, or one given explicitly (shorter frames, and the
    class may move between modules). Every node must register the same classes under
    the same names. attrs classes travel as their ``init`` fields in declaration order
    (frozen classes are recommended); the field order is the schema, so add new fields
    only at the end, with defaults. ``Enum`` classes (``IntEnum``, ``StrEnum`` ...)
    travel as their member's value. Decoding runs the class's ``__init__`` with its
    validators and converters, so keep them free of side effects.

    :data:`DEFAULT_REGISTRY` serves :func:`register_message` and :func:`message`; make a
    separate ``Registry()`` to isolate a set of classes (tests, plugins).
    """

    def __init__(self) -> None:
        self._by_type: dict[type, _Entry] = {}
        self._by_name: dict[str, _Entry] = {}

    def register(self, cls: _C, name: str | None = None) -> _C:
        """Allow instances of *cls* on the wire under *name*; returns *cls*.

        Registering the same class under the same name again does nothing.

        Raises:
            TypeError: *cls* is neither an attrs class nor an ``Enum``.
            ValueError: the name is taken by another class, the class is registered
                under another name, or the name is empty or longer than 255 characters.
        """
        if name is None:
            name = f"{cls.__module__}.{cls.__qualname__}"
        if not isinstance(name, str) or not 0 < len(name) <= 255:
            raise ValueError(f"a wire name must be a str of 1..255 characters, not {name!r}")
        if cls in _BUILTIN_TYPES:
            raise ValueError(f"{cls.__qualname__} travels natively; it cannot be registered")
        old = self._by_type.get(cls)
        if old is not None:
            if old.name == name:
                return cls
            raise ValueError(f"{cls.__qualname__} is already registered as {old.name!r}")
        taken = self._by_name.get(name)
        if taken is not None:
            raise ValueError(f"wire name {name!r} is already taken by {taken.cls.__qualname__}")
        entry = self._entry(cls, name)
        self._by_type[cls] = entry
        self._by_name[name] = entry
        return cls

    @overload
    def message(self, cls: _C) -> _C: ...

    @overload
    def message(self, cls: None = None, *, name: str | None = None) -> Callable[[_C], _C]: ...

    def message(self, cls: Any = None, *, name: str | None = None) -> Any:
        """Decorator form of :meth:`register`: ``@reg.message`` or ``@reg.message(name="x")``."""
        if cls is not None:
            return self.register(cls)

        def decorate(c: _C) -> _C:
            return self.register(c, name)

        return decorate

    def name_of(self, cls: type) -> str:
        """The wire name of *cls*.

        Raises:
            Unregistered: *cls* was never registered here.
        """
        entry = self._by_type.get(cls)
        if entry is None:
            raise _unregistered(cls)
        return entry.name

    def __contains__(self, cls: object) -> bool:
        return cls in self._by_type

    @staticmethod
    def _entry(cls: type, name: str) -> _Entry:
        if isinstance(cls, type) and issubclass(cls, enum.Enum):
            enum_cls: Any = cls
            return _Entry(name, cls, None, lambda v: enum_cls(*v))
        if not (isinstance(cls, type) and attrs.has(cls)):
            raise TypeError(f"only attrs classes and Enum classes can be registered, not {cls!r}")
        init_fields = [a for a in attrs.fields(cls) if a.init]
        names = [a.name for a in init_fields]
        ctor: Any = cls
        if any(a.kw_only for a in init_fields):
            aliases = [a.alias for a in init_fields]

            def build(v: list[Any]) -> object:
                if len(v) > len(aliases):
                    raise TypeError(f"{len(v)} values for {len(aliases)} fields")
                return ctor(**dict(zip(aliases, v, strict=False)))

        else:

            def build(v: list[Any]) -> object:
                return ctor(*v)

        return _Entry(name, cls, _getter(names), build)


DEFAULT_REGISTRY: Final = Registry()
"""The registry that :func:`register_message`, :func:`message` and the codecs use by default."""

register_message = DEFAULT_REGISTRY.register
message = DEFAULT_REGISTRY.message


def _unregistered(cls: type) -> Unregistered:
    return Unregistered(
        f"{cls.__module__}.{cls.__qualname__} is not registered for the wire: register it "
        "with runtime.wire.register_message (attrs classes and Enum classes only), or send "
        "built-in msgpack types"
    )


# --------------------------------------------------------------------------- operations


def _by_class(cls: type[_T]) -> type[_T]:
    """Make NamedTuple operations compare equal only within their own class."""

    def __eq__(self: tuple[Any, ...], other: object) -> bool:
        return type(other) is type(self) and tuple.__eq__(self, other)

    def __ne__(self: tuple[Any, ...], other: object) -> bool:
        return not __eq__(self, other)

    cls.__eq__ = __eq__  # type: ignore[assignment,method-assign]
    cls.__ne__ = __ne__  # type: ignore[assignment,method-assign]
    cls.__hash__ = tuple.__hash__  # type: ignore[assignment]
    return cls


@_by_class
class Send(NamedTuple):
    """SEND (1): deliver *msg* to the process *to* (a Pid, or a Name registered there)."""

    to: Pid | Name
    msg: object
    sender: Pid | None = None


@_by_class
class Link(NamedTuple):
    """LINK (2): *from_* links itself to *to*; *to*'s node completes the other half."""

    from_: Pid
    to: Pid


@_by_class
class Unlink(NamedTuple):
    """UNLINK (3): *from_* removes its link with *to*."""

    from_: Pid
    to: Pid


@_by_class
class Exit(NamedTuple):
    """EXIT (4): the exit signal ``exit(to, reason)`` sent by *from_*; links are untouched."""

    from_: Pid
    to: Pid
    reason: ExitReason


@_by_class
class LinkExit(NamedTuple):
    """LINK_EXIT (5): *from_*, linked to *to*, ended with *reason*.

    *to*'s node removes the link, then treats the signal as Erlang does: it kills *to*
    unless *reason* is normal or *to* traps exits (then *to* gets an EXIT message).
    """

    from_: Pid
    to: Pid
    reason: ExitReason


@_by_class
class Monitor(NamedTuple):
    """MONITOR (6): *watcher* monitors *target* (a Pid or a Name) under *ref*."""

    ref: Ref
    watcher: Pid
    target: Pid | Name


@_by_class
class Demonitor(NamedTuple):
    """DEMONITOR (7): drop the monitor *ref* held on *target*."""

    ref: Ref
    target: Pid | Name


@_by_class
class Down(NamedTuple):
    """DOWN (8): the *target* monitored under *ref* by *watcher* ended with *reason*."""

    ref: Ref
    target: Pid | Name
    reason: ExitReason
    watcher: Pid


@_by_class
class CallReply(NamedTuple):
    """CALL_REPLY (9): *value* answers the call named *ref* made by the process *to*."""

    ref: Ref
    value: object
    to: Pid


@_by_class
class CallRequest(NamedTuple):
    """CALL (12): the call *ref* of *caller* (None: made outside any process) to the
    server *to* (a Pid, or a Name registered there).

    One operation for what would be a MONITOR of *to* for the caller's node under *ref*
    followed by a SEND of ``Call(ref, request, caller)``: *to*'s node sets the monitor,
    then delivers the message. The monitor ends when the reply to *ref* leaves that node
    (or at a DEMONITOR, or when the server ends: then a DOWN), so a call answered needs
    no DEMONITOR.
    """

    to: Pid | Name
    caller: Pid | None
    ref: Ref
    request: object


@_by_class
class Heartbeat(NamedTuple):
    """HEARTBEAT (10): the sender is alive. Sent when the connection has been idle."""


@_by_class
class Goodbye(NamedTuple):
    """GOODBYE (11): the sender closes the connection on purpose (e.g. its node stops)."""

    reason: str = ""


@_by_class
class Hello(NamedTuple):
    """HELLO (16): the initiator's opening: versions it speaks, its name and creation, a nonce."""

    versions: tuple[int, ...]
    name: str
    creation: int
    nonce: bytes


@_by_class
class Challenge(NamedTuple):
    """CHALLENGE (17): the acceptor's answer: the chosen version, its name and creation, a nonce."""

    version: int
    name: str
    creation: int
    nonce: bytes


@_by_class
class Proof(NamedTuple):
    """PROOF (18): an HMAC-SHA256 digest proving knowledge of the shared secret."""

    digest: bytes


@_by_class
class Reject(NamedTuple):
    """REJECT (19): the sender refuses the handshake, for the stated reason."""

    reason: str


@_by_class
class SendRun(NamedTuple):
    """SEND_RUN (13): deliver each of *msgs* (a non-empty list), in order, to the pid
    *to*, as that many SENDs with no sender would.

    A sender writes one frame for many small messages to one process (see
    :meth:`FrameEncoder.open_run`), and the receiver decodes them in one msgpack call;
    :meth:`FrameDecoder.feed_runs` also gathers consecutive SENDs into one.
    """

    to: Pid
    msgs: list[Any]


Op: TypeAlias = (
    Send
    | Link
    | Unlink
    | Exit
    | LinkExit
    | Monitor
    | Demonitor
    | Down
    | CallReply
    | CallRequest
    | SendRun
    | Heartbeat
    | Goodbye
    | Hello
    | Challenge
    | Proof
    | Reject
)

OPCODES: Final[dict[type, int]] = {
    Send: 1,
    Link: 2,
    Unlink: 3,
    Exit: 4,
    LinkExit: 5,
    Monitor: 6,
    Demonitor: 7,
    Down: 8,
    CallReply: 9,
    Heartbeat: 10,
    Goodbye: 11,
    CallRequest: 12,
    SendRun: 13,
    Hello: 16,
    Challenge: 17,
    Proof: 18,
    Reject: 19,
}
"""The opcode of each operation class."""

_OP_HELLO: Final = 16
_OP_SEND_RUN: Final = 13
_REASON_TYPES: Final = frozenset(
    {Normal, Shutdown, Kill, Killed, Crashed, NoProc, NoConnection, Abnormal}
)
_BUILTIN_TYPES: Final = frozenset(
    {type(None), bool, int, float, str, bytes, list, tuple, dict, Pid, Ref, Name}
    | set(_REASON_TYPES)
    | set(OPCODES)
)
# Types that never hold another value: the depth walk skips them.
_LEAVES: Final = frozenset({type(None), bool, int, float, str, bytes, Pid, Ref, Name})


_DESTS: Final = frozenset({Pid, Name})
# Values msgpack packs natively, with no Python hook and no nesting to check.
_SCALARS: Final = frozenset({type(None), bool, int, float, str, bytes})


def _is_u64(x: object) -> bool:
    return type(x) is int and 0 <= x < _U64


def _is_name(x: object) -> bool:
    return type(x) is str and 0 < len(x) <= 255


# One check per opcode, over the whole array ``[opcode, *fields]``: the decoder applies it
# to what arrives, and the encoder to what it is asked to send, so a local mistake is the
# sender's TypeError and never a frame that makes the peer drop the connection.
_CHECKS: Final[dict[int, Callable[[list[Any]], bool]]] = {
    1: lambda a: len(a) == 4 and type(a[1]) in _DESTS and (a[3] is None or type(a[3]) is Pid),
    2: lambda a: len(a) == 3 and type(a[1]) is Pid and type(a[2]) is Pid,
    3: lambda a: len(a) == 3 and type(a[1]) is Pid and type(a[2]) is Pid,
    4: lambda a: (
        len(a) == 4 and type(a[1]) is Pid and type(a[2]) is Pid and isinstance(a[3], ExitReason)
    ),
    5: lambda a: (
        len(a) == 4 and type(a[1]) is Pid and type(a[2]) is Pid and isinstance(a[3], ExitReason)
    ),
    6: lambda a: len(a) == 4 and type(a[1]) is Ref and type(a[2]) is Pid and type(a[3]) in _DESTS,
    7: lambda a: len(a) == 3 and type(a[1]) is Ref and type(a[2]) in _DESTS,
    8: lambda a: (
        len(a) == 5
        and type(a[1]) is Ref
        and type(a[2]) in _DESTS
        and isinstance(a[3], ExitReason)
        and type(a[4]) is Pid
    ),
    9: lambda a: len(a) == 4 and type(a[1]) is Ref and type(a[3]) is Pid,
    10: lambda a: len(a) == 1,
    11: lambda a: len(a) == 2 and type(a[1]) is str,
    12: lambda a: (
        len(a) == 5
        and type(a[1]) in _DESTS
        and (a[2] is None or type(a[2]) is Pid)
        and type(a[3]) is Ref
    ),
    13: lambda a: len(a) >= 3 and type(a[1]) is Pid,
    16: lambda a: (
        len(a) == 5
        and type(a[1]) is list
        and 0 < len(a[1]) <= 16
        and all(_is_u64(v) for v in a[1])
        and _is_name(a[2])
        and _is_u64(a[3])
        and type(a[4]) is bytes
    ),
    17: lambda a: (
        len(a) == 5 and _is_u64(a[1]) and _is_name(a[2]) and _is_u64(a[3]) and type(a[4]) is bytes
    ),
    18: lambda a: len(a) == 2 and type(a[1]) is bytes,
    19: lambda a: len(a) == 2 and type(a[1]) is str,
}
_OP_NAMES: Final = {
    1: "SEND",
    2: "LINK",
    3: "UNLINK",
    4: "EXIT",
    5: "LINK_EXIT",
    6: "MONITOR",
    7: "DEMONITOR",
    8: "DOWN",
    9: "CALL_REPLY",
    10: "HEARTBEAT",
    11: "GOODBYE",
    12: "CALL",
    13: "SEND_RUN",
    16: "HELLO",
    17: "CHALLENGE",
    18: "PROOF",
    19: "REJECT",
}
_CLASSES: Final = {code: cls for cls, code in OPCODES.items()}


# What a decoder accepts: opcode -> (class, check of the array ``[opcode, *fields]``).
_SESSION_OPS: Final = {code: (_CLASSES[code], _CHECKS[code]) for code in range(1, 14)}
_HANDSHAKE_OPS: Final = {code: (_CLASSES[code], _CHECKS[code]) for code in range(16, 20)}


# --------------------------------------------------------------------------- values


def _walk(root: object, limit: int, by_type: dict[type, _Entry], keys: bool) -> str | None:
    """What is wrong with *root*: nested deeper than *limit*, or (if *keys*) a dict key
    msgpack's strict map keys refuse; None if nothing. Iterative: never a RecursionError."""
    stack: list[tuple[Any, int]] = [(root, 1)]
    pop = stack.pop
    push = stack.append
    leaves = _LEAVES
    while stack:
        obj, depth = pop()
        t = type(obj)
        children: Iterable[Any]
        if t is list or t is tuple:
            children = obj
        elif t is dict:
            if keys and not _KEY_TYPES.issuperset(map(type, obj)):
                bad = next(k for k in obj if type(k) not in _KEY_TYPES)
                return f"dict key {bad!r} is not a str or bytes"
            children = obj.values()
        elif t is Abnormal:
            children = (obj.value,)
        elif t in _REASON_TYPES:
            children = ()
        else:
            entry = by_type.get(t)
            if entry is None:
                continue
            children = () if entry.values is None else entry.values(obj)
        if depth > limit:
            return f"value nested deeper than {limit} levels"
        for child in children:
            if type(child) not in leaves:
                push((child, depth + 1))
    return None


_KEY_TYPES: Final = frozenset({str, bytes})


class _Packing:
    """Turns values into msgpack bodies; shared by :class:`FrameEncoder` and :func:`pack_value`.

    *base* is the depth of the value packed: 1 for an operation, 0 for a bare value,
    so that the ext nesting counted here is a lower bound of the real depth.
    """

    def __init__(self, registry: Registry, max_depth: int, base: int) -> None:
        self.registry = registry
        self.max_depth = max_depth
        self._base = base
        self._depth = base
        # Set when a native list or dict was handed to msgpack anywhere in the value:
        # only those escape the hooks' exact depth count (and only dicts need their keys
        # checked), so without one the value needs no walk at all.
        self._native = False
        # One packer per ext nesting level, made on first use: a level's packer is
        # mid-pack while the payloads of its ext values are packed one level down.
        self._packers: list[Any] = []
        self._pid_cache: dict[Pid, Any] = {}
        self._ref_cache: dict[Ref, Any] = {}
        self._handlers: dict[type, Callable[[Any], Any]] = {
            Pid: self._pid,
            Ref: self._ref,
            tuple: self._tuple,
            Name: self._name,
            Shutdown: self._shutdown,
            Crashed: self._crashed,
            NoConnection: self._noconnection,
            Abnormal: self._abnormal,
        }
        for cls, tag in ((Normal, 0), (Kill, 2), (Killed, 3), (NoProc, 5)):
            self._handlers[cls] = _constant(
                _new_tuple(_ExtType, (EXT_REASON, msgpack.packb([tag])))
            )
        self._shutdown_plain = _new_tuple(_ExtType, (EXT_REASON, msgpack.packb([1, None])))

    def _packer(self, level: int) -> Any:
        while len(self._packers) <= level:
            self._packers.append(
                msgpack.Packer(
                    default=self._default,
                    strict_types=True,
                    use_bin_type=True,
                    buf_size=64 * 1024 if not self._packers else 1024,
                )
            )
        return self._packers[level]

    def pack(self, value: object) -> bytes:
        """The msgpack body of *value*; see the module doc for what can travel.

        Raises:
            Unregistered: a value of a class that may not travel.
            ValueError: out of range, too deep, or a dict key that is not str or bytes.
        """
        t = type(value)
        return self._pack(value, t is list or t is dict, self.max_depth)

    def pack_fields(self, fields: list[Any]) -> bytes:
        """The msgpack body of the operation array *fields* (``[opcode, *fields]``)."""
        native = False
        for x in fields:
            t = type(x)
            if t is list or t is dict:
                native = True
                break
        return self._pack(fields, native, self.max_depth)

    def pack_field(self, value: object) -> bytes:
        """The msgpack encoding of *value* as a field of an operation (one level below
        the operation's array), checked as :meth:`pack_fields` checks it."""
        t = type(value)
        return self._pack(value, t is list or t is dict, self.max_depth - 1)

    def _pack(self, value: object, native: bool, limit: int) -> bytes:
        """Pack *value*, whose own containers may nest at most *limit* levels."""
        self._depth = self._base
        self._native = native
        packers = self._packers
        packer = packers[0] if packers else self._packer(0)
        try:
            body: bytes = packer.pack(value)
        except (Unregistered, ValueError):
            raise
        except (OverflowError, TypeError) as exc:
            raise ValueError(f"cannot encode value: {exc}") from exc
        if self._native:
            # A native list or dict is in there: the walk is needed if a dict may be
            # present (to check its keys), or if there are more container heads than
            # levels allowed. Ext values were counted exactly by the hooks.
            heads = body.translate(_HEADS)
            if b"\x02" in heads or (
                len(body) > limit and len(heads) - heads.count(b"\x00") > limit
            ):
                problem = _walk(value, limit, self.registry._by_type, keys=True)
                if problem is not None:
                    raise ValueError(f"cannot encode value: {problem}")
        return body

    def _default(self, obj: object) -> Any:
        handler = self._handlers.get(type(obj))
        if handler is not None:
            return handler(obj)
        entry = self.registry._by_type.get(type(obj))
        if entry is not None:
            return self._registered(entry, obj)
        if type(obj) is int:
            raise ValueError(f"integer {obj} does not fit in 64 bits")
        raise _unregistered(type(obj))

    def _nested(self, code: int, items: list[Any]) -> Any:
        depth = self._depth + 1
        if depth > self.max_depth:
            raise ValueError(f"value nested deeper than {self.max_depth} levels")
        self._depth = depth
        if not self._native:
            for x in items:
                t = type(x)
                if t is list or t is dict:
                    self._native = True
                    break
        try:
            packers = self._packers
            packer = packers[depth] if depth < len(packers) else self._packer(depth)
            return _new_tuple(_ExtType, (code, packer.pack(items)))
        finally:
            self._depth = depth - 1

    def _pid(self, pid: Pid) -> Any:
        ext = self._pid_cache.get(pid)
        if ext is None:
            ext = _new_tuple(_ExtType, (EXT_PID, _ident(pid)))
            if len(self._pid_cache) >= _CACHE_MAX:
                self._pid_cache.clear()
            self._pid_cache[pid] = ext
        return ext

    def _ref(self, ref: Ref) -> Any:
        ext = self._ref_cache.get(ref)
        if ext is None:
            ext = _new_tuple(_ExtType, (EXT_REF, _ident(ref)))
            if len(self._ref_cache) >= _CACHE_MAX:
                self._ref_cache.clear()
            self._ref_cache[ref] = ext
        return ext

    def _tuple(self, obj: tuple[Any, ...]) -> Any:
        return self._nested(EXT_TUPLE, list(obj))

    def _name(self, obj: Name) -> Any:
        if type(obj.name) is not str or not _opt_str(obj.node):
            raise ValueError(f"{obj!r} cannot travel: name and node must be str")
        return _new_tuple(_ExtType, (EXT_NAME, msgpack.packb([obj.name, obj.node])))

    def _shutdown(self, reason: Shutdown) -> Any:
        if reason.detail is None:
            return self._shutdown_plain
        if type(reason.detail) is not str:
            raise ValueError(f"{reason!r} cannot travel: detail must be a str or None")
        return self._nested(EXT_REASON, [1, reason.detail])

    def _crashed(self, reason: Crashed) -> Any:
        fields = [4, reason.kind, reason.message, reason.traceback]
        if not all(type(f) is str for f in fields[1:]):
            raise ValueError(f"{reason!r} cannot travel: kind, message, traceback must be str")
        return self._nested(EXT_REASON, fields)

    def _noconnection(self, reason: NoConnection) -> Any:
        if type(reason.node) is not str:
            raise ValueError(f"{reason!r} cannot travel: node must be a str")
        return self._nested(EXT_REASON, [6, reason.node])

    def _abnormal(self, reason: Abnormal) -> Any:
        return self._nested(EXT_REASON, [7, reason.value])

    def _registered(self, entry: _Entry, obj: Any) -> Any:
        if entry.values is None:
            return self._nested(EXT_MESSAGE, [entry.name, obj.value])
        return self._nested(EXT_MESSAGE, [entry.name, *entry.values(obj)])


def _constant(ext: Any) -> Callable[[Any], Any]:
    return lambda _: ext


def _opt_str(x: object) -> bool:
    return x is None or type(x) is str


def _ident(x: Pid | Ref) -> bytes:
    try:
        return _IDENT.pack(x.serial, x.creation) + x.node.encode()
    except (struct.error, AttributeError, TypeError) as exc:
        raise ValueError(
            f"{x!r} cannot travel: serial and creation must be ints in [0, 2**64), node a str"
        ) from exc


class _Unpacking:
    """Turns msgpack bodies into values; shared by :class:`FrameDecoder` and :func:`unpack_value`.

    *base* is as for :class:`_Packing`.
    """

    def __init__(
        self, registry: Registry, max_depth: int, base: int, *, allow_ext: bool = True
    ) -> None:
        self.registry = registry
        self.max_depth = max_depth
        self.base = base
        self.depth = base
        # Set when an ext value held a native list or dict (see _Packing._native); the
        # decoder resets it before each frame.
        self.native = False
        self._pid_cache: dict[bytes, Pid] = {}
        self._ref_cache: dict[bytes, Ref] = {}
        self.ext_hook: Callable[[int, bytes], object] = (
            self._ext_hook if allow_ext else self._no_ext_hook
        )

    def unpack(self, body: bytes | memoryview) -> object:
        """Decode one complete body; raises ProtocolError for anything malformed."""
        self.depth = self.base
        try:
            value = msgpack.unpackb(body, ext_hook=self.ext_hook)
        except ProtocolError:
            raise
        except Exception as exc:  # any failure on untrusted input is the peer's doing
            raise ProtocolError(f"malformed frame body: {type(exc).__name__}: {exc}") from exc
        self.check_depth(body, value)
        return value

    def check_depth(self, body: bytes | memoryview, value: object) -> None:
        """Raise ProtocolError if *value*, decoded from *body*, nests too deep."""
        limit = self.max_depth
        if len(body) <= limit:
            return
        raw = body.tobytes() if isinstance(body, memoryview) else body
        heads = raw.translate(_HEADS)
        if len(heads) - heads.count(b"\x00") > limit:
            problem = _walk(value, limit, self.registry._by_type, keys=False)
            if problem is not None:
                raise ProtocolError(problem)

    def _no_ext_hook(self, code: int, data: bytes) -> object:
        raise ProtocolError(f"ext type {code} is not allowed during the handshake")

    def _ext_hook(self, code: int, data: bytes) -> object:
        if code == EXT_PID:
            pid = self._pid_cache.get(data)
            if pid is None:
                pid = Pid(*_unident(data, "pid"))
                if len(self._pid_cache) >= _CACHE_MAX:
                    self._pid_cache.clear()
                self._pid_cache[data] = pid
            return pid
        if code == EXT_REF:
            ref = self._ref_cache.get(data)
            if ref is None:
                ref = Ref(*_unident(data, "ref"))
                if len(self._ref_cache) >= _CACHE_MAX:
                    self._ref_cache.clear()
                self._ref_cache[data] = ref
            return ref
        if code == EXT_TUPLE:
            return tuple(self._nested(data, "tuple"))
        if code == EXT_REASON:
            return _reason(self._nested(data, "exit reason"))
        if code == EXT_MESSAGE:
            return self._message(self._nested(data, "registered message"))
        if code == EXT_NAME:
            try:
                items = msgpack.unpackb(data, ext_hook=_ext_in_name)
            except ProtocolError:
                raise
            except Exception as exc:
                raise ProtocolError(f"malformed name: {exc}") from exc
            if (
                type(items) is not list
                or len(items) != 2
                or type(items[0]) is not str
                or not _opt_str(items[1])
            ):
                raise ProtocolError("malformed name")
            return Name(items[0], items[1])
        raise ProtocolError(f"unknown ext type {code}")

    def _nested(self, data: bytes, what: str) -> list[Any]:
        depth = self.depth + 1
        if depth > self.max_depth:
            raise ProtocolError(f"value nested deeper than {self.max_depth} levels")
        self.depth = depth
        try:
            items = msgpack.unpackb(data, ext_hook=self.ext_hook)
        finally:
            self.depth = depth - 1
        if type(items) is not list:
            raise ProtocolError(f"malformed {what}: expected an array")
        if not self.native:
            for x in items:
                t = type(x)
                if t is list or t is dict:
                    self.native = True
                    break
        return items

    def _message(self, items: list[Any]) -> object:
        if not items or type(items[0]) is not str:
            raise ProtocolError("malformed registered message: no type name")
        entry = self.registry._by_name.get(items[0])
        if entry is None:
            raise ProtocolError(f"unknown message type {items[0]!r}: not registered here")
        values = items[1:]
        if entry.values is None and len(values) != 1:
            raise ProtocolError(f"malformed enum {items[0]!r}")
        try:
            return entry.build(values)
        except Exception as exc:
            raise ProtocolError(
                f"cannot build {items[0]!r} from its fields: {type(exc).__name__}: {exc}"
            ) from exc


def _ext_in_name(code: int, data: bytes) -> object:
    raise ProtocolError(f"malformed name: ext type {code} inside")


def _unident(data: bytes, what: str) -> tuple[str, int, int]:
    if len(data) < _IDENT.size:
        raise ProtocolError(f"malformed {what}: {len(data)} bytes")
    serial, creation = _IDENT.unpack_from(data)
    try:
        node = data[_IDENT.size :].decode()
    except UnicodeDecodeError as exc:
        raise ProtocolError(f"malformed {what}: node name is not UTF-8") from exc
    return node, serial, creation


def _reason(items: list[Any]) -> ExitReason:
    n = len(items)
    tag = items[0] if n else None
    if n == 1:
        if tag == 0:
            return NORMAL
        if tag == 2:
            return KILL
        if tag == 3:
            return KILLED
        if tag == 5:
            return NOPROC
    elif n == 2:
        if tag == 1 and _opt_str(items[1]):
            return SHUTDOWN if items[1] is None else Shutdown(items[1])
        if tag == 6 and type(items[1]) is str:
            return NoConnection(items[1])
        if tag == 7:
            return Abnormal(items[1])
    elif n == 4 and tag == 4 and all(type(x) is str for x in items[1:]):
        return Crashed(items[1], items[2], items[3])
    raise ProtocolError(f"malformed exit reason with tag {tag!r}")


# --------------------------------------------------------------------------- frames


@final
class FrameEncoder:
    """Encodes operations into frames (length prefix + msgpack body).

    Args:
        registry: the classes allowed to travel; default :data:`DEFAULT_REGISTRY`.
        max_frame: the largest body this encoder produces, in bytes; must not exceed
            what the peer's decoder accepts.
        max_depth: the deepest value it encodes; must not exceed the peer's limit.
    """

    def __init__(
        self,
        registry: Registry | None = None,
        *,
        max_frame: int = MAX_FRAME,
        max_depth: int = MAX_DEPTH,
    ) -> None:
        if not 0 < max_frame < 2**32:
            raise ValueError(f"max_frame must be in [1, 2**32), not {max_frame}")
        if max_depth < 2:
            raise ValueError(f"max_depth must be at least 2, not {max_depth}")
        self.max_frame = max_frame
        self._packing = _Packing(registry or DEFAULT_REGISTRY, max_depth, base=1)
        # SEND's fast path: the bytes of ``[1, to`` for each destination, the last one
        # used at hand; a packer with no Python hook for values msgpack packs natively.
        self._heads: dict[Pid | Name, bytes] = {}
        self._exts: dict[Pid | Ref | Name, bytes] = {}  # the packed ext of each
        self._last_to: object = None
        self._last_head = b""
        self._last_size = 1
        # CALL's fast path: the bytes of ``[12, to, caller`` for the last pair.
        self._call_to: object = None
        self._call_caller: object = None
        self._call_head = b""
        self._plain = msgpack.Packer(strict_types=True, use_bin_type=True).pack

    def encode(self, op: Op) -> bytes:
        """One frame holding *op*.

        Raises:
            TypeError: *op* is not an operation.
            Unregistered: a value inside *op* is of a class that may not travel.
            ValueError: a value is out of range, too deep, or the frame is over the limit.
        """
        t = type(op)
        if t is Send:
            return self.encode_send(*op)
        if t is CallRequest:
            frame = self._call(op)
            if frame is not None:
                return frame
        elif t is CallReply:
            frame = self._reply(op)
            if frame is not None:
                return frame
        elif t in _ID_OPS:
            frame = self._ids(op, _ID_OPS[t])
            if frame is not None:
                return frame
        body = self._packing.pack_fields(_fields(op))
        n = len(body)
        if n > self.max_frame:
            raise ValueError(f"frame of {n} bytes exceeds limit {self.max_frame}")
        return _LENGTH.pack(n) + body

    def encode_send(self, to: Pid | Name, msg: object, sender: Pid | None = None) -> bytes:
        """The frame of ``Send(to, msg, sender)``, the same bytes as :meth:`encode` makes
        of it, without building the operation. Raises as :meth:`encode`."""
        if sender is not None and type(sender) is not Pid:
            raise TypeError(f"malformed SEND: {Send(to, msg, sender)!r}")
        if to is self._last_to:
            head = self._last_head
        else:
            try:
                cached = self._heads.get(to)
            except TypeError:  # a Name holding something unhashable: refused below
                cached = None
            head = cached if cached is not None else self._send_head(to, msg, sender)
            self._last_to = to
            self._last_head = head
            self._last_size = len(head) + 1  # the head and the tail (no sender)
        tail = b"\xc0" if sender is None else (self._exts.get(sender) or self._id_ext(sender))
        if type(msg) in _SCALARS:
            try:
                body = self._plain(msg)
            except OverflowError:
                raise ValueError(f"integer {msg} does not fit in 64 bits") from None
        else:
            body = self._shallow(msg) or self._packing.pack_field(msg)
        n = len(head) + len(body) + len(tail)
        if n > self.max_frame:
            raise ValueError(f"frame of {n} bytes exceeds limit {self.max_frame}")
        return b"".join((_LENGTH.pack(n), head, body, tail))

    def send_into(self, buf: bytearray, to: Pid | Name, msg: object) -> None:
        """Append the frame of ``Send(to, msg)`` to *buf*: :meth:`encode_send`'s bytes,
        made without the intermediate frame when *msg* is a scalar sent to the same
        destination as the last SEND. Raises as :meth:`encode`; then *buf* is unchanged.
        """
        if to is self._last_to and type(msg) in _SCALARS:
            try:
                body = self._plain(msg)
            except OverflowError:
                raise ValueError(f"integer {msg} does not fit in 64 bits") from None
            head = self._last_head
            n = len(head) + len(body) + 1
            if n > self.max_frame:
                raise ValueError(f"frame of {n} bytes exceeds limit {self.max_frame}")
            buf += _LENGTH.pack(n)
            buf += head
            buf += body
            buf += b"\xc0"
        else:
            buf += self.encode_send(to, msg)

    def message(self, msg: object) -> bytes:
        """The encoding of *msg* as SEND and SEND_RUN carry it (one level below the
        operation). Raises as :meth:`encode`."""
        if type(msg) in _SCALARS:
            try:
                return self._plain(msg)  # type: ignore[no-any-return]
            except OverflowError:
                raise ValueError(f"integer {msg} does not fit in 64 bits") from None
        return self._shallow(msg) or self._packing.pack_field(msg)

    def open_run(self, buf: bytearray, to: Pid, body: bytes) -> None:
        """Append to *buf* a SEND_RUN frame to *to* holding one message, whose encoding
        (by :meth:`message`) is *body*. Append more messages' encodings to add them to
        it, then finish it with :func:`close_run` before anything else is appended to
        *buf* or *buf* is sent: until then its length and count are placeholders. The
        caller keeps the frame's body within ``max_frame`` bytes (its head is
        :func:`run_head_size` bytes).

        Raises:
            TypeError: *to* is not a Pid.
        """
        if type(to) is not Pid:
            raise TypeError(f"malformed SEND_RUN: {SendRun(to, [])!r}")
        buf += _RUN_HOLE
        buf += self._pid_ext(to)
        buf += body

    def run_head_size(self, to: Pid) -> int:
        """The bytes of a SEND_RUN body to *to* before its first message."""
        return len(_RUN_HOLE) - 4 + len(self._pid_ext(to))

    def _shallow(self, x: object) -> bytes | None:
        """The encoding of a field value that is a scalar, a pid, a ref, or a registered
        attrs instance whose fields are all those (as a ``Call``), made without the
        packer's Python hooks; None for anything else (the general path packs it)."""
        t = type(x)
        if t in _SCALARS:
            try:
                return self._plain(x)  # type: ignore[no-any-return]
            except OverflowError:
                raise ValueError(f"integer {x} does not fit in 64 bits") from None
        if t is Pid or t is Ref:
            return self._exts.get(x) or self._id_ext(x)  # type: ignore[call-overload,arg-type]
        entry = self._packing.registry._by_type.get(t)
        if entry is None or entry.values is None:
            return None
        values = entry.values(x)
        if len(values) > 14:
            return None
        parts = [_NAMES.get(entry.name) or _packed_name(entry.name)]
        append = parts.append
        plain = self._plain
        exts = self._exts
        for v in values:
            t = type(v)
            if t in _SCALARS:
                try:
                    append(plain(v))
                except OverflowError:
                    raise ValueError(f"integer {v} does not fit in 64 bits") from None
            elif t is Pid or t is Ref:
                append(exts.get(v) or self._id_ext(v))
            else:
                return None
        parts[0] = _FIXARRAY[len(values) + 1] + parts[0]
        payload = b"".join(parts)
        return _ext_head(EXT_MESSAGE, len(payload)) + payload

    def _ids(self, op: Any, code: int) -> bytes | None:
        """The frame of an operation made only of pids, refs and names (LINK, UNLINK,
        MONITOR, DEMONITOR) if its fields have the right types; else None."""
        types = _ID_FIELDS[code]
        if len(op) != len(types):
            return None
        parts = [_ID_HEADS[code]]
        append = parts.append
        exts = self._exts
        for v, allowed in zip(op, types):  # noqa: B905 - the lengths are equal
            t = type(v)
            if t not in allowed:
                return None
            if t is Name:
                try:
                    ext = exts.get(v)
                except TypeError:  # unhashable inside: the general path refuses it
                    return None
                append(ext or self._name_ext(v))
            else:
                append(exts.get(v) or self._id_ext(v))
        body = b"".join(parts)
        return _LENGTH.pack(len(body)) + body

    def _reply(self, op: Any) -> bytes | None:
        """The frame of a CALL_REPLY, when its value is shallow (see :meth:`_shallow`)."""
        if len(op) != 3:
            return None
        ref, value, to = op
        if type(ref) is not Ref or type(to) is not Pid:
            return None
        body = self._shallow(value)
        if body is None:
            return None
        head = _fresh_ext(EXT_REF, _ident(ref))  # new with each call: not cached
        tail = self._exts.get(to) or self._id_ext(to)
        n = len(body) + 2 + len(head) + len(tail)
        if n > self.max_frame:
            raise ValueError(f"frame of {n} bytes exceeds limit {self.max_frame}")
        return b"".join((_LENGTH.pack(n), b"\x94\x09", head, body, tail))

    def encode_reply(self, ref: Ref, value: object, to: Pid) -> bytes:
        """The frame of ``CallReply(ref, value, to)``, the same bytes as :meth:`encode`
        makes of it, without building the operation. Raises as :meth:`encode`."""
        frame = self._reply((ref, value, to))
        return self.encode(CallReply(ref, value, to)) if frame is None else frame

    def encode_call(self, to: Pid | Name, caller: Pid | None, ref: Ref, request: object) -> bytes:
        """The frame of ``CallRequest(to, caller, ref, request)``, the same bytes as
        :meth:`encode` makes of it, without building the operation. Raises as
        :meth:`encode`."""
        frame = self._call((to, caller, ref, request))
        return self.encode(CallRequest(to, caller, ref, request)) if frame is None else frame

    def _call(self, op: Any) -> bytes | None:
        """The frame of a CALL whose fields have the right types and whose request is
        shallow (see :meth:`_shallow`); else None. The head ``[12, to, caller`` is kept
        for the last pair (a server's callers call it again and again)."""
        if len(op) != 4:
            return None
        to, caller, ref, request = op
        if type(ref) is not Ref:
            return None
        if to is self._call_to and caller is self._call_caller:
            head = self._call_head
        else:
            t = type(to)
            exts = self._exts
            if t is Pid:
                ext = exts.get(to) or self._id_ext(to)
            elif t is Name:
                try:
                    ext = exts.get(to) or self._name_ext(to)
                except TypeError:  # unhashable inside: the general path refuses it
                    return None
            else:
                return None
            if caller is None:
                tail = b"\xc0"
            elif type(caller) is Pid:
                tail = exts.get(caller) or self._id_ext(caller)
            else:
                return None
            head = self._call_head = b"\x95\x0c" + ext + tail
            self._call_to = to
            self._call_caller = caller
        body = self._shallow(request)
        if body is None:
            return None
        ext = _fresh_ext(EXT_REF, _ident(ref))  # new with each call: not cached
        n = len(head) + len(ext) + len(body)
        if n > self.max_frame:
            raise ValueError(f"frame of {n} bytes exceeds limit {self.max_frame}")
        return b"".join((_LENGTH.pack(n), head, ext, body))

    def _id_ext(self, x: Pid | Ref) -> bytes:
        ext = _fresh_ext(EXT_PID if type(x) is Pid else EXT_REF, _ident(x))
        exts = self._exts
        if len(exts) >= _CACHE_MAX:
            exts.clear()
        exts[x] = ext
        return ext

    def _name_ext(self, x: Name) -> bytes:
        ext: bytes = msgpack.packb(self._packing._name(x))
        exts = self._exts
        if len(exts) >= _CACHE_MAX:
            exts.clear()
        exts[x] = ext
        return ext

    def _send_head(self, to: object, msg: object, sender: object) -> bytes:
        """The bytes ``[1, to`` of a SEND frame's body, made once per destination."""
        if type(to) is Pid:
            ext = self._pid_ext(to)
        elif type(to) is Name:
            ext = msgpack.packb(self._packing._name(to))
        else:
            raise TypeError(f"malformed SEND: {Send(to, msg, sender)!r}")  # type: ignore[arg-type]
        heads = self._heads
        if len(heads) >= _CACHE_MAX:
            heads.clear()
        head = heads[to] = b"\x94\x01" + ext
        return head

    def _pid_ext(self, pid: Pid) -> bytes:
        return self._exts.get(pid) or self._id_ext(pid)

    def encode_many(self, ops: Iterable[Op]) -> bytes:
        """The frames of all *ops*, concatenated in order: one buffer for one write.

        Raises the same errors as :meth:`encode`; then nothing is returned, so a failed
        batch sends nothing.
        """
        parts: list[bytes] = []
        append = parts.append
        pack = self._packing.pack_fields
        length = _LENGTH.pack
        limit = self.max_frame
        for op in ops:
            if type(op) in _FAST_OPS:
                append(self.encode(op))
                continue
            body = pack(_fields(op))
            n = len(body)
            if n > limit:
                raise ValueError(f"frame of {n} bytes exceeds limit {limit}")
            append(length(n))
            append(body)
        return b"".join(parts)


# A SEND_RUN frame as FrameEncoder.open_run makes it: the 4-byte length, an array32 head
# (so the count can be written in place), the opcode; then the pid and the messages.
_RUN_HOLE: Final = b"\x00\x00\x00\x00\xdd\x00\x00\x00\x00\x0d"
_RUN_HEAD: Final = struct.Struct(">IBI")


def close_run(buf: bytearray, at: int, count: int) -> None:
    """Finish the SEND_RUN frame that :meth:`FrameEncoder.open_run` began at offset *at*
    of *buf* and that ends at the end of *buf*, holding *count* messages."""
    _RUN_HEAD.pack_into(buf, at, len(buf) - at - 4, 0xDD, count + 2)


# The fast paths of FrameEncoder.encode: operations of pids, refs and names only, with
# the types each field may have (as _CHECKS has them), and every operation with one.
_ID_OPS: Final[dict[type, int]] = {Link: 2, Unlink: 3, Monitor: 6, Demonitor: 7}
_ID_FIELDS: Final[dict[int, tuple[frozenset[type], ...]]] = {
    2: (frozenset({Pid}), frozenset({Pid})),
    3: (frozenset({Pid}), frozenset({Pid})),
    6: (frozenset({Ref}), frozenset({Pid}), _DESTS),
    7: (frozenset({Ref}), _DESTS),
}
_FAST_OPS: Final = frozenset({Send, CallReply, CallRequest, *_ID_OPS})
# The head ``[code`` of each: a fixarray of the fields and the opcode, then the opcode.
_ID_HEADS: Final = {code: bytes((0x90 | (len(t) + 1), code)) for code, t in _ID_FIELDS.items()}
_FIXARRAY: Final = [bytes([0x90 | n]) for n in range(16)]
_FIXINT: Final = [bytes([n]) for n in range(128)]
_NAMES: dict[str, bytes] = {}  # the packed str of each registered name, made on use


def _packed_name(name: str) -> bytes:
    packed: bytes = msgpack.packb(name)
    _NAMES[name] = packed
    return packed


def _fresh_ext(code: int, payload: bytes) -> bytes:
    """The bytes msgpack makes of ``ExtType(code, payload)``, without making a Packer."""
    n = len(payload)
    return (bytes((0xC7, n, code)) if 16 < n <= 0xFF else _ext_head(code, n)) + payload


def _ext_head(code: int, n: int) -> bytes:
    """The head msgpack writes before an ext payload of *n* bytes (fixext when it can)."""
    fixed = _FIXEXT.get(n)
    if fixed is not None:
        return bytes((fixed, code))
    if n <= 0xFF:
        return bytes((0xC7, n, code))
    if n <= 0xFFFF:
        return b"\xc8" + n.to_bytes(2, "big") + bytes((code,))
    return b"\xc9" + n.to_bytes(4, "big") + bytes((code,))


_FIXEXT: Final = {1: 0xD4, 2: 0xD5, 4: 0xD6, 8: 0xD7, 16: 0xD8}


def _fields(op: Any) -> list[Any]:
    """The array ``[opcode, *fields]`` of *op*, checked as the peer will check it."""
    code = OPCODES.get(type(op))
    if code is None:
        raise TypeError(f"not a wire operation: {type(op).__qualname__}")
    if code == _OP_HELLO:
        fields = [code, list(op.versions), op.name, op.creation, op.nonce]
    elif code == _OP_SEND_RUN:
        if type(op.msgs) is not list:
            raise TypeError(f"malformed SEND_RUN: {op!r}"[:300])
        fields = [code, op.to, *op.msgs]
    else:
        fields = [code, *op]
    if not _CHECKS[code](fields):
        raise TypeError(f"malformed {_OP_NAMES[code]}: {op!r}")
    return fields


@final
class FrameDecoder:
    """Splits a byte stream into frames and decodes each into an operation.

    Feed it bytes as they arrive, in chunks of any size; it returns every operation
    completed so far and keeps the partial frame. It never waits on anything: a stream
    that ends mid-frame just leaves bytes buffered (:attr:`buffered`), and the shell
    reports the truncation. Buffered bytes never exceed one frame plus the last chunk.

    Args:
        registry: the classes it may build; default :data:`DEFAULT_REGISTRY`.
        max_frame: the largest body accepted, in bytes; a longer length prefix is
            rejected before its body is read.
        max_depth: the deepest value accepted (see the module doc).
        handshake: accept only the handshake operations (HELLO, CHALLENGE, PROOF,
            REJECT) and no ext types at all, as before the peer is authenticated.
    """

    def __init__(
        self,
        registry: Registry | None = None,
        *,
        max_frame: int = MAX_FRAME,
        max_depth: int = MAX_DEPTH,
        handshake: bool = False,
    ) -> None:
        if not 0 < max_frame < 2**32:
            raise ValueError(f"max_frame must be in [1, 2**32), not {max_frame}")
        if max_depth < 2:
            raise ValueError(f"max_depth must be at least 2, not {max_depth}")
        self.max_frame = max_frame
        self._buf = bytearray()
        self._error: ProtocolError | None = None
        self._unpacking = _Unpacking(
            registry or DEFAULT_REGISTRY, max_depth, base=1, allow_ext=not handshake
        )
        self._ops = _HANDSHAKE_OPS if handshake else _SESSION_OPS
        # The body prefix ``[1, to`` of the last SEND to a pid, and that pid (None while
        # there was none: always during the handshake).
        self._send_head = b""
        self._send_to: Pid | None = None
        # The fast paths of CALL_REPLY and CALL (see _decode): the bytes around the ref's
        # serial and the value, and the objects they stand for, of the last one decoded
        # by the general path; None before the first.
        self._reply_fast: tuple[bytes, bytes, bytes, str, int, Pid] | None = None
        self._call_fast: tuple[bytes, bytes, str, int, Pid, Pid | None] | None = None

    @property
    def buffered(self) -> int:
        """Bytes received but not yet decoded (a partial frame, or frames past a *limit*)."""
        return len(self._buf)

    @property
    def error(self) -> ProtocolError | None:
        """The error that poisoned this decoder, or None while it is usable."""
        return self._error

    def take_buffered(self) -> bytes:
        """Remove and return the undecoded bytes, e.g. to hand them to another decoder."""
        data = bytes(self._buf)
        self._buf.clear()
        return data

    def feed(self, data: bytes | bytearray | memoryview, *, limit: int | None = None) -> list[Op]:
        """Buffer *data*, then decode and return the operations completed so far, in order.

        With *limit*, decode at most that many and keep the rest buffered; a later
        ``feed(b"")`` continues.

        Raises:
            ProtocolError: the stream is malformed (a bad length, a bad body, an unknown
                opcode, ext type or message name, a value too deep). The decoder is then
                poisoned: this and every later call raise. Operations decoded from the
                same *data* before the bad frame are lost with the connection.
        """
        return self._feed(data, -1 if limit is None else limit, runs=False)

    def feed_runs(self, data: bytes | bytearray | memoryview) -> list[Op]:
        """As :meth:`feed`, but consecutive SENDs to one pid with no sender, and
        SEND_RUNs to it, come as one :class:`SendRun` of their messages, in order: the
        receiver's fast path.

        Raises as :meth:`feed`.
        """
        return self._feed(data, -1, runs=True)

    def _feed(self, data: bytes | bytearray | memoryview, room: int, *, runs: bool) -> list[Op]:
        if self._error is not None:
            raise ProtocolError(f"decoder unusable after an earlier error: {self._error}")
        buf = self._buf
        if data:
            buf += data
        if len(buf) < 4:
            return []
        out: list[Op] = []
        try:
            with memoryview(buf) as view:
                off = self._decode(buf, view, out, room, runs)
        except ProtocolError as exc:
            self._error = exc
            # Drop the bytes; not clear(): the traceback may still hold a view of them.
            self._buf = bytearray()
            raise
        del buf[:off]
        return out

    def _decode(
        self, buf: bytearray, view: memoryview, out: list[Op], room: int, runs: bool
    ) -> int:
        """Append up to *room* (-1: all) operations of *buf* to *out* (with *runs*, SENDs
        of the fast path gathered in :class:`SendRun` lists); the offset reached."""
        n = len(buf)
        off = 0
        unpack_from = _LENGTH.unpack_from
        max_frame = self.max_frame
        unpacking = self._unpacking
        depth_limit = unpacking.max_depth
        ext_hook = unpacking.ext_hook
        unpackb = msgpack.unpackb
        ops = self._ops
        append = out.append
        heads: bytes | bytearray = b""  # buf translated by _HEADS, made when first needed
        # SEND's fast path: a frame that starts like the last SEND to a pid with no
        # sender, ``[1, to`` ... ``None]``, needs only its message decoded.
        send_head = self._send_head
        send_to = self._send_to
        skip = len(send_head) + 4
        # CALL_REPLY's and CALL's: a frame whose bytes around the ref's serial and its
        # value (or request) are those of the last one, needs only that value decoded.
        reply_fast = self._reply_fast
        call_fast = self._call_fast
        serial_of = _SERIAL.unpack_from
        # The messages of the SendRun being gathered (the last of *out*), and its pid.
        run: list[Any] | None = None
        run_to: Pid | None = None
        short = min(depth_limit, max_frame)  # frames this long need no depth check
        # Cleared before a frame whose depth is checked, and after each check: set in
        # between only by ext values of frames too short to need the check.
        unpacking.native = False
        while n - off >= 4 and room != 0:
            (size,) = unpack_from(buf, off)
            if size > max_frame or size == 0:
                raise ProtocolError(
                    f"frame of {size} bytes exceeds limit {max_frame}" if size else "empty frame"
                )
            end = off + 4 + size
            if end > n:
                break
            if buf[end - 1] == 0xC0 and send_to is not None and buf.startswith(send_head, off + 4):
                try:
                    msg = unpackb(view[off + skip : end - 1], ext_hook=ext_hook)
                except ProtocolError:
                    raise
                except Exception:  # not [1, to, msg, None] after all: the general path says why
                    pass
                else:
                    if size > depth_limit:
                        t = type(msg)
                        if t is list or t is dict or unpacking.native:
                            unpacking.native = False
                            # A value D deep needs D container heads: count them, walk
                            # only if needed (the message sits at level 2).
                            if not heads:
                                heads = buf.translate(_HEADS)
                            if size - heads.count(b"\x00", off + 4, end) > depth_limit:
                                problem = _walk(
                                    msg, depth_limit - 1, unpacking.registry._by_type, keys=False
                                )
                                if problem is not None:
                                    raise ProtocolError(problem)
                    off = end
                    room -= 1
                    if not runs:
                        append(_new_tuple(Send, (send_to, msg, None)))
                        continue
                    if run is None or run_to is not send_to:
                        run = [msg]
                        run_to = send_to
                        append(_new_tuple(SendRun, (send_to, run)))
                    else:
                        run.append(msg)
                    # The run's inner loop: the frames above, short enough to need no
                    # depth check. Any other frame goes round the outer loop.
                    more = run.append
                    while n - off >= 4:
                        (size,) = unpack_from(buf, off)
                        end = off + 4 + size
                        if (
                            not 0 < size <= short
                            or end > n
                            or buf[end - 1] != 0xC0
                            or not buf.startswith(send_head, off + 4)
                        ):
                            break
                        try:
                            more(unpackb(view[off + skip : end - 1], ext_hook=ext_hook))
                        except Exception:  # the outer loop decodes it again, and says why
                            break
                        off = end
                    continue
            code = buf[off + 5] if size > 1 else 0
            if code == 9 and reply_fast is not None:
                r_head, r_rest, r_tail, r_node, r_creation, r_to = reply_fast
                a = off + 4 + len(r_head)  # the ref's serial
                b = a + 8 + len(r_rest)  # the value
                e = end - len(r_tail)
                if (
                    b < e
                    and buf.startswith(r_head, off + 4)
                    and buf.startswith(r_rest, a + 8)
                    and buf.endswith(r_tail, e, end)
                ):
                    msg = self._field(view, b, e, size, off, end)
                    if msg is not _NOT_FAST:
                        (serial,) = serial_of(buf, a)
                        ref = Ref(r_node, serial, r_creation)
                        append(_new_tuple(CallReply, (ref, msg, r_to)))
                        run = None
                        off = end
                        room -= 1
                        continue
            elif code == 12 and call_fast is not None:
                c_head, c_rest, c_node, c_creation, c_to, c_caller = call_fast
                a = off + 4 + len(c_head)  # the ref's serial
                b = a + 8 + len(c_rest)  # the request
                if b < end and buf.startswith(c_head, off + 4) and buf.startswith(c_rest, a + 8):
                    msg = self._field(view, b, end, size, off, end)
                    if msg is not _NOT_FAST:
                        (serial,) = serial_of(buf, a)
                        ref = Ref(c_node, serial, c_creation)
                        append(_new_tuple(CallRequest, (c_to, c_caller, ref, msg)))
                        run = None
                        off = end
                        room -= 1
                        continue
            gathered, run = run, None
            unpacking.native = False
            try:
                value = unpackb(view[off + 4 : end], ext_hook=ext_hook)
            except ProtocolError:
                raise
            except Exception as exc:  # anything the peer sent that msgpack refuses
                raise ProtocolError(f"malformed frame body: {type(exc).__name__}: {exc}") from exc
            if (
                size > depth_limit
                and type(value) is list
                and (unpacking.native or not _NATIVE.isdisjoint(map(type, value)))
            ):
                # A value D deep needs D container heads: count them, walk only if
                # needed. Ext values were counted exactly by the ext hook.
                if not heads:
                    heads = buf.translate(_HEADS)
                if size - heads.count(b"\x00", off + 4, end) > depth_limit:
                    problem = _walk(value, depth_limit, unpacking.registry._by_type, keys=False)
                    if problem is not None:
                        raise ProtocolError(problem)
            if type(value) is not list or not value:
                raise ProtocolError("frame body is not an operation array")
            spec = ops.get(value[0]) if type(value[0]) is int else None
            if spec is None:
                raise ProtocolError(f"unknown or unexpected opcode {value[0]!r}")
            cls, check = spec
            if not check(value):
                raise ProtocolError(f"malformed {_OP_NAMES[value[0]]} operation")
            if cls is Hello:
                append(Hello(tuple(value[1]), value[2], value[3], value[4]))
            elif cls is SendRun:
                to = value[1]
                del value[:2]  # the messages
                if not runs:
                    append(_new_tuple(SendRun, (to, value)))
                elif gathered is not None and run_to is to:
                    gathered.extend(value)
                    run = gathered
                else:
                    append(_new_tuple(SendRun, (to, value)))
                    run = value
                    run_to = to
            else:
                if cls is Send and value[3] is None and type(value[1]) is Pid:
                    to = value[1]
                    if to is not send_to:
                        send_to = self._send_to = to
                        send_head = self._send_head = b"\x94\x01" + msgpack.packb(
                            _new_tuple(_ExtType, (EXT_PID, _ident(to)))
                        )
                        skip = len(send_head) + 4
                elif cls is CallReply:
                    reply_fast = self._reply_fast = _reply_fast(value[1], value[3])
                elif cls is CallRequest and type(value[1]) is Pid:
                    call_fast = self._call_fast = _call_fast(value[1], value[2], value[3])
                append(_new_tuple(cls, value[1:]))
            off = end
            room -= 1
        return off

    def _field(self, view: memoryview, b: int, e: int, size: int, off: int, end: int) -> Any:
        """The value in ``view[b:e]``, a field of the frame ``[off, end)`` of *size*
        bytes (one level below its operation), checked as the general path checks it;
        :data:`_NOT_FAST` if those bytes are not exactly one value (the general path
        then decodes the frame, and says what is wrong)."""
        unpacking = self._unpacking
        try:
            msg = msgpack.unpackb(view[b:e], ext_hook=unpacking.ext_hook)
        except ProtocolError:
            raise
        except Exception:
            unpacking.native = False
            return _NOT_FAST
        limit = unpacking.max_depth
        if size > limit:
            t = type(msg)
            if t is list or t is dict or unpacking.native:
                unpacking.native = False
                # As SEND's fast path: count the container heads, walk only if needed.
                body = view[off + 4 : end].tobytes()
                if size - body.translate(_HEADS).count(b"\x00") > limit:
                    problem = _walk(msg, limit - 1, unpacking.registry._by_type, keys=False)
                    if problem is not None:
                        raise ProtocolError(problem)
        return msg


_NOT_FAST: Final[Any] = object()
_NATIVE: Final = frozenset({list, dict})  # the types msgpack nests without an ext hook
_SERIAL: Final = struct.Struct(">Q")


def _ref_bytes(ref: Ref) -> tuple[bytes, bytes]:
    """The bytes of *ref*'s ext before its serial, and after it (creation and node)."""
    node = ref.node.encode()
    return _ext_head(EXT_REF, 16 + len(node)), _SERIAL.pack(ref.creation) + node


def _pid_bytes(pid: Pid) -> bytes:
    payload = _ident(pid)
    return _ext_head(EXT_PID, len(payload)) + payload


def _reply_fast(ref: Ref, to: Pid) -> tuple[bytes, bytes, bytes, str, int, Pid]:
    """What the fast path of CALL_REPLY ``[9, ref, value, to]`` matches and makes."""
    head, rest = _ref_bytes(ref)
    return b"\x94\x09" + head, rest, _pid_bytes(to), ref.node, ref.creation, to


def _call_fast(
    to: Pid, caller: Pid | None, ref: Ref
) -> tuple[bytes, bytes, str, int, Pid, Pid | None]:
    """What the fast path of CALL ``[12, to, caller, ref, request]`` matches and makes."""
    head, rest = _ref_bytes(ref)
    who = b"\xc0" if caller is None else _pid_bytes(caller)
    return b"\x95\x0c" + _pid_bytes(to) + who + head, rest, ref.node, ref.creation, to, caller


# --------------------------------------------------------------------------- shortcuts

# The shortcuts keep one codec per thread: a msgpack Packer calls back into Python (the
# ext hooks), so two threads sharing one could interleave inside it.
_local = threading.local()


def _default_encoder() -> FrameEncoder:
    try:
        encoder: FrameEncoder = _local.encoder
    except AttributeError:
        encoder = _local.encoder = FrameEncoder()
    return encoder


def encode(op: Op) -> bytes:
    """One frame holding *op*, with :data:`DEFAULT_REGISTRY`; see :meth:`FrameEncoder.encode`."""
    return _default_encoder().encode(op)


def encode_many(ops: Iterable[Op]) -> bytes:
    """The frames of *ops* in one buffer; see :meth:`FrameEncoder.encode_many`."""
    return _default_encoder().encode_many(ops)


def pack_value(
    value: object, *, registry: Registry | None = None, max_depth: int = MAX_DEPTH
) -> bytes:
    """The msgpack encoding of one value, with no frame and no operation around it.

    For storing values in the same format (e.g. a log). Raises as :meth:`FrameEncoder.encode`.
    """
    return _value_codec(registry, max_depth)[0].pack(value)


def unpack_value(
    data: bytes, *, registry: Registry | None = None, max_depth: int = MAX_DEPTH
) -> object:
    """Decode what :func:`pack_value` made.

    Raises:
        ProtocolError: *data* is not exactly one well-formed value within the limits.
    """
    return _value_codec(registry, max_depth)[1].unpack(data)


def _value_codec(registry: Registry | None, max_depth: int) -> tuple[_Packing, _Unpacking]:
    try:
        codecs: dict[tuple[Registry, int], tuple[_Packing, _Unpacking]] = _local.codecs
    except AttributeError:
        codecs = _local.codecs = {}
    key = (registry or DEFAULT_REGISTRY, max_depth)
    codec = codecs.get(key)
    if codec is None:
        if max_depth < 1:
            raise ValueError(f"max_depth must be at least 1, not {max_depth}")
        codec = codecs[key] = (
            _Packing(key[0], max_depth, base=0),
            _Unpacking(key[0], max_depth, base=0),
        )
    return codec
