"""The Erlang/OTP peer: ``erlang_messaging.escript`` run with ``escript`` (+S 2).

The escript is a long-lived subprocess of the benchmark run speaking the harness's line
protocol; it runs with two schedulers, as regency's benchmarks assume 2 cores. When
``escript`` is not on PATH the peer is skipped with a line naming the Debian package.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from benchmarks.harness import LineProtocolPeer, Skip

PACKAGE = "erlang-base"
"""The Debian package that provides ``erl`` and ``escript``."""

SCRIPT = Path(__file__).with_name("erlang_messaging.escript")


def messaging_worker() -> LineProtocolPeer | Skip:
    """The Erlang messaging worker, or a :class:`Skip` when Erlang is not installed."""
    escript = shutil.which("escript")
    if escript is None:
        return Skip(f"escript not found (install the Debian package {PACKAGE})")
    return LineProtocolPeer([escript, str(SCRIPT)], name="erlang")
