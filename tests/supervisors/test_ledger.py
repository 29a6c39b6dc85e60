"""The task ledger, command by command and state by state."""

from __future__ import annotations

from collections.abc import Callable

import msgpack
import pytest

from runtime.raft.core import Entry, EntryKind
from supervisors.ledger import (
    MAX_VALUE_DEPTH,
    SCHEMA_VERSION,
    Accepted,
    Account,
    Assign,
    AttemptsExhausted,
    BadLease,
    Cancel,
    Command,
    Complete,
    Duplicate,
    Expire,
    Fail,
    LeaseHeld,
    LedgerConfig,
    Malformed,
    MalformedCommand,
    MalformedSnapshot,
    NewTerm,
    NotAssigned,
    Progress,
    ProgressNote,
    Reason,
    Refused,
    Result,
    SetFacts,
    SetPlan,
    StaleTerm,
    Submit,
    Task,
    TaskCounts,
    TaskFinished,
    TaskLedger,
    TaskState,
    UnknownTask,
    Usage,
    WorkerDown,
    decode_command,
    describe,
    encode_command,
)

# ----------------------------------------------------------------------------- helpers


def submit(
    task_id: str = "t1",
    at: float = 0.0,
    idempotency_key: str | None = None,
    max_attempts: int | None = None,
) -> Submit:
    """A Submit of ``task_id`` with a small payload."""
    return Submit(
        task_id=task_id,
        payload={"q": task_id},
        submitted_at=at,
        idempotency_key=idempotency_key,
        max_attempts=max_attempts,
    )


def assign(
    task_id: str = "t1", worker: str = "w1", term: int = 1, at: float = 0.0, lease: float = 10.0
) -> Assign:
    """An Assign of ``task_id`` to ``worker`` at ``at`` for ``lease`` seconds."""
    return Assign(task_id=task_id, worker=worker, term=term, at=at, lease_until=at + lease)


def complete(
    task_id: str = "t1", worker: str = "w1", result: object = "r", at: float = 1.0
) -> Complete:
    """A Complete of ``task_id`` by ``worker``."""
    return Complete(task_id=task_id, worker=worker, result=result, at=at, tokens=5, cost=0.5)


def fail(task_id: str = "t1", worker: str = "w1", term: int = 1, *, retryable: bool) -> Fail:
    """A Fail of ``task_id`` by ``worker``."""
    return Fail(task_id=task_id, worker=worker, term=term, error="boom", retryable=retryable)


def ledger(*cmds: Command, config: LedgerConfig | None = None) -> TaskLedger:
    """A ledger at term 1 (leader "a") after ``cmds``, each of which must be accepted."""
    led = TaskLedger(config)
    for cmd in (NewTerm(term=1, leader="a"), *cmds):
        result = led.execute(cmd)
        assert isinstance(result, Accepted), describe(result)
    return led


def apply_unchanged(led: TaskLedger, cmd: Command) -> Result:
    """Apply ``cmd`` and assert the ledger did not change."""
    before = led.snapshot()
    result = led.execute(cmd)
    assert before == led.snapshot(), describe(result)
    return result


def get(led: TaskLedger, task_id: str = "t1") -> Task:
    """The task ``task_id``, which must exist."""
    task = led.task(task_id)
    assert task is not None
    return task


def state(led: TaskLedger, task_id: str = "t1") -> TaskState:
    """The state of ``task_id``."""
    return get(led, task_id).state


# Ledgers with t1 in each state (w1 holds it when assigned, lease until 10).
IN_STATE: dict[TaskState, Callable[[], TaskLedger]] = {
    TaskState.PENDING: lambda: ledger(submit()),
    TaskState.ASSIGNED: lambda: ledger(submit(), assign()),
    TaskState.COMPLETED: lambda: ledger(submit(), assign(), complete()),
    TaskState.FAILED: lambda: ledger(submit(), assign(), fail(retryable=False)),
    TaskState.CANCELLED: lambda: ledger(submit(), Cancel(task_id="t1", term=1)),
}

# One command of each kind, all well-formed.
EXAMPLES: list[Command] = [
    submit("t9", at=1.5, idempotency_key="k", max_attempts=2),
    assign(),
    Progress(task_id="t1", worker="w1", term=1, note="half way", at=2.0),
    Complete(
        task_id="t1", worker="w1", result=[1, {"a": b"x"}], at=3.0, tokens=7, cost=0.25, term=1
    ),
    fail(retryable=True),
    Cancel(task_id="t1", term=1),
    Expire(now=4.0, term=1),
    WorkerDown(worker="w1", term=1),
    SetFacts(term=1, facts={"known": ["x"]}),
    SetPlan(term=1, plan=["step 1", "step 2"]),
    Account(agent="planner", tokens_in=3, tokens_out=4, cost=0.01, task_id="t1", key="call-1"),
    NewTerm(term=2, leader="b"),
]

