"""Raft over regency's distribution layer.

Each member of a Raft group runs, on its node, a process registered as
:data:`SERVICE` that hands every Raft message it receives to the member's driver.
:class:`DistTransport` sends a message to the peer member by sending it to
``Name(SERVICE, peer)``: the peer's node name is the member id. Sending never blocks
and may drop (Raft retries): a peer that is unreachable, or a connection whose buffer
is full, loses the message and it is counted in :attr:`DistTransport.dropped`.

The Raft message classes are registered on the wire (``regency.raft.*``) when this
module is imported, so they travel as msgpack, never pickle. With ``compact=True`` a
message travels instead as one ``bytes`` value, a flat msgpack array of its fields
(:func:`encode`, :func:`decode`): a few microseconds where the generic path for
registered attrs classes (one msgpack extension, packed and unpacked in Python, for the
message, its type and every entry and entry kind) costs tens, several times per commit
on every member. The receiving process of :meth:`DistTransport.serve` accepts both
forms; every member of a group must run a receiver that accepts the compact form before
any member sends it (``python -m runtime.raft.app`` does).
"""

from __future__ import annotations

from typing import Any, Final, final

import msgpack
import structlog

from .. import wire
from ..api import monitor_nodes, receive, spawn
from ..dist import Distribution
from ..errors import MailboxFull, NodeClosed, NoProcError
from ..messages import NodeDown, NodeUp
from ..node import Node, current_node
from ..pid import Name, Pid
from .core import Entry, EntryKind, Message, MsgType, Snapshot
from .driver import RaftDriver

SERVICE: Final = "regency_raft"
"""The registered name of the process that receives a node's Raft messages."""

for _cls, _name in [
    (Message, "regency.raft.Message"),
    (Entry, "regency.raft.Entry"),
    (Snapshot, "regency.raft.Snapshot"),
    (MsgType, "regency.raft.MsgType"),
    (EntryKind, "regency.raft.EntryKind"),
]:
    wire.DEFAULT_REGISTRY.register(_cls, _name)

log = structlog.get_logger("regency.raft")

REDIAL_TIMEOUT: Final = 0.05
"""Seconds a member whose connection closed gets to answer a new dial before its loss is
reported to the driver. A process that died on a reachable host refuses at once; a host
that is gone does not answer, and the wait is this bound (its followers' election
timeouts would otherwise fire later still)."""

_MSG_TYPES: Final = {int(t): t for t in MsgType}
_ENTRY_KINDS: Final = {int(k): k for k in EntryKind}
_packb = msgpack.Packer(use_bin_type=True).pack


def encode(msg: Message) -> bytes:
    """The wire form of *msg*: a msgpack array of its fields, enums as their values."""
    snap = msg.snapshot
    data: bytes = _packb(
        (
            int(msg.type),
            msg.frm,
            msg.to,
            msg.term,
            msg.log_term,
            msg.index,
            [(e.term, e.index, int(e.kind), e.data) for e in msg.entries],
            msg.commit,
            msg.reject,
            msg.reject_hint,
            None if snap is None else (snap.index, snap.term, snap.voters, snap.data),
            msg.context,
        )
    )
    return data


def decode(data: bytes) -> Message:
    """The message :func:`encode` made *data* from.

    Raises:
        ValueError: *data* is not such a message.
    """
    try:
        f: Any = msgpack.unpackb(data, use_list=False, raw=False)
        (mtype, frm, to, term, log_term, index, entries, commit, reject, hint, snap, ctx) = f
        kinds = _ENTRY_KINDS
        msg = Message(
            _MSG_TYPES[mtype],
            frm,
            to,
            term,
            log_term,
            index,
            tuple([Entry(t, i, kinds[k], d) for t, i, k, d in entries]),
            commit,
            reject,
            hint,
            None if snap is None else Snapshot(snap[0], snap[1], tuple(snap[2]), snap[3]),
            ctx,
        )
    except (ValueError, TypeError, KeyError, IndexError) as exc:
        raise ValueError(f"not a Raft message: {exc!r}") from None
    if not (
        type(frm) is str
        and type(to) is str
        and type(ctx) is bytes
        and all(type(x) is int for x in (term, log_term, index, commit, hint))
        and type(reject) is bool
        and all(
            type(e.term) is int and type(e.index) is int and type(e.data) is bytes
            for e in msg.entries
        )
        and (
            snap is None
            or (
                type(snap[0]) is int
                and type(snap[1]) is int
                and type(snap[3]) is bytes
                and all(type(v) is str for v in snap[2])
            )
        )
    ):
        raise ValueError("not a Raft message: a field has the wrong type")
    return msg


