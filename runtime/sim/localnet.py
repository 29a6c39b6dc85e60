"""An in-memory distribution: several :class:`~runtime.node.Node` s in one process.

:class:`LocalNetwork` connects nodes that live in one trio run, so a whole multi-node
regency system (supervisors, GenServers, links and monitors across nodes, Raft over
:class:`~runtime.raft.dist_transport.DistTransport`) runs under trio's
``MockClock(autojump_threshold=0)``: seeded, reproducible and far faster than real time.
``network.attach(node)`` sets ``node.remote`` to a :class:`LocalRemote`, which implements
the node's :class:`~runtime.node.Remote` protocol with the semantics of
:class:`runtime.dist.Distribution`: code on the nodes cannot tell the two apart (see
*Deviations* for the few differences).

The model: TCP between every pair of nodes
    Every cross-node operation (a message, a link, an exit signal, a monitor, a ``Down``,
    a call's reply) becomes a *packet* on the *connection* of its pair of nodes; there
    is at most one connection per pair, made on demand by the first operation, as in
    ``runtime.dist``. Each packet is due ``latency + jitter * u`` seconds after it was
    sent (``u`` uniform in ``[0, 1)``); a new connection first costs one round trip of
    such delays (the handshake). One task, :meth:`LocalNetwork.run`, delivers due
    packets by calling the receiving node's entry points exactly as ``runtime.dist``'s
    reader does (``deliver``, ``remote_link``, ``remote_exit`` ...).

Guarantees
    * **FIFO per ordered pair of nodes** (one TCP stream each way): a packet is never
      delivered before one sent earlier on the same pair, whatever the delays.
    * **No loss, duplication or reordering without a broken connection.** A partition
      shorter than ``detect_after`` only delays packets (TCP retransmits): when it heals,
      they are delivered, in order. Packets are lost only when their connection breaks,
      and then both nodes get ``node_down`` (links fire ``NoConnection``, monitors deliver
      ``Down(..., NoConnection(node))``), as in Erlang: nothing is lost silently.
    * **Backpressure**: a message for a full mailbox holds its pair's stream (and only
      that one) until the receiver makes room; once more than ``max_queue`` packets wait
      on a stream, ``send`` raises :class:`~runtime.errors.PeerBusy` and ``send_wait``
      waits, as ``runtime.dist`` does with ``max_buffer`` bytes.
    * **Copy semantics** (with ``encode=True``, the default): every operation is encoded
      with :mod:`runtime.wire` when sent and decoded again, so a message of an
      unregistered class raises :class:`~runtime.errors.Unregistered` in the sender,
      the receiver gets a copy, and ``Crashed`` loses its exception object, as on TCP.

Faults (all deterministic; call them from the test at any time)
    * :meth:`LocalNetwork.partition` (symmetric, between two groups) and
      :meth:`LocalNetwork.partition_one_way` cut directed links; :meth:`~LocalNetwork.heal`
      restores them all. A cut in *either* direction *impairs* the pair's connection:
      packets on the cut direction wait; if the connection is still impaired
      ``detect_after`` seconds later (the heartbeat timeout), it breaks: its packets in
      flight are dropped and both nodes get ``node_down(peer)`` at that instant. Healed
      in time, nothing is lost. The next operation between the two makes a new
      connection on demand.
    * :meth:`LocalNetwork.crash` cuts a node off from everyone (its host is unreachable):
      its connections break after ``detect_after``, on both sides. Restarting is the
      test's job: stop the crashed ``Node`` (leave its ``async with``), make a new
      ``Node`` with the same name and a new ``creation`` and :meth:`~LocalNetwork.attach`
      it. A peer still connected to the old incarnation keeps queueing into the dead
      connection until ``detect_after`` expires or the new incarnation connects to it
      (which replaces the old connection: ``node_down`` at once, as ``runtime.dist``
      does). Messages to pids of the old creation are dropped as dead letters.
    * :meth:`LocalNetwork.disconnect` breaks one connection at once (a reset): both
      nodes get ``node_down`` immediately.
    * A node that stops (leaves ``async with``) first ends its processes, whose exit
      signals and ``Down`` messages still travel (peers see ``Shutdown("node_stopped")``),
      then calls ``remote.close()``, which says goodbye on each connection: its peers get
      ``node_down`` after the packets already in flight from it; connecting to it
      afterwards is refused at once, exactly as with ``runtime.dist``.

Unreachable nodes
    An operation for a name never attached is a dead letter (messages) or fires
    ``NoConnection`` at once (links, monitors), as ``runtime.dist`` does for a node with
    no known address. An operation for a node that is crashed or partitioned away starts
    a connection attempt that waits: after ``detect_after`` (the connect timeout) the
    attempt fails, what it carried is dropped and ``node_down`` fires on the dialling
    node; if the cut heals first, the connection is made and everything is delivered.

Seeding and reproducing
    ``LocalNetwork(seed)`` (an int or a ``random.Random``) is the root of every random
    choice: one rng per ordered pair of node names draws that stream's delays (so the
    draws do not depend on how trio interleaves senders of different pairs), and the
    network's own rng chooses which due stream delivers next when several are due at
    the same instant (still FIFO within each). Fault timers fire at fixed simulated
    times, ordered by time and node names. Nothing depends on trio's wake order inside
    the network, so the same seed and the same sends give the same deliveries: compare
    :attr:`LocalNetwork.trace` (with ``trace=True``) between runs. Give every ``Node`` an
    explicit ``creation`` (otherwise pids differ between runs), keep ``latency > 0``, and
    remember that trio shuffles the order of tasks woken together: processes of one node
    racing to send on the same pair are ordered by trio, not by the network (under
    Hypothesis trio's scheduler is seeded), and so is a task that wakes at the very
    instant a connection breaks (send just before or after it, not at it).

Deviations from ``runtime.dist``
    No heartbeat packets travel; detection is the ``detect_after`` timer itself, and both
    sides of a broken connection see ``node_down`` at the same instant (on TCP each side
    detects on its own clock). A connection attempt waits ``detect_after`` for an
    unreachable node, where TCP gives up after ``connect_timeout``. A stopping node calls
    ``node_down`` on itself for every peer it had a connection or an attempt with (dist
    does so only for established connections). ``max_queue`` counts packets, not bytes.
    Nothing is authenticated or forged: there is no handshake, TLS or wire abuse to test
    here (``tests/runtime/test_dist_abuse.py`` covers that on real sockets).
"""

