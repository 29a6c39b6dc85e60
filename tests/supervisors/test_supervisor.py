"""The Supervisor process: its public API, shutdown protocol, backoff, parents and logs.

The helpers at the top are shared with ``test_supervisor_suite`` and ``test_dynamic``.
Time assertions run on trio only (MockClock with autojump); the rest on both backends.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

import anyio
import anyio.lowlevel
import pytest
from structlog.testing import capture_logs

import runtime
import supervisors
from runtime import Abnormal, Exit, ExitReason, GenServer, Killed, Node, Normal, Pid, Shutdown
from supervisors import (
    BRUTAL_KILL,
    INFINITY,
    Backoff,
    ChildSpec,
    ChildType,
    Restart,
    Strategy,
    SupFlags,
)
from tests.conftest import run_on

# -- shared helpers ------------------------------------------------------------------------


async def settle() -> None:
    """Let every runnable task run (several scheduler passes)."""
    for _ in range(50):
        await anyio.lowlevel.checkpoint()


class Watch:
    """Watch a process from main code: ``await w.reason()`` is its exit reason."""

    def __init__(self, pid: Pid) -> None:
        self.pid = pid
        self._done = anyio.Event()
        self._reason: ExitReason | None = None
        runtime.current_node().monitor(None, pid, callback=self._fire)

    def _fire(self, reason: ExitReason) -> None:
        self._reason = reason
        self._done.set()

    @property
    def done(self) -> bool:
        """True once the process has ended."""
        return self._done.is_set()

    async def reason(self) -> ExitReason:
        """Wait for the process to end; its exit reason."""
        await self._done.wait()
        assert self._reason is not None
        return self._reason


async def member(started: list[str] | None = None, tag: str = "") -> None:
    """A child that records its start and obeys ``("exit", reason)`` and ``"crash"``."""
    if started is not None:
        started.append(tag)
    while True:
        msg = await runtime.receive()
        if msg == "crash":
            raise RuntimeError("asked to crash")
        if isinstance(msg, tuple) and msg[0] == "exit":
            runtime.exit(msg[1])


async def stubborn() -> None:
    """A child that traps exits and ignores them: only Kill stops it."""
    runtime.trap_exit(True)
    while True:
        await runtime.receive()


async def slow_to_stop(delay: float) -> None:
    """A child that takes *delay* seconds to stop after an exit signal, then exits Shutdown."""
    runtime.trap_exit(True)
    await runtime.receive(lambda m: isinstance(m, Exit))
    await anyio.sleep(delay)
    runtime.exit(Shutdown())


async def end(pid: Pid, reason: ExitReason) -> None:
    """Make child *pid* exit by itself with *reason*; return once it has ended."""
    w = Watch(pid)
    runtime.send(pid, ("exit", reason))
    assert reason == await w.reason()


async def signal(pid: Pid, reason: ExitReason) -> ExitReason:
    """Send *pid* the exit signal *reason*; return its exit reason once it has ended."""
    w = Watch(pid)
    runtime.send_exit(pid, reason)
    return await w.reason()


def spec(id: str, restart: Restart = Restart.PERMANENT, **kw: Any) -> ChildSpec:
    """An obedient worker child."""
    return supervisors.worker_spec(id, member, restart=restart, **kw)


async def pids(sup: Pid) -> dict[str, Pid | None]:
    """The supervisor's children, id -> pid, in start order."""
    return {c.id: c.pid for c in await supervisors.which_children(sup)}


async def counts(sup: Pid) -> tuple[int, int, int, int]:
    """count_children as OTP's [specs, active, supervisors, workers]."""
    c = await supervisors.count_children(sup)
    return (c.specs, c.active, c.supervisors, c.workers)


class Flaky:
    """A start function that fails (raises) while ``failing`` is set; counts its calls."""

    def __init__(self, *, failing: bool = False, fn: Callable[..., Any] = member) -> None:
        self.failing = failing
        self.calls = 0
        self.fn = fn

    def start(self) -> Pid:
        """Spawn the child linked to the supervisor, or raise."""
        self.calls += 1
        if self.failing:
            raise RuntimeError("cannot start")
        return runtime.spawn_link(self.fn)


