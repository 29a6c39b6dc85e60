"""Supervisor operations on a supervisor of another node, over a LocalNetwork.

The supervisor runs on node ``b``; the test's own code runs on node ``a``. The network
encodes every message (``encode=True``, its default), so each request, reply and error
crosses the wire exactly as it would between machines. Time is trio's autojumping
``MockClock``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager

import pytest
import trio
import trio.testing

import runtime
from runtime import Node, wire
from runtime.errors import ReplyNotSendable
from runtime.pid import Name, Pid
from runtime.reasons import Crashed
from runtime.sim.localnet import LocalNetwork
from supervisors import (
    AlreadyPresent,
    AlreadyStarted,
    ChildInfo,
    ChildSpec,
    ChildType,
    Counts,
    MaxChildren,
    NotFound,
    NotSupported,
    Restart,
    Restarting,
    Running,
    StartFailed,
    count_children,
    delete_child,
    get_childspec,
    restart_child,
    start_child,
    start_dynamic_supervisor,
    start_supervisor,
    stop,
    terminate_child,
    which_children,
    worker_spec,
)
from supervisors.common import _Failure

SUP = Name("sup", "b")


async def idle() -> None:
    """Wait forever."""
    await runtime.receive()


@asynccontextmanager
async def two_nodes() -> AsyncIterator[tuple[Node, Node]]:
    """Nodes ``b`` and ``a`` on one LocalNetwork; ``a`` is the test code's current node."""
    net = LocalNetwork(0, detect_after=0.5)
    async with trio.open_nursery() as nursery:
        await nursery.start(net.run)
        async with AsyncExitStack() as stack:
            b = await stack.enter_async_context(Node("b", creation=1))
            net.attach(b)
            a = await stack.enter_async_context(Node("a", creation=2))
            net.attach(a)
            yield a, b
        nursery.cancel_scope.cancel()