from __future__ import annotations

import heapq
import random
from collections import deque
from collections.abc import Callable, Iterable
from typing import Final, final

import attrs
import structlog
import trio

from runtime import dist as _dist
from runtime import wire
from runtime.errors import PeerBusy
from runtime.messages import Call
from runtime.node import Node
from runtime.pid import Name, Pid, Ref
from runtime.reasons import Abnormal, ExitReason

__all__ = [
    "DEFAULT_DETECT_AFTER",
    "DEFAULT_JITTER",
    "DEFAULT_LATENCY",
    "DEFAULT_MAX_QUEUE",
    "LocalNetwork",
    "LocalRemote",
    "TraceEvent",
]

log = structlog.get_logger("regency.sim")

DEFAULT_LATENCY: Final = 0.0005
"""Seconds every packet takes at least (one way)."""

DEFAULT_JITTER: Final = 0.0015
"""Seconds of uniform random delay added to each packet: delays are 0.5 to 2 ms."""

DEFAULT_DETECT_AFTER: Final = 0.5
"""Seconds an impaired connection (or a connection attempt) lasts before it breaks."""

DEFAULT_MAX_QUEUE: Final = 100_000
"""Packets waiting on one stream before ``send`` raises ``PeerBusy``."""


@attrs.frozen
class TraceEvent:
    """One thing the network did, recorded in :attr:`LocalNetwork.trace`.

    ``kind`` is ``"deliver"`` (``op`` was handed to ``dst``), ``"connect"`` (a
    connection between ``src`` and ``dst`` was made) or ``"break"`` (the connection
    between ``src`` and ``dst`` broke; ``detail`` says why and how many packets were
    lost). For connections, ``src`` is the smaller of the two names (not necessarily the
    node that dialled). ``at`` is the simulated time (``trio.current_time()``).
    """

    at: float
    kind: str
    src: str
    dst: str
    op: object = None
    detail: str = ""


@final
class _Stream:
    """One direction of a connection: packets from ``src`` to ``dst``, in order."""

    __slots__ = ("dst", "held", "hold_scope", "last_at", "queue", "rooms", "src")

    def __init__(self, src: LocalRemote, dst: LocalRemote) -> None:
        self.src = src
        self.dst = dst
        self.queue: deque[tuple[float, object]] = deque()  # (due time, operation)
        self.last_at = 0.0
        self.held = False  # a message waits for room in a full mailbox
        self.hold_scope: trio.CancelScope | None = None
        self.rooms: list[trio.Event] = []  # senders waiting in send_wait


