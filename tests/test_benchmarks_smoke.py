"""Smoke test of the benchmark harness and the messaging suite: tiny sizes, no timing.

Every messaging case runs for regency and each peer that is available here (triotp is
left out: its venv is made on first use and may need the network), and the JSON each
case appends has the shape BENCHMARKS.md fixes. Nothing here asserts on speed.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from benchmarks import harness, messaging
from benchmarks.harness import Skip
from benchmarks.peers import erlang_peer, idle_memory

TINY = messaging.Sizes(one_way=300, ping_pong=50, call=50, spawn=50, idle=20)
CASES = ["one_way_throughput", "ping_pong", "call_round_trip", "spawn_rate", "idle_process_memory"]


@pytest.fixture(scope="module")
def workers() -> Iterator[messaging.Workers]:
    """The subprocess peers of the suite, without triotp (whose venv may need the net)."""
    with contextlib.ExitStack() as stack:
        erlang = erlang_peer.messaging_worker()
        if not isinstance(erlang, Skip):
            stack.enter_context(erlang)
        idle = stack.enter_context(idle_memory.server())
        yield messaging.Workers(
            triotp=Skip("not in the smoke test"),
            triotp_python=Skip("not in the smoke test"),
            erlang=erlang,
            idle=idle,
        )


def test_suite_has_the_fixed_case_names(workers: messaging.Workers) -> None:
    """The messaging suite yields exactly the cases BENCHMARKS.md names, in order."""
    names = [c.name for c in messaging.build_cases(TINY, workers)]

    assert names == CASES


@pytest.mark.parametrize("name", CASES)
def test_case_runs_and_appends_its_json(
    name: str, workers: messaging.Workers, tmp_path: Path
) -> None:
    """A case measures regency and every available peer and appends a well-formed row."""
    case = {c.name: c for c in messaging.build_cases(TINY, workers)}[name]
    out = io.StringIO()
    path = tmp_path / "out.json"

    results, regency_ok = harness.measure_case(case, repeats=1, out=out)
    harness.append_json(path, [harness.json_record("messaging", case, r, 1) for r in results])
    harness.append_json(path, [harness.json_record("messaging", case, r, 1) for r in results])

    assert regency_ok, out.getvalue()
    rows = json.loads(path.read_text())
    assert len(rows) == 2
    row = rows[0]
    assert {"suite", "case", "unit", "better", "value", "peers", "params"} == set(row)
    assert ("messaging", name) == (row["suite"], row["case"])
    assert row["better"] == ("lower" if name == "idle_process_memory" else "higher")
    assert isinstance(row["value"], float)
    assert math.isfinite(row["value"])
    available = {p for p, m in case.peers.items() if not isinstance(m, Skip)}
    assert available == set(row["peers"]), out.getvalue()
    assert all(isinstance(v, float) for v in row["peers"].values())
    assert {case.size_param: case.size, "repeats": 1}.items() <= row["params"].items()
    assert "failed" not in out.getvalue()


def test_erlang_peer_is_skipped_by_package_name_without_escript(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Without escript the Erlang peer is a Skip naming the Debian package."""
    monkeypatch.setattr(shutil, "which", lambda _: None)

    worker = erlang_peer.messaging_worker()

    assert isinstance(worker, Skip)
    assert "erlang-base" in worker.reason


def test_skipped_peer_prints_a_line_and_no_figure() -> None:
    """A skipped peer gets one line with its reason and no figure in the results."""
    case = harness.case(
        "x", "u", "higher", subject=lambda n: float(n), peers={"p": Skip("p is absent")}, size=4
    )
    out = io.StringIO()

    results, _ = harness.measure_case(case, repeats=3, out=out)

    assert out.getvalue() == "  skip p: p is absent\n"
    assert results[0].peers == {}
    assert results[0].value == 4.0


def test_failing_peer_is_reported_and_dropped() -> None:
    """A peer that raises is reported on a line and left out, never given a figure."""

    def broken(n: int) -> float:
        raise RuntimeError("boom")

    case = harness.case("x", "u", "higher", subject=float, peers={"bad": broken}, size=2)
    out = io.StringIO()

    results, regency_ok = harness.measure_case(case, repeats=2, out=out)

    assert regency_ok
    assert "bad failed on x: RuntimeError: boom" in out.getvalue()
    assert results[0].peers == {}


