"""The Raft member's client service: a put that asks to wait for the end of an election.

The service runs on a real node against a stub driver whose role and leader the test
sets, so each answer can be checked without a cluster.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import anyio
import attrs

from runtime import Node
from runtime.pid import Name
from runtime.raft.app import CLIENT_SERVICE, ClientService, KVStore, Member
from runtime.raft.core import NotLeader
from runtime.raft.driver import ProposalCallback


@attrs.define
class _Status:
    leader: str | None


class StubDriver:
    """What the client service uses of a driver: propose_nowait and wait_for."""

    def __init__(self) -> None:
        self.me = "r1"
        self.leader: str | None = None
        self.proposed: list[bytes] = []
        self._changed = anyio.Event()

    def set_leader(self, leader: str | None) -> None:
        self.leader = leader
        self._changed.set()
        self._changed = anyio.Event()

    def propose_nowait(self, data: bytes, done: ProposalCallback) -> None:
        if self.leader != self.me:
            raise NotLeader(self.leader)
        self.proposed.append(data)
        done({"index": len(self.proposed), "duplicate": False}, None)

    async def wait_for(self, predicate: Callable[[Any], bool]) -> Any:
        while not predicate(st := _Status(self.leader)):
            await self._changed.wait()
        return st


def _put(wait: object = None) -> tuple[object, ...]:
    request: tuple[object, ...] = ("put", "k", 1, "client", 1)
    return request if wait is None else (*request, wait)


async def _with_service(driver: StubDriver, body: Callable[[Node], Any]) -> None:
    async with Node("r1") as node, anyio.create_task_group() as tg:
        member = Member(node, driver, KVStore(), tg)  # type: ignore[arg-type]
        await node.start_server(ClientService, member, name=CLIENT_SERVICE)
        await body(node)
        tg.cancel_scope.cancel()


def test_a_put_without_wait_is_refused_at_once_during_an_election(run: Any) -> None:
    driver = StubDriver()
    answers: list[object] = []

    async def body(node: Node) -> None:
        answers.append(await node.call(Name(CLIENT_SERVICE, "r1"), _put(), timeout=5))

    run(lambda: _with_service(driver, body))
    assert answers == [["not_leader", None]]


def _held_put(run: Any, driver: StubDriver, then: Any) -> list[object]:
    """Send a put with a wait during an election; after 50 ms call ``then()`` (the
    put must still be held then); return the answers."""
    answers: list[object] = []

    async def body(node: Node) -> None:
        async with anyio.create_task_group() as tg:

            async def call() -> None:
                answers.append(await node.call(Name(CLIENT_SERVICE, "r1"), _put(5), timeout=10))

            tg.start_soon(call)
            await anyio.sleep(0.05)
            assert answers == []  # held, not refused
            then()

    run(lambda: _with_service(driver, body))
    return answers


def test_a_waiting_put_is_proposed_once_this_member_wins_the_election(run: Any) -> None:
    driver = StubDriver()

    def win() -> None:
        assert driver.proposed == []
        driver.set_leader("r1")

    assert _held_put(run, driver, win) == [["ok", {"index": 1, "duplicate": False}]]
    assert len(driver.proposed) == 1


def test_a_waiting_put_gets_the_hint_once_another_member_wins(run: Any) -> None:
    driver = StubDriver()
    assert _held_put(run, driver, lambda: driver.set_leader("r2")) == [["not_leader", "r2"]]
    assert driver.proposed == []


def test_a_waiting_put_is_refused_when_the_election_outlasts_its_wait(run: Any) -> None:
    driver = StubDriver()
    answers: list[object] = []

    async def body(node: Node) -> None:
        answers.append(await node.call(Name(CLIENT_SERVICE, "r1"), _put(0.05), timeout=10))

    run(lambda: _with_service(driver, body))
    assert answers == [["not_leader", None]]


def test_a_put_with_a_known_leader_is_answered_with_the_hint_without_waiting(run: Any) -> None:
    driver = StubDriver()
    driver.leader = "r3"
    answers: list[object] = []

    async def body(node: Node) -> None:
        answers.append(await node.call(Name(CLIENT_SERVICE, "r1"), _put(5), timeout=0.5))

    run(lambda: _with_service(driver, body))
    assert answers == [["not_leader", "r3"]]


def test_a_put_with_a_bad_wait_is_an_error(run: Any) -> None:
    driver = StubDriver()
    answers: list[Any] = []

    async def body(node: Node) -> None:
        for wait in (True, -1, 11, "1"):
            answers.append(await node.call(Name(CLIENT_SERVICE, "r1"), _put(wait), timeout=5))

    run(lambda: _with_service(driver, body))
    assert [a[0] for a in answers] == ["error"] * 4


def test_waiting_puts_with_different_waits_are_each_answered_in_turn(run: Any) -> None:
    driver = StubDriver()
    answers: dict[str, object] = {}

    async def body(node: Node) -> None:
        async with anyio.create_task_group() as tg:

            async def call(name: str, wait: float) -> None:
                answer = await node.call(Name(CLIENT_SERVICE, "r1"), _put(wait), timeout=10)
                answers[name] = answer

            tg.start_soon(call, "short", 0.05)
            tg.start_soon(call, "long1", 5)
            tg.start_soon(call, "long2", 5)
            await anyio.sleep(0.2)
            assert answers == {"short": ["not_leader", None]}  # its wait ran out first
            driver.set_leader("r1")

    run(lambda: _with_service(driver, body))
    oks = sorted([answers["long1"], answers["long2"]], key=repr)
    assert oks == [["ok", {"index": i, "duplicate": False}] for i in (1, 2)]
    assert len(driver.proposed) == 2
