"""LocalNetwork: several nodes in one process, on fake time, with dist's semantics.

Every async test runs under ``MockClock(autojump_threshold=0)`` (pytest-trio's
``autojump_clock``), so waits cost nothing and instants are exact: a connection
impaired at ``t0`` breaks at exactly ``t0 + detect_after``.
"""

from __future__ import annotations

import random
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

import attrs
import pytest
import trio
import trio.testing

import runtime
from runtime import GenServer, Node
from runtime.errors import PeerBusy, ServerExited, Unregistered
from runtime.messages import Down, Exit, From
from runtime.pid import Name, Pid, Ref
from runtime.raft.core import Entry, EntryKind
from runtime.raft.dist_transport import DistTransport
from runtime.raft.driver import RaftDriver, raft_config
from runtime.reasons import (
    Abnormal,
    Crashed,
    ExitReason,
    Kill,
    Killed,
    NoConnection,
    NoProc,
    Shutdown,
)
from runtime.sim.disk import SimDisk
from runtime.sim.localnet import LocalNetwork, TraceEvent
from supervisors import SupFlags, start_supervisor, which_children, worker_spec

DETECT = 0.5


class Echo(GenServer):
    """Answers every call with the request; records casts; crashes on ``("crash", text)``."""

    async def init(self, *args: Any) -> None:
        """Start with no casts."""
        self.casts: list[Any] = []

    async def handle_call(self, request: Any, from_: From) -> Any:
        """See the class doc."""
        match request:
            case ("crash", text):
                raise RuntimeError(text)
            case "casts":
                return list(self.casts)
            case _:
                return request

    async def handle_cast(self, msg: Any) -> None:
        """Record the cast."""
        self.casts.append(msg)


@attrs.frozen
class Unsendable:
    """Never registered on the wire."""

    x: int


async def idle() -> None:
    """Wait forever."""
    await runtime.receive()


async def crash_on_message() -> None:
    """Crash with RuntimeError at the first message."""
    await runtime.receive()
    raise RuntimeError("boom")


class Inbox:
    """A process on *node* that collects every message it receives."""

    def __init__(self, node: Node, *, name: str | None = None, trap_exit: bool = False) -> None:
        self.got: list[Any] = []
        self._changed = trio.Event()
        self.pid = node.spawn(self._loop, name=name, trap_exit=trap_exit)

    async def _loop(self) -> None:
        while True:
            self.got.append(await runtime.receive())
            self._changed.set()

    async def wait_for(self, match: Callable[[Any], bool]) -> Any:
        """The first message collected that matches, waiting for it (no polling)."""
        while True:
            for m in self.got:
                if match(m):
                    return m
            self._changed = trio.Event()
            await self._changed.wait()


@asynccontextmanager
async def cluster(
    *names: str, seed: int = 0, **kwargs: Any
) -> AsyncIterator[tuple[LocalNetwork, list[Node]]]:
    """A running network with one node per name (creations 1, 2, ...), all attached.

    The last node is the current node of the test's own code (``runtime.call`` ...).
    """
    net = LocalNetwork(seed, detect_after=DETECT, **kwargs)
    async with trio.open_nursery() as nursery:
        await nursery.start(net.run)
        async with AsyncExitStack() as stack:
            nodes = []
            for i, name in enumerate(names):
                node = await stack.enter_async_context(Node(name, creation=i + 1))
                net.attach(node)
                nodes.append(node)
            yield net, nodes
        nursery.cancel_scope.cancel()


def is_down(m: object) -> bool:
    """True for a Down message."""
    return isinstance(m, Down)


def down_of(ref: Ref) -> Callable[[Any], bool]:
    """A match for the Down of the monitor *ref*."""
    return lambda m: isinstance(m, Down) and m.ref == ref


def is_exit(m: object) -> bool:
    """True for an Exit message."""
    return isinstance(m, Exit)


