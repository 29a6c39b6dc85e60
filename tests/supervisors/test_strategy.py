"""The restart decision, table by table (OTP's supervisor semantics)."""

from __future__ import annotations

import random
from collections.abc import Sequence

import pytest
from hypothesis import given
from hypothesis import strategies as st

from runtime.reasons import (
    Abnormal,
    Crashed,
    ExitReason,
    Killed,
    NoConnection,
    Normal,
    Shutdown,
)
from supervisors.spec import AutoShutdown, Backoff, ChildSpec, Restart, Strategy, SupFlags
from supervisors.strategy import (
    BackoffState,
    ChildExited,
    ChildState,
    History,
    Plan,
    decide,
    should_restart,
)

P, TR, TE = Restart.PERMANENT, Restart.TRANSIENT, Restart.TEMPORARY
CRASH = Crashed("RuntimeError", "boom")

REASONS: dict[str, ExitReason] = {
    "normal": Normal(),
    "shutdown": Shutdown(),
    "shutdown_detail": Shutdown("x"),
    "killed": Killed(),
    "crashed": CRASH,
    "abnormal": Abnormal("bad_input"),
    "noconnection": NoConnection("b@host"),
}
ORDERLY = {"normal", "shutdown", "shutdown_detail"}


def kids(spec: str, **overrides: Restart) -> list[ChildState]:
    """Permanent running children named by the characters of ``spec``; override restart."""
    return [ChildState(c, overrides.get(c, P)) for c in spec]


def exit_(
    children: Sequence[ChildState],
    id: str,
    reason: ExitReason = CRASH,
    flags: SupFlags | None = None,
    history: History | None = None,
    now: float = 0.0,
    rng: random.Random | None = None,
) -> Plan:
    """Decide on child ``id`` exiting, with roomy defaults (intensity 100)."""
    return decide(
        flags if flags is not None else SupFlags(intensity=100),
        children,
        ChildExited(id, reason),
        history if history is not None else History(),
        now,
        rng if rng is not None else random.Random(0),
    )


def outcome(plan: Plan) -> tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]]:
    """(stop, start, forget) of a plan."""
    return plan.stop, plan.start, plan.forget


# Every restart type x every exit reason: restarted?, and the log label (OTP do_restart).
RESTART_TABLE = [
    (restart, name, restarted, label)
    for restart in Restart
    for name in REASONS
    for restarted, label in [
        {
            (P, True): (True, "child_terminated"),
            (P, False): (True, "child_terminated"),
            (TR, True): (False, "child_exited"),
            (TR, False): (True, "child_terminated"),
            (TE, True): (False, "child_exited"),
            (TE, False): (False, "child_terminated"),
        }[restart, name in ORDERLY]
    ]
]


class TestRestartType:
    """What happens to the exited child, by restart type and exit reason."""

    @pytest.mark.parametrize(
        ("restart", "reason", "restarted", "label"),
        [pytest.param(*row, id=f"{row[0].value}_{row[1]}") for row in RESTART_TABLE],
    )
    def test_exit_outcome(self, restart: Restart, reason: str, restarted: bool, label: str) -> None:
        """The child is restarted, or its spec forgotten, exactly as OTP's do_restart."""
        plan = exit_([ChildState("a", restart)], "a", REASONS[reason])

        expected = ((), ("a",), ()) if restarted else ((), (), ("a",))
        assert (outcome(plan), plan.label, plan.shutdown_self) == (expected, label, None)
        assert should_restart(restart, REASONS[reason]) == restarted

    def test_killed_abnormal_for_transient(self) -> None:
        """Killed is abnormal: a transient child killed by brutal_kill is restarted."""
        assert should_restart(TR, Killed())

    def test_stale_unknown_id(self) -> None:
        """An exit of an unknown child yields an empty plan and keeps the history."""
        history = History(restarts=(1.0,))

        plan = exit_(kids("ab"), "zz", history=history)

        assert plan == Plan(history=history, label="stale_exit")

    def test_stale_not_running(self) -> None:
        """An exit of a child that is not running yields an empty plan."""
        children = [ChildState("a"), ChildState("b", running=False)]

        plan = exit_(children, "b")

        assert plan == Plan(history=History(), label="stale_exit")

    def test_duplicate_ids_rejected(self) -> None:
        """decide refuses children with duplicate ids."""
        with pytest.raises(ValueError, match="duplicate child ids"):
            exit_(kids("aba"), "a")

    def test_from_spec_copies_fields(self) -> None:
        """ChildState.from_spec copies id, restart, significance and backoff."""
        backoff = Backoff(1.0, 2.0)
        spec = ChildSpec("a", print, restart=TR, significant=True, backoff=backoff)

        state = ChildState.from_spec(spec, running=False)

        assert state == ChildState("a", TR, True, False, backoff)