def events(logs: list[dict[str, Any]], name: str) -> list[dict[str, Any]]:
    """The captured log events called *name*."""
    return [e for e in logs if e["event"] == name]


# -- tests -------------------------------------------------------------------------------


class Counter(GenServer):
    """A GenServer child: answers ``"get"`` with its init argument."""

    async def init(self, value: int) -> None:
        self.value = value

    async def handle_call(self, request: Any, from_: Any) -> Any:
        return self.value


class FailingInit(GenServer):
    """A GenServer whose init raises."""

    async def init(self) -> None:
        raise ValueError("bad config")


class TestSpecHelpers:
    def test_worker_spec_runs_function_linked(self, run: Any) -> None:
        """worker_spec starts fn(*args) in a process linked to the supervisor."""
        got: list[Any] = []

        async def body(a: int, b: int) -> None:
            got.append(a + b)
            await runtime.receive()

        async def scenario() -> None:
            async with Node("n1"):
                sup = await supervisors.start_supervisor([supervisors.worker_spec("w", body, 2, 3)])
                await settle()
                assert got == [5]
                info = (await supervisors.which_children(sup))[0]
                assert (
                    info.id,
                    info.type,
                    info.restart,
                ) == ("w", ChildType.WORKER, Restart.PERMANENT)
                assert isinstance(info.pid, Pid)

        run(scenario)

    def test_server_spec_starts_genserver_with_init_args(self, run: Any) -> None:
        """server_spec starts a fresh GenServer instance per start, registered by name."""

        async def scenario() -> None:
            async with Node("n1"):
                child = supervisors.server_spec("c", Counter, 41, name="counter")
                await supervisors.start_supervisor([child])
                assert await runtime.call("counter", "get") == 41
                old = runtime.whereis("counter")
                assert old is not None
                assert Killed() == await signal(old, runtime.Kill())
                await settle()
                assert await runtime.call("counter", "get") == 41
                assert old != runtime.whereis("counter")

        run(scenario)

    def test_supervisor_spec_defaults(self) -> None:
        """supervisor_spec makes a SUPERVISOR child with shutdown INFINITY."""
        s = supervisors.supervisor_spec("s", [spec("a")], flags=SupFlags(intensity=3))
        assert (s.type, s.shutdown) == (ChildType.SUPERVISOR, INFINITY)

    def test_supervisor_spec_rejects_flags_with_class(self) -> None:
        """Flags of a callback-class supervisor come from its init, not from flags=."""

        class Sup(supervisors.Supervisor):
            def init(self, *args: Any) -> Any:
                return SupFlags(), []

        with pytest.raises(TypeError):
            supervisors.supervisor_spec("s", Sup, flags=SupFlags())


class TestCallbackSupervisor:
    def test_init_runs_in_supervisor_with_args(self, run: Any) -> None:
        """Supervisor.start runs init(*args) inside the new supervisor process."""
        seen: list[Any] = []

        class Sup(supervisors.Supervisor):
            async def init(self, n: int) -> Any:
                seen.append(runtime.self_pid())
                return SupFlags(), [spec(f"w{i}") for i in range(n)]

        async def scenario() -> None:
            async with Node("n1"):
                sup = await Sup.start(3, name="top")
                assert [sup] == seen
                assert sup == runtime.whereis("top")
                assert list(await pids(sup)) == ["w0", "w1", "w2"]

        run(scenario)

    def test_init_returning_none_is_ignore(self, run: Any) -> None:
        """init returning None makes start return None; the supervisor exits normal."""

        class Sup(supervisors.Supervisor):
            def init(self, *args: Any) -> Any:
                return None

        async def scenario() -> None:
            async with Node("n1") as node:
                assert await Sup.start(name="gone") is None
                await settle()
                assert runtime.whereis("gone") is None
                assert node.process_count == 0

        run(scenario)

    def test_init_raising_fails_start(self, run: Any) -> None:
        """An init that raises fails start with StartFailed (id "<init>", Crashed)."""

        class Sup(supervisors.Supervisor):
            def init(self, *args: Any) -> Any:
                raise KeyError("oops")

        async def scenario() -> None:
            async with Node("n1"):
                with pytest.raises(supervisors.StartFailed) as info:
                    await Sup.start()
                assert info.value.id == "<init>"
                assert isinstance(info.value.reason, runtime.Crashed)

        run(scenario)

    def test_nested_callback_supervisor(self, run: Any) -> None:
        """A callback-class supervisor runs under another via supervisor_spec(id, Cls, *args)."""

        class Inner(supervisors.Supervisor):
            def init(self, ids: list[str]) -> Any:
                return SupFlags(), [spec(i) for i in ids]

        async def scenario() -> None:
            async with Node("n1"):
                top = await supervisors.start_supervisor(
                    [supervisors.supervisor_spec("inner", Inner, ["x", "y"])]
                )
                inner = (await pids(top))["inner"]
                assert inner is not None
                assert list(await pids(inner)) == ["x", "y"]
                assert await counts(top) == (1, 1, 1, 0)

        run(scenario)


