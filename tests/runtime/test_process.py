"""Processes: spawn, exit reasons, crash isolation, exit signals, links, monitors."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import anyio.lowlevel
import pytest
import structlog
from structlog.testing import capture_logs

import runtime
from runtime import (
    Abnormal,
    Crashed,
    Down,
    Exit,
    Kill,
    Killed,
    Name,
    Node,
    NoProc,
    Normal,
    Shutdown,
)


async def idle() -> None:
    """A process that waits forever."""
    await runtime.receive()


async def settle() -> None:
    """Let every runnable task run (several scheduler passes)."""
    for _ in range(20):
        await anyio.lowlevel.checkpoint()


class TestSpawn:
    def test_spawn_runs_function_with_args(self, run: Any) -> None:
        """A spawned process runs its function with its arguments and can learn its pid."""
        seen: list[Any] = []

        async def body(a: int, b: int) -> None:
            seen.append((a + b, runtime.self_pid()))

        async def scenario() -> None:
            async with Node("n1") as node:
                pid = node.spawn(body, 2, 3)
                await settle()
                assert seen == [(5, pid)]
                assert not node.is_alive(pid)

        run(scenario)

    def test_pids_are_unique_and_name_their_node(self, run: Any) -> None:
        """Every spawn gets a fresh pid on the spawning node."""

        async def scenario() -> None:
            async with Node("n1") as node:
                pids = [node.spawn(idle) for _ in range(100)]
                assert len(set(pids)) == 100
                assert {p.node for p in pids} == {"n1"}
                assert node.process_count == 100

        run(scenario)

    def test_node_exit_stops_every_process(self, run: Any) -> None:
        """Leaving the node block stops all processes with Shutdown and returns."""
        reasons: list[Any] = []

        async def scenario() -> None:
            async with Node("n1") as node:

                async def watcher() -> None:
                    ref = runtime.monitor(target)
                    reasons.append(ref)
                    await runtime.receive()

                target = node.spawn(idle)
                node.spawn(watcher)
                await settle()
            assert node.process_count == 0

        run(scenario)

    def test_spawn_after_stop_raises(self, run: Any) -> None:
        """A stopped node refuses new processes with NodeClosed."""

        async def scenario() -> None:
            async with Node("n1") as node:
                node.stop()
                with pytest.raises(runtime.NodeClosed):
                    node.spawn(idle)

        run(scenario)


class TestExitReasons:
    @pytest.mark.parametrize(
        ("body_kind", "expected"),
        [
            ("return", Normal()),
            ("exit_shutdown", Shutdown("done")),
            ("exit_abnormal", Abnormal("bad")),
        ],
    )
    def test_reason_of_ending(self, run: Any, body_kind: str, expected: Any) -> None:
        """A process's exit reason says how it ended."""

        async def body() -> None:
            if body_kind == "exit_shutdown":
                runtime.exit(Shutdown("done"))
            if body_kind == "exit_abnormal":
                runtime.exit(Abnormal("bad"))

        got: list[Any] = []

        async def watcher() -> None:
            _pid, _ = runtime.spawn_monitor(body)
            got.append(await runtime.receive())

        async def scenario() -> None:
            async with Node("n1") as node:
                node.spawn(watcher)
                await settle()

        run(scenario)
        assert len(got) == 1
        assert isinstance(got[0], Down)
        assert expected == got[0].reason

    def test_crash_ends_only_that_process_with_report(self, run: Any) -> None:
        """An uncaught exception ends its process alone, with Crashed and a crash report."""
        got: list[Any] = []

        async def bad() -> None:
            raise ValueError("boom")

        async def scenario() -> None:
            async with Node("n1") as node:
                bystander = node.spawn(idle)

                async def watcher() -> None:
                    runtime.spawn_monitor(bad)
                    got.append(await runtime.receive())

                with capture_logs() as logs:
                    node.spawn(watcher)
                    await settle()
                assert node.is_alive(bystander)
                crash = [e for e in logs if e["event"] == "process_crashed"]
                assert len(crash) == 1
                assert crash[0]["node"] == "n1"
                assert crash[0]["log_level"] == "error"
                assert "ValueError" in crash[0]["reason"]
                assert isinstance(crash[0]["exc_info"], ValueError)
                rendered = structlog.processors.format_exc_info(None, "error", dict(crash[0]))
                assert "Traceback" in rendered["exception"]
                assert 'raise ValueError("boom")' in rendered["exception"]

        run(scenario)
        reason = got[0].reason
        assert isinstance(reason, Crashed)
        assert (reason.kind, reason.message) == ("ValueError", "boom")
        assert isinstance(reason.exc, ValueError)

    def test_crash_that_came_over_the_wire_reports_the_senders_traceback(self, run: Any) -> None:
        """A Crashed reason with no local exception (decoded from another node) still
        carries its traceback text into the crash report."""
        remote = Crashed("ValueError", "boom", 'Traceback ...\n  raise ValueError("boom")\n')

        async def relay() -> None:
            runtime.exit(remote)

        async def scenario() -> None:
            async with Node("n1") as node:
                with capture_logs() as logs:
                    node.spawn(relay)
                    await settle()
                crash = [e for e in logs if e["event"] == "process_crashed"]
                assert len(crash) == 1
                assert crash[0]["traceback"] == remote.traceback
                assert "exc_info" not in crash[0]

        run(scenario)

    def test_except_exception_cannot_swallow_exit(self, run: Any) -> None:
        """runtime.exit raises a BaseException, so `except Exception` does not stop it."""
        got: list[Any] = []

        async def body() -> None:
            try:
                runtime.exit(Shutdown("x"))
            except Exception:  # pragma: no cover - must not happen
                got.append("swallowed")

        async def watcher() -> None:
            runtime.spawn_monitor(body)
            got.append((await runtime.receive()).reason)

        async def scenario() -> None:
            async with Node("n1") as node:
                node.spawn(watcher)
                await settle()

        run(scenario)
        assert got == [Shutdown("x")]


