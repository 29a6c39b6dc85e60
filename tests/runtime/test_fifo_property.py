"""Property: messages from one sender to one receiver arrive in the order sent."""

from __future__ import annotations

from typing import Any

import anyio
import anyio.lowlevel
import trio
import trio.testing
from hypothesis import given, settings
from hypothesis import strategies as st

import runtime
from runtime import Node


@settings(max_examples=60, deadline=None)
@given(
    plan=st.lists(
        st.tuples(st.integers(0, 5), st.integers(1, 20), st.integers(0, 3)), min_size=1, max_size=8
    ),
    bound=st.integers(1, 8),
    selective=st.booleans(),
)
def test_per_pair_fifo_under_random_interleavings(
    plan: list[tuple[int, int, int]], bound: int, selective: bool
) -> None:
    """Many senders, random yields and a small bound: each sender's messages stay in order."""
    received: list[tuple[int, int]] = []
    total = sum(n for _, n, _ in plan)

    async def receiver() -> None:
        for _ in range(total):
            if selective:
                # take odd-numbered senders first when available; order per sender must hold
                try:
                    msg = await runtime.receive(lambda m: m[0] % 2 == 1, timeout=0)
                except runtime.ReceiveTimeout:
                    msg = await runtime.receive()
            else:
                msg = await runtime.receive()
            received.append(msg)
            await anyio.lowlevel.checkpoint()

    async def sender(sid: int, n: int, yields: int) -> None:
        for i in range(n):
            await runtime.send_wait(target, (sid, i))
            for _ in range(yields):
                await anyio.lowlevel.checkpoint()

    async def scenario() -> None:
        nonlocal target
        async with Node("n1") as node:
            target = node.spawn(receiver, mailbox_bound=bound)
            for sid, (_, n, yields) in enumerate(plan):
                node.spawn(sender, sid, n, yields)
            await anyio.sleep(100)

    target: Any = None
    trio.run(scenario, clock=trio.testing.MockClock(autojump_threshold=0))
    assert len(received) == total
    for sid, (_, n, _) in enumerate(plan):
        assert [i for s, i in received if s == sid] == list(range(n))
