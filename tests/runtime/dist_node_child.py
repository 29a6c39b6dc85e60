"""A node in its own OS process, for the multi-process distribution tests.

Run as ``python -m tests.runtime.dist_node_child NAME INTERVAL TIMEOUT`` with the shared
secret in ``REGENCY_SECRET``. It starts a node with distribution on ``127.0.0.1`` (any
free port), registers the GenServer ``echo``, prints ``ADDRESS host port creation`` on
stdout and serves until killed. Its log goes to stderr.
"""

from __future__ import annotations

import sys

import anyio
import structlog
import trio

from runtime import Node
from runtime.dist import Distribution
from runtime.handshake import load_secret
from tests.runtime.dist_helpers import Echo


async def main(name: str, interval: float, timeout: float) -> None:
    """Serve as node *name* until killed."""
    async with Node(name) as node:
        dist = Distribution(
            node, secret=load_secret(), heartbeat_interval=interval, heartbeat_timeout=timeout
        )
        await dist.start(listen=("127.0.0.1", 0))
        await node.start_server(Echo, name="echo")
        assert dist.address is not None
        print("ADDRESS", dist.address[0], dist.address[1], node.creation, flush=True)
        await anyio.sleep_forever()


if __name__ == "__main__":
    structlog.configure(logger_factory=structlog.PrintLoggerFactory(sys.stderr))
    trio.run(main, sys.argv[1], float(sys.argv[2]), float(sys.argv[3]))