# Every fenced command, made at a given term.
FENCED: dict[str, Callable[[int], Command]] = {
    "assign": lambda term: assign(term=term, worker="w2", at=20.0),
    "progress": lambda term: Progress(task_id="t1", worker="w1", term=term, note="n", at=2.0),
    "fail": lambda term: fail(term=term, retryable=True),
    "cancel": lambda term: Cancel(task_id="t1", term=term),
    "expire": lambda term: Expire(now=100.0, term=term),
    "worker_down": lambda term: WorkerDown(worker="w1", term=term),
    "set_facts": lambda term: SetFacts(term=term, facts="f"),
    "set_plan": lambda term: SetPlan(term=term, plan="p"),
    "new_term": lambda term: NewTerm(term=term, leader="old"),
}


# ----------------------------------------------------------------------------- codec


def _nested(depth: int) -> object:
    """A list nested ``depth`` levels deep."""
    value: object = []
    for _ in range(depth - 1):
        value = [value]
    return value


class TestCodec:
    @pytest.mark.parametrize("cmd", EXAMPLES, ids=lambda c: c.op)
    def test_command_round_trips(self, cmd: Command) -> None:
        """Every command decodes to an equal command."""
        data = encode_command(cmd)

        assert cmd == decode_command(data)

    def test_encoding_is_a_versioned_msgpack_map(self) -> None:
        """The wire form is a plain msgpack map with the schema version and the op."""
        wire = msgpack.unpackb(encode_command(Cancel(task_id="t1", term=3)))

        assert wire == {"v": SCHEMA_VERSION, "op": "cancel", "task_id": "t1", "term": 3}

    def test_tuple_payload_decodes_as_list(self) -> None:
        """Opaque values come back as msgpack decodes them: a tuple becomes a list."""
        cmd = Submit(task_id="t1", payload=(1, (2, 3)), submitted_at=0.0)

        decoded = decode_command(encode_command(cmd))

        assert isinstance(decoded, Submit)
        assert decoded.payload == [1, [2, 3]]

    def test_int_times_decode_as_float(self) -> None:
        """Times and costs are read as float, so the state has one type per field."""
        cmd = decode_command(encode_command(Expire(now=5, term=1)))

        assert isinstance(cmd, Expire)
        assert (cmd.now, type(cmd.now)) == (5.0, float)

    def test_missing_optional_fields_take_defaults(self) -> None:
        """An optional field may be left out of the map."""
        data = msgpack.packb(
            {"v": 1, "op": "submit", "task_id": "t", "payload": None, "submitted_at": 0}
        )

        assert Submit(task_id="t", payload=None, submitted_at=0.0) == decode_command(data)

    @pytest.mark.parametrize(
        ("data", "detail"),
        [
            (b"", "not msgpack"),
            (b"\xc1", "not msgpack"),
            (msgpack.packb([1, "cancel"]), "expected a map"),
            (msgpack.packb({"v": 2, "op": "cancel", "task_id": "t", "term": 1}), "version"),
            (msgpack.packb({"v": True, "op": "cancel", "task_id": "t", "term": 1}), "version"),
            (msgpack.packb({"op": "cancel", "task_id": "t", "term": 1}), "version"),
            (msgpack.packb({"v": 1, "op": "reboot"}), "unknown op"),
            (msgpack.packb({"v": 1, "op": 3}), "unknown op"),
            (msgpack.packb({"v": 1, "op": "cancel", "task_id": "t"}), "missing fields"),
            (msgpack.packb({"v": 1, "op": "cancel", "task_id": "t", "term": 1, "x": 0}), "unknown"),
            (msgpack.packb({"v": 1, "op": "cancel", "task_id": "", "term": 1}), "non-empty"),
            (msgpack.packb({"v": 1, "op": "cancel", "task_id": "t", "term": -1}), "int >= 0"),
            (msgpack.packb({"v": 1, "op": "cancel", "task_id": "t", "term": True}), "int >= 0"),
            (msgpack.packb({"v": 1, "op": "cancel", "task_id": "t", "term": 1.0}), "int >= 0"),
            (msgpack.packb({"v": 1, "op": "new_term", "term": 0, "leader": "a"}), "int >= 1"),
            (msgpack.packb({"v": 1, "op": "expire", "now": float("nan"), "term": 1}), "finite"),
            (msgpack.packb({"v": 1, "op": "expire", "now": "soon", "term": 1}), "finite"),
            (
                msgpack.packb(
                    {
                        "v": 1,
                        "op": "account",
                        "agent": "a",
                        "tokens_in": 1,
                        "tokens_out": 1,
                        "cost": -1,
                    }
                ),
                ">= 0",
            ),
            (
                msgpack.packb({"v": 1, "op": "set_plan", "term": 1, "plan": [float("inf")]}),
                "non-finite",
            ),
            (
                msgpack.packb(
                    {"v": 1, "op": "set_plan", "term": 1, "plan": msgpack.ExtType(5, b"")}
                ),
                "ext type",
            ),
            (
                msgpack.packb({"v": 1, "op": "set_plan", "term": 1, "plan": {1: "x"}}),
                "not msgpack",
            ),
            (
                msgpack.packb(
                    {"v": 1, "op": "set_plan", "term": 1, "plan": _nested(MAX_VALUE_DEPTH + 1)}
                ),
                "nested deeper",
            ),
            (encode_command(Cancel(task_id="t", term=1)) + b"\x00", "not msgpack"),
        ],
    )
    def test_malformed_bytes_raise_malformed_command(self, data: bytes, detail: str) -> None:
        """Bytes that are not a command of this schema raise MalformedCommand, naming why."""
        with pytest.raises(MalformedCommand) as info:
            decode_command(data)

        assert detail in str(info.value)

    @pytest.mark.parametrize(
        "cmd",
        [
            Submit(task_id=1, payload=None, submitted_at=0.0),  # type: ignore[arg-type]
            Submit(task_id="t", payload={1, 2}, submitted_at=0.0),
            Submit(task_id="t", payload=None, submitted_at=0.0, max_attempts=0),
            Submit(task_id="t", payload={1: "int key"}, submitted_at=0.0),
            Complete(task_id="t", worker="w", result=None, at=0.0, cost=float("nan")),
            Assign(task_id="t", worker="", term=1, at=0.0, lease_until=1.0),
        ],
    )
    def test_bad_fields_refuse_to_encode(self, cmd: Command) -> None:
        """A command that would not decode does not encode either."""
        with pytest.raises(MalformedCommand):
            encode_command(cmd)

    def test_non_command_refuses_to_encode(self) -> None:
        """Only ledger commands encode."""
        with pytest.raises(TypeError):
            encode_command("cancel t1")  # type: ignore[arg-type]

    def test_value_at_max_depth_is_accepted(self) -> None:
        """Values nested exactly MAX_VALUE_DEPTH deep are plain data."""
        cmd = SetPlan(term=1, plan=_nested(MAX_VALUE_DEPTH))

        assert cmd == decode_command(encode_command(cmd))


