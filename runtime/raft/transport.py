"""Raft messages as plain msgpack values, for a transport over the distribution layer.

The driver's :class:`~runtime.raft.driver.Transport` hands out
:class:`~runtime.raft.core.Message` values; a network transport sends
:func:`message_to_wire` (nested lists of ints, strings and bytes, no pickle) and the
receiving node passes :func:`message_from_wire` of it to ``RaftDriver.deliver``.
:func:`encode_message` / :func:`decode_message` do the same to and from bytes.

Layout (version 1)::

    [1, type, frm, to, term, log_term, index, commit, reject, reject_hint, context,
     entries, snapshot]
    entry    = [term, index, kind, data]
    snapshot = None | [index, term, voters, data]

A value that does not have this shape raises :class:`MalformedMessage` (a ``ValueError``),
so a transport can drop the frame and log it without harming the node.
"""

from __future__ import annotations

from typing import Any, Final

import msgpack

from .core import Entry, EntryKind, Message, MsgType, Snapshot

__all__ = [
    "WIRE_VERSION",
    "MalformedMessage",
    "decode_message",
    "encode_message",
    "message_from_wire",
    "message_to_wire",
]

#: The layout version, the first element of every encoded message.
WIRE_VERSION: Final = 1


class MalformedMessage(ValueError):
    """A received value is not a Raft message of a known layout."""


def message_to_wire(msg: Message) -> list[Any]:
    """Return ``msg`` as nested lists of msgpack-native values."""
    snap = msg.snapshot
    return [
        WIRE_VERSION,
        int(msg.type),
        msg.frm,
        msg.to,
        msg.term,
        msg.log_term,
        msg.index,
        msg.commit,
        msg.reject,
        msg.reject_hint,
        msg.context,
        [[e.term, e.index, int(e.kind), e.data] for e in msg.entries],
        None if snap is None else [snap.index, snap.term, list(snap.voters), snap.data],
    ]


def message_from_wire(value: object) -> Message:
    """Rebuild a message from :func:`message_to_wire`'s output.

    Raises:
        MalformedMessage: The value has the wrong shape, version or field types.
    """
    try:
        return _from_wire(value)
    except MalformedMessage:
        raise
    except (TypeError, ValueError) as exc:
        raise MalformedMessage(f"raft: malformed message: {exc}") from exc


def _from_wire(value: object) -> Message:
    if not isinstance(value, (list, tuple)) or len(value) != 13 or value[0] != WIRE_VERSION:
        raise MalformedMessage("raft: not a version 1 message")
    (_, type_, frm, to, term, log_term, index, commit, reject, hint, ctx, ents, snap) = value
    for name, field, kind in (
        ("frm", frm, str),
        ("to", to, str),
        ("context", ctx, bytes),
        ("reject", reject, bool),
    ):
        if not isinstance(field, kind):
            raise MalformedMessage(f"raft: field {name} has type {type(field).__name__}")
    ints = (term, log_term, index, commit, hint)
    if not all(isinstance(i, int) and not isinstance(i, bool) and i >= 0 for i in ints):
        raise MalformedMessage("raft: a numeric field is not a non-negative int")
    return Message(
        MsgType(type_),
        frm,
        to,
        term,
        log_term=log_term,
        index=index,
        entries=tuple(_entry(e) for e in ents),
        commit=commit,
        reject=reject,
        reject_hint=hint,
        snapshot=None if snap is None else _snapshot(snap),
        context=ctx,
    )


def _entry(value: Any) -> Entry:
    term, index, kind, data = value
    if not (isinstance(term, int) and isinstance(index, int) and isinstance(data, bytes)):
        raise MalformedMessage("raft: malformed entry")
    return Entry(term, index, EntryKind(kind), data)


def _snapshot(value: Any) -> Snapshot:
    index, term, voters, data = value
    if not (
        isinstance(index, int)
        and isinstance(term, int)
        and isinstance(data, bytes)
        and all(isinstance(v, str) for v in voters)
    ):
        raise MalformedMessage("raft: malformed snapshot")
    return Snapshot(index, term, tuple(voters), data)


def encode_message(msg: Message) -> bytes:
    """Return ``msg`` as msgpack bytes."""
    packed: bytes = msgpack.packb(message_to_wire(msg), use_bin_type=True)
    return packed


def decode_message(data: bytes) -> Message:
    """Decode :func:`encode_message`'s bytes.

    Raises:
        MalformedMessage: The bytes are not a valid encoded message.
    """
    try:
        value = msgpack.unpackb(data, raw=False, strict_map_key=True)
    except Exception as exc:  # msgpack raises several unrelated types
        raise MalformedMessage(f"raft: undecodable message: {exc}") from exc
    return message_from_wire(value)
