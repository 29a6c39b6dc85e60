"""The safety and liveness invariants a simulated run must keep, checked as it runs.

:class:`Checker` is fed by the cluster: every status change of every driver
(:meth:`Checker.on_status`), every entry a state machine applies (:meth:`Checker.on_apply`),
and at the end the final logs and applied sequences (:meth:`Checker.check_final`). Each
broken invariant is recorded as a :class:`Violation` (the run goes on, so one run can
report several); the cluster turns them into a :class:`SimViolation` naming the seed and
the commands that reproduce it.

The invariants (Raft paper, Figure 3, plus the client-visible promise):

* ``election_safety`` -- at most one leader per term.
* ``leader_completeness`` -- a node that becomes leader of term T holds every entry that
  any node had applied before it became candidate for T (such an entry was committed in
  a term before T). Entries compacted into its snapshot count as held.
* ``state_machine_safety`` -- no two nodes (nor one node before and after a restart)
  apply different entries at one index.
* ``exactly_once`` -- no node applies the same proposal id twice (clients never retry).
* ``log_matching`` -- at the end, if two logs hold an entry with the same index and
  term, they hold the same entries up to that index.
* ``acked_durable`` -- at the end, after healing and a quiet period, every acknowledged
  proposal is in every node's applied sequence.
* ``liveness`` -- after the faults heal, a leader is elected within the bound and a new
  proposal commits (checked by the cluster, recorded here).
* ``crashed`` -- a driver raised (an assertion in the core, a refused restart).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import attrs

from runtime.raft.core import Entry, RaftNode, Role
from runtime.raft.driver import Status

__all__ = ["Checker", "SimViolation", "Violation"]


@attrs.frozen
class Violation:
    """One broken invariant: its name, when (simulated seconds) and what happened."""

    invariant: str
    time: float
    detail: str

    def __str__(self) -> str:
        """Render as ``invariant at t=...: detail``."""
        return f"{self.invariant} at t={self.time:.4f}: {self.detail}"


class SimViolation(AssertionError):
    """A simulated run broke an invariant; the message names the seed and how to rerun it."""

    def __init__(self, seed: int, violations: Sequence[Violation | str], repro: Sequence[str]):
        """Build the message from the seed, the violations and the reproducing commands."""
        lines = [f"seed {seed}: {len(violations)} invariant violation(s)"]
        lines += [f"  {v}" for v in violations[:20]]
        if len(violations) > 20:
            lines.append(f"  ... and {len(violations) - 20} more")
        lines.append("reproduce with:")
        lines += [f"  {cmd}" for cmd in repro]
        super().__init__("\n".join(lines))
        self.seed = seed
        self.violations = tuple(violations)
        self.repro = tuple(repro)


class Checker:
    """Collects observations of one run and records every violated invariant."""

    def __init__(self) -> None:
        """Start with nothing observed."""
        self.violations: list[Violation] = []
        self.leaders: dict[int, str] = {}
        self.applied: dict[int, tuple[int, bytes]] = {}  # index -> (term, data), first seen
        self.applied_order: list[tuple[int, int]] = []  # (index, term) in first-apply order
        self._candidate_mark: dict[str, tuple[int, int]] = {}
        self.elections = 0
        self.leader_changes = 0
        self._last_leader: str | None = None
        self._seen: set[tuple[int, str]] = set()
        self.now = 0.0  # set by the cluster before each callback batch

    def fail(self, invariant: str, detail: str) -> None:
        """Record a violation at the current time."""
        self.violations.append(Violation(invariant, self.now, detail))

    def on_status(self, st: Status, node: RaftNode) -> None:
        """Check a driver's new status (role, term, leader) against the history."""
        if st.role is Role.CANDIDATE:
            self._candidate_mark[st.id] = (st.term, len(self.applied_order))
            return
        if st.role is not Role.LEADER:
            return
        prev = self.leaders.setdefault(st.term, st.id)
        if prev != st.id:
            self.fail("election_safety", f"term {st.term} has leaders {prev} and {st.id}")
            return
        if (st.term, st.id) in self._seen:
            return  # the same leadership again (e.g. now leader_ready)
        self._seen.add((st.term, st.id))
        self.elections += 1
        if st.id != self._last_leader:
            self.leader_changes += 1
            self._last_leader = st.id
        term, mark = self._candidate_mark.get(st.id, (0, 0))
        if term != st.term:  # won without our seeing it campaign (a single voter)
            mark = len(self.applied_order)
        first = node.first_index
        for index, entry_term in self.applied_order[:mark]:
            if index < first:
                continue  # compacted into its snapshot
            have = node.log_term(index)
            if have != entry_term:
                self.fail(
                    "leader_completeness",
                    f"{st.id} leads term {st.term} without committed entry {index} "
                    f"(term {entry_term}); its log has term {have} there",
                )
                return

    def on_apply(self, node: str, entry: Entry) -> None:
        """Check an applied entry against what other nodes applied at that index."""
        seen = self.applied.get(entry.index)
        if seen is None:
            self.applied[entry.index] = (entry.term, entry.data)
            self.applied_order.append((entry.index, entry.term))
        elif seen != (entry.term, entry.data):
            self.fail(
                "state_machine_safety",
                f"{node} applied term {entry.term} {entry.data!r} at index {entry.index}; "
                f"another application there was term {seen[0]} {seen[1]!r}",
            )

    def check_final(
        self,
        logs: Mapping[str, Sequence[Entry]],
        applied: Mapping[str, Sequence[bytes]],
        acked: Iterable[bytes],
    ) -> None:
        """Check log matching across the final logs and that no acked proposal was lost.

        Args:
            logs: Each node's log entries (after its snapshot), in index order.
            applied: Each node's applied sequence of proposal ids (from its state machine).
            acked: Every proposal id that a client saw acknowledged.
        """
        ids = sorted(logs)
        for i, a in enumerate(ids):
            for b in ids[i + 1 :]:
                self._check_pair(a, logs[a], b, logs[b])
        for node, seq in applied.items():
            have = set(seq)
            if len(have) != len(seq):
                self.fail("exactly_once", f"{node} applied a proposal id twice")
            lost = [p for p in acked if p not in have]
            if lost:
                self.fail(
                    "acked_durable",
                    f"{node} never applied {len(lost)} acknowledged proposal(s), e.g. {lost[0]!r}",
                )

    def _check_pair(self, a: str, la: Sequence[Entry], b: str, lb: Sequence[Entry]) -> None:
        if not la or not lb:
            return
        lo = max(la[0].index, lb[0].index)
        hi = min(la[-1].index, lb[-1].index)
        oa, ob = la[0].index, lb[0].index
        matched = False
        for index in range(hi, lo - 1, -1):
            ea, eb = la[index - oa], lb[index - ob]
            if matched:
                if ea != eb:
                    self.fail(
                        "log_matching",
                        f"{a} and {b} agree at a later index but differ at {index}: {ea} vs {eb}",
                    )
                    return
            elif ea.term == eb.term:
                matched = True
                if ea != eb:
                    self.fail("log_matching", f"{a} and {b} differ at {index}: {ea} vs {eb}")
                    return