def flags(strategy: Strategy) -> SupFlags:
    """Flags with ``strategy`` and a roomy intensity."""
    return SupFlags(strategy=strategy, intensity=100)


class TestOneForOne:
    """one_for_one: only the exited child is restarted."""

    @pytest.mark.parametrize("exited", ["a", "b", "c"])
    def test_only_exited_restarted(self, exited: str) -> None:
        """Only the exited child is started; no sibling is stopped."""
        plan = exit_(kids("abc"), exited, flags=flags(Strategy.ONE_FOR_ONE))

        assert outcome(plan) == ((), (exited,), ())

    def test_temporary_sibling_untouched(self) -> None:
        """A temporary sibling is neither stopped nor forgotten."""
        plan = exit_(kids("abc", c=TE), "a", flags=flags(Strategy.ONE_FOR_ONE))

        assert outcome(plan) == ((), ("a",), ())


class TestRestForOne:
    """rest_for_one: the exited child and those after it are restarted."""

    @pytest.mark.parametrize(
        ("exited", "stop", "start"),
        [
            pytest.param("a", "dcb", "abcd", id="first"),
            pytest.param("b", "dc", "bcd", id="second"),
            pytest.param("c", "d", "cd", id="third"),
            pytest.param("d", "", "d", id="last"),
        ],
    )
    def test_later_children_restarted(self, exited: str, stop: str, start: str) -> None:
        """Later children stop in reverse order, then restart with the exited one in order."""
        plan = exit_(kids("abcd"), exited, flags=flags(Strategy.REST_FOR_ONE))

        assert outcome(plan) == (tuple(stop), tuple(start), ())

    def test_temporary_bystander_dropped(self) -> None:
        """A temporary child after the exited one is stopped and forgotten, not restarted."""
        plan = exit_(kids("abcd", c=TE), "b", flags=flags(Strategy.REST_FOR_ONE))

        assert outcome(plan) == (("d", "c"), ("b", "d"), ("c",))

    def test_temporary_before_untouched(self) -> None:
        """A temporary child before the exited one is left alone."""
        plan = exit_(kids("abc", a=TE), "b", flags=flags(Strategy.REST_FOR_ONE))

        assert outcome(plan) == (("c",), ("b", "c"), ())

    def test_stopped_later_child_started(self) -> None:
        """A later child whose spec is kept but not running is started again (as OTP)."""
        children = [ChildState("a"), ChildState("b"), ChildState("c", running=False)]

        plan = exit_(children, "a", flags=flags(Strategy.REST_FOR_ONE))

        assert outcome(plan) == (("b",), ("a", "b", "c"), ())

    @pytest.mark.parametrize("restart", [P, TR])
    def test_non_temporary_bystander_restarted(self, restart: Restart) -> None:
        """Permanent and transient bystanders are restarted, whatever their type."""
        plan = exit_(kids("ab", b=restart), "a", flags=flags(Strategy.REST_FOR_ONE))

        assert outcome(plan) == (("b",), ("a", "b"), ())


