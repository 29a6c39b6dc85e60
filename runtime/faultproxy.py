"""A fault-injecting TCP proxy between named nodes, for chaos tests of real processes.

Nodes are pointed at the proxy instead of at each other: for every *directed* pair
``(src, dst)`` the proxy listens on a port of its own (:meth:`FaultProxy.route`), and
``src`` is told that ``dst`` listens there (``Distribution.add_peer(dst, *route)``, or a
``--peer`` flag of a process). A connection accepted on that port is one that ``src``
dialled to ``dst``; the proxy dials ``dst``'s real address (:meth:`FaultProxy.set_target`)
and forwards bytes both ways. Bytes travelling from ``src`` to ``dst`` -- on
connections either side dialled -- obey the *link* ``src -> dst``; bytes from ``dst`` to
``src`` obey the link ``dst -> src``. Each link has its own state, changed at any time
from the task that owns the proxy (the chaos runner, in the same process):

* **cut** (:meth:`FaultProxy.cut`, :meth:`FaultProxy.partition`,
  :meth:`FaultProxy.isolate`) -- a partition, both ways or one way. A *soft* cut stops
  forwarding: bytes already read are held, the sender's socket buffers fill, and a
  connection opened meanwhile is accepted but carries nothing -- what a black-holing
  network does to TCP. Held bytes are delivered, in order, after the heal, unless an
  endpoint gave up first (the distribution layer's heartbeat timeout closes a silent
  connection, so a long partition looks like a lost node: ``NoConnection``). A *hard*
  cut also resets (RST) every connection on the link at once and resets each new one
  when it is accepted -- what a rejecting firewall does.
* **delay** (:meth:`FaultProxy.set_delay`) -- latency plus uniform jitter, per chunk
  read. A chunk is never released before the one read before it, so order within a
  connection is kept (TCP never reorders within a connection).
* **resets** (:meth:`FaultProxy.set_reset_rate`) -- each connection on the link is reset
  at random, at ``rate`` resets per second on average (a Poisson process), drawn from
  the proxy's seeded RNG; :meth:`FaultProxy.reset` resets the connections of a pair now.
* **throttle** (:meth:`FaultProxy.set_bandwidth`) -- at most ``bytes_per_second``.
* **heal** (:meth:`FaultProxy.heal`, :meth:`FaultProxy.heal_all`) -- back to a clean
  link; held bytes flow again.

What "drop" means here. A network drops and reorders *packets*; TCP retransmits and
reorders them back, so an application never sees a missing or reordered byte, only
latency, a stall, or a broken connection. Dropping or reordering bytes *inside* a
stream would corrupt it, which no network does to TCP. So this proxy models packet
loss as what TCP turns it into: delay (retransmission), a stall (a soft cut) and a
connection reset; reordering *between* messages happens only across connections (after
a reset, a new connection may overtake data still held on the old one).

Randomness (jitter, resets) comes from one ``random.Random(seed)``; real sockets and
schedulers are not deterministic, so a seed reproduces the *schedule* of faults, not
the exact interleaving of bytes.

Use::

    async with FaultProxy(seed=7) as proxy:
        proxy.set_target("b", "127.0.0.1", 7002)
        host, port = await proxy.route("a", "b")     # give this to a as b's address
        proxy.cut("a", "b")                         # partition a | b
        proxy.heal()                                # everything clean again

Leaving the ``async with`` block closes every listener and connection.
"""

from __future__ import annotations

import math
import random
import socket
import struct
from collections.abc import Iterable
from typing import Any, Final, final

import anyio
import anyio.abc
import attrs
import structlog

__all__ = ["FaultProxy", "LinkState", "ProxyStats"]

#: Bytes read from a socket at a time; one chunk is the unit of delay.
CHUNK: Final = 65536
#: Chunks read ahead per direction before the reader stops (backpressure to the sender).
MAX_AHEAD: Final = 64
#: Seconds the proxy tries to reach a node's real address before resetting the dialler.
CONNECT_TIMEOUT: Final = 2.0
#: Seconds between two draws of random resets.
RESET_TICK: Final = 0.05

_log = structlog.get_logger("regency.faultproxy")


