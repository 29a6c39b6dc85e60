"""A stopping node's last words reach its peers."""

from __future__ import annotations

import anyio
import pytest

import runtime
from runtime import Distribution, GenServer, Node, Shutdown

SECRET = b"node-stop-test-secret-0123"


class Server(GenServer):
    async def handle_call(self, request: object, from_: runtime.From) -> object:
        return "fine"


@pytest.mark.slow
async def test_processes_of_a_stopping_node_send_their_downs() -> None:
    """A peer monitoring a process of a node that stops gets Down(Shutdown), not NoConnection."""
    async with Node("watcher") as a:
        da = await Distribution(a, secret=SECRET).start(listen=("127.0.0.1", 0))
        got: list[runtime.Down] = []
        done = anyio.Event()
        async with Node("stopping") as b:
            db = await Distribution(b, secret=SECRET).start(listen=("127.0.0.1", 0))
            assert db.address is not None
            da.add_peer("stopping", *db.address)
            srv = await b.start_server(Server, name="srv")
            assert await a.call(srv, "x") == "fine"

            monitoring = anyio.Event()

            async def watch() -> None:
                runtime.monitor(srv)
                # One connection, FIFO: once this call is answered, b holds the monitor.
                assert await runtime.call(srv, "x") == "fine"
                monitoring.set()
                got.append(await runtime.receive())
                done.set()

            a.spawn(watch)
            with anyio.fail_after(10):
                await monitoring.wait()
        with anyio.fail_after(10):
            await done.wait()
        assert got[0].reason == Shutdown("node_stopped")