class TestOneForAll:
    """one_for_all: every child is restarted."""

    @pytest.mark.parametrize(
        ("exited", "stop"),
        [
            pytest.param("a", "dcb", id="first"),
            pytest.param("b", "dca", id="second"),
            pytest.param("d", "cba", id="last"),
        ],
    )
    def test_all_restarted(self, exited: str, stop: str) -> None:
        """Every other child stops in reverse order; all restart in start order."""
        plan = exit_(kids("abcd"), exited, flags=flags(Strategy.ONE_FOR_ALL))

        assert outcome(plan) == (tuple(stop), ("a", "b", "c", "d"), ())

    def test_temporary_bystanders_dropped(self) -> None:
        """Temporary siblings are stopped and forgotten, never restarted."""
        plan = exit_(kids("abcd", a=TE, d=TE), "b", flags=flags(Strategy.ONE_FOR_ALL))

        assert outcome(plan) == (("d", "c", "a"), ("b", "c"), ("a", "d"))

    def test_not_running_child_started(self) -> None:
        """A kept but stopped child is not stopped again, and is started (as OTP)."""
        children = [ChildState("a", running=False), ChildState("b"), ChildState("c")]

        plan = exit_(children, "b", flags=flags(Strategy.ONE_FOR_ALL))

        assert outcome(plan) == (("c",), ("a", "b", "c"), ())

    @pytest.mark.parametrize("reason", ["normal", "shutdown", "crashed"])
    def test_temporary_exit_no_escalation(self, reason: str) -> None:
        """A temporary child's exit only forgets it; siblings keep running."""
        plan = exit_(kids("abc", b=TE), "b", REASONS[reason], flags=flags(Strategy.ONE_FOR_ALL))

        assert outcome(plan) == ((), (), ("b",))

    def test_transient_orderly_no_escalation(self) -> None:
        """A transient child's orderly exit only forgets it; siblings keep running."""
        plan = exit_(kids("abc", b=TR), "b", Normal(), flags=flags(Strategy.ONE_FOR_ALL))

        assert outcome(plan) == ((), (), ("b",))


def run(
    sup: SupFlags, times: Sequence[float], children: Sequence[ChildState] | None = None
) -> list[Plan]:
    """Crash child 'a' at each time in turn, threading the history; return every plan."""
    children = children if children is not None else kids("abc")
    history, plans = History(), []
    for now in times:
        plan = exit_(children, "a", flags=sup, history=history, now=now)
        plans.append(plan)
        history = plan.history
    return plans


def gave_up(plans: Sequence[Plan]) -> list[bool]:
    """Which plans gave up."""
    return [p.shutdown_self is not None for p in plans]


