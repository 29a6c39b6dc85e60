"""Distribution: nodes talk over TCP, one authenticated connection per pair.

A :class:`Distribution` connects one :class:`~runtime.node.Node` to others. Once it is
started, pids are location transparent: ``send``, ``call``, ``cast``, ``link``,
``monitor`` and exit signals work on a pid of another node as on a local one, with the
same semantics, and ``Name(name, node)`` addresses a registered name there.

Ordering and delivery
    Messages from one process to another arrive in the order sent (FIFO per pair),
    because every message between two nodes goes through one connection, in one
    buffer, in order. A message to a node that is not connected starts a connection if
    the node's address is known (see :meth:`Distribution.add_peer`), and waits in the
    buffer meanwhile; to a node with no known address it is discarded (a dead letter),
    and links and monitors on that node fire with ``NoConnection``. If the connection
    attempt fails, the buffered messages are discarded and links and monitors on that
    node fire with ``NoConnection``; until :data:`REDIAL_MIN` seconds later (doubling
    with each failure up to :data:`REDIAL_MAX`) the node is treated as unreachable
    rather than dialled again for every message, so a dead peer costs one attempt per
    backoff, not one per send. ``connect`` and ``wait_connected`` dial at once.

One connection per pair
    When two nodes dial each other at the same time, the connection dialled by the
    node with the smaller name wins; the other attempt is declined during the
    handshake, before either side uses it, so neither side sees a ``NoConnection``. A
    node that dials a peer it believes connected (the peer lost the connection, or
    restarted with a new creation) replaces the old connection, which then counts as
    lost.

Security
    Every connection starts with the mutual HMAC-SHA256 handshake of
    :mod:`runtime.handshake` over the shared secret; nothing else is read before it
    succeeds, and a handshake that fails or takes longer than ``connect_timeout``
    closes the connection with a ``connection_rejected`` log line. Frames are
    length-prefixed msgpack (:mod:`runtime.wire`), checked against size and depth
    limits before allocation; only msgpack types, pids, refs, names, exit reasons and
    registered classes travel, never pickle. After the handshake, a frame that is
    malformed, oversized, or forged (an operation on behalf of a process of a third
    node, or addressed to a process of another node) closes that connection alone,
    with a ``connection_closed`` log line saying why; every other peer is unaffected.
    A well-formed message for a process that does not exist is a dead letter, as
    locally. TLS is optional (pass an ``ssl.SSLContext``).

Failure detection
    A connection idle for ``heartbeat_interval`` seconds carries a heartbeat; a peer
    silent for ``heartbeat_timeout`` seconds is declared down. When a connection is lost
    every link to a process of that node delivers the exit signal
    ``NoConnection(node)`` and every monitor a ``Down`` with that reason. A later
    connection is a new one: a node that restarted has a new creation number, so pids of
    its previous life are not confused with new ones (messages to them are discarded).

Backpressure
    Messages to a peer are encoded at once (so an unregistered class fails in the
    sender) into that peer's buffer, which a writer task flushes with one syscall per
    batch (write coalescing). Consecutive messages to one pid share one SEND_RUN
    frame (see :class:`runtime.wire.SendRun`), which the receiver decodes in one
    msgpack call and delivers in one step. A call (one CALL operation: the server's monitor and
    the message, see :class:`runtime.wire.CallRequest`) and a reply are written by the
    calling (or replying) process itself when the writer is idle, sparing a scheduler
    round trip. A call answered needs no DEMONITOR: the server's node drops the
    monitor when it replies; any other DEMONITOR waits for the next write (or
    heartbeat). When
    the buffer holds more than ``max_buffer`` bytes, ``send`` raises
    :class:`~runtime.errors.PeerBusy` and ``send_wait`` waits for room (also while
    the connection is being made). On the receiving side a full mailbox
    stops the connection's reader, so TCP itself slows the sender: no message already
    accepted is lost. Exit signals, monitors and replies bypass the buffer limit. The
    memory a peer costs is bounded by about twice ``max_buffer`` plus the kernel's
    socket buffers.

Latency
    For ``busy_wait`` seconds after a connection's last traffic (heartbeats aside), an
    idle node polls for its next event before its event loop sleeps, as BEAM's
    schedulers busy-wait before sleeping: the reply to a call just sent is read without
    the wake-up of a sleeping process, which dominated a round trip on loopback. It
    stops polling after traffic one way (sent or received) once such a poll found
    nothing, and resumes when a later event would have been caught; see
    :mod:`runtime.busywait`.
"""

from __future__ import annotations

import contextlib
import ssl
import struct
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any, Final, final

import anyio
import anyio.abc
import msgpack
import structlog
from anyio.streams.tls import TLSStream

from . import wire
from .backend import DONE, Backend, Parkable
from .busywait import DEFAULT_BUSY_WAIT, BusyWait, busy_wait_for_run, default_busy_wait
from .errors import AuthenticationFailed, PeerBusy, ProtocolError
from .handshake import (
    HANDSHAKE_TIMEOUT,
    Handshake,
    HandshakeResult,
    ReplayGuard,
    Role,
)
from .messages import Call, Cast, Down, Exit, From
from .node import Node, _mailbox_or_none
from .pid import Name, Pid, Ref
from .reasons import Abnormal, ExitReason

log = structlog.get_logger("regency")

_RUNTIME_MESSAGES: Final = [
    (Call, "regency.Call"),
    (From, "regency.From"),
    (Cast, "regency.Cast"),
    (Down, "regency.Down"),
    (Exit, "regency.Exit"),
]
for _cls, _name in _RUNTIME_MESSAGES:
    wire.DEFAULT_REGISTRY.register(_cls, _name)

DEFAULT_HEARTBEAT_INTERVAL: Final = 1.0
"""Seconds of idleness after which a connection carries a heartbeat."""

DEFAULT_HEARTBEAT_TIMEOUT: Final = 5.0
"""Seconds of silence after which a peer is declared down."""

DRAIN_TIMEOUT: Final = 1.0
"""Seconds a closing node waits for its connections' buffers to be written."""

DEFAULT_MAX_BUFFER: Final = 16 * 1024 * 1024
"""Bytes a peer's outgoing buffer holds before ``send`` raises ``PeerBusy``."""

# Reasons an acceptor declines an authenticated connection; the initiator recognises them
# in the Reject and waits for the connection that wins instead of failing.
_SIMULTANEOUS: Final = "simultaneous connect: the node with the smaller name dials"
_ALREADY: Final = "already connected: the connection this node dialled stays"
_READ_SIZE: Final = 256 * 1024
_RUN_BYTES: Final = 64 * 1024  # a SEND_RUN frame takes no small message past this size
_LENGTH: Final = struct.Struct(">I")  # the length prefix of a frame (see runtime.wire)
_SMALL: Final = frozenset({int, float, bool, type(None)})  # scalars of at most 9 bytes
REDIAL_MIN: Final = 0.05
"""Seconds before a peer whose connection attempt failed is dialled again on demand."""

REDIAL_MAX: Final = 2.0
"""The longest such wait: it doubles after each failed attempt, up to this."""

_REDIAL_PAUSE: Final = 0.05  # seconds wait_connected waits after a failed attempt
_FOREVER: Final = float("inf")
_HEARTBEAT: Final = wire.FrameEncoder(wire.Registry()).encode(wire.Heartbeat())
"""A heartbeat's frame: the same bytes on every connection."""


