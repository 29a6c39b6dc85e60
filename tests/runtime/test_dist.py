"""Distribution: several nodes in one process over real loopback TCP, local semantics.

Each test starts fresh nodes on ``127.0.0.1`` port 0 with the real clock; every wait is
bounded by ``BOUND`` seconds and no assertion depends on how fast something happened.
"""

from __future__ import annotations

from contextlib import AsyncExitStack
from typing import Any

import anyio
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from structlog.testing import capture_logs

import runtime
from runtime import Crashed, Down, Exit, Kill, Killed, NoProc, ServerExited
from runtime.errors import AuthenticationFailed, PeerBusy, Unregistered
from runtime.pid import Name, Pid
from runtime.reasons import Abnormal, NoConnection, Shutdown
from runtime.wire import Registry
from tests.runtime.dist_helpers import (
    BOUND,
    OTHER_SECRET,
    Echo,
    Inbox,
    Member,
    Ping,
    Secret,
    cluster,
    make_tls_files,
    start_member,
    wait_until,
)


async def idle() -> None:
    """A process that waits forever."""
    await runtime.receive()


async def crash_on_message(text: str) -> None:
    """A process that crashes with RuntimeError(text) at its first message."""
    await runtime.receive()
    raise RuntimeError(text)


async def exit_on_message() -> None:
    """A process that exits with the reason it receives."""
    reason = await runtime.receive()
    runtime.exit(reason)


async def exit_unsendable_on_message() -> None:
    """A process that exits, at its first message, with a reason that cannot travel."""
    await runtime.receive()
    runtime.exit(Abnormal(Secret(1)))


def is_down(m: object) -> bool:
    """True for a Down message."""
    return isinstance(m, Down)


def is_exit(m: object) -> bool:
    """True for an Exit message."""
    return isinstance(m, Exit)


async def round_trip(frm: Member, to: Member, value: object = 42) -> None:
    """A call from *frm* to the echo server on *to* comes back."""
    with anyio.fail_after(BOUND):
        assert await frm.node.call(Name("echo", to.name), ("echo", value)) == value