# ----------------------------------------------------------------------------- apply


class TestApply:
    @pytest.mark.parametrize(
        "data",
        [b"", b"\xff\xff", b"\x93\x01\x02", msgpack.packb({"v": 1, "op": "submit"}), b"\x00" * 100],
    )
    def test_malformed_bytes_refused_without_state_change(self, data: bytes) -> None:
        """Bytes that do not decode are Refused(Malformed) and change nothing."""
        led = ledger(submit(), assign())
        before = led.snapshot()

        result = led.apply(Entry(term=1, index=9, data=data))

        assert isinstance(result, Refused)
        assert (result.op, type(result.reason)) == (None, Malformed)
        assert before == led.snapshot()

    def test_noop_entry_refused_without_state_change(self) -> None:
        """A non-NORMAL entry is not a command."""
        led = ledger(submit())
        before = led.snapshot()

        result = led.apply(Entry(term=2, index=3, kind=EntryKind.NOOP))

        assert isinstance(result, Refused)
        assert before == led.snapshot()

    def test_normal_entry_applies_its_command(self) -> None:
        """apply(entry) applies the command in entry.data."""
        led = TaskLedger()

        result = led.apply(Entry(term=1, index=1, data=encode_command(submit())))

        assert Accepted("submit", led.task("t1")) == result

    def test_execute_refuses_nothing_it_cannot_encode(self) -> None:
        """execute raises for a command that does not encode, before touching the state."""
        led = ledger()

        with pytest.raises(MalformedCommand):
            led.execute(Submit(task_id="", payload=None, submitted_at=0.0))

        assert ledger() == led


# ----------------------------------------------------------------------------- fencing