class TestGetChildspec:
    def test_get_childspec_outcomes(self, run: Any) -> None:
        """get_childspec returns the kept spec, or raises NotFound."""

        async def scenario() -> None:
            async with Node("n1"):
                a = spec("a", shutdown=BRUTAL_KILL)
                sup = await supervisors.start_supervisor([a])
                assert a == await supervisors.get_childspec(sup, "a")
                with pytest.raises(supervisors.NotFound):
                    await supervisors.get_childspec(sup, "b")

        run(scenario)


class TestShutdownProtocol:
    def test_stubborn_child_killed_exactly_at_timeout(self) -> None:
        """A child that traps exits and ignores Shutdown is killed at its shutdown timeout."""
        got: list[Any] = []

        async def scenario() -> None:
            async with Node("n1"):
                child = supervisors.worker_spec("s", stubborn, shutdown=2.5)
                sup = await supervisors.start_supervisor([child])
                pid = (await pids(sup))["s"]
                assert pid is not None
                w = Watch(pid)
                t0 = anyio.current_time()
                with capture_logs() as logs:
                    await supervisors.terminate_child(sup, "s")
                got.append((anyio.current_time() - t0, await w.reason()))
                got.append(events(logs, "shutdown_error"))

        run_on("trio", scenario)
        assert (2.5, Killed()) == got[0]
        assert [(e["child_id"], e["offender"], e["reason"]) for e in got[1]] == [
            ("s", "s", "killed")
        ]

    def test_child_stopping_in_time_is_not_killed(self) -> None:
        """A child that stops within its timeout ends Shutdown, after exactly its own delay."""
        got: list[Any] = []

        async def scenario() -> None:
            async with Node("n1"):
                child = supervisors.worker_spec("s", slow_to_stop, 1.5, shutdown=2.0)
                sup = await supervisors.start_supervisor([child])
                pid = (await pids(sup))["s"]
                assert pid is not None
                w = Watch(pid)
                t0 = anyio.current_time()
                with capture_logs() as logs:
                    await supervisors.terminate_child(sup, "s")
                got.append((anyio.current_time() - t0, await w.reason()))
                got.append(events(logs, "shutdown_error"))

        run_on("trio", scenario)
        assert [(1.5, Shutdown()), []] == got

    def test_brutal_kill_kills_at_once(self) -> None:
        """A BRUTAL_KILL child is killed at once, without a shutdown_error."""
        got: list[Any] = []

        async def scenario() -> None:
            async with Node("n1"):
                child = supervisors.worker_spec("s", stubborn, shutdown=BRUTAL_KILL)
                sup = await supervisors.start_supervisor([child])
                pid = (await pids(sup))["s"]
                assert pid is not None
                w = Watch(pid)
                with capture_logs() as logs:
                    await supervisors.terminate_child(sup, "s")
                got.append((anyio.current_time(), await w.reason()))
                got.append(events(logs, "shutdown_error"))

        run_on("trio", scenario)
        assert [(0.0, Killed()), []] == got

    def test_infinity_waits_as_long_as_it_takes(self) -> None:
        """With INFINITY the supervisor waits for the child however long it takes."""
        got: list[Any] = []

        async def scenario() -> None:
            async with Node("n1"):
                child = supervisors.worker_spec("s", slow_to_stop, 1000.0, shutdown=INFINITY)
                sup = await supervisors.start_supervisor([child])
                pid = (await pids(sup))["s"]
                assert pid is not None
                w = Watch(pid)
                await supervisors.terminate_child(sup, "s")
                got.append((anyio.current_time(), await w.reason()))

        run_on("trio", scenario)
        assert [(1000.0, Shutdown())] == got

    def test_supervisor_stays_responsive_child_unlinked(self, run: Any) -> None:
        """A child that unlinked from its supervisor is still stopped (monitor, not link)."""

        async def unlinker() -> None:
            for p in list(runtime.node().process(runtime.self_pid()).links or ()):
                runtime.unlink(p)
            await runtime.receive()

        async def scenario() -> None:
            async with Node("n1"):
                sup = await supervisors.start_supervisor(
                    [supervisors.worker_spec("u", unlinker, shutdown=1.0)]
                )
                await settle()
                pid = (await pids(sup))["u"]
                assert pid is not None
                w = Watch(pid)
                await supervisors.terminate_child(sup, "u")
                assert Shutdown() == await w.reason()
                assert await pids(sup) == {"u": None}

        run(scenario)

    def test_children_stop_in_reverse_start_order(self, run: Any) -> None:
        """Stopping a supervisor stops its children newest first, each before the next."""
        order: list[str] = []

        async def recorder(tag: str) -> None:
            runtime.trap_exit(True)
            await runtime.receive(lambda m: isinstance(m, Exit))
            order.append(tag)

        async def scenario() -> None:
            async with Node("n1"):
                kids = [supervisors.worker_spec(t, recorder, t) for t in "abcd"]
                sup = await supervisors.start_supervisor(kids)
                await settle()
                await supervisors.stop(sup)

        run(scenario)
        assert order == ["d", "c", "b", "a"]