async def _no_more() -> None:
    """Nothing between the signal and the wait for the Down."""


def run_in_process(run: Any, fn: Callable[[], Awaitable[None]]) -> None:
    """Run *fn* as a process on a fresh node; return once it has returned (or failed)."""

    async def scenario() -> None:
        async with Node("n1") as node:
            done = anyio.Event()

            async def body() -> None:
                try:
                    await fn()
                finally:
                    done.set()

            node.spawn(body)
            await done.wait()

    run(scenario)


def exit_while_waiting(
    run: Any,
    body: Callable[[], Awaitable[None]],
    reason: Any,
    then: Callable[[runtime.Pid], Awaitable[None]] = lambda _pid: _no_more(),
) -> Any:
    """Spawn *body* monitored, send it the exit signal *reason* once it waits, await
    ``then(pid)``, and return the reason of its ``Down``."""
    got: list[Any] = []

    async def watcher() -> None:
        pid, _ = runtime.spawn_monitor(body)
        await settle()
        runtime.send_exit(pid, reason)
        await then(pid)
        got.append((await runtime.receive()).reason)

    run_in_process(run, watcher)
    return got[0]


class TestExitSignalWhereTheProcessWaits:
    """An exit signal ends a process wherever it waits, as its cancellation would."""

    def test_parked_in_receive_cleanup_runs_and_cannot_wait(self, run: Any) -> None:
        """Killed while parked in receive: its cleanup runs, and any wait in it fails."""
        seen: list[str] = []

        async def body() -> None:
            try:
                await runtime.receive()
            finally:
                seen.append("cleanup")
                try:
                    await anyio.sleep_forever()
                except anyio.get_cancelled_exc_class():
                    seen.append("wait in cleanup cancelled")
                    raise

        assert exit_while_waiting(run, body, Shutdown("stop")) == Shutdown("stop")
        assert seen == ["cleanup", "wait in cleanup cancelled"]

    def test_a_shielded_receive_is_not_interrupted(self, run: Any) -> None:
        """A receive under a shielded scope finishes; the exit lands at the next wait."""
        seen: list[Any] = []

        async def body() -> None:
            with anyio.CancelScope(shield=True):
                seen.append(await runtime.receive())
            seen.append("left the shield")
            await runtime.receive()
            seen.append("not reached")

        async def then(pid: runtime.Pid) -> None:
            await settle()
            seen.append(("alive", runtime.current_node().is_alive(pid)))
            runtime.send(pid, "hello")

        assert exit_while_waiting(run, body, Shutdown("stop"), then) == Shutdown("stop")
        assert seen == [("alive", True), "hello", "left the shield"]

    def test_parked_in_receive_inside_a_task_group(self, run: Any) -> None:
        """Killed while waiting inside its own task group: the group's tasks end too."""
        seen: list[str] = []

        async def helper() -> None:
            try:
                await anyio.sleep_forever()
            finally:
                seen.append("helper ended")

        async def body() -> None:
            async with anyio.create_task_group() as tg:
                tg.start_soon(helper)
                await runtime.receive()

        assert exit_while_waiting(run, body, Abnormal("stop")) == Abnormal("stop")
        assert seen == ["helper ended"]


