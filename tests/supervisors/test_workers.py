"""Workers: fencing of assignments by term, and results buffered while no leader answers.

One node on fake time; a stand-in ledger service answers ``Redirect(None)`` (no leader)
until the test brings it up, then applies commands to a real :class:`TaskLedger`.
"""

from __future__ import annotations

from typing import Any

import pytest
import trio
import trio.testing
from structlog.testing import capture_logs

from runtime import GenServer, Node, receive
from runtime.messages import From
from supervisors.client import LEDGER_SERVICE, Appended, LedgerAppend, Redirect
from supervisors.ledger import Submit, TaskLedger, TaskState
from supervisors.workers import (
    Assignment,
    AssignmentRefused,
    WorkerConfig,
    WorkerHello,
    start_worker,
)

CONFIG = WorkerConfig(hello_interval=0.5, progress_interval=0.5, clock=trio.current_time)


class FakeService(GenServer):
    """A ledger service with no leader until ``up`` is set."""

    ledger: TaskLedger
    up = False
    hellos: list[WorkerHello]

    async def init(self, *args: Any) -> None:
        self.ledger, self.hellos = args

    async def handle_call(self, request: Any, from_: From) -> Any:
        assert isinstance(request, LedgerAppend)
        if not FakeService.up:
            return Redirect(None)
        return Appended(self.ledger.execute(request.command))

    async def handle_cast(self, msg: Any) -> None:
        self.hellos.append(msg)


async def _setup(node: Node, ledger: TaskLedger, runs: list[Any]) -> list[WorkerHello]:
    hellos: list[WorkerHello] = []
    await node.start_server(FakeService, ledger, hellos, name=LEDGER_SERVICE)

    async def handler(payload: Any) -> Any:
        runs.append(payload)
        await trio.sleep(1.0)
        return payload + 1

    await start_worker(node, [node.name], handler, name="w", config=CONFIG)
    return hellos


@pytest.fixture(autouse=True)
def _service_down() -> None:
    FakeService.up = False


async def test_worker_refuses_an_assignment_older_than_the_term_it_saw(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """An assignment of term 3 after one of term 5 is refused back; only the first runs."""
    runs: list[Any] = []
    got: list[Any] = []
    async with Node("n", creation=1) as node:
        hellos = await _setup(node, TaskLedger(), runs)
        await trio.sleep(0.1)

        async def inbox() -> None:
            while True:
                got.append(await receive())

        me = node.spawn(inbox)
        worker = hellos[0].pid
        node.send(worker, Assignment("a", 1, 5, 100.0, me))
        node.send(worker, Assignment("b", 2, 3, 100.0, me))
        await trio.sleep(0.5)
        node.stop()

    assert runs == [1]
    assert got == [AssignmentRefused("b", "w", 3, 5)]


async def test_worker_buffers_results_without_a_leader_and_delivers_to_the_next(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """With no leader the work goes on and the result waits; the next leader gets it once."""
    ledger = TaskLedger()
    ledger.execute(Submit(task_id="t", payload=41, submitted_at=0.0))
    runs: list[Any] = []
    with capture_logs() as logs:
        async with Node("n", creation=1) as node:
            hellos = await _setup(node, ledger, runs)
            await trio.sleep(0.1)
            node.send(hellos[0].pid, Assignment("t", 41, 1, 100.0, hellos[0].pid))
            await trio.sleep(10.0)
            before = ledger.task("t")
            FakeService.up = True
            await trio.sleep(5.0)
            node.stop()

    events = [e["event"] for e in logs]
    assert runs == [41]
    assert before is not None
    assert before.state is TaskState.PENDING
    assert "result_buffered" in events
    task = ledger.task("t")
    assert task is not None
    assert (task.state, task.result, task.completed_by) == (TaskState.COMPLETED, 42, "w")
    assert events.count("result_delivered") == 1