class TestConnect:
    async def test_connect_returns_and_both_sides_see_the_peer(self) -> None:
        """connect() returns the peer's name at once; both nodes list each other."""
        async with AsyncExitStack() as stack:
            a = await start_member(stack, "a@test")
            b = await start_member(stack, "b@test")
            with anyio.fail_after(BOUND):
                name = await a.dist.connect(*b.address)
                await b.dist.wait_connected("a@test")

            assert name == "b@test"
            assert a.dist.peers() == ["b@test"]
            assert b.dist.peers() == ["a@test"]
            assert await a.dist.connect(*b.address, name="b@test") == "b@test"
            await b.node.start_server(Echo, name="echo")
            await round_trip(a, b)

    async def test_first_send_connects_on_demand(self) -> None:
        """With only add_peer, the first message to a node dials it and is delivered."""
        async with cluster("a@test", "b@test", connect=False) as (a, b):
            inbox = Inbox(b.node, name="inbox")
            assert not a.dist.is_connected("b@test")

            a.node.send(Name("inbox", "b@test"), "hello")
            a.node.send(inbox.pid, "again")

            assert await inbox.wait_count(2) == ["hello", "again"]
            assert a.dist.is_connected("b@test")
            await wait_until(lambda: b.dist.is_connected("a@test"))

    async def test_unknown_node_is_dead_letter_and_noconnection(self) -> None:
        """A node with no address: messages are dead letters, monitors and links fire."""
        async with cluster("a@test") as (a,):
            watcher = Inbox(a.node, trap_exit=True)
            ghost = Pid("ghost@test", 1, 1)

            a.node.send(ghost, "lost")
            ref = a.node.monitor(watcher.pid, ghost)
            a.node.link(watcher.pid, ghost)

            assert a.node.dead_letters == 1
            down = await watcher.wait_for(is_down)
            assert Down(ref, ghost, NoConnection("ghost@test")) == down
            exit_msg = await watcher.wait_for(is_exit)
            assert Exit(ghost, NoConnection("ghost@test")) == exit_msg

    async def test_failed_connect_fires_noconnection(self) -> None:
        """A known address where nobody listens: links and monitors fire NoConnection."""
        async with AsyncExitStack() as stack:
            a = await start_member(stack, "a@test")
            b = await start_member(stack, "b@test")
            dead_address = b.address
            b.dist.close()  # nobody listens there any more
            await _wait_port_closed(dead_address)
            a.dist.add_peer("b@test", *dead_address)
            watcher = Inbox(a.node)
            target = Pid("b@test", 1, b.node.creation)

            ref = a.node.monitor(watcher.pid, target)

            assert Down(ref, target, NoConnection("b@test")) == await watcher.wait_for(is_down)
            assert not a.dist.is_connected("b@test")

    async def test_wrong_secret_connect_fails(self) -> None:
        """Dialling a node with another secret raises AuthenticationFailed; nothing connects."""
        async with AsyncExitStack() as stack:
            a = await start_member(stack, "a@test")
            b = await start_member(stack, "b@test", secret=OTHER_SECRET)
            with pytest.raises(AuthenticationFailed, match="wrong_secret"):
                await a.dist.connect(*b.address, name="b@test")

            assert a.dist.peers() == []
            assert b.dist.peers() == []
            assert b.dist.rejected_connections == 1

    async def test_simultaneous_connects_converge(self) -> None:
        """Both nodes dialling at once end with one working connection and no noconnection.

        The second dial starts at a range of offsets after the first, so it meets the
        first in each phase of its handshake.
        """
        for i in range(24):
            with capture_logs() as logs:
                async with cluster("a@test", "b@test", connect=False) as (a, b):
                    watch_a, watch_b = Inbox(a.node), Inbox(b.node)
                    ta, tb = Inbox(a.node), Inbox(b.node)
                    first, second = (a, b) if i % 2 else (b, a)
                    first.node.monitor(Inbox(first.node).pid, Inbox(second.node).pid)
                    await anyio.sleep(i // 2 * 0.0003)  # not a wait: it varies the overlap
                    a.node.monitor(watch_a.pid, tb.pid)  # dials b on demand, if not yet
                    b.node.monitor(watch_b.pid, ta.pid)

                    with anyio.fail_after(BOUND):
                        await a.dist.wait_connected("b@test")
                        await b.dist.wait_connected("a@test")
                    a.node.send(tb.pid, "from a")
                    b.node.send(ta.pid, "from b")

                    assert await tb.wait_count(1) == ["from a"]
                    assert await ta.wait_count(1) == ["from b"]
                    assert a.dist.is_connected("b@test")
                    assert b.dist.is_connected("a@test")
                    assert watch_a.messages == []
                    assert watch_b.messages == []
                    closed = [e for e in logs if e["event"] in ("connection_closed", "node_down")]
                    assert closed == []

    async def test_close_makes_the_node_local_only(self) -> None:
        """After close(), a message to another node is a dead letter and links fire at once."""
        async with cluster("a@test", "b@test") as (a, b):
            watcher = Inbox(a.node, trap_exit=True)
            remote = Inbox(b.node).pid
            a.dist.close()
            a.dist.close()  # idempotent

            a.node.send(remote, "nope")
            a.node.link(watcher.pid, remote)

            assert a.node.dead_letters == 1
            assert Exit(remote, NoConnection("b@test")) == await watcher.wait_for(is_exit)


class TestMessages:
    async def test_send_by_pid_and_by_name(self) -> None:
        """Messages of every wire type reach a remote pid and a remote registered name."""
        async with cluster("a@test", "b@test") as (a, b):
            inbox = Inbox(b.node, name="inbox")
            values: list[Any] = [None, 1, -2.5, "s", b"b", [1, (2, 3)], {"k": Ping(1)}, inbox.pid]

            for v in values:
                a.node.send(inbox.pid, v)
            a.node.send(Name("inbox", "b@test"), "by name")

            assert [*values, "by name"] == await inbox.wait_count(len(values) + 1)

    async def test_unregistered_class_raises_in_sender_and_connection_survives(self) -> None:
        """An unregistered class fails in the sender with Unregistered; later sends arrive."""
        async with cluster("a@test", "b@test") as (a, b):
            inbox = Inbox(b.node)

            a.node.send(inbox.pid, 1)
            with pytest.raises(Unregistered):
                a.node.send(inbox.pid, Secret(2))
            with pytest.raises(Unregistered):
                await a.node.send_wait(inbox.pid, [Secret(2)])
            a.node.send(inbox.pid, 3)

            assert await inbox.wait_count(2) == [1, 3]
            assert a.dist.is_connected("b@test")

    async def test_send_wait_of_scalars_arrives_in_order_and_refuses_huge_ints(self) -> None:
        """send_wait carries every scalar in order; an int beyond 64 bits is the sender's
        ValueError, and the connection survives it."""
        async with cluster("a@test", "b@test") as (a, b):
            inbox = Inbox(b.node)
            values: list[Any] = [0, 2**64 - 1, -(2**63), 1.5, True, None, "s", b"b"]

            for v in values:
                await a.node.send_wait(inbox.pid, v)
            with pytest.raises(ValueError, match="64 bits"):
                await a.node.send_wait(inbox.pid, 2**64)
            await a.node.send_wait(inbox.pid, "after")

            assert [*values, "after"] == await inbox.wait_count(len(values) + 1)
            assert a.dist.is_connected("b@test")

    async def test_unknown_remote_pid_is_a_dead_letter_on_the_receiver(self) -> None:
        """A message to a remote pid that does not exist is counted where it lands."""
        async with cluster("a@test", "b@test") as (a, b):
            inbox = Inbox(b.node)

            a.node.send(Pid("b@test", 999, b.node.creation), "nobody")
            a.node.send(inbox.pid, "somebody")

            assert await inbox.wait_count(1) == ["somebody"]
            assert b.node.dead_letters == 1

    async def test_private_registry_carries_runtime_messages(self) -> None:
        """With a private registry, calls still work and only its classes travel."""
        reg = Registry()
        reg.register(Secret, "tests.dist.Secret")
        async with cluster("a@test", "b@test", registry=reg) as (a, b):
            await b.node.start_server(Echo, name="echo")
            inbox = Inbox(b.node)

            a.node.send(inbox.pid, Secret(1))
            with pytest.raises(Unregistered):
                a.node.send(inbox.pid, Ping(1))  # only in the default registry
            await round_trip(a, b, Secret(2))

            assert [Secret(1)] == await inbox.wait_count(1)

    @settings(
        max_examples=12,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
    )
    @given(
        plan=st.lists(
            st.lists(st.tuples(st.booleans(), st.integers(0, 3)), max_size=40),
            min_size=1,
            max_size=4,
        )
    )
    async def test_fifo_per_pair_across_nodes(self, plan: list[list[tuple[bool, int]]]) -> None:
        """Several senders on one node to one receiver on another: each pair stays FIFO."""
        async with cluster("a@test", "b@test") as (a, b):
            receiver = Inbox(b.node)
            done: list[int] = []

            async def sender(i: int, steps: list[tuple[bool, int]]) -> None:
                for seq, (wait, yields) in enumerate(steps):
                    if wait:
                        await runtime.send_wait(receiver.pid, (i, seq))
                    else:
                        runtime.send(receiver.pid, (i, seq))
                    for _ in range(yields):
                        await anyio.lowlevel.checkpoint()
                done.append(i)

            for i, steps in enumerate(plan):
                a.node.spawn(sender, i, steps)
            total = sum(len(s) for s in plan)

            got = await receiver.wait_count(total)
            for i, steps in enumerate(plan):
                assert [(i, s) for s in range(len(steps))] == [m for m in got if m[0] == i]
            await wait_until(lambda: len(done) == len(plan))

    @settings(
        max_examples=15,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
    )
    @given(
        steps=st.lists(
            st.tuples(
                st.sampled_from(["pid", "other", "name"]),
                st.sampled_from(["wait", "send", "link"]),
                st.sampled_from(["int", "float", "none", "str", "tuple", "big"]),
            ),
            max_size=60,
        ),
        repeat=st.integers(1, 300),
    )
    async def test_runs_of_sends_keep_order_whatever_breaks_them(
        self, steps: list[tuple[str, str, str]], repeat: int
    ) -> None:
        """Sends to a remote pid travel in SEND_RUN frames, which other frames (a send to
        another pid or a name, a link, a message too big for the run) and the writer
        end: every message still arrives once, in order, for each receiver."""
        async with cluster("a@test", "b@test") as (a, b):
            first, other = Inbox(b.node), Inbox(b.node, name="named")
            sent: dict[Pid, list[Any]] = {first.pid: [], other.pid: []}
            done = anyio.Event()

            async def sender() -> None:
                helper = a.node.spawn(lambda: anyio.sleep_forever())
                for i, (to, how, kind) in enumerate(steps):
                    pid = first.pid if to == "pid" else other.pid
                    dest: Any = Name("named", "b@test") if to == "name" else pid
                    for j in range(repeat if kind in ("int", "float") else 1):
                        msg: Any = {
                            "int": i * 1000 + j,
                            "float": i + j / 1000,
                            "none": None,
                            "str": f"m{i}",
                            "tuple": (i, [j]),
                            "big": b"x" * 70_000 + bytes([i]),
                        }[kind]
                        if how == "send":
                            runtime.send(dest, msg)
                        else:
                            await runtime.send_wait(dest, msg)
                        sent[pid].append(msg)
                    if how == "link":
                        runtime.link(first.pid)
                        runtime.unlink(first.pid)
                        a.node.link(helper, other.pid)
                done.set()

            a.node.spawn(sender)
            await done.wait()
            for inbox in (first, other):
                expected = sent[inbox.pid]
                assert expected == await inbox.wait_count(len(expected))

    async def test_a_sender_that_kept_the_closed_layer_sends_as_the_node_does(self) -> None:
        """A process that sent to a remote pid keeps that path; once the distribution
        closes, its sends there are dead letters, as any node's without distribution."""
        async with cluster("a@test", "b@test") as (a, b):
            inbox = Inbox(b.node)
            step = anyio.Event()
            done = anyio.Event()

            async def sender() -> None:
                await runtime.send_wait(inbox.pid, 1)
                runtime.send(inbox.pid, 2)
                await step.wait()
                await runtime.send_wait(inbox.pid, 3)
                runtime.send(inbox.pid, 4)
                done.set()

            a.node.spawn(sender)
            assert await inbox.wait_count(2) == [1, 2]
            a.dist.close()
            step.set()
            await done.wait()

            assert a.node.dead_letters == 2
            assert inbox.messages == [1, 2]


class TestCalls:
    async def test_call_and_cast_across_nodes(self) -> None:
        """call returns the remote server's reply; a cast reaches it in order."""
        async with cluster("a@test", "b@test") as (a, b):
            pid = await b.node.start_server(Echo, name="echo")

            with anyio.fail_after(BOUND):
                assert pid == await a.node.call(Name("echo", "b@test"), "pid")
                assert Ping(7) == await a.node.call(pid, ("echo", Ping(7)))

    async def test_a_call_follows_the_run_of_sends_before_it(self) -> None:
        """Messages sent to a server (a SEND_RUN still open in the buffer) reach it
        before a call made right after them, from a process or from outside one."""

        class Counter(runtime.GenServer):
            async def init(self) -> None:
                self.seen: list[Any] = []

            async def handle_info(self, msg: Any) -> None:
                self.seen.append(msg)

            async def handle_call(self, request: Any, from_: Any) -> Any:
                return list(self.seen)

        async with cluster("a@test", "b@test") as (a, b):
            pid = await b.node.start_server(Counter)
            result: list[Any] = []

            async def caller() -> None:
                for i in range(50):
                    await runtime.send_wait(pid, i)
                result.append(await runtime.call(pid, "seen"))

            a.node.spawn(caller)
            await wait_until(lambda: bool(result))
            assert list(range(50)) == result[0]
            for i in range(50, 60):
                a.node.send(pid, i)
            with anyio.fail_after(BOUND):
                assert list(range(60)) == await a.node.call(pid, "seen")

    async def test_call_to_server_crashing_mid_call_fails_at_once(self) -> None:
        """A remote server that crashes before replying fails the call with its reason."""
        async with cluster("a@test", "b@test") as (a, b):
            pid = await b.node.start_server(Echo, name="echo")
            result: list[BaseException] = []

            async def caller(notify: Pid) -> None:
                try:
                    await runtime.call(pid, ("hold", notify), timeout=3600)
                except ServerExited as e:
                    result.append(e)

            holding = Inbox(a.node)
            a.node.spawn(caller, holding.pid)
            await holding.wait_count(1)
            a.node.cast(pid, ("crash", "mid-call"))

            await wait_until(lambda: bool(result))
            reason = result[0].reason  # type: ignore[attr-defined]
            assert isinstance(reason, Crashed)
            assert (reason.kind, reason.message) == ("RuntimeError", "mid-call")

    async def test_concurrent_calls_from_many_processes_are_all_answered(self) -> None:
        """Many processes calling at once each get their own replies, in order (the
        first write of a batch goes out directly, the rest through the writer)."""
        async with cluster("a@test", "b@test") as (a, b):
            pid = await b.node.start_server(Echo, name="echo")
            answers: dict[int, list[Any]] = {}

            async def caller(k: int) -> None:
                for i in range(20):
                    answers.setdefault(k, []).append(await runtime.call(pid, ("echo", (k, i))))

            for k in range(30):
                a.node.spawn(caller, k)
            await wait_until(lambda: sum(map(len, answers.values())) == 600)

            assert {k: [(k, i) for i in range(20)] for k in range(30)} == answers

    async def test_calls_leave_no_monitor_on_the_server(self) -> None:
        """After calls end, the server holds none of their monitors: each DEMONITOR
        arrives, if not with a later frame, then with the next heartbeat."""
        async with cluster("a@test", "b@test", heartbeat_interval=0.05) as (a, b):
            pid = await b.node.start_server(Echo, name="echo")
            with anyio.fail_after(BOUND):
                for i in range(5):
                    assert i == await a.node.call(pid, ("echo", i))

            await wait_until(lambda: not b.node.process(pid).watchers)
            assert b.dist.is_connected("a@test")  # not dropped for silence meanwhile

    async def test_answered_calls_need_no_demonitor(self) -> None:
        """The server's node drops a call's monitor when it replies: none is left once
        the reply is in, before any later frame or heartbeat could carry a DEMONITOR."""
        async with cluster("a@test", "b@test") as (a, b):
            pid = await b.node.start_server(Echo, name="echo")
            with anyio.fail_after(BOUND):
                for i in range(5):
                    assert i == await a.node.call(pid, ("echo", i))
                    assert not b.node.process(pid).watchers
                assert pid == await a.node.call(Name("echo", "b@test"), "pid")

            assert not b.node.process(pid).watchers

    async def test_timed_out_call_drops_its_monitor_with_a_demonitor(self) -> None:
        """A call that timed out was not answered: its DEMONITOR removes the monitor."""
        async with cluster("a@test", "b@test", heartbeat_interval=0.05) as (a, b):
            pid = await b.node.start_server(Echo, name="echo")
            with anyio.fail_after(BOUND), pytest.raises(runtime.CallTimeout):
                await a.node.call(pid, ("hold", None), timeout=0.05)
            assert b.node.process(pid).watchers

            await wait_until(lambda: not b.node.process(pid).watchers)

    async def test_reply_from_another_process_drops_the_call_monitor(self) -> None:
        """A reply sent by a process other than the server ends the monitor too."""

        async def replier() -> None:
            from_, value = await runtime.receive()
            runtime.reply(from_, value)

        class Delegating(runtime.GenServer):
            async def handle_call(self, request: Any, from_: Any) -> Any:
                runtime.send(runtime.whereis("replier"), (from_, request))  # type: ignore[arg-type]
                return runtime.NOREPLY

        async with cluster("a@test", "b@test") as (a, b):
            b.node.spawn(replier, name="replier")
            pid = await b.node.start_server(Delegating)
            with anyio.fail_after(BOUND):
                assert await a.node.call(pid, "late") == "late"

            assert not b.node.process(pid).watchers

    async def test_call_to_unregistered_remote_name_is_noproc(self) -> None:
        """A call to a name nobody registered on the remote node fails with NoProc."""
        async with cluster("a@test", "b@test") as (a, _):
            with anyio.fail_after(BOUND), pytest.raises(ServerExited) as info:
                await a.node.call(Name("nobody", "b@test"), "hi", timeout=3600)

            assert NoProc() == info.value.reason


class TestLinks:
    async def test_linked_crash_kills_remote_partner_with_same_reason(self) -> None:
        """A crash on one node kills the linked process on the other, with the same reason."""
        async with cluster("a@test", "b@test") as (a, b):
            watcher = Inbox(a.node)
            partner = a.node.spawn(idle)
            crasher = b.node.spawn(crash_on_message, "boom")
            a.node.monitor(watcher.pid, partner)

            a.node.link(partner, crasher)
            a.node.send(crasher, "go")  # after the link, on the same connection

            down = await watcher.wait_for(is_down)
            assert isinstance(down.reason, Crashed)
            assert (down.reason.kind, down.reason.message) == ("RuntimeError", "boom")

    async def test_trapping_process_gets_exit_message(self) -> None:
        """A process trapping exits gets Exit(pid, reason) when its remote partner ends."""
        async with cluster("a@test", "b@test") as (a, b):
            trapper = Inbox(a.node, trap_exit=True)
            remote = b.node.spawn(exit_on_message)

            a.node.link(trapper.pid, remote)
            a.node.send(remote, Abnormal("bye"))

            assert Exit(remote, Abnormal("bye")) == await trapper.wait_for(is_exit)
            assert a.node.is_alive(trapper.pid)

    async def test_kill_is_untrappable_remotely(self) -> None:
        """exit(pid, Kill()) from another node ends even a trapping process, as Killed."""
        async with cluster("a@test", "b@test") as (a, b):
            victim = Inbox(b.node, trap_exit=True)
            watcher = Inbox(b.node)
            b.node.monitor(watcher.pid, victim.pid)

            a.node.exit(victim.pid, Abnormal("trapped"))
            a.node.exit(victim.pid, Kill())

            assert Killed() == (await watcher.wait_for(is_down)).reason
            assert [Exit(a.node.pid, Abnormal("trapped"))] == victim.messages

    async def test_link_to_dead_remote_pid_gives_noproc(self) -> None:
        """Linking to a remote pid that is gone delivers the exit signal NoProc."""
        async with cluster("a@test", "b@test") as (a, b):
            trapper = Inbox(a.node, trap_exit=True)
            dead = b.node.spawn(idle)
            b.node.exit(dead, Kill())
            await wait_until(lambda: not b.node.is_alive(dead))

            a.node.link(trapper.pid, dead)

            assert Exit(dead, NoProc()) == await trapper.wait_for(is_exit)

    async def test_unlink_stops_the_signal(self) -> None:
        """After unlink, the remote partner's crash no longer reaches the process."""
        async with cluster("a@test", "b@test") as (a, b):
            trapper = Inbox(a.node, trap_exit=True)
            remote = b.node.spawn(crash_on_message, "unlinked")
            probe = Inbox(a.node)
            a.node.link(trapper.pid, remote)
            a.node.unlink(trapper.pid, remote)
            ref = a.node.monitor(probe.pid, remote)

            a.node.send(remote, "go")

            down = await probe.wait_for(is_down)
            assert ref == down.ref
            assert trapper.messages == []

    async def test_exit_reason_that_cannot_travel_is_sent_as_its_repr(self) -> None:
        """A linked process ending with an unsendable reason: partners get its repr."""
        async with cluster("a@test", "b@test") as (a, b):
            trapper = Inbox(a.node, trap_exit=True)
            watcher = Inbox(a.node)
            remote = b.node.spawn(exit_unsendable_on_message)
            a.node.link(trapper.pid, remote)
            a.node.monitor(watcher.pid, remote)

            a.node.send(remote, "go")  # after the link and monitor, on one connection

            expected = Abnormal(repr(Abnormal(Secret(1))))
            assert Exit(remote, expected) == await trapper.wait_for(is_exit)
            assert expected == (await watcher.wait_for(is_down)).reason
            assert a.dist.is_connected("b@test")
            with pytest.raises(Unregistered):
                a.node.exit(Inbox(b.node).pid, Abnormal(Secret(2)))


class TestMonitors:
    async def test_monitor_dead_remote_pid_gives_noproc(self) -> None:
        """Monitoring a remote pid that is already dead delivers Down with NoProc."""
        async with cluster("a@test", "b@test") as (a, b):
            watcher = Inbox(a.node)
            dead = b.node.spawn(idle)
            b.node.exit(dead, Kill())
            await wait_until(lambda: not b.node.is_alive(dead))

            ref = a.node.monitor(watcher.pid, dead)

            assert Down(ref, dead, NoProc()) == await watcher.wait_for(is_down)

    async def test_monitor_remote_registered_name(self) -> None:
        """A monitor on Name(name, node) fires with the process's reason, naming the name."""
        async with cluster("a@test", "b@test") as (a, b):
            watcher = Inbox(a.node)
            b.node.spawn(exit_on_message, name="target")

            ref = a.node.monitor(watcher.pid, Name("target", "b@test"))
            a.node.send(Name("target", "b@test"), Abnormal("done"))

            down = await watcher.wait_for(is_down)
            assert Down(ref, Name("target", "b@test"), Abnormal("done")) == down

    async def test_monitor_unregistered_remote_name_gives_noproc(self) -> None:
        """A monitor on a name nobody registered there fires at once with NoProc."""
        async with cluster("a@test", "b@test") as (a, _):
            watcher = Inbox(a.node)

            ref = a.node.monitor(watcher.pid, Name("nobody", "b@test"))

            down = await watcher.wait_for(is_down)
            assert Down(ref, Name("nobody", "b@test"), NoProc()) == down

    async def test_monitor_remote_name_on_a_node_that_is_gone(self) -> None:
        """Losing the connection fires a name monitor with NoConnection, naming the name."""
        async with cluster("a@test", "b@test") as (a, b):
            watcher = Inbox(a.node)
            b.node.spawn(idle, name="target")
            ref = a.node.monitor(watcher.pid, Name("target", "b@test"))
            await wait_until(lambda: a.dist.is_connected("b@test"))

            b.dist.close()

            down = await watcher.wait_for(is_down)
            assert Down(ref, Name("target", "b@test"), NoConnection("b@test")) == down

    async def test_exit_and_wait_across_nodes(self) -> None:
        """exit_and_wait ends a remote process and returns its reason; a lost node
        answers NoConnection rather than leaving the caller waiting."""
        async with cluster("a@test", "b@test") as (a, b):
            target = b.node.spawn(idle)
            assert await a.node.exit_and_wait(target, Shutdown("bye")) == Shutdown("bye")
            assert not b.node.is_alive(target)

            other = b.node.spawn(idle)
            b.dist.close()
            await wait_until(lambda: not a.dist.is_connected("b@test"))
            assert await a.node.exit_and_wait(other, Shutdown("x"), timeout=30) == (
                NoConnection("b@test")
            )

    async def test_demonitor_remote(self) -> None:
        """A cancelled remote monitor delivers nothing when its target ends."""
        async with cluster("a@test", "b@test") as (a, b):
            watcher = Inbox(a.node)
            probe = Inbox(a.node)
            target = b.node.spawn(exit_on_message)
            ref = a.node.monitor(watcher.pid, target)
            assert a.node.demonitor(ref)
            ref2 = a.node.monitor(probe.pid, target)

            a.node.send(target, Abnormal("x"))

            assert ref2 == (await probe.wait_for(is_down)).ref
            assert watcher.messages == []

    async def test_demonitor_reaches_the_target_node_without_other_traffic(self) -> None:
        """A DEMONITOR with nothing sent after it still arrives (with the next heartbeat)."""
        async with cluster("a@test", "b@test", heartbeat_interval=0.05) as (a, b):
            watcher = Inbox(a.node)
            target = b.node.spawn(idle)
            ref = a.node.monitor(watcher.pid, target)
            await wait_until(lambda: bool(b.node.process(target).watchers))

            assert a.node.demonitor(ref)

            await wait_until(lambda: not b.node.process(target).watchers)
            assert b.dist.is_connected("a@test")  # not dropped for silence meanwhile


class TestNodeLoss:
    async def test_node_stop_sends_its_processes_exit_reasons_then_closes(self) -> None:
        """A node that stops: its processes end first, so peers' links, monitors and calls get
        their real exit reason (Shutdown("node_stopped")); then the connection closes."""
        async with AsyncExitStack() as stack:
            a = await start_member(stack, "a@test")
            call_failed: list[BaseException] = []
            async with AsyncExitStack() as b_stack:
                b = await start_member(b_stack, "b@test")
                await a.dist.connect(*b.address, name="b@test")
                server = await b.node.start_server(Echo, name="echo")
                remote = Inbox(b.node).pid
                watcher = Inbox(a.node, trap_exit=True)
                linked = a.node.spawn(idle)
                probe = Inbox(a.node)
                ref = a.node.monitor(watcher.pid, remote)
                a.node.link(watcher.pid, remote)
                a.node.link(linked, remote)
                a.node.monitor(probe.pid, linked)

                async def caller() -> None:
                    try:
                        await runtime.call(server, ("hold", probe.pid), timeout=3600)
                    except ServerExited as e:
                        call_failed.append(e)

                a.node.spawn(caller)
                # the links and monitor reached b before the call did (same connection)
                assert await probe.wait_for(lambda m: m == "holding") == "holding"

            stopped = Shutdown("node_stopped")
            assert Down(ref, remote, stopped) == await watcher.wait_for(is_down)
            assert Exit(remote, stopped) == await watcher.wait_for(is_exit)
            assert stopped == (await probe.wait_for(is_down)).reason
            await wait_until(lambda: bool(call_failed))
            assert isinstance(call_failed[0], ServerExited)
            assert stopped == call_failed[0].reason
            await wait_until(lambda: not a.dist.is_connected("b@test"))

    async def test_peer_restart_drops_messages_to_old_pids(self) -> None:
        """After a peer restarts (new creation), messages to its old pids reach nobody."""
        async with AsyncExitStack() as stack:
            a = await start_member(stack, "a@test")
            async with AsyncExitStack() as old_stack:
                old = await start_member(old_stack, "b@test", creation=1)
                old_pid = Inbox(old.node).pid
                a.dist.add_peer("b@test", *old.address)
                a.node.send(old_pid, "first life")
                await wait_until(lambda: a.dist.is_connected("b@test"))
            await wait_until(lambda: not a.dist.is_connected("b@test"))

            new = await start_member(stack, "b@test", creation=2)
            fresh = Inbox(new.node)
            assert old_pid.serial == fresh.pid.serial  # same serial, other life
            a.dist.add_peer("b@test", *new.address)

            a.node.send(old_pid, "stale")  # connects to the new life on demand
            await a.dist.wait_connected("b@test")
            a.node.send(old_pid, "stale again")
            a.node.send(fresh.pid, "fresh")

            assert await fresh.wait_count(1) == ["fresh"]
            assert a.node.dead_letters + new.node.dead_letters == 2
            assert fresh.messages == ["fresh"]

    async def test_monitor_nodes_sees_up_then_down_after_the_monitors_fired(self) -> None:
        """``monitor_nodes``: NodeUp when a connection comes up, NodeDown when it is lost,
        after the monitors across it fired; a failed attempt says nothing; subscribing
        twice is one subscription, and ``flag=False`` ends it."""
        events: list[object] = []
        quiet: list[object] = []

        async def subscriber(target: Pid) -> None:
            runtime.monitor_nodes()
            runtime.monitor_nodes()  # twice is one subscription
            events.append(await runtime.receive())  # NodeUp
            runtime.monitor(target)
            events.append("monitoring")
            while True:
                events.append(await runtime.receive())

        async def unsubscribed() -> None:
            runtime.monitor_nodes()
            runtime.monitor_nodes(False)
            while True:
                quiet.append(await runtime.receive())

        async with AsyncExitStack() as stack:
            a = await start_member(stack, "a@test")
            a.node.spawn(unsubscribed)
            ghost = Pid("ghost@test", 1, 1)
            a.node.send(ghost, "lost")  # an attempt that fails is no NodeDown
            async with AsyncExitStack() as b_stack:
                b = await start_member(b_stack, "b@test")
                remote = Inbox(b.node).pid
                await b.node.start_server(Echo, name="echo")
                a.node.spawn(subscriber, remote)
                await a.dist.connect(*b.address, name="b@test")
                await wait_until(lambda: "monitoring" in events)
                await round_trip(a, b)  # the monitor reached b before this did
            await wait_until(lambda: len(events) == 4)

            assert events[0] == runtime.NodeUp("b@test")
            assert type(events[2]) is Down
            assert events[2].reason == Shutdown("node_stopped")
            assert events[3] == runtime.NodeDown("b@test")
            assert quiet == []
            with pytest.raises(runtime.NoProcError):
                a.node.monitor_nodes(Pid("a@test", 10_000, a.node.creation))
            with pytest.raises(runtime.NoProcError):
                a.node.monitor_nodes(remote)

    async def test_redial_tells_a_lost_node_from_a_lost_connection(self) -> None:
        """``redial``: True at once when connected, True after a reset connection to a live
        node, False for a node that is gone (refused) or has no known address."""
        async with cluster("a@test", "b@test") as (a, b):
            assert await a.dist.redial("b@test", BOUND)
            conn = a.dist._peers["b@test"].conn
            assert conn is not None
            conn.scope.cancel()  # reset: the connection closes, both nodes live on
            await wait_until(lambda: not a.dist.is_connected("b@test"))
            assert await a.dist.redial("b@test", BOUND)
            assert a.dist.is_connected("b@test")
            assert not await a.dist.redial("nobody@test", BOUND)
            address = b.address
            b.dist.close()
            await _wait_port_closed(address)
            assert not await a.dist.redial("b@test", BOUND)

    async def test_monitor_nodes_ends_with_the_process(self) -> None:
        """A subscriber that ended is no longer told; a lost connection is one NodeDown."""
        async with cluster("a@test", "b@test", connect=False) as (a, b):
            got: list[object] = []
            events: list[object] = []

            async def once() -> None:
                runtime.monitor_nodes()
                got.append(await runtime.receive())

            async def keep() -> None:
                runtime.monitor_nodes()
                while True:
                    events.append(await runtime.receive())

            a.node.spawn(once)
            a.node.spawn(keep)
            await a.dist.connect(*b.address, name="b@test")
            await wait_until(lambda: len(got) == 1 and len(events) == 1)
            b.dist.close()
            await wait_until(lambda: len(events) == 2)

            assert got == [runtime.NodeUp("b@test")]
            assert events == [runtime.NodeUp("b@test"), runtime.NodeDown("b@test")]
            assert len(a.node._node_watchers) == 1


class TestBackpressure:
    async def test_full_remote_mailbox_slows_the_sender_and_loses_nothing(self) -> None:
        """send_wait blocks while the receiver is full; PeerBusy from send; all arrive."""
        limit = 64 * 1024
        payload = b"x" * 16 * 1024
        async with cluster("a@test", "b@test", max_buffer=limit) as (a, b):
            release = anyio.Event()
            got: list[int] = []

            async def receiver() -> None:
                await release.wait()
                while True:
                    got.append((await runtime.receive()).n)

            rpid = b.node.spawn(receiver, mailbox_bound=4)
            sent = [0]
            stop = [False]

            async def sender() -> None:
                while not stop[0]:
                    await runtime.send_wait(rpid, Ping(sent[0], payload))
                    sent[0] += 1

            a.node.spawn(sender)
            peer = a.dist._peers["b@test"]
            biggest = [0]

            def blocked() -> bool:
                biggest[0] = max(biggest[0], len(peer.buf))
                return bool(peer.rooms)

            await wait_until(blocked)  # the sender waits for room
            stop[0] = True
            with pytest.raises(PeerBusy):
                a.node.send(rpid, Ping(-1))
            assert biggest[0] <= limit + 2 * len(payload)
            release.set()

            await wait_until(lambda: len(got) == sent[0] and not peer.rooms)
            assert list(range(sent[0])) == got


class TestTLS:
    async def test_mutual_tls_cluster_works(self) -> None:
        """Nodes with TLS (client certificates required) connect, call and monitor."""
        files = make_tls_files()
        tls = {"ssl_context": files.server_context(), "client_ssl_context": files.client_context()}
        async with cluster("a@test", "b@test", **tls) as (a, b):
            await b.node.start_server(Echo, name="echo")
            await round_trip(a, b, "over tls")

    async def test_client_without_certificate_is_rejected(self) -> None:
        """A TLS client with no certificate is refused; the node keeps serving its peers."""
        files = make_tls_files()
        tls = {"ssl_context": files.server_context(), "client_ssl_context": files.client_context()}
        async with AsyncExitStack() as stack:
            a = await start_member(stack, "a@test", **tls)
            b = await start_member(stack, "b@test", **tls)
            await b.node.start_server(Echo, name="echo")
            await a.dist.connect(*b.address, name="b@test")
            c = await start_member(
                stack,
                "c@test",
                ssl_context=files.server_context(),
                client_ssl_context=files.client_context(with_cert=False),
            )

            with capture_logs() as logs, pytest.raises(Exception):
                await c.dist.connect(*b.address, name="b@test")

            await wait_until(lambda: b.dist.rejected_connections == 1)
            assert any(e["event"] == "connection_rejected" for e in logs)
            await round_trip(a, b)


async def _wait_port_closed(address: tuple[str, int]) -> None:
    """Wait until nothing accepts connections at *address*."""

    async def refused() -> bool:
        try:
            stream = await anyio.connect_tcp(*address)
        except OSError:
            return True
        await stream.aclose()
        return False

    with anyio.fail_after(BOUND):
        while not await refused():  # noqa: ASYNC110 - nothing to await but the port
            await anyio.sleep(0.01)