def test_unknown_suite_lists_the_suites(capsys: pytest.CaptureFixture[str]) -> None:
    """An unknown suite name exits 2 with a message listing the suites there are."""
    code = harness.main(["no_such_suite"])

    assert code == 2
    assert "messaging" in capsys.readouterr().err


def test_only_suites_are_listed_as_suites() -> None:
    """Helper modules (the bare-restart bound, the driver runner) are not suites."""
    assert harness.available_suites() == [
        "failover",
        "messaging",
        "raft",
        "supervision",
        "transport",
    ]


def test_percentile_interpolates() -> None:
    """Percentiles interpolate linearly between ranks."""
    values = [1.0, 2.0, 3.0, 4.0, 5.0]
    actual = tuple(harness.percentile(values, q) for q in (0, 50, 100, 90))

    assert actual == pytest.approx((1.0, 3.0, 5.0, 4.6))


def test_one_measurement_can_report_several_metrics() -> None:
    """A case with several metrics (e.g. p50 and p99) reports each from one measurement."""
    metrics = (
        harness.Metric("lat_p50_us", "us", "lower"),
        harness.Metric("lat_p99_us", "us", "lower"),
    )
    case = harness.Case(
        metrics=metrics,
        subject=lambda n: {"lat_p50_us": 1.0, "lat_p99_us": 9.0},
        peers={"floor": lambda n: {"lat_p50_us": 0.5, "lat_p99_us": 3.0}},
        size=10,
    )

    results, _ = harness.measure_case(case, repeats=3, out=io.StringIO())

    actual = [(r.metric.name, r.value, r.peers) for r in results]
    assert actual == [("lat_p50_us", 1.0, {"floor": 0.5}), ("lat_p99_us", 9.0, {"floor": 3.0})]


# --------------------------------------------------------------------------- supervision


def _check_rows(suite: str, case: harness.Case, out: io.StringIO, path: Path) -> None:
    """Measure ``case`` once, append its rows, and check their shape (no timing)."""
    results, regency_ok = harness.measure_case(case, repeats=1, out=out)
    harness.append_json(path, [harness.json_record(suite, case, r, 1) for r in results])

    assert regency_ok, out.getvalue()
    rows = json.loads(path.read_text())
    assert [r["case"] for r in rows] == [m.name for m in case.metrics]
    available = {p for p, m in case.peers.items() if not isinstance(m, Skip)}
    for row, metric in zip(rows, case.metrics, strict=True):
        assert {"suite", "case", "unit", "better", "value", "peers", "params"} == set(row)
        assert (row["suite"], row["unit"], row["better"]) == (suite, metric.unit, metric.better)
        assert isinstance(row["value"], float)
        assert math.isfinite(row["value"])
        assert available == set(row["peers"]), out.getvalue()
        assert {case.size_param: case.size, "repeats": 1}.items() <= row["params"].items()
    assert "failed" not in out.getvalue()


@pytest.fixture(scope="module")
def supervision_peers() -> Iterator[object]:
    """The Erlang supervision peer when escript is installed; triotp is left out."""
    from benchmarks import supervision
    from benchmarks.peers.figures_peer import FiguresPeer

    escript = shutil.which("escript")
    with contextlib.ExitStack() as stack:
        erlang: FiguresPeer | Skip = Skip("escript not installed")
        if escript is not None:
            erlang = stack.enter_context(
                FiguresPeer([escript, str(supervision.ERLANG_SCRIPT)], name="erlang")
            )
        yield supervision.Peers(triotp=Skip("not in the smoke test"), erlang=erlang)


SUPERVISION_CASES = [
    "restart_latency_p50_us",
    "rest_for_one_restart_p50_us",
    "storm_10_ms",
    "storm_20_ms",
]