class TestFencing:
    @pytest.mark.parametrize("op", FENCED)
    def test_older_term_refused_for_every_orchestrator_command(self, op: str) -> None:
        """A fenced command of a term older than the fencing term is StaleTerm, no change."""
        led = ledger(submit(), assign(), NewTerm(term=3, leader="b"))

        result = apply_unchanged(led, FENCED[op](2))

        assert Refused(op, StaleTerm(2, 3)) == result

    @pytest.mark.parametrize("op", [op for op in FENCED if op != "new_term"])
    def test_same_term_accepted(self, op: str) -> None:
        """A fenced command of the fencing term is judged on its merits (accepted here)."""
        led = ledger(submit(), assign())

        result = led.execute(FENCED[op](1))

        assert isinstance(result, Accepted), describe(result)

    @pytest.mark.parametrize("op", [op for op in FENCED if op != "new_term"])
    def test_newer_term_raises_fencing_term_and_forgets_leader(self, op: str) -> None:
        """An accepted command of a newer term raises the fencing term; the leader is unknown."""
        led = ledger(submit(), assign())

        led.execute(FENCED[op](4))

        assert (led.fencing_term, led.leader) == (4, None)

    def test_refused_newer_term_does_not_raise_fencing_term(self) -> None:
        """A refusal changes nothing, not even the fencing term."""
        led = ledger(submit())

        apply_unchanged(led, Cancel(task_id="nope", term=9))

        assert led.fencing_term == 1

    @pytest.mark.parametrize(
        ("cmd", "expected"),
        [
            (NewTerm(term=2, leader="b"), Accepted("new_term")),
            (NewTerm(term=1, leader="a"), Duplicate("new_term")),
            (NewTerm(term=1, leader="b"), Refused("new_term", StaleTerm(1, 1))),
        ],
    )
    def test_new_term_outcomes(self, cmd: NewTerm, expected: Result) -> None:
        """NewTerm: newer accepted; same term: same leader duplicate, other leader refused."""
        led = ledger()

        assert expected == led.execute(cmd)

    def test_new_term_records_leader(self) -> None:
        """An accepted NewTerm sets the fencing term and the leader."""
        led = ledger(NewTerm(term=5, leader="c"))

        assert (led.fencing_term, led.leader) == (5, "c")

    def test_new_term_names_leader_of_term_raised_by_another_command(self) -> None:
        """NewTerm of the fencing term is accepted when that term's leader is not yet known."""
        led = ledger(SetPlan(term=2, plan="p"))

        result = led.execute(NewTerm(term=2, leader="b"))

        assert (Accepted("new_term"), "b") == (result, led.leader)

    def test_worker_commands_not_fenced(self) -> None:
        """Submit, Complete (with an old term) and Account are accepted after a new term."""
        led = ledger(submit(), assign(), NewTerm(term=7, leader="z"))

        results = [
            led.execute(submit("t2")),
            led.execute(Complete(task_id="t1", worker="w1", result="r", at=1.0, term=1)),
            led.execute(Account(agent="w1", tokens_in=1, tokens_out=1, cost=0.0)),
        ]

        assert [isinstance(r, Accepted) for r in results] == [True, True, True]


# ----------------------------------------------------------------------------- submit


class TestSubmit:
    def test_new_task_pending(self) -> None:
        """A new task is pending with no attempts and the config's max attempts."""
        led = ledger(config=LedgerConfig(max_attempts=4))

        result = led.execute(submit(at=2.0))

        task = get(led)
        assert result == Accepted("submit", task)
        assert (task.state, task.attempts, task.max_attempts) == (TaskState.PENDING, 0, 4)

    def test_same_task_id_duplicate(self) -> None:
        """Resubmitting a task id returns the existing task, even with another payload."""
        led = ledger(submit(), assign())
        existing = led.task("t1")

        result = apply_unchanged(led, Submit(task_id="t1", payload="other", submitted_at=5.0))

        assert Duplicate("submit", existing) == result

    def test_same_idempotency_key_duplicate(self) -> None:
        """A new task id with a known idempotency key returns the task that has the key."""
        led = ledger(submit("t1", idempotency_key="k"))

        result = apply_unchanged(led, submit("t2", idempotency_key="k"))

        assert (Duplicate("submit", led.task("t1")), 1) == (result, led.counts().total)

    def test_other_idempotency_key_accepted(self) -> None:
        """Different keys make different tasks."""
        led = ledger(submit("t1", idempotency_key="k1"))

        led.execute(submit("t2", idempotency_key="k2"))

        assert led.counts().total == 2

    def test_max_attempts_from_submit(self) -> None:
        """A Submit's max_attempts overrides the config's."""
        led = ledger(submit(max_attempts=7))

        assert get(led).max_attempts == 7


# ----------------------------------------------------------------------------- assign


