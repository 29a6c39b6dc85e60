"""The simulator: seed sweeps across fault mixes, replay of a seed, and a checker that bites.

Each sweep runs many short seeded histories (``DURATION`` simulated seconds of faults,
then heal, liveness and the final checks) and fails with the seed and the commands that
reproduce it. ``--sim-seed=N`` runs only seed N in every sweep.
"""

from __future__ import annotations

import random

import pytest
import trio
import trio.testing

from runtime.raft.core import Entry, EntryKind, Message, MsgType
from runtime.sim.cli import main as chaos_main
from runtime.sim.cli import parse_faults
from runtime.sim.cluster import FAULT_MIXES, SimConfig, repro_commands, run_seed
from runtime.sim.disk import SimDisk
from runtime.sim.invariants import Checker, SimViolation
from runtime.sim.network import LinkParams, SimNetwork

DURATION = 8.0

# (test id, nodes, fault mix, seeds): about 210 seeds, ~35 s on one core.
SWEEPS = [
    ("all3", 3, "all", 80),
    ("network3", 3, "network", 35),
    ("process3", 3, "process", 35),
    ("all5", 5, "all", 30),
    ("none3", 3, "none", 10),
    ("single", 1, "process", 10),
]


@pytest.mark.parametrize(
    ("nodes", "mix", "count"), [s[1:] for s in SWEEPS], ids=[s[0] for s in SWEEPS]
)
def test_seed_sweep_keeps_invariants(
    nodes: int, mix: str, count: int, sim_seed: int | None, request: pytest.FixtureRequest
) -> None:
    """Every seed keeps safety, loses no acked proposal and recovers after the heal."""
    base = 1000 * (1 + [s[0] for s in SWEEPS].index(request.node.callspec.id))
    seeds = [sim_seed] if sim_seed is not None else range(base, base + count)
    name = f"test_seed_sweep_keeps_invariants and {request.node.callspec.id}"
    elected = 0
    for seed in seeds:
        cfg = SimConfig(
            seed=seed,
            nodes=nodes,
            faults=FAULT_MIXES[mix],
            duration=DURATION,
            test_name=f"'{name}'",
        )
        result = run_seed(cfg)
        result.raise_on_violation()
        elected += result.time_to_elect is not None

    assert len(seeds) == elected


def test_same_seed_replays_the_same_history(sim_seed: int | None) -> None:
    """A seed's history digest is the same on every run; another seed's differs."""
    seed = 77 if sim_seed is None else sim_seed
    cfg = SimConfig(seed=seed, duration=DURATION)

    first, second = run_seed(cfg), run_seed(cfg)
    other = run_seed(SimConfig(seed=seed + 1, duration=DURATION))

    assert first.digest == second.digest
    assert first.digest != other.digest
    assert (first.elections, first.acked, first.messages) == (
        second.elections,
        second.acked,
        second.messages,
    )


def test_checker_catches_a_disk_that_does_not_fsync() -> None:
    """On a disk that acknowledges fsyncs it never does, crashes break invariants."""
    failures = []
    for seed in range(10):
        cfg = SimConfig(
            seed=seed,
            duration=DURATION,
            faults=FAULT_MIXES["process"],
            broken="no_fsync",
            test_name="test_checker_catches_a_disk_that_does_not_fsync",
        )
        result = run_seed(cfg)
        if not result.ok:
            failures.append(result)
    assert len(failures) >= 3
    with pytest.raises(SimViolation) as info:
        failures[0].raise_on_violation()

    message = str(info.value)
    assert f"seed {failures[0].config.seed}:" in message
    assert f"regency chaos --sim --seed {failures[0].config.seed}" in message
    assert f"--sim-seed={failures[0].config.seed}" in message
    assert "--broken no_fsync" in message


def test_checker_flags_two_leaders_in_one_term() -> None:
    """election_safety: a second leader of a term is a violation."""
    from runtime.raft.core import Role
    from runtime.raft.driver import Status

    class Log:
        first_index = 1

        def log_term(self, index: int) -> int | None:
            return None

    c = Checker()
    for nid in ("a", "b"):
        st = Status(nid, Role.LEADER, 3, nid, 0, 0, 0, False)
        c.on_status(st, Log())  # type: ignore[arg-type]

    assert [v.invariant for v in c.violations] == ["election_safety"]