@pytest.mark.parametrize("name", SUPERVISION_CASES)
def test_supervision_case_runs_and_appends_its_json(
    name: str, supervision_peers: object, tmp_path: Path
) -> None:
    """Each supervision case measures regency (and Erlang if installed) with tiny sizes."""
    from benchmarks import supervision

    assert isinstance(supervision_peers, supervision.Peers)
    tiny = supervision.Sizes(restarts=5, rest_restarts=5, storm_small=10, storm_large=20)
    cases = supervision.build_cases(tiny, supervision_peers)
    assert [c.name for c in cases] == SUPERVISION_CASES
    case = {c.name: c for c in cases}[name]

    _check_rows("supervision", case, io.StringIO(), tmp_path / "out.json")


def test_supervision_full_sizes_have_the_fixed_case_names() -> None:
    """Without tiny sizes, the storms are the fixed 1,000 and 10,000 children."""
    from benchmarks import supervision

    peers = supervision.Peers(triotp=Skip("x"), erlang=Skip("x"))
    names = [m.name for c in supervision.build_cases(supervision.QUICK, peers) for m in c.metrics]

    assert names == [
        "restart_latency_p50_us",
        "restart_latency_p99_us",
        "rest_for_one_restart_p50_us",
        "storm_1000_ms",
        "storm_10000_ms",
    ]


@pytest.mark.parametrize(("children", "index"), [(1, 0), (4, 1)])
def test_bare_restart_bound_restarts_the_named_child(children: int, index: int) -> None:
    """The bare-trio bound runs the suite's protocol to completion, one sample per restart."""
    import trio

    from benchmarks import bare_restart

    samples = trio.run(bare_restart._bare, children, index, 5)
    assert len(samples) == 5
    assert all(s > 0 for s in samples)


# --------------------------------------------------------------------------- transport


@pytest.fixture(scope="module")
def transport_servers() -> Iterator[object]:
    """The regency child node and the floor server; Erlang's pair is left out (slow)."""
    from benchmarks import transport
    from benchmarks.peers.transport_peers import ChildServer

    with ChildServer("regency") as regency, ChildServer("floor") as floor:
        yield transport.Servers(regency=regency, floor=floor, erlang=Skip("not in smoke test"))


@pytest.mark.parametrize("name", ["one_way_throughput", "call_round_trip_p50_us"])
def test_transport_case_runs_and_appends_its_json(
    name: str, transport_servers: object, tmp_path: Path
) -> None:
    """Each transport case measures regency and both floors across two OS processes."""
    from benchmarks import transport

    assert isinstance(transport_servers, transport.Servers)
    cases = transport.build_cases(transport.Sizes(one_way=300, calls=20), transport_servers)
    assert [m.name for c in cases for m in c.metrics] == [
        "one_way_throughput",
        "call_round_trip_p50_us",
        "call_round_trip_p99_us",
    ]
    case = {c.name: c for c in cases}[name]

    _check_rows("transport", case, io.StringIO(), tmp_path / "out.json")


@pytest.mark.parametrize("window", [0.0, 0.0005])
def test_busywait_cost_measures_both_ends(window: float, monkeypatch: pytest.MonkeyPatch) -> None:
    """The busy-wait cost script calls across two OS processes and reads both ends' CPU;
    it sets ``REGENCY_BUSY_WAIT`` for its own measurement only."""
    from benchmarks import busywait_cost

    monkeypatch.delenv("REGENCY_BUSY_WAIT", raising=False)
    p50, own, server = busywait_cost.measure(window, 0.001, 10)
    assert p50 > 0
    assert own > 0
    assert server >= 0  # /proc counts in clock ticks: ten short calls may round to 0
    assert "REGENCY_BUSY_WAIT" not in os.environ


