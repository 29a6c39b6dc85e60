"""Child specs, supervisor flags and backoff: defaults and validation."""

from __future__ import annotations

import math
from typing import Any

import attrs
import pytest

from supervisors.spec import (
    BRUTAL_KILL,
    INFINITY,
    AutoShutdown,
    Backoff,
    BadChildSpec,
    BadSupFlags,
    ChildSpec,
    ChildType,
    Restart,
    ShutdownKind,
    Strategy,
    SupFlags,
    check_child_specs,
)


def start(*args: object) -> None:
    """A start function; never called here."""


class TestSpecDefaults:
    """Defaults of a child spec, as in OTP."""

    def test_worker_defaults(self) -> None:
        """A worker spec defaults to permanent, 5 s shutdown, no args, not significant."""
        spec = ChildSpec("w", start)

        assert (spec.args, spec.restart, spec.type, spec.shutdown) == (
            (),
            Restart.PERMANENT,
            ChildType.WORKER,
            5.0,
        )
        assert (spec.significant, spec.backoff) == (False, None)

    def test_supervisor_shutdown_infinity(self) -> None:
        """A supervisor child's shutdown defaults to INFINITY."""
        spec = ChildSpec("s", start, type=ChildType.SUPERVISOR)

        assert spec.shutdown is INFINITY

    @pytest.mark.parametrize("shutdown", [0, 0.0, 2.5, BRUTAL_KILL, INFINITY])
    def test_explicit_shutdown_kept(self, shutdown: float | ShutdownKind) -> None:
        """An explicit shutdown is kept for either child type."""
        for child_type in ChildType:
            spec = ChildSpec("c", start, type=child_type, shutdown=shutdown)

            assert shutdown == spec.shutdown

    def test_args_list_becomes_tuple(self) -> None:
        """Start arguments given as a list are stored as a tuple."""
        spec = ChildSpec("c", start, args=[1, "x"])

        assert spec.args == (1, "x")

    def test_spec_frozen(self) -> None:
        """A spec cannot be changed in place; evolve makes a new one."""
        spec = ChildSpec("c", start)

        with pytest.raises(attrs.exceptions.FrozenInstanceError):
            spec.id = "d"  # type: ignore[misc]
        assert attrs.evolve(spec, id="d").id == "d"

    def test_sentinels_distinct(self) -> None:
        """BRUTAL_KILL and INFINITY are distinct ShutdownKind singletons, not numbers."""
        kinds = [BRUTAL_KILL, INFINITY]

        assert (len(set(kinds)), all(isinstance(k, ShutdownKind) for k in kinds)) == (2, True)


