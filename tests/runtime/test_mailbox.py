"""Mailboxes: bound, backpressure, selective receive, timeouts, fairness."""

from __future__ import annotations

from typing import Any

import anyio
import anyio.lowlevel
import pytest
import trio

import runtime
from runtime import MailboxFull, Node, ReceiveTimeout


async def settle() -> None:
    """Let every runnable task run."""
    for _ in range(20):
        await anyio.lowlevel.checkpoint()


class TestBound:
    def test_overflow_raises_to_sender_and_counts(self, run: Any) -> None:
        """At the bound, send raises MailboxFull to the sender, enqueues nothing, and counts it."""

        async def scenario() -> None:
            async with Node("n1") as node:
                pid = node.spawn(anyio.sleep_forever, mailbox_bound=3)
                for i in range(3):
                    node.send(pid, i)
                with pytest.raises(MailboxFull) as info:
                    node.send(pid, 3)
                assert info.value.pid == pid
                assert info.value.bound == 3
                mb = node.process(pid).mailbox
                assert len(mb) == 3
                assert mb.overflows == 1

        run(scenario)

    def test_send_wait_applies_backpressure_and_loses_nothing(self, run: Any) -> None:
        """send_wait blocks at the bound and resumes as the receiver drains; order is kept."""
        got: list[int] = []

        async def slow_sink(n: int) -> None:
            for _ in range(n):
                await anyio.sleep(0.01)
                got.append(await runtime.receive())

        async def scenario() -> None:
            async with Node("n1") as node:
                pid = node.spawn(slow_sink, 50, mailbox_bound=2)
                for i in range(50):
                    await node.send_wait(pid, i)
                    assert len(node.process(pid).mailbox) <= 2
                await anyio.sleep(1)

        run(scenario)
        assert got == list(range(50))

    def test_blocked_sender_released_when_receiver_dies(self, run: Any) -> None:
        """A sender blocked on a full mailbox returns when the receiver dies."""

        async def scenario() -> None:
            async with Node("n1") as node:
                pid = node.spawn(anyio.sleep_forever, mailbox_bound=1)
                node.send(pid, 0)
                done = anyio.Event()

                async def sender() -> None:
                    await node.send_wait(pid, 1)
                    done.set()

                node.spawn(sender)
                await settle()
                assert not done.is_set()
                node.exit(pid, runtime.Kill())
                with anyio.fail_after(1):
                    await done.wait()

        run(scenario)

    def test_signals_bypass_the_bound(self, run: Any) -> None:
        """A Down message is delivered even into a full mailbox."""
        got: list[Any] = []

        async def watcher(target: runtime.Pid) -> None:
            runtime.monitor(target)
            runtime.send(runtime.self_pid(), "fill")
            runtime.send_exit(target, runtime.Kill())
            await anyio.sleep(1)
            got.append(await runtime.receive())
            got.append(await runtime.receive())

        async def scenario() -> None:
            async with Node("n1") as node:
                t = node.spawn(anyio.sleep_forever)
                node.spawn(watcher, t, mailbox_bound=1)
                await anyio.sleep(2)

        run(scenario)
        assert got[0] == "fill"
        assert isinstance(got[1], runtime.Down)

    def test_bad_bound_is_rejected(self, run: Any) -> None:
        """A mailbox bound below 1 is a ValueError."""

        async def scenario() -> None:
            async with Node("n1") as node:
                with pytest.raises(ValueError, match="at least 1"):
                    node.spawn(anyio.sleep_forever, mailbox_bound=-1)

        run(scenario)


class TestSelectiveReceive:
    def test_non_matching_messages_keep_their_order(self, run: Any) -> None:
        """A selective receive takes the first match; the others stay, in order."""
        got: list[Any] = []

        async def body() -> None:
            await anyio.sleep(1)
            got.append(await runtime.receive(lambda m: m[0] == "b"))
            got.append(await runtime.receive(lambda m: m[0] == "b"))
            for _ in range(3):
                got.append(await runtime.receive())

        async def scenario() -> None:
            async with Node("n1") as node:
                pid = node.spawn(body)
                for m in [("a", 1), ("b", 1), ("a", 2), ("c", 1), ("b", 2)]:
                    node.send(pid, m)
                await anyio.sleep(2)

        run(scenario)
        assert got == [("b", 1), ("b", 2), ("a", 1), ("a", 2), ("c", 1)]

    def test_selective_receive_waits_for_a_later_match(self, run: Any) -> None:
        """A receive with no match yet waits; a later matching message wakes it."""
        got: list[Any] = []

        async def body() -> None:
            got.append(await runtime.receive(lambda m: m == "wanted"))
            got.append(await runtime.receive(timeout=0))

        async def scenario() -> None:
            async with Node("n1") as node:
                pid = node.spawn(body)
                node.send(pid, "other")
                await anyio.sleep(1)
                assert got == []
                node.send(pid, "wanted")
                await anyio.sleep(1)

        run(scenario)
        assert got == ["wanted", "other"]

    def test_receive_timeout_exact_instant(self) -> None:
        """receive(timeout=5) gives up at exactly t+5 under the mock clock."""
        out: list[float] = []

        async def body() -> None:
            start = trio.current_time()
            with pytest.raises(ReceiveTimeout):
                await runtime.receive(lambda m: m == "never", timeout=5)
            out.append(trio.current_time() - start)

        async def scenario() -> None:
            async with Node("n1") as node:
                pid = node.spawn(body)
                await anyio.sleep(1)
                node.send(pid, "noise")  # wakes it; it must keep waiting until t+5
                await anyio.sleep(10)

        from tests.conftest import run_on

        run_on("trio", scenario)
        assert out == [5.0]

    def test_receive_timeout_zero_polls(self, run: Any) -> None:
        """timeout=0 returns what is there or raises at once."""
        got: list[Any] = []

        async def body() -> None:
            with pytest.raises(ReceiveTimeout):
                await runtime.receive(timeout=0)
            runtime.send(runtime.self_pid(), "x")
            got.append(await runtime.receive(timeout=0))

        async def scenario() -> None:
            async with Node("n1") as node:
                node.spawn(body)
                await settle()

        run(scenario)
        assert got == ["x"]

    def test_receive_outside_process_is_an_error(self, run: Any) -> None:
        """receive outside a process raises NotInProcess."""

        async def scenario() -> None:
            async with Node("n1"):
                with pytest.raises(runtime.NotInProcess):
                    await runtime.receive()

        run(scenario)


class TestFairness:
    def test_busy_receiver_does_not_starve_others(self, run: Any) -> None:
        """Draining a long mailbox yields every budget's worth of messages."""
        ticks: list[int] = []
        drained: list[int] = []

        async def drainer(n: int) -> None:
            for i in range(n):
                await runtime.receive()
                if i % 1000 == 999:
                    drained.append(len(ticks))

        async def ticker() -> None:
            for i in range(1000):
                ticks.append(i)
                await anyio.lowlevel.checkpoint()

        async def scenario() -> None:
            async with Node("n1") as node:
                pid = node.spawn(drainer, 10_000)
                for i in range(10_000):
                    node.send(pid, i)
                node.spawn(ticker)
                await anyio.sleep(1)

        run(scenario)
        # the ticker ran while the drainer worked through its mailbox
        assert drained[-1] > drained[0]
