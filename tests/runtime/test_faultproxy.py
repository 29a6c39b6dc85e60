"""The fault-injecting proxy on real loopback sockets: forwarding, delay, cuts, resets, heal.

Each test owns both ends: a listener standing for node ``b`` hands its accepted streams
to the test, and the test dials the route ``a -> b`` as node ``a``. Waits are bounded
generously; the only timing claims are lower bounds (a delay is at least its setting)
and "nothing arrives within a short window" while a link is cut.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager

import anyio
import anyio.abc
import pytest

from runtime import CallTimeout, Down, Node, ServerExited
from runtime.dist import Distribution
from runtime.faultproxy import FaultProxy, LinkState
from runtime.reasons import NoConnection
from tests.runtime.dist_helpers import BOUND, FAST_HEARTBEAT, SECRET, Echo, Inbox

QUIET = 0.3
"""Seconds to wait for bytes that must not arrive."""


class Pair:
    """Node ``a`` dials ``b`` through the proxy; ``accepted`` yields ``b``'s side."""

    def __init__(self, proxy: FaultProxy, accepted: anyio.abc.ObjectReceiveStream[object]) -> None:
        self.proxy = proxy
        self.accepted = accepted

    async def dial(self) -> tuple[anyio.abc.SocketStream, anyio.abc.SocketStream]:
        """Open a connection ``a -> b``; return (a's end, b's end)."""
        a_end = await anyio.connect_tcp(*self.proxy.address("a", "b"))
        with anyio.fail_after(BOUND):
            b_end = await self.accepted.receive()
        assert isinstance(b_end, anyio.abc.SocketStream)
        return a_end, b_end


@asynccontextmanager
async def pair(seed: int = 0) -> AsyncIterator[Pair]:
    """A proxy with the route ``a -> b`` to a listener the test reads from."""
    send, receive = anyio.create_memory_object_stream[object](16)
    listener = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=0)
    port = listener.extra(anyio.abc.SocketAttribute.local_port)

    async def hand_over(stream: anyio.abc.SocketStream) -> None:
        await send.send(stream)
        await anyio.sleep_forever()  # the test closes it

    async with FaultProxy(seed=seed) as proxy, anyio.create_task_group() as tg:
        proxy.set_target("b", "127.0.0.1", port)
        await proxy.route("a", "b")
        tg.start_soon(listener.serve, hand_over)
        yield Pair(proxy, receive)
        tg.cancel_scope.cancel()


async def read_exactly(stream: anyio.abc.SocketStream, n: int) -> bytes:
    """Read ``n`` bytes (or fail after BOUND)."""
    out = b""
    with anyio.fail_after(BOUND):
        while len(out) < n:
            out += await stream.receive()
    return out


async def nothing_arrives(stream: anyio.abc.SocketStream) -> bool:
    """True if no byte arrives within QUIET seconds."""
    with anyio.move_on_after(QUIET):
        await stream.receive()
        return False
    return True


async def is_reset(stream: anyio.abc.SocketStream) -> bool:
    """True once the connection is broken (RST) or closed."""
    with anyio.fail_after(BOUND):
        try:
            while True:
                await stream.receive()
        except (anyio.BrokenResourceError, anyio.EndOfStream, anyio.ClosedResourceError):
            return True


class TestForwarding:
    async def test_bytes_flow_both_ways(self) -> None:
        """A clean route forwards bytes both ways unchanged, and EOF too."""
        async with pair() as p:
            a, b = await p.dial()
            await a.send(b"hello")
            await b.send(b"world!")

            assert await read_exactly(b, 5) == b"hello"
            assert await read_exactly(a, 6) == b"world!"
            await a.send_eof()
            with pytest.raises(anyio.EndOfStream):
                await b.receive()

    async def test_delay_keeps_order(self) -> None:
        """Delay with jitter holds every chunk at least `delay` and never reorders."""
        async with pair(seed=3) as p:
            p.proxy.set_delay("a", "b", 0.1, jitter=0.2)
            a, b = await p.dial()
            sent = b"".join(b"%03d," % i for i in range(40))
            start = anyio.current_time()
            for i in range(40):
                await a.send(b"%03d," % i)
                await anyio.sleep(0.002)  # separate chunks, each with its own jitter
            got = await read_exactly(b, len(sent))

            assert sent == got
            assert anyio.current_time() - start >= 0.1
            assert p.proxy.stats.chunks_delayed > 0

    async def test_throttle_limits_bandwidth(self) -> None:
        """A throttled link takes at least bytes / rate seconds."""
        async with pair() as p:
            p.proxy.set_bandwidth("a", "b", 20_000)
            a, b = await p.dial()
            start = anyio.current_time()
            await a.send(b"x" * 10_000)
            await read_exactly(b, 10_000)
            await a.send(b"y")
            await read_exactly(b, 1)

            assert anyio.current_time() - start >= 0.45