class TestAssign:
    @pytest.mark.parametrize(
        ("start", "cmd", "expected"),
        [
            (TaskState.PENDING, assign(worker="w2"), None),
            (TaskState.ASSIGNED, assign(worker="w2", at=5.0), LeaseHeld("t1", "w1", 10.0)),
            (TaskState.ASSIGNED, assign(worker="w2", at=10.0), None),
            (TaskState.ASSIGNED, assign(worker="w1", at=5.0), None),
            (TaskState.COMPLETED, assign(), TaskFinished("t1", TaskState.COMPLETED)),
            (TaskState.FAILED, assign(), TaskFinished("t1", TaskState.FAILED)),
            (TaskState.CANCELLED, assign(), TaskFinished("t1", TaskState.CANCELLED)),
            (TaskState.PENDING, assign("t0"), UnknownTask("t0")),
            (TaskState.PENDING, assign(lease=0.0), BadLease("t1", 0.0, 0.0)),
        ],
        ids=[
            "pending",
            "held_unexpired",
            "held_expired_at_boundary",
            "same_worker_renews",
            "completed",
            "failed",
            "cancelled",
            "unknown",
            "bad_lease",
        ],
    )
    def test_outcome_by_state(self, start: TaskState, cmd: Assign, expected: Reason | None) -> None:
        """Assign is accepted (None) or refused with the reason; a refusal changes nothing."""
        led = IN_STATE[start]()

        if expected is None:
            assert led.execute(cmd) == Accepted("assign", get(led))
        else:
            assert apply_unchanged(led, cmd) == Refused("assign", expected)

    def test_accepted_records_assignment(self) -> None:
        """An accepted Assign records worker, term, lease and one more attempt."""
        led = ledger(
            submit(), NewTerm(term=2, leader="b"), assign(worker="w2", term=2, at=3.0, lease=4.0)
        )
        task = get(led)

        assert (
            task.state,
            task.worker,
            task.term,
            task.assigned_at,
            task.lease_until,
            task.attempts,
        ) == (TaskState.ASSIGNED, "w2", 2, 3.0, 7.0, 1)

    def test_renewal_not_counted_as_attempt(self) -> None:
        """Assigning again to the holder renews its lease without another attempt."""
        led = ledger(submit(), assign(), assign(at=5.0, lease=20.0))

        assert (get(led).attempts, get(led).lease_until) == (1, 25.0)

    def test_takeover_over_max_attempts_refused(self) -> None:
        """Taking over an expired lease is refused when it would exceed max attempts."""
        led = ledger(submit(max_attempts=1), assign())

        result = apply_unchanged(led, assign(worker="w2", at=50.0))

        assert Refused("assign", AttemptsExhausted("t1", 1)) == result


# ----------------------------------------------------------------------------- progress


class TestProgress:
    def test_records_note_and_extends_lease(self) -> None:
        """Progress keeps the note and extends the lease to at + its original length."""
        led = ledger(submit(), assign(at=0.0, lease=10.0))

        led.execute(Progress(task_id="t1", worker="w1", term=1, note="half", at=8.0))

        task = get(led)
        assert ((ProgressNote("w1", 1, "half", 8.0),), 18.0) == (task.progress, task.lease_until)

    def test_never_shortens_lease(self) -> None:
        """A progress report older than the lease keeps the lease."""
        led = ledger(submit(), assign(at=4.0, lease=10.0))

        led.execute(Progress(task_id="t1", worker="w1", term=1, note="late", at=2.0))

        assert get(led).lease_until == 14.0

    def test_notes_capped_newest_kept(self) -> None:
        """Only the newest max_progress_notes records are kept."""
        led = ledger(submit(), assign(lease=100.0), config=LedgerConfig(max_progress_notes=2))

        for i in range(5):
            led.execute(Progress(task_id="t1", worker="w1", term=1, note=str(i), at=float(i)))

        assert [n.note for n in get(led).progress] == ["3", "4"]

    @pytest.mark.parametrize(
        ("start", "worker", "expected"),
        [
            (TaskState.PENDING, "w1", NotAssigned("t1", "w1", None)),
            (TaskState.ASSIGNED, "w2", NotAssigned("t1", "w2", "w1")),
            (TaskState.COMPLETED, "w1", TaskFinished("t1", TaskState.COMPLETED)),
            (TaskState.CANCELLED, "w1", TaskFinished("t1", TaskState.CANCELLED)),
        ],
    )
    def test_refused_unless_held(self, start: TaskState, worker: str, expected: Reason) -> None:
        """Progress is refused for a task the worker does not hold."""
        led = IN_STATE[start]()

        result = apply_unchanged(
            led, Progress(task_id="t1", worker=worker, term=1, note="n", at=1.0)
        )

        assert Refused("progress", expected) == result


# ----------------------------------------------------------------------------- complete


class TestComplete:
    @pytest.mark.parametrize("start", [TaskState.PENDING, TaskState.ASSIGNED, TaskState.FAILED])
    def test_first_completion_recorded(self, start: TaskState) -> None:
        """A result completes a pending, assigned or failed task and clears its assignment."""
        led = IN_STATE[start]()

        result = led.execute(complete(worker="w9", result={"answer": 42}, at=3.0))

        task = get(led)
        assert isinstance(result, Accepted)
        assert (
            task.state,
            task.result,
            task.completed_by,
            task.completed_at,
            task.worker,
        ) == (TaskState.COMPLETED, {"answer": 42}, "w9", 3.0, None)

    def test_second_completion_duplicate_first_wins(self) -> None:
        """A later completion is a Duplicate and never changes the recorded result."""
        led = ledger(submit(), assign(), complete(result="first"))

        result = apply_unchanged(led, complete(worker="w2", result="second", at=9.0))

        assert (
            result.duplicate,
            get(led).result,
            get(led).completed_by,
        ) == (True, "first", "w1")

    def test_buffered_completion_from_previous_assignment_accepted_once(self) -> None:
        """A result from an expired, since-moved assignment is accepted once, then duplicates."""
        led = ledger(
            submit(),
            assign(worker="w1", at=0.0, lease=10.0),
            NewTerm(term=2, leader="b"),
            Expire(now=15.0, term=2),
            assign(worker="w2", term=2, at=15.0),
        )

        first = led.execute(Complete(task_id="t1", worker="w1", result="old", at=16.0, term=1))
        second = led.execute(complete(worker="w2", result="new", at=17.0))
        again = led.execute(Complete(task_id="t1", worker="w1", result="old", at=16.0, term=1))

        assert (Accepted, Duplicate, Duplicate) == (type(first), type(second), type(again))
        assert (
            get(led).result,
            get(led).completed_by,
            get(led).completed_term,
        ) == ("old", "w1", 1)

    def test_cancelled_refused(self) -> None:
        """A result for a cancelled task is refused."""
        led = IN_STATE[TaskState.CANCELLED]()

        result = apply_unchanged(led, complete())

        assert Refused("complete", TaskFinished("t1", TaskState.CANCELLED)) == result

    def test_unknown_refused(self) -> None:
        """A result for a task never submitted is refused."""
        assert Refused("complete", UnknownTask("t1")) == apply_unchanged(ledger(), complete())

    def test_tokens_kept_on_task_not_in_usage(self) -> None:
        """A completion's tokens and cost stay on the task; usage counts Account only."""
        led = ledger(submit(), complete())

        assert ((5, 0.5), Usage()) == (
            (get(led).tokens, get(led).cost),
            led.usage().total,
        )


