"""The ``regency demo``: faults injected and healed, work verified, on fake and real time.

The core coroutine runs under trio's ``MockClock(autojump_threshold=0)``; one test runs
the real command in a subprocess.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path

import attrs
import pytest
import structlog
import trio
import trio.testing

from agents.demo import (
    FAULT_KINDS,
    DemoConfig,
    DemoResult,
    FaultPlan,
    PlainPrinter,
    main,
    run_demo,
)

ROOT = Path(__file__).resolve().parents[2]


def run(config: DemoConfig, out: io.StringIO | None = None) -> DemoResult:
    """Run the demo on an autojumping MockClock; print plain lines into *out*."""
    printer = PlainPrinter(out) if out is not None else None
    return trio.run(run_demo, config, printer, clock=trio.testing.MockClock(autojump_threshold=0))


class TestHealing:
    """Every fault kind happens, the tree heals, and no work is lost."""

    @pytest.mark.parametrize("seed", [1, 2, 3, 7, 42])
    def test_every_task_completed_exactly_once(self, seed: int) -> None:
        """Each seed: all tasks recorded once with the right result, every fault seen."""
        result = run(DemoConfig(seed=seed))

        assert (result.problems, result.exit_code) == ((), 0)
        assert (result.submitted, result.completed, result.records) == (40, 40, 40)
        assert (result.lost, result.wrong_results) == ((), ())
        assert result.total_restarts > 0
        for kind in FAULT_KINDS:
            assert result.faults_injected[kind] >= 1, kind
            assert result.faults_observed[kind] >= 1, kind
        assert result.restarts["pipeline"] >= 2  # dispatcher, then workers by rest_for_one

    def test_final_tree_is_whole(self) -> None:
        """which_children/count_children at the end: every child runs, none restarting."""
        result = run(DemoConfig(seed=5, workers=3))

        assert [(r.parent, r.id) for r in result.tree] == [
            ("root", "ledger"),
            ("root", "pipeline"),
            ("pipeline", "dispatcher"),
            ("pipeline", "workers"),
            ("workers", "w1"),
            ("workers", "w2"),
            ("workers", "w3"),
        ]
        assert all(r.pid is not None and not r.restarting for r in result.tree)
        assert [(c.supervisor, c.specs, c.active) for c in result.counts] == [
            ("root", 2, 2),
            ("pipeline", 2, 2),
            ("workers", 3, 3),
        ]

    def test_the_timeline_shows_the_supervisors_reports(self) -> None:
        """The printed lines come from the runtime's log events: crashes, backoff, strategies."""
        out = io.StringIO()
        result = run(DemoConfig(seed=1), out)
        printer = PlainPrinter(out)
        printer.summary(result)
        text = out.getvalue()

        assert "[workers: one_for_one]" in text
        assert "delayed" in text
        assert "(backoff)" in text
        assert "restarted workers" in text
        assert "rest_for_one" in text
        assert "shutdown timeout enforced" in text
        assert "re-queued (w" in text
        assert "pending task(s) read from the ledger" in text
        assert "OK: 40/40 tasks completed exactly once" in text

    def test_same_seed_same_fault_plan(self) -> None:
        """The plan is a function of the seed; different seeds pick different tasks."""
        plans = {FaultPlan.from_seed(s, 40, 4) for s in range(10)}

        assert FaultPlan.from_seed(3, 40, 4) == FaultPlan.from_seed(3, 40, 4)
        assert len(plans) > 1

    def test_small_runs_leave_out_what_does_not_fit(self) -> None:
        """One task, one worker: no storm, no dispatcher crash, and the run still holds."""
        result = run(DemoConfig(seed=1, tasks=1, workers=1))

        assert (result.exit_code, result.completed) == (0, 1)
        assert result.faults_planned["rate_limit"] == 0

    def test_structlog_config_restored(self) -> None:
        """The demo routes log events only while it runs."""
        before = structlog.get_config()
        run(DemoConfig(seed=1, tasks=10))

        assert before == structlog.get_config()


class TestVerificationCanFail:
    """A dispatcher that forgets a dead worker's task is caught as lost work."""

    def test_no_requeue_on_down_loses_exactly_the_interrupted_tasks(self) -> None:
        """Without re-queue on DOWN, the crashed and killed workers' tasks are lost: exit 1."""
        out = io.StringIO()
        plan = FaultPlan(crash=(5, 20), kill=(30,))
        result = run(DemoConfig(seed=1, requeue_on_down=False, faults=plan), out)
        PlainPrinter(out).summary(result)

        assert result.exit_code == 1
        assert result.lost == (5, 20, 30)
        assert (result.completed, result.submitted) == (37, 40)
        assert "FAILED: no task completed for 3 s" in out.getvalue()
        assert "3 task(s) lost: 5, 20, 30" in out.getvalue()

    @pytest.mark.parametrize("seed", [1, 2])
    def test_seeded_faults_without_dispatcher_crash_lose_work(self, seed: int) -> None:
        """The seeded model faults and kill, minus the dispatcher crash: work is lost."""
        seeded = FaultPlan.from_seed(seed, 40, 4)
        plan = attrs.evolve(seeded, dispatcher_crash_at=None)
        result = run(DemoConfig(seed=seed, requeue_on_down=False, faults=plan))

        assert result.exit_code == 1
        assert set(plan.crash + plan.kill) <= set(result.lost)

    def test_a_new_dispatcher_recovers_pending_work_from_the_ledger(self) -> None:
        """Even a forgetful dispatcher's losses before its restart come back from the ledger."""
        plan = FaultPlan(crash=(3,), dispatcher_crash_at=20)
        result = run(DemoConfig(seed=1, requeue_on_down=False, faults=plan))

        assert (result.exit_code, result.lost) == (0, ())


class TestCommand:
    """``regency demo`` as users run it."""

    def test_json_summary(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        """--json writes the verification; the exit status matches it."""
        path = tmp_path / "demo.json"

        real_run = trio.run

        def fake_run(fn: Callable[[], Awaitable[object]]) -> object:
            return real_run(fn, clock=trio.testing.MockClock(autojump_threshold=0))

        monkeypatch.setattr(trio, "run", fake_run)
        argv = ["supervision", "--plain", "--tasks", "12", "--seed", "4", "--json", str(path)]
        status = main(argv)
        data = json.loads(path.read_text())

        assert status == 0
        assert (data["ok"], data["exit_code"], data["lost"], data["completed"]) == (
            True,
            0,
            [],
            12,
        )
        assert data["total_restarts"] > 0

    def test_bad_arguments_exit_2(self) -> None:
        """A non-positive count is a usage error."""
        with pytest.raises(SystemExit) as e:
            main(["supervision", "--tasks", "0"])

        assert e.value.code == 2

    @pytest.mark.slow
    def test_real_run(self) -> None:
        """The real command, on real time: exit 0 and the key lines, in a few seconds."""
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        proc = subprocess.run(
            [sys.executable, "-m", "agents.cli", "demo", "supervision", "--plain", "--tasks", "10"],
            capture_output=True,
            text=True,
            timeout=30,
            cwd=ROOT,
            env=env,
            check=False,
        )

        assert proc.returncode == 0, proc.stdout + proc.stderr
        out = proc.stdout
        assert "supervision tree" in out
        assert "died:" in out
        assert "restarted" in out
        assert "lost (submitted - completed)       0" in out
        assert "OK: 10/10 tasks completed exactly once, none lost" in out
