"""Registered names and timers."""

from __future__ import annotations

from typing import Any

import anyio
import anyio.lowlevel
import pytest
import trio

import runtime
from runtime import AlreadyRegistered, Name, Node, NoProcError
from tests.conftest import run_on


class TestRegistry:
    def test_register_whereis_send_by_name(self, run: Any) -> None:
        """A registered name resolves to its pid and can be sent to."""
        got: list[Any] = []

        async def body() -> None:
            runtime.register("svc")
            got.append(await runtime.receive())

        async def scenario() -> None:
            async with Node("n1") as node:
                pid = node.spawn(body)
                await anyio.lowlevel.checkpoint()
                await anyio.lowlevel.checkpoint()
                assert node.whereis("svc") == pid
                node.send("svc", "by name")
                node.send(Name("svc"), "ignored after exit")
                await anyio.sleep(0.1)

        run(scenario)
        assert got == ["by name"]

    def test_name_freed_when_process_dies(self, run: Any) -> None:
        """A dead process's name is free for another."""

        async def scenario() -> None:
            async with Node("n1") as node:
                a = node.spawn(anyio.sleep_forever, name="svc")
                with pytest.raises(AlreadyRegistered):
                    node.spawn(anyio.sleep_forever, name="svc")
                node.exit(a, runtime.Kill())
                await anyio.sleep(0.1)
                assert node.whereis("svc") is None
                b = node.spawn(anyio.sleep_forever, name="svc")
                assert node.whereis("svc") == b

        run(scenario)

    def test_register_errors(self, run: Any) -> None:
        """Registering a taken name, a second name, or a dead pid is an error."""

        async def scenario() -> None:
            async with Node("n1") as node:
                a = node.spawn(anyio.sleep_forever)
                b = node.spawn(anyio.sleep_forever)
                node.register("x", a)
                with pytest.raises(AlreadyRegistered):
                    node.register("x", b)
                with pytest.raises(AlreadyRegistered):
                    node.register("y", a)
                node.exit(b, runtime.Kill())
                await anyio.sleep(0.1)
                with pytest.raises(NoProcError):
                    node.register("z", b)
                node.unregister("x")
                assert node.whereis("x") is None
                with pytest.raises(NoProcError):
                    node.unregister("x")

        run(scenario)

    def test_send_to_unregistered_name_is_an_error(self, run: Any) -> None:
        """Sending to a name nobody holds raises NoProcError (Erlang's badarg)."""

        async def scenario() -> None:
            async with Node("n1") as node:
                with pytest.raises(NoProcError):
                    node.send("nobody", 1)

        run(scenario)

    def test_send_to_dead_pid_is_counted(self, run: Any) -> None:
        """A message to a dead pid is discarded and counted as a dead letter."""

        async def quick() -> None:
            return

        async def scenario() -> None:
            async with Node("n1") as node:
                pid = node.spawn(quick)
                await anyio.sleep(0.1)
                node.send(pid, "late")
                assert node.dead_letters == 1

        run(scenario)


class TestTimers:
    def test_send_after_fires_at_exact_time(self) -> None:
        """send_after(3, ...) delivers at exactly t+3."""
        got: list[Any] = []

        async def body() -> None:
            runtime.send_after(3, runtime.self_pid(), "tick")
            got.append((await runtime.receive(), trio.current_time()))

        async def scenario() -> None:
            async with Node("n1") as node:
                node.spawn(body)
                await anyio.sleep(10)

        run_on("trio", scenario)
        assert got == [("tick", 3.0)]

    def test_cancel_timer(self, run: Any) -> None:
        """A cancelled timer never fires; cancelling twice returns False."""
        got: list[Any] = []

        async def body() -> None:
            t = runtime.send_after(3, runtime.self_pid(), "tick")
            assert runtime.cancel_timer(t)
            assert not runtime.cancel_timer(t)
            with pytest.raises(runtime.ReceiveTimeout):
                await runtime.receive(timeout=5)
            got.append("quiet")

        async def scenario() -> None:
            async with Node("n1") as node:
                node.spawn(body)
                await anyio.sleep(10)

        run(scenario)
        assert got == ["quiet"]

    def test_fired_timer_cannot_be_cancelled(self, run: Any) -> None:
        """cancel_timer after the timer fired returns False."""

        async def scenario() -> None:
            async with Node("n1") as node:
                pid = node.spawn(anyio.sleep_forever)
                t = node.send_after(1, pid, "x")
                await anyio.sleep(2)
                assert not node.cancel_timer(t)
                assert len(node.process(pid).mailbox) == 1

        run(scenario)
