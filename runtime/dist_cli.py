"""``regency node``: run one node of a deployment as its own OS process.

::

    REGENCY_SECRET=... regency node --name a --listen 127.0.0.1:7001 \\
        --connect 127.0.0.1:7002 --app mypkg.app:main

The shared secret comes from the environment variable ``REGENCY_SECRET`` or from
``--secret-file`` (mode 600); there is no default. The node prints one line
``listening NAME HOST PORT`` on standard output once it accepts connections (port 0
picks a free port), logs its events (connections, crashes, node_down...) as JSON lines
on standard error, and runs until SIGINT or SIGTERM, when it stops its processes
newest first and says goodbye to its peers.

Every node runs a service registered as ``regency_node`` that answers calls:
``"ping"`` -> ``"pong"``, ``"info"`` -> a dict with name, creation, processes and peers.
With ``--app MODULE:FUNCTION``, ``FUNCTION(node, dist)`` (an async function) runs as a
process on the node; if it crashes, the node logs the crash and keeps running.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import signal
import sys
from collections.abc import Sequence
from typing import Any

import anyio
import structlog

from .busywait import DEFAULT_BUSY_WAIT, default_busy_wait, parse_window
from .dist import DEFAULT_HEARTBEAT_INTERVAL, DEFAULT_HEARTBEAT_TIMEOUT, Distribution
from .genserver import GenServer
from .handshake import load_secret
from .messages import From
from .node import Node


class NodeService(GenServer):
    """The ``regency_node`` service every node runs: liveness and introspection."""

    async def init(self, node: Node, dist: Distribution) -> None:
        """Keep the node and its distribution layer to report on."""
        self.node = node
        self.dist = dist

    async def handle_call(self, request: Any, from_: From) -> Any:
        """``"ping"`` -> ``"pong"``; ``"info"`` -> the node's name, creation, processes, peers."""
        if request == "ping":
            return "pong"
        if request == "info":
            return {
                "name": self.node.name,
                "creation": self.node.creation,
                "processes": self.node.process_count,
                "peers": sorted(self.dist.peers()),
            }
        return await super().handle_call(request, from_)


def _hostport(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) < 65536:
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {text!r}")
    return host, int(port)


def _configure_logging(level: str) -> None:
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso"),
            structlog.processors.JSONRenderer(),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(getattr(logging, level.upper())),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
        cache_logger_on_first_use=False,
    )


def _seconds(text: str) -> float:
    """A duration of 0 seconds or more."""
    try:
        return parse_window(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _load_app(spec: str) -> Any:
    module, sep, func = spec.partition(":")
    if not sep or not module or not func:
        raise SystemExit(f"regency node: --app expects MODULE:FUNCTION, got {spec!r}")
    return getattr(importlib.import_module(module), func)


async def serve(args: argparse.Namespace, secret: bytes) -> None:
    """Run the node until SIGINT/SIGTERM."""
    async with Node(args.name) as node:
        dist = await Distribution(
            node,
            secret=secret,
            heartbeat_interval=args.heartbeat_interval,
            heartbeat_timeout=args.heartbeat_timeout,
            busy_wait=args.busy_wait,
        ).start(listen=args.listen)
        await node.start_server(NodeService, node, dist, name="regency_node")
        assert dist.address is not None
        print(f"listening {node.name} {dist.address[0]} {dist.address[1]}", flush=True)
        for host, port in args.connect:
            try:
                peer = await dist.connect(host, port)
                structlog.get_logger("regency").info("connected", node=node.name, peer=peer)
            except Exception as e:  # keep serving: the peer may come up later
                structlog.get_logger("regency").warning(
                    "connect_failed", node=node.name, address=f"{host}:{port}", error=str(e)
                )
        if args.app:
            node.spawn(_load_app(args.app), node, dist, name="app")
        with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async for signum in signals:
                structlog.get_logger("regency").info(
                    "node_stopping", node=node.name, signal=signal.Signals(signum).name
                )
                break


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``regency node``; returns the exit status."""
    parser = argparse.ArgumentParser(prog="regency node", description=__doc__.split("\n")[0])
    parser.add_argument("--name", required=True, help="this node's name, unique in the cluster")
    parser.add_argument(
        "--listen", type=_hostport, default=("127.0.0.1", 0), help="HOST:PORT to accept on"
    )
    parser.add_argument(
        "--connect", type=_hostport, action="append", default=[], help="HOST:PORT of a peer"
    )
    parser.add_argument("--secret-file", help="file holding the shared secret (mode 600)")
    parser.add_argument("--app", help="MODULE:FUNCTION to run as a process on the node")
    parser.add_argument(
        "--heartbeat-interval", type=float, default=DEFAULT_HEARTBEAT_INTERVAL, help="seconds"
    )
    parser.add_argument(
        "--heartbeat-timeout", type=float, default=DEFAULT_HEARTBEAT_TIMEOUT, help="seconds"
    )
    parser.add_argument(
        "--busy-wait",
        type=_seconds,
        default=None,
        help="seconds to poll after the connections' traffic before sleeping (0: never; "
        f"default: $REGENCY_BUSY_WAIT, else {DEFAULT_BUSY_WAIT})",
    )
    parser.add_argument("--log-level", default="info", choices=["debug", "info", "warning"])
    args = parser.parse_args(list(sys.argv[1:] if argv is None else argv))
    try:
        secret = load_secret(path=args.secret_file)
        if args.busy_wait is None:
            args.busy_wait = default_busy_wait()
    except (ValueError, OSError) as e:
        print(f"regency node: {e}", file=sys.stderr)
        return 2
    _configure_logging(args.log_level)
    anyio.run(serve, args, secret, backend="trio")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