def test_transport_erlang_peer_is_skipped_by_package_name_without_erl(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Without erl the Erlang pair is a Skip naming the Debian package."""
    from benchmarks.peers import transport_peers

    monkeypatch.setattr(shutil, "which", lambda _: None)

    worker = transport_peers.erlang_worker()

    assert isinstance(worker, Skip)
    assert "erlang-base" in worker.reason


# --------------------------------------------------------------------------- raft suite

RAFT_CASES = [
    ["commit_throughput"],
    ["commit_throughput_1", "commit_latency_p50_ms", "commit_latency_p99_ms"],
    ["failover_p50_ms", "failover_p99_ms", "failover_max_ms", "failover_multi_round"],
    ["handover_p50_ms", "handover_p99_ms"],
]


@pytest.fixture(scope="module")
def raft_cases() -> Iterator[dict[str, harness.Case]]:
    """The raft suite's cases over running clusters (regency, and etcd/pysyncobj if here)."""
    from benchmarks import raft

    with contextlib.ExitStack() as resources:
        ctx = harness.SuiteContext(
            suite="raft", quick=True, repeats=1, resources=resources, out=io.StringIO()
        )
        clusters = raft.start_clusters(ctx)
        sizes = raft.Sizes(throughput=64, sequential=5, kills=1, handovers=1)
        yield {c.name: c for c in raft.build_cases(ctx, clusters, sizes)}


@pytest.mark.slow
def test_raft_suite_has_the_fixed_case_names(raft_cases: dict[str, harness.Case]) -> None:
    """The raft suite yields the cases BENCHMARKS.md names, with their settings in params."""
    names = [[m.name for m in c.metrics] for c in raft_cases.values()]

    assert names == RAFT_CASES
    for case in raft_cases.values():
        assert case.params["election_timeout_max_ms"] == 300
        assert case.params["heartbeat_ms"] == 50
        assert "kills" in case.params


@pytest.mark.slow
@pytest.mark.parametrize("name", [names[0] for names in RAFT_CASES])
def test_raft_case_runs_and_appends_its_json(
    name: str, raft_cases: dict[str, harness.Case], tmp_path: Path
) -> None:
    """Each raft case measures regency and every peer cluster that runs here."""
    _check_rows("raft", raft_cases[name], io.StringIO(), tmp_path / "out.json")


def test_raft_etcd_peer_is_reported_missing_without_etcd(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without etcd on the PATH the etcd peer is reported unavailable."""
    from benchmarks.peers import raft_etcd

    monkeypatch.setattr(shutil, "which", lambda _: None)

    assert raft_etcd.available() is None


# --------------------------------------------------------------------------- failover suite

FAILOVER_CASES = [
    ["failover_p50_ms", "failover_p99_ms"],
    ["handover_p99_ms", "handover_p50_ms"],
    ["tasks_lost", "tasks_duplicated"],
]


@pytest.fixture(scope="module")
def failover_cases() -> Iterator[dict[str, harness.Case]]:
    """The failover suite's cases over a running group (and etcd if here), one loss each."""
    from benchmarks import failover

    with contextlib.ExitStack() as resources:
        ctx = harness.SuiteContext(
            suite="failover", quick=True, repeats=1, resources=resources, out=io.StringIO()
        )
        group, etcd = failover.start(ctx)
        sizes = failover.Sizes(kills=1, handovers=1)
        yield {c.name: c for c in failover.build_cases(ctx, group, etcd, sizes)}


@pytest.mark.slow
def test_failover_suite_has_the_fixed_case_names(
    failover_cases: dict[str, harness.Case],
) -> None:
    """The failover suite yields the cases BENCHMARKS.md names, with their settings."""
    names = [[m.name for m in c.metrics] for c in failover_cases.values()]

    assert names == FAILOVER_CASES
    for case in failover_cases.values():
        assert case.params["election_timeout_max_ms"] == 300
        assert case.params["heartbeat_ms"] == 50
        assert "kills" in case.params
    assert [m.better for m in failover_cases["tasks_lost"].metrics] == ["lower", "lower"]


@pytest.mark.slow
@pytest.mark.parametrize("name", [names[0] for names in FAILOVER_CASES])
def test_failover_case_runs_and_appends_its_json(
    name: str, failover_cases: dict[str, harness.Case], tmp_path: Path
) -> None:
    """Each failover case measures regency (and etcd where it runs); rows have their shape."""
    _check_rows("failover", failover_cases[name], io.StringIO(), tmp_path / "out.json")
