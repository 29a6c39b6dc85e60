"""GenServer: calls, casts, deferred replies, stop, terminate, and failing servers."""

from __future__ import annotations

from typing import Any

import anyio
import pytest
import trio

import runtime
from runtime import (
    NOREPLY,
    CallTimeout,
    Crashed,
    From,
    GenServer,
    Node,
    NoProc,
    ServerExited,
    Shutdown,
    StartFailed,
    Stop,
)
from tests.conftest import run_on


class Counter(GenServer):
    """A counter with every kind of request the tests need."""

    async def init(self, start: int = 0, log: list[Any] | None = None) -> None:
        self.n = start
        self.log = log if log is not None else []
        self.deferred: list[From] = []

    async def handle_call(self, request: Any, from_: From) -> Any:
        match request:
            case ("add", k):
                self.n += k
                return self.n
            case "get":
                return self.n
            case "crash":
                raise ZeroDivisionError("asked to crash")
            case "defer":
                self.deferred.append(from_)
                return NOREPLY
            case "release":
                for f in self.deferred:
                    runtime.reply(f, "released")
                return len(self.deferred)
            case "stop":
                raise Stop(Shutdown("asked"), reply="bye")
            case ("sleep", s):
                await anyio.sleep(s)
                return "slept"
        return await super().handle_call(request, from_)

    async def handle_cast(self, msg: Any) -> None:
        self.n += msg

    async def handle_info(self, msg: Any) -> None:
        self.log.append(("info", msg))

    async def terminate(self, reason: runtime.ExitReason) -> None:
        self.log.append(("terminate", reason))


class TestCall:
    def test_call_and_cast_in_order(self, run: Any) -> None:
        """Calls return handle_call's value; casts apply before later calls from the same sender."""

        async def scenario() -> None:
            async with Node("n1") as node:
                srv = await node.start_server(Counter, 10)
                assert await node.call(srv, ("add", 5)) == 15
                node.cast(srv, 100)
                assert await node.call(srv, "get") == 115

        run(scenario)

    def test_call_from_inside_a_process(self, run: Any) -> None:
        """A process calls a server with runtime.call."""
        got: list[Any] = []

        async def client(srv: runtime.Pid) -> None:
            got.append(await runtime.call(srv, ("add", 1)))

        async def scenario() -> None:
            async with Node("n1") as node:
                srv = await node.start_server(Counter)
                node.spawn(client, srv)
                await anyio.sleep(1)

        run(scenario)
        assert got == [1]

    def test_deferred_reply_from_another_call(self, run: Any) -> None:
        """A call answered NOREPLY is replied to later, possibly while handling another call."""
        got: list[Any] = []

        async def scenario() -> None:
            async with Node("n1") as node, anyio.create_task_group() as tg:
                srv = await node.start_server(Counter)

                async def waiter() -> None:
                    got.append(await node.call(srv, "defer", timeout=None))

                tg.start_soon(waiter)
                tg.start_soon(waiter)
                await anyio.sleep(1)
                assert got == []
                assert await node.call(srv, "release") == 2

        run(scenario)
        assert got == ["released", "released"]

    def test_call_to_dead_server_fails_at_once_with_noproc(self) -> None:
        """Calling a dead pid raises ServerExited(NoProc) without waiting for the timeout."""

        async def scenario() -> None:
            async with Node("n1") as node:
                srv = await node.start_server(Counter)
                node.exit(srv, runtime.Kill())
                await anyio.sleep(0.1)
                t0 = trio.current_time()
                with pytest.raises(ServerExited) as info:
                    await node.call(srv, "get", timeout=30)
                assert info.value.reason == NoProc()
                assert trio.current_time() == t0

        run_on("trio", scenario)

    def test_call_to_unregistered_name_fails_with_noproc(self, run: Any) -> None:
        """Calling a name nobody holds raises ServerExited(NoProc)."""

        async def scenario() -> None:
            async with Node("n1") as node:
                with pytest.raises(ServerExited) as info:
                    await node.call("nobody", "get")
                assert info.value.reason == NoProc()

        run(scenario)

    def test_server_crash_mid_call_fails_call_with_reason(self, run: Any) -> None:
        """A server that crashes handling a call fails that call at once with Crashed."""

        async def scenario() -> None:
            async with Node("n1") as node:
                srv = await node.start_server(Counter)
                with pytest.raises(ServerExited) as info:
                    await node.call(srv, "crash", timeout=30)
                reason = info.value.reason
                assert isinstance(reason, Crashed)
                assert reason.kind == "ZeroDivisionError"
                assert not node.is_alive(srv)

        run(scenario)

    def test_server_killed_while_call_pending(self) -> None:
        """A server killed while a call waits fails the call at the kill, not the timeout."""

        async def scenario() -> None:
            async with Node("n1") as node, anyio.create_task_group() as tg:
                srv = await node.start_server(Counter)
                tg.start_soon(_kill_later, node, srv, 2.0)
                with pytest.raises(ServerExited) as info:
                    await node.call(srv, ("sleep", 100), timeout=50)
                assert info.value.reason == runtime.Killed()
                assert trio.current_time() == 2.0

        run_on("trio", scenario)

    def test_call_timeout_exact_and_late_reply_discarded(self) -> None:
        """A call times out at exactly its timeout; the late reply never shows up anywhere."""
        got: list[Any] = []

        async def client(srv: runtime.Pid) -> None:
            with pytest.raises(CallTimeout):
                await runtime.call(srv, ("sleep", 10), timeout=5)
            got.append(trio.current_time())
            await anyio.sleep(20)
            with pytest.raises(runtime.ReceiveTimeout):
                await runtime.receive(timeout=0)
            got.append("mailbox empty")

        async def scenario() -> None:
            async with Node("n1") as node:
                srv = await node.start_server(Counter)
                node.spawn(client, srv)
                await anyio.sleep(30)
                assert await node.call(srv, "get") == 0

        run_on("trio", scenario)
        assert got == [5.0, "mailbox empty"]

    def test_unexpected_call_crashes_server(self, run: Any) -> None:
        """The default handle_call crashes the server: an unexpected call is a bug."""

        async def scenario() -> None:
            async with Node("n1") as node:
                srv = await node.start_server(Counter)
                with pytest.raises(ServerExited) as info:
                    await node.call(srv, "what?")
                assert isinstance(info.value.reason, Crashed)
                assert info.value.reason.kind == "NotImplementedError"

        run(scenario)