@final
class _Room(Parkable):
    """One sender waiting for room in a peer's buffer."""

    __slots__ = ("_waiter",)

    def __init__(self) -> None:
        self._waiter: Any = None


@final
class _Conn(Parkable):
    """One live connection: its cancel scope, where its idle writer parks, when it last
    sent and received (read by its watchdog), and when and which way it last carried
    anything but a heartbeat (read by the busy-wait)."""

    __slots__ = (
        "_waiter",
        "active_at",
        "active_out",
        "dialled",
        "direct",
        "received_at",
        "scope",
        "sent_at",
        "sock",
    )

    def __init__(self, dialled: bool) -> None:
        self._waiter: Any = None
        self.scope = anyio.CancelScope()
        self.dialled = dialled  # True if this node opened it
        self.sent_at = 0.0
        self.received_at = 0.0
        self.active_at = 0.0
        self.active_out = False  # that traffic was sent (True) or received
        # The non-blocking socket of a plain TCP connection on trio (else None), and
        # whether a reply may be written to it directly (see Distribution._reply_now).
        self.sock: Any = None
        self.direct = False


@final
class _Peer:
    """Everything about one remote node: its buffer, its connection, its address."""

    __slots__ = (
        "_buf",
        "address",
        "backoff",
        "changed",
        "conn",
        "creation",
        "dialing",
        "encoder",
        "failed",
        "name",
        "retry_at",
        "rooms",
        "run_at",
        "run_n",
        "run_stop",
        "run_to",
        "waiting",
    )

    def __init__(self, name: str, registry: wire.Registry, max_frame: int) -> None:
        self.name = name
        self.address: tuple[str, int] | None = None
        self._buf = bytearray()
        # The SEND_RUN frame open at the end of the buffer (see Distribution._put): its
        # pid (None: no run is open), offset, messages, and the buffer length from which
        # a small message no longer joins it.
        self.run_to: Pid | None = None
        self.run_at = 0
        self.run_n = 0
        self.run_stop = 0
        self.encoder = wire.FrameEncoder(registry, max_frame=max_frame)
        self.conn: _Conn | None = None
        self.creation: int | None = None
        self.dialing = False  # a connection attempt of ours is under way
        self.waiting = False  # ours was declined: the peer's own attempt is awaited
        self.failed = False  # the last attempt failed
        self.backoff = 0.0  # seconds to wait after the last failed attempt
        self.retry_at = 0.0  # no dial on demand before this time (after a failure)
        self.rooms: deque[_Room] = deque()
        self.changed: anyio.Event | None = None

    @property
    def buf(self) -> bytearray:
        """The frames not yet written, the open SEND_RUN (if any) finished first.
        Everything but the run's own fast path reads, appends to or takes the buffer
        through this, or calls :meth:`end_run` before it touches ``_buf`` (the paths of
        a call and its reply, the writer)."""
        if self.run_to is not None:
            self.end_run()
        return self._buf

    @buf.setter
    def buf(self, value: bytearray) -> None:
        if self.run_to is not None:
            self.end_run()
        self._buf = value

    def end_run(self) -> None:
        """Finish the open SEND_RUN frame, if any: nothing more joins it."""
        if self.run_to is not None:
            self.run_to = None
            wire.close_run(self._buf, self.run_at, self.run_n)

    @property
    def connected(self) -> bool:
        return self.conn is not None

    @property
    def busy(self) -> bool:
        """True while a connection is being made."""
        return self.dialing or self.waiting


