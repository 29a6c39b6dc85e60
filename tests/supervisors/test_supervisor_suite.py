"""OTP's supervisor_SUITE, in our own words: the behaviours it checks that apply here.

Each test names the suite case it follows (``permanent_normal``...). Cases about
Erlang specifics (code change, global names, map specs, memory use) are left out.
"""

from __future__ import annotations

from typing import Any

import anyio
import pytest
from structlog.testing import capture_logs

import runtime
import supervisors
from runtime import Abnormal, Crashed, Killed, Node, Normal, Pid, Shutdown
from supervisors import (
    AutoShutdown,
    Backoff,
    ChildSpec,
    Restart,
    Strategy,
    SupFlags,
)
from tests.conftest import run_on
from tests.supervisors.test_supervisor import (
    Flaky,
    Watch,
    counts,
    end,
    events,
    member,
    pids,
    settle,
    signal,
    spec,
    stubborn,
)

P, TR, TE = Restart.PERMANENT, Restart.TRANSIENT, Restart.TEMPORARY


def ignore() -> None:
    """A start function that returns ignore."""
    return


class TestSupStart:
    def test_sup_start_normal(self, run: Any) -> None:
        """A supervisor with no children starts and stops cleanly (sup_start_normal)."""

        async def scenario() -> None:
            async with Node("n1"):
                sup = await supervisors.start_supervisor([], SupFlags(intensity=2, period=3600))
                w = Watch(sup)
                await supervisors.stop(sup, Shutdown())
                assert await w.reason() == Shutdown()

        run(scenario)

    def test_sup_start_ignore_child(self, run: Any) -> None:
        """A permanent child whose start returns ignore is kept, not running."""

        async def scenario() -> None:
            async with Node("n1"):
                sup = await supervisors.start_supervisor([])
                assert await supervisors.start_child(sup, ChildSpec("c1", ignore)) is None
                pid2 = await supervisors.start_child(sup, spec("c2"))
                assert await pids(sup) == {"c1": None, "c2": pid2}
                assert await counts(sup) == (2, 1, 0, 2)

        run(scenario)

    def test_sup_start_ignore_temporary_child(self, run: Any) -> None:
        """A temporary child whose start returns ignore is not kept, from init or start_child."""

        async def scenario() -> None:
            async with Node("n1"):
                c1 = ChildSpec("c1", ignore, restart=TE)
                sup = await supervisors.start_supervisor([c1, spec("c2", TE)])
                assert list(await pids(sup)) == ["c2"]
                assert await counts(sup) == (1, 1, 0, 1)
                assert (
                    await supervisors.start_child(sup, ChildSpec("c3", ignore, restart=TE)) is None
                )
                assert list(await pids(sup)) == ["c2"]

        run(scenario)

    def test_sup_start_fail(self, run: Any) -> None:
        """A child whose GenServer init raises fails the start; started siblings are stopped."""

        class Bad(runtime.GenServer):
            async def init(self) -> None:
                raise ValueError("no")

        started: list[Pid] = []

        def first() -> Pid:
            pid = runtime.spawn_link(member)
            started.append(pid)
            return pid

        async def scenario() -> None:
            async with Node("n1") as node:
                kids = [
                    ChildSpec("a", first),
                    supervisors.server_spec("bad", Bad),
                    spec("never"),
                ]
                with capture_logs() as logs, pytest.raises(supervisors.StartFailed) as info:
                    await supervisors.start_supervisor(kids)
                assert info.value.id == "bad"
                assert isinstance(info.value.reason, Crashed)
                assert info.value.reason.kind == "ValueError"
                await settle()
                assert not node.is_alive(started[0])
                assert node.process_count == 0
                assert [e["offender"] for e in events(logs, "start_error")] == ["bad"]

        run(scenario)

    def test_sup_start_fail_is_caught_by_start_child(self, run: Any) -> None:
        """start_child of a failing child raises StartFailed and keeps no spec."""

        async def scenario() -> None:
            async with Node("n1"):
                sup = await supervisors.start_supervisor([])
                with pytest.raises(supervisors.StartFailed) as info:
                    await supervisors.start_child(sup, ChildSpec("f", Flaky(failing=True).start))
                assert info.value.id == "f"
                assert await counts(sup) == (0, 0, 0, 0)

        run(scenario)

    def test_start_returning_non_pid_fails(self, run: Any) -> None:
        """A start that returns something other than a Pid or None fails (Crashed TypeError)."""

        async def scenario() -> None:
            async with Node("n1"):
                sup = await supervisors.start_supervisor([])
                with pytest.raises(supervisors.StartFailed) as info:
                    await supervisors.start_child(sup, ChildSpec("x", lambda: "pid?"))
                reason = info.value.reason
                assert isinstance(reason, Crashed)
                assert reason.kind == "TypeError"

        run(scenario)

    def test_child_specs_duplicate_ids_fail_start(self, run: Any) -> None:
        """Two specs with one id fail the supervisor's start (child_specs)."""

        async def scenario() -> None:
            async with Node("n1"):
                with pytest.raises(supervisors.StartFailed) as info:
                    await supervisors.start_supervisor([spec("a"), spec("a")])
                assert isinstance(info.value.reason, Crashed)
                assert info.value.reason.kind == "BadChildSpec"

        run(scenario)


