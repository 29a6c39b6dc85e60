"""Property tests: random command interleavings keep the task ledger's promises.

Hypothesis interleaves the commands of two orchestrators of different terms (each may or
may not announce itself with ``NewTerm``), several workers delivering results (some from
assignments that moved since), clients resubmitting, accounting, and garbage entries.
After every entry the checker asserts that no task is completed twice and a recorded
result never changes, that a command older than the fencing term changes nothing (nor
does any refusal or duplicate), and that every submitted task is in exactly one state.
Replaying the same entries on fresh ledgers, with or without a snapshot and restore
part way, gives byte-identical snapshots and the same results.
"""

from __future__ import annotations

import hypothesis.strategies as st
from hypothesis import given, settings

from supervisors.ledger import (
    Accepted,
    Account,
    Assign,
    Cancel,
    Command,
    Complete,
    Duplicate,
    Expire,
    Fail,
    LedgerConfig,
    NewTerm,
    Progress,
    Refused,
    Result,
    SetFacts,
    SetPlan,
    StaleTerm,
    Submit,
    TaskLedger,
    TaskState,
    WorkerDown,
    decode_command,
    encode_command,
)

TASKS = ("t0", "t1", "t2")
WORKERS = ("w0", "w1")  # w2 is never assigned, but delivers results
CONFIG = LedgerConfig(max_attempts=2, max_progress_notes=3)

task_ids = st.sampled_from(TASKS)
workers = st.sampled_from(WORKERS)
times = st.integers(0, 40).map(float)


def held(pairs: tuple[tuple[str, str], ...]) -> st.SearchStrategy[tuple[str, str]]:
    """A (task, worker) pair, often one of ``pairs`` (the current assignments)."""
    anything = st.tuples(task_ids, workers)
    return st.one_of(st.sampled_from(pairs), anything) if pairs else anything


# Orchestrator command kinds, repeated to weight them.
KINDS = ["new_term"] * 2 + ["assign"] * 4 + ["progress"] * 2 + ["fail"] * 2
KINDS += ["cancel", "expire", "down", "facts", "plan"]


@st.composite
def orchestrator_command(
    draw: st.DrawFn, term: int, leader: str, pairs: tuple[tuple[str, str], ...]
) -> Command:
    """A command an orchestrator of ``term`` might issue; ``pairs``: (task, worker) assigned."""
    kind = draw(st.sampled_from(KINDS))
    at = draw(times)
    match kind:
        case "new_term":
            return NewTerm(term=term, leader=leader)
        case "assign":
            lease = draw(st.sampled_from([10.0, 5.0, 20.0, -1.0]))
            return Assign(
                task_id=draw(task_ids),
                worker=draw(workers),
                term=term,
                at=at,
                lease_until=at + lease,
            )
        case "progress":
            task_id, worker = draw(held(pairs))
            return Progress(task_id=task_id, worker=worker, term=term, note="n", at=at)
        case "fail":
            task_id, worker = draw(held(pairs))
            return Fail(
                task_id=task_id,
                worker=worker,
                term=term,
                error="e",
                retryable=draw(st.booleans()),
            )
        case "cancel":
            return Cancel(task_id=draw(task_ids), term=term)
        case "expire":
            return Expire(now=at, term=term)
        case "down":
            return WorkerDown(worker=draw(workers), term=term)
        case "facts":
            return SetFacts(term=term, facts={leader: at})
        case _:
            return SetPlan(term=term, plan=[leader, at])


@st.composite
def entries(draw: st.DrawFn) -> list[bytes]:
    """The committed entries of a random run: encoded commands and the odd garbage."""
    old = draw(st.integers(1, 3))
    new = old + draw(st.integers(1, 3))
    steps = draw(st.lists(st.integers(0, 17), min_size=10, max_size=80))
    # Each run starts with some tasks submitted, so the orchestrators have work to fence.
    first = draw(st.lists(task_ids, min_size=2, max_size=3, unique=True))
    out = [
        encode_command(Submit(task_id=t, payload=0, submitted_at=0.0, idempotency_key=f"k{i}"))
        for i, t in enumerate(first)
    ]
    shadow = TaskLedger(CONFIG)  # to aim progress and failures at current assignments
    for d in out:
        shadow.apply_data(d)
    for step in steps:
        pairs = tuple((t.task_id, t.worker or "") for t in shadow.assigned())
        cmd: Command
        if step <= 4:
            cmd = draw(orchestrator_command(old, "old", pairs))
        elif step <= 11:
            cmd = draw(orchestrator_command(new, "new", pairs))
        elif step == 12:
            key = draw(st.sampled_from([None, "k0", "k1"]))
            cmd = Submit(
                task_id=draw(task_ids),
                payload=draw(st.integers(0, 3)),
                submitted_at=draw(times),
                idempotency_key=key,
            )
        elif step <= 14:
            term = draw(st.sampled_from([None, old, new]))
            cmd = Complete(
                task_id=draw(task_ids),
                worker=draw(st.sampled_from([*WORKERS, "w2"])),
                result=draw(st.integers(0, 9)),
                at=draw(times),
                term=term,
            )
        elif step <= 16:
            cmd = Account(
                agent=draw(st.sampled_from(["planner", *WORKERS])),
                tokens_in=draw(st.integers(0, 100)),
                tokens_out=draw(st.integers(0, 100)),
                cost=draw(st.sampled_from([0.0, 0.25, 1.5])),
                task_id=draw(st.sampled_from([None, *TASKS])),
                key=draw(st.sampled_from([None, "a0", "a1"])),
            )
        else:
            out.append(draw(st.binary(max_size=12)))
            continue
        out.append(encode_command(cmd))
        shadow.apply_data(out[-1])
    return out