async def _kill_later(node: Node, pid: runtime.Pid, delay: float) -> None:
    await anyio.sleep(delay)
    node.exit(pid, runtime.Kill())


class TestLifecycle:
    def test_stop_replies_then_terminates(self, run: Any) -> None:
        """Stop(reason, reply=...) answers the caller, runs terminate, and exits with reason."""
        log: list[Any] = []

        async def scenario() -> None:
            async with Node("n1") as node:
                srv = await node.start_server(Counter, 0, log)
                assert await node.call(srv, "stop") == "bye"
                await anyio.sleep(0.1)
                assert not node.is_alive(srv)

        run(scenario)
        assert log == [("terminate", Shutdown("asked"))]

    def test_terminate_runs_on_exit_signal_but_not_on_kill(self, run: Any) -> None:
        """terminate runs when the server is stopped by a signal, never when it is killed."""
        log_a: list[Any] = []
        log_b: list[Any] = []

        async def scenario() -> None:
            async with Node("n1") as node:
                a = await node.start_server(Counter, 0, log_a)
                b = await node.start_server(Counter, 0, log_b)
                node.exit(a, Shutdown("bye"))
                node.exit(b, runtime.Kill())
                await anyio.sleep(0.1)

        run(scenario)
        assert log_a == [("terminate", Shutdown("bye"))]
        assert log_b == []

    def test_init_failure_fails_start(self, run: Any) -> None:
        """An init that raises makes start_server raise StartFailed with the crash."""

        class Bad(GenServer):
            async def init(self) -> None:
                raise OSError("no disk")

        async def scenario() -> None:
            async with Node("n1") as node:
                with pytest.raises(StartFailed) as info:
                    await node.start_server(Bad)
                assert isinstance(info.value.reason, Crashed)
                assert info.value.reason.message == "no disk"
                assert node.process_count == 0

        run(scenario)

    def test_init_timeout_kills_server(self) -> None:
        """An init slower than its timeout is killed and start fails at the timeout."""

        class Slow(GenServer):
            async def init(self) -> None:
                await anyio.sleep(100)

        async def scenario() -> None:
            async with Node("n1") as node:
                with pytest.raises(StartFailed):
                    await node.start_server(Slow, timeout=3)
                assert trio.current_time() == 3.0
                await anyio.sleep(0.1)
                assert node.process_count == 0

        run_on("trio", scenario)

    def test_info_messages_reach_handle_info(self, run: Any) -> None:
        """Plain messages and Down messages go to handle_info."""
        log: list[Any] = []

        async def scenario() -> None:
            async with Node("n1") as node:
                srv = await node.start_server(Counter, 0, log)
                node.send(srv, "hello")
                await node.call(srv, "get")

        run(scenario)
        assert log[0] == ("info", "hello")

    def test_named_server(self, run: Any) -> None:
        """A server started with a name is reachable by that name."""

        async def scenario() -> None:
            async with Node("n1") as node:
                srv = await node.start_server(Counter, 7, name="counter")
                assert node.whereis("counter") == srv
                assert await node.call("counter", "get") == 7

        run(scenario)