class TestSupStop:
    def test_sup_stop_infinity(self) -> None:
        """INFINITY children (supervisor or worker) are waited for, and end Shutdown."""
        got: list[Any] = []

        async def slow_sup() -> Pid:
            slow = supervisors.worker_spec("slow", _slow, 100.0, shutdown=INFINITY_)
            return await supervisors.start_supervisor([slow], link=True)

        async def scenario() -> None:
            async with Node("n1"):
                kids = [
                    ChildSpec("c1", slow_sup, type=supervisors.ChildType.SUPERVISOR),
                    supervisors.worker_spec("c2", _slow, 50.0, shutdown=INFINITY_),
                ]
                sup = await supervisors.start_supervisor(kids)
                ws = [Watch(p) for p in (await pids(sup)).values() if p is not None]
                await supervisors.stop(sup, Shutdown())
                got.append(anyio.current_time())
                got.extend([await w.reason() for w in ws])

        run_on("trio", scenario)
        assert got == [150.0, Shutdown(), Shutdown()]

    def test_sup_stop_timeout(self) -> None:
        """A child that ignores shutdown is killed at its timeout; the other ends Shutdown."""
        got: list[Any] = []

        async def scenario() -> None:
            async with Node("n1"):
                kids = [
                    spec("c1", shutdown=1.0),
                    supervisors.worker_spec("c2", stubborn, shutdown=1.0),
                ]
                sup = await supervisors.start_supervisor(kids)
                ws = [Watch(p) for p in (await pids(sup)).values() if p is not None]
                await supervisors.stop(sup, Shutdown())
                got.append(anyio.current_time())
                got.extend([await w.reason() for w in ws])

        run_on("trio", scenario)
        assert got == [1.0, Shutdown(), Killed()]

    def test_sup_stop_brutal_kill(self, run: Any) -> None:
        """A BRUTAL_KILL child ends Killed when its supervisor stops; the other Shutdown."""

        async def scenario() -> None:
            async with Node("n1"):
                kids = [spec("c1"), spec("c2", shutdown=supervisors.BRUTAL_KILL)]
                sup = await supervisors.start_supervisor(kids)
                ws = [Watch(p) for p in (await pids(sup)).values() if p is not None]
                await supervisors.stop(sup, Shutdown())
                assert [await w.reason() for w in ws] == [Shutdown(), Killed()]

        run(scenario)


INFINITY_ = supervisors.INFINITY


async def _slow(delay: float) -> None:
    runtime.trap_exit(True)
    await runtime.receive(lambda m: isinstance(m, runtime.Exit))
    await anyio.sleep(delay)
    runtime.exit(Shutdown())


