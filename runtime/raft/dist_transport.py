"""Raft over regency's distribution layer.

Each member of a Raft group runs, on its node, a process registered as
:data:`SERVICE` that hands every Raft message it receives to the member's driver.
:class:`DistTransport` sends a message to the peer member by sending it to
``Name(SERVICE, peer)``: the peer's node name is the member id. Sending never blocks
and may drop (Raft retries): a peer that is unreachable, or a connection whose buffer
is full, loses the message and it is counted in :attr:`DistTransport.dropped`.

The Raft message classes are registered on the wire (``regency.raft.*``) when this
module is imported, so they travel as msgpack, never pickle.
"""

from __future__ import annotations

from typing import Final, final

import structlog

from .. import wire
from ..api import receive
from ..errors import MailboxFull, NoProcError
from ..node import Node
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


@final
class DistTransport:
    """The driver's :class:`~runtime.raft.driver.Transport` over a regency node.

    Args:
        node: the local node, with a started ``Distribution`` whose peers include every
            other member (``add_peer``), so messages connect on demand.
        service: the registered name of the receiving process on every member.
    """

    def __init__(self, node: Node, service: str = SERVICE) -> None:
        self.node = node
        self.service = service
        self.dropped = 0
        """Messages that could not be queued (peer unreachable or its buffer full)."""

    def send(self, to: str, msg: Message) -> None:
        """Queue *msg* for member *to*; drops it if that is not possible now."""
        try:
            self.node.send(Name(self.service, to), msg)
        except (MailboxFull, NoProcError):
            self.dropped += 1

    def serve(self, driver: RaftDriver) -> Pid:
        """Start the receiving process for *driver* on this node; returns its pid.

        Messages that are not Raft messages addressed to this member are dropped and
        logged (an authenticated peer with a bug, not a reason to crash).
        """
        return self.node.spawn(_receive_loop, driver, name=self.service)


async def _receive_loop(driver: RaftDriver) -> None:
    me = driver.id
    while True:
        msg = await receive()
        if type(msg) is Message and msg.to == me:
            driver.deliver(msg)
        else:
            log.warning("raft_message_dropped", node=me, message=repr(msg)[:200])


__all__ = ["SERVICE", "DistTransport"]
