"""DynamicSupervisor: children on demand, max_children, one-for-one restarts, shutdown."""

from __future__ import annotations

from typing import Any

import anyio
import pytest
from structlog.testing import capture_logs

import runtime
import supervisors
from runtime import Abnormal, Killed, Node, Normal, Pid, Shutdown
from supervisors import Backoff, BadSupFlags, ChildSpec, DynamicFlags, Restart
from tests.conftest import run_on
from tests.supervisors.test_supervisor import (
    Flaky,
    Watch,
    counts,
    end,
    events,
    signal,
    slow_to_stop,
    spec,
    stubborn,
)

P, TR, TE = Restart.PERMANENT, Restart.TRANSIENT, Restart.TEMPORARY


async def child_pids(dsup: Pid) -> list[Pid | None]:
    """The dynamic supervisor's children's pids, in start order."""
    return [c.pid for c in await supervisors.which_children(dsup)]


class TestFlags:
    def test_defaults_are_elixirs(self) -> None:
        """DynamicFlags default to intensity 3 in 5 s and no child limit."""
        assert DynamicFlags() == DynamicFlags(intensity=3, period=5.0, max_children=None)

    @pytest.mark.parametrize(
        "kw", [{"intensity": -1}, {"period": 0}, {"max_children": -1}, {"max_children": 1.5}]
    )
    def test_bad_flags_rejected(self, kw: dict[str, Any]) -> None:
        """Out-of-range flags raise BadSupFlags when made."""
        with pytest.raises(BadSupFlags):
            DynamicFlags(**kw)


class TestStartChild:
    def test_start_child_returns_pid(self, run: Any) -> None:
        """start_child starts a child per call, even with one spec id, and lists them all."""

        async def scenario() -> None:
            async with Node("n1"):
                dsup = await supervisors.start_dynamic_supervisor(name="dyn")
                assert await supervisors.which_children(dsup) == []
                a = await supervisors.start_child("dyn", spec("w"))
                b = await supervisors.start_child("dyn", spec("w"))
                assert a is not None
                assert b is not None
                assert a != b
                assert await child_pids(dsup) == [a, b]
                assert await counts(dsup) == (2, 2, 0, 2)

        run(scenario)

    def test_ignore_keeps_nothing(self, run: Any) -> None:
        """A start returning ignore gives None and adds no child, whatever its restart type."""

        async def scenario() -> None:
            async with Node("n1"):
                dsup = await supervisors.start_dynamic_supervisor()
                assert await supervisors.start_child(dsup, ChildSpec("i", lambda: None)) is None
                assert await counts(dsup) == (0, 0, 0, 0)

        run(scenario)

    def test_start_failure_raises(self, run: Any) -> None:
        """A failing start raises StartFailed with the spec's id; nothing is added."""

        async def scenario() -> None:
            async with Node("n1"):
                dsup = await supervisors.start_dynamic_supervisor()
                with pytest.raises(supervisors.StartFailed) as info:
                    await supervisors.start_child(dsup, ChildSpec("f", Flaky(failing=True).start))
                assert info.value.id == "f"
                assert await counts(dsup) == (0, 0, 0, 0)

        run(scenario)

    def test_max_children(self, run: Any) -> None:
        """Past max_children start_child raises MaxChildren; a terminated child frees a slot."""

        async def scenario() -> None:
            async with Node("n1"):
                dsup = await supervisors.DynamicSupervisor.start(max_children=2)
                a = await supervisors.start_child(dsup, spec("w"))
                await supervisors.start_child(dsup, spec("w"))
                with pytest.raises(supervisors.MaxChildren) as info:
                    await supervisors.start_child(dsup, spec("w"))
                assert info.value.limit == 2
                assert a is not None
                await supervisors.terminate_child(dsup, a)
                assert await supervisors.start_child(dsup, spec("w")) is not None

        run(scenario)


