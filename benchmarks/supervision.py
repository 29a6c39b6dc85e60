"""The supervision suite: regency's supervisors against triotp's and Erlang/OTP's.

Cases (names fixed by BENCHMARKS.md), measured for regency and every peer in the same
run, alternating:

``restart_latency_p50_us``, ``restart_latency_p99_us`` (microseconds, lower is better)
    One-for-one supervisor of one GenServer child registered under a name. Each
    restart: cast the name ``"crash"`` (the child raises in ``handle_cast``: the crash
    is the child's own), then call the name until a call is answered (a call that
    fails because the old child died or the name is between lives is retried after
    one checkpoint); the latency runs from the cast to the reply. This is the same job
    for every peer: triotp has no monitors or ``which_children``, only names, so every
    peer reaches the replacement the way triotp must. ``n`` restarts per
    measurement; p50 and p99 over them, then the median over the rounds.
``rest_for_one_restart_p50_us`` (microseconds, lower)
    The same with a rest-for-one supervisor of :data:`REST_CHILDREN` named children,
    crashing the child at :data:`REST_CRASH_INDEX` (so it and every later one are
    restarted) and calling its name until it answers.
``storm_1000_ms``, ``storm_10000_ms`` (milliseconds, lower)
    One-for-all supervisor of N GenServer children: crash child 0, time until
    ``which_children`` reports N new pids and the last one answers a call. One storm
    per measurement.

Every supervisor has intensity :data:`INTENSITY` per :data:`PERIOD_S` so it never gives
up, and children keep the default 5 s shutdown. Crash reports are filtered out for the
measurement (structlog above ``error`` for regency, logger level ``none`` for Erlang, a
logbook ``NullHandler`` for triotp), so no peer pays for printing them; building them
(regency formats the crash's traceback into ``Crashed``) is still paid.

Peers: ``triotp`` (own venv, subprocess; its supervisor restarts each child on its own,
so it is skipped for rest-for-one and the storms), ``erlang`` (an escript with a real
``supervisor`` callback module and ``gen_server`` children registered with
``{local, Name}``, ``+S 2``).
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import attrs
import structlog
import trio

import runtime
from benchmarks.drivers import run_driver
from benchmarks.harness import Case, Measure, Metric, Skip, SuiteContext, case
from benchmarks.peers import erlang_peer, triotp_peer
from benchmarks.peers.figures_peer import FiguresPeer, first, percentiles
from runtime.messages import Down
from runtime.reasons import KILL
from supervisors import Strategy, SupFlags, server_spec, start_supervisor, which_children

__all__ = [
    "FULL",
    "INTENSITY",
    "PERIOD_S",
    "QUICK",
    "REST_CHILDREN",
    "REST_CRASH_INDEX",
    "Child",
    "Peers",
    "Sizes",
    "build_cases",
    "cases",
    "regency_restart_latencies",
    "regency_storm_ms",
    "start_peers",
]

INTENSITY = 1_000_000_000
"""Restarts allowed per period: high enough that no supervisor gives up."""

PERIOD_S = 1.0
"""The intensity period, in seconds."""

REST_CHILDREN = 4
"""Children of the rest-for-one supervisor."""

REST_CRASH_INDEX = 1
"""The rest-for-one child that crashes: it and the children after it are restarted."""

ERLANG_SCRIPT = Path(__file__).parent / "peers" / "supervision_erlang.escript"
TRIOTP_SCRIPT = Path(__file__).parent / "peers" / "supervision_triotp.py"

P50_P99 = percentiles({"restart_latency_p50_us": 50, "restart_latency_p99_us": 99})
REST_P50 = percentiles({"rest_for_one_restart_p50_us": 50})


@attrs.frozen
class Sizes:
    """Restarts per latency measurement, and the two storm sizes."""

    restarts: int
    rest_restarts: int
    storm_small: int = 1_000
    storm_large: int = 10_000


QUICK = Sizes(restarts=200, rest_restarts=200)
FULL = Sizes(restarts=1_000, rest_restarts=1_000)


# --------------------------------------------------------------------------- regency


class Child(runtime.GenServer):
    """A supervised child: answers calls with ``"pong"``, crashes itself on a cast."""

    async def handle_call(self, request: Any, from_: runtime.From) -> Any:
        """Answer any call."""
        return "pong"

    async def handle_cast(self, msg: Any) -> None:
        """Crash: the injected failure."""
        raise RuntimeError(f"injected crash ({msg!r})")


def _flags(strategy: Strategy) -> SupFlags:
    return SupFlags(strategy=strategy, intensity=INTENSITY, period=PERIOD_S)


def _specs(n: int) -> list[Any]:
    return [server_spec(f"c{i}", Child, name=_name(i)) for i in range(n)]


def _name(index: int) -> str:
    """The registered name of child ``index``."""
    return f"bench_c{index}"


@contextlib.contextmanager
def crash_reports_filtered() -> Iterator[None]:
    """Drop structlog events below CRITICAL while measuring; restore the config after."""
    saved = structlog.get_config()
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.CRITICAL))
    try:
        yield
    finally:
        structlog.configure(**saved)


async def _crash(pid: runtime.Pid) -> None:
    """Make ``pid`` crash itself and wait until it is gone."""
    ref = runtime.monitor(pid)
    runtime.cast(pid, "crash")
    await runtime.receive(lambda m: type(m) is Down and m.ref == ref, timeout=10)


async def _run_driver(driver: Any) -> None:
    """Run ``driver`` as a process on a fresh node; raise unless it ends ``Normal``."""
    async with runtime.Node("bench") as node:
        await run_driver(node, driver)


async def _answered(name: str) -> None:
    """Call ``name`` until its server answers: the restarted child is up."""
    while True:
        try:
            reply = await runtime.call(name, "ping")
        except runtime.ServerExited:  # the old child died, or the name is between lives
            await trio.lowlevel.checkpoint()
            continue
        if reply != "pong":
            raise RuntimeError(f"the replacement answered {reply!r}")
        return


async def _latencies(strategy: Strategy, children: int, index: int, restarts: int) -> list[float]:
    samples: list[float] = []
    name = _name(index)

    async def driver() -> None:
        await start_supervisor(_specs(children), _flags(strategy), link=True)
        await _answered(name)
        for _ in range(restarts):
            t0 = time.perf_counter()
            runtime.cast(name, "crash")
            await _answered(name)
            samples.append((time.perf_counter() - t0) * 1e6)

    await _run_driver(driver)
    return samples


async def _storm(n: int) -> float:
    span: list[float] = []

    async def driver() -> None:
        sup = await start_supervisor(_specs(n), _flags(Strategy.ONE_FOR_ALL))
        kids = await which_children(sup)
        old = {k.pid for k in kids}
        first_pid = kids[0].pid
        assert first_pid is not None
        t0 = time.perf_counter()
        await _crash(first_pid)
        for _ in range(100_000):
            kids = await which_children(sup)
            if all(k.pid is not None and k.pid not in old for k in kids):
                break
        else:
            raise RuntimeError("the storm did not restart every child")
        last = kids[-1].pid
        assert last is not None
        if await runtime.call(last, "ping") != "pong":
            raise RuntimeError("the last replacement did not answer")
        span.append((time.perf_counter() - t0) * 1e3)
        # Kill it rather than stop it in order: only the storm is measured.
        ref = runtime.monitor(sup)
        runtime.send_exit(sup, KILL)
        await runtime.receive(lambda m: type(m) is Down and m.ref == ref, timeout=60)

    await _run_driver(driver)
    return span[0]


def regency_restart_latencies(
    strategy: Strategy, children: int, index: int, restarts: int
) -> list[float]:
    """Per-restart latencies (us), crash of child ``index`` to its replacement answering."""
    with crash_reports_filtered():
        return trio.run(_latencies, strategy, children, index, restarts)


def regency_storm_ms(n: int) -> float:
    """Milliseconds from a crash to all ``n`` one-for-all children restarted and answering."""
    with crash_reports_filtered():
        return trio.run(_storm, n)


def _regency_one_for_one(n: int) -> Mapping[str, float]:
    return P50_P99(regency_restart_latencies(Strategy.ONE_FOR_ONE, 1, 0, n))


def _regency_rest_for_one(n: int) -> Mapping[str, float]:
    return REST_P50(
        regency_restart_latencies(Strategy.REST_FOR_ONE, REST_CHILDREN, REST_CRASH_INDEX, n)
    )


# --------------------------------------------------------------------------- peers


@attrs.frozen
class Peers:
    """The subprocess peers of one suite run (each a peer or a :class:`Skip`)."""

    triotp: FiguresPeer | Skip
    erlang: FiguresPeer | Skip


def start_peers(ctx: SuiteContext, *, triotp: bool = True) -> Peers:
    """Start the triotp (its venv made on first use) and Erlang subprocess peers."""
    triotp_peer_: FiguresPeer | Skip
    python = triotp_peer.ensure_venv(ctx.note) if triotp else Skip("not requested")
    if isinstance(python, Skip):
        triotp_peer_ = python
    else:
        triotp_peer_ = ctx.resources.enter_context(
            FiguresPeer([str(python), "-u", str(TRIOTP_SCRIPT)], name="triotp")
        )
    escript = shutil.which("escript")
    erlang: FiguresPeer | Skip
    if escript is None:
        erlang = Skip(f"escript not found (install the Debian package {erlang_peer.PACKAGE})")
    else:
        erlang = ctx.resources.enter_context(
            FiguresPeer([escript, str(ERLANG_SCRIPT)], name="erlang")
        )
    return Peers(triotp=triotp_peer_, erlang=erlang)


def _ask(peer: FiguresPeer | Skip, case_name: str, reduce: Any) -> Measure | Skip:
    return peer if isinstance(peer, Skip) else peer.measure_with(case_name, reduce)


TRIOTP_ONE_FOR_ONE_ONLY = Skip(
    "triotp's supervisor restarts each child on its own (no rest-for-one or one-for-all)"
)


def _storm_case(n: int, peers: Peers, repeats_hint: int) -> Case:
    return case(
        f"storm_{n}_ms",
        "ms",
        "lower",
        subject=regency_storm_ms,
        peers={"triotp": TRIOTP_ONE_FOR_ONE_ONLY, "erlang": _ask(peers.erlang, "storm", first)},
        size=n,
        size_param="children",
        params={
            "strategy": "one_for_all",
            "storms_per_measurement": 1,
            "intensity": INTENSITY,
            "period_s": PERIOD_S,
            "crash": "child 0 raises on a cast",
        },
        warmup_size=repeats_hint,
    )


def build_cases(sizes: Sizes, peers: Peers) -> list[Case]:
    """The suite's cases for ``sizes``, with ``peers`` as the subprocess peers."""
    common = {
        "intensity": INTENSITY,
        "period_s": PERIOD_S,
        "crash_reports": "filtered",
        "answering": "first answered call to the child's registered name",
    }
    latency = Case(
        metrics=(
            Metric("restart_latency_p50_us", "us", "lower"),
            Metric("restart_latency_p99_us", "us", "lower"),
        ),
        subject=_regency_one_for_one,
        peers={
            "triotp": _ask(peers.triotp, "restart_latency", P50_P99),
            "erlang": _ask(peers.erlang, "restart_latency", P50_P99),
        },
        size=sizes.restarts,
        size_param="restarts",
        params={**common, "strategy": "one_for_one", "children": 1},
    )
    rest = case(
        "rest_for_one_restart_p50_us",
        "us",
        "lower",
        subject=_regency_rest_for_one,
        peers={
            "triotp": TRIOTP_ONE_FOR_ONE_ONLY,
            "erlang": _ask(peers.erlang, "rest_for_one_restart", REST_P50),
        },
        size=sizes.rest_restarts,
        size_param="restarts",
        params={
            **common,
            "strategy": "rest_for_one",
            "children": REST_CHILDREN,
            "crash_index": REST_CRASH_INDEX,
            "restarted_per_crash": REST_CHILDREN - REST_CRASH_INDEX,
        },
    )
    return [
        latency,
        rest,
        _storm_case(sizes.storm_small, peers, max(1, sizes.storm_small // 10)),
        _storm_case(sizes.storm_large, peers, max(1, sizes.storm_large // 10)),
    ]


def cases(ctx: SuiteContext) -> Iterator[Case]:
    """The supervision suite (see the module docstring)."""
    peers = start_peers(ctx)
    yield from build_cases(QUICK if ctx.quick else FULL, peers)
