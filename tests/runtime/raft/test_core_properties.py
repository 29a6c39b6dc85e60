"""Property tests: random clusters under random faults keep Raft's safety guarantees.

Hypothesis drives 3- and 5-node clusters through random ticks, message deliveries, drops,
duplicates, partitions, proposals, compactions, crashes and leadership transfers. After
every step the checker asserts election safety (at most one leader per term), log
matching, that committed entries never change, and state machine safety (no two nodes
apply different entries at the same index).
"""

from __future__ import annotations

import random

import hypothesis.strategies as st
from hypothesis import HealthCheck, event, given, settings

from runtime.raft.core import Config, Entry, LogCompacted, ProposalDropped, Role

from .interp import Cluster

Op = tuple[str, int, int]

# Operation kinds with their weights: mostly time passing and messages flowing, with
# occasional faults.
KINDS = {
    "tick": 4,
    "tick_all": 6,
    "deliver": 6,
    "deliver_all": 6,
    "drop": 2,
    "duplicate": 1,
    "partition": 1,
    "heal": 2,
    "propose": 6,
    "compact": 1,
    "restart": 1,
    "transfer": 1,
    "read": 1,
}
OPS = st.tuples(
    st.sampled_from([k for k, w in KINDS.items() for _ in range(w)]),
    st.integers(0, 1000),
    st.integers(1, 3),
)