class TestOperations:
    def test_terminate_child_by_pid(self, run: Any) -> None:
        """terminate_child(pid) stops and removes that child; unknown pids raise NotFound."""

        async def scenario() -> None:
            async with Node("n1") as node:
                dsup = await supervisors.start_dynamic_supervisor()
                a = await supervisors.start_child(dsup, spec("w"))
                b = await supervisors.start_child(dsup, spec("w"))
                assert a is not None
                w = Watch(a)
                await supervisors.terminate_child(dsup, a)
                assert await w.reason() == Shutdown()
                assert await child_pids(dsup) == [b]
                with pytest.raises(supervisors.NotFound):
                    await supervisors.terminate_child(dsup, a)
                stranger = node.spawn(stubborn)
                with pytest.raises(supervisors.NotFound):
                    await supervisors.terminate_child(dsup, stranger)
                assert node.is_alive(stranger)

        run(scenario)

    def test_id_operations_not_supported(self, run: Any) -> None:
        """Operations by id raise NotSupported (OTP's simple_one_for_one error)."""

        async def scenario() -> None:
            async with Node("n1"):
                dsup = await supervisors.start_dynamic_supervisor()
                await supervisors.start_child(dsup, spec("w"))
                for op in (
                    supervisors.terminate_child(dsup, "w"),
                    supervisors.restart_child(dsup, "w"),
                    supervisors.delete_child(dsup, "w"),
                    supervisors.get_childspec(dsup, "w"),
                ):
                    with pytest.raises(supervisors.NotSupported):
                        await op

        run(scenario)


class TestRestarts:
    @pytest.mark.parametrize(
        ("restart", "reason", "restarted"),
        [
            (P, Normal(), True),
            (P, Abnormal("died"), True),
            (TR, Normal(), False),
            (TR, Shutdown("x"), False),
            (TR, Abnormal("died"), True),
            (TE, Abnormal("died"), False),
        ],
    )
    def test_restart_type_vs_reason(
        self, run: Any, restart: Restart, reason: runtime.ExitReason, restarted: bool
    ) -> None:
        """Only the exited child restarts, by its restart type; a child not restarted is removed."""

        async def scenario() -> None:
            async with Node("n1"):
                dsup = await supervisors.start_dynamic_supervisor()
                a = await supervisors.start_child(dsup, spec("a", restart))
                b = await supervisors.start_child(dsup, spec("b"))
                assert a is not None
                await end(a, reason)
                now = await child_pids(dsup)
                if restarted:
                    assert len(now) == 2
                    assert now[1] == b
                    assert now[0] not in (None, a)
                else:
                    assert now == [b]

        run(scenario)

    def test_intensity_stops_all_children(self, run: Any) -> None:
        """A 4th restart in 5 s (default intensity 3) stops every child and the supervisor."""

        async def scenario() -> None:
            async with Node("n1"):
                dsup = await supervisors.start_dynamic_supervisor()
                w = Watch(dsup)
                keep = await supervisors.start_child(dsup, spec("keep"))
                assert keep is not None
                wk = Watch(keep)
                await supervisors.start_child(dsup, spec("crash"))
                with capture_logs() as logs:
                    for _ in range(4):
                        assert not w.done
                        pid = (await child_pids(dsup))[1]
                        assert pid is not None
                        await end(pid, Abnormal("died"))
                    assert await w.reason() == Shutdown()
                assert await wk.reason() == Shutdown()
                assert len(events(logs, "reached_max_restart_intensity")) == 1

        run(scenario)

    def test_failing_restart_escalates(self, run: Any) -> None:
        """A child that cannot restart is retried until the intensity is reached."""

        async def scenario() -> None:
            async with Node("n1"):
                flaky = Flaky()
                dsup = await supervisors.start_dynamic_supervisor(DynamicFlags(intensity=4))
                w = Watch(dsup)
                pid = await supervisors.start_child(dsup, ChildSpec("f", flaky.start))
                assert pid is not None
                flaky.failing = True
                await end(pid, Abnormal("died"))
                assert await w.reason() == Shutdown()
                assert flaky.calls == 1 + 4

        run(scenario)

    def test_restarting_child_terminated_by_old_pid(self) -> None:
        """A child waiting for its backoff is found, and removed, by the pid it had."""
        got: list[Any] = []

        async def scenario() -> None:
            async with Node("n1"):
                dsup = await supervisors.start_dynamic_supervisor()
                b = Backoff(initial=5.0, max=5.0, jitter=0.0)
                pid = await supervisors.start_child(dsup, spec("w", backoff=b))
                assert pid is not None
                await end(pid, Abnormal("died"))
                (info,) = await supervisors.which_children(dsup)
                got.append((info.pid, info.restarting))
                got.append(await counts(dsup))
                await supervisors.terminate_child(dsup, pid)
                await anyio.sleep(10)
                got.append(await counts(dsup))

        run_on("trio", scenario)
        assert got == [(None, True), (1, 0, 0, 1), (0, 0, 0, 0)]