class TestChildAdm:
    def test_child_adm(self, run: Any) -> None:
        """start/terminate/restart/delete_child give OTP's outcomes in sequence (child_adm)."""

        async def scenario() -> None:
            async with Node("n1"):
                child = spec("child1")
                sup = await supervisors.start_supervisor([child], SupFlags(intensity=2))
                cpid = (await pids(sup))["child1"]
                assert cpid is not None
                assert await counts(sup) == (1, 1, 0, 1)

                with pytest.raises(supervisors.AlreadyStarted) as started:
                    await supervisors.start_child(sup, child)
                assert started.value.pid == cpid

                with pytest.raises(supervisors.NotFound):
                    await supervisors.terminate_child(sup, "hej")
                w = Watch(cpid)
                await supervisors.terminate_child(sup, "child1")
                assert await w.reason() == Shutdown()
                assert await pids(sup) == {"child1": None}
                assert await counts(sup) == (1, 0, 0, 1)
                await supervisors.terminate_child(sup, "child1")  # not running: succeeds

                with pytest.raises(supervisors.AlreadyPresent):
                    await supervisors.start_child(sup, child)

                cpid2 = await supervisors.restart_child(sup, "child1")
                assert await pids(sup) == {"child1": cpid2}
                with pytest.raises(supervisors.Running):
                    await supervisors.restart_child(sup, "child1")
                with pytest.raises(supervisors.NotFound):
                    await supervisors.restart_child(sup, "child2")

                with pytest.raises(supervisors.Running):
                    await supervisors.delete_child(sup, "child1")
                with pytest.raises(supervisors.NotFound):
                    await supervisors.delete_child(sup, "hej")
                await supervisors.terminate_child(sup, "child1")
                await supervisors.delete_child(sup, "child1")
                with pytest.raises(supervisors.NotFound):
                    await supervisors.restart_child(sup, "child1")
                assert await pids(sup) == {}
                assert await counts(sup) == (0, 0, 0, 0)

                cpid3 = await supervisors.start_child(sup, child)
                assert cpid3 is not None
                with pytest.raises(supervisors.NotFound):  # by pid: only for dynamic
                    await supervisors.terminate_child(sup, cpid3)
                assert await pids(sup) == {"child1": cpid3}

        run(scenario)

    def test_child_adm_errors_are_builtin_kinds(self) -> None:
        """Each outcome derives from the built-in whose meaning it shares."""
        pid = Pid("n", 1, 1)
        assert isinstance(supervisors.AlreadyPresent("a"), ValueError)
        assert isinstance(supervisors.AlreadyStarted("a", pid), ValueError)
        assert isinstance(supervisors.Running("a"), RuntimeError)
        assert isinstance(supervisors.Restarting("a"), RuntimeError)
        assert isinstance(supervisors.NotFound("a"), LookupError)
        assert isinstance(supervisors.MaxChildren(1), RuntimeError)
        assert isinstance(supervisors.StartFailed("a", Normal()), runtime.StartFailed)


# Restart types vs exit reasons in the running system: (restart, reason) ->
# (kept as, restarted). OTP's permanent_/transient_/temporary_ normal/shutdown/abnormal.
RESTART_CASES = [
    (P, Normal(), "restarted"),
    (P, Shutdown(), "restarted"),
    (P, Shutdown("some_info"), "restarted"),
    (P, Abnormal("died"), "restarted"),
    (TR, Normal(), "kept"),
    (TR, Shutdown(), "kept"),
    (TR, Shutdown("some_info"), "kept"),
    (TR, Abnormal("died"), "restarted"),
    (TE, Normal(), "forgotten"),
    (TE, Shutdown(), "forgotten"),
    (TE, Abnormal("died"), "forgotten"),
]