class TestIntensity:
    """More than intensity restarts within period make the supervisor give up."""

    @pytest.mark.parametrize(
        ("intensity", "period", "times", "expected"),
        [
            pytest.param(3, 10, [0, 1, 2, 3], [0, 0, 0, 1], id="fourth_within_period"),
            pytest.param(3, 10, [0, 1, 2, 10.5], [0, 0, 0, 0], id="first_left_window"),
            pytest.param(3, 10, [0, 1, 2, 10], [0, 0, 0, 1], id="exactly_period_old_counts"),
            pytest.param(3, 10, [0, 1, 2, 10.001], [0, 0, 0, 0], id="just_past_period"),
            pytest.param(3, 10, [0, 20, 40, 60, 80], [0, 0, 0, 0, 0], id="spread_out"),
            pytest.param(1, 5, [0, 5], [0, 1], id="default_flags_boundary"),
            pytest.param(1, 5, [0, 5.5], [0, 0], id="default_flags_outside"),
            pytest.param(0, 5, [0], [1], id="intensity_zero"),
            pytest.param(0, 5, [100], [1], id="intensity_zero_late"),
            pytest.param(2, 1, [0, 0, 0], [0, 0, 1], id="same_instant"),
        ],
    )
    def test_gives_up_at_exact_restart(
        self, intensity: int, period: float, times: list[float], expected: list[int]
    ) -> None:
        """The supervisor gives up at exactly the restart that exceeds the intensity."""
        sup = SupFlags(intensity=intensity, period=period)

        assert gave_up(run(sup, times)) == [bool(e) for e in expected]

    def test_give_up_plan(self) -> None:
        """Giving up stops the other running children in reverse order and exits shutdown."""
        children = [ChildState("a"), ChildState("b"), ChildState("c", running=False)]
        children.append(ChildState("d"))

        plan = exit_(children, "b", flags=SupFlags(intensity=0))

        assert (outcome(plan), plan.shutdown_self, plan.label, plan.delay) == (
            (("d", "a"), (), ()),
            Shutdown(),
            "reached_max_restart_intensity",
            0.0,
        )

    def test_history_pruned(self) -> None:
        """The new history keeps only restarts inside the period, plus this one."""
        plans = run(SupFlags(intensity=10, period=10), [0, 5, 12, 16])

        assert plans[-1].history.restarts == (12, 16)

    @pytest.mark.parametrize("restart", [TR, TE])
    def test_orderly_exit_not_counted(self, restart: Restart) -> None:
        """A child that is not restarted does not count toward the intensity."""
        history = History(restarts=(0.0,))

        plan = exit_(kids("a", a=restart), "a", Normal(), SupFlags(), history, now=1.0)

        assert (plan.shutdown_self, plan.history.restarts) == (None, (0.0,))

    def test_any_child_counts(self) -> None:
        """Restarts of different children share one intensity budget."""
        sup = SupFlags(intensity=1, period=5)
        first = exit_(kids("ab"), "a", flags=sup, now=0)

        second = exit_(kids("ab"), "b", flags=sup, history=first.history, now=1)

        assert (first.shutdown_self, second.shutdown_self) == (None, Shutdown())

    def test_transient_abnormal_counts(self) -> None:
        """A transient child's abnormal exit counts and can give up."""
        plan = exit_(kids("a", a=TR), "a", Killed(), SupFlags(intensity=0))

        assert plan.label == "reached_max_restart_intensity"


def sig(id: str, restart: Restart = TR, running: bool = True) -> ChildState:
    """A significant child."""
    return ChildState(id, restart, significant=True, running=running)


A, N, ALL = AutoShutdown.ANY_SIGNIFICANT, AutoShutdown.NEVER, AutoShutdown.ALL_SIGNIFICANT


