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
    and links and monitors on that node fire with ``NoConnection``.

Security
    Every connection starts with the mutual HMAC-SHA256 handshake of
    :mod:`runtime.handshake` over the shared secret; nothing else is read before it
    succeeds. Frames are length-prefixed msgpack (:mod:`runtime.wire`), checked against
    size and depth limits before allocation; only msgpack types, pids, refs, names, exit
    reasons and registered classes travel, never pickle. A frame that is malformed,
    oversized, forged (an operation on behalf of a process of a third node) or arrives
    before authentication closes that connection alone, with a ``connection_closed``
    log line saying why; every other peer is unaffected. TLS is optional (pass an
    ``ssl.SSLContext``).

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
    batch (write coalescing). When the buffer holds more than ``max_buffer`` bytes,
    ``send`` raises :class:`~runtime.errors.PeerBusy` and ``send_wait`` waits for room.
    On the receiving side a full mailbox stops the connection's reader, so TCP itself
    slows the sender: no message already accepted is lost. Exit signals, monitors and
    replies bypass the buffer limit.
"""

from __future__ import annotations

import ssl
from collections import deque
from typing import Any, Final, final

import anyio
import anyio.abc
import structlog
from anyio.streams.tls import TLSStream

from . import wire
from .backend import Parkable
from .errors import AuthenticationFailed, PeerBusy, ProtocolError
from .handshake import (
    HANDSHAKE_TIMEOUT,
    Handshake,
    HandshakeResult,
    ReplayGuard,
    Role,
)
from .messages import Call, Cast, Down, Exit
from .node import Node
from .pid import Name, Pid, Ref
from .reasons import ExitReason

log = structlog.get_logger("regency")

for _cls, _name in [
    (Call, "regency.Call"),
    (Cast, "regency.Cast"),
    (Down, "regency.Down"),
    (Exit, "regency.Exit"),
]:
    wire.DEFAULT_REGISTRY.register(_cls, _name)

DEFAULT_HEARTBEAT_INTERVAL: Final = 1.0
"""Seconds of idleness after which a connection carries a heartbeat."""

DEFAULT_HEARTBEAT_TIMEOUT: Final = 5.0
"""Seconds of silence after which a peer is declared down."""

DEFAULT_MAX_BUFFER: Final = 16 * 1024 * 1024
"""Bytes a peer's outgoing buffer holds before ``send`` raises ``PeerBusy``."""

_SIMULTANEOUS: Final = "simultaneous connect: the node with the smaller name dials"
_READ_SIZE: Final = 256 * 1024


@final
class _Room(Parkable):
    """One sender waiting for room in a peer's buffer."""

    __slots__ = ("_waiter",)

    def __init__(self) -> None:
        self._waiter: Any = None


