"""``regency chaos --real``: the seeded schedule, the checker, the CLI, and one short real run."""

from __future__ import annotations

import importlib.util
import itertools
import json
import subprocess
import sys
from pathlib import Path

import pytest

from agents.chaos_real import (
    ALL_KINDS,
    Observation,
    RealConfig,
    check_run,
    make_schedule,
    parse_kinds,
    repro_command,
)
from runtime.sim.cli import main as chaos_main

DONE = {"state": "completed", "result": {"answer": "a"}}


def expected(_job: str) -> str:
    """Every job's answer is "a" in these tables."""
    return "a"


def audit(*records: list[object]) -> list[list[object]]:
    """An audit record list: [index, op, task_id, worker, term, key, kind, detail]."""
    return [list(r) for r in records]


CLEAN_LOG = audit(
    [1, "new_term", None, None, 1, "o1", "accepted", ""],
    [2, "submit", "t1", None, None, "t1", "accepted", ""],
    [3, "assign", "t1", "w1", 1, None, "accepted", ""],
    [4, "complete", "t1", "w1", 1, None, "accepted", ""],
    [5, "complete", "t1", "w2", 1, None, "duplicate", ""],
)


def check(**kw: object) -> list[str]:
    """check_run on a clean run, with ``kw`` replacing any argument."""
    args: dict[str, object] = {
        "accepted": ["t1"],
        "finals": {"t1": DONE},
        "audits": {"o1": CLEAN_LOG, "o2": CLEAN_LOG[:3]},
        "observations": [Observation(1.0, "o1", True, "o1", 1, True)],
        "leader_after_heal": 0.5,
        "heal_bound": 5.0,
        "expected": expected,
    }
    args.update(kw)
    return check_run(**args)  # type: ignore[arg-type]


class TestSchedule:
    def test_same_seed_same_schedule(self) -> None:
        """The schedule is a pure function of the configuration."""
        cfg = RealConfig(seed=11, duration=40)

        assert make_schedule(cfg) == make_schedule(RealConfig(seed=11, duration=40))
        assert make_schedule(cfg) != make_schedule(RealConfig(seed=12, duration=40))

    @pytest.mark.parametrize("seed", range(20))
    def test_faults_are_bounded_and_one_at_a_time_per_lane(self, seed: int) -> None:
        """Every fault ends within the duration; a lane never overlaps itself."""
        cfg = RealConfig(seed=seed, duration=20, members=5, workers=2)
        faults = make_schedule(cfg)

        assert all(f.at >= 1.0 and f.at + f.length <= cfg.duration for f in faults)
        for lane in ("group", "worker"):
            mine = [f for f in faults if f.lane == lane]
            assert all(a.at + a.length <= b.at for a, b in itertools.pairwise(mine))
        assert {f.kind for f in faults} <= set(ALL_KINDS)
        assert all(f.targets[0] in cfg.worker_names for f in faults if f.lane == "worker")

    def test_only_the_chosen_kinds(self) -> None:
        """--faults limits the kinds; process kinds alone leave the network clean."""
        faults = make_schedule(RealConfig(seed=3, duration=60, faults=parse_kinds("process")))

        assert {f.kind for f in faults} == {"kill", "stop"}

    def test_parse_kinds_and_repro(self) -> None:
        """Kinds and mixes parse; unknown names are refused; the repro names the config."""
        assert parse_kinds("kill,network") == frozenset(
            {"kill", "partition", "oneway", "delay", "reset"}
        )
        with pytest.raises(ValueError, match="unknown fault"):
            parse_kinds("meteor")
        assert (
            repro_command(RealConfig(seed=4, duration=15, faults=frozenset({"stop", "kill"})))
            == "regency chaos --real --seed 4 --duration 15 --members 3 --workers 3 "
            "--faults kill,stop --rate 4"
        )