class TestAutoShutdown:
    """A significant child that exits and is not restarted may stop the supervisor."""

    @pytest.mark.parametrize(
        ("mode", "children", "exited", "reason", "shut_down", "label"),
        [
            pytest.param(N, [sig("a"), sig("b")], "a", "normal", False, "child_exited", id="never"),
            pytest.param(A, [sig("a"), sig("b")], "a", "normal", True, "auto_shutdown", id="any"),
            pytest.param(
                A, [sig("a"), sig("b")], "a", "shutdown_detail", True, "auto_shutdown", id="any_sd"
            ),
            pytest.param(
                A, [sig("a"), sig("b")], "a", "crashed", False, "child_terminated", id="any_abn"
            ),
            pytest.param(
                A, [sig("a", TE)], "a", "crashed", True, "auto_shutdown", id="any_temporary_crash"
            ),
            pytest.param(
                A, [sig("a", TE)], "a", "normal", True, "auto_shutdown", id="any_temporary_normal"
            ),
            pytest.param(
                A,
                [ChildState("a", TE), sig("b")],
                "a",
                "normal",
                False,
                "child_exited",
                id="any_not_significant",
            ),
            pytest.param(
                ALL, [sig("a"), sig("b")], "a", "normal", False, "child_exited", id="all_other_runs"
            ),
            pytest.param(
                ALL,
                [sig("a"), sig("b", running=False)],
                "a",
                "normal",
                True,
                "auto_shutdown",
                id="all_other_stopped",
            ),
            pytest.param(
                ALL,
                [sig("a"), ChildState("b")],
                "a",
                "normal",
                True,
                "auto_shutdown",
                id="all_last_significant",
            ),
            pytest.param(
                ALL,
                [sig("a", TE), sig("b")],
                "a",
                "crashed",
                False,
                "child_terminated",
                id="all_temporary_other_runs",
            ),
            pytest.param(
                ALL,
                [sig("a"), sig("b")],
                "a",
                "killed",
                False,
                "child_terminated",
                id="all_abnormal_restarts",
            ),
            pytest.param(
                ALL,
                [ChildState("a", TR), ChildState("b")],
                "a",
                "normal",
                False,
                "child_exited",
                id="all_not_significant",
            ),
        ],
    )
    def test_auto_shutdown_cases(
        self,
        mode: AutoShutdown,
        children: list[ChildState],
        exited: str,
        reason: str,
        shut_down: bool,
        label: str,
    ) -> None:
        """auto_shutdown fires only for a significant child that is not restarted."""
        plan = exit_(children, exited, REASONS[reason], SupFlags(auto_shutdown=mode))

        assert (plan.shutdown_self is not None, plan.label) == (shut_down, label)

    def test_auto_shutdown_plan(self) -> None:
        """Auto shutdown forgets the child, stops the others in reverse, exits shutdown."""
        children = [ChildState("a"), sig("b"), ChildState("c", running=False), ChildState("d")]

        plan = exit_(children, "b", Shutdown(), SupFlags(auto_shutdown=A))

        assert (outcome(plan), plan.shutdown_self) == ((("d", "a"), (), ("b",)), Shutdown())

    def test_temporary_bystander_no_auto_shutdown(self) -> None:
        """A significant temporary child dropped by a sibling's restart does not trigger it."""
        sup = SupFlags(strategy=Strategy.ONE_FOR_ALL, auto_shutdown=A, intensity=5)

        plan = exit_([ChildState("a"), sig("b", TE)], "a", CRASH, sup)

        assert (outcome(plan), plan.shutdown_self) == ((("b",), ("a",), ("b",)), None)