FENCED = (Assign, Progress, Fail, Cancel, Expire, WorkerDown, SetFacts, SetPlan, NewTerm)


# Commands whose outcome depends on indexes kept beside the snapshot's data (idempotency
# keys of submits and of accounting): a restored ledger must answer them the same way.
PROBES = [
    *(
        encode_command(
            Submit(task_id=f"probe-{key}", payload=0, submitted_at=0.0, idempotency_key=key)
        )
        for key in ("k0", "k1")
    ),
    *(
        encode_command(Account(agent="probe", tokens_in=1, tokens_out=1, cost=0.0, key=key))
        for key in ("a0", "a1")
    ),
]


def run(data: list[bytes], led: TaskLedger | None = None) -> tuple[TaskLedger, list[Result]]:
    """Apply ``data`` in order to ``led`` (a fresh ledger by default)."""
    led = TaskLedger(CONFIG) if led is None else led
    return led, [led.apply_data(d) for d in data]


def check_states(led: TaskLedger, submitted: set[str]) -> None:
    """Every submitted task is in exactly one state, and nothing else is in any."""
    lists = [led.pending(), led.assigned(), led.completed(), led.failed(), led.cancelled()]
    ids = [t.task_id for tasks in lists for t in tasks]
    assert sorted(ids) == sorted(submitted)
    assert led.counts().total == len(submitted)
    for task in led.tasks():
        assert task.attempts <= task.max_attempts
        assert (task.state is TaskState.ASSIGNED) == (task.worker is not None)
        assert (task.state is TaskState.COMPLETED) == (task.completed_by is not None)


@settings(max_examples=200, deadline=None)
@given(entries())
def test_invariants_hold_after_every_entry(data: list[bytes]) -> None:
    """(a) no task completes twice; (b) stale or refused commands change nothing; (c) one state."""
    led = TaskLedger(CONFIG)
    submitted: set[str] = set()
    completions: dict[str, int] = {}
    recorded: dict[str, tuple[object, str | None]] = {}
    for d in data:
        before, fencing = led.snapshot(), led.fencing_term
        result = led.apply_data(d)
        if result.op is not None:
            cmd = decode_command(d)
            if isinstance(cmd, FENCED) and cmd.term < fencing:
                assert result == Refused(cmd.op, StaleTerm(cmd.term, fencing))
            if isinstance(result, Accepted) and isinstance(cmd, Submit):
                submitted.add(cmd.task_id)
            if isinstance(result, Accepted) and isinstance(cmd, Complete):
                completions[cmd.task_id] = completions.get(cmd.task_id, 0) + 1
        if not isinstance(result, Accepted):
            assert led.snapshot() == before
        assert led.fencing_term >= fencing
        for task in led.completed():
            recorded.setdefault(task.task_id, (task.result, task.completed_by))
            assert recorded[task.task_id] == (task.result, task.completed_by)
        assert all(n == 1 for n in completions.values())
        check_states(led, submitted)


@settings(max_examples=120, deadline=None)
@given(entries(), st.data())
def test_replay_is_deterministic_with_or_without_snapshot(
    data: list[bytes], cut: st.DataObject
) -> None:
    """(d) the same entries give identical snapshots; (e) so does restoring a snapshot part way."""
    first, first_results = run(data)
    second, second_results = run(data)
    k = cut.draw(st.integers(0, len(data)), label="cut")
    head, _ = run(data[:k])
    resumed = TaskLedger(LedgerConfig())  # the snapshot brings the config along
    resumed.restore(head.snapshot())
    _, tail_results = run(data[k:], resumed)

    assert second.snapshot() == first.snapshot()
    assert second_results == first_results
    assert resumed.snapshot() == first.snapshot()
    assert tail_results == first_results[k:]
    assert run(PROBES, resumed)[1] == run(PROBES, first)[1]
    assert resumed == first


@settings(max_examples=60, deadline=None)
@given(entries())
def test_repeated_idempotent_command_is_duplicate(data: list[bytes]) -> None:
    """Re-applying an accepted Submit, Complete, NewTerm or keyed Account changes nothing."""
    led = TaskLedger(CONFIG)
    for d in data:
        result = led.apply_data(d)
        if not isinstance(result, Accepted):
            continue
        cmd = decode_command(d)
        if isinstance(cmd, Submit | Complete | NewTerm) or (
            isinstance(cmd, Account) and cmd.key is not None
        ):
            before = led.snapshot()
            again = led.apply_data(d)
            assert isinstance(again, Duplicate)
            assert led.snapshot() == before