class TestParent:
    def test_parent_exit_stops_children_with_same_reason(self, run: Any) -> None:
        """When its parent exits, the supervisor stops its children and exits the same way."""
        got: list[Any] = []

        async def scenario() -> None:
            async with Node("n1") as node:

                async def parent() -> None:
                    sup = await supervisors.start_supervisor([spec("a"), spec("b")], link=True)
                    got.append(sup)
                    kids = await pids(sup)
                    got.append(kids)
                    await runtime.receive()
                    runtime.exit(Abnormal("parent_died"))

                p = node.spawn(parent)
                await settle()
                sup, kids = got
                w = Watch(sup)
                cw = [Watch(c) for c in kids.values()]
                runtime.send(p, "go")
                got.clear()
                got.append(await w.reason())
                got.extend([await c.reason() for c in cw])

        run(scenario)
        assert [Abnormal("parent_died"), Shutdown(), Shutdown()] == got

    def test_parent_normal_exit_stops_supervisor(self, run: Any) -> None:
        """A parent's normal exit also ends a linked supervisor (it traps exits), normally."""
        got: list[Any] = []

        async def scenario() -> None:
            async with Node("n1") as node:

                async def parent() -> None:
                    got.append(await supervisors.start_supervisor([spec("a")], link=True))
                    await runtime.receive()

                p = node.spawn(parent)
                await settle()
                w = Watch(got[0])
                runtime.send(p, "go")
                got.append(await w.reason())

        run(scenario)
        assert Normal() == got[1]

    def test_exit_from_stranger_is_ignored(self, run: Any) -> None:
        """An exit signal from a process that is neither parent nor child is logged, ignored."""

        async def scenario() -> None:
            async with Node("n1") as node:
                sup = await supervisors.start_supervisor([spec("a")])

                async def stranger() -> None:
                    runtime.send_exit(sup, Shutdown())

                with capture_logs() as logs:
                    node.spawn(stranger)
                    await settle()
                    assert list(await pids(sup)) == ["a"]
                assert len(events(logs, "exit_ignored")) == 1

        run(scenario)

    def test_kill_ends_supervisor_and_children(self, run: Any) -> None:
        """Killing a supervisor ends it Killed; its children get the Killed exit signal."""

        async def scenario() -> None:
            async with Node("n1"):
                sup = await supervisors.start_supervisor([spec("a")])
                pid = (await pids(sup))["a"]
                assert pid is not None
                w = Watch(pid)
                assert Killed() == await signal(sup, runtime.Kill())
                assert Killed() == await w.reason()

        run(scenario)