class TestRestartTypes:
    @pytest.mark.parametrize(("restart", "reason", "outcome"), RESTART_CASES)
    def test_restart_type_vs_exit_reason(
        self, run: Any, restart: Restart, reason: runtime.ExitReason, outcome: str
    ) -> None:
        """permanent: always restarted; transient: only abnormal; temporary: spec forgotten."""

        async def scenario() -> None:
            async with Node("n1"):
                sup = await supervisors.start_supervisor([], SupFlags(intensity=2, period=3600))
                cpid = await supervisors.start_child(sup, spec("child1", restart))
                assert cpid is not None
                await end(cpid, reason)
                now = await pids(sup)
                match outcome:
                    case "restarted":
                        assert list(now) == ["child1"]
                        assert now["child1"] not in (None, cpid)
                        assert await counts(sup) == (1, 1, 0, 1)
                    case "kept":
                        assert now == {"child1": None}
                        assert await counts(sup) == (1, 0, 0, 1)
                        assert await supervisors.restart_child(sup, "child1") is not None
                    case "forgotten":
                        assert now == {}
                        assert await counts(sup) == (0, 0, 0, 0)
                        assert await supervisors.start_child(sup, spec("child1", restart))

        run(scenario)

    @pytest.mark.parametrize("strategy", [Strategy.ONE_FOR_ALL, Strategy.REST_FOR_ONE])
    def test_temporary_bystander(self, run: Any, strategy: Strategy) -> None:
        """A temporary child stopped by a sibling's restart is not restarted (bystander)."""

        async def scenario() -> None:
            async with Node("n1"):
                flags = SupFlags(strategy=strategy, intensity=2, period=300)
                sup = await supervisors.start_supervisor(
                    [spec("child1"), spec("child2", TE)], flags
                )
                before = await pids(sup)
                c1 = before["child1"]
                assert c1 is not None
                w2 = Watch(before["child2"])  # type: ignore[arg-type]
                await end(c1, Normal())
                assert await w2.reason() == Shutdown()
                after = await pids(sup)
                assert list(after) == ["child1"]
                assert after["child1"] not in (None, c1)

        run(scenario)

    def test_multiple_restarts(self) -> None:
        """Restarts spaced wider than the period never reach intensity (multiple_restarts)."""
        got: list[Any] = []

        async def scenario() -> None:
            async with Node("n1"):
                flags = SupFlags(intensity=1, period=1)
                sup = await supervisors.start_supervisor(
                    [spec("child1", shutdown=supervisors.BRUTAL_KILL)], flags
                )
                w = Watch(sup)
                for _ in range(4):
                    pid = (await pids(sup))["child1"]
                    assert pid is not None
                    await end(pid, Abnormal("died"))
                    await anyio.sleep(1.5)
                got.append(w.done)
                await supervisors.terminate_child(sup, "child1")
                await supervisors.delete_child(sup, "child1")

        run_on("trio", scenario)
        assert got == [False]


class TestIntensity:
    def test_intensity_reached_at_exactly_the_right_restart(self, run: Any) -> None:
        """With intensity 2, two restarts pass; the third exit stops the supervisor Shutdown."""

        async def scenario() -> None:
            async with Node("n1"):
                flags = SupFlags(intensity=2, period=3600)
                sup = await supervisors.start_supervisor([spec("c1"), spec("c2")], flags)
                w = Watch(sup)
                with capture_logs() as logs:
                    for i in range(3):
                        assert not w.done
                        pid = (await pids(sup))["c1" if i % 2 == 0 else "c2"]
                        assert pid is not None
                        await end(pid, Abnormal("died"))
                    assert await w.reason() == Shutdown()
                (e,) = events(logs, "reached_max_restart_intensity")
                assert (e["offender"], e["log_level"]) == ("c1", "error")
                assert [x["reason"] for x in events(logs, "supervisor_stopped")] == ["shutdown"]

        run(scenario)

    def test_escalation_to_parent_supervisor(self, run: Any) -> None:
        """A nested supervisor that gives up exits Shutdown; its parent restarts it."""

        async def scenario() -> None:
            async with Node("n1"):
                inner = supervisors.supervisor_spec(
                    "inner", [spec("w")], flags=SupFlags(intensity=0)
                )
                top = await supervisors.start_supervisor([inner, spec("other")])
                before = await pids(top)
                inner_pid = before["inner"]
                assert inner_pid is not None
                wi = Watch(inner_pid)
                w = (await pids(inner_pid))["w"]
                assert w is not None
                await end(w, Abnormal("died"))
                assert await wi.reason() == Shutdown()
                after = await pids(top)
                assert after["inner"] not in (None, inner_pid)
                assert after["other"] == before["other"]

        run(scenario)