@final
@attrs.frozen
class LinkState:
    """The faults on one directed link ``src -> dst``; the default is a clean link."""

    cut: bool = False  #: nothing is forwarded in this direction
    hard: bool = False  #: with ``cut``: connections are reset, new ones refused
    delay: float = 0.0  #: seconds added to every chunk
    jitter: float = 0.0  #: plus a uniform draw in ``[0, jitter)`` seconds
    reset_rate: float = 0.0  #: random resets per second per connection
    bytes_per_second: float | None = None  #: throttle; None: unlimited

    @property
    def clean(self) -> bool:
        """True when the link injects no fault at all."""
        return self == _CLEAN


_CLEAN: Final = LinkState()


@final
@attrs.define
class ProxyStats:
    """Counters of one proxy since it started."""

    connections: int = 0  #: connections accepted
    refused: int = 0  #: accepted and reset at once (hard cut, or the node unreachable)
    resets: int = 0  #: live connections reset (by a hard cut, at random, or on request)
    bytes_forwarded: int = 0
    chunks_delayed: int = 0  #: chunks held back by a delay or a cut


@final
@attrs.frozen
class _Route:
    src: str
    dst: str


@final
class _Conn:
    """One proxied connection: ``down`` is the dialler's side, ``up`` the target's."""

    def __init__(self, route: _Route, down: anyio.abc.SocketStream) -> None:
        self.route = route
        self.down = down
        self.up: anyio.abc.SocketStream | None = None
        self.scope = anyio.CancelScope()
        self.reset = False

    def touches(self, a: str, b: str) -> bool:
        return {self.route.src, self.route.dst} == {a, b}

    def kill(self) -> None:
        """Reset both sides: cancel the pumps; the handler closes with RST."""
        self.reset = True
        self.scope.cancel()


def _rst(stream: anyio.abc.SocketStream | None) -> None:
    """Make the next close of ``stream`` send RST instead of FIN."""
    if stream is None:
        return
    try:
        sock: socket.socket = stream.extra(anyio.abc.SocketAttribute.raw_socket)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except (OSError, anyio.TypedAttributeLookupError):
        pass


