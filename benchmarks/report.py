"""Render benchmark JSON rows as Markdown tables: ``python -m benchmarks.report FILE...``.

Each row of a ``--json`` file (see BENCHMARKS.md) becomes a table line: the case, its
unit and direction, regency's median, and each peer's median with the ratio
regency / peer measured in the same run. Suites keep the order they ran in.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from typing import Any


def _fmt(x: float) -> str:
    if x >= 1e6:
        return f"{x / 1e6:.2f}M"
    if x >= 1e4:
        return f"{x / 1e3:.1f}k"
    if x >= 100:
        return f"{x:.0f}"
    return f"{x:.3g}"


def render(rows: Sequence[dict[str, Any]]) -> str:
    """The Markdown tables, one per suite."""
    out: list[str] = []
    suite = None
    for row in rows:
        if row["suite"] != suite:
            suite = row["suite"]
            out += [
                "",
                f"**{suite}**",
                "",
                "| case | unit | regency | peers (ratio = regency / peer) |",
            ]
            out.append("|---|---|---|---|")
        peers = ", ".join(
            f"{name} {_fmt(v)} ({row['value'] / v:.2f}x)" if v else f"{name} {_fmt(v)}"
            for name, v in row.get("peers", {}).items()
        )
        better = "higher" if row.get("better") == "higher" else "lower"
        out.append(
            f"| {row['case']} | {row['unit']} ({better} is better) | "
            f"{_fmt(row['value'])} | {peers or '-'} |"
        )
    return "\n".join(out).strip() + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    """Print the tables of the given JSON files."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.report", description=__doc__)
    parser.add_argument("files", nargs="+", help="JSON files written with --json")
    args = parser.parse_args(argv)
    rows: list[dict[str, Any]] = []
    for path in args.files:
        with open(path) as f:
            rows += json.load(f)
    sys.stdout.write(render(rows))
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
