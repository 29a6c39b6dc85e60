"""A simulated network with seeded delays, drops, duplicates, reordering and partitions.

Determinism is built here, not inherited from trio (whose scheduler shuffles each batch
on purpose). Every message gets its delivery time when it is sent, from the *sender's*
own rng (derived from the run's seed), so the draws do not depend on which node's task
trio happens to run first. One task (:meth:`SimNetwork.run`) delivers messages in the
order ``(time, sender, sender's sequence number)`` on the mock clock; nothing depends on
task wake order.

Per directed link, messages are FIFO unless reordering is on (then each message draws its
own delay, so later ones may overtake earlier ones). A partition is a set of cut directed
links; a message is dropped if its link is cut when it is sent *or* when it would be
delivered (a cut TCP connection loses what was in flight). A message to a node that is
down (no receiver registered) is dropped.

Connections are modelled only by their loss: :meth:`SimNetwork.connection_lost` tells
a node that its connection to another closed (the other crashed and its operating system
closed the socket, or a transport heartbeat gave up on it), after every message already
in flight on that link, as TCP delivers a close after the data before it.
"""

from __future__ import annotations

import heapq
import random
from collections.abc import Callable, Iterable
from typing import final

import attrs
import trio

from runtime.raft.core import Message

__all__ = ["LinkParams", "NetTransport", "SimNetwork"]


@attrs.frozen
class LinkParams:
    """How the network treats messages (all links alike).

    ``delay`` is the base one-way latency in seconds; each message adds a uniform jitter
    in ``[0, jitter)``. ``drop`` and ``duplicate`` are probabilities per message.
    """

    delay: float = 0.001
    jitter: float = 0.002
    drop: float = 0.0
    duplicate: float = 0.0
    reorder: bool = False


@final
class NetTransport:
    """The :class:`~runtime.raft.driver.Transport` of one node on a :class:`SimNetwork`."""

    def __init__(self, net: SimNetwork, node: str) -> None:
        """Internal: use :meth:`SimNetwork.transport`."""
        self._net = net
        self._node = node

    def send(self, to: str, msg: Message) -> None:
        """Hand ``msg`` to the network; never blocks, may drop."""
        self._net.send(self._node, to, msg)


@final
class SimNetwork:
    """The network of one simulated cluster; see the module docstring."""

    def __init__(self, nodes: Iterable[str], rng: random.Random) -> None:
        """Create a network between ``nodes``; each gets an rng derived from ``rng``."""
        self.nodes = tuple(nodes)
        self._rngs = {n: random.Random(rng.getrandbits(64)) for n in self.nodes}
        self._seq = dict.fromkeys(self.nodes, 0)
        self._last_at: dict[tuple[str, str], float] = {}
        # (time, sender, seq, receiver, message); message None: the connection closed
        self._heap: list[tuple[float, str, int, str, Message | None]] = []
        self._receivers: dict[str, Callable[[Message], None]] = {}
        self._on_lost: dict[str, Callable[[str], None]] = {}
        self._cut: set[tuple[str, str]] = set()
        self.params = LinkParams()
        self._wake = trio.Event()
        self.sent = 0
        self.delivered = 0
        self.dropped = 0
        self.duplicated = 0

    def transport(self, node: str) -> NetTransport:
        """Return the transport for ``node``'s driver."""
        return NetTransport(self, node)

    def attach(
        self,
        node: str,
        receiver: Callable[[Message], None],
        on_lost: Callable[[str], None] | None = None,
    ) -> None:
        """Deliver ``node``'s messages to ``receiver`` (its driver's ``deliver``), and
        its lost connections to ``on_lost`` (its driver's ``peer_down``)."""
        self._receivers[node] = receiver
        if on_lost is not None:
            self._on_lost[node] = on_lost

    def detach(self, node: str) -> None:
        """Stop delivering to ``node`` (it crashed); its messages are dropped."""
        self._receivers.pop(node, None)
        self._on_lost.pop(node, None)

    def connection_lost(self, frm: str, to: str) -> None:
        """Tell ``to`` that its connection to ``frm`` closed, after what ``frm`` sent it.

        Delivered like a message from ``frm`` (same delay draw, FIFO behind the link's
        messages unless reordering is on); lost if ``to`` is down by then.
        """
        self._schedule(frm, to, None)

    # -- partitions

    def cut(self, frm: str, to: str) -> None:
        """Cut the directed link ``frm -> to``."""
        self._cut.add((frm, to))

    def partition(self, *groups: Iterable[str]) -> None:
        """Cut every link between different groups, both ways (nodes in no group: none)."""
        sets = [set(g) for g in groups]
        for i, a in enumerate(sets):
            for b in sets[i + 1 :]:
                for x in a:
                    for y in b:
                        self._cut.add((x, y))
                        self._cut.add((y, x))

    def heal(self, links: Iterable[tuple[str, str]] | None = None) -> None:
        """Restore ``links`` (default: every link)."""
        if links is None:
            self._cut.clear()
        else:
            self._cut.difference_update(links)

    def is_cut(self, frm: str, to: str) -> bool:
        """Return whether the directed link is cut."""
        return (frm, to) in self._cut

    @property
    def cut_links(self) -> frozenset[tuple[str, str]]:
        """The directed links currently cut."""
        return frozenset(self._cut)

    # -- traffic

    def send(self, frm: str, to: str, msg: Message) -> None:
        """Schedule ``msg`` for delivery (or drop it); see the module docstring."""
        self.sent += 1
        if (frm, to) in self._cut or to not in self._seq:
            self.dropped += 1
            return
        p = self.params
        if p.drop and self._rngs[frm].random() < p.drop:
            self.dropped += 1
            return
        copies = 2 if p.duplicate and self._rngs[frm].random() < p.duplicate else 1
        self.duplicated += copies - 1
        for _ in range(copies):
            self._schedule(frm, to, msg)

    def _schedule(self, frm: str, to: str, msg: Message | None) -> None:
        p = self.params
        rng = self._rngs[frm]
        at = trio.current_time() + p.delay + p.jitter * rng.random()
        if not p.reorder:
            link = (frm, to)
            at = max(at, self._last_at.get(link, 0.0))
            self._last_at[link] = at
        seq = self._seq[frm] = self._seq[frm] + 1
        if not self._heap or at < self._heap[0][0]:
            self._wake.set()
        heapq.heappush(self._heap, (at, frm, seq, to, msg))

    async def run(self) -> None:
        """Deliver messages on time, forever (run it in the cluster's nursery)."""
        heap = self._heap
        while True:
            now = trio.current_time()
            while heap and heap[0][0] <= now:
                _, frm, _, to, msg = heapq.heappop(heap)
                if msg is None:
                    on_lost = self._on_lost.get(to)
                    if on_lost is not None and (frm, to) not in self._cut:
                        on_lost(frm)
                    continue
                receiver = self._receivers.get(to)
                if receiver is None or (frm, to) in self._cut:
                    self.dropped += 1
                    continue
                self.delivered += 1
                receiver(msg)
            self._wake = trio.Event()
            if heap:
                with trio.move_on_at(heap[0][0]):
                    await self._wake.wait()
            else:
                await self._wake.wait()