# ----------------------------------------------------------------------------- fail / retry


class TestRetryPolicy:
    def test_retryable_with_attempts_left_pending(self) -> None:
        """A retryable failure with attempts left sends the task back to pending."""
        led = ledger(submit(), assign(), fail(retryable=True))

        task = get(led)
        assert (
            task.state,
            task.attempts,
            task.error,
            task.worker,
        ) == (TaskState.PENDING, 1, "boom", None)

    def test_retryable_attempts_exhausted_failed(self) -> None:
        """The failure of the last allowed attempt fails the task."""
        led = ledger(
            submit(max_attempts=2),
            assign(),
            fail(retryable=True),
            assign(worker="w2"),
            fail(worker="w2", retryable=True),
        )

        assert (state(led), get(led).attempts) == (TaskState.FAILED, 2)

    def test_non_retryable_failed(self) -> None:
        """A non-retryable failure fails the task at once."""
        led = ledger(submit(max_attempts=5), assign(), fail(retryable=False))

        assert (state(led), get(led).error) == (TaskState.FAILED, "boom")

    @pytest.mark.parametrize(
        ("start", "worker", "expected"),
        [
            (TaskState.ASSIGNED, "w2", NotAssigned("t1", "w2", "w1")),
            (TaskState.PENDING, "w1", NotAssigned("t1", "w1", None)),
            (TaskState.FAILED, "w1", TaskFinished("t1", TaskState.FAILED)),
            (TaskState.COMPLETED, "w1", TaskFinished("t1", TaskState.COMPLETED)),
        ],
    )
    def test_refused_unless_held(self, start: TaskState, worker: str, expected: Reason) -> None:
        """A failure from a worker that does not hold the task never undoes anything."""
        led = IN_STATE[start]()

        result = apply_unchanged(led, fail(worker=worker, retryable=True))

        assert Refused("fail", expected) == result


# ----------------------------------------------------------------------------- leases


class TestLeases:
    def test_expire_releases_only_expired(self) -> None:
        """Expire sends back tasks whose lease ended by now (inclusive), not the others."""
        led = ledger(
            submit("t1"),
            submit("t2"),
            submit("t3"),
            assign("t1", lease=5.0),
            assign("t2", lease=10.0),
            assign("t3", lease=11.0),
        )

        result = led.execute(Expire(now=10.0, term=1))

        assert (Accepted("expire", released=("t1", "t2")), ["t3"]) == (
            result,
            [t.task_id for t in led.assigned()],
        )

    def test_expire_last_attempt_fails(self) -> None:
        """An expired lease on the last allowed attempt fails the task."""
        led = ledger(submit(max_attempts=1), assign())

        result = led.execute(Expire(now=10.0, term=1))

        assert (Accepted("expire", failed=("t1",)), "lease expired") == (
            result,
            get(led).error,
        )

    def test_worker_down_releases_its_tasks(self) -> None:
        """WorkerDown sends back every task of that worker, whatever its lease."""
        led = ledger(submit("t1"), submit("t2"), assign("t1", "w1"), assign("t2", "w2"))

        result = led.execute(WorkerDown(worker="w1", term=1))

        assert (Accepted("worker_down", released=("t1",)), TaskState.ASSIGNED) == (
            result,
            state(led, "t2"),
        )

    def test_released_task_reassigned(self) -> None:
        """After a release the next Assign hands the task to another worker."""
        led = ledger(submit(), assign(), WorkerDown(worker="w1", term=1), assign(worker="w2"))

        assert (
            (get(led).worker, get(led).attempts),
            led.by_worker("w1"),
        ) == (("w2", 2), ())

    def test_expire_with_nothing_expired_accepted_unchanged(self) -> None:
        """A sweep that finds nothing is accepted and changes nothing."""
        led = ledger(submit(), assign())

        result = apply_unchanged(led, Expire(now=1.0, term=1))

        assert Accepted("expire") == result


