"""``regency chaos``: seeded fault runs with invariant checks and a report.

``--sim`` runs a simulated cluster (this module); ``--real`` runs an orchestrator group
and workers as OS processes behind a fault-injecting proxy (:mod:`agents.chaos_real`,
see there for its options)::

    regency chaos --real --seed 7 --duration 30 --json chaos.json --plot chaos.png

Layering: ``runtime`` never imports ``supervisors`` or ``agents``. The one exception is
deliberate and lazy: :func:`main` imports ``agents.chaos_real`` with
:func:`importlib.import_module`, and only when ``--real`` is given, so importing this
module (or running ``--sim``) loads nothing above ``runtime``.

Simulated runs::

    regency chaos --sim --seeds 200                       # seeds 0..199, all faults
    regency chaos --sim --seed 1234                       # rerun one seed exactly
    regency chaos --sim --seeds 500 --seed 10000 --nodes 5 --faults crash,partition,drop
    regency chaos --sim --seeds 100 --faults network --duration 60 --json report.json

``--seed S`` with ``--seeds N`` runs seeds S..S+N-1 (``--seed`` alone runs just S).
``--faults`` takes kinds (crash, pause, partition, oneway, drop, duplicate, reorder,
delay, slow_disk) or a mix name (all, none, network, process); default all.
``--jobs`` runs seeds in that many processes (default: the CPU count); a seed's history
does not depend on which process runs it.

Output: a progress bar, then a summary table (seeds, elections, leader changes,
proposals acknowledged, the longest time from the heal to a ready leader, violations),
then every violation with the commands that reproduce it. The exit status is 1 if any
seed broke an invariant, 2 on a usage error, else 0. ``--json PATH`` writes one object
per seed plus the totals.

**Soak.** A long soak is just many seeds, e.g. a few hours of every mix::

    for mix in all network process; do
        regency chaos --sim --seeds 100000 --seed 1000000 --faults $mix --duration 60 \\
            --json soak-$mix.json || break
    done

or ``--soak SECONDS``, which keeps running fresh seeds (from ``--seed`` upward) until the
wall-clock budget is spent, then reports as above.
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import os
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING

import structlog

from .cluster import ALL_FAULTS, FAULT_MIXES, RunResult, SimConfig, repro_commands, run_seed

if TYPE_CHECKING:
    from rich.console import Console

__all__ = ["main", "parse_faults"]


def parse_faults(text: str) -> frozenset[str]:
    """Parse ``--faults``: a mix name or comma-separated kinds.

    Raises:
        ValueError: An unknown name.
    """
    out: set[str] = set()
    for part in filter(None, (p.strip() for p in text.split(","))):
        if part in FAULT_MIXES:
            out |= FAULT_MIXES[part]
        elif part in ALL_FAULTS:
            out.add(part)
        else:
            known = ", ".join(sorted(ALL_FAULTS | FAULT_MIXES.keys()))
            raise ValueError(f"unknown fault {part!r} (known: {known})")
    return frozenset(out)


def _quiet_logs(*, cache: bool) -> None:
    # Only warnings: the simulated cluster logs every election. Caching binds the
    # module-level loggers for good, so only worker processes (which do nothing else) may.
    structlog.configure(
        wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING),
        cache_logger_on_first_use=cache,
    )


def _worker_init() -> None:
    _quiet_logs(cache=True)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="regency chaos",
        description="Seeded fault runs of a Raft cluster with invariant checks.",
    )
    p.add_argument("--sim", action="store_true", help="simulated cluster")
    p.add_argument(
        "--real",
        action="store_true",
        help="real processes behind a fault-injecting proxy (see: regency chaos --real --help)",
    )
    p.add_argument("--seeds", type=int, default=None, help="number of seeds to run")
    p.add_argument("--seed", type=int, default=None, help="first (or only) seed")
    p.add_argument("--nodes", type=int, choices=(1, 3, 5), default=3)
    p.add_argument("--faults", default="all", help="fault kinds or a mix name (default all)")
    p.add_argument(
        "--duration", type=float, default=30.0, help="simulated seconds of faults per seed"
    )
    p.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="worker processes")
    p.add_argument("--json", type=Path, default=None, help="write a JSON report here")
    p.add_argument("--soak", type=float, default=None, help="run fresh seeds for SECONDS")
    p.add_argument(
        "--broken",
        choices=("no_fsync",),
        default=None,
        help="run on a deliberately broken disk, to see the checker catch it",
    )
    return p


def _configs(args: argparse.Namespace, faults: frozenset[str]) -> Iterator[SimConfig]:
    first = args.seed if args.seed is not None else 0
    count = args.seeds if args.seeds is not None else (1 if args.seed is not None else 100)
    limit = None if args.soak is not None else count
    seed = first
    while limit is None or seed < first + limit:
        yield SimConfig(
            seed=seed,
            nodes=args.nodes,
            faults=faults,
            duration=args.duration,
            broken=args.broken,
        )
        seed += 1


def _run_all(
    args: argparse.Namespace, faults: frozenset[str], on_done: _Progress
) -> list[RunResult]:
    configs = _configs(args, faults)
    deadline = None if args.soak is None else time.monotonic() + args.soak
    results: list[RunResult] = []
    if args.jobs <= 1:
        for cfg in configs:
            if deadline is not None and time.monotonic() > deadline:
                break
            results.append(run_seed(cfg))
            on_done(results[-1])
        return results
    with ProcessPoolExecutor(args.jobs, initializer=_worker_init) as pool:
        pending: list[Future[RunResult]] = []
        exhausted = False
        while True:
            while not exhausted and len(pending) < 4 * args.jobs:
                if deadline is not None and time.monotonic() > deadline:
                    exhausted = True
                    break
                upcoming = next(configs, None)
                if upcoming is None:
                    exhausted = True
                    break
                pending.append(pool.submit(run_seed, upcoming))
            if not pending:
                break
            fut = pending.pop(0)
            results.append(fut.result())
            on_done(results[-1])
    return results


class _Progress:
    def __init__(self, bar: object, task: object) -> None:
        self.bar = bar
        self.task = task
        self.failed = 0

    def __call__(self, r: RunResult) -> None:
        if not r.ok:
            self.failed += 1
        advance = getattr(self.bar, "advance", None)
        if advance is not None:
            advance(self.task)
            self.bar.update(  # type: ignore[attr-defined]
                self.task, description=f"seed {r.config.seed}  violations: {self.failed}"
            )


def _summary(results: Sequence[RunResult], wall: float) -> dict[str, object]:
    tte = [r.time_to_elect for r in results if r.time_to_elect is not None]
    sim = sum(r.sim_time for r in results)
    return {
        "seeds": len(results),
        "failed_seeds": sum(1 for r in results if not r.ok),
        "violations": sum(len(r.violations) for r in results),
        "elections": sum(r.elections for r in results),
        "leader_changes": sum(r.leader_changes for r in results),
        "proposals": sum(r.proposals for r in results),
        "acked": sum(r.acked for r in results),
        "crashes": sum(r.crashes for r in results),
        "messages": sum(r.messages for r in results),
        "max_time_to_elect": max(tte, default=None),
        "mean_time_to_elect": (sum(tte) / len(tte)) if tte else None,
        "simulated_seconds": sim,
        "wall_seconds": wall,
        "seeds_per_second": len(results) / wall if wall > 0 else None,
    }


def _row(r: RunResult) -> dict[str, object]:
    return {
        "seed": r.config.seed,
        "nodes": r.config.nodes,
        "faults": sorted(r.config.faults),
        "duration": r.config.duration,
        "ok": r.ok,
        "violations": list(r.violations),
        "repro": repro_commands(r.config) if not r.ok else [],
        "digest": r.digest,
        "elections": r.elections,
        "leader_changes": r.leader_changes,
        "proposals": r.proposals,
        "acked": r.acked,
        "failed": r.failed,
        "time_to_elect": r.time_to_elect,
        "crashes": r.crashes,
        "messages": r.messages,
        "dropped": r.dropped,
        "fsyncs": r.fsyncs,
        "sim_time": r.sim_time,
        "real_time": r.real_time,
    }


def main(argv: list[str]) -> int:
    """Run ``regency chaos`` with ``argv`` (without the command name); return the status.

    With ``--real`` the whole command line goes to ``agents.chaos_real.main``, imported
    only then (see the module docstring on layering).
    """
    from rich.console import Console

    if "--real" in argv:
        if "--sim" in argv:
            print("regency chaos: give --sim or --real, not both")
            return 2
        real = importlib.import_module("agents.chaos_real")
        status: int = real.main(list(argv))
        return status
    parser = _parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        return int(exc.code or 0) if exc.code in (0, None) else 2
    console = Console()
    if console.width < 110:  # keep the summary table legible in pipes and CI logs
        console = Console(width=110)
    if not args.sim:
        console.print("regency chaos: pass --sim (simulated) or --real (processes)")
        return 2
    try:
        faults = parse_faults(args.faults)
    except ValueError as exc:
        console.print(f"regency chaos: {exc}")
        return 2
    if args.seeds is not None and args.seeds < 1:
        console.print("regency chaos: --seeds must be >= 1")
        return 2
    old_logging = structlog.get_config()
    _quiet_logs(cache=False)
    try:
        return _main(args, faults, console)
    finally:
        structlog.configure(**old_logging)


def _main(args: argparse.Namespace, faults: frozenset[str], console: Console) -> int:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn
    from rich.table import Table

    total = None if args.soak is not None else sum(1 for _ in _configs(args, faults))
    started = time.perf_counter()
    with Progress(
        "[progress.description]{task.description}",
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    ) as bar:
        task = bar.add_task("simulating", total=total)
        results = _run_all(args, faults, _Progress(bar, task))
    wall = time.perf_counter() - started
    summary = _summary(results, wall)

    table = Table(title=f"regency chaos --sim ({args.nodes} nodes, faults: {args.faults})")
    for col in (
        "seeds",
        "elections",
        "leader changes",
        "acked / proposed",
        "max elect after heal",
        "violations",
        "seeds/s",
    ):
        table.add_column(col, justify="right", no_wrap=True)
    tte = summary["max_time_to_elect"]
    sps = summary["seeds_per_second"]
    table.add_row(
        str(summary["seeds"]),
        str(summary["elections"]),
        str(summary["leader_changes"]),
        f"{summary['acked']}/{summary['proposals']}",
        f"{tte * 1000:.0f} ms" if isinstance(tte, float) else "-",
        f"[red]{summary['violations']}[/red]" if summary["violations"] else "0",
        f"{sps:.1f}" if isinstance(sps, float) else "-",
    )
    console.print(table)
    console.print(
        f"{summary['simulated_seconds']:.0f} simulated seconds in {wall:.1f} s of real time"
    )
    for r in results:
        if not r.ok:
            console.print(f"[red]seed {r.config.seed}[/red]:")
            for v in r.violations:
                console.print(f"  {v}", markup=False)
            for cmd in repro_commands(r.config):
                console.print(f"  reproduce: {cmd}", markup=False)
    if args.json is not None:
        args.json.write_text(
            json.dumps({"summary": summary, "runs": [_row(r) for r in results]}, indent=1)
        )
    return 1 if summary["violations"] else 0
