"""The ``regency`` command.

Subcommands:

* ``regency demo`` -- the main job: a 3-node orchestrator group as OS processes, its
  leader killed mid-run (``agents.failover_demo``); ``regency demo supervision`` is the
  one-process supervision demo (``agents.demo``).
* ``regency bench [SUITE] [--quick] [--json PATH]`` -- the benchmark suites.
* ``regency node --name NAME --listen HOST:PORT [--connect HOST:PORT ...]`` -- one node.
* ``regency chaos --sim --seeds N`` / ``--real`` -- seeded fault runs with invariant checks.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from importlib import metadata

Handler = Callable[[list[str]], int]


def _version() -> str:
    try:
        return metadata.version("regency")
    except metadata.PackageNotFoundError:  # pragma: no cover - running from a bare checkout
        return "0+unknown"


def _bench(argv: list[str]) -> int:
    from benchmarks.__main__ import main as bench_main

    return bench_main(argv)


def _demo(argv: list[str]) -> int:
    from .demo import main as demo_main

    return demo_main(argv)


def _node(argv: list[str]) -> int:
    from runtime.dist_cli import main as node_main

    return node_main(argv)


def _chaos(argv: list[str]) -> int:
    from runtime.sim.cli import main as chaos_main

    return chaos_main(argv)


COMMANDS: dict[str, tuple[Handler, str]] = {
    "demo": (_demo, "the main demo: orchestrator failover across OS processes (or: supervision)"),
    "bench": (_bench, "run benchmark suites with peers side by side"),
    "node": (_node, "run one node of a deployment"),
    "chaos": (_chaos, "seeded fault runs with invariant checks"),
}


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``regency`` command; returns the exit status."""
    args = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(
        prog="regency",
        description="A fault-tolerant supervisor runtime for multi-agent LLM systems.",
        epilog="commands:\n"
        + "\n".join(f"  {name:<7} {text}" for name, (_, text) in sorted(COMMANDS.items()))
        + "\n\n'regency COMMAND --help' shows a command's options.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"regency {_version()}")
    parser.add_argument("command", choices=sorted(COMMANDS), help="what to run")
    parser.add_argument("args", nargs=argparse.REMAINDER, help="the command's own arguments")
    if not args:
        parser.print_help()
        return 2
    ns = parser.parse_args(args[:1] if args[0].startswith("-") else args)
    handler, _ = COMMANDS[ns.command]
    return handler(list(ns.args))


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