class Quiet(GenServer):
    """A server with no terminate callback; counts the casts it handles."""

    async def init(self, log: list[Any]) -> None:
        self.log = log

    async def handle_call(self, request: Any, from_: From) -> Any:
        return request

    async def handle_cast(self, msg: Any) -> None:
        self.log.append(msg)


class TestExitSignalToIdleServer:
    """A server waiting for a message, with no terminate, ends when the signal is sent."""

    def test_exit_and_wait_returns_the_reason_and_frees_the_name(self, run: Any) -> None:
        """Its links, monitors and name see the end with the signal's reason."""

        async def watcher(srv: runtime.Pid, got: list[Any]) -> None:
            runtime.trap_exit(True)
            runtime.link(srv)
            ref = runtime.monitor(srv)
            got.append(await runtime.exit_and_wait(srv, Shutdown("bye")))
            got.append(runtime.whereis("quiet"))
            got.append(await runtime.receive(lambda m: isinstance(m, runtime.Down), timeout=0))
            got.append(await runtime.receive(lambda m: isinstance(m, runtime.Exit), timeout=0))
            got.append(ref)

        got: list[Any] = []

        async def scenario() -> None:
            async with Node("n1") as node:
                srv = await node.start_server(Quiet, [], name="quiet")
                node.spawn(watcher, srv, got)
                await anyio.sleep(1)
                assert not node.is_alive(srv)

        run(scenario)
        reason, name, down, exit_, ref = got
        assert reason == Shutdown("bye")
        assert name is None
        assert down.ref == ref
        assert down.reason == Shutdown("bye")
        assert exit_.reason == Shutdown("bye")

    def test_kill_ends_it_killed(self, run: Any) -> None:
        """Kill() ends an idle server with Killed, as any other process."""

        async def scenario() -> None:
            async with Node("n1") as node:
                srv = await node.start_server(Quiet, [])
                assert await node.exit_and_wait(srv, runtime.Kill()) == runtime.Killed()
                with pytest.raises(ServerExited) as info:
                    await node.call(srv, "ping")
                assert info.value.reason == NoProc()

        run(scenario)

    def test_signal_after_a_message_woke_it_still_ends_it(self, run: Any) -> None:
        """A server woken by a cast, then signalled before it ran, ends with the signal."""
        log: list[Any] = []

        async def scenario() -> None:
            async with Node("n1") as node:
                srv = await node.start_server(Quiet, log)
                node.cast(srv, "hello")
                reason = await node.exit_and_wait(srv, Shutdown("bye"))
                assert reason == Shutdown("bye")
                assert not node.is_alive(srv)

        run(scenario)
        assert log in ([], ["hello"])

    def test_terminate_still_runs_before_the_end_is_seen(self, run: Any) -> None:
        """A server with terminate runs it before its monitor fires."""
        log: list[Any] = []

        async def scenario() -> None:
            async with Node("n1") as node:
                srv = await node.start_server(Counter, 0, log)
                assert await node.exit_and_wait(srv, Shutdown("bye")) == Shutdown("bye")
                assert log == [("terminate", Shutdown("bye"))]

        run(scenario)