class TestOneForOne:
    def test_one_for_one(self, run: Any) -> None:
        """Only the exited child restarts; the other keeps its pid; then intensity (one_for_one)."""

        async def scenario() -> None:
            async with Node("n1"):
                flags = SupFlags(intensity=2, period=3600)
                sup = await supervisors.start_supervisor([spec("child1"), spec("child2")], flags)
                w = Watch(sup)
                c1, c2 = (await pids(sup)).values()
                assert c1 is not None
                assert c2 is not None
                await end(c1, Abnormal("died"))
                now = await pids(sup)
                assert now["child2"] == c2
                assert now["child1"] not in (None, c1)
                assert await counts(sup) == (2, 2, 0, 2)
                await end(c2, Abnormal("died"))
                pid = (await pids(sup))["child1"]
                assert pid is not None
                await end(pid, Abnormal("died"))
                assert await w.reason() == Shutdown()

        run(scenario)

    def test_one_for_one_escalation(self, run: Any) -> None:
        """A child that cannot be restarted exhausts intensity; sibling and supervisor end."""

        async def scenario() -> None:
            async with Node("n1"):
                flaky = Flaky()
                flags = SupFlags(intensity=4, period=3600)
                kids = [ChildSpec("child1", flaky.start), spec("child2")]
                sup = await supervisors.start_supervisor(kids, flags)
                w = Watch(sup)
                c1, c2 = (await pids(sup)).values()
                assert c1 is not None
                assert c2 is not None
                w2 = Watch(c2)
                flaky.failing = True
                with capture_logs() as logs:
                    await end(c1, Abnormal("died"))
                    assert await w.reason() == Shutdown()
                assert await w2.reason() == Shutdown()
                assert flaky.calls == 1 + 4  # the first start, then four failed restarts
                assert len(events(logs, "start_error")) == 4

        run(scenario)


class TestOneForAll:
    def test_one_for_all(self, run: Any) -> None:
        """Every child restarts with a new pid; the others were stopped Shutdown (one_for_all)."""

        async def scenario() -> None:
            async with Node("n1"):
                flags = SupFlags(strategy=Strategy.ONE_FOR_ALL, intensity=2, period=3600)
                sup = await supervisors.start_supervisor([spec("child1"), spec("child2")], flags)
                w = Watch(sup)
                c1, c2 = (await pids(sup)).values()
                assert c1 is not None
                assert c2 is not None
                w2 = Watch(c2)
                await end(c1, Abnormal("died"))
                assert await w2.reason() == Shutdown()
                now = await pids(sup)
                assert not {c1, c2} & set(now.values())
                assert await counts(sup) == (2, 2, 0, 2)
                for _ in range(2):
                    pid = (await pids(sup))["child1"]
                    assert pid is not None
                    await end(pid, Abnormal("died"))
                assert await w.reason() == Shutdown()

        run(scenario)

    def test_one_for_all_escalation(self, run: Any) -> None:
        """When a sibling cannot restart, intensity is reached and the supervisor ends."""

        async def scenario() -> None:
            async with Node("n1"):
                flaky = Flaky()
                flags = SupFlags(strategy=Strategy.ONE_FOR_ALL, intensity=4, period=3600)
                kids = [spec("child1"), ChildSpec("child2", flaky.start)]
                sup = await supervisors.start_supervisor(kids, flags)
                w = Watch(sup)
                c1 = (await pids(sup))["child1"]
                assert c1 is not None
                flaky.failing = True
                await end(c1, Abnormal("died"))
                assert await w.reason() == Shutdown()

        run(scenario)

    def test_one_for_all_other_child_fails_restart(self, run: Any) -> None:
        """A restarted child is stopped again when a later sibling fails to restart."""
        starts: list[str] = []

        async def scenario() -> None:
            async with Node("n1"):
                flaky = Flaky()

                def first() -> Pid:
                    starts.append("child1")
                    return runtime.spawn_link(member)

                def second() -> Pid:
                    starts.append("child2")
                    try:
                        return flaky.start()
                    finally:
                        flaky.failing = False  # fail once only

                flags = SupFlags(strategy=Strategy.ONE_FOR_ALL, intensity=3, period=3600)
                kids = [ChildSpec("child1", first), ChildSpec("child2", second)]
                sup = await supervisors.start_supervisor(kids, flags)
                c1 = (await pids(sup))["child1"]
                assert c1 is not None
                flaky.failing = True
                starts.clear()
                with capture_logs() as logs:
                    await end(c1, Abnormal("die"))
                    await settle()
                    now = await pids(sup)
                # child1 restarted, child2 failed, child1 stopped again, both started.
                assert starts == ["child1", "child2", "child1", "child2"]
                assert None not in now.values()
                assert len(events(logs, "child_restarted")) == 3
                assert [e["child_id"] for e in events(logs, "start_error")] == ["child2"]

        run(scenario)