class TestExitAndWait:
    """``exit_and_wait``: send an exit signal and wait for the end, as a supervisor does."""

    def test_returns_how_the_process_ended(self, run: Any) -> None:
        """The reason comes back once the process is gone; no message is left behind."""
        got: list[Any] = []

        async def caller() -> None:
            pid = runtime.spawn(idle)
            got.append(await runtime.exit_and_wait(pid, Shutdown("stop")))
            got.append(runtime.current_node().is_alive(pid))
            got.append(await runtime.exit_and_wait(pid, Shutdown("again")))
            try:
                got.append(await runtime.receive(timeout=0))
            except runtime.ReceiveTimeout:
                got.append("mailbox empty")

        run_in_process(run, caller)
        assert got == [Shutdown("stop"), False, NoProc(), "mailbox empty"]

    def test_times_out_on_a_process_that_traps_the_signal(self, run: Any) -> None:
        """A trapping process that does not end: CallTimeout, still alive; Kill ends it."""
        got: list[Any] = []

        async def stubborn() -> None:
            runtime.trap_exit()
            while True:
                await runtime.receive()

        async def caller() -> None:
            pid = runtime.spawn(stubborn)
            await settle()
            try:
                await runtime.exit_and_wait(pid, Shutdown("stop"), timeout=5)
            except runtime.CallTimeout:
                got.append("timed out")
            got.append(runtime.current_node().is_alive(pid))
            got.append(await runtime.exit_and_wait(pid, Kill()))

        run_in_process(run, caller)
        assert got == ["timed out", True, Killed()]

    def test_from_outside_any_process(self, run: Any) -> None:
        """Inside ``async with Node()`` but in no process, the node sends the signal."""

        async def scenario() -> Any:
            async with Node("n1") as node:
                pid = node.spawn(idle)
                return await runtime.exit_and_wait(pid, Abnormal("bye"))

        assert run(scenario) == Abnormal("bye")


