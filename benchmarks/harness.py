"""The benchmark harness: suites, cases, peers, repeats, medians and output.

How a suite is written
======================

A suite is a module ``benchmarks/<suite>.py`` that exposes one function::

    def cases(ctx: SuiteContext) -> Iterable[Case]: ...

``python -m benchmarks <suite>`` (and ``regency bench <suite>``, through :func:`main`)
finds the module by name, calls ``cases(ctx)`` and measures each case as it comes: the
function may be a generator, so a case's set-up (a venv, a cluster on loopback) can
happen right before the case is measured. Resources that must outlive one case (a peer
subprocess, a temporary directory) are entered into ``ctx.resources``, an
:class:`contextlib.ExitStack` closed when the suite ends. ``ctx.quick`` tells the suite
to choose sizes that keep the whole suite under 60 s on 2 cores.

A :class:`Case` holds one or more :class:`Metric` (name, unit, better), the regency
measurement (``subject``) and the peers' measurements by peer name. A measurement is a
plain synchronous callable ``measure(n) -> float | Mapping[str, float]``: it does the
whole job for ``n`` units of work (messages, round trips, processes, ...), typically
inside its own ``trio.run``/``asyncio.run`` or by asking a peer subprocess, and returns
the figure in the metric's unit, or one figure per metric name when a case has several
metrics measured in one go (e.g. ``call_round_trip_p50_us`` and
``call_round_trip_p99_us``). A peer that cannot run here is a :class:`Skip` whose
reason names the missing package; it is printed, never faked.

How a case is measured
======================

1. Warm-up: every measurement runs once with ``case.warmup_size`` units, discarded
   (unless the case sets it to 0).
2. ``ctx.repeats`` rounds; in each round regency and every peer run once, in an order
   rotated from round to round, so that regency and its peers alternate and none of
   them is always first (or always right after the same neighbour).
3. The reported value of each metric is the median over the rounds, for regency and for
   each peer alike. A measurement that raises is reported on its line and dropped for
   the rest of the case; a failing regency measurement makes :func:`main` return 1.

The command line
================

``python -m benchmarks SUITE [--quick] [--json PATH] [--repeats N]`` runs one suite (all
suites when SUITE is omitted); ``regency bench`` calls ``main(argv, prog="regency bench")``
with the same arguments. A new suite needs nothing but its module: suites are found by
listing ``benchmarks/*.py`` (everything except this harness, ``report`` and ``__main__``), and an
unknown name is refused with the list of suites. Peer subprocesses that speak a line
protocol (Erlang, triotp in its venv) can use :class:`LineProtocolPeer`.

Output
======

One human-readable line per metric, with each peer's figure and the ratio
``regency / peer`` (so for a "higher is better" metric a ratio above 1 means regency is
faster; for "lower is better" below 1 means regency is leaner). With ``--json PATH`` one
object per metric is appended to the JSON list in PATH, in the format fixed by
BENCHMARKS.md::

    {"suite": "messaging", "case": "one_way_throughput", "unit": "msg/s",
     "better": "higher", "value": 412000.0, "peers": {"trio_channel": 126000.0},
     "params": {"messages": 200000, "repeats": 5}}
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import logging
import math
import os
import pkgutil
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from types import ModuleType
from typing import IO, Literal, Protocol

import attrs

__all__ = [
    "Case",
    "LineProtocolPeer",
    "Metric",
    "Skip",
    "SuiteContext",
    "available_suites",
    "case",
    "main",
    "median",
    "percentile",
    "run_suite",
]

Better = Literal["higher", "lower"]
Figure = float | Mapping[str, float]
Measure = Callable[[int], Figure]
"""Runs the job for ``n`` units of work and returns its figure(s) in the metric's unit."""

SUBJECT = "regency"
"""The name under which the regency measurement is reported."""

#: Modules in the benchmarks package that are not suites.
_NOT_SUITES = frozenset(
    {
        "harness",
        "__main__",
        "peers",
        "conftest",
        "report",
        "drivers",
        "bare_restart",
        "busywait_cost",
    }
)


@attrs.frozen
class Metric:
    """One reported figure: a case name, its unit, and whether higher or lower is better."""

    name: str
    unit: str
    better: Better = "higher"


@attrs.frozen
class Skip:
    """A peer that cannot run on this machine; ``reason`` names what is missing."""

    reason: str