class TestStop:
    def test_stop_returns_after_exit(self, run: Any) -> None:
        """stop() returns once the supervisor has exited with the given reason."""

        async def scenario() -> None:
            async with Node("n1") as node:
                sup = await supervisors.start_supervisor([spec("a")], name="s")
                w = Watch(sup)
                await supervisors.stop("s", Shutdown("bye"))
                assert w.done
                assert Shutdown("bye") == await w.reason()
                assert node.process_count == 0

        run(scenario)

    def test_calls_to_dead_supervisor_raise_server_exited(self, run: Any) -> None:
        """Every operation on a supervisor that is not running raises ServerExited."""

        async def scenario() -> None:
            async with Node("n1"):
                sup = await supervisors.start_supervisor([])
                await supervisors.stop(sup)
                for op in (
                    supervisors.which_children(sup),
                    supervisors.count_children(sup),
                    supervisors.start_child(sup, spec("a")),
                    supervisors.terminate_child(sup, "a"),
                    supervisors.stop(sup),
                    supervisors.which_children("no_such_name"),
                ):
                    with pytest.raises(runtime.ServerExited):
                        await op

        run(scenario)


class TestBackoff:
    def test_backoff_delays_restart_without_blocking_calls(self) -> None:
        """A restart with backoff waits its delay; meanwhile calls are answered at once."""
        got: list[Any] = []
        times: list[float] = []

        async def timed() -> None:
            times.append(anyio.current_time())
            await member()

        async def scenario() -> None:
            async with Node("n1"):
                b = Backoff(initial=1.0, max=10.0, jitter=0.0)
                child = supervisors.worker_spec("a", timed, backoff=b)
                sup = await supervisors.start_supervisor([child, spec("z")], SupFlags(intensity=10))
                pid = (await pids(sup))["a"]
                assert pid is not None
                with capture_logs() as logs:
                    await end(pid, Abnormal("x"))
                    info = (await supervisors.which_children(sup))[0]
                    got.append((anyio.current_time(), info.pid, info.restarting))
                    got.append(await counts(sup))
                    with pytest.raises(supervisors.Restarting):
                        await supervisors.restart_child(sup, "a")
                    with pytest.raises(supervisors.Restarting):
                        await supervisors.delete_child(sup, "a")
                    with pytest.raises(supervisors.AlreadyPresent):
                        await supervisors.start_child(sup, spec("a"))
                    await anyio.sleep(1.5)
                    second = (await pids(sup))["a"]
                    assert second is not None
                    await end(second, Abnormal("x"))
                    await anyio.sleep(5)
                got.append(times)
                got.append([e["delay"] for e in events(logs, "restart_delayed")])

        run_on("trio", scenario)
        assert got == [(0.0, None, True), (2, 1, 0, 2), [0.0, 1.0, 3.5], [1.0, 2.0]]

    def test_terminate_child_cancels_pending_restart(self) -> None:
        """terminate_child on a child waiting for its backoff cancels the restart."""
        got: list[Any] = []

        async def scenario() -> None:
            async with Node("n1"):
                b = Backoff(initial=5.0, max=5.0, jitter=0.0)
                sup = await supervisors.start_supervisor([spec("a", backoff=b)])
                pid = (await pids(sup))["a"]
                assert pid is not None
                await end(pid, Abnormal("x"))
                await supervisors.terminate_child(sup, "a")
                await anyio.sleep(10)
                got.append(await supervisors.which_children(sup))

        run_on("trio", scenario)
        assert [[supervisors.ChildInfo("a", None, ChildType.WORKER, Restart.PERMANENT)]] == got

    def test_injected_rng_draws_jitter(self) -> None:
        """The backoff jitter comes from the injected rng: same seed, same delay."""
        delays: list[float] = []

        async def scenario() -> None:
            async with Node("n1"):
                b = Backoff(initial=4.0, max=4.0, jitter=0.5)
                sup = await supervisors.start_supervisor(
                    [spec("a", backoff=b)], rng=random.Random(7)
                )
                pid = (await pids(sup))["a"]
                assert pid is not None
                with capture_logs() as logs:
                    await end(pid, Abnormal("x"))
                    await settle()
                delays.extend(e["delay"] for e in events(logs, "restart_delayed"))

        run_on("trio", scenario)
        expected = 4.0 * (1 - 0.5 * random.Random(7).random())
        assert [expected] == delays