@final
class Distribution:
    """Connects *node* to other nodes. Start it with ``await dist.start(...)``.

    Args:
        node: the local node (already entered with ``async with``).
        secret: the cluster's shared secret (see :func:`runtime.handshake.load_secret`);
            there is no default.
        heartbeat_interval: seconds of idleness before a heartbeat is sent.
        heartbeat_timeout: seconds of silence before a peer is declared down; must be
            larger than *heartbeat_interval*.
        connect_timeout: seconds a connection attempt (TCP, TLS and handshake) may take,
            on either side.
        max_buffer: bytes of unsent data per peer before ``send`` raises ``PeerBusy``.
        max_frame: the largest frame accepted or sent, in bytes. Give every node of a
            cluster the same value, and at least 64 KiB: consecutive small messages to
            one process travel together in frames of up to 64 KiB.
        ssl_context: wrap every connection in TLS with this context: server side for
            accepted connections, and client side for dialled ones unless
            *client_ssl_context* is given (one context serving both sides must be made
            with ``ssl.PROTOCOL_TLS``).
        client_ssl_context: the context for dialled connections, when it differs.
        registry: the message classes allowed on the wire (default: the global one);
            the runtime's own messages (``Call``, ``Cast``, ``Down``, ``Exit``) are added
            to it.
        busy_wait: seconds, after a connection's last traffic, during which the event
            loop polls the connections rather than sleep when it runs out of work, as
            BEAM's schedulers busy-wait: a reply then costs no process wake-up. 0 turns
            it off; None takes ``REGENCY_BUSY_WAIT`` from the environment, else
            :data:`DEFAULT_BUSY_WAIT` (0.5 ms). On trio with more than one CPU (see
            :mod:`runtime.busywait`).

    Raises:
        ValueError: *heartbeat_timeout* is not larger than *heartbeat_interval*, the
            secret is shorter than 16 bytes, or *busy_wait* (or ``REGENCY_BUSY_WAIT``)
            is not 0 or more seconds.
    """

    def __init__(
        self,
        node: Node,
        *,
        secret: bytes,
        heartbeat_interval: float = DEFAULT_HEARTBEAT_INTERVAL,
        heartbeat_timeout: float = DEFAULT_HEARTBEAT_TIMEOUT,
        connect_timeout: float = HANDSHAKE_TIMEOUT,
        max_buffer: int = DEFAULT_MAX_BUFFER,
        max_frame: int = wire.MAX_FRAME,
        ssl_context: ssl.SSLContext | None = None,
        client_ssl_context: ssl.SSLContext | None = None,
        registry: wire.Registry | None = None,
        busy_wait: float | None = None,
    ) -> None:
        if busy_wait is None:
            busy_wait = default_busy_wait()
        elif not busy_wait >= 0:
            raise ValueError(f"busy_wait must be 0 or more seconds, not {busy_wait!r}")
        if heartbeat_timeout <= heartbeat_interval:
            raise ValueError("heartbeat_timeout must be larger than heartbeat_interval")
        if len(secret) < 16:
            raise ValueError("the shared secret must be at least 16 bytes")
        self.node = node
        self._secret = secret
        self.heartbeat_interval = heartbeat_interval
        self.heartbeat_timeout = heartbeat_timeout
        self.connect_timeout = connect_timeout
        self.max_buffer = max_buffer
        self.max_frame = max_frame
        self.busy_wait = busy_wait
        self._busy: BusyWait | None = None
        # A run of several messages stays within 64 KiB (and max_frame): a peer whose
        # own max_frame is smaller but at least that still takes every frame we send,
        # as a message that could travel alone still travels alone.
        self._run_max = min(max_frame, _RUN_BYTES)
        self._ssl = ssl_context
        self._client_ssl = client_ssl_context or ssl_context
        self._registry = registry if registry is not None else wire.DEFAULT_REGISTRY
        for cls, name in _RUNTIME_MESSAGES:
            self._registry.register(cls, name)
        self._guard = ReplayGuard()
        self._peers: dict[str, _Peer] = {}
        self._run_peer: _Peer | None = None  # the peer of the last SEND_RUN opened
        self._plain = msgpack.Packer(strict_types=True, use_bin_type=True).pack
        self._tg: anyio.abc.TaskGroup | None = None
        self._scope: anyio.CancelScope | None = None
        self._drained: anyio.Event | None = None  # set while closing, once buffers are out
        # The ``to`` of the last CALL_REPLY (a node's pid 0): the same for every reply to
        # one caller node, so it is built, and its ext looked up, once.
        self._reply_to = Pid(node.name, 0, 0)
        self._closed = False
        self.address: tuple[str, int] | None = None
        self.rejected_connections = 0
        """Connections refused because their handshake failed or took too long."""
        self.dropped_messages = 0
        """Buffers of unsent frames discarded because their connection was lost."""
        self._log = structlog.get_logger("regency", node=node.name)

    # -- lifecycle -------------------------------------------------------------------

    async def start(self, listen: tuple[str, int] | None = None) -> Distribution:
        """Attach to the node and, with *listen*, accept connections on ``(host, port)``.

        Port 0 picks a free port; :attr:`address` tells which. Returns self.

        Raises:
            RuntimeError: the node is not entered, or already has a distribution layer.
            OSError: the address cannot be listened on.
        """
        if self.node.remote is not None:
            raise RuntimeError(f"node {self.node.name} already has a distribution layer")
        tg = self.node._tg
        if tg is None:
            raise RuntimeError("enter the node (async with) before starting distribution")
        await tg.start(self._run)  # type: ignore[attr-defined]
        backend = self.node._backend
        if self.busy_wait and backend is not None and backend.name == "trio":
            self._busy = busy_wait_for_run()
        if listen is not None:
            try:
                listener = await anyio.create_tcp_listener(
                    local_host=listen[0], local_port=listen[1], reuse_port=False
                )
            except BaseException:
                self.close()
                raise
            sock: Any = listener.extra(anyio.abc.SocketAttribute.local_address)
            self.address = (str(sock[0]), int(sock[1]))
            assert self._tg is not None
            self._tg.start_soon(self._accept_loop, listener)
            self._log.info("node_listening", host=self.address[0], port=self.address[1])
        self.node.remote = self
        return self

    async def _run(self, *, task_status: anyio.abc.TaskStatus[None]) -> None:
        with anyio.CancelScope() as scope:
            self._scope = scope
            async with anyio.create_task_group() as tg:
                self._tg = tg
                task_status.started()
                await anyio.sleep_forever()

    def close(self) -> None:
        """Stop all connections; peers see every link and monitor fire. Idempotent.

        Afterwards the node behaves as one without distribution: a message to another
        node is a dead letter, a link or monitor on it fires ``NoConnection`` at once.
        """
        if self._closed:
            return
        self._closed = True
        self._run_peer = None
        for peer in self._peers.values():
            peer.end_run()
            if peer.connected:
                self._push(peer, wire.Goodbye("node stopping"))
        if self._tg is not None and self._scope is not None:
            # What is already buffered (the last exit signals and Downs of the node's
            # processes, then the goodbye) gets a bounded chance to leave first.
            self._tg.start_soon(self._drain_then_stop, self._scope)
        elif self._scope is not None:
            self._scope.cancel()
        if self.node.remote is self:
            self.node.remote = None
        for peer in self._peers.values():
            self._notify(peer)

    async def _drain_then_stop(self, scope: anyio.CancelScope) -> None:
        self._drained = anyio.Event()
        self._check_drained()
        with anyio.move_on_after(DRAIN_TIMEOUT):
            await self._drained.wait()
        scope.cancel()

    def _check_drained(self) -> None:
        """Wake a closing node once no connected peer has unsent data."""
        if self._drained is not None and not any(
            p.connected and p.buf for p in self._peers.values()
        ):
            self._drained.set()

    def add_peer(self, name: str, host: str, port: int) -> None:
        """Record where node *name* listens, so messages to it connect on demand."""
        self._peer(name).address = (host, port)

    def peers(self) -> list[str]:
        """The names of the nodes connected now."""
        return [p.name for p in self._peers.values() if p.connected]

    def is_connected(self, name: str) -> bool:
        """True if a connection to node *name* is up."""
        peer = self._peers.get(name)
        return peer is not None and peer.connected

    async def connect(self, host: str, port: int, name: str | None = None) -> str:
        """Connect to the node listening at ``(host, port)``; returns its name.

        With *name*, the peer must have that name and its address is recorded as with
        :meth:`add_peer`. Returns at once if that node is already connected, and waits
        for an attempt already under way rather than starting another. The connection
        then lives on in the background until it is lost or :meth:`close` is called.

        Raises:
            OSError: the TCP connection failed.
            AuthenticationFailed: the handshake failed (wrong secret, wrong name...).
            ProtocolError: the peer declined in favour of its own attempt, which then
                did not arrive.
            TimeoutError: the attempt took longer than ``connect_timeout``.
            RuntimeError: the distribution layer is closed.
        """
        if name is None:
            name = next((p.name for p in self._peers.values() if p.address == (host, port)), None)
        if name is None:
            return await self._dial(host, port, None)
        peer = self._peer(name)
        peer.address = (host, port)
        while peer.busy and not self._closed:
            await self._changed(peer)
        if peer.connected:
            return name
        try:
            return await self._dial(host, port, name)
        except Exception as e:
            self._dial_failed(peer, e)
            raise

    async def redial(self, name: str, timeout: float) -> bool:
        """Whether node *name* is connected, or can be again within *timeout* seconds.

        Connected already: True at once. Otherwise one attempt at its known address
        (or the attempt under way), bounded by *timeout*: True if it connected, False if
        it failed or ran out of time, or if no address is known. Tells a lost node from a
        lost connection: a process that died on a reachable host refuses at once, while
        one whose connection was only reset answers.
        """
        peer = self._peers.get(name)
        if peer is not None and peer.connected:
            return True
        if peer is None or peer.address is None or self._closed:
            return False
        with anyio.move_on_after(timeout):
            try:
                await self.connect(*peer.address, name=name)
            except Exception:  # connect_failed is logged by the layer
                return False
            return True
        return False

    async def wait_connected(self, name: str, timeout: float = 10.0) -> None:
        """Wait until node *name* is connected, dialling it (again) if its address is known.

        Raises:
            TimeoutError: not connected within *timeout* seconds.
        """
        peer = self._peer(name)
        with anyio.fail_after(timeout):
            while not peer.connected:
                if peer.failed:
                    await anyio.sleep(_REDIAL_PAUSE)
                if not peer.connected and not peer.busy and peer.address is not None:
                    self._dial_soon(peer)
                if not peer.connected:
                    await self._changed(peer)

    # -- the Remote protocol, called by the node -------------------------------------

    def _peer_to_write(self, node: str) -> _Peer | None:
        """The peer of *node* to buffer a frame for: connected, or being dialled when its
        address is known. None when it cannot be reached: the frame is a dead letter."""
        peer = self._peers.get(node)
        if peer is None or peer.conn is None or self._closed:
            peer = self._reachable(node)
            if peer is None:
                self.node.dead_letters += 1
        return peer

    def send(self, to: Pid | Name, msg: object) -> None:
        """Queue a message for a process or name on another node (see the module doc).

        Raises:
            PeerBusy: the peer's buffer holds more than ``max_buffer`` bytes.
            Unregistered: *msg* holds a value of a class that may not travel.
            ValueError: *msg* is too deep, too big or out of range for the wire.
        """
        peer = self._run_peer
        if peer is not None and to is peer.run_to and type(msg) in _SMALL:
            # The open SEND_RUN's fast path (see _put): a small message joins it.
            buf = peer._buf
            if len(buf) < peer.run_stop:
                try:
                    buf += self._plain(msg)
                except OverflowError:
                    raise ValueError(f"integer {msg} does not fit in 64 bits") from None
                peer.run_n += 1
                return
        if self._closed and self.node.remote is not self:
            self.node.send(to, msg)  # a sender that kept this layer after it closed
            return
        peer = self._peer_to_write(to.node if type(to) is Pid else str(to.node))
        if peer is None:
            return
        if type(to) is Pid and peer.creation is not None and to.creation != peer.creation:
            self.node.dead_letters += 1  # a pid of the node's previous life
            return
        if len(peer._buf) > self.max_buffer:
            raise PeerBusy(to if type(to) is Pid else Pid(peer.name, 0, 0), self.max_buffer)
        self._put(peer, to, msg)
        conn = peer.conn
        if conn is not None and conn._waiter is not None:
            self._wake(peer, conn)

    def send_wait(self, to: Pid | Name, msg: object) -> Awaitable[None]:
        """Queue a message, waiting while the peer's buffer is over ``max_buffer``; await
        it. A plain function: a send with room needs no coroutine (it returns
        :data:`~runtime.backend.DONE` while the sender's budget lasts)."""
        peer = self._run_peer
        if peer is not None and to is peer.run_to and type(msg) in _SMALL:
            # The hot path of a sender: a small message joins the open SEND_RUN (see
            # _put), which its conditions (connected, same creation, room) still hold for.
            buf = peer._buf
            if len(buf) < peer.run_stop:
                try:
                    buf += self._plain(msg)
                except OverflowError:
                    raise ValueError(f"integer {msg} does not fit in 64 bits") from None
                peer.run_n += 1
                return self._charged()
        if type(to) is Pid:
            # A connected peer with room.
            peer = self._peers.get(to.node)
            if (
                peer is not None
                and to.creation == peer.creation
                and len(peer._buf) <= self.max_buffer
                and not self._closed
            ):
                conn = peer.conn
                if conn is not None:
                    self._put(peer, to, msg)
                    if conn._waiter is not None:
                        self._wake(peer, conn)
                    return self._charged()
        return self._send_wait_slow(to, msg)

    def _charged(self) -> Awaitable[None]:
        """Charge the sender one reduction for a message sent at once: here while its
        budget lasts (as ``Node._budget_checkpoint`` charges it), there when it runs out.
        """
        mb = _mailbox_or_none()
        if mb is not None and mb._budget > 1:
            mb._budget -= 1
            return DONE
        return self.node._budget_checkpoint()

    def _put(self, peer: _Peer, to: Pid | Name, msg: object) -> None:
        """Append a SEND of *msg* to *peer*'s buffer, to which the caller found room.

        To a pid of a connected peer, messages go in SEND_RUN frames: the open run at the
        end of the buffer takes it while the frame stays within ``max_frame`` (and, for
        the fast paths of small messages, ``run_stop``); else a new run begins. The run
        is finished (``_Peer.end_run``) as soon as anything else reads or appends to
        ``peer.buf``: the writer taking it, any other frame. Any other SEND is a frame.
        """
        enc = peer.encoder
        if type(to) is Pid and peer.conn is not None and not self._closed:
            body = enc.message(msg)
            buf = peer._buf
            if (
                to is peer.run_to
                and len(buf) < peer.run_stop
                and len(buf) + len(body) - peer.run_at - 4 <= self._run_max
            ):
                buf += body
                peer.run_n += 1
                return
            peer.end_run()
            if enc.run_head_size(to) + len(body) <= self.max_frame:
                at = len(buf)
                enc.open_run(buf, to, body)
                peer.run_to = to
                peer.run_at = at
                peer.run_n = 1
                # A small message (up to 9 bytes) appended below this keeps the body
                # within max_frame; at max_buffer a sender waits instead.
                peer.run_stop = min(at + min(_RUN_BYTES, self.max_frame - 5), self.max_buffer + 1)
                self._run_peer = peer
                return
        peer.buf += enc.encode_send(to, msg)

    async def _send_wait_slow(self, to: Pid | Name, msg: object) -> None:
        if self._closed and self.node.remote is not self:
            await self.node.send_wait(to, msg)  # a sender that kept this layer after it closed
            return
        peer = self._peers.get(to.node if type(to) is Pid else str(to.node))
        if peer is None or len(peer.buf) > self.max_buffer:
            await self._wait_room(to)
        self.send(to, msg)
        await self.node._budget_checkpoint()

    async def _wait_room(self, to: Pid | Name) -> None:
        """Wait while the buffer of *to*'s node holds more than ``max_buffer`` bytes."""
        node = to.node if isinstance(to, Pid) else str(to.node)
        backend = self.node._backend
        assert backend is not None
        while True:
            peer = self._reachable(node)
            if peer is None or len(peer.buf) <= self.max_buffer:
                break
            room = _Room()
            peer.rooms.append(room)
            try:
                await backend.park(room)
            finally:
                if room in peer.rooms:
                    peer.rooms.remove(room)

    def link(self, frm: Pid, to: Pid) -> None:
        """Tell *to*'s node that *frm* linked to it."""
        self._signal(to.node, wire.Link(frm, to))

    def unlink(self, frm: Pid, to: Pid) -> None:
        """Tell *to*'s node that *frm* removed its link."""
        self._signal(to.node, wire.Unlink(frm, to), quiet=True)

    def exit(self, frm: Pid, to: Pid, reason: ExitReason, *, link: bool) -> None:
        """Deliver an exit signal to a process on another node.

        The runtime's own signals (*link*: a linked process ended) always go out: a
        reason that cannot travel is sent as ``Abnormal(repr(value))``.

        Raises:
            Unregistered: for ``exit(pid, reason)`` by user code, *reason* holds a value
                of a class that may not travel.
        """
        if link:
            self._signal_reason(to.node, reason, lambda r: wire.LinkExit(frm, to, r), quiet=False)
        else:
            self._signal(to.node, wire.Exit(frm, to, reason))

    def monitor(self, ref: Ref, watcher: Pid | None, target: Pid | Name) -> None:
        """Ask *target*'s node to monitor it for *watcher*."""
        node = target.node if isinstance(target, Pid) else str(target.node)
        self._signal(node, wire.Monitor(ref, watcher or self.node.pid, target))

    def demonitor(self, ref: Ref, target: Pid | Name) -> None:
        """Cancel a monitor on another node."""
        node = target.node if isinstance(target, Pid) else str(target.node)
        peer = self._reachable(node)
        if peer is not None:
            # No haste: the monitor only lingers there meanwhile, and a DOWN it sends
            # finds no monitor here. It leaves with the next write, or heartbeat.
            self._push(peer, wire.Demonitor(ref, target), lazy=True)

    def down(self, ref: Ref, target: Pid | Name, reason: ExitReason, watcher_node: str) -> None:
        """Tell *watcher_node* that a local process (or name) it monitored ended."""
        watcher = Pid(watcher_node, 0, 0)
        self._signal_reason(
            watcher_node, reason, lambda r: wire.Down(ref, target, r, watcher), quiet=True
        )

    def call(self, ref: Ref, target: Pid | Name, request: object, caller: Pid | None) -> bool:
        """Send a call to a server on another node: one CALL operation, which also sets
        the call's monitor there (see :class:`runtime.wire.CallRequest`). Written at
        once when the writer is idle. Returns True: the server's node drops the monitor
        when it replies.

        Raises:
            PeerBusy: the peer's buffer holds more than ``max_buffer`` bytes.
            Unregistered: *request* holds a value of a class that may not travel.
            ValueError: *request* is too deep, too big or out of range for the wire.
        """
        node = target.node if type(target) is Pid else str(target.node)
        peer = self._peer_to_write(node)
        if peer is None:  # the monitor fires NoConnection, the message is lost
            self._unreachable_soon(node)
            return True
        if peer.run_to is not None:  # as peer.buf does, one call less on a call's path
            peer.end_run()
        buf = peer._buf
        if len(buf) > self.max_buffer:
            raise PeerBusy(target if type(target) is Pid else Pid(peer.name, 0, 0), self.max_buffer)
        buf += peer.encoder.encode_call(target, caller, ref, request)
        conn = peer.conn
        if conn is not None and conn._waiter is not None:
            # The caller waits for the answer: written from here if the writer is idle.
            self._flush(peer, conn)
        return True

    def reply(self, ref: Ref, value: object) -> None:
        """Send a call's reply to the node that made the call.

        Raises:
            Unregistered: *value* holds a value of a class that may not travel.
        """
        to = self._reply_to
        if to.node != ref.node or to.creation != ref.creation:
            to = self._reply_to = Pid(ref.node, 0, ref.creation)
        peer = self._peers.get(ref.node)
        if peer is None or peer.conn is None or self._closed:
            peer = self._reachable(ref.node)
            if peer is None:
                return
        if peer.run_to is not None:  # as peer.buf does, one call less on a reply's path
            peer.end_run()
        peer._buf += peer.encoder.encode_reply(ref, value, to)
        conn = peer.conn
        if conn is not None and conn._waiter is not None:
            # The caller waits for exactly this: written at once if the writer is idle.
            self._flush(peer, conn)

    # -- buffers ---------------------------------------------------------------------

    def _peer(self, name: str) -> _Peer:
        peer = self._peers.get(name)
        if peer is None:
            if name == self.node.name:
                raise ValueError("a node cannot be its own peer")
            peer = self._peers[name] = _Peer(name, self._registry, self.max_frame)
        return peer

    def _reachable(self, name: str) -> _Peer | None:
        """The peer, dialling it if needed; None when it cannot be reached at all."""
        peer = self._peers.get(name)
        if self._closed or peer is None:
            return None
        if not peer.connected and not peer.busy:
            if peer.address is None:
                return None
            if peer.retry_at:  # the last attempt failed: wait out the backoff
                assert self.node._backend is not None
                if self.node._backend.current_time() < peer.retry_at:
                    return None
            self._dial_soon(peer)
        return peer

    def _signal(self, name: str, op: wire.Op, *, quiet: bool = False) -> None:
        peer = self._reachable(name)
        if peer is None:
            if not quiet:
                self._unreachable_soon(name)
            return
        self._push(peer, op)

    def _signal_reason(
        self,
        name: str,
        reason: ExitReason,
        make: Callable[[ExitReason], wire.Op],
        *,
        quiet: bool,
    ) -> None:
        """Send an operation carrying *reason*, replacing a reason that cannot travel."""
        try:
            op = make(reason)
            self._signal(name, op, quiet=quiet)
        except (TypeError, ValueError) as e:
            self._log.warning(
                "reason_not_sendable", peer=name, reason=repr(reason)[:200], error=str(e)
            )
            self._signal(name, make(Abnormal(repr(reason)[:1000])), quiet=quiet)

    def _push(self, peer: _Peer, op: wire.Op, *, lazy: bool = False) -> None:
        """Queue *op* for *peer*. *lazy*: leave it for the next write or heartbeat (it
        needs no haste)."""
        peer.buf += peer.encoder.encode(op)
        conn = peer.conn
        if conn is not None and conn._waiter is not None and not lazy:
            self._wake(peer, conn)

    def _wake(self, peer: _Peer, conn: _Conn) -> None:
        """Wake the parked writer of *conn*."""
        w = conn._waiter
        conn._waiter = None
        self._unpark(w)

    def _flush(self, peer: _Peer, conn: _Conn) -> None:
        """Write the buffer of *peer*, whose writer is parked, from the calling task.

        Nothing is in flight while the writer is parked, so this keeps the order, and
        spares the scheduler round trip through the writer task for a caller about to
        wait for an answer. Once per received chunk and per idle period of the writer
        (``conn.direct``), so that many callers at once are still batched; otherwise,
        and for whatever the socket does not take, the writer is woken.
        """
        if not conn.direct or peer.rooms or self._drained is not None:
            self._wake(peer, conn)
            return
        conn.direct = False
        if peer.run_to is not None:  # as peer.buf does, with a call less
            peer.end_run()
        data = peer._buf
        peer._buf = bytearray()
        try:
            sent = conn.sock.send(data)
        except OSError:  # BlockingIOError included: the writer retries, or reports it
            sent = 0
        if sent < len(data):
            peer._buf = data[sent:] if sent else data
            self._wake(peer, conn)
        else:
            conn.sent_at = self.node._now()  # the loop's clock, bound: one call
            self._traffic(conn, conn.sent_at, True)

    def _traffic(self, conn: _Conn, now: float, out: bool) -> None:
        """*conn* just sent (*out*) or received something other than a heartbeat: note
        it for the busy-wait, and have trio call its hook again if it left."""
        conn.active_at = now
        conn.active_out = out
        busy = self._busy
        if busy is not None and not busy.armed:
            busy.arm()

    def _unpark(self, waiter: Any) -> None:
        backend = self.node._backend
        assert backend is not None
        backend.unpark(waiter)

    def _wake_rooms(self, peer: _Peer) -> None:
        backend = self.node._backend
        while peer.rooms:
            room = peer.rooms.popleft()
            w = room._waiter
            if w is not None and backend is not None:
                room._waiter = None
                backend.unpark(w)

    def _unreachable_soon(self, name: str) -> None:
        """Fire links and monitors on *name* with NoConnection once the caller recorded them."""
        if self._tg is not None and not self._closed:
            self._tg.start_soon(self._fire_unreachable, name)

    async def _fire_unreachable(self, name: str) -> None:
        await anyio.lowlevel.checkpoint()
        peer = self._peers.get(name)
        if peer is None or not (peer.connected or peer.busy):
            self.node.node_down(name)

    # -- state changes ---------------------------------------------------------------

    def _notify(self, peer: _Peer) -> None:
        ev, peer.changed = peer.changed, None
        if ev is not None:
            ev.set()

    async def _changed(self, peer: _Peer) -> None:
        """Wait for the next change of *peer*'s connection state."""
        if peer.changed is None:
            peer.changed = anyio.Event()
        await peer.changed.wait()

    # -- dialling --------------------------------------------------------------------

    def _dial_soon(self, peer: _Peer) -> None:
        if self._tg is None or self._closed or peer.address is None or peer.busy:
            return
        peer.dialing = True
        self._tg.start_soon(self._dial_background, peer, *peer.address)

    async def _dial_background(self, peer: _Peer, host: str, port: int) -> None:
        try:
            await self._dial(host, port, peer.name)
        except Exception as e:
            self._dial_failed(peer, e)

    def _dial_failed(self, peer: _Peer, e: Exception) -> None:
        peer.backoff = min(REDIAL_MAX, max(REDIAL_MIN, peer.backoff * 2))
        assert self.node._backend is not None
        peer.retry_at = self.node._backend.current_time() + peer.backoff
        # The first failure is news; the same failure again, while the peer stays
        # unreachable and something keeps dialling it, is logged at debug.
        log = self._log.debug if peer.failed else self._log.warning
        log(
            "connect_failed",
            peer=peer.name,
            error=str(e) or type(e).__name__,
            retry_in=round(peer.backoff, 3),
        )
        if not peer.connected and not peer.busy:
            peer.failed = True
            self._lost(peer, f"connect failed: {e}", attempt=True)

    async def _dial(self, host: str, port: int, name: str | None) -> str:
        """Dial, authenticate and adopt a connection; returns the peer's name."""
        if self._closed:
            raise RuntimeError(f"the distribution layer of {self.node.name} is closed")
        peer = self._peer(name) if name is not None else None
        if peer is not None:
            peer.dialing = True
            self._notify(peer)
        try:
            try:
                with anyio.fail_after(self.connect_timeout):
                    stream: anyio.abc.ByteStream = await anyio.connect_tcp(host, port)
                    try:
                        if self._client_ssl is not None:
                            stream = await TLSStream.wrap(
                                stream,
                                server_side=False,
                                ssl_context=self._client_ssl,
                                hostname=host,
                            )
                        hs = Handshake(
                            Role.INITIATOR,
                            name=self.node.name,
                            creation=self.node.creation,
                            secret=self._secret,
                            expected_peer=name,
                            guard=self._guard,
                        )
                        result = await self._initiate(stream, hs)
                    except BaseException:
                        await anyio.aclose_forcefully(stream)
                        raise
            except TimeoutError:
                raise TimeoutError(
                    f"connecting to {host}:{port} took longer than {self.connect_timeout} s"
                ) from None
        except AuthenticationFailed as e:
            if peer is None or not (_SIMULTANEOUS in str(e) or _ALREADY in str(e)):
                raise
            return await self._await_peer_dial(peer, str(e))
        finally:
            if peer is not None:
                peer.dialing = False
                self._notify(peer)
        if self._closed:
            await anyio.aclose_forcefully(stream)
            raise RuntimeError(f"the distribution layer of {self.node.name} is closed")
        self._adopt(self._peer(result.name), stream, result, dialled=True)
        return result.name

    async def _await_peer_dial(self, peer: _Peer, why: str) -> str:
        """Our attempt was declined for the peer's own: wait for that one to arrive."""
        self._log.debug("connect_declined", peer=peer.name, reason=why)
        if peer.connected:
            return peer.name
        peer.dialing = False
        peer.waiting = True
        try:
            with anyio.move_on_after(self.connect_timeout):
                while not peer.connected and not self._closed:
                    await self._changed(peer)
        finally:
            peer.waiting = False
            self._notify(peer)
        if not peer.connected:
            raise ProtocolError(
                f"{peer.name} declined our connection for its own, which did not arrive "
                f"within {self.connect_timeout} s"
            )
        return peer.name

    async def _initiate(self, stream: anyio.abc.ByteStream, hs: Handshake) -> HandshakeResult:
        await stream.send(hs.data_to_send())
        while not hs.done:
            data = await _receive_handshake(stream)
            try:
                hs.receive_data(data)
            finally:
                out = hs.data_to_send()
                if out:
                    await stream.send(out)
        return hs.result

    # -- accepting -------------------------------------------------------------------

    async def _accept_loop(self, listener: anyio.abc.Listener[anyio.abc.SocketStream]) -> None:
        assert self._tg is not None
        async with listener:
            await listener.serve(self._accepted, task_group=self._tg)

    async def _accepted(self, raw: anyio.abc.SocketStream) -> None:
        """Authenticate one incoming connection; never raises (a handler error would
        stop the listener)."""
        stream: anyio.abc.ByteStream = raw
        address = _address(raw)
        try:
            try:
                with anyio.fail_after(self.connect_timeout):
                    if self._ssl is not None:
                        stream = await TLSStream.wrap(raw, server_side=True, ssl_context=self._ssl)
                    hs = Handshake(
                        Role.ACCEPTOR,
                        name=self.node.name,
                        creation=self.node.creation,
                        secret=self._secret,
                        guard=self._guard,
                    )
                    result, proof = await self._respond(stream, hs)
            except TimeoutError:
                raise TimeoutError(
                    f"handshake not finished within {self.connect_timeout} s"
                ) from None
        except Exception as e:
            self.rejected_connections += 1
            self._log.warning(
                "connection_rejected",
                peer_address=address,
                reason=str(e) or type(e).__name__,
                error=type(e).__name__,
            )
            await anyio.aclose_forcefully(stream)
            return
        try:
            peer = self._peer(result.name)
            refusal = self._refusal(peer, result)
            if refusal is None:
                self._adopt(peer, stream, result, dialled=False, first=proof)
                return
            self._log.info("connection_declined", peer=peer.name, reason=refusal)
            with anyio.move_on_after(self.connect_timeout):
                await stream.send(wire.FrameEncoder().encode(wire.Reject(refusal)))
        except Exception as e:  # pragma: no cover - defensive: keep the listener alive
            self._log.warning("connection_rejected", peer_address=address, reason=repr(e))
        await anyio.aclose_forcefully(stream)

    async def _respond(
        self, stream: anyio.abc.ByteStream, hs: Handshake
    ) -> tuple[HandshakeResult, bytes]:
        """Run the acceptor's handshake; return the peer and our final proof, unsent."""
        while True:
            data = await _receive_handshake(stream)
            try:
                hs.receive_data(data)
            finally:
                out = hs.data_to_send()
                if out and not hs.done:
                    await stream.send(out)
            if hs.done:
                return hs.result, out

    def _refusal(self, peer: _Peer, result: HandshakeResult) -> str | None:
        """Why an authenticated incoming connection is declined; None to adopt it."""
        if self._closed:
            return "node stopping"
        conn = peer.conn
        if conn is not None and conn.dialled and peer.creation == result.creation:
            return _ALREADY
        if conn is None and peer.dialing and self.node.name < peer.name:
            return _SIMULTANEOUS
        return None

    # -- connections -----------------------------------------------------------------

    def _adopt(
        self,
        peer: _Peer,
        stream: anyio.abc.ByteStream,
        result: HandshakeResult,
        *,
        dialled: bool,
        first: bytes = b"",
    ) -> None:
        """Make *stream* the peer's connection and serve it in the background."""
        if peer.conn is not None:
            # The peer dialled although we had a connection: for it, the old one is
            # dead (lost, or it restarted), so it is dead for us too.
            self._log.info("connection_replaced", peer=peer.name)
            peer.conn.scope.cancel()
            peer.conn = None
            self._lost(peer, "replaced by a new connection")
        if peer.creation is not None and peer.creation != result.creation:
            self._log.info("peer_restarted", peer=peer.name, creation=result.creation)
        peer.creation = result.creation
        peer.failed = False
        peer.backoff = peer.retry_at = 0.0
        conn = peer.conn = _Conn(dialled)
        if first:
            peer.buf[:0] = first
        assert self._tg is not None
        self._tg.start_soon(self._serve, peer, conn, stream, result.trailing_data)
        self._log.info("node_connected", peer=peer.name, creation=result.creation)
        self._notify(peer)
        self.node.node_up(peer.name)

    async def _serve(
        self, peer: _Peer, conn: _Conn, stream: anyio.abc.ByteStream, first: bytes
    ) -> None:
        """Run an authenticated connection until it ends, then declare the peer down."""
        ended: list[BaseException] = []
        decoder = wire.FrameDecoder(self._registry, max_frame=self.max_frame)
        backend = self.node._backend
        assert backend is not None
        conn.sent_at = conn.received_at = conn.active_at = backend.current_time()
        busy = self._busy
        if busy is not None:
            busy.watch(conn, self.busy_wait)
        try:
            with conn.scope:
                async with anyio.create_task_group() as tg:
                    tg.start_soon(self._until_error, tg, ended, self._writer, peer, conn, stream)
                    tg.start_soon(
                        self._until_error,
                        tg,
                        ended,
                        self._reader,
                        peer,
                        conn,
                        stream,
                        decoder,
                        first,
                    )
                    tg.start_soon(self._until_error, tg, ended, self._watchdog, peer, conn)
        finally:
            # Declared down before the socket closes: once the peer can see the close,
            # this node no longer counts it as connected.
            if peer.conn is conn:
                peer.conn = None
                self._lost(peer, _describe(ended[0]) if ended else "closed")
            if busy is not None:
                busy.unwatch(conn)
            with anyio.CancelScope(shield=True):
                await anyio.aclose_forcefully(stream)

    @staticmethod
    async def _until_error(
        tg: anyio.abc.TaskGroup, ended: list[BaseException], fn: Any, *args: Any
    ) -> None:
        """Run one half of a connection; the first to end (or fail) ends both."""
        try:
            await fn(*args)
        except Exception as e:
            ended.append(e)
        finally:
            tg.cancel_scope.cancel()

    def _lost(self, peer: _Peer, reason: str, *, attempt: bool = False) -> None:
        """The connection (or with *attempt*, a dial) is gone: drop the buffer, fire links
        and monitors."""
        peer.end_run()
        if peer.buf:
            self.dropped_messages += 1
            peer.buf = bytearray()
        self._wake_rooms(peer)
        if self._drained is not None:
            self._check_drained()
        # A dial that failed closed no connection: connect_failed said it already.
        (self._log.debug if attempt else self._log.warning)(
            "connection_closed", peer=peer.name, reason=reason
        )
        self._notify(peer)
        self.node.node_down(peer.name)

    async def _writer(self, peer: _Peer, conn: _Conn, stream: anyio.abc.ByteStream) -> None:
        """Flush the peer's buffer, one write per batch; park while it is empty."""
        backend = self.node._backend
        assert backend is not None
        park = backend.park
        clock = backend.current_time
        send = _stream_io(stream, backend)[0]
        conn.sock = _raw_socket(stream, backend)
        heartbeat = _HEARTBEAT
        while True:
            if peer.run_to is not None:  # as peer.buf does, with a call less
                peer.end_run()
            data = peer._buf
            if not data:
                conn.direct = conn.sock is not None
                await park(conn)
                continue
            peer._buf = bytearray()
            if peer.rooms:
                self._wake_rooms(peer)
            # The buffer was swapped out, so nothing appends to *data* while it is sent.
            await send(data)
            conn.sent_at = clock()
            if data != heartbeat:  # a heartbeat says nothing of what comes next
                self._traffic(conn, conn.sent_at, True)
            if self._drained is not None and not peer.buf:
                self._check_drained()

    async def _watchdog(self, peer: _Peer, conn: _Conn) -> None:
        """Heartbeats: send one after ``heartbeat_interval`` without sending anything;
        declare the peer down after ``heartbeat_timeout`` without receiving anything.

        One sleeping task per connection, so the reader and writer need no timeout
        (a cancel scope) around each receive and each wait for data.
        """
        backend = self.node._backend
        assert backend is not None
        clock = backend.current_time
        interval = self.heartbeat_interval
        timeout = self.heartbeat_timeout
        heartbeat = _HEARTBEAT
        while True:
            now = clock()
            if now - conn.received_at >= timeout:
                raise _PeerSilent(f"no heartbeat for {timeout} s")
            idle_until = conn.sent_at + interval
            if now >= idle_until:
                if not peer.buf:
                    peer.buf += heartbeat
                # Frames left for later (a lazy DEMONITOR) leave now, instead of it.
                w = conn._waiter
                if w is not None:
                    conn._waiter = None
                    backend.unpark(w)
                conn.sent_at = now  # the writer is about to send it, or is sending
                idle_until = now + interval
            await anyio.sleep(min(idle_until, conn.received_at + timeout) - now)

    async def _reader(
        self,
        peer: _Peer,
        conn: _Conn,
        stream: anyio.abc.ByteStream,
        decoder: wire.FrameDecoder,
        first: bytes,
    ) -> None:
        node = self.node
        me = node.name
        deliver = node.deliver
        deliver_many = node.deliver_many
        backend = node._backend
        assert backend is not None
        clock = node._now  # the loop's clock, bound: one call per chunk
        receive = _stream_io(stream, backend)[1]
        heartbeat = _HEARTBEAT
        feed = decoder.feed_runs
        send_op = wire.Send
        send_run = wire.SendRun
        call_op = wire.CallRequest
        reply_op = wire.CallReply
        remote_call = node.remote_call
        watcher = Pid(peer.name, 0, peer.creation or 0)  # who monitors a call's server
        checked: Pid | None = None  # the last pid found to be on this node
        data = first
        while True:
            if data:
                # Time spent here (a full mailbox stops the reader) is not silence.
                conn.received_at = _FOREVER
                for op in feed(data):
                    if type(op) is send_run:
                        pid = op[0]
                        if pid is not checked:
                            if pid.node != me:
                                raise ProtocolError(f"SEND to {pid}, which is not on {me}")
                            checked = pid
                        await deliver_many(pid, op[1])
                    elif type(op) is send_op:
                        to = op[0]
                        if to is not checked:
                            if type(to) is Pid:
                                if to.node != me:
                                    raise ProtocolError(f"SEND to {to}, which is not on {me}")
                                checked = to
                            else:
                                if to.node not in (None, me):
                                    raise ProtocolError(f"SEND to {to}, which is not on {me}")
                                await deliver(to.name, op[1])  # type: ignore[union-attr]
                                continue
                        await deliver(to, op[1])
                    elif type(op) is reply_op:
                        if op[0].node != me:
                            raise ProtocolError(f"forged operation from {peer.name}: {op!r}"[:300])
                        node.reply(op[0], op[1])
                    elif type(op) is call_op:
                        to, caller, ref = op[0], op[1], op[2]
                        if ref.node != peer.name or (
                            caller is not None and caller.node != peer.name
                        ):
                            raise ProtocolError(f"forged operation from {peer.name}: {op!r}"[:300])
                        if to is not checked:
                            if type(to) is Pid:
                                if to.node != me:
                                    raise ProtocolError(f"CALL to {to}, which is not on {me}")
                                checked = to
                            else:
                                if to.node not in (None, me):
                                    raise ProtocolError(f"CALL to {to}, which is not on {me}")
                                await remote_call(ref, watcher, to.name, op[3], caller)  # type: ignore[union-attr]
                                continue
                        await remote_call(ref, watcher, to, op[3], caller)
                    else:
                        self._dispatch(peer, op)
                conn.received_at = clock()
                if data != heartbeat:  # a heartbeat says nothing of what comes next
                    self._traffic(conn, conn.received_at, False)
            try:
                data = await receive(_READ_SIZE)
                conn.direct = conn.sock is not None
            except anyio.EndOfStream:
                if decoder.buffered:
                    raise ProtocolError(
                        f"connection closed in the middle of a frame "
                        f"({decoder.buffered} bytes buffered)"
                    ) from None
                raise _Goodbye("peer closed the connection") from None

    def _dispatch(self, peer: _Peer, op: Any) -> None:
        """Handle one non-SEND operation, refusing any that speaks for a third node."""
        node = self.node
        me = node.name
        t = type(op)
        if t is wire.Link or t is wire.Unlink or t is wire.Exit or t is wire.LinkExit:
            _check(op.from_.node == peer.name and op.to.node == me, op, peer)
            if t is wire.Link:
                node.remote_link(op.from_, op.to)
            elif t is wire.Unlink:
                node.remote_unlink(op.from_, op.to)
            else:
                node.remote_exit(op.from_, op.to, op.reason, link=t is wire.LinkExit)
        elif t is wire.Monitor:
            target = op.target
            _check(op.ref.node == peer.name and op.watcher.node == peer.name, op, peer)
            if isinstance(target, Pid):
                _check(target.node == me, op, peer)
                node.remote_monitor(op.ref, op.watcher, target)
            else:
                _check(target.node in (None, me), op, peer)
                node.remote_monitor(op.ref, op.watcher, target.name)
        elif t is wire.Demonitor:
            _check(op.ref.node == peer.name, op, peer)
            target = op.target
            node.remote_demonitor(op.ref, target if isinstance(target, Pid) else target.name)
        elif t is wire.Down:
            target = op.target
            _check(op.ref.node == me and target.node == peer.name, op, peer)
            node.remote_down(op.ref, op.reason)
        elif t is wire.CallReply:
            _check(op.ref.node == me, op, peer)
            node.reply(op.ref, op.value)
        elif t is wire.Heartbeat:
            pass
        elif t is wire.Goodbye:
            raise _Goodbye(op.reason or "peer said goodbye")
        else:  # pragma: no cover - the decoder admits only the ops above
            raise ProtocolError(f"unexpected operation {t.__name__}")