class TestRestForOne:
    def test_rest_for_one(self, run: Any) -> None:
        """The exited child and those after it restart; earlier ones keep their pid."""

        async def scenario() -> None:
            async with Node("n1"):
                flags = SupFlags(strategy=Strategy.REST_FOR_ONE, intensity=2, period=3600)
                sup = await supervisors.start_supervisor(
                    [spec("child1"), spec("child2"), spec("child3")], flags
                )
                w = Watch(sup)
                c1, c2, c3 = (await pids(sup)).values()
                assert c2 is not None
                assert c3 is not None
                w3 = Watch(c3)
                await end(c2, Abnormal("died"))
                assert await w3.reason() == Shutdown()
                now = await pids(sup)
                assert now["child1"] == c1
                assert not {c2, c3} & set(now.values())
                assert await counts(sup) == (3, 3, 0, 3)
                pid3 = now["child3"]
                assert pid3 is not None
                await end(pid3, Abnormal("died"))
                pid2 = (await pids(sup))["child2"]
                assert pid2 is not None
                await end(pid2, Abnormal("died"))
                assert await w.reason() == Shutdown()

        run(scenario)

    def test_rest_for_one_escalation(self, run: Any) -> None:
        """A later child that cannot restart exhausts the intensity (rest_for_one_escalation)."""

        async def scenario() -> None:
            async with Node("n1"):
                flaky = Flaky()
                flags = SupFlags(strategy=Strategy.REST_FOR_ONE, intensity=4, period=3600)
                kids = [spec("child1"), ChildSpec("child2", flaky.start)]
                sup = await supervisors.start_supervisor(kids, flags)
                w = Watch(sup)
                c1 = (await pids(sup))["child1"]
                assert c1 is not None
                flaky.failing = True
                await end(c1, Abnormal("died"))
                assert await w.reason() == Shutdown()

        run(scenario)

    def test_rest_for_one_other_child_fails_restart(self, run: Any) -> None:
        """When a later child fails to restart, only it (and later ones) are retried."""
        starts: list[str] = []

        async def scenario() -> None:
            async with Node("n1"):
                flaky = Flaky()

                def first() -> Pid:
                    starts.append("child1")
                    return runtime.spawn_link(member)

                def second() -> Pid:
                    starts.append("child2")
                    try:
                        return flaky.start()
                    finally:
                        flaky.failing = False  # fail once only

                flags = SupFlags(strategy=Strategy.REST_FOR_ONE, intensity=3, period=3600)
                kids = [ChildSpec("child1", first), ChildSpec("child2", second)]
                sup = await supervisors.start_supervisor(kids, flags)
                c1 = (await pids(sup))["child1"]
                assert c1 is not None
                flaky.failing = True
                starts.clear()
                await end(c1, Abnormal("die"))
                await settle()
                now = await pids(sup)
                assert starts == ["child1", "child2", "child2"]
                assert None not in now.values()

        run(scenario)