# ----------------------------------------------------------------------------- cancel


class TestCancel:
    @pytest.mark.parametrize(
        ("start", "expected"),
        [
            (TaskState.PENDING, Accepted),
            (TaskState.ASSIGNED, Accepted),
            (TaskState.CANCELLED, Duplicate),
            (TaskState.COMPLETED, Refused),
            (TaskState.FAILED, Refused),
        ],
    )
    def test_outcome_by_state(self, start: TaskState, expected: type) -> None:
        """Cancel takes pending and assigned tasks; it is a duplicate or refused otherwise."""
        led = IN_STATE[start]()

        result = led.execute(Cancel(task_id="t1", term=1))

        assert (expected, TaskState.CANCELLED if expected is Accepted else start) == (
            type(result),
            state(led),
        )

    def test_unknown_refused(self) -> None:
        """Cancelling a task never submitted is refused."""
        assert Refused("cancel", UnknownTask("t1")) == apply_unchanged(
            ledger(), Cancel(task_id="t1", term=1)
        )

    def test_cancelled_task_leaves_worker(self) -> None:
        """A cancelled task is no longer listed under its worker."""
        led = ledger(submit(), assign(), Cancel(task_id="t1", term=1))

        assert led.by_worker("w1") == ()


# ----------------------------------------------------------------------------- orchestrator


class TestFactsAndPlan:
    def test_set_facts_and_plan_replace(self) -> None:
        """SetFacts and SetPlan replace the previous values."""
        led = ledger(
            SetFacts(term=1, facts=["a"]),
            SetFacts(term=1, facts=["a", "b"]),
            SetPlan(term=1, plan={"steps": [1]}),
        )

        assert (led.facts, led.plan) == (["a", "b"], {"steps": [1]})


# ----------------------------------------------------------------------------- accounting


class TestAccounting:
    def test_totals_per_agent_and_task(self) -> None:
        """Account sums tokens and cost per agent, per task and overall."""
        led = ledger(
            Account(agent="planner", tokens_in=10, tokens_out=5, cost=0.5),
            Account(agent="w1", tokens_in=1, tokens_out=2, cost=0.25, task_id="t1"),
            Account(agent="w1", tokens_in=3, tokens_out=4, cost=0.25, task_id="t1"),
            Account(agent="w2", tokens_in=1, tokens_out=1, cost=0.0, task_id="t2"),
        )

        usage = led.usage()
        assert (
            {"planner": Usage(10, 5, 0.5), "w1": Usage(4, 6, 0.5), "w2": Usage(1, 1, 0.0)},
            {"t1": Usage(4, 6, 0.5), "t2": Usage(1, 1, 0.0)},
            Usage(15, 12, 1.0),
        ) == (usage.agents, usage.tasks, usage.total)

    def test_same_key_counted_once(self) -> None:
        """A retried Account with the same key is a Duplicate and not counted again."""
        cmd = Account(agent="w1", tokens_in=1, tokens_out=1, cost=0.1, key="call-7")
        led = ledger(cmd)

        result = apply_unchanged(led, cmd)

        assert (Duplicate("account"), Usage(1, 1, 0.1)) == (result, led.usage().total)

    def test_usage_survives_snapshot(self) -> None:
        """Usage travels in the snapshot, so it survives failover."""
        led = ledger(
            Account(agent="w1", tokens_in=1, tokens_out=2, cost=0.3, task_id="t1", key="k")
        )
        other = TaskLedger()

        other.restore(led.snapshot())

        assert (led.usage(), Duplicate("account")) == (
            other.usage(),
            other.execute(Account(agent="w1", tokens_in=1, tokens_out=2, cost=0.3, key="k")),
        )


# ----------------------------------------------------------------------------- queries


