"""The coordination interface: the in-memory engine, fenced contexts, the singleton manager.

The manager, the ledger service and the orchestrator use only the ``Coordinator``
interface, so they run unchanged on :class:`LocalCoordinator` here (as on Raft in
``test_failover*.py``).
"""

from __future__ import annotations

from typing import Any

import pytest
import trio
import trio.testing

from runtime import GenServer, Node
from supervisors.coordination import Applied, LocalCoordinator, NotLeader
from supervisors.failover import (
    ORCHESTRATOR_NAME,
    Deposed,
    GroupConfig,
    OrchestratorContext,
    WorkerRegistry,
    start_group_member,
)
from supervisors.ledger import (
    Accepted,
    NewTerm,
    Refused,
    SetFacts,
    StaleTerm,
    Submit,
)


async def test_local_coordinator_appends_reads_and_streams_in_order(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Appends apply at once, reads see them, and watch yields each in order."""
    coord = LocalCoordinator("a")
    feed = coord.watch()
    result = await coord.append(Submit(task_id="t", payload=1, submitted_at=0.0))
    seen: Applied = await feed.__anext__()

    assert isinstance(result, Accepted)
    assert seen == Applied(1, Submit(task_id="t", payload=1, submitted_at=0.0), result)
    assert await coord.read(lambda led: led.task("t")) == result.task


async def test_local_coordinator_deposed_refuses_appends_and_campaign_waits(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A deposed node raises NotLeader at once; campaign returns the next term it leads."""
    coord = LocalCoordinator("a", term=1)
    coord.depose("b")
    with pytest.raises(NotLeader) as info:
        await coord.append(Submit(task_id="t", payload=1, submitted_at=0.0))
    with trio.move_on_after(1):
        await coord.campaign()
    coord.elect()

    assert info.value.hint == "b"
    assert await coord.campaign() == 3


async def test_context_stamps_its_term_and_is_deposed_with_it(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """The context stamps its term; an older term is refused; a deposed context acts no more."""
    coord = LocalCoordinator("a", term=1)
    old = OrchestratorContext("a", 1, GroupConfig(), coord, WorkerRegistry(5.0))
    stamped = await old.append(SetFacts(term=99, facts="x"))
    new_term = coord.elect()
    await coord.append(NewTerm(term=new_term, leader="a"))
    stale = await coord.append(old.stamp(SetFacts(term=0, facts="y")))
    with pytest.raises(Deposed):
        await old.append(SetFacts(term=1, facts="z"))

    assert isinstance(stamped, Accepted)
    assert coord.history[0][0] == SetFacts(term=1, facts="x")
    assert stale == Refused("set_facts", StaleTerm(1, 2))


class Idle(GenServer):
    """An orchestrator that only remembers its context."""

    terms: list[int] = []

    async def init(self, *args: Any) -> None:
        (ctx,) = args
        Idle.terms.append(ctx.term)


async def test_manager_runs_the_orchestrator_only_while_leading(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """The singleton starts on leadership with NewTerm first and stops at once when deposed."""
    Idle.terms = []
    coord = LocalCoordinator("a", term=1)
    async with Node("a", creation=1) as node:
        member = await start_group_member(node, ["a"], orchestrator=Idle, coordinator=coord)
        await trio.sleep(0.1)
        first = node.whereis(ORCHESTRATOR_NAME)
        coord.depose("b")
        await trio.sleep(0.01)
        while_deposed = node.whereis(ORCHESTRATOR_NAME)
        coord.elect()
        await trio.sleep(0.1)
        second = member.orchestrator()
        await member.stop()

    assert first is not None
    assert while_deposed is None
    assert second is not None
    assert second != first
    assert Idle.terms == [1, 3]
    assert [c for c, _ in coord.history] == [
        NewTerm(term=1, leader="a"),
        NewTerm(term=3, leader="a"),
    ]