class TestCheck:
    def test_clean_run_has_no_violation(self) -> None:
        """A run where everything held reports nothing."""
        assert check() == []

    def test_lost_unfinished_and_wrong_tasks(self) -> None:
        """Unknown, unfinished and wrongly answered tasks are each a violation."""
        finals = {
            "t1": DONE,
            "t2": None,
            "t3": {"state": "assigned"},
            "t4": {"state": "completed", "result": {"answer": "b"}},
        }
        found = check(accepted=["t1", "t2", "t3", "t4"], finals=finals, audits={})

        assert [v.split(":")[0] for v in found] == ["lost", "unfinished", "wrong result"]

    def test_a_second_accepted_completion(self) -> None:
        """Two accepted Completes of one task break exactly-once."""
        log = [*CLEAN_LOG, [6, "complete", "t1", "w3", 2, None, "accepted", ""]]

        assert check(audits={"o1": log}) == [
            "completed twice: task t1 has 2 accepted completions",
            "completion not in the log: task t1 (2 accepted)",
        ]

    def test_a_stale_term_command_accepted(self) -> None:
        """A fenced command older than the fencing term must never be accepted."""
        log = [
            *CLEAN_LOG,
            [6, "new_term", None, None, 3, "o2", "accepted", ""],
            [7, "expire", None, None, 2, None, "accepted", ""],
            [8, "expire", None, None, 2, None, "refused", ""],
        ]

        assert check(audits={"o1": log}) == [
            "stale term: expire of term 2 accepted at index 7 after term 3 was fenced in"
        ]

    def test_two_leaders_in_a_term(self) -> None:
        """Two NewTerm leaders, two members seen leading, or two leader_elected in one term."""
        log = [*CLEAN_LOG, [6, "new_term", None, None, 1, "o2", "accepted", ""]]
        seen = [
            Observation(1.0, "o1", True, "o1", 1, True),
            Observation(1.1, "o2", True, "o2", 1, True),
        ]

        found = check(audits={"o1": log}, observations=seen, elected={1: ["o1", "o3"]})

        assert [v.split(":")[0] for v in found] == [
            "two orchestrators in term 1",
            "two leaders seen in term 1",
            "two members logged leader_elected for term 1",
        ]

    def test_members_disagree(self) -> None:
        """Two members that applied different commands at one index disagree."""
        other = [*CLEAN_LOG[:2], [3, "assign", "t1", "w2", 1, None, "accepted", ""]]

        assert check(audits={"o1": CLEAN_LOG, "o2": other})[0].startswith("disagreement at index 3")

    def test_no_leader_after_heal(self) -> None:
        """No leader after the heal, or one too late, is a violation."""
        assert check(leader_after_heal=None) == ["no leader within 5 s of the heal"]
        assert check(leader_after_heal=7.0) == ["leader only 7.0 s after the heal (bound 5 s)"]


class TestCommand:
    def test_usage_errors_exit_2(self) -> None:
        """Bad options exit 2 before anything starts."""
        assert chaos_main(["--real", "--faults", "meteor"]) == 2
        assert chaos_main(["--real", "--duration", "0"]) == 2
        assert chaos_main(["--real", "--sim"]) == 2

    def test_runtime_does_not_import_agents(self) -> None:
        """The sim CLI loads agents.chaos_real only for --real."""
        code = "import sys, runtime.sim.cli; print('agents' in sys.modules)"
        out = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, check=True
        ).stdout.strip()

        assert out == "False"


@pytest.mark.slow
def test_short_real_run_with_kills_stops_and_partitions(tmp_path: Path) -> None:
    """15 s of kills, stops and partitions on 3 members and 2 workers: exit 0, reports."""
    if importlib.util.find_spec("supervisors.member_app") is None:
        pytest.skip("supervisors.member_app (the process entry points) is not there yet")
    if importlib.util.find_spec("matplotlib") is None:
        pytest.skip("matplotlib is not installed: pip install 'regency[chaos]'")
    report, plot = tmp_path / "chaos.json", tmp_path / "chaos.png"

    status = chaos_main(
        [
            "--real",
            "--seed",
            "3",
            "--duration",
            "15",
            "--workers",
            "2",
            "--faults",
            "kill,stop,partition",
            "--json",
            str(report),
            "--plot",
            str(plot),
            "--work-dir",
            str(tmp_path / "work"),
        ]
    )

    data = json.loads(report.read_text())
    assert data["violations"] == []
    assert status == 0
    assert data["summary"]["tasks"]["accepted"] > 0
    assert (
        data["summary"]["tasks"]["completed"] + data["summary"]["tasks"]["failed"]
        == (data["summary"]["tasks"]["accepted"])
    )
    assert {f["kind"] for f in data["injected"]} <= {"kill", "stop", "partition"}
    assert data["injected"]
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
