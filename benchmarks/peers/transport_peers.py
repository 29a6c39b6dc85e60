"""The far ends of the transport suite: child OS processes, and Erlang's two nodes.

:class:`ChildServer` runs ``transport_child.py`` (a regency node, or the floor's TCP
server) as a long-lived subprocess of the benchmark run and knows its port.
:func:`erlang_worker` starts node A of Erlang's pair (see ``transport_erlang.erl``),
which starts node B itself; both are ``erl -name ...@127.0.0.1`` with a random cookie.
``erl`` starts epmd when none runs; :class:`ErlangPair` then runs ``epmd -kill`` when
it closes, and only then (epmd refuses while any node is still registered).
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import subprocess
import sys
import time
from pathlib import Path

from benchmarks.harness import Skip
from benchmarks.peers.figures_peer import FiguresPeer

HERE = Path(__file__).parent
CHILD_SCRIPT = HERE / "transport_child.py"
ERLANG_SOURCE = HERE / "transport_erlang.erl"
PACKAGE = "erlang-base"


class ChildServer:
    """``transport_child.py <mode>`` in its own OS process; ``port`` is where it listens,
    ``pid`` its process id."""

    def __init__(self, mode: str, *, env: dict[str, str] | None = None) -> None:
        self.mode = mode
        self._proc = subprocess.Popen(
            [sys.executable, "-u", str(CHILD_SCRIPT), mode],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env={**os.environ, **(env or {})},
        )
        assert self._proc.stdout is not None
        line = self._proc.stdout.readline()
        status, _, port = line.strip().partition(" ")
        if status != "ready":
            self.close()
            raise RuntimeError(f"transport child {mode} did not start: {line.strip()!r}")
        self.port = int(port)
        self.pid = self._proc.pid

    def close(self) -> None:
        """End the child (closing its stdin), killing it if it lingers."""
        proc = self._proc
        if proc.poll() is None:
            with contextlib.suppress(OSError):
                assert proc.stdin is not None
                proc.stdin.close()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()

    def __enter__(self) -> ChildServer:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def _epmd_running(epmd: str) -> bool:
    return subprocess.run([epmd, "-names"], capture_output=True, timeout=10).returncode == 0


class ErlangPair(FiguresPeer):
    """Node A of Erlang's pair (a :class:`FiguresPeer`); it starts and stops node B."""

    def __init__(self, erl: str, epmd: str | None) -> None:
        tag = f"{os.getpid()}_{secrets.token_hex(3)}"
        src = str(ERLANG_SOURCE)
        boot = (
            f'{{ok, M, Bin}} = compile:file("{src}", [binary, report_errors]),'
            f' {{module, M}} = code:load_binary(M, "{src}", Bin), M:main(Bin).'
        )
        argv = [
            erl,
            "-name",
            f"bench_a_{tag}@127.0.0.1",
            "-setcookie",
            secrets.token_hex(16),
            "-noshell",
            "+S",
            "2",
            "-eval",
            boot,
        ]
        self._epmd = epmd
        self._started_epmd = epmd is not None and not _epmd_running(epmd)
        self._tag = tag
        super().__init__(argv, name="erlang")

    def close(self) -> None:
        """Stop node A (node B halts when A goes down), then epmd if we started it."""
        super().close()
        if not self._started_epmd or self._epmd is None:
            return
        self._started_epmd = False
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:  # wait for both nodes to unregister
            names = subprocess.run(
                [self._epmd, "-names"], capture_output=True, text=True, timeout=10
            ).stdout
            if self._tag not in names:
                break
            time.sleep(0.05)
        subprocess.run([self._epmd, "-kill"], capture_output=True, timeout=10)


def erlang_worker() -> ErlangPair | Skip:
    """Erlang's pair of nodes, or a :class:`Skip` when ``erl`` is not installed."""
    erl = shutil.which("erl")
    if erl is None:
        return Skip(f"erl not found (install the Debian package {PACKAGE})")
    return ErlangPair(erl, shutil.which("epmd"))