def _raw_socket(stream: anyio.abc.ByteStream, backend: Backend) -> Any:
    """The non-blocking socket of a plain TCP stream on trio; None for any other."""
    sock: Any = None
    if backend.name == "trio" and isinstance(stream, anyio.abc.SocketStream):
        with contextlib.suppress(anyio.TypedAttributeLookupError):
            sock = stream.extra(anyio.abc.SocketAttribute.raw_socket)
    return sock


def _stream_io(
    stream: anyio.abc.ByteStream, backend: Backend
) -> tuple[Callable[[Any], Awaitable[None]], Callable[[int], Awaitable[bytes]]]:
    """The ``send`` and ``receive`` of an authenticated connection.

    On trio, a plain TCP stream is driven through its non-blocking socket: a send or
    receive that succeeds at once returns without the scheduler round trip that
    trio's socket wrapper adds after each one, and waits only when the socket is not
    ready. A receive that did not wait still yields, so a flood from one peer cannot
    starve the node. Errors are anyio's: ``BrokenResourceError``, ``EndOfStream``.
    Any other stream (TLS, asyncio) is used through its own methods.
    """
    sock = _raw_socket(stream, backend)
    if sock is None:
        return stream.send, stream.receive
    import trio

    wait_readable = trio.lowlevel.wait_readable
    wait_writable = trio.lowlevel.wait_writable
    checkpoint = backend.checkpoint
    sock_send = sock.send
    sock_recv = sock.recv

    async def send(data: Any) -> None:
        try:
            sent = sock_send(data)
        except BlockingIOError:
            sent = 0
        except OSError as exc:
            raise anyio.BrokenResourceError from exc
        n = len(data)
        if sent < n:
            with memoryview(data) as view:
                while sent < n:
                    await wait_writable(sock)
                    try:
                        sent += sock_send(view[sent:])
                    except BlockingIOError:
                        pass
                    except OSError as exc:
                        raise anyio.BrokenResourceError from exc

    drained = False  # the last receive took less than it asked for

    async def receive(max_bytes: int) -> bytes:
        nonlocal drained
        data: bytes | None = None
        # After a receive that emptied the socket, most likely nothing has come since:
        # wait first, rather than try (and fail) a syscall.
        if not drained:
            try:
                data = sock_recv(max_bytes)
            except BlockingIOError:
                pass
            except OSError as exc:
                raise anyio.BrokenResourceError from exc
            else:
                await checkpoint()
        while data is None:
            await wait_readable(sock)
            try:
                data = sock_recv(max_bytes)
            except BlockingIOError:
                pass
            except OSError as exc:
                raise anyio.BrokenResourceError from exc
        drained = len(data) < max_bytes
        if not data:
            raise anyio.EndOfStream
        return data

    return send, receive