@final
class _Conn:
    """One connection between two attachments: ``a`` dialled, ``b`` accepts."""

    __slots__ = (
        "a",
        "accepting",
        "b",
        "broken",
        "deadline",
        "established",
        "hi",
        "id",
        "lo",
        "streams",
        "token",
    )

    def __init__(self, cid: int, a: LocalRemote, b: LocalRemote) -> None:
        self.id = cid
        self.a = a
        self.b = b
        self.lo, self.hi = sorted((a.name, b.name))
        self.streams = {a.name: _Stream(a, b), b.name: _Stream(b, a)}  # by sender
        self.established = False
        self.accepting = False  # the handshake is under way
        self.broken = False
        self.deadline: float | None = None  # when it breaks unless it recovers first
        self.token = 0  # invalidates a stale deadline timer

    def other(self, end: LocalRemote) -> LocalRemote:
        return self.b if end is self.a else self.a


@final
class LocalRemote:
    """One node's attachment to a :class:`LocalNetwork`: its ``node.remote``.

    Implements :class:`runtime.node.Remote` with ``runtime.dist``'s semantics (see the
    module doc). Made by :meth:`LocalNetwork.attach`; every method returns at once
    except :meth:`send_wait`.
    """

    def __init__(self, network: LocalNetwork, node: Node) -> None:
        """Internal: use :meth:`LocalNetwork.attach`."""
        self.network = network
        self.node = node
        self.name = node.name
        self.crashed = False
        """True once :meth:`LocalNetwork.crash` cut this attachment off."""
        self.closed = False
        """True once the node stopped (:meth:`close`)."""
        self.retired = False
        """True once a newer node with the same name was attached."""
        self._conns: dict[str, _Conn] = {}
        self._creations: dict[str, int] = {}  # peer creation seen at the last connect

    def __repr__(self) -> str:
        return f"<LocalRemote {self.name} creation={self.node.creation}>"

    @property
    def live(self) -> bool:
        """True while this attachment can take part in connections."""
        return not (self.closed or self.retired)

    def peers(self) -> list[str]:
        """The names of the nodes this node has an established connection with."""
        return sorted(n for n, c in self._conns.items() if c.established)

    def is_connected(self, name: str) -> bool:
        """True if this node has an established connection with node *name*."""
        conn = self._conns.get(name)
        return conn is not None and conn.established

    # -- the Remote protocol ----------------------------------------------------------

    def send(self, to: Pid | Name, msg: object) -> None:
        """Queue *msg* for a process or name on another node.

        A node that was never attached gets nothing (a dead letter); a pid of a creation
        other than the one this node last connected to is a dead letter too.

        Raises:
            PeerBusy: more than ``max_queue`` packets wait on the stream to that node.
            Unregistered: *msg* holds a value of a class that may not travel
                (``encode=True``).
            ValueError: *msg* is too deep or out of range for the wire (``encode=True``).
        """
        name = to.node if isinstance(to, Pid) else str(to.node)
        net = self.network
        conn = net._reachable(self, name)
        if conn is None:
            self.node.dead_letters += 1
            return
        if isinstance(to, Pid):
            creation = self._creations.get(name)
            if creation is not None and to.creation != creation:
                self.node.dead_letters += 1  # a pid of the node's previous life
                return
        if len(conn.streams[self.name].queue) > net.max_queue:
            raise PeerBusy(to if isinstance(to, Pid) else Pid(name, 0, 0), net.max_queue)
        net._push(conn, self, wire.Send(to, msg))

    def call(self, ref: Ref, target: Pid | Name, request: object, caller: Pid | None) -> bool:
        """A MONITOR packet, then a SEND of the ``Call``; returns False: the server's
        node keeps the monitor until a DEMONITOR.

        Raises as :meth:`send`; then the monitor is cancelled again.
        """
        self.monitor(ref, None, target)
        try:
            self.send(target, Call(ref, request, caller))
        except BaseException:
            self.demonitor(ref, target)
            raise
        return False

    async def send_wait(self, to: Pid | Name, msg: object) -> None:
        """Like :meth:`send`, waiting while more than ``max_queue`` packets wait."""
        name = to.node if isinstance(to, Pid) else str(to.node)
        net = self.network
        while True:
            conn = net._reachable(self, name)
            if conn is None:
                break
            stream = conn.streams[self.name]
            if len(stream.queue) <= net.max_queue:
                break
            room = trio.Event()
            stream.rooms.append(room)
            await room.wait()
        self.send(to, msg)
        await self.node._budget_checkpoint()

    def link(self, frm: Pid, to: Pid) -> None:
        """Tell *to*'s node that local *frm* linked to it."""
        self._signal(to.node, wire.Link(frm, to))

    def unlink(self, frm: Pid, to: Pid) -> None:
        """Tell *to*'s node that local *frm* removed its link."""
        self._signal(to.node, wire.Unlink(frm, to), quiet=True)

    def exit(self, frm: Pid, to: Pid, reason: ExitReason, *, link: bool) -> None:
        """Send an exit signal; a linked exit whose reason cannot travel goes as its repr.

        Raises:
            Unregistered: for ``exit(pid, reason)`` by user code (*link* false), *reason*
                holds a value of a class that may not travel (``encode=True``).
        """
        if link:
            self._signal_reason(to.node, reason, lambda r: wire.LinkExit(frm, to, r), quiet=False)
        else:
            self._signal(to.node, wire.Exit(frm, to, reason))

    def monitor(self, ref: Ref, watcher: Pid | None, target: Pid | Name) -> None:
        """Ask *target*'s node to monitor it for local *watcher*."""
        node = target.node if isinstance(target, Pid) else str(target.node)
        self._signal(node, wire.Monitor(ref, watcher or self.node.pid, target))

    def demonitor(self, ref: Ref, target: Pid | Name) -> None:
        """Cancel a monitor set with :meth:`monitor`."""
        node = target.node if isinstance(target, Pid) else str(target.node)
        self._signal(node, wire.Demonitor(ref, target), quiet=True)

    def down(self, ref: Ref, target: Pid | Name, reason: ExitReason, watcher_node: str) -> None:
        """Tell *watcher_node* that the local *target* (a pid or a name) it monitored is gone."""
        watcher = Pid(watcher_node, 0, 0)
        self._signal_reason(
            watcher_node, reason, lambda r: wire.Down(ref, target, r, watcher), quiet=True
        )

    def reply(self, ref: Ref, value: object) -> None:
        """Send a call's reply to the node that made *ref*.

        Raises:
            Unregistered: *value* holds a value of a class that may not travel.
        """
        self._signal(
            ref.node, wire.CallReply(ref, value, Pid(ref.node, 0, ref.creation)), quiet=True
        )

    def close(self) -> None:
        """Leave the network (the node stops). Idempotent.

        Each established connection carries a goodbye after what is already in flight:
        the peer gets ``node_down`` when it arrives. Attempts still under way are
        abandoned. This node gets ``node_down`` for each of those peers at once, and
        ``node.remote`` becomes None: the node is local-only from now on. Connecting to
        this name is refused until another node with the name is attached.
        """
        if self.closed:
            return
        self.closed = True
        if self.node.remote is self:
            self.node.remote = None
        net = self.network
        peers = sorted(self._conns)
        for name in peers:
            conn = self._conns[name]
            if conn.established:
                net._enqueue(conn, self, wire.Goodbye("node stopping"))
            else:
                net._break(conn, "node stopping")
        net._wake()
        if not self.retired:
            for name in peers:
                self.node.node_down(name)

    # -- helpers ----------------------------------------------------------------------

    def _signal(self, name: str, op: wire.Op, *, quiet: bool = False) -> None:
        net = self.network
        conn = net._reachable(self, name)
        if conn is None:
            if not quiet:
                net._unreachable_soon(self, name)
            return
        net._push(conn, self, op)

    def _signal_reason(
        self,
        name: str,
        reason: ExitReason,
        make: Callable[[ExitReason], wire.Op],
        *,
        quiet: bool,
    ) -> None:
        try:
            self._signal(name, make(reason), quiet=quiet)
        except (TypeError, ValueError) as e:
            log.warning(
                "reason_not_sendable",
                node=self.name,
                peer=name,
                reason=repr(reason)[:200],
                error=str(e),
            )
            self._signal(name, make(Abnormal(repr(reason)[:1000])), quiet=quiet)