@final
class FaultProxy:
    """A TCP proxy between named nodes that injects faults per directed link.

    See the module docstring for the model. All methods except :meth:`route` are plain
    functions that take effect at once (the next chunk a pump handles). Use it as an
    async context manager; the listeners and connections live in its task group.

    Args:
        seed: seeds the RNG of jitter and random resets.
        host: the address the proxy listens on.
    """

    def __init__(self, *, seed: int = 0, host: str = "127.0.0.1") -> None:
        self.host = host
        self.rng = random.Random(seed)
        self.stats = ProxyStats()
        self._targets: dict[str, tuple[str, int]] = {}
        self._routes: dict[_Route, tuple[str, int]] = {}
        self._links: dict[tuple[str, str], LinkState] = {}
        self._conns: set[_Conn] = set()
        self._changed = anyio.Event()
        self._tg: anyio.abc.TaskGroup | None = None

    async def __aenter__(self) -> FaultProxy:
        self._tg = await anyio.create_task_group().__aenter__()
        self._tg.start_soon(self._random_resets)
        return self

    async def __aexit__(self, *exc: Any) -> None:
        assert self._tg is not None
        for conn in list(self._conns):
            conn.kill()
        self._tg.cancel_scope.cancel()
        await self._tg.__aexit__(None, None, None)
        self._tg = None

    # -- routing ---------------------------------------------------------------------

    def set_target(self, node: str, host: str, port: int) -> None:
        """Record where ``node`` really listens; new connections to it go there."""
        self._targets[node] = (host, port)

    async def route(self, src: str, dst: str, port: int = 0) -> tuple[str, int]:
        """Listen for connections ``src`` dials to ``dst``; return ``(host, port)``.

        Idempotent: a route that exists keeps its address. ``port`` 0 picks a free one.

        Raises:
            RuntimeError: the proxy is not entered.
            OSError: the port cannot be listened on.
        """
        key = _Route(src, dst)
        if key in self._routes:
            return self._routes[key]
        if self._tg is None:
            raise RuntimeError("enter the proxy (async with) before adding routes")
        listener = await anyio.create_tcp_listener(local_host=self.host, local_port=port)
        addr: Any = listener.extra(anyio.abc.SocketAttribute.local_address)
        self._routes[key] = (str(addr[0]), int(addr[1]))
        self._tg.start_soon(self._serve, listener, key)
        return self._routes[key]

    def address(self, src: str, dst: str) -> tuple[str, int]:
        """The address of the route ``src -> dst``.

        Raises:
            KeyError: no such route.
        """
        return self._routes[_Route(src, dst)]

    # -- faults ----------------------------------------------------------------------

    def link(self, src: str, dst: str) -> LinkState:
        """The state of the directed link ``src -> dst``."""
        return self._links.get((src, dst), _CLEAN)

    def _update(self, src: str, dst: str, both: bool, **changes: Any) -> None:
        pairs = [(src, dst), (dst, src)] if both else [(src, dst)]
        for pair in pairs:
            state = attrs.evolve(self.link(*pair), **changes)
            if state.clean:
                self._links.pop(pair, None)
            else:
                self._links[pair] = state
        self._wake()

    def cut(self, src: str, dst: str, *, both: bool = True, hard: bool = False) -> None:
        """Stop forwarding from ``src`` to ``dst`` (and back, with ``both``).

        ``hard`` also resets the pair's live connections now and every new one.
        """
        self._update(src, dst, both, cut=True, hard=hard)
        if hard:
            self.reset(src, dst)
        _log.debug("link_cut", src=src, dst=dst, both=both, hard=hard)

    def partition(self, *groups: Iterable[str], hard: bool = False) -> None:
        """Cut every pair of nodes in different ``groups``, both ways."""
        sides = [sorted(set(g)) for g in groups]
        for i, left in enumerate(sides):
            for right in sides[i + 1 :]:
                for a in left:
                    for b in right:
                        self.cut(a, b, hard=hard)

    def isolate(self, node: str, others: Iterable[str], *, hard: bool = False) -> None:
        """Cut ``node`` from each of ``others``, both ways."""
        for other in others:
            if other != node:
                self.cut(node, other, hard=hard)

    def set_delay(
        self, src: str, dst: str, delay: float, jitter: float = 0.0, *, both: bool = True
    ) -> None:
        """Delay every chunk from ``src`` to ``dst`` by ``delay`` plus up to ``jitter`` s."""
        if delay < 0 or jitter < 0:
            raise ValueError("delay and jitter must be >= 0")
        self._update(src, dst, both, delay=delay, jitter=jitter)

    def set_reset_rate(self, src: str, dst: str, rate: float) -> None:
        """Reset the pair's connections at random, ``rate`` times per second on average."""
        if rate < 0:
            raise ValueError("rate must be >= 0")
        self._update(src, dst, True, reset_rate=rate)

    def set_bandwidth(
        self, src: str, dst: str, bytes_per_second: float | None, *, both: bool = True
    ) -> None:
        """Throttle ``src -> dst`` to ``bytes_per_second`` (None: unlimited)."""
        if bytes_per_second is not None and bytes_per_second <= 0:
            raise ValueError("bytes_per_second must be > 0")
        self._update(src, dst, both, bytes_per_second=bytes_per_second)

    def reset(self, a: str, b: str) -> int:
        """Reset (RST) every live connection between ``a`` and ``b`` now; how many."""
        victims = [c for c in self._conns if c.touches(a, b) and not c.reset]
        for conn in victims:
            conn.kill()
        self.stats.resets += len(victims)
        return len(victims)

    def heal(self, src: str, dst: str, *, both: bool = True) -> None:
        """Make the link ``src -> dst`` (and back, with ``both``) clean again."""
        pairs = [(src, dst), (dst, src)] if both else [(src, dst)]
        for pair in pairs:
            self._links.pop(pair, None)
        self._wake()

    def heal_all(self) -> None:
        """Make every link clean again; held bytes flow."""
        self._links.clear()
        self._wake()

    def faulty_links(self) -> dict[tuple[str, str], LinkState]:
        """Every directed link that is not clean now."""
        return dict(self._links)

    def connections(self, a: str | None = None, b: str | None = None) -> int:
        """Live connections (between ``a`` and ``b`` when both are given)."""
        if a is None or b is None:
            return len(self._conns)
        return sum(1 for c in self._conns if c.touches(a, b))

    def _wake(self) -> None:
        ev, self._changed = self._changed, anyio.Event()
        ev.set()

    # -- forwarding ------------------------------------------------------------------

    async def _serve(
        self, listener: anyio.abc.Listener[anyio.abc.SocketStream], key: _Route
    ) -> None:
        async with listener:
            await listener.serve(lambda s: self._handle(key, s))

    async def _handle(self, route: _Route, down: anyio.abc.SocketStream) -> None:
        try:
            await self._proxy(route, down)
        except Exception as e:  # never let one connection take the listener down
            _log.warning("proxy_connection_failed", src=route.src, dst=route.dst, error=repr(e))

    async def _proxy(self, route: _Route, down: anyio.abc.SocketStream) -> None:
        self.stats.connections += 1
        fwd, back = self.link(route.src, route.dst), self.link(route.dst, route.src)
        target = self._targets.get(route.dst)
        if (fwd.cut and fwd.hard) or (back.cut and back.hard) or target is None:
            self.stats.refused += 1
            _rst(down)
            await anyio.aclose_forcefully(down)
            return
        conn = _Conn(route, down)
        self._conns.add(conn)
        try:
            with conn.scope:
                try:
                    with anyio.fail_after(CONNECT_TIMEOUT):
                        conn.up = await anyio.connect_tcp(*target)
                except (OSError, TimeoutError):
                    self.stats.refused += 1
                    conn.reset = True
                    return
                async with anyio.create_task_group() as tg:
                    tg.start_soon(self._pump, conn, down, conn.up, route.src, route.dst)
                    tg.start_soon(self._pump, conn, conn.up, down, route.dst, route.src)
        finally:
            self._conns.discard(conn)
            if conn.reset:
                _rst(down)
                _rst(conn.up)
            await anyio.aclose_forcefully(down)
            if conn.up is not None:
                await anyio.aclose_forcefully(conn.up)

    async def _pump(
        self,
        conn: _Conn,
        source: anyio.abc.SocketStream,
        sink: anyio.abc.SocketStream,
        src: str,
        dst: str,
    ) -> None:
        """Forward ``source`` to ``sink`` under the link ``src -> dst``; EOF is passed on."""
        send, receive = anyio.create_memory_object_stream[tuple[float, bytes]](MAX_AHEAD)
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._read, source, send, src, dst)
                await self._write(receive, sink, src, dst)
        except* (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
            conn.kill()  # one side broke: the other sees a reset, as through a router

    async def _read(
        self,
        source: anyio.abc.SocketStream,
        send: anyio.abc.ObjectSendStream[tuple[float, bytes]],
        src: str,
        dst: str,
    ) -> None:
        last = 0.0
        async with send:
            while True:
                try:
                    chunk = await source.receive(CHUNK)
                except anyio.EndOfStream:
                    return
                state = self.link(src, dst)
                due = anyio.current_time()
                if state.delay or state.jitter:
                    due += state.delay + state.jitter * self.rng.random()
                last = max(due, last)  # never before the previous chunk
                await send.send((last, chunk))

    async def _write(
        self,
        receive: anyio.abc.ObjectReceiveStream[tuple[float, bytes]],
        sink: anyio.abc.SocketStream,
        src: str,
        dst: str,
    ) -> None:
        async with receive:
            async for due, chunk in receive:
                held = False
                while True:
                    wait = due - anyio.current_time()
                    if self.link(src, dst).cut:
                        held = True
                        await self._changed.wait()
                    elif wait > 0:
                        held = True
                        with anyio.move_on_after(wait):
                            await self._changed.wait()  # a heal or a cut may come first
                    else:
                        break
                if held:
                    self.stats.chunks_delayed += 1
                await sink.send(chunk)
                self.stats.bytes_forwarded += len(chunk)
                bps = self.link(src, dst).bytes_per_second
                if bps is not None:
                    await anyio.sleep(len(chunk) / bps)
        try:
            await sink.send_eof()
        except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
            pass

    async def _random_resets(self) -> None:
        while True:
            await anyio.sleep(RESET_TICK)
            for conn in sorted(self._conns, key=lambda c: (c.route.src, c.route.dst, id(c))):
                rate = max(
                    self.link(conn.route.src, conn.route.dst).reset_rate,
                    self.link(conn.route.dst, conn.route.src).reset_rate,
                )
                if (
                    rate > 0
                    and not conn.reset
                    and self.rng.random() < -math.expm1(-rate * RESET_TICK)
                ):
                    conn.kill()
                    self.stats.resets += 1
                    _log.debug("connection_reset", src=conn.route.src, dst=conn.route.dst)