class TestShutdown:
    def test_children_stop_concurrently(self) -> None:
        """On stop every child is asked at once: the slowest bounds the time, each killed at
        its own timeout."""
        got: list[Any] = []

        async def scenario() -> None:
            async with Node("n1"):
                dsup = await supervisors.start_dynamic_supervisor()
                kids = [
                    supervisors.worker_spec("slow", slow_to_stop, 2.0, shutdown=5.0),
                    supervisors.worker_spec("slow", slow_to_stop, 2.0, shutdown=5.0),
                    supervisors.worker_spec("stub1", stubborn, shutdown=1.0),
                    supervisors.worker_spec("stub3", stubborn, shutdown=3.0),
                    supervisors.worker_spec("brutal", stubborn, shutdown=supervisors.BRUTAL_KILL),
                ]
                ws = []
                for k in kids:
                    pid = await supervisors.start_child(dsup, k)
                    assert pid is not None
                    ws.append(Watch(pid))
                times: dict[int, float] = {}

                async def when(i: int, w: Watch) -> None:
                    await w.reason()
                    times[i] = anyio.current_time()

                async with anyio.create_task_group() as tg:
                    for i, w in enumerate(ws):
                        tg.start_soon(when, i, w)
                    with capture_logs() as logs:
                        await supervisors.stop(dsup, Shutdown())
                got.append(anyio.current_time())
                got.append([times[i] for i in range(len(ws))])
                got.append([await w.reason() for w in ws])
                got.append(sorted(e["child_id"] for e in events(logs, "shutdown_error")))

        run_on("trio", scenario)
        assert got == [
            3.0,
            [2.0, 2.0, 1.0, 3.0, 0.0],
            [Shutdown(), Shutdown(), Killed(), Killed(), Killed()],
            ["stub1", "stub3"],
        ]

    def test_parent_exit_stops_children(self, run: Any) -> None:
        """A dynamic supervisor under a supervisor stops its children when stopped with it."""

        async def scenario() -> None:
            async with Node("n1"):
                top = await supervisors.start_supervisor(
                    [supervisors.dynamic_supervisor_spec("dyn", DynamicFlags(max_children=5))]
                )
                dsup = (await supervisors.which_children(top))[0].pid
                assert dsup is not None
                assert await counts(top) == (1, 1, 1, 0)
                pid = await supervisors.start_child(dsup, spec("w"))
                assert pid is not None
                wc, wd = Watch(pid), Watch(dsup)
                await supervisors.stop(top, Shutdown())
                assert await wd.reason() == Shutdown()
                assert await wc.reason() == Shutdown()

        run(scenario)

    def test_killed_child_restarts_and_logs(self, run: Any) -> None:
        """A killed permanent child is restarted and reported child_terminated / restarted."""

        async def scenario() -> None:
            async with Node("n1"):
                dsup = await supervisors.start_dynamic_supervisor(DynamicFlags(intensity=5))
                pid = await supervisors.start_child(dsup, spec("w"))
                assert pid is not None
                with capture_logs() as logs:
                    assert await signal(pid, runtime.Kill()) == Killed()
                    (new,) = await child_pids(dsup)
                (t,) = events(logs, "child_terminated")
                assert (t["offender"], t["reason"]) == ("w", "killed")
                assert [e["pid"] for e in events(logs, "child_restarted")] == [str(new)]

        run(scenario)