class TestMisc:
    def test_tree(self, run: Any) -> None:
        """A supervision tree: a crash restarts only its child; a subtree giving up restarts all."""

        async def scenario() -> None:
            async with Node("n1"):
                flaky = Flaky()
                sup1 = supervisors.supervisor_spec(
                    "supchild1", [spec("child1"), spec("child2")], flags=SupFlags(intensity=4)
                )
                sup2 = supervisors.supervisor_spec("supchild2", [], flags=SupFlags(intensity=4))
                top = await supervisors.start_supervisor(
                    [], SupFlags(strategy=Strategy.ONE_FOR_ALL, intensity=4)
                )
                s1 = await supervisors.start_child(top, sup1)
                s2 = await supervisors.start_child(top, sup2)
                assert s1 is not None
                assert s2 is not None
                assert await counts(top) == (2, 2, 2, 0)
                assert await counts(s1) == (2, 2, 0, 2)
                assert await counts(s2) == (0, 0, 0, 0)

                c3 = await supervisors.start_child(s2, ChildSpec("child3", flaky.start))
                c4 = await supervisors.start_child(s2, spec("child4"))
                assert c3 is not None
                assert c4 is not None
                before1 = await pids(s1)
                await end(c4, Abnormal("died"))
                assert await pids(s1) == before1
                now2 = await pids(s2)
                assert now2["child3"] == c3
                assert now2["child4"] not in (None, c4)

                # child3 cannot restart: supchild2 gives up, top restarts both subtrees.
                flaky.failing = True
                w2 = Watch(s2)
                await end(c3, Abnormal("died"))
                assert await w2.reason() == Shutdown()
                await settle()
                new = await pids(top)
                assert new["supchild1"] not in (None, s1)
                assert new["supchild2"] not in (None, s2)
                new1, new2 = new["supchild1"], new["supchild2"]
                assert new1 is not None
                assert new2 is not None
                assert list(await pids(new1)) == ["child1", "child2"]
                assert await counts(new2) == (0, 0, 0, 0)  # dynamic children are gone

        run(scenario)

    def test_count_children(self, run: Any) -> None:
        """count_children counts specs, live children, supervisors and workers (count_children)."""

        async def scenario() -> None:
            async with Node("n1"):
                kids = [spec(f"w{i}", TE) for i in range(100)]
                kids.append(supervisors.supervisor_spec("s", []))
                kids.append(ChildSpec("ig", ignore))
                sup = await supervisors.start_supervisor(kids)
                assert await counts(sup) == (102, 101, 1, 101)
                for pid in list((await pids(sup)).values())[:100]:
                    assert pid is not None
                    assert await signal(pid, runtime.Kill()) == Killed()
                assert await counts(sup) == (2, 1, 1, 1)

        run(scenario)

    @pytest.mark.parametrize("strategy", list(Strategy))
    @pytest.mark.parametrize("how", ["kill", "normal", "abnormal", "supervisor"])
    def test_do_not_save_child_specs_for_temporary_children(
        self, run: Any, strategy: Strategy, how: str
    ) -> None:
        """Permanent and transient specs are kept after exits; temporary ones never."""

        async def stop(sup: Pid, id: str, pid: Pid) -> None:
            match how:
                case "kill":
                    await signal(pid, runtime.Kill())
                case "normal":
                    await end(pid, Normal())
                case "abnormal":
                    await end(pid, Abnormal("died"))
                case "supervisor":
                    await supervisors.terminate_child(sup, id)

        async def scenario() -> None:
            async with Node("n1"):
                flags = SupFlags(strategy=strategy, intensity=10, period=3600)
                sup = await supervisors.start_supervisor([], flags)
                for id, restart in (("child1", P), ("child2", TR), ("child3", TE)):
                    s = spec(id, restart)
                    pid = await supervisors.start_child(sup, s)
                    assert pid is not None
                    await stop(sup, id, pid)
                    await pids(sup)
                    present = (
                        restart is TE or how == "supervisor" or (restart is TR and how == "normal")
                    )
                    if restart is TE:
                        assert await supervisors.start_child(sup, s) is not None
                    elif present:
                        with pytest.raises(supervisors.AlreadyPresent):
                            await supervisors.start_child(sup, s)
                        assert await supervisors.restart_child(sup, id) is not None
                    else:
                        with pytest.raises(supervisors.AlreadyStarted):
                            await supervisors.start_child(sup, s)

        run(scenario)

    def test_hanging_restart_loop(self) -> None:
        """While a child's restart keeps failing, calls get Restarting/AlreadyPresent, and
        terminate_child then restart_child recover it (hanging_restart_loop)."""
        got: list[Any] = []

        async def scenario() -> None:
            async with Node("n1"):
                flaky = Flaky()
                b = Backoff(initial=1.0, max=1.0, jitter=0.0)
                flags = SupFlags(intensity=8, period=10)
                child = ChildSpec(
                    "child1", flaky.start, backoff=b, shutdown=supervisors.BRUTAL_KILL
                )
                sup = await supervisors.start_supervisor([child], flags)
                c1 = (await pids(sup))["child1"]
                assert c1 is not None
                flaky.failing = True
                await end(c1, Abnormal("error"))
                await anyio.sleep(2.5)  # two failed restarts so far
                got.append(flaky.calls)
                with pytest.raises(supervisors.AlreadyPresent):
                    await supervisors.start_child(sup, child)
                with pytest.raises(supervisors.Restarting):
                    await supervisors.restart_child(sup, "child1")
                with pytest.raises(supervisors.Restarting):
                    await supervisors.delete_child(sup, "child1")
                (info,) = await supervisors.which_children(sup)
                got.append((info.pid, info.restarting))
                got.append(await counts(sup))
                await supervisors.terminate_child(sup, "child1")
                got.append(await pids(sup))
                flaky.failing = False
                got.append(await supervisors.restart_child(sup, "child1") is not None)
                w = Watch(sup)
                await supervisors.stop(sup, Shutdown())
                got.append(await w.reason())

        run_on("trio", scenario)
        assert got == [3, (None, True), (1, 0, 0, 1), {"child1": None}, True, Shutdown()]