class Bare(GenServer):
    """A server with GenServer's own init."""

    async def handle_call(self, request: Any, from_: From) -> Any:
        return request


class TestStartWithoutInit:
    """A server without an init of its own has nothing to wait for at start."""

    def test_init_has_run_when_start_returns(self, run: Any) -> None:
        """With an init, start_server returns only after it ran in the new process."""
        log: list[Any] = []

        class Logged(Quiet):
            async def init(self, log: list[Any]) -> None:
                log.append("init")

        async def scenario() -> None:
            async with Node("n1") as node:
                await node.start_server(Logged, log)
                log.append("started")

        run(scenario)
        assert log == ["init", "started"]

    def test_an_init_set_on_the_instance_is_waited_for(self, run: Any) -> None:
        """An init given to the instance, not its class, still runs before start returns."""
        log: list[Any] = []

        async def init() -> None:
            log.append("init")

        async def scenario() -> None:
            async with Node("n1") as node:
                server = Bare()
                server.init = init  # type: ignore[method-assign]
                await node.start_server(server)
                log.append("started")

        run(scenario)
        assert log == ["init", "started"]

    def test_a_server_without_init_is_named_linked_and_answers(self, run: Any) -> None:
        """start_server returns the pid at once; the name and the link are already there."""
        got: list[Any] = []

        async def starter() -> None:
            runtime.trap_exit(True)
            pid = await runtime.start_server(Bare, link=True, name="bare")
            got.append(runtime.whereis("bare") == pid)
            got.append(await runtime.call("bare", "ping"))
            runtime.send_exit(pid, runtime.Kill())
            exit_ = await runtime.receive(lambda m: isinstance(m, runtime.Exit), timeout=1)
            got.append(exit_.reason)

        async def scenario() -> None:
            async with Node("n1") as node:
                node.spawn(starter)
                await anyio.sleep(1)

        run(scenario)
        assert got == [True, "ping", runtime.Killed()]

    def test_killed_before_it_first_ran_is_an_exit_not_a_start_failure(self, run: Any) -> None:
        """Its end right after the start is seen as an exit (as if init ran at once)."""

        async def scenario() -> None:
            async with Node("n1") as node:
                pid = await node.start_server(Bare)
                assert await node.exit_and_wait(pid, runtime.Kill()) == runtime.Killed()
                assert not node.is_alive(pid)

        run(scenario)


class TestTimeouts:
    def test_earlier_deadline_added_later_fires_first(self) -> None:
        """Concurrent calls time out at their own deadlines, whatever order they started in."""
        fired: dict[str, float] = {}

        async def caller(node: Node, srv: runtime.Pid, label: str, timeout: float) -> None:
            with pytest.raises(CallTimeout):
                await node.call(srv, ("sleep", 100), timeout=timeout)
            fired[label] = trio.current_time()

        async def scenario() -> None:
            async with Node("n1") as node, anyio.create_task_group() as tg:
                slow = await node.start_server(Counter)
                slow2 = await node.start_server(Counter)
                tg.start_soon(caller, node, slow, "ten", 10)
                await anyio.sleep(1)
                tg.start_soon(caller, node, slow2, "two", 2)

        run_on("trio", scenario)
        assert fired == {"ten": 10.0, "two": 3.0}

    def test_many_answered_calls_leave_no_timeout_backlog(self, run: Any) -> None:
        """Answered calls do not accumulate in the timeout heap."""

        async def scenario() -> None:
            async with Node("n1") as node:
                srv = await node.start_server(Counter)
                for _ in range(5000):
                    await node.call(srv, "get", timeout=60)
                assert node._timeouts is not None
                assert len(node._timeouts._heap) < 2100

        run(scenario)