@attrs.frozen
class Case:
    """One job measured for regency and its peers with the same ``size``.

    ``size`` is the number of units of work each measurement does (it is recorded in
    ``params`` under ``size_param``); ``warmup_size`` is used for the discarded warm-up
    run (default: a tenth of ``size``, at least 1; 0 skips the warm-up, e.g. for a
    measurement that starts a fresh interpreter each time).
    """

    metrics: tuple[Metric, ...]
    subject: Measure
    peers: Mapping[str, Measure | Skip]
    size: int
    size_param: str = "messages"
    params: Mapping[str, object] = attrs.field(factory=dict)
    warmup_size: int | None = None

    @property
    def name(self) -> str:
        """The first metric's name, which names the case."""
        return self.metrics[0].name


def case(
    name: str,
    unit: str,
    better: Better,
    *,
    subject: Measure,
    peers: Mapping[str, Measure | Skip],
    size: int,
    size_param: str = "messages",
    params: Mapping[str, object] | None = None,
    warmup_size: int | None = None,
) -> Case:
    """Build a :class:`Case` with a single metric."""
    return Case(
        metrics=(Metric(name, unit, better),),
        subject=subject,
        peers=peers,
        size=size,
        size_param=size_param,
        params=dict(params or {}),
        warmup_size=warmup_size,
    )


@attrs.define
class SuiteContext:
    """What a suite's ``cases(ctx)`` gets from the harness."""

    suite: str
    quick: bool
    repeats: int
    resources: contextlib.ExitStack
    out: IO[str] = sys.stdout

    def note(self, text: str) -> None:
        """Print one line of commentary (set-up progress, a skipped peer, ...)."""
        print(text, file=self.out, flush=True)


class SuiteModule(Protocol):
    """The shape of a suite module."""

    def cases(self, ctx: SuiteContext) -> Iterable[Case]:
        """Yield the suite's cases."""
        ...


# --------------------------------------------------------------------------- statistics