class TestLogs:
    def test_lifecycle_events(self, run: Any) -> None:
        """Start, abnormal exit, restart and stop are logged as OTP's reports, bound."""

        async def scenario() -> None:
            async with Node("n1"):
                with capture_logs() as logs:
                    sup = await supervisors.start_supervisor([spec("a")], name="top")
                    pid = (await pids(sup))["a"]
                    assert pid is not None
                    await end(pid, Abnormal("boom"))
                    new = (await pids(sup))["a"]
                    await supervisors.stop(sup)
                base = {
                    "node": "n1",
                    "supervisor": str(sup),
                    "supervisor_name": "top",
                    "child_id": "a",
                }
                started = events(logs, "child_started")
                assert [base | {"pid": str(pid), "log_level": "info"}] == [
                    {k: e[k] for k in (*base, "pid", "log_level")} for e in started
                ]
                term = events(logs, "child_terminated")
                assert len(term) == 1
                assert (
                    base | {"offender": "a", "reason": "'boom'", "log_level": "error"}
                ).items() <= term[0].items()
                restarted = events(logs, "child_restarted")
                assert [str(new)] == [e["pid"] for e in restarted]
                assert [e["reason"] for e in events(logs, "supervisor_stopped")] == ["normal"]

        run(scenario)

    def test_orderly_exit_is_not_an_error(self, run: Any) -> None:
        """A transient child's normal exit is logged child_exited at info, not child_terminated."""

        async def scenario() -> None:
            async with Node("n1"):
                sup = await supervisors.start_supervisor([spec("a", Restart.TRANSIENT)])
                pid = (await pids(sup))["a"]
                assert pid is not None
                with capture_logs() as logs:
                    await end(pid, Normal())
                    await pids(sup)
                assert events(logs, "child_terminated") == []
                assert [e["log_level"] for e in events(logs, "child_exited")] == ["info"]

        run(scenario)

    def test_start_error_event(self, run: Any) -> None:
        """A child whose start fails is reported start_error with offender and reason."""

        async def scenario() -> None:
            async with Node("n1"):
                sup = await supervisors.start_supervisor([])
                with capture_logs() as logs, pytest.raises(supervisors.StartFailed):
                    await supervisors.start_child(sup, supervisors.server_spec("f", FailingInit))
                (e,) = events(logs, "start_error")
                assert (e["offender"], e["log_level"]) == ("f", "error")
                assert "bad config" in e["reason"]

        run(scenario)


class TestInsideProcess:
    def test_operations_from_a_process(self, run: Any) -> None:
        """The operations work from inside a process as from main code."""
        got: list[Any] = []

        async def scenario() -> None:
            async with Node("n1") as node:

                async def user() -> None:
                    sup = await supervisors.start_supervisor([], link=True)
                    pid = await supervisors.start_child(sup, spec("a"))
                    got.append((await pids(sup)) == {"a": pid})
                    await supervisors.terminate_child(sup, "a")
                    await supervisors.delete_child(sup, "a")
                    got.append(await counts(sup))

                node.spawn(user)
                await settle()

        run(scenario)
        assert got == [True, (0, 0, 0, 0)]


class TestStrategyOrder:
    @pytest.mark.parametrize(
        ("strategy", "restarted"),
        [
            (Strategy.ONE_FOR_ONE, ["b"]),
            (Strategy.REST_FOR_ONE, ["b", "c"]),
            (Strategy.ONE_FOR_ALL, ["a", "b", "c"]),
        ],
    )
    def test_restarted_children_start_in_order(
        self, run: Any, strategy: Strategy, restarted: list[str]
    ) -> None:
        """Children restarted by a strategy start again in start order."""
        started: list[str] = []

        def start(tag: str) -> Pid:
            started.append(tag)
            return runtime.spawn_link(member)

        async def scenario() -> None:
            async with Node("n1"):
                kids = [ChildSpec(t, start, args=(t,)) for t in "abc"]
                sup = await supervisors.start_supervisor(kids, SupFlags(strategy=strategy))
                await settle()
                started.clear()
                pid = (await pids(sup))["b"]
                assert pid is not None
                await end(pid, Abnormal("x"))
                await pids(sup)
                await settle()

        run(scenario)
        assert restarted == started