@final
class _Peer(Parkable):
    """Everything about one remote node: its buffer, its connection, its address."""

    __slots__ = (
        "_waiter",
        "address",
        "buf",
        "connected",
        "creation",
        "dialing",
        "encoder",
        "name",
        "rooms",
        "scope",
        "waiting_for_dial",
    )

    def __init__(self, name: str, registry: wire.Registry, max_frame: int) -> None:
        self.name = name
        self.address: tuple[str, int] | None = None
        self.buf = bytearray()
        self.encoder = wire.FrameEncoder(registry, max_frame=max_frame)
        self.connected = False
        self.creation: int | None = None
        self.dialing = False
        self.waiting_for_dial = False
        self.scope: anyio.CancelScope | None = None
        self.rooms: deque[_Room] = deque()
        self._waiter: Any = None


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
        connect_timeout: seconds a connection attempt (TCP and handshake) may take.
        max_buffer: bytes of unsent data per peer before ``send`` raises ``PeerBusy``.
        max_frame: the largest frame accepted or sent, in bytes.
        ssl_context: wrap every connection in TLS with this context (server side for
            accepted connections, client side for dialled ones).
        registry: the message classes allowed on the wire (default: the global one).
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
        registry: wire.Registry | None = None,
    ) -> None:
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
        self._ssl = ssl_context
        self._registry = registry or wire.DEFAULT_REGISTRY
        self._guard = ReplayGuard()
        self._peers: dict[str, _Peer] = {}
        self._tg: anyio.abc.TaskGroup | None = None
        self._scope: anyio.CancelScope | None = None
        self._listeners: list[anyio.abc.Listener[anyio.abc.SocketStream]] = []
        self.address: tuple[str, int] | None = None
        self.rejected_connections = 0
        self.dropped_messages = 0
        self._log = log.bind(node=node.name)

    # -- lifecycle -------------------------------------------------------------------

    async def start(self, listen: tuple[str, int] | None = None) -> Distribution:
        """Attach to the node and, with *listen*, accept connections on ``(host, port)``.

        Port 0 picks a free port; :attr:`address` tells which. Returns self.
        """
        if self.node.remote is not None:
            raise RuntimeError(f"node {self.node.name} already has a distribution layer")
        tg = self.node._tg
        if tg is None:
            raise RuntimeError("enter the node (async with) before starting distribution")
        await _start_in(tg, self._run)
        if listen is not None:
            listener = await anyio.create_tcp_listener(
                local_host=listen[0], local_port=listen[1], reuse_port=False
            )
            self._listeners.append(listener)
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
        """Say goodbye to every peer and stop all connections. Idempotent."""
        for peer in self._peers.values():
            if peer.connected:
                self._push(peer, wire.Goodbye("node stopping"), force=True)
        if self._scope is not None:
            self._scope.cancel()
        self._listeners.clear()

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

        With *name*, the peer must have that name. Returns at once if already connected.

        Raises:
            OSError: the TCP connection failed.
            AuthenticationFailed: the handshake failed (wrong secret, wrong name...).
            TimeoutError: the attempt took longer than ``connect_timeout``.
        """
        if name is not None:
            self._peer(name).address = (host, port)
            if self.is_connected(name):
                return name
        return await self._dial(host, port, name)

    async def wait_connected(self, name: str, timeout: float = 10.0) -> None:
        """Wait until node *name* is connected (dialling it if its address is known)."""
        peer = self._peer(name)
        with anyio.fail_after(timeout):
            while not peer.connected:
                if not peer.dialing and peer.address is not None:
                    self._dial_soon(peer)
                await anyio.sleep(0.01)

    # -- the Remote protocol, called by the node -------------------------------------

    def send(self, to: Pid | Name, msg: object) -> None:
        """Queue a message for a process or name on another node (see the module doc)."""
        peer = self._reachable(to.node if isinstance(to, Pid) else str(to.node))
        if peer is None:
            self.node.dead_letters += 1
            return
        if isinstance(to, Pid) and peer.creation is not None and to.creation != peer.creation:
            self.node.dead_letters += 1  # a pid of the node's previous life
            return
        if len(peer.buf) > self.max_buffer:
            raise PeerBusy(to if isinstance(to, Pid) else Pid(peer.name, 0, 0), self.max_buffer)
        self._push(peer, wire.Send(to, msg))

    async def send_wait(self, to: Pid | Name, msg: object) -> None:
        """Queue a message, waiting while the peer's buffer is over ``max_buffer``."""
        node = to.node if isinstance(to, Pid) else str(to.node)
        peer = self._reachable(node)
        while peer is not None and len(peer.buf) > self.max_buffer and peer.connected:
            room = _Room()
            peer.rooms.append(room)
            backend = self.node._backend
            assert backend is not None
            try:
                await backend.park(room)
            finally:
                if room in peer.rooms:
                    peer.rooms.remove(room)
        self.send(to, msg)
        await self.node._budget_checkpoint()

    def link(self, frm: Pid, to: Pid) -> None:
        """Tell *to*'s node that *frm* linked to it."""
        self._signal(to.node, wire.Link(frm, to))

    def unlink(self, frm: Pid, to: Pid) -> None:
        """Tell *to*'s node that *frm* removed its link."""
        self._signal(to.node, wire.Unlink(frm, to))

    def exit(self, frm: Pid, to: Pid, reason: ExitReason, *, link: bool) -> None:
        """Deliver an exit signal to a process on another node."""
        op = wire.LinkExit(frm, to, reason) if link else wire.Exit(frm, to, reason)
        self._signal(to.node, op)

    def monitor(self, ref: Ref, watcher: Pid | None, target: Pid | Name) -> None:
        """Ask *target*'s node to monitor it for *watcher*."""
        node = target.node if isinstance(target, Pid) else str(target.node)
        self._signal(node, wire.Monitor(ref, watcher or self.node.pid, target))

    def demonitor(self, ref: Ref, target: Pid | Name) -> None:
        """Cancel a monitor on another node."""
        node = target.node if isinstance(target, Pid) else str(target.node)
        self._signal(node, wire.Demonitor(ref, target), quiet=True)

    def down(self, ref: Ref, target: Pid, reason: ExitReason, watcher_node: str) -> None:
        """Tell *watcher_node* that a local process it monitored ended."""
        self._signal(
            watcher_node, wire.Down(ref, target, reason, Pid(watcher_node, 0, 0)), quiet=True
        )

    def reply(self, ref: Ref, value: object) -> None:
        """Send a call's reply to the node that made the call."""
        self._signal(
            ref.node, wire.CallReply(ref, value, Pid(ref.node, 0, ref.creation)), quiet=True
        )

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
        if peer is None or (not peer.connected and peer.address is None and not peer.dialing):
            return None
        if not peer.connected and not peer.dialing and not peer.waiting_for_dial:
            self._dial_soon(peer)
        return peer

    def _signal(self, name: str, op: wire.Op, *, quiet: bool = False) -> None:
        peer = self._reachable(name)
        if peer is None:
            if not quiet:
                self._unreachable_soon(name)
            return
        self._push(peer, op, force=True)

    def _push(self, peer: _Peer, op: wire.Op, *, force: bool = False) -> None:
        peer.buf += peer.encoder.encode(op)
        w = peer._waiter
        if w is not None:
            peer._waiter = None
            backend = self.node._backend
            assert backend is not None
            backend.unpark(w)

    def _unreachable_soon(self, name: str) -> None:
        """Fire links and monitors on *name* with NoConnection, once the caller has recorded them."""
        if self._tg is not None:
            self._tg.start_soon(self._fire_unreachable, name)

    async def _fire_unreachable(self, name: str) -> None:
        await anyio.lowlevel.checkpoint()
        peer = self._peers.get(name)
        if peer is None or not peer.connected:
            self.node.node_down(name)

    # -- connections -----------------------------------------------------------------

    def _dial_soon(self, peer: _Peer) -> None:
        if self._tg is None or peer.address is None or peer.dialing:
            return
        peer.dialing = True
        host, port = peer.address
        self._tg.start_soon(self._dial_background, peer, host, port)

    async def _dial_background(self, peer: _Peer, host: str, port: int) -> None:
        try:
            await self._dial(host, port, peer.name)
        except (OSError, ProtocolError, TimeoutError, anyio.BrokenResourceError) as e:
            self._log.warning("connect_failed", peer=peer.name, error=str(e))
            if not peer.connected and not peer.waiting_for_dial:
                self._lost(peer, f"connect failed: {e}")
        finally:
            peer.dialing = False

    async def _dial(self, host: str, port: int, name: str | None) -> str:
        peer = self._peer(name) if name is not None else None
        if peer is not None:
            peer.dialing = True
        try:
            with anyio.fail_after(self.connect_timeout):
                stream: anyio.abc.ByteStream = await anyio.connect_tcp(host, port)
                try:
                    if self._ssl is not None:
                        stream = await TLSStream.wrap(
                            stream, server_side=False, ssl_context=self._ssl, hostname=host
                        )
                    hs = Handshake(
                        Role.INITIATOR,
                        name=self.node.name,
                        creation=self.node.creation,
                        secret=self._secret,
                        expected_peer=name,
                        guard=self._guard,
                    )
                    result: HandshakeResult = await self._handshake(stream, hs)
                except BaseException:
                    await anyio.aclose_forcefully(stream)
                    raise
        except AuthenticationFailed as e:
            if peer is not None and _SIMULTANEOUS in str(e):
                # The peer dials us at the same time and its connection wins: wait for it.
                peer.waiting_for_dial = True
                self._log.debug("simultaneous_connect", peer=peer.name)
                return peer.name
            raise
        finally:
            if peer is not None:
                peer.dialing = False
        peer = self._peer(result.name)
        if peer.address is None:
            peer.address = (host, port)
        await self._attach(peer, stream, result)
        return result.name

    async def _accept_loop(self, listener: anyio.abc.Listener[anyio.abc.SocketStream]) -> None:
        assert self._tg is not None
        async with listener:
            await listener.serve(self._accepted, task_group=self._tg)

    async def _accepted(self, raw: anyio.abc.SocketStream) -> None:
        stream: anyio.abc.ByteStream = raw
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
                result = await self._handshake(stream, hs, acceptor=True)
        except (
            OSError,
            ProtocolError,
            TimeoutError,
            anyio.BrokenResourceError,
            anyio.EndOfStream,
            ssl.SSLError,
        ) as e:
            self.rejected_connections += 1
            self._log.warning(
                "connection_rejected", peer_address=_address(raw), reason=str(e) or type(e).__name__
            )
            await anyio.aclose_forcefully(stream)
            return
        if result is None:  # lost a simultaneous connect; the peer waits for ours
            await anyio.aclose_forcefully(stream)
            return
        await self._attach(self._peer(result.name), stream, result)

    async def _handshake(
        self, stream: anyio.abc.ByteStream, hs: Handshake, *, acceptor: bool = False
    ) -> Any:
        if not acceptor:
            await stream.send(hs.data_to_send())
        while not hs.done:
            try:
                data = await stream.receive(4096)
            except (anyio.EndOfStream, anyio.BrokenResourceError):
                raise ProtocolError("connection closed during the handshake") from None
            try:
                hs.receive_data(data)
            finally:
                out = hs.data_to_send()
                if out and not (acceptor and hs.done):
                    await stream.send(out)
            if acceptor and hs.done:
                result = hs.result
                peer = self._peers.get(result.name)
                if (
                    peer is not None
                    and peer.dialing
                    and not peer.connected
                    and self.node.name < result.name
                ):
                    await stream.send(wire.FrameEncoder().encode(wire.Reject(_SIMULTANEOUS)))
                    return None
                if out:
                    await stream.send(out)
                return result
        return hs.result

    async def _attach(
        self, peer: _Peer, stream: anyio.abc.ByteStream, result: HandshakeResult
    ) -> None:
        """Run an authenticated connection until it ends, then declare the peer down."""
        if peer.connected:
            # The peer reconnected while we thought the old connection alive: the old
            # one is dead for it, so it is dead for us too.
            self._log.info("connection_replaced", peer=peer.name)
            if peer.scope is not None:
                peer.scope.cancel()
            self._lost(peer, "replaced by a new connection")
        if peer.creation is not None and peer.creation != result.creation:
            self._log.info("peer_restarted", peer=peer.name, creation=result.creation)
        peer.creation = result.creation
        peer.connected = True
        peer.waiting_for_dial = False
        self._log.info("node_connected", peer=peer.name, creation=result.creation)
        decoder = wire.FrameDecoder(self._registry, max_frame=self.max_frame)
        ended: list[BaseException] = []
        with anyio.CancelScope() as scope:
            peer.scope = scope
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._until_error, tg, ended, self._writer, peer, stream)
                tg.start_soon(
                    self._until_error,
                    tg,
                    ended,
                    self._reader,
                    peer,
                    stream,
                    decoder,
                    result.trailing_data,
                )
        reason = _describe(ended[0]) if ended else "closed"
        with anyio.CancelScope(shield=True):
            await anyio.aclose_forcefully(stream)
        if peer.scope is scope:
            peer.scope = None
            self._lost(peer, reason)

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

    def _lost(self, peer: _Peer, reason: str) -> None:
        was = peer.connected
        peer.connected = False
        if peer.buf:
            self.dropped_messages += 1
            peer.buf = bytearray()
        while peer.rooms:
            room = peer.rooms.popleft()
            w = room._waiter
            if w is not None and self.node._backend is not None:
                room._waiter = None
                self.node._backend.unpark(w)
        self._log.warning("connection_closed", peer=peer.name, reason=reason, was_connected=was)
        self.node.node_down(peer.name)

    async def _writer(self, peer: _Peer, stream: anyio.abc.ByteStream) -> None:
        backend = self.node._backend
        assert backend is not None
        heartbeat = peer.encoder.encode(wire.Heartbeat())
        while True:
            if not peer.buf:
                with anyio.move_on_after(self.heartbeat_interval):
                    await backend.park(peer)
                if not peer.buf:
                    peer.buf += heartbeat
            data, peer.buf = peer.buf, bytearray()
            while peer.rooms:
                room = peer.rooms.popleft()
                w = room._waiter
                if w is not None:
                    room._waiter = None
                    backend.unpark(w)
            await stream.send(bytes(data))

    async def _reader(
        self, peer: _Peer, stream: anyio.abc.ByteStream, decoder: wire.FrameDecoder, first: bytes
    ) -> None:
        node = self.node
        me = node.name
        data = first
        timeout = self.heartbeat_timeout
        while True:
            if data:
                for op in decoder.feed(data):
                    if type(op) is wire.Send:
                        to = op.to
                        if isinstance(to, Pid):
                            if to.node != me:
                                raise ProtocolError(f"SEND to {to}, which is not on {me}")
                            await node.deliver(to, op.msg)
                        else:
                            if to.node not in (None, me):
                                raise ProtocolError(f"SEND to {to}, which is not on {me}")
                            await node.deliver(to.name, op.msg)
                    else:
                        self._dispatch(peer, op)
            with anyio.move_on_after(timeout):
                try:
                    data = await stream.receive(_READ_SIZE)
                except anyio.EndOfStream:
                    raise _Goodbye("peer closed the connection") from None
                continue
            raise _PeerSilent(f"no heartbeat for {timeout} s")

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
            _check(op.ref.node == me, op, peer)
            target = op.target
            node.remote_down(
                op.ref, target if isinstance(target, Pid) else Pid(peer.name, -1, 0), op.reason
            )
        elif t is wire.CallReply:
            _check(op.ref.node == me, op, peer)
            node.reply(op.ref, op.value)
        elif t is wire.Heartbeat:
            pass
        elif t is wire.Goodbye:
            raise _Goodbye(op.reason or "peer said goodbye")
        else:  # pragma: no cover - the decoder admits only the ops above
            raise ProtocolError(f"unexpected operation {t.__name__}")


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


async def _start_in(tg: Any, fn: Any) -> None:
    """Start *fn* in *tg* (a trio nursery or an anyio task group) and wait until it started."""
    await tg.start(fn)


__all__ = [
    "DEFAULT_HEARTBEAT_INTERVAL",
    "DEFAULT_HEARTBEAT_TIMEOUT",
    "DEFAULT_MAX_BUFFER",
    "Distribution",
]
