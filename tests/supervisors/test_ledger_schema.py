"""The ledger's command schema is pinned: encode_command writes exactly these bytes.

Every node must read every command in the replicated log, so the bytes of a command may
change only with a new ``SCHEMA_VERSION``. A refactor of the codec that changes one of
these bytes is a schema change, not a refactor. Note that a time given as an int travels
as an int (``submitted_at=2``): the encoder writes the field as given, checked but not
converted.
"""

from __future__ import annotations

import pytest

from supervisors.ledger import (
    Account,
    Assign,
    Cancel,
    Command,
    Complete,
    Expire,
    Fail,
    NewTerm,
    Progress,
    SetFacts,
    SetPlan,
    Submit,
    WorkerDown,
    decode_command,
    encode_command,
)

PINNED: list[tuple[Command, bytes]] = [
    (
        Submit(
            task_id="t1",
            payload={"q": [1, 2.5, None, b"x"]},
            submitted_at=1.0,
            idempotency_key="k1",
            max_attempts=2,
        ),
        bytes.fromhex(
            "87a17601a26f70a67375626d6974a77461736b5f6964a27431a77061796c6f61"
            "6481a1719401cb4004000000000000c0c40178ac7375626d69747465645f6174"
            "cb3ff0000000000000af6964656d706f74656e63795f6b6579a26b31ac6d6178"
            "5f617474656d70747302"
        ),
    ),
    (
        Submit(task_id="t2", payload="p", submitted_at=2),
        bytes.fromhex(
            "87a17601a26f70a67375626d6974a77461736b5f6964a27432a77061796c6f61"
            "64a170ac7375626d69747465645f617402af6964656d706f74656e63795f6b65"
            "79c0ac6d61785f617474656d707473c0"
        ),
    ),
    (
        Assign(task_id="t1", worker="w1", term=3, at=4.0, lease_until=9.5),
        bytes.fromhex(
            "87a17601a26f70a661737369676ea77461736b5f6964a27431a6776f726b6572"
            "a27731a47465726d03a26174cb4010000000000000ab6c656173655f756e7469"
            "6ccb4023000000000000"
        ),
    ),
    (
        Progress(task_id="t1", worker="w1", term=3, note="half", at=5.0),
        bytes.fromhex(
            "87a17601a26f70a870726f6772657373a77461736b5f6964a27431a6776f726b"
            "6572a27731a47465726d03a46e6f7465a468616c66a26174cb40140000000000"
            "00"
        ),
    ),
    (
        Complete(task_id="t1", worker="w1", result=["ok"], at=6.0, tokens=10, cost=0.25, term=3),
        bytes.fromhex(
            "89a17601a26f70a8636f6d706c657465a77461736b5f6964a27431a6776f726b"
            "6572a27731a6726573756c7491a26f6ba26174cb4018000000000000a6746f6b"
            "656e730aa4636f7374cb3fd0000000000000a47465726d03"
        ),
    ),
    (
        Fail(task_id="t1", worker="w1", term=3, error="boom", retryable=True),
        bytes.fromhex(
            "87a17601a26f70a46661696ca77461736b5f6964a27431a6776f726b6572a277"
            "31a47465726d03a56572726f72a4626f6f6da9726574727961626c65c3"
        ),
    ),
    (
        Cancel(task_id="t1", term=3),
        bytes.fromhex("84a17601a26f70a663616e63656ca77461736b5f6964a27431a47465726d03"),
    ),
    (
        Expire(now=7.0, term=3),
        bytes.fromhex("84a17601a26f70a6657870697265a36e6f77cb401c000000000000a47465726d03"),
    ),
    (
        WorkerDown(worker="w1", term=3),
        bytes.fromhex("84a17601a26f70ab776f726b65725f646f776ea6776f726b6572a27731a47465726d03"),
    ),
    (
        SetFacts(term=3, facts={"a": 1}),
        bytes.fromhex("84a17601a26f70a97365745f6661637473a47465726d03a5666163747381a16101"),
    ),
    (
        SetPlan(term=3, plan=["s1"]),
        bytes.fromhex("84a17601a26f70a87365745f706c616ea47465726d03a4706c616e91a27331"),
    ),
    (
        Account(agent="ag", tokens_in=1, tokens_out=2, cost=0.5, task_id="t1", key="k"),
        bytes.fromhex(
            "88a17601a26f70a76163636f756e74a56167656e74a26167a9746f6b656e735f"
            "696e01aa746f6b656e735f6f757402a4636f7374cb3fe0000000000000a77461"
            "736b5f6964a27431a36b6579a16b"
        ),
    ),
    (
        NewTerm(term=4, leader="n1"),
        bytes.fromhex("84a17601a26f70a86e65775f7465726da47465726d04a66c6561646572a26e31"),
    ),
]


@pytest.mark.parametrize(("cmd", "expected"), PINNED, ids=lambda v: type(v).__name__)
def test_encode_command_writes_the_pinned_bytes(cmd: Command, expected: bytes) -> None:
    """Each command encodes to exactly the bytes schema version 1 defines."""
    actual = encode_command(cmd)

    assert expected == actual


@pytest.mark.parametrize(("cmd", "data"), PINNED, ids=lambda v: type(v).__name__)
def test_decode_command_reads_the_pinned_bytes(cmd: Command, data: bytes) -> None:
    """The pinned bytes decode to the command they were written from."""
    actual = decode_command(data)

    assert cmd == actual