def median(values: Sequence[float]) -> float:
    """The median of ``values`` (the mean of the middle two for an even count)."""
    return float(statistics.median(values))


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0..100) of ``values``, linearly interpolated.

    Raises:
        ValueError: ``values`` is empty or ``q`` is outside 0..100.
    """
    if not values:
        raise ValueError("percentile of no values")
    if not 0 <= q <= 100:
        raise ValueError(f"percentile {q} is outside 0..100")
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


# --------------------------------------------------------------------------- measuring


@attrs.frozen
class MetricResult:
    """The medians of one metric: regency's and each peer's that produced a figure."""

    metric: Metric
    value: float | None
    peers: dict[str, float]


def _figures(case_: Case, figure: Figure) -> dict[str, float]:
    if isinstance(figure, Mapping):
        return {k: float(v) for k, v in figure.items()}
    return {case_.metrics[0].name: float(figure)}


def measure_case(
    case_: Case, repeats: int, out: IO[str] = sys.stdout
) -> tuple[list[MetricResult], bool]:
    """Warm up, then run ``repeats`` rounds alternating regency and peers; take medians.

    Returns the per-metric results and whether the regency measurement succeeded.
    """
    runners: dict[str, Measure] = {SUBJECT: case_.subject}
    for peer, m in case_.peers.items():
        if isinstance(m, Skip):
            print(f"  skip {peer}: {m.reason}", file=out, flush=True)
        else:
            runners[peer] = m
    failed: set[str] = set()
    samples: dict[str, dict[str, list[float]]] = {name: {} for name in runners}

    def run_one(name: str, n: int, keep: bool) -> None:
        try:
            figures = _figures(case_, runners[name](n))
        except Exception as exc:  # a peer that breaks is reported, never faked
            failed.add(name)
            detail = "".join(traceback.format_exception_only(exc)).strip()
            print(f"  {name} failed on {case_.name}: {detail}", file=out, flush=True)
            if os.environ.get("REGENCY_BENCH_TRACEBACK"):
                traceback.print_exc(file=out)
            return
        if keep:
            for metric, value in figures.items():
                samples[name].setdefault(metric, []).append(value)

    warm = case_.warmup_size if case_.warmup_size is not None else max(1, case_.size // 10)
    order = list(runners)
    if warm > 0:
        for name in order:
            run_one(name, warm, keep=False)
    for round_ in range(repeats):
        shift = round_ % len(order)
        for name in order[shift:] + order[:shift]:
            if name not in failed:
                run_one(name, case_.size, keep=True)

    results = []
    for metric in case_.metrics:

        def med(name: str, metric: Metric = metric) -> float | None:
            values = samples[name].get(metric.name)
            if name in failed or not values:
                return None
            return median(values)

        peers = {p: v for p in runners if p != SUBJECT and (v := med(p)) is not None}
        results.append(MetricResult(metric, med(SUBJECT), peers))
    return results, SUBJECT not in failed


def _fmt(value: float) -> str:
    magnitude = abs(value)
    if magnitude >= 1e9:
        return f"{value / 1e9:.2f}G"
    if magnitude >= 1e6:
        return f"{value / 1e6:.2f}M"
    if magnitude >= 1e4:
        return f"{value / 1e3:.1f}k"
    if magnitude >= 100:
        return f"{value:.0f}"
    return f"{value:.3g}"


def format_line(result: MetricResult) -> str:
    """One human-readable line: regency's figure, then each peer's with regency/peer."""
    m = result.metric
    head = f"{m.name:<26} {m.unit:<8} ({m.better} is better)"
    parts = [f"{SUBJECT} {_fmt(result.value) if result.value is not None else 'failed'}"]
    for peer, value in result.peers.items():
        if result.value is not None and value:
            parts.append(f"{peer} {_fmt(value)} [{result.value / value:.2f}x]")
        else:
            parts.append(f"{peer} {_fmt(value)}")
    return f"{head}  " + " | ".join(parts)


def json_record(suite: str, case_: Case, result: MetricResult, repeats: int) -> dict[str, object]:
    """The BENCHMARKS.md JSON object for one metric."""
    params: dict[str, object] = {case_.size_param: case_.size, "repeats": repeats}
    params.update(case_.params)
    return {
        "suite": suite,
        "case": result.metric.name,
        "unit": result.metric.unit,
        "better": result.metric.better,
        "value": result.value,
        "peers": dict(result.peers),
        "params": params,
    }


def append_json(path: Path, records: Sequence[Mapping[str, object]]) -> None:
    """Append ``records`` to the JSON list in ``path`` (created when missing), atomically."""
    existing: list[object] = []
    if path.exists() and path.stat().st_size > 0:
        loaded = json.loads(path.read_text())
        if not isinstance(loaded, list):
            raise ValueError(f"{path} does not hold a JSON list")
        existing = loaded
    existing.extend(records)
    fd, tmp = tempfile.mkstemp(dir=path.parent or Path(), prefix=f".{path.name}.")
    with os.fdopen(fd, "w") as f:
        json.dump(existing, f, indent=1)
        f.write("\n")
    Path(tmp).replace(path)


# --------------------------------------------------------------------------- peer processes


class LineProtocolPeer:
    """A peer measured in a long-lived subprocess (Erlang, triotp in its own venv).

    The subprocess reads one request per line on stdin, ``"<case> <n>"``, runs that
    measurement once and answers one line on stdout: ``"ok <figure>"`` or
    ``"error <text>"``. Keeping it alive lets the harness alternate it with regency
    round by round without paying an interpreter start-up per measurement. Close it
    (or enter it into ``ctx.resources``) to end it: closing stdin makes it exit.
    """

    def __init__(
        self,
        argv: Sequence[str],
        *,
        name: str,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
    ):
        self.name = name
        self._argv = list(argv)
        self._env = dict(env) if env is not None else None
        self._cwd = cwd
        self._proc: subprocess.Popen[str] | None = None

    def _ensure(self) -> subprocess.Popen[str]:
        if self._proc is None or self._proc.poll() is not None:
            self._proc = subprocess.Popen(
                self._argv,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=None,
                text=True,
                bufsize=1,
                env=self._env,
                cwd=self._cwd,
            )
        return self._proc

    def request(self, case_name: str, n: int) -> float:
        """Run ``case_name`` with ``n`` units in the subprocess and return its figure.

        Raises:
            RuntimeError: the subprocess answered an error or died.
        """
        proc = self._ensure()
        assert proc.stdin is not None
        assert proc.stdout is not None
        proc.stdin.write(f"{case_name} {n}\n")
        proc.stdin.flush()
        line = proc.stdout.readline()
        if not line:
            code = proc.wait()
            raise RuntimeError(f"{self.name} subprocess exited with status {code}")
        status, _, rest = line.strip().partition(" ")
        if status != "ok":
            raise RuntimeError(f"{self.name}: {rest or line.strip()}")
        return float(rest)

    def measure(self, case_name: str) -> Measure:
        """A :data:`Measure` that asks this subprocess for ``case_name``."""

        def run(n: int) -> float:
            return self.request(case_name, n)

        return run

    def close(self) -> None:
        """End the subprocess (closing its stdin), killing it if it lingers."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        with contextlib.suppress(OSError):
            assert proc.stdin is not None
            proc.stdin.close()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()

    def __enter__(self) -> LineProtocolPeer:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


