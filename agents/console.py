"""Output helpers the two demos share: plain lines, a rich live bar, the verification table.

:mod:`agents.demo` and :mod:`agents.failover_demo` each keep their own printers (their
columns, tags and verdicts differ); the pieces that are the same live here. Rich is
imported only when a rich helper is used: it is in the ``cli`` extra.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, TextIO, TypeVar

if TYPE_CHECKING:
    from rich.console import Console
    from rich.progress import Progress, TaskID

PlainT = TypeVar("PlainT")
RichT = TypeVar("RichT")


def write_line(out: TextIO, text: str) -> None:
    """Write *text* and a newline to *out*, then flush, so a pipe sees each line at once."""
    out.write(text + "\n")
    out.flush()


def plain_rows(
    out: TextIO, rows: Sequence[tuple[str, str, str]], *, label_width: int, value_width: int
) -> None:
    """Write each (label, value, note) row as ``  label  value   note``, trailing space cut."""
    for label, value, note in rows:
        write_line(out, f"  {label:<{label_width}}{value:>{value_width}}   {note}".rstrip())


def rich_console(console: Console | None) -> Console:
    """*console*, or a new one that does not highlight numbers and strings."""
    from rich.console import Console

    return console if console is not None else Console(highlight=False)


def rich_header(console: Console, lines: Sequence[str]) -> None:
    """Print the introduction: the first line bold, the others plain."""
    from rich.text import Text

    for i, line in enumerate(lines):
        console.print(Text(line, style="bold" if i == 0 else ""))


def rich_table(console: Console, title: str, rows: Sequence[tuple[str, str, str]]) -> None:
    """Print a blank line and the (label, value, note) rows as a table titled *title*."""
    from rich.table import Table

    table = Table(title=title, title_justify="left")
    table.add_column("")
    table.add_column("", justify="right")
    table.add_column("", style="dim")
    for label, value, note in rows:
        table.add_row(label, value, note)
    console.print()
    console.print(table)


class LiveBar:
    """A transient rich progress bar, shown from the first :meth:`update` until :meth:`stop`."""

    def __init__(self, console: Console, label: str, name: str) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

        self._name = name
        self._progress: Progress = Progress(
            TextColumn(f"[bold blue]{label}"),
            BarColumn(),
            MofNCompleteColumn(),
            console=console,
            transient=True,
        )
        self._task: TaskID | None = None

    def update(self, done: int, total: int) -> None:
        """Show *done* of *total*, starting the bar on the first call."""
        if self._task is None:
            self._progress.start()
            self._task = self._progress.add_task(self._name, total=total)
        self._progress.update(self._task, completed=done, total=total)

    def stop(self) -> None:
        """Remove the bar. Idempotent; a later :meth:`update` starts a new one."""
        if self._task is not None:
            self._progress.stop()
            self._task = None


def choose_printer(
    plain: bool, make_plain: Callable[[TextIO], PlainT], make_rich: Callable[[], RichT]
) -> PlainT | RichT:
    """A plain printer on stdout when asked or not on a terminal, else a rich one.

    Falls back to plain when rich is not installed (it is in the ``cli`` extra).
    """
    if plain or not sys.stdout.isatty():
        return make_plain(sys.stdout)
    try:
        return make_rich()
    except ImportError:
        return make_plain(sys.stdout)


def write_json(path: str, data: dict[str, Any]) -> None:
    """Write *data* to *path* as indented JSON and a final newline (``--json PATH``)."""
    with open(path, "w", encoding="utf-8") as f:
        json.dump(data, f, indent=2, default=str)
        f.write("\n")