class TestCuts:
    async def test_cut_both_ways_holds_bytes_until_heal(self) -> None:
        """A soft cut forwards nothing either way; the heal delivers the held bytes in order."""
        async with pair() as p:
            a, b = await p.dial()
            p.proxy.cut("a", "b")
            await a.send(b"one")
            await b.send(b"two")

            assert await nothing_arrives(b)
            assert await nothing_arrives(a)
            p.proxy.heal("a", "b")
            assert await read_exactly(b, 3) == b"one"
            assert await read_exactly(a, 3) == b"two"

    async def test_one_way_cut_lets_the_other_direction_through(self) -> None:
        """Cutting a -> b only: b's bytes reach a, a's are held."""
        async with pair() as p:
            a, b = await p.dial()
            p.proxy.cut("a", "b", both=False)
            await a.send(b"held")
            await b.send(b"free")

            assert await read_exactly(a, 4) == b"free"
            assert await nothing_arrives(b)
            assert p.proxy.link("b", "a") == LinkState()
            p.proxy.heal_all()
            assert await read_exactly(b, 4) == b"held"

    async def test_one_way_cut_applies_to_connections_the_other_side_dialled(self) -> None:
        """The link b -> a governs bytes b sends on a connection a dialled, and vice versa."""
        async with pair() as p:
            a, b = await p.dial()
            p.proxy.cut("b", "a", both=False)
            await b.send(b"held")
            await a.send(b"free")

            assert await read_exactly(b, 4) == b"free"
            assert await nothing_arrives(a)

    async def test_hard_cut_resets_live_and_new_connections(self) -> None:
        """A hard cut resets the live connection and every new one until the heal."""
        async with pair() as p:
            a, b = await p.dial()
            p.proxy.cut("a", "b", hard=True)

            assert await is_reset(a)
            assert await is_reset(b)
            fresh = await anyio.connect_tcp(*p.proxy.address("a", "b"))
            assert await is_reset(fresh)
            p.proxy.heal("a", "b")
            a2, b2 = await p.dial()
            await a2.send(b"back")
            assert await read_exactly(b2, 4) == b"back"
            assert p.proxy.stats.refused >= 1

    async def test_partition_cuts_across_groups_only(self) -> None:
        """partition(x, y) cuts every pair across the groups and none within one."""
        async with FaultProxy() as proxy:
            proxy.partition(["m1", "m2"], ["m3", "w1"])

            assert proxy.link("m1", "m3").cut
            assert proxy.link("w1", "m2").cut
            assert not proxy.link("m1", "m2").cut
            assert not proxy.link("m3", "w1").cut
            assert len(proxy.faulty_links()) == 8


class TestResets:
    async def test_reset_breaks_the_connection_of_a_pair(self) -> None:
        """reset(a, b) sends RST both ways at once; a new connection works."""
        async with pair() as p:
            a, b = await p.dial()

            assert p.proxy.reset("b", "a") == 1
            assert await is_reset(a)
            assert await is_reset(b)
            a2, b2 = await p.dial()
            await a2.send(b"ok")
            assert await read_exactly(b2, 2) == b"ok"

    async def test_random_resets_at_a_rate(self) -> None:
        """A link with a high reset rate resets its connection soon; rate 0 stops it."""
        async with pair(seed=1) as p:
            p.proxy.set_reset_rate("a", "b", 20.0)
            a, _ = await p.dial()

            assert await is_reset(a)
            assert p.proxy.stats.resets >= 1
            p.proxy.set_reset_rate("a", "b", 0.0)
            assert p.proxy.faulty_links() == {}

    async def test_unreachable_target_resets_the_dialler(self) -> None:
        """A route whose node does not listen resets the dialler instead of hanging."""
        async with FaultProxy() as proxy:
            probe = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=0)
            port = probe.extra(anyio.abc.SocketAttribute.local_port)
            await probe.aclose()
            proxy.set_target("b", "127.0.0.1", port)
            stream = await anyio.connect_tcp(*await proxy.route("a", "b"))

            assert await is_reset(stream)
            assert proxy.stats.refused == 1


async def test_regency_nodes_see_noconnection_in_a_long_partition_and_recover() -> None:
    """Two nodes over the proxy: a long partition fires NoConnection; after the heal,
    calls go through again."""
    async with AsyncExitStack() as stack:
        proxy = await stack.enter_async_context(FaultProxy(seed=5))
        nodes: dict[str, Node] = {}
        dists: dict[str, Distribution] = {}
        for name in ("a@proxy", "b@proxy"):
            nodes[name] = await stack.enter_async_context(Node(name))
            dists[name] = await Distribution(nodes[name], secret=SECRET, **FAST_HEARTBEAT).start(
                listen=("127.0.0.1", 0)
            )
            assert dists[name].address is not None
            proxy.set_target(name, *dists[name].address)
        for src in nodes:
            for dst in nodes:
                if src != dst:
                    dists[src].add_peer(dst, *await proxy.route(src, dst))
        a, b = nodes["a@proxy"], nodes["b@proxy"]
        server = await b.start_server(Echo, name="echo")
        with anyio.fail_after(BOUND):
            assert await a.call(server, ("echo", 1), timeout=BOUND) == 1
        watcher = Inbox(a)
        ref = a.monitor(watcher.pid, server)

        proxy.partition(["a@proxy"], ["b@proxy"])
        down = await watcher.wait_for(lambda m: isinstance(m, Down))

        assert Down(ref, server, NoConnection("b@proxy")) == down
        proxy.heal_all()
        with anyio.fail_after(BOUND):
            while True:
                try:
                    assert await a.call(server, ("echo", 2), timeout=1.0) == 2
                    break
                except (ServerExited, CallTimeout):  # the link is coming back
                    await anyio.sleep(0.05)