# --------------------------------------------------------------------------- suites


def quiet_logs() -> None:
    """Drop structlog events below WARNING, as a production deployment would.

    Benchmarks measure the runtime, not a debug console; warnings and errors still print.
    """
    import structlog

    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))


def available_suites() -> list[str]:
    """Names of the suite modules in the benchmarks package, without importing them."""
    package_dir = Path(__file__).parent
    return sorted(
        info.name
        for info in pkgutil.iter_modules([str(package_dir)])
        if not info.ispkg and info.name not in _NOT_SUITES and not info.name.startswith("_")
    )


def load_suite(name: str) -> ModuleType:
    """Import ``benchmarks.<name>``.

    Raises:
        LookupError: there is no such suite; the message lists the suites there are.
    """
    suites = available_suites()
    if name not in suites:
        raise LookupError(f"unknown suite {name!r}; suites: {', '.join(suites) or '(none)'}")
    module = importlib.import_module(f"{__package__}.{name}")
    if not callable(getattr(module, "cases", None)):
        raise LookupError(f"benchmarks.{name} has no cases(ctx) function")  # noqa: TRY004
    return module


def run_suite(
    name: str,
    *,
    quick: bool = False,
    json_path: Path | None = None,
    repeats: int | None = None,
    out: IO[str] = sys.stdout,
) -> bool:
    """Measure every case of suite ``name``, print a line per metric, append JSON.

    Returns whether every regency measurement succeeded.
    """
    module = load_suite(name)
    repeats = repeats if repeats is not None else (3 if quick else 5)
    ok = True
    started = time.perf_counter()
    print(
        f"# suite {name}: {'quick, ' if quick else ''}{repeats} repeats, medians;"
        f" [Nx] = {SUBJECT} / peer",
        file=out,
        flush=True,
    )
    with contextlib.ExitStack() as resources:
        ctx = SuiteContext(suite=name, quick=quick, repeats=repeats, resources=resources, out=out)
        for case_ in module.cases(ctx):
            case_started = time.perf_counter()
            results, subject_ok = measure_case(case_, repeats, out)
            ok = ok and subject_ok
            took = f"  ({time.perf_counter() - case_started:.1f} s)"
            for result in results:
                print(format_line(result) + took, file=out, flush=True)
                took = ""
            if json_path is not None:  # a metric regency failed to measure gets no row
                rows = [
                    json_record(name, case_, r, repeats) for r in results if r.value is not None
                ]
                append_json(json_path, rows)
    print(f"# suite {name} took {time.perf_counter() - started:.1f} s", file=out, flush=True)
    return ok


def build_parser(prog: str = "python -m benchmarks") -> argparse.ArgumentParser:
    """The command line shared by ``python -m benchmarks`` and ``regency bench``."""
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Run a benchmark suite: regency and its peers side by side, medians.",
    )
    parser.add_argument(
        "suite",
        nargs="?",
        help=f"suite to run (default: all): {', '.join(available_suites())}",
    )
    parser.add_argument(
        "--quick", action="store_true", help="small sizes: a suite in under 60 s on 2 cores"
    )
    parser.add_argument(
        "--json", type=Path, metavar="PATH", help="append one object per case to this JSON list"
    )
    parser.add_argument(
        "--repeats", type=int, help="rounds per case (default 3 with --quick, else 5)"
    )
    return parser


def main(argv: list[str] | None = None, *, prog: str = "python -m benchmarks") -> int:
    """Entry point of ``python -m benchmarks`` and ``regency bench``.

    Returns 0 when every regency measurement ran, 1 when one failed, 2 on a usage error
    (such as an unknown suite, whose message lists the suites).
    """
    parser = build_parser(prog)
    args = parser.parse_args(argv)
    if args.repeats is not None and args.repeats < 1:
        parser.error("--repeats must be at least 1")
    names = [args.suite] if args.suite else available_suites()
    for name in names:
        if name not in available_suites():
            print(
                f"{prog}: unknown suite {name!r}; suites: {', '.join(available_suites())}",
                file=sys.stderr,
            )
            return 2
    quiet_logs()
    ok = True
    for name in names:
        ok = run_suite(name, quick=args.quick, json_path=args.json, repeats=args.repeats) and ok
    return 0 if ok else 1