async def _receive_handshake(stream: anyio.abc.ByteStream) -> bytes:
    try:
        return await stream.receive(4096)
    except (anyio.EndOfStream, anyio.BrokenResourceError):
        raise ProtocolError("connection closed during the handshake") from None


def _describe(e: BaseException) -> str:
    if isinstance(e, ProtocolError | _PeerSilent):
        return str(e)
    if isinstance(e, _Goodbye):
        return f"goodbye: {e}"
    return f"connection lost: {type(e).__name__} {e}".strip()


class _PeerSilent(Exception):
    """The peer sent nothing, not even a heartbeat, within the heartbeat timeout."""


class _Goodbye(Exception):
    """The peer closed the connection on purpose."""


def _check(ok: bool, op: object, peer: _Peer) -> None:
    if not ok:
        raise ProtocolError(f"forged operation from {peer.name}: {op!r}"[:300])


def _address(stream: anyio.abc.SocketStream) -> str:
    try:
        addr: Any = stream.extra(anyio.abc.SocketAttribute.remote_address)
        host, port = addr[0], addr[1]
        return f"{host}:{port}"
    except Exception:  # pragma: no cover - best effort for a log line
        return "?"


__all__ = [
    "DEFAULT_BUSY_WAIT",
    "DEFAULT_HEARTBEAT_INTERVAL",
    "DEFAULT_HEARTBEAT_TIMEOUT",
    "DEFAULT_MAX_BUFFER",
    "Distribution",
]
