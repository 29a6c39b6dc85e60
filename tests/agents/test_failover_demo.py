"""``regency demo``: the failover demo run for real, a broken variant, and its checks.

The real runs start OS processes on loopback; nothing asserts on speed. The checks of
:func:`agents.failover_demo.verify` are also fed hand-made logs, one violation at a time,
to show each one can fail.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from agents.failover_demo import main, verify
from supervisors.ledger import Task, TaskState
from supervisors.member_app import expected_answer

ROOT = Path(__file__).resolve().parents[2]


def _demo(tmp: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TMPDIR": str(tmp)}
    return subprocess.run(
        [sys.executable, "-m", "agents.cli", "demo", "--plain", "--think-ms", "200:500", *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
        env=env,
        check=False,
    )


@pytest.mark.slow
def test_demo_run_kills_the_leader_and_verifies_exactly_once(tmp_path: Path) -> None:
    """20 jobs, one leader SIGKILL: exit 0, the timeline and every verification line."""
    path = tmp_path / "demo.json"

    proc = _demo(tmp_path, "--tasks", "20", "--kills", "1", "--json", str(path))

    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout
    assert "SIGKILL o" in out
    assert "dispatching again" in out
    assert "caught up" in out
    assert "lost                                0" in out
    assert "duplicated completions              0" in out
    assert "stale-term commands applied         0" in out
    assert "5 got their original task id back" in out
    assert "OK: 20/20 jobs completed exactly once across 1 leader kill(s)" in out
    data = json.loads(path.read_text())
    assert (data["ok"], data["exit_code"], len(data["kills"])) == (True, 0, 1)
    assert data["kills"][0]["failover_ms"] > 0
    assert data["verification"]["tasks_in_ledger"] == 20


@pytest.mark.slow
def test_broken_variant_without_idempotency_keys_fails(tmp_path: Path) -> None:
    """Resubmitting without keys makes second tasks; the verification says so, exit 1."""
    proc = _demo(tmp_path, "--tasks", "12", "--kills", "1", "--broken-no-idempotency")

    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "BROKEN VARIANT" in proc.stdout
    assert "FAILED: 5 job(s) became two tasks and ran twice" in proc.stdout
    assert "finished work redone                5" in proc.stdout


def test_bad_arguments_exit_2() -> None:
    """Counts out of range are usage errors."""
    for argv in (["--tasks", "0"], ["--kills", "4"], ["--workers", "0"]):
        with pytest.raises(SystemExit) as e:
            main(argv)

        assert e.value.code == 2


# --------------------------------------------------------------------------- verify


def _task(tid: str, job: str, state: TaskState = TaskState.COMPLETED) -> Task:
    result = {"job": job, "answer": expected_answer(job)} if state is TaskState.COMPLETED else None
    return Task(
        task_id=tid,
        payload={"job": job},
        submitted_at=0.0,
        idempotency_key=job,
        max_attempts=3,
        state=state,
        result=result,
    )


def _clean() -> tuple[dict[str, list[str]], dict[str, Any], list[list[Any]]]:
    jobs = {"a": ["t1"], "b": ["t2"]}
    tasks: dict[str, Any] = {"t1": _task("t1", "a"), "t2": _task("t2", "b")}
    records = [
        [1, "new_term", None, None, 1, "o1", "accepted", ""],
        [2, "submit", "t1", None, None, "a", "accepted", ""],
        [3, "submit", "t2", None, None, "b", "accepted", ""],
        [4, "assign", "t1", "w1", 1, None, "accepted", ""],
        [5, "new_term", None, None, 2, "o2", "accepted", ""],
        [6, "assign", "t2", "w1", 2, None, "accepted", ""],
        [7, "progress", "t1", "w1", 1, None, "refused", "refused progress: stale_term 1 < 2"],
        [8, "complete", "t1", "w1", 1, None, "accepted", ""],
        [9, "complete", "t2", "w1", 2, None, "accepted", ""],
        [10, "complete", "t2", "w1", 2, None, "duplicate", ""],
    ]
    return jobs, tasks, records


def test_verify_accepts_a_clean_run() -> None:
    """One task per job, one accepted Complete each, fencing kept: no problems."""
    jobs, tasks, records = _clean()

    v = verify(jobs, tasks, records, [("a", 1.0, "w1"), ("b", 1.0, "w1")], {"t1": 2.0})

    assert v.problems == ()
    assert (v.completed_ok, v.rejected_duplicates, v.stale_refused, v.terms) == (
        2,
        1,
        1,
        {1: "o1", 2: "o2"},
    )


def test_verify_catches_a_stale_term_command_applied() -> None:
    """An Assign of term 1 accepted after term 2's NewTerm is a violation."""
    jobs, tasks, records = _clean()
    records.insert(6, [6, "assign", "t1", "w2", 1, None, "accepted", ""])

    v = verify(jobs, tasks, records, [], {})

    assert v.stale_accepted == 1
    assert any("of term 1 accepted after 2" in p for p in v.problems)


def test_verify_catches_a_duplicated_completion_and_a_lost_task() -> None:
    """Two accepted Completes for one task, and a task left pending, both fail."""
    jobs, tasks, records = _clean()
    records.append([11, "complete", "t1", "w2", 2, None, "accepted", ""])
    tasks["t2"] = _task("t2", "b", TaskState.PENDING)

    v = verify(jobs, tasks, records, [], {})

    assert (v.duplicated_completions, v.lost) == (("t1",), ("b",))
    assert len(v.problems) == 2


def test_verify_separates_re_executions_from_redone_finished_work() -> None:
    """A job run twice before it finished is a re-execution; after it finished, a failure."""
    jobs, tasks, records = _clean()
    started = [("a", 1.0, "w1"), ("a", 1.5, "w2"), ("b", 1.0, "w1"), ("b", 5.0, "w2")]

    v = verify(jobs, tasks, records, started, {"t1": 2.0, "t2": 3.0})

    assert (v.re_executions, v.redone_after_finish) == (2, ("b",))
    assert v.problems == ("finished work redone for b",)