class TestBackoff:
    """Restart delays: exponential growth, a cap, bounded jitter, reset after a healthy run."""

    @pytest.mark.parametrize(
        ("attempt", "expected"),
        [(0, 1.0), (1, 2.0), (2, 4.0), (3, 8.0), (5, 32.0), (6, 60.0), (7, 60.0), (10_000, 60.0)],
    )
    def test_delay_growth_and_cap(self, attempt: int, expected: float) -> None:
        """Without jitter the delay is initial * multiplier ** attempt, capped at max."""
        backoff = Backoff(initial=1.0, max=60.0, jitter=0.0)

        assert backoff.delay(attempt, random.Random(0)) == expected

    def test_multiplier_one_constant(self) -> None:
        """With multiplier 1 every delay is the initial delay."""
        backoff = Backoff(initial=3.0, max=10.0, multiplier=1.0, jitter=0.0)

        assert [backoff.delay(n, random.Random(0)) for n in range(4)] == [3.0] * 4

    def test_negative_attempt_rejected(self) -> None:
        """A negative attempt number is a ValueError."""
        with pytest.raises(ValueError, match="attempt must be >= 0"):
            Backoff(1.0, 2.0).delay(-1, random.Random(0))

    @given(
        initial=st.floats(0, 100),
        spread=st.floats(0, 1000),
        multiplier=st.floats(1, 10),
        jitter=st.floats(0, 1),
        attempt=st.integers(0, 2000),
        seed=st.integers(0, 2**32),
    )
    def test_jitter_bounds(
        self,
        initial: float,
        spread: float,
        multiplier: float,
        jitter: float,
        attempt: int,
        seed: int,
    ) -> None:
        """The delay lies in [(1 - jitter) * d, d] with d the capped exponential delay."""
        backoff = Backoff(initial, initial + spread, multiplier, jitter)
        base = Backoff(initial, initial + spread, multiplier, 0.0).delay(attempt, random.Random())

        delay = backoff.delay(attempt, random.Random(seed))

        assert (1 - jitter) * base * (1 - 1e-12) <= delay <= base <= backoff.max

    def test_delay_deterministic(self) -> None:
        """The same rng seed gives the same delay; one number is drawn per delay."""
        backoff = Backoff(1.0, 60.0, jitter=0.5)
        rng = random.Random(7)
        expected = 4.0 * (1 - 0.5 * random.Random(7).random())

        assert (backoff.delay(2, rng), rng.getstate()) == (expected, _after_one_draw(7))

    def test_consecutive_restarts_grow(self) -> None:
        """Each consecutive restart of a crashing child waits longer, up to the cap."""
        child = ChildState("a", backoff=Backoff(1.0, 5.0, jitter=0.0, reset_after=100.0))
        history, delays = History(), []
        for now in [0.0, 2.0, 5.0, 10.0, 16.0]:
            plan = exit_([child], "a", history=history, now=now)
            history = plan.history
            delays.append(plan.delay)

        assert (delays, history.backoff["a"]) == ([1.0, 2.0, 4.0, 5.0, 5.0], BackoffState(5, 21.0))

    def test_reset_after_healthy_run(self) -> None:
        """A child that ran reset_after seconds since its restart was due starts over at 0."""
        child = ChildState("a", backoff=Backoff(1.0, 60.0, jitter=0.0, reset_after=10.0))
        history = History(backoff={"a": BackoffState(attempts=4, due_at=50.0)})

        short = exit_([child], "a", history=history, now=59.9)
        long = exit_([child], "a", history=history, now=60.0)

        assert (short.delay, long.delay) == (16.0, 1.0)

    def test_no_backoff_no_delay(self) -> None:
        """A child without backoff restarts at once and the rng is not touched."""
        rng = random.Random(3)
        state = rng.getstate()

        plan = exit_(kids("a"), "a", rng=rng)

        assert (plan.delay, rng.getstate(), plan.history.backoff) == (0.0, state, {})

    def test_delay_applies_to_whole_restart(self) -> None:
        """Under one_for_all the exited child's delay precedes restarting every child."""
        children = [ChildState("a", backoff=Backoff(2.0, 9.0, jitter=0.0)), ChildState("b")]

        plan = exit_(children, "a", flags=flags(Strategy.ONE_FOR_ALL))

        assert (outcome(plan), plan.delay) == ((("b",), ("a", "b"), ()), 2.0)

    def test_backoff_counts_toward_intensity(self) -> None:
        """Restarts waiting on backoff still count: intensity 1 gives up at the second."""
        child = ChildState("a", backoff=Backoff(1.0, 9.0, jitter=0.0))

        plans = run(SupFlags(intensity=1, period=10), [0.0, 3.0], [child])

        assert (gave_up(plans), plans[1].delay) == ([False, True], 0.0)

    def test_forgotten_child_state_dropped(self) -> None:
        """Backoff bookkeeping of a forgotten child is dropped from the history."""
        child = ChildState("a", TR, backoff=Backoff(1.0, 9.0))
        history = History(backoff={"a": BackoffState(2, 0.0), "b": BackoffState(1, 0.0)})

        plan = exit_([child], "a", Normal(), history=history)

        assert plan.history.backoff == {"b": BackoffState(1, 0.0)}

    def test_temporary_bystander_state_dropped(self) -> None:
        """Backoff bookkeeping of a temporary bystander dropped by a restart goes too."""
        children = [ChildState("a"), ChildState("b", TE)]
        history = History(backoff={"b": BackoffState(2, 0.0)})

        plan = exit_(children, "a", history=history, flags=flags(Strategy.ONE_FOR_ALL))

        assert plan.history.backoff == {}

    def test_history_forget(self) -> None:
        """History.forget drops the named children's bookkeeping and ignores unknown ids."""
        history = History((1.0,), {"a": BackoffState(1, 0.0), "b": BackoffState(2, 0.0)})

        assert history.forget("a", "zz") == History((1.0,), {"b": BackoffState(2, 0.0)})


def _after_one_draw(seed: int) -> object:
    rng = random.Random(seed)
    rng.random()
    return rng.getstate()