@final
class DistTransport:
    """The driver's :class:`~runtime.raft.driver.Transport` over a regency node.

    Args:
        node: the local node, with a started ``Distribution`` whose peers include every
            other member (``add_peer``), so messages connect on demand.
        service: the registered name of the receiving process on every member.
        compact: send messages in their :func:`encode` form (every member's receiver
            must accept it, as :meth:`serve`'s does).
    """

    def __init__(self, node: Node, service: str = SERVICE, *, compact: bool = False) -> None:
        self.node = node
        self.service = service
        self.compact = compact
        """Send each message in its :func:`encode` form rather than as a ``Message``."""
        self.dropped = 0
        """Messages that could not be queued (peer unreachable or its buffer full)."""

    def send(self, to: str, msg: Message) -> None:
        """Queue *msg* for member *to*; drops it if that is not possible now."""
        try:
            self.node.send(Name(self.service, to), encode(msg) if self.compact else msg)
        except (MailboxFull, NoProcError):
            self.dropped += 1

    def serve(self, driver: RaftDriver) -> Pid:
        """Start the receiving process for *driver* on this node; returns its pid.

        Messages that are not Raft messages addressed to this member are dropped and
        logged (an authenticated peer with a bug, not a reason to crash). The process
        subscribes to connection events (``monitor_nodes``) and tells the driver of each
        lost connection (:meth:`RaftDriver.peer_down`): member ids are node names.
        """
        return self.node.spawn(_receive_loop, driver, name=self.service)


def route(driver: RaftDriver, data: object) -> bool:
    """Hand one message of a member's receiving process to *driver*; False if foreign.

    A Raft message (either form) addressed to this member is delivered. A ``NodeDown``
    (the process called ``monitor_nodes``) starts a check of that member: the node dials
    it once more, for at most :data:`REDIAL_TIMEOUT`, and only if that fails is the
    driver told that the member is lost (:meth:`RaftDriver.peer_down`), so a follower
    whose leader died campaigns at once, while a connection that was only reset (the
    leader alive) changes nothing. Every message that came over the lost connection was
    already delivered (same mailbox, in order), so the core learns of the loss after
    them. ``NodeUp`` needs nothing. Anything else is not for the driver.
    """
    msg: object = data
    if type(data) is bytes:
        try:
            msg = decode(data)
        except ValueError:
            return False
    if type(msg) is Message:
        if msg.to != driver.id:
            return False
        driver.deliver(msg)
    elif type(msg) is NodeDown:
        try:
            spawn(_confirm_lost, driver, msg.node)
        except NodeClosed:  # this node is stopping: nobody to tell
            pass
    elif type(msg) is not NodeUp:
        return False
    return True


async def _confirm_lost(driver: RaftDriver, member: str) -> None:
    dist = current_node().remote
    if isinstance(dist, Distribution) and await dist.redial(member, REDIAL_TIMEOUT):
        log.info("member_reconnected", node=driver.id, peer=member)
        return
    driver.peer_down(member)


async def _receive_loop(driver: RaftDriver) -> None:
    monitor_nodes()
    while True:
        data = await receive()
        if not route(driver, data):
            log.warning("raft_message_dropped", node=driver.id, message=repr(data)[:200])


__all__ = ["SERVICE", "DistTransport", "decode", "encode", "route"]