class TestLinks:
    def test_linked_crash_chain(self, run: Any) -> None:
        """A crash propagates along a chain of links, each process ending with the same reason."""
        downs: dict[str, Any] = {}

        async def chain(depth: int) -> None:
            if depth == 0:
                await anyio.sleep(1)
                raise RuntimeError("bottom")
            runtime.spawn_link(chain, depth - 1)
            await runtime.receive()

        async def watcher() -> None:
            _pid, _ = runtime.spawn_monitor(chain, 3)
            downs["top"] = await runtime.receive()

        async def scenario() -> None:
            async with Node("n1") as node:
                node.spawn(watcher)
                await anyio.sleep(2)
                assert node.process_count == 0

        run(scenario)
        reason = downs["top"].reason
        assert isinstance(reason, Crashed)
        assert reason.message == "bottom"

    def test_normal_exit_does_not_kill_linked(self, run: Any) -> None:
        """A linked process that ends Normal leaves its partner alive."""

        async def quick() -> None:
            return

        async def parent(out: list[bool]) -> None:
            runtime.spawn_link(quick)
            await anyio.sleep(1)
            out.append(True)

        out: list[bool] = []

        async def scenario() -> None:
            async with Node("n1") as node:
                node.spawn(parent, out)
                await anyio.sleep(2)

        run(scenario)
        assert out == [True]

    def test_trap_exit_turns_signal_into_message(self, run: Any) -> None:
        """A process that traps exits receives Exit(pid, reason) instead of dying."""
        got: list[Any] = []

        async def bad() -> None:
            raise KeyError("k")

        async def trapper() -> None:
            runtime.trap_exit(True)
            child = runtime.spawn_link(bad)
            msg = await runtime.receive()
            got.append((msg, child))

        async def scenario() -> None:
            async with Node("n1") as node:
                node.spawn(trapper)
                await settle()

        run(scenario)
        msg, child = got[0]
        assert isinstance(msg, Exit)
        assert msg.pid == child
        assert isinstance(msg.reason, Crashed)

    def test_trap_exit_gets_normal_exit_message(self, run: Any) -> None:
        """A trapping process is told of a linked process's normal exit too."""
        got: list[Any] = []

        async def quick() -> None:
            return

        async def trapper() -> None:
            runtime.trap_exit()
            child = runtime.spawn_link(quick)
            got.append(await runtime.receive())
            got.append(child)

        async def scenario() -> None:
            async with Node("n1") as node:
                node.spawn(trapper)
                await settle()

        run(scenario)
        assert got[0] == Exit(got[1], Normal())

    def test_kill_cannot_be_trapped(self, run: Any) -> None:
        """exit(pid, Kill()) ends even a trapping process, with reason Killed."""
        got: list[Any] = []

        async def trapper() -> None:
            runtime.trap_exit(True)
            while True:
                got.append(await runtime.receive())

        async def killer(target: runtime.Pid) -> None:
            runtime.monitor(target)
            runtime.send_exit(target, Kill())
            got.append(await runtime.receive())

        async def scenario() -> None:
            async with Node("n1") as node:
                t = node.spawn(trapper)
                await settle()
                node.spawn(killer, t)
                await settle()
                assert not node.is_alive(t)

        run(scenario)
        assert len(got) == 1
        assert got[0].reason == Killed()

    def test_killed_propagates_as_trappable(self, run: Any) -> None:
        """A linked partner of a killed process gets Killed, which it can trap."""
        got: list[Any] = []

        async def trapper(out: list[Any]) -> None:
            runtime.trap_exit(True)
            victim = runtime.spawn_link(idle)
            out.append(victim)
            got.append(await runtime.receive())

        async def scenario() -> None:
            async with Node("n1") as node:
                out: list[Any] = []
                t = node.spawn(trapper, out)
                await settle()
                node.exit(out[0], Kill())
                await settle()
                assert node.is_alive(t) or got

        run(scenario)
        assert isinstance(got[0], Exit)
        assert got[0].reason == Killed()

    def test_exit_signal_kills_non_trapping(self, run: Any) -> None:
        """exit(pid, reason) with an abnormal reason ends a non-trapping process with it."""
        got: list[Any] = []

        async def watcher(target: runtime.Pid) -> None:
            runtime.monitor(target)
            runtime.send_exit(target, Abnormal("stop it"))
            got.append(await runtime.receive())

        async def scenario() -> None:
            async with Node("n1") as node:
                t = node.spawn(idle)
                node.spawn(watcher, t)
                await settle()

        run(scenario)
        assert got[0].reason == Abnormal("stop it")

    def test_exit_normal_ignored_by_non_trapping(self, run: Any) -> None:
        """exit(pid, Normal()) does nothing to a process that does not trap exits."""

        async def scenario() -> None:
            async with Node("n1") as node:
                t = node.spawn(idle)
                node.exit(t, Normal())
                await settle()
                assert node.is_alive(t)

        run(scenario)

    def test_link_to_dead_pid_gives_noproc(self, run: Any) -> None:
        """Linking to a dead process sends the caller an exit signal NoProc."""
        got: list[Any] = []

        async def quick() -> None:
            return

        async def linker(dead: runtime.Pid) -> None:
            runtime.trap_exit(True)
            runtime.link(dead)
            got.append(await runtime.receive())

        async def scenario() -> None:
            async with Node("n1") as node:
                dead = node.spawn(quick)
                await settle()
                node.spawn(linker, dead)
                await settle()

        run(scenario)
        assert got[0].reason == NoProc()

    def test_unlink_stops_propagation(self, run: Any) -> None:
        """After unlink, a partner's crash no longer reaches us."""
        alive: list[bool] = []

        async def doomed() -> None:
            await anyio.sleep(1)
            raise RuntimeError("x")

        async def parent() -> None:
            child = runtime.spawn_link(doomed)
            runtime.unlink(child)
            await anyio.sleep(2)
            alive.append(True)

        async def scenario() -> None:
            async with Node("n1") as node:
                node.spawn(parent)
                await anyio.sleep(3)

        run(scenario)
        assert alive == [True]

    def test_linking_twice_is_one_link(self, run: Any) -> None:
        """A second link is a no-op: one Exit when the partner dies, one unlink undoes it."""
        got: list[Any] = []

        async def doomed() -> None:
            await runtime.receive()
            raise RuntimeError("x")

        async def parent() -> None:
            runtime.trap_exit(True)
            first = runtime.spawn_link(doomed)
            runtime.link(first)
            runtime.link(first)
            runtime.send(first, "die")
            got.append((await runtime.receive()).pid == first)
            try:
                got.append(await runtime.receive(timeout=1))
            except runtime.ReceiveTimeout:
                got.append("one exit only")
            second = runtime.spawn_link(doomed)
            runtime.link(second)
            runtime.unlink(second)
            runtime.send(second, "die")
            try:
                got.append(await runtime.receive(timeout=1))
            except runtime.ReceiveTimeout:
                got.append("unlinked")

        run_in_process(run, parent)
        assert got == [True, "one exit only", "unlinked"]


