"""``regency node``: its arguments, and a node run as its own process."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import anyio
import pytest

from runtime import dist_cli
from tests.runtime.dist_helpers import BOUND, SECRET

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("value", ["-1", "nan", "soon"])
def test_a_bad_busy_wait_is_refused_before_anything_starts(
    value: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_:
        dist_cli.main(["--name", "n", "--busy-wait", value])
    assert exit_.value.code == 2
    assert "--busy-wait: expected 0 or more seconds" in capsys.readouterr().err


def test_a_bad_busy_wait_in_the_environment_is_refused(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("REGENCY_SECRET", SECRET.decode())
    monkeypatch.setenv("REGENCY_BUSY_WAIT", "-1")
    assert dist_cli.main(["--name", "n"]) == 2
    assert "REGENCY_BUSY_WAIT must be 0 or more seconds, not '-1'" in capsys.readouterr().err


@pytest.mark.slow
async def test_a_node_serves_until_sigterm() -> None:
    """The node prints where it listens, answers a ping, and stops on SIGTERM with 0."""
    env = {**os.environ, "REGENCY_SECRET": SECRET.decode(), "PYTHONPATH": str(ROOT)}
    command = [sys.executable, "-m", "runtime.dist_cli", "--name", "cli@test", "--busy-wait", "0"]
    async with await anyio.open_process(
        command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, cwd=ROOT, env=env
    ) as proc:
        try:
            assert proc.stdout is not None
            line = b""
            with anyio.fail_after(BOUND * 3):
                while b"\n" not in line:
                    line += await proc.stdout.receive()
            word, name, host, port = line.decode().split()
            assert (word, name) == ("listening", "cli@test")
            from runtime import Name, Node
            from runtime.dist import Distribution

            async with Node("client@test") as node:
                dist = await Distribution(node, secret=SECRET).start()
                with anyio.fail_after(BOUND):
                    await dist.connect(host, int(port))
                    assert await node.call(Name("regency_node", "cli@test"), "ping") == "pong"
            proc.send_signal(signal.SIGTERM)
            with anyio.fail_after(BOUND):
                assert await proc.wait() == 0
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