class TestSpecValidation:
    """Invalid specs and flags raise at construction, naming the problem."""

    @pytest.mark.parametrize(
        ("kwargs", "message"),
        [
            pytest.param({"id": ""}, "non-empty string", id="empty_id"),
            pytest.param({"id": 3}, "non-empty string", id="non_string_id"),
            pytest.param({"start": "main"}, "start must be callable", id="non_callable_start"),
            pytest.param({"shutdown": -1}, "shutdown must be finite", id="negative_shutdown"),
            pytest.param({"shutdown": -0.001}, "shutdown must be finite", id="slightly_negative"),
            pytest.param({"shutdown": math.nan}, "shutdown must be finite", id="nan_shutdown"),
            pytest.param({"shutdown": math.inf}, "shutdown must be finite", id="inf_shutdown"),
            pytest.param({"shutdown": "infinity"}, "shutdown must be seconds", id="str_shutdown"),
            pytest.param({"shutdown": True}, "shutdown must be seconds", id="bool_shutdown"),
            pytest.param({"restart": "permanent"}, "restart must be a Restart", id="str_restart"),
            pytest.param({"type": "worker"}, "type must be a ChildType", id="str_type"),
            pytest.param({"significant": 1}, "significant must be a bool", id="int_significant"),
            pytest.param(
                {"significant": True},
                "permanent child cannot be significant",
                id="significant_permanent",
            ),
            pytest.param({"backoff": 1.0}, "backoff must be a Backoff", id="float_backoff"),
        ],
    )
    def test_bad_child_spec_raises(self, kwargs: dict[str, Any], message: str) -> None:
        """Each invalid child spec field raises BadChildSpec with a clear message."""
        fields: dict[str, Any] = {"id": "c", "start": start, **kwargs}

        with pytest.raises(BadChildSpec, match=message):
            ChildSpec(**fields)

    @pytest.mark.parametrize("restart", [Restart.TRANSIENT, Restart.TEMPORARY])
    def test_significant_non_permanent_accepted(self, restart: Restart) -> None:
        """A transient or temporary child may be significant."""
        spec = ChildSpec("c", start, restart=restart, significant=True)

        assert spec.significant

    def test_bad_child_spec_is_value_error(self) -> None:
        """BadChildSpec is a ValueError, so callers can catch it as one."""
        assert issubclass(BadChildSpec, ValueError)

    def test_evolve_revalidates(self) -> None:
        """Evolving a spec into an invalid one raises too."""
        spec = ChildSpec("c", start, restart=Restart.TRANSIENT, significant=True)

        with pytest.raises(BadChildSpec, match="significant"):
            attrs.evolve(spec, restart=Restart.PERMANENT)

    def test_duplicate_ids_rejected(self) -> None:
        """check_child_specs rejects two specs with the same id."""
        with pytest.raises(BadChildSpec, match="duplicate child id 'a'"):
            check_child_specs([ChildSpec("a", start), ChildSpec("b", start), ChildSpec("a", start)])

    def test_unique_ids_accepted(self) -> None:
        """check_child_specs accepts specs with distinct ids."""
        check_child_specs([ChildSpec("a", start), ChildSpec("b", start)])

    def test_non_spec_rejected(self) -> None:
        """check_child_specs rejects an item that is not a ChildSpec."""
        with pytest.raises(BadChildSpec, match="expected a ChildSpec"):
            check_child_specs([{"id": "a"}])  # type: ignore[list-item]

    def test_flag_defaults(self) -> None:
        """Supervisor flags default to one_for_one, intensity 1, period 5, never."""
        assert attrs.astuple(SupFlags(), recurse=False) == (
            Strategy.ONE_FOR_ONE,
            1,
            5.0,
            AutoShutdown.NEVER,
        )

    @pytest.mark.parametrize(
        ("kwargs", "message"),
        [
            pytest.param({"intensity": -1}, "intensity must be >= 0", id="negative_intensity"),
            pytest.param({"intensity": 1.5}, "intensity must be an int", id="float_intensity"),
            pytest.param({"intensity": True}, "intensity must be an int", id="bool_intensity"),
            pytest.param({"period": 0}, "period must be seconds > 0", id="zero_period"),
            pytest.param({"period": -5}, "period must be seconds > 0", id="negative_period"),
            pytest.param({"period": math.nan}, "period must be seconds > 0", id="nan_period"),
            pytest.param({"strategy": "one_for_one"}, "strategy must be", id="str_strategy"),
            pytest.param({"auto_shutdown": "never"}, "auto_shutdown must be", id="str_auto"),
        ],
    )
    def test_bad_flags_raise(self, kwargs: dict[str, Any], message: str) -> None:
        """Each invalid supervisor flag raises BadSupFlags with a clear message."""
        with pytest.raises(BadSupFlags, match=message):
            SupFlags(**kwargs)

    def test_intensity_zero_accepted(self) -> None:
        """Intensity 0 is valid (every restart gives up)."""
        assert SupFlags(intensity=0).intensity == 0

    @pytest.mark.parametrize(
        ("kwargs", "message"),
        [
            pytest.param({"initial": -1.0}, "initial must be >= 0", id="negative_initial"),
            pytest.param({"max": 0.5}, "max must be >= initial", id="max_below_initial"),
            pytest.param({"multiplier": 0.5}, "multiplier must be >= 1", id="shrinking"),
            pytest.param({"jitter": -0.1}, r"jitter must be in \[0, 1\]", id="negative_jitter"),
            pytest.param({"jitter": 1.5}, r"jitter must be in \[0, 1\]", id="jitter_above_one"),
            pytest.param({"max": math.inf}, "max must be a finite number", id="infinite_max"),
            pytest.param({"initial": "1"}, "initial must be a finite number", id="str_initial"),
            pytest.param({"reset_after": 0}, "reset_after must be > 0", id="zero_reset_after"),
        ],
    )
    def test_bad_backoff_raises(self, kwargs: dict[str, Any], message: str) -> None:
        """Each out-of-range backoff value raises BadChildSpec with a clear message."""
        fields: dict[str, Any] = {"initial": 1.0, "max": 10.0, **kwargs}

        with pytest.raises(BadChildSpec, match=message):
            Backoff(**fields)

    @pytest.mark.parametrize(
        ("backoff", "expected"),
        [
            pytest.param(Backoff(1.0, 30.0), 30.0, id="default_is_max"),
            pytest.param(Backoff(0.1, 0.5), 1.0, id="at_least_one_second"),
            pytest.param(Backoff(1.0, 30.0, reset_after=7.0), 7.0, id="explicit"),
        ],
    )
    def test_reset_interval_default(self, backoff: Backoff, expected: float) -> None:
        """reset_interval is reset_after if given, else max (at least 1 s)."""
        assert expected == backoff.reset_interval