def test_checker_flags_divergent_applies_and_logs_and_lost_acks() -> None:
    """state_machine_safety, log_matching and acked_durable each fire on bad input."""
    c = Checker()
    c.on_apply("a", Entry(1, 1, EntryKind.NORMAL, b"x"))
    c.on_apply("b", Entry(1, 1, EntryKind.NORMAL, b"y"))
    la = [Entry(1, 1, data=b"x"), Entry(2, 2, data=b"p")]
    lb = [Entry(1, 1, data=b"y"), Entry(2, 2, data=b"p")]
    c.check_final({"a": la, "b": lb}, {"a": [b"x"], "b": [b"x", b"x"]}, [b"x", b"z"])

    kinds = sorted({v.invariant for v in c.violations})
    assert kinds == ["acked_durable", "exactly_once", "log_matching", "state_machine_safety"]


def test_disk_crash_keeps_synced_writes_and_a_prefix_of_the_rest() -> None:
    """What an fsync covered survives a crash; of the rest, at most a prefix survives."""
    disk = SimDisk("n1", ["n1"], random.Random(3))
    st = disk.open()
    st.append([Entry(1, 1), Entry(1, 2)])
    st.begin_sync()()
    st.append([Entry(1, 3)])
    st.append([Entry(1, 4)])
    disk.crash()

    again = disk.open()

    assert again.last_index() in (2, 3, 4)
    assert [again.term(1), again.term(2)] == [1, 1]


def test_connection_lost_arrives_after_what_was_in_flight() -> None:
    """A lost connection is told after every message already sent on that link (TCP
    delivers the close after the data), not across a cut link, and not to a node that
    is down."""
    events: list[object] = []

    async def main() -> None:
        net = SimNetwork(["a", "b", "c"], random.Random(5))
        net.params = LinkParams(delay=0.01, jitter=0.02)
        net.attach("b", events.append, lambda peer: events.append(("lost", peer)))
        async with trio.open_nursery() as nursery:
            nursery.start_soon(net.run)
            for i in range(5):
                net.send("a", "b", Message(MsgType.HEARTBEAT, "a", "b", i))
            net.connection_lost("a", "b")
            net.cut("c", "b")
            net.connection_lost("c", "b")
            net.connection_lost("a", "c")  # nobody attached as c
            await trio.sleep(1)
            nursery.cancel_scope.cancel()

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))

    assert [getattr(e, "term", e) for e in events] == [0, 1, 2, 3, 4, ("lost", "a")]


def test_parse_faults_accepts_kinds_and_mixes() -> None:
    """--faults takes kinds and mix names; unknown names are refused."""
    assert frozenset({"crash", "drop"}) == parse_faults("crash,drop")
    assert FAULT_MIXES["network"] == parse_faults("network")
    with pytest.raises(ValueError, match="unknown fault"):
        parse_faults("meteor")


def test_cli_runs_seeds_and_reports(tmp_path: object, capsys: pytest.CaptureFixture[str]) -> None:
    """regency chaos --sim prints the summary, writes JSON and exits 0 when clean."""
    import json
    from pathlib import Path

    out = Path(str(tmp_path)) / "r.json"
    status = chaos_main(
        [
            "--sim",
            "--seeds",
            "2",
            "--seed",
            "5",
            "--duration",
            "3",
            "--jobs",
            "1",
            "--json",
            str(out),
        ]
    )

    assert status == 0
    report = json.loads(out.read_text())
    assert [r["seed"] for r in report["runs"]] == [5, 6]
    assert "simulated seconds in" in capsys.readouterr().out


def test_cli_exits_nonzero_on_violation(capsys: pytest.CaptureFixture[str]) -> None:
    """A violating seed makes the command exit 1 and print how to reproduce it."""
    status = chaos_main(
        [
            "--sim",
            "--seed",
            "3",
            "--duration",
            "8",
            "--faults",
            "process",
            "--jobs",
            "1",
            "--broken",
            "no_fsync",
        ]
    )

    assert status == 1
    assert "reproduce: regency chaos --sim --seed 3" in capsys.readouterr().out


def test_repro_command_names_the_configuration() -> None:
    """The reproduction command carries seed, nodes, faults and duration."""
    cfg = SimConfig(seed=9, nodes=5, faults=frozenset({"drop"}), duration=12, test_name="x")

    assert repro_commands(cfg) == [
        "regency chaos --sim --seed 9 --nodes 5 --faults drop --duration 12",
        "pytest tests/runtime/sim -k x --sim-seed=9",
    ]