class TestLocalSemantics:
    async def test_call_cast_and_send_by_name_and_pid(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """call, cast and send reach a server on another node by name and by pid."""
        async with cluster("a", "b") as (_net, (a, b)):
            pid = await b.start_server(Echo, name="echo")
            inbox = Inbox(b, name="inbox")

            assert await a.call(Name("echo", "b"), ("x", 1)) == ("x", 1)
            assert await a.call(pid, "by pid") == "by pid"
            a.cast(Name("echo", "b"), "c1")
            a.send(Name("inbox", "b"), "m1")
            a.send(inbox.pid, "m2")
            await trio.sleep(0.1)

            assert await a.call(pid, "casts") == ["c1"]
            assert inbox.got == ["m1", "m2"]

    async def test_call_to_server_crashing_mid_call_fails_with_its_reason(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """The caller's monitor brings the remote server's crash reason back."""
        async with cluster("a", "b") as (_net, (a, b)):
            await b.start_server(Echo, name="echo")

            with pytest.raises(ServerExited) as info:
                await a.call(Name("echo", "b"), ("crash", "bad"))

            assert isinstance(info.value.reason, Crashed)
            assert (info.value.reason.kind, info.value.reason.message) == ("RuntimeError", "bad")
            assert info.value.reason.exc is None  # it crossed the wire: no exception object

    async def test_call_to_unregistered_remote_name_is_noproc(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """A call to a name nobody registered on the other node fails with NoProc."""
        async with cluster("a", "b") as (_net, (a, _b)):
            with pytest.raises(ServerExited) as info:
                await a.call(Name("nobody", "b"), "x")

            assert NoProc() == info.value.reason

    async def test_linked_crash_kills_the_remote_partner_with_the_same_reason(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """A crash on b ends the linked process on a; a trapping one gets an Exit."""
        async with cluster("a", "b") as (_net, (a, b)):
            victim = b.spawn(crash_on_message)
            partner = a.spawn(idle)
            trapper = Inbox(a, trap_exit=True)
            a.link(partner, victim)
            a.link(trapper.pid, victim)
            watcher = Inbox(a)
            ref = a.monitor(watcher.pid, partner)
            await trio.sleep(0.01)

            a.send(victim, "go")
            down = await watcher.wait_for(is_down)
            exit_msg = await trapper.wait_for(is_exit)

            assert down.ref == ref
            assert isinstance(down.reason, Crashed)
            assert down.reason.message == "boom"
            assert Exit(victim, down.reason) == exit_msg

    async def test_exit_signals_cross_nodes_and_kill_is_untrappable(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """exit(pid, reason) reaches a remote process; Kill ends even a trapping one."""
        async with cluster("a", "b") as (_net, (a, b)):
            trapper = Inbox(b, trap_exit=True)
            watcher = Inbox(a)
            ref = a.monitor(watcher.pid, trapper.pid)

            a.exit(trapper.pid, Abnormal("stop"))
            await trio.sleep(0.01)
            a.exit(trapper.pid, Kill())
            down = await watcher.wait_for(is_down)

            assert Exit(a.pid, Abnormal("stop")) == trapper.got[0]
            assert Down(ref, trapper.pid, Killed()) == down

    async def test_monitor_dead_pid_and_unlink(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """A monitor on a dead remote pid gives NoProc; after unlink no signal arrives."""
        async with cluster("a", "b") as (_net, (a, b)):
            dead = b.spawn(crash_on_message)
            b.exit(dead, Kill())
            other = b.spawn(crash_on_message)
            trapper = Inbox(a, trap_exit=True)
            await trio.sleep(0.01)

            ref = a.monitor(trapper.pid, dead)
            a.link(trapper.pid, other)
            await trio.sleep(0.01)
            a.unlink(trapper.pid, other)
            await trio.sleep(0.01)
            a.send(other, "crash now")
            await trio.sleep(0.1)

            assert [Down(ref, dead, NoProc())] == trapper.got


class TestOrdering:
    async def test_fifo_per_pair_under_random_delays_and_reordering_across_pairs(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """Each sender's messages arrive in order; senders on different nodes interleave."""
        overtaken = 0
        for seed in range(20):
            async with cluster("a", "b", "c", seed=seed) as (net, (a, b, c)):
                inbox = Inbox(b, name="inbox")
                sent: list[tuple[str, int]] = []

                async def sender(node: Node, tag: str, sent: list[tuple[str, int]]) -> None:
                    for i in range(40):
                        sent.append((tag, i))
                        node.send(Name("inbox", "b"), (tag, i))
                        if i % 3 == 0:
                            await trio.sleep(0.0002)

                a.spawn(sender, a, "a", sent)
                c.spawn(sender, c, "c", sent)
                await trio.sleep(0.5)

                got = inbox.got
                assert sorted(got) == sorted(sent)
                for tag in "ac":
                    assert [m for m in got if m[0] == tag] == [m for m in sent if m[0] == tag]
                overtaken += got != sent
                assert net.dropped == 0

        assert overtaken > 10  # across pairs the seeded network reorders freely

    async def test_same_instant_deliveries_are_chosen_by_the_seed(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """With no jitter, packets due together are delivered in a seeded order."""
        orders = set()
        for seed in range(8):
            async with cluster("a", "b", "c", "d", seed=seed, jitter=0.0) as (_n, nodes):
                a, b, c, d = nodes
                inbox = Inbox(a, name="inbox")
                for n in (b, c, d):
                    n.send(Name("inbox", "a"), "hello")  # connect first
                await trio.sleep(0.1)
                inbox.got.clear()
                for n in (b, c, d):
                    n.send(Name("inbox", "a"), n.name)
                await trio.sleep(0.1)
                orders.add(tuple(inbox.got))

        assert len(orders) > 1


class TestPartitions:
    async def test_call_to_partitioned_node_fails_at_detect_after(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """A call across a new partition fails with NoConnection at exactly detect_after."""
        async with cluster("a", "b") as (net, (a, b)):
            await b.start_server(Echo, name="echo")
            assert await a.call(Name("echo", "b"), 1) == 1

            t0 = trio.current_time()
            net.partition(["a"], ["b"])
            with pytest.raises(ServerExited) as info:
                await a.call(Name("echo", "b"), 2, timeout=10)

            assert NoConnection("b") == info.value.reason
            assert trio.current_time() == t0 + DETECT
            assert not net.is_connected("a", "b")

    async def test_first_call_to_an_unreachable_node_fails_at_detect_after(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """With no connection yet, the attempt itself waits detect_after, then fails."""
        async with cluster("a", "b") as (net, (a, b)):
            await b.start_server(Echo, name="echo")
            net.partition("a", "b")
            t0 = trio.current_time()

            with pytest.raises(ServerExited) as info:
                await a.call(Name("echo", "b"), 1, timeout=10)

            assert NoConnection("b") == info.value.reason
            assert trio.current_time() == t0 + DETECT

    async def test_links_across_a_partition_fire_noconnection_on_both_sides(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """Both halves of a cross-node link get NoConnection when the connection breaks."""
        async with cluster("a", "b") as (net, (a, b)):
            pa = Inbox(a, trap_exit=True)
            pb = Inbox(b, trap_exit=True)
            a.link(pa.pid, pb.pid)
            await trio.sleep(0.01)

            t0 = trio.current_time()
            net.partition("a", "b")
            ea = await pa.wait_for(is_exit)
            eb = await pb.wait_for(is_exit)

            assert Exit(pb.pid, NoConnection("b")) == ea
            assert Exit(pa.pid, NoConnection("a")) == eb
            assert trio.current_time() == t0 + DETECT

    async def test_short_partition_delays_but_loses_nothing(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """Healed before detect_after, a cut only delays packets: all arrive, in order."""
        async with cluster("a", "b") as (net, (a, b)):
            inbox = Inbox(b, name="inbox", trap_exit=True)
            a.send(Name("inbox", "b"), "before")
            await trio.sleep(0.01)

            net.partition("a", "b")
            for i in range(5):
                a.send(inbox.pid, i)
            await trio.sleep(DETECT - 0.1)
            assert inbox.got == ["before"]
            net.heal()
            await trio.sleep(0.01)

            assert inbox.got == ["before", 0, 1, 2, 3, 4]
            assert (net.dropped, net.breaks) == (0, 0)
            assert net.is_connected("a", "b")

    async def test_heal_then_reconnect_on_demand(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """After a broken connection and heal, the next call makes a new connection."""
        async with cluster("a", "b", trace=True) as (net, (a, b)):
            await b.start_server(Echo, name="echo")
            assert await a.call(Name("echo", "b"), 1) == 1
            net.partition("a", "b")
            await trio.sleep(DETECT + 0.1)
            assert not net.is_connected("a", "b")

            net.heal()
            assert await a.call(Name("echo", "b"), 2) == 2

            assert net.trace is not None
            assert [e.kind for e in net.trace if e.kind != "deliver"] == [
                "connect",
                "break",
                "connect",
            ]
            assert net.is_connected("b", "a")

    async def test_one_way_partition_breaks_both_sides_after_detect_after(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """a->b cut: b->a still delivers until the connection breaks, then both see it."""
        async with cluster("a", "b") as (net, (a, b)):
            ia = Inbox(a, name="ia", trap_exit=True)
            ib = Inbox(b, name="ib", trap_exit=True)
            a.link(ia.pid, ib.pid)
            await trio.sleep(0.01)

            t0 = trio.current_time()
            net.partition_one_way("a", "b")
            a.send(ib.pid, "lost")
            b.send(ia.pid, "arrives")
            await trio.sleep(0.1)
            assert ia.got == ["arrives"]
            ea = await ia.wait_for(is_exit)
            eb = await ib.wait_for(is_exit)

            assert trio.current_time() == t0 + DETECT
            assert Exit(ib.pid, NoConnection("b")) == ea
            assert Exit(ia.pid, NoConnection("a")) == eb
            assert "lost" not in ib.got
            assert net.is_cut("a", "b")
            assert not net.is_cut("b", "a")

    async def test_disconnect_breaks_at_once(self, autojump_clock: trio.testing.MockClock) -> None:
        """disconnect() is a reset: monitors fire now, and the next message reconnects."""
        async with cluster("a", "b") as (net, (a, b)):
            target = Inbox(b, name="t")
            watcher = Inbox(a)
            ref = a.monitor(watcher.pid, target.pid)
            await trio.sleep(0.01)
            t0 = trio.current_time()

            assert net.disconnect("a", "b")
            down = await watcher.wait_for(is_down)

            assert Down(ref, target.pid, NoConnection("b")) == down
            assert trio.current_time() == t0
            assert not net.disconnect("a", "b")
            a.send(Name("t", "b"), "again")
            await trio.sleep(0.01)
            assert target.got == ["again"]


class TestNodesComingAndGoing:
    async def test_unknown_node_dead_letter_and_noconnection_at_once(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """A name never attached: a dead letter, and monitors/links fire at the same instant."""
        async with cluster("a") as (_net, (a,)):
            watcher = Inbox(a, trap_exit=True)
            ghost = Pid("ghost", 1, 1)
            t0 = trio.current_time()

            a.send(ghost, "lost")
            ref = a.monitor(watcher.pid, ghost)
            a.link(watcher.pid, ghost)
            down = await watcher.wait_for(is_down)
            exit_msg = await watcher.wait_for(is_exit)

            assert a.dead_letters == 1
            assert Down(ref, ghost, NoConnection("ghost")) == down
            assert Exit(ghost, NoConnection("ghost")) == exit_msg
            assert trio.current_time() == t0

    async def test_crash_fires_monitors_on_both_sides_after_detect_after(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """A crashed node is cut off: each side's monitors see NoConnection of the other."""
        async with cluster("a", "b") as (net, (a, b)):
            pa, pb = Inbox(a), Inbox(b)
            ref_a = a.monitor(pa.pid, pb.pid)
            ref_b = b.monitor(pb.pid, pa.pid)
            await trio.sleep(0.01)
            t0 = trio.current_time()

            net.crash("b")
            a.send(pb.pid, "never arrives")
            da = await pa.wait_for(is_down)
            db = await pb.wait_for(is_down)

            assert Down(ref_a, pb.pid, NoConnection("b")) == da
            assert Down(ref_b, pa.pid, NoConnection("a")) == db
            assert trio.current_time() == t0 + DETECT
            assert "never arrives" not in pb.got
            assert net.dropped >= 1

    async def test_restarted_node_does_not_get_messages_for_old_pids(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """After a restart (new creation), old pids are dead letters; new ones work."""
        net = LocalNetwork(3, detect_after=DETECT)
        async with trio.open_nursery() as nursery:
            await nursery.start(net.run)
            async with Node("a", creation=1) as a:
                net.attach(a)
                async with Node("b", creation=2) as b_old:
                    net.attach(b_old)
                    old = Inbox(b_old, name="inbox")
                    a.send(old.pid, "hello old")
                    await trio.sleep(0.01)
                    assert old.got == ["hello old"]
                    net.crash("b")
                async with Node("b", creation=3) as b_new:
                    net.attach(b_new)
                    new = Inbox(b_new, name="inbox")
                    assert old.pid.serial == new.pid.serial  # same serial, other creation
                    await trio.sleep(DETECT + 0.01)  # the old connection has broken by now

                    a.send(Name("inbox", "b"), "by name")  # reconnects, to the new node
                    a.send(old.pid, "old pid, sent while connecting")
                    await trio.sleep(0.01)
                    a.send(old.pid, "old pid, once connected")
                    a.send(new.pid, "new pid")
                    await trio.sleep(0.01)

                    assert new.got == ["by name", "new pid"]
                    assert b_new.dead_letters == 1  # the one sent before the handshake
                    assert a.dead_letters == 1  # refused by a: the creation is known
            nursery.cancel_scope.cancel()

    async def test_new_incarnation_replaces_the_dead_connection_before_detect_after(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """A peer learns of the restart when the new node connects, not at the timeout."""
        net = LocalNetwork(4, detect_after=DETECT)
        async with trio.open_nursery() as nursery:
            await nursery.start(net.run)
            async with Node("a", creation=1) as a:
                net.attach(a)
                watcher = Inbox(a, name="watcher")
                async with Node("b", creation=2) as b_old:
                    net.attach(b_old)
                    target = Inbox(b_old)
                    ref = a.monitor(watcher.pid, target.pid)
                    await trio.sleep(0.01)
                    t0 = trio.current_time()
                    net.crash("b")
                async with Node("b", creation=3) as b_new:
                    net.attach(b_new)
                    b_new.send(Name("watcher", "a"), "b is back")
                    down = await watcher.wait_for(is_down)

                    assert Down(ref, target.pid, NoConnection("b")) == down
                    assert trio.current_time() < t0 + DETECT
                    await watcher.wait_for(lambda m: m == "b is back")
            nursery.cancel_scope.cancel()

    async def test_stopping_node_is_down_at_once_and_then_refuses(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """A stopping node's processes end before its connections close, so a peer's monitor
        gets the real reason within a packet delay; a call after that fails with the goodbye."""
        net = LocalNetwork(5, detect_after=DETECT)
        async with trio.open_nursery() as nursery:
            await nursery.start(net.run)
            async with Node("a", creation=1) as a:
                net.attach(a)
                watcher = Inbox(a)
                async with Node("b", creation=2) as b:
                    net.attach(b)
                    await b.start_server(Echo, name="echo")
                    target = Inbox(b)
                    ref = a.monitor(watcher.pid, target.pid)
                    await trio.sleep(0.01)
                    stopped = trio.current_time()
                down = await watcher.wait_for(is_down)
                assert trio.current_time() - stopped < 0.01
                t0 = trio.current_time()
                with pytest.raises(ServerExited) as info:
                    await a.call(Name("echo", "b"), 1)

                assert Down(ref, target.pid, Shutdown("node_stopped")) == down
                assert NoConnection("b") == info.value.reason
                assert trio.current_time() - t0 < 0.01  # the goodbye, not a timeout
            nursery.cancel_scope.cancel()


class TestBackpressureAndWire:
    async def test_full_mailbox_holds_only_its_pair_and_loses_nothing(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """A full mailbox holds a->b, in order; c->b keeps flowing meanwhile."""
        async with cluster("a", "b", "c") as (net, (a, b, c)):
            taken: list[Any] = []
            gate = trio.Event()

            async def slow() -> None:
                await gate.wait()
                while True:
                    taken.append(await runtime.receive())

            slow_pid = b.spawn(slow, name="slow", mailbox_bound=2)
            fast = Inbox(b, name="fast")
            for i in range(10):
                a.send(slow_pid, i)
            a.send(Name("fast", "b"), "from a, queued behind")
            c.send(Name("fast", "b"), "from c")
            await trio.sleep(0.1)

            assert fast.got == ["from c"]
            gate.set()
            await trio.sleep(0.1)

            assert taken == list(range(10))
            assert fast.got == ["from c", "from a, queued behind"]
            assert net.dropped == 0

    async def test_peer_busy_and_send_wait(self, autojump_clock: trio.testing.MockClock) -> None:
        """Past max_queue packets send raises PeerBusy; send_wait waits for room."""
        async with cluster("a", "b", max_queue=3) as (net, (a, b)):
            inbox = Inbox(b, name="inbox")
            net.partition("a", "b")  # nothing drains for now
            for i in range(4):
                a.send(inbox.pid, i)

            with pytest.raises(PeerBusy):
                a.send(inbox.pid, 4)
            done = trio.Event()

            async def waiter() -> None:
                await a.send_wait(inbox.pid, 4)
                done.set()

            async with trio.open_nursery() as nursery:
                nursery.start_soon(waiter)
                await trio.sleep(0.1)
                assert not done.is_set()
                net.heal()
            await trio.sleep(0.01)

            assert inbox.got == [0, 1, 2, 3, 4]

    async def test_unregistered_message_raises_in_sender_and_bad_reason_travels_as_repr(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """The wire rules hold: Unregistered in the sender; a linked exit goes as its repr."""
        async with cluster("a", "b") as (_net, (a, b)):
            inbox = Inbox(b, trap_exit=True)
            with pytest.raises(Unregistered):
                a.send(inbox.pid, Unsendable(1))

            async def die_oddly() -> None:
                await runtime.receive()
                runtime.exit(Abnormal(Unsendable(2)))

            odd = a.spawn(die_oddly)
            b.link(inbox.pid, odd)
            await trio.sleep(0.01)
            a.send(odd, "go")
            exit_msg = await inbox.wait_for(is_exit)

            assert Exit(odd, Abnormal(repr(Abnormal(Unsendable(2))))) == exit_msg

    async def test_encode_false_passes_objects_as_they_are(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """Without encoding, any object crosses, by reference."""
        async with cluster("a", "b", encode=False) as (_net, (a, b)):
            inbox = Inbox(b)
            payload = [Unsendable(1)]
            a.send(inbox.pid, payload)
            await trio.sleep(0.01)

            assert inbox.got[0] is payload


def _determinism_run(seed: int) -> list[TraceEvent]:
    """One scenario with traffic on every pair, a partition and a heal; its trace."""
    out: list[TraceEvent] = []

    async def main() -> None:
        net = LocalNetwork(seed, detect_after=DETECT, trace=True)
        async with trio.open_nursery() as nursery:
            await nursery.start(net.run)
            async with AsyncExitStack() as stack:
                names = ["a", "b", "c"]
                nodes = []
                for i, n in enumerate(names):
                    node = await stack.enter_async_context(Node(n, creation=i + 1))
                    net.attach(node)
                    Inbox(node, name="inbox", trap_exit=True)
                    nodes.append(node)

                async def talk(node: Node, peer: str, start: float) -> None:
                    await trio.sleep(start)
                    for i in range(30):
                        node.send(Name("inbox", peer), (node.name, i))
                        await trio.sleep(0.0004 * (1 + i % 4))

                for k, node in enumerate(nodes):
                    for j, peer in enumerate(names):
                        if peer != node.name:
                            node.spawn(talk, node, peer, 0.0001 * (3 * k + j))
                await trio.sleep(0.01)
                net.partition(["a"], ["b", "c"])
                await trio.sleep(0.7)
                net.heal()
                for node in nodes:
                    node.spawn(talk, node, "a" if node.name != "a" else "b", 0.0)
                await trio.sleep(0.2)
                assert net.trace is not None
                out.extend(net.trace)
            nursery.cancel_scope.cancel()

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
    return out


def test_same_seed_gives_the_same_trace() -> None:
    """Two runs with one seed deliver the same packets in the same order at the same times."""
    first = _determinism_run(11)
    again = _determinism_run(11)
    other = _determinism_run(12)

    assert first == again
    assert [e.kind for e in first].count("break") == 2  # a-b and a-c broke
    assert first != other


class TestSupervision:
    async def test_supervised_worker_sees_the_right_down_from_another_node(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """A worker under a supervisor on a monitors a service on b: crash, then partition."""
        reports: list[tuple[float, ExitReason]] = []
        reported = trio.Event()

        async def watcher() -> None:
            nonlocal reported
            while True:
                ref = runtime.monitor(Name("svc", "b"))
                down = await runtime.receive(down_of(ref))
                if isinstance(down.reason, NoProc):
                    await trio.sleep(0.05)  # not (re)started yet: look again
                    continue
                reports.append((trio.current_time(), down.reason))
                reported.set()
                runtime.exit(Abnormal("svc_lost"))

        async with cluster("b", "a") as (net, (b, a)):  # a innermost: the current node
            b.spawn(crash_on_message, name="svc")
            sup = await start_supervisor(
                [worker_spec("watcher", watcher)], SupFlags(intensity=10), node=a
            )
            [first] = await which_children(sup)
            await trio.sleep(0.01)

            a.send(Name("svc", "b"), "crash")
            await reported.wait()
            reported = trio.Event()
            b.spawn(crash_on_message, name="svc")
            await trio.sleep(0.2)
            [second] = await which_children(sup)
            t0 = trio.current_time()
            net.partition("a", "b")
            await reported.wait()
            net.heal()
            await trio.sleep(0.2)
            [third] = await which_children(sup)

            assert isinstance(reports[0][1], Crashed)
            assert reports[0][1].message == "boom"
            assert (t0 + DETECT, NoConnection("b")) == reports[1]
            assert len(reports) == 2
            assert len({first.pid, second.pid, third.pid}) == 3
            assert third.pid is not None
            assert a.is_alive(third.pid)


def test_bad_parameters_are_refused() -> None:
    """latency must be positive, detect_after positive, max_queue at least 1."""
    with pytest.raises(ValueError, match="latency"):
        LocalNetwork(latency=0)
    with pytest.raises(ValueError, match="detect_after"):
        LocalNetwork(detect_after=0)
    with pytest.raises(ValueError, match="max_queue"):
        LocalNetwork(max_queue=0)
    with pytest.raises(ValueError, match="jitter"):
        LocalNetwork(jitter=-1)
    assert LocalNetwork(random.Random(1)).nodes == []


class _Applied:
    """A Raft state machine that records what it applied."""

    def __init__(self) -> None:
        self.applied: list[bytes] = []

    def apply(self, entry: Entry) -> object:
        if entry.kind is EntryKind.NORMAL:
            self.applied.append(entry.data)
        return len(self.applied)

    def snapshot(self) -> bytes:
        return b"\n".join(self.applied)

    def restore(self, data: bytes) -> None:
        self.applied = data.split(b"\n") if data else []


async def test_raft_over_dist_transport_elects_and_survives_a_leader_partition(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Three Raft members over DistTransport elect, replicate, and re-elect when cut off."""
    names = ["r1", "r2", "r3"]
    root = random.Random(21)
    async with cluster(*names, seed=21) as (net, nodes), trio.open_nursery() as nursery:
        drivers: list[RaftDriver] = []
        logs: list[_Applied] = []
        for node in nodes:
            disk = SimDisk(node.name, names, random.Random(root.getrandbits(64)))
            transport = DistTransport(node)
            sm = _Applied()
            cfg = raft_config(node.name, names, rng=random.Random(root.getrandbits(64)))
            driver = RaftDriver(cfg, disk.open(), transport, sm, run_io=disk.run_io)
            transport.serve(driver)
            await nursery.start(driver.run)
            drivers.append(driver)
            logs.append(sm)

        leader = await drivers[0].wait_for_leader()
        lead = drivers[names.index(leader)]
        assert [await lead.propose(f"c{i}".encode(), timeout=5) for i in range(5)] == [
            1,
            2,
            3,
            4,
            5,
        ]
        net.partition([leader], [n for n in names if n != leader])
        rest = [d for n, d in zip(names, drivers, strict=True) if n != leader]
        st = await rest[0].wait_for(lambda s: s.leader not in (None, leader), timeout=5)
        new = st.leader
        assert new is not None
        assert await drivers[names.index(new)].propose(b"after", timeout=5) == 6
        net.heal()
        for d in drivers:
            await d.read_index(timeout=5)

        assert all(sm.applied == [b"c0", b"c1", b"c2", b"c3", b"c4", b"after"] for sm in logs)
        for d in drivers:
            await d.stop()
        nursery.cancel_scope.cancel()