class FailsAfterFirst:
    """A start function that starts an idle worker once, then fails."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self) -> Pid:
        self.calls += 1
        if self.calls > 1:
            raise RuntimeError("no second start")
        return runtime.spawn_link(idle)


class TestReports:
    async def test_which_children_and_count_children_from_another_node(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """which_children and count_children answer a caller on another node."""
        async with two_nodes() as (_a, b):
            await start_supervisor(
                [worker_spec("w1", idle), worker_spec("w2", idle, restart=Restart.TRANSIENT)],
                node=b,
                name="sup",
            )

            infos = await which_children(SUP)
            counts = await count_children(SUP)

            expected = [
                ChildInfo("w1", infos[0].pid, ChildType.WORKER, Restart.PERMANENT),
                ChildInfo("w2", infos[1].pid, ChildType.WORKER, Restart.TRANSIENT),
            ]
            assert expected == infos
            assert all(i.pid is not None and i.pid.node == "b" for i in infos)
            assert Counts(specs=2, active=2, supervisors=0, workers=2) == counts


class TestChildOperations:
    async def test_terminate_restart_delete_from_another_node(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """terminate_child, restart_child and delete_child act on b's supervisor from a."""
        async with two_nodes() as (_a, b):
            await start_supervisor([worker_spec("w1", idle)], node=b, name="sup")
            [before] = await which_children(SUP)

            await terminate_child(SUP, "w1")
            [stopped] = await which_children(SUP)
            new_pid = await restart_child(SUP, "w1")
            [restarted] = await which_children(SUP)
            restarted_alive = new_pid is not None and b.is_alive(new_pid)
            await terminate_child(SUP, "w1")
            await delete_child(SUP, "w1")

            assert before.pid is not None
            assert not b.is_alive(before.pid)
            assert stopped.pid is None
            assert new_pid == restarted.pid
            assert restarted_alive
            assert await which_children(SUP) == []

    async def test_not_found_from_another_node(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """Every operation on an unknown id raises NotFound with that id in the caller."""
        async with two_nodes() as (_a, b):
            await start_supervisor([], node=b, name="sup")

            for op in (terminate_child, restart_child, delete_child):
                with pytest.raises(NotFound) as info:
                    await op(SUP, "nope")

                assert info.value.key == "nope"

    async def test_running_from_another_node(self, autojump_clock: trio.testing.MockClock) -> None:
        """restart_child and delete_child of a running child raise Running in the caller."""
        async with two_nodes() as (_a, b):
            await start_supervisor([worker_spec("w1", idle)], node=b, name="sup")

            for op in (restart_child, delete_child):
                with pytest.raises(Running) as info:
                    await op(SUP, "w1")

                assert info.value.id == "w1"
            [still] = await which_children(SUP)
            assert still.pid is not None

    async def test_start_failed_travels_with_its_reason(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """A restart_child whose start raises gives StartFailed(id, Crashed) on the caller."""
        async with two_nodes() as (_a, b):
            await start_supervisor([ChildSpec("f", FailsAfterFirst())], node=b, name="sup")
            await terminate_child(SUP, "f")

            with pytest.raises(StartFailed) as info:
                await restart_child(SUP, "f")

            assert info.value.id == "f"
            assert isinstance(info.value.reason, Crashed)
            assert info.value.reason.message == "no second start"

    async def test_start_child_with_a_spec_fails_in_the_caller(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """start_child to another node raises TypeError at once; the supervisor is unchanged."""
        async with two_nodes() as (_a, b):
            await start_supervisor([], node=b, name="sup")

            with pytest.raises(TypeError, match="ChildSpec"):
                await start_child(SUP, worker_spec("w1", idle))

            assert trio.current_time() == 0
            assert await which_children(SUP) == []

    async def test_get_childspec_reply_cannot_travel(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """get_childspec from another node fails with ReplyNotSendable; the supervisor lives."""
        async with two_nodes() as (_a, b):
            sup = await start_supervisor([worker_spec("w1", idle)], node=b, name="sup")

            with pytest.raises(ReplyNotSendable):
                await get_childspec(SUP, "w1")

            assert b.is_alive(sup)
            assert len(await which_children(SUP)) == 1

    async def test_stop_from_another_node(self, autojump_clock: trio.testing.MockClock) -> None:
        """stop returns once the remote supervisor has exited, its children first."""
        async with two_nodes() as (_a, b):
            sup = await start_supervisor([worker_spec("w1", idle)], node=b, name="sup")
            [child] = await which_children(SUP)

            await stop(SUP)

            assert not b.is_alive(sup)
            assert child.pid is not None
            assert not b.is_alive(child.pid)


class TestDynamicSupervisor:
    async def test_dynamic_operations_from_another_node(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """A dynamic supervisor's reports, terminate_child by pid and its errors cross nodes."""
        async with two_nodes() as (_a, b):
            dsup = await start_dynamic_supervisor(node=b, name="sup")

            async def start_local() -> None:
                await start_child(dsup, worker_spec("w", idle))

            b.spawn(start_local)
            await trio.sleep(0.01)
            [info] = await which_children(SUP)
            assert info.pid is not None

            with pytest.raises(NotSupported, match="named by pid"):
                await terminate_child(SUP, "w")
            with pytest.raises(NotSupported):
                await restart_child(SUP, "w")
            await terminate_child(SUP, info.pid)
            with pytest.raises(NotFound) as not_found:
                await terminate_child(SUP, info.pid)

            assert info.pid == not_found.value.key
            assert Counts(0, 0, 0, 0) == await count_children(SUP)


@pytest.mark.parametrize(
    "error",
    [
        AlreadyPresent("w1"),
        AlreadyStarted("w1", Pid("b", 3, 1)),
        Running("w1"),
        Restarting("w1"),
        NotFound("w1"),
        NotSupported("a DynamicSupervisor's children are named by pid"),
        MaxChildren(4),
        StartFailed("w1", Crashed("RuntimeError", "boom", "")),
    ],
    ids=lambda e: type(e).__name__,
)
def test_failure_round_trips_the_wire_to_the_same_error(error: Exception) -> None:
    """Each error a supervisor answers with travels and comes back as the same error."""
    failure = _Failure.of(error)  # type: ignore[arg-type]

    back = wire.unpack_value(wire.pack_value(failure))

    assert failure == back
    rebuilt = back.error()
    assert type(error) is type(rebuilt)
    assert str(error) == str(rebuilt)
    assert vars(error) == vars(rebuilt)