class TestAutoShutdown:
    @pytest.mark.parametrize(
        ("mode", "exits", "stops"),
        [
            (AutoShutdown.NEVER, ["s1"], False),
            (AutoShutdown.ANY_SIGNIFICANT, ["s1"], True),
            (AutoShutdown.ALL_SIGNIFICANT, ["s1"], False),
            (AutoShutdown.ALL_SIGNIFICANT, ["s1", "s2"], True),
        ],
    )
    def test_significant_children_auto_shutdown(
        self, run: Any, mode: AutoShutdown, exits: list[str], stops: bool
    ) -> None:
        """A significant child's orderly exit stops the supervisor as auto_shutdown says."""

        async def scenario() -> None:
            async with Node("n1"):
                kids = [
                    spec("w"),
                    spec("s1", TR, significant=True),
                    spec("s2", TE, significant=True),
                ]
                sup = await supervisors.start_supervisor(kids, SupFlags(auto_shutdown=mode))
                w = Watch(sup)
                before = await pids(sup)
                ww = Watch(before["w"])  # type: ignore[arg-type]
                with capture_logs() as logs:
                    for id in exits:
                        pid = before[id]
                        assert pid is not None
                        await end(pid, Normal())
                    if stops:
                        assert await w.reason() == Shutdown()
                    else:
                        await pids(sup)
                assert w.done == stops
                if stops:
                    assert await ww.reason() == Shutdown()
                    assert len(events(logs, "auto_shutdown")) == 1
                else:
                    assert not ww.done

        run(scenario)

    def test_significant_abnormal_exit_restarts(self, run: Any) -> None:
        """A transient significant child that crashes is restarted, not an auto shutdown."""

        async def scenario() -> None:
            async with Node("n1"):
                flags = SupFlags(auto_shutdown=AutoShutdown.ANY_SIGNIFICANT)
                sup = await supervisors.start_supervisor([spec("s", TR, significant=True)], flags)
                pid = (await pids(sup))["s"]
                assert pid is not None
                await end(pid, Abnormal("died"))
                assert (await pids(sup))["s"] not in (None, pid)

        run(scenario)