_Timer = tuple[float, str, str, int, Callable[[], None]]


@final
class LocalNetwork:
    """Nodes of one process, connected in memory; see the module doc for the model.

    Args:
        seed: the root of every random choice: an int, or a ``random.Random`` to draw
            one from.
        latency: seconds every packet takes at least (> 0). Default 0.5 ms.
        jitter: seconds of uniform random delay added to each packet (>= 0).
            Default 1.5 ms.
        detect_after: seconds an impaired connection lasts before it breaks, and an
            attempt to reach an unreachable node waits before it fails (> 0): the
            heartbeat timeout. Default 0.5 s.
        max_queue: packets that may wait on one stream before ``send`` raises
            ``PeerBusy``. Default 100 000.
        encode: encode and decode every operation with :mod:`runtime.wire`, as TCP does
            (copies, unregistered classes refused). False passes the objects themselves:
            faster, but nothing checks that they could travel.
        registry: the classes allowed on the wire (default: the global registry); the
            runtime's own messages are added to it.
        trace: record every delivery, connection and break in :attr:`trace`.

    ``latency``, ``jitter`` and ``detect_after`` may be changed between packets; a new
    value applies to packets sent and connections impaired afterwards.

    Raises:
        ValueError: a parameter is out of range.
    """

    def __init__(
        self,
        seed: int | random.Random = 0,
        *,
        latency: float = DEFAULT_LATENCY,
        jitter: float = DEFAULT_JITTER,
        detect_after: float = DEFAULT_DETECT_AFTER,
        max_queue: int = DEFAULT_MAX_QUEUE,
        encode: bool = True,
        registry: wire.Registry | None = None,
        trace: bool = False,
    ) -> None:
        if not latency > 0:
            raise ValueError(f"latency must be > 0 seconds, got {latency!r}")
        if not jitter >= 0:
            raise ValueError(f"jitter must be >= 0 seconds, got {jitter!r}")
        if not detect_after > 0:
            raise ValueError(f"detect_after must be > 0 seconds, got {detect_after!r}")
        if max_queue < 1:
            raise ValueError(f"max_queue must be at least 1, got {max_queue!r}")
        root = seed if isinstance(seed, random.Random) else random.Random(seed)
        self._pair_base = root.getrandbits(64)
        self._rng = random.Random(root.getrandbits(64))
        self.latency = latency
        self.jitter = jitter
        self.detect_after = detect_after
        self.max_queue = max_queue
        self.encode = encode
        reg = registry if registry is not None else wire.DEFAULT_REGISTRY
        for cls, wire_name in _dist._RUNTIME_MESSAGES:
            reg.register(cls, wire_name)
        self._encoder = wire.FrameEncoder(reg)
        self._decoder = wire.FrameDecoder(reg)
        self._members: dict[str, LocalRemote] = {}
        self._conns: dict[int, _Conn] = {}
        self._next_conn = 0
        self._pair_rngs: dict[str, random.Random] = {}
        self._cuts: set[tuple[str, str]] = set()
        self._timers: list[_Timer] = []
        self._timer_seq = 0
        self._event = trio.Event()
        self._nursery: trio.Nursery | None = None
        self.trace: list[TraceEvent] | None = [] if trace else None
        """Everything delivered, connected and broken, in order (``trace=True``)."""
        self.sent = 0
        """Packets sent (operations queued on a connection)."""
        self.delivered = 0
        """Packets handed to their receiving node."""
        self.dropped = 0
        """Packets lost because their connection broke."""
        self.breaks = 0
        """Connections (and connection attempts) that broke."""

    # -- membership ------------------------------------------------------------------

    def attach(self, node: Node) -> LocalRemote:
        """Connect *node* to the network: set ``node.remote`` and return it.

        Every attached node can reach every other by name. Attaching a node whose name is
        taken replaces the earlier node (a restart): the earlier one is retired, and if it
        was neither crashed nor stopped, its connections break at once (as when the OS
        closes the sockets of a killed process), so its peers get ``node_down``.

        Raises:
            RuntimeError: *node* already has a distribution layer (``node.remote``).
        """
        if node.remote is not None:
            raise RuntimeError(f"node {node.name} already has a distribution layer")
        remote = LocalRemote(self, node)
        old = self._members.get(node.name)
        if old is not None:
            old.retired = True
            if not (old.crashed or old.closed):
                for name in sorted(old._conns):
                    self._break(old._conns[name], "peer restarted")
        self._members[node.name] = remote
        node.remote = remote
        return remote

    def member(self, name: str) -> LocalRemote:
        """The current attachment of node *name*.

        Raises:
            KeyError: no node of that name was ever attached.
        """
        return self._members[name]

    @property
    def nodes(self) -> list[str]:
        """The names of every node attached so far (stopped or crashed ones too)."""
        return sorted(self._members)

    def is_connected(self, a: str, b: str) -> bool:
        """True if the current nodes *a* and *b* have an established connection."""
        ra = self._members.get(a)
        return ra is not None and ra.is_connected(b)

    # -- faults ----------------------------------------------------------------------

    def partition(self, group_a: str | Iterable[str], group_b: str | Iterable[str]) -> None:
        """Cut every link between the two groups of node names, both ways."""
        for x in _names(group_a):
            for y in _names(group_b):
                if x != y:
                    self._cuts.add((x, y))
                    self._cuts.add((y, x))
        self._recheck()

    def partition_one_way(self, src: str | Iterable[str], dst: str | Iterable[str]) -> None:
        """Cut the links from each node of *src* to each node of *dst*, one way only.

        As on TCP, a connection that cannot carry packets one way breaks after
        ``detect_after`` on both sides; until then the other direction still delivers.
        """
        for x in _names(src):
            for y in _names(dst):
                if x != y:
                    self._cuts.add((x, y))
        self._recheck()

    def heal(self) -> None:
        """Restore every cut link. Packets held on impaired connections are delivered,
        connection attempts waiting on a cut connect. Crashed nodes stay crashed."""
        self._cuts.clear()
        self._recheck()

    def is_cut(self, src: str, dst: str) -> bool:
        """True if packets from node *src* to node *dst* cannot pass now."""
        if (src, dst) in self._cuts:
            return True
        return any(r is not None and r.crashed for r in map(self._members.get, (src, dst)))

    def crash(self, name: str) -> None:
        """Cut node *name* off from everyone; its connections break after ``detect_after``.

        The ``Node`` object keeps running (its processes are not stopped): stop it and
        attach a new ``Node`` with the same name to restart it.

        Raises:
            KeyError: no node of that name was ever attached.
        """
        self._members[name].crashed = True
        self._recheck()

    def disconnect(self, a: str, b: str) -> bool:
        """Break the connection between nodes *a* and *b* at once (a reset).

        Both get ``node_down`` now; packets in flight are lost. Returns False if they had
        no connection.
        """
        ra = self._members.get(a)
        conn = ra._conns.get(b) if ra is not None else None
        if conn is None:
            return False
        self._break(conn, "connection reset")
        return True

    # -- the delivery task -----------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Deliver packets and fire fault timers, forever: ``await nursery.start(net.run)``.

        Nothing crosses between nodes while this task is not running. Cancel it (with its
        nursery) to stop the network.

        Raises:
            RuntimeError: the network is already running.
        """
        if self._nursery is not None:
            raise RuntimeError("this LocalNetwork is already running")
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                task_status.started()
                await self._loop()
        finally:
            self._nursery = None

    async def _loop(self) -> None:
        timers = self._timers
        while True:
            now = trio.current_time()
            if timers and timers[0][0] <= now:
                heapq.heappop(timers)[-1]()
                continue
            ready: list[tuple[str, str, int, _Stream, _Conn]] = []
            next_at = timers[0][0] if timers else float("inf")
            for conn in self._conns.values():
                if not conn.established:
                    continue
                for stream in conn.streams.values():
                    if stream.queue and self._flows(stream):
                        at = stream.queue[0][0]
                        if at <= now:
                            ready.append((stream.src.name, stream.dst.name, conn.id, stream, conn))
                        elif at < next_at:
                            next_at = at
            if ready:
                ready.sort(key=lambda r: r[:3])
                pick = ready[0] if len(ready) == 1 else self._rng.choice(ready)
                await self._deliver(pick[4], pick[3])
                continue
            self._event = trio.Event()
            with trio.move_on_at(next_at):
                await self._event.wait()

    def _flows(self, stream: _Stream) -> bool:
        """True if the stream's head may be delivered (time aside)."""
        return (
            not stream.held
            and stream.dst.live
            and not stream.src.crashed
            and not stream.dst.crashed
            and (stream.src.name, stream.dst.name) not in self._cuts
        )

    async def _deliver(self, conn: _Conn, stream: _Stream) -> None:
        """Hand the stream's head to its node, as ``runtime.dist``'s reader does."""
        _, op = stream.queue.popleft()
        if stream.rooms and len(stream.queue) <= self.max_queue:
            self._wake_rooms(stream)
        src = stream.src.name
        node = stream.dst.node
        self.delivered += 1
        if self.trace is not None:
            self.trace.append(TraceEvent(trio.current_time(), "deliver", src, node.name, op))
        t = type(op)
        if t is wire.Send:
            assert isinstance(op, wire.Send)
            to = op.to
            key: Pid | str = to if isinstance(to, Pid) else to.name
            if _mailbox_full(node, key):
                stream.held = True
                assert self._nursery is not None
                self._nursery.start_soon(self._hold, stream, node, key, op.msg)
            else:
                await node.deliver(key, op.msg)  # room: returns without a checkpoint
        elif t is wire.Link:
            assert isinstance(op, wire.Link)
            node.remote_link(op.from_, op.to)
        elif t is wire.Unlink:
            assert isinstance(op, wire.Unlink)
            node.remote_unlink(op.from_, op.to)
        elif t is wire.Exit or t is wire.LinkExit:
            assert isinstance(op, wire.Exit | wire.LinkExit)
            node.remote_exit(op.from_, op.to, op.reason, link=t is wire.LinkExit)
        elif t is wire.Monitor:
            assert isinstance(op, wire.Monitor)
            target = op.target
            node.remote_monitor(
                op.ref, op.watcher, target if isinstance(target, Pid) else target.name
            )
        elif t is wire.Demonitor:
            assert isinstance(op, wire.Demonitor)
            target = op.target
            node.remote_demonitor(op.ref, target if isinstance(target, Pid) else target.name)
        elif t is wire.Down:
            assert isinstance(op, wire.Down)
            node.remote_down(op.ref, op.reason)
        elif t is wire.CallReply:
            assert isinstance(op, wire.CallReply)
            node.reply(op.ref, op.value)
        elif t is wire.Goodbye:
            self._break(conn, "goodbye")
        else:  # pragma: no cover - only the operations above are ever queued
            raise AssertionError(f"unexpected operation {op!r}")

    async def _hold(self, stream: _Stream, node: Node, key: Pid | str, msg: object) -> None:
        """Wait for room in a full mailbox; the stream waits meanwhile (backpressure)."""
        with trio.CancelScope() as scope:
            stream.hold_scope = scope
            await node.deliver(key, msg)
        if stream.hold_scope is scope:
            stream.hold_scope = None
            stream.held = False
            self._wake()

    # -- connections -----------------------------------------------------------------

    def _reachable(self, src: LocalRemote, name: str) -> _Conn | None:
        """The connection from *src* to node *name*, dialling it if needed.

        None when *src* left the network or *name* was never attached (no address).
        """
        if not src.live:
            return None
        conn = src._conns.get(name)
        if conn is not None:
            return conn
        dst = self._members.get(name)
        if dst is None or dst is src:
            return None
        theirs = dst._conns.get(src.name)
        if theirs is not None and theirs.other(dst) is src:
            src._conns[name] = theirs  # both dialled at once: one connection
            return theirs
        self._next_conn += 1
        conn = _Conn(self._next_conn, src, dst)
        self._conns[conn.id] = conn
        src._conns[name] = conn
        if not dst.live:
            self._at(trio.current_time(), src.name, name, lambda: self._break(conn, "refused"))
        else:
            self._check(conn)
        return conn

    def _healthy(self, conn: _Conn) -> bool:
        a, b = conn.a, conn.b
        return not (
            a.crashed
            or b.crashed
            or (a.name, b.name) in self._cuts
            or (b.name, a.name) in self._cuts
        )

    def _check(self, conn: _Conn) -> None:
        """After a change: start or cancel the break deadline, or start the handshake."""
        if conn.broken:
            return
        now = trio.current_time()
        if self._healthy(conn):
            if conn.deadline is not None:
                conn.deadline = None
                conn.token += 1
            if not conn.established and not conn.accepting:
                conn.accepting = True
                rng = self._rng_for(f"{conn.lo}~{conn.hi}")  # whoever dialled
                rtt = 2 * (self.latency + self.jitter * rng.random())
                self._at(now + rtt, conn.lo, conn.hi, lambda: self._accept(conn))
        elif conn.deadline is None:
            conn.deadline = now + self.detect_after
            conn.token += 1
            token = conn.token
            self._at(conn.deadline, conn.lo, conn.hi, lambda: self._expire(conn, token))
        self._wake()

    def _recheck(self) -> None:
        for conn in list(self._conns.values()):
            self._check(conn)

    def _expire(self, conn: _Conn, token: int) -> None:
        if conn.broken or conn.token != token:
            return
        why = "no heartbeat" if conn.established else "connect timeout"
        self._break(conn, f"{why} for {self.detect_after} s")

    def _accept(self, conn: _Conn) -> None:
        """The handshake is done: the acceptor adopts the connection."""
        conn.accepting = False
        if conn.broken or not self._healthy(conn):
            return  # the deadline set when it became impaired decides
        a, b = conn.a, conn.b
        if not (a.live and b.live):
            self._break(conn, "refused")
            return
        old = b._conns.get(a.name)
        if old is not None and old is not conn:
            self._break(old, "replaced by a new connection")
        b._conns[a.name] = conn
        conn.established = True
        a._creations[b.name] = b.node.creation
        b._creations[a.name] = a.node.creation
        if self.trace is not None:
            self.trace.append(TraceEvent(trio.current_time(), "connect", conn.lo, conn.hi))
        self._wake()

    def _break(self, conn: _Conn, why: str) -> None:
        """The connection is gone: drop its packets, tell the live ends ``node_down``."""
        if conn.broken:
            return
        conn.broken = True
        self.breaks += 1
        self._conns.pop(conn.id, None)
        notify: list[tuple[LocalRemote, str]] = []
        for end in (conn.a, conn.b):
            peer = conn.other(end).name
            if end._conns.get(peer) is conn:
                del end._conns[peer]
                if end.live:
                    notify.append((end, peer))
        lost = 0
        for stream in conn.streams.values():
            lost += len(stream.queue) + (1 if stream.held else 0)
            stream.queue.clear()
            stream.held = False
            if stream.hold_scope is not None:
                stream.hold_scope.cancel()
                stream.hold_scope = None
            self._wake_rooms(stream)
        self.dropped += lost
        if self.trace is not None:
            self.trace.append(
                TraceEvent(
                    trio.current_time(),
                    "break",
                    conn.lo,
                    conn.hi,
                    detail=f"{why}; {lost} lost",
                )
            )
        log.info("connection_broken", a=conn.a.name, b=conn.b.name, reason=why, lost=lost)
        for end, peer in sorted(notify, key=lambda n: n[0].name):
            end.node.node_down(peer)
        self._wake()

    # -- packets ---------------------------------------------------------------------

    def _push(self, conn: _Conn, src: LocalRemote, op: wire.Op) -> None:
        """Encode *op* (raising in the sender if it cannot travel) and queue it."""
        if self.encode:
            frame = self._encoder.encode(op)
            (op,) = self._decoder.feed(frame)
        self._enqueue(conn, src, op)

    def _enqueue(self, conn: _Conn, src: LocalRemote, op: object) -> None:
        stream = conn.streams[src.name]
        rng = self._rng_for(f"{src.name}>{stream.dst.name}")
        at = trio.current_time() + self.latency + self.jitter * rng.random()
        at = max(at, stream.last_at)
        stream.last_at = at
        stream.queue.append((at, op))
        self.sent += 1
        if len(stream.queue) == 1:
            self._wake()

    def _rng_for(self, key: str) -> random.Random:
        """The rng of one stream or pair: seeded from the network's seed and *key* alone."""
        rng = self._pair_rngs.get(key)
        if rng is None:
            rng = self._pair_rngs[key] = random.Random(f"{self._pair_base}:{key}")
        return rng

    def _unreachable_soon(self, src: LocalRemote, name: str) -> None:
        """Fire links and monitors on *name* once the caller has recorded them."""

        def fire() -> None:
            if src.live and name not in src._conns:
                src.node.node_down(name)

        self._at(trio.current_time(), src.name, name, fire)

    # -- plumbing --------------------------------------------------------------------

    def _at(self, at: float, a: str, b: str, fn: Callable[[], None]) -> None:
        """Run *fn* in the network task at *at*; ties go by node names, then order."""
        self._timer_seq += 1
        heapq.heappush(self._timers, (at, a, b, self._timer_seq, fn))
        self._wake()

    def _wake(self) -> None:
        self._event.set()

    @staticmethod
    def _wake_rooms(stream: _Stream) -> None:
        rooms, stream.rooms = stream.rooms, []
        for room in rooms:
            room.set()


def _names(group: str | Iterable[str]) -> list[str]:
    return [group] if isinstance(group, str) else list(group)


def _mailbox_full(node: Node, key: Pid | str) -> bool:
    """True if delivering to *key* on *node* would wait for room."""
    pid = node.whereis(key) if isinstance(key, str) else key
    if pid is None or not node.is_alive(pid):
        return False
    mailbox = node.process(pid).mailbox
    return len(mailbox) >= mailbox.bound