class TestQueries:
    def test_lists_in_submission_order_by_state(self) -> None:
        """pending/assigned/completed/failed/cancelled list tasks in submission order."""
        led = ledger(
            *(submit(f"t{i}") for i in range(6)),
            assign("t4", "w1"),
            assign("t1", "w1"),
            complete("t3"),
            assign("t2", "w2"),
            fail("t2", "w2", retryable=False),
            Cancel(task_id="t5", term=1),
        )

        assert tuple(
            [t.task_id for t in tasks]
            for tasks in (
                led.pending(),
                led.assigned(),
                led.completed(),
                led.failed(),
                led.cancelled(),
                led.by_worker("w1"),
            )
        ) == (["t0"], ["t1", "t4"], ["t3"], ["t2"], ["t5"], ["t1", "t4"])
        assert TaskCounts(1, 2, 1, 1, 1) == led.counts()

    @pytest.mark.parametrize(
        ("cmds", "expected"),
        [
            ((), None),
            ((submit(at=3.0),), 3.0),
            ((submit(at=3.0), assign(at=4.0)), 4.0),
            (
                (
                    submit(at=3.0),
                    assign(at=4.0),
                    Progress(task_id="t1", worker="w1", term=1, note="", at=6.0),
                ),
                6.0,
            ),
            ((submit(at=3.0), complete(at=7.0)), 7.0),
            ((submit(at=3.0), complete(at=2.0)), 3.0),
            (
                (submit(at=3.0), assign(at=4.0), Expire(now=50.0, term=1), SetPlan(term=1, plan=1)),
                4.0,
            ),
        ],
        ids=[
            "empty",
            "submit",
            "assign",
            "progress",
            "complete",
            "never_back",
            "sweep_is_not_progress",
        ],
    )
    def test_last_progress_at(self, cmds: tuple[Command, ...], expected: float | None) -> None:
        """last_progress_at is the latest time of an accepted Submit/Assign/Progress/Complete."""
        assert expected == ledger(*cmds).last_progress_at


# ----------------------------------------------------------------------------- snapshot


class TestSnapshot:
    def test_round_trip_equal(self) -> None:
        """restore(snapshot()) gives an equal ledger, tasks, queries and all."""
        led = ledger(
            submit("t1", idempotency_key="k1"),
            submit("t2"),
            assign("t1"),
            Progress(task_id="t1", worker="w1", term=1, note="n", at=1.0),
            complete("t2", result=[b"bytes", {"x": 1.5}]),
            SetFacts(term=1, facts={"f": [1]}),
            SetPlan(term=1, plan="p"),
            Account(agent="a", tokens_in=1, tokens_out=2, cost=0.5, key="c1"),
            config=LedgerConfig(max_attempts=9, max_progress_notes=3),
        )
        other = TaskLedger()

        other.restore(led.snapshot())

        assert led == other
        assert (led.tasks(), led.config, led.fencing_term, led.leader) == (
            other.tasks(),
            other.config,
            other.fencing_term,
            other.leader,
        )
        assert Duplicate("submit", led.task("t1")) == other.execute(
            submit("t3", idempotency_key="k1")
        )

    def test_restore_empty_bytes_empties(self) -> None:
        """restore(b"") is the empty state, keeping this ledger's config."""
        config = LedgerConfig(max_attempts=2)
        led = ledger(submit(), config=config)

        led.restore(b"")

        assert (TaskLedger(config), config) == (led, led.config)

    @pytest.mark.parametrize(
        "data",
        [
            b"\xc1",
            msgpack.packb([1]),
            msgpack.packb({"v": 99}),
            msgpack.packb({"v": 1, "tasks": []}),
        ],
    )
    def test_bad_snapshot_raises_and_keeps_state(self, data: bytes) -> None:
        """A snapshot that does not decode raises MalformedSnapshot; the ledger is unchanged."""
        led = ledger(submit())
        before = led.snapshot()

        with pytest.raises(MalformedSnapshot):
            led.restore(data)

        assert before == led.snapshot()


# ----------------------------------------------------------------------------- describe


class TestDescribe:
    @pytest.mark.parametrize(
        ("result", "expected"),
        [
            (Accepted("new_term"), "accepted new_term"),
            (
                Accepted("expire", released=("t1", "t2"), failed=("t3",)),
                "accepted expire released=t1,t2 failed=t3",
            ),
            (Duplicate("account"), "duplicate account"),
            (Refused("cancel", StaleTerm(3, 5)), "refused cancel: stale_term 3 < 5"),
            (Refused(None, Malformed("bad")), "refused ?: malformed bad"),
            (
                Refused("assign", LeaseHeld("t1", "w1", 10.0)),
                "refused assign: lease_held t1 by w1 until 10.0",
            ),
            (
                Refused("fail", NotAssigned("t1", "w2", None)),
                "refused fail: not_assigned t1 to w2 (assignee None)",
            ),
            (
                Refused("assign", BadLease("t1", 1.0, 1.0)),
                "refused assign: bad_lease t1 until 1.0 <= at 1.0",
            ),
            (
                Refused("assign", AttemptsExhausted("t1", 3)),
                "refused assign: attempts_exhausted t1 after 3",
            ),
            (Refused("cancel", UnknownTask("t1")), "refused cancel: unknown_task t1"),
            (
                Refused("complete", TaskFinished("t1", TaskState.CANCELLED)),
                "refused complete: task_finished t1 cancelled",
            ),
        ],
    )
    def test_one_line_per_result(self, result: Result, expected: str) -> None:
        """describe gives a compact line naming the outcome, op, task and reason."""
        assert expected == describe(result)

    def test_accepted_task_named_with_state(self) -> None:
        """An accepted task command names the task and its new state."""
        assert describe(ledger(submit()).execute(assign())) == "accepted assign t1 assigned"