class Checker:
    """Applies operations to a :class:`Cluster` and checks the invariants after each."""

    def __init__(self, n: int, seed: int, pre_vote: bool, check_quorum: bool) -> None:
        """Build an n-node cluster whose election jitter comes from ``seed``."""
        self.c = Cluster()
        self.c.level = 1000  # no output
        self.ids = [str(i + 1) for i in range(n)]
        for nid in self.ids:
            self.c.add_node(
                Config(
                    id=nid,
                    voters=tuple(self.ids),
                    election_ticks=6,
                    heartbeat_ticks=1,
                    pre_vote=pre_vote,
                    check_quorum=check_quorum,
                    max_entries_per_msg=3,
                    max_inflight=4,
                    rng=random.Random(f"{seed}-{nid}"),
                )
            )
        self.rng = random.Random(seed)
        self.leaders: dict[int, str] = {}
        self.committed: dict[int, Entry] = {}
        self.proposals = 0
        self.reads = 0
        self.max_commit = 0

    def node_id(self, k: int) -> str:
        return self.ids[k % len(self.ids)]

    def apply(self, op: Op) -> None:
        kind, a, b = op
        c = self.c
        if kind == "tick":
            node = c.nodes[self.node_id(a)].node
            for _ in range(b):
                node.tick()
        elif kind == "tick_all":
            for _ in range(b):
                for nid in self.ids:
                    c.nodes[nid].node.tick()
        elif kind == "deliver" and c.queue:
            m = c.queue.pop(a % len(c.queue))
            c.nodes[m.to].node.step(m)
        elif kind == "deliver_all":
            queue, c.queue = c.queue, []
            for m in queue:
                c.nodes[m.to].node.step(m)
        elif kind == "drop" and c.queue:
            c.queue.pop(a % len(c.queue))
        elif kind == "duplicate" and c.queue:
            m = c.queue[a % len(c.queue)]
            c.nodes[m.to].node.step(m)
        elif kind == "partition":
            side = {nid for i, nid in enumerate(self.ids) if (a % 31 + 1) >> i & 1}
            c.groups = [side, set(self.ids) - side]
            c.queue = [m for m in c.queue if not c.cut(m.frm, m.to)]
        elif kind == "heal":
            c.groups = None
        elif kind == "propose":
            # Clients mostly find the leader (a < 800), sometimes ask anyone.
            leaders = [nid for nid in self.ids if c.nodes[nid].node.role is Role.LEADER]
            nid = leaders[a % len(leaders)] if leaders and a < 800 else self.node_id(a)
            try:
                self.proposals += 1
                c.nodes[nid].node.propose(f"p{self.proposals}".encode())
            except ProposalDropped:
                pass
        elif kind == "compact":
            nid = self.node_id(a)
            ns = c.nodes[nid]
            if ns.applied_index > ns.storage.snapshot().index and not ns.node.has_ready():
                c.compact(nid, ns.applied_index)
        elif kind == "restart":
            c.restart(self.node_id(a))
        elif kind == "transfer":
            try:
                c.nodes[self.node_id(a)].node.transfer_leader(self.node_id(b))
            except ProposalDropped:
                pass
        elif kind == "read":
            try:
                self.reads += 1
                c.nodes[self.node_id(a)].node.read_index(f"r{self.reads}".encode())
            except ProposalDropped:
                pass
        read_indexes: list[int] = []
        for nid in self.ids:
            rd = c.process_ready(nid)
            if rd is not None:
                read_indexes.extend(rs.index for rs in rd.read_states)
        self.check()
        # A read is served at an index that is committed.
        for index in read_indexes:
            assert index <= max(self.committed, default=0)

    def check(self) -> None:
        nodes = self.c.nodes
        # Election safety: at most one leader per term.
        for nid, ns in nodes.items():
            n = ns.node
            if n.role is Role.LEADER:
                other = self.leaders.setdefault(n.term, nid)
                assert other == nid, f"two leaders in term {n.term}: {other} and {nid}"
        # Committed entries never change, and nodes agree on them (state machine safety:
        # what is applied is a prefix of what is committed).
        for nid, ns in nodes.items():
            n = ns.node
            assert n.applied_index <= n.commit_index <= n.last_index
            for i in range(max(n.first_index, n.applied_index - 20), n.commit_index + 1):
                (e,) = n.log_entries(i, i + 1)
                known = self.committed.setdefault(i, e)
                assert known == e, f"{nid} has {e} at committed index {i}, others had {known}"
        # Log matching: if two logs hold an entry with the same index and term, they hold
        # the same entries up to it.
        stored = {nid: self._stable_log(nid) for nid in nodes}
        ids = sorted(stored)
        for x, nx in enumerate(ids):
            for ny in ids[x + 1 :]:
                lx, ly = stored[nx], stored[ny]
                common = sorted(set(lx) & set(ly), reverse=True)
                for i in common:
                    if lx[i].term == ly[i].term:
                        for j in common:
                            if j <= i:
                                assert lx[j] == ly[j], f"logs of {nx} and {ny} differ at {j}"
                        break

    def _stable_log(self, nid: str) -> dict[int, Entry]:
        s = self.c.nodes[nid].storage
        try:
            ents = s.entries(s.first_index(), s.last_index() + 1)
        except LogCompacted:  # pragma: no cover
            ents = ()
        return {e.index: e for e in ents}

    def settle(self) -> None:
        """Heal, then run the cluster fault-free until everyone agrees on one leader."""
        self.c.groups = None
        for _ in range(400):
            for nid in self.ids:
                self.c.nodes[nid].node.tick()
            self.apply(("deliver_all", 0, 0))
            self.apply(("deliver_all", 0, 0))
            leaders = {ns.node.leader for ns in self.c.nodes.values()}
            lead = next(iter(leaders))
            if len(leaders) == 1 and lead is not None:
                return
        raise AssertionError("the cluster did not settle on a leader after healing")


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(
    n=st.sampled_from([3, 5]),
    seed=st.integers(0, 2**32),
    pre_vote=st.booleans(),
    check_quorum=st.booleans(),
    ops=st.lists(OPS, min_size=30, max_size=200),
)
def test_random_faults_keep_raft_safe(
    n: int, seed: int, pre_vote: bool, check_quorum: bool, ops: list[Op]
) -> None:
    """Under random faults: one leader per term, log matching, committed entries fixed."""
    checker = Checker(n, seed, pre_vote, check_quorum)
    for op in ops:
        checker.apply(op)
    # Liveness once faults stop: a leader is elected and a proposal commits everywhere
    # (a leadership transfer still in flight finishes or is abandoned first).
    index = 0
    for _ in range(100):
        checker.settle()
        lead = next(iter({ns.node.leader for ns in checker.c.nodes.values()}))
        assert lead is not None
        try:
            index = checker.c.nodes[lead].node.propose(b"final")
            break
        except ProposalDropped:
            checker.apply(("tick_all", 0, 1))
    assert index, "no proposal accepted after the faults stopped"
    for _ in range(50):
        checker.apply(("deliver_all", 0, 0))
        if all(ns.node.applied_index >= index for ns in checker.c.nodes.values()):
            break
        checker.apply(("tick", checker.ids.index(lead), 1))
    assert all(ns.node.applied_index >= index for ns in checker.c.nodes.values())
    states = {tuple(ns.applied) for ns in checker.c.nodes.values()}
    assert len(states) == 1, "state machines diverged"
    event(f"terms with a leader: {min(len(checker.leaders), 5)}+")
    event(f"committed entries: {min(len(checker.committed) // 10 * 10, 50)}+")