class TestMonitors:
    def test_monitor_dead_pid_gives_noproc(self, run: Any) -> None:
        """Monitoring a pid that is already dead delivers Down with NoProc at once."""
        got: list[Any] = []

        async def quick() -> None:
            return

        async def watcher(dead: runtime.Pid) -> None:
            ref = runtime.monitor(dead)
            got.append((ref, await runtime.receive(timeout=0)))

        async def scenario() -> None:
            async with Node("n1") as node:
                dead = node.spawn(quick)
                await settle()
                node.spawn(watcher, dead)
                await settle()

        run(scenario)
        ref, down = got[0]
        assert down.ref == ref
        assert down.reason == NoProc()

    def test_monitor_unregistered_name_gives_noproc(self, run: Any) -> None:
        """Monitoring a name nobody holds delivers Down with NoProc."""
        got: list[Any] = []

        async def watcher() -> None:
            runtime.monitor("nobody")
            got.append(await runtime.receive(timeout=0))

        async def scenario() -> None:
            async with Node("n1") as node:
                node.spawn(watcher)
                await settle()

        run(scenario)
        assert got[0].reason == NoProc()
        assert got[0].pid == Name("nobody", "n1")

    def test_monitor_by_name_reports_the_name(self, run: Any) -> None:
        """A Down for a monitor set on a registered name carries the name, as Erlang's."""
        got: list[Any] = []

        async def watcher() -> None:
            ref = runtime.monitor("svc")
            svc = runtime.whereis("svc")
            assert svc is not None
            runtime.send_exit(svc, Abnormal("gone"))
            got.append((ref, await runtime.receive()))

        async def scenario() -> None:
            async with Node("n1") as node:
                node.spawn(idle, name="svc")
                node.spawn(watcher)
                await settle()

        run(scenario)
        ref, down = got[0]
        assert down == Down(ref, Name("svc", "n1"), Abnormal("gone"))

    def test_monitor_fires_once_and_demonitor_flush(self, run: Any) -> None:
        """Two monitors give two Downs; a cancelled monitor gives none."""
        got: list[Any] = []

        async def watcher(target: runtime.Pid) -> None:
            r1 = runtime.monitor(target)
            r2 = runtime.monitor(target)
            r3 = runtime.monitor(target)
            assert runtime.demonitor(r3)
            assert not runtime.demonitor(r3)
            runtime.send_exit(target, Kill())
            a = await runtime.receive()
            b = await runtime.receive()
            got.append({a.ref, b.ref} == {r1, r2})
            with pytest.raises(runtime.ReceiveTimeout):
                await runtime.receive(timeout=1)
            got.append("no third")

        async def scenario() -> None:
            async with Node("n1") as node:
                t = node.spawn(idle)
                node.spawn(watcher, t)
                await anyio.sleep(2)

        run(scenario)
        assert got == [True, "no third"]

    def test_watcher_death_removes_its_monitors(self, run: Any) -> None:
        """When a watcher dies, its monitors are gone: the target keeps no record of them."""

        async def watcher(target: runtime.Pid) -> None:
            runtime.monitor(target)

        async def scenario() -> None:
            async with Node("n1") as node:
                t = node.spawn(idle)
                node.spawn(watcher, t)
                await settle()
                assert not node.process(t).watchers

        run(scenario)

    def test_demonitor_flush_removes_delivered_down(self, run: Any) -> None:
        """demonitor(ref, flush=True) after the target died removes its Down, keeping the rest."""
        got: list[Any] = []

        async def watcher(target: runtime.Pid) -> None:
            ref = runtime.monitor(target)
            runtime.send(runtime.self_pid(), "before")
            runtime.send_exit(target, Kill())
            await anyio.sleep(1)
            assert not runtime.demonitor(ref, flush=True)
            runtime.send(runtime.self_pid(), "after")
            got.append(await runtime.receive())
            got.append(await runtime.receive())
            with pytest.raises(runtime.ReceiveTimeout):
                await runtime.receive(timeout=0)

        async def scenario() -> None:
            async with Node("n1") as node:
                t = node.spawn(idle)
                node.spawn(watcher, t)
                await anyio.sleep(2)

        run(scenario)
        assert got == ["before", "after"]
