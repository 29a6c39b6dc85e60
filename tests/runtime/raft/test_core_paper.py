"""Claims from the Raft paper (and the thesis' pre-vote and check-quorum), one test each.

Each test sets a node up, does one thing and checks the outcome, in the style of
etcd-io/raft's raft_paper_test.go. Tests where pre-vote changes the path but not the
claim are parametrized over ``pre_vote``.
"""

from __future__ import annotations

import contextlib
import logging
import random
from collections.abc import Iterator, MutableMapping
from typing import Any

import attrs
import pytest
import structlog
from structlog.testing import capture_logs

from runtime.raft.core import (
    CAMPAIGN_TRANSFER,
    EARLY_MESSAGE_TYPES,
    Config,
    Entry,
    EntryKind,
    HardState,
    LogCompacted,
    MemoryStorage,
    Message,
    MsgType,
    NotLeader,
    ProposalDropped,
    RaftNode,
    Ready,
    Role,
    Snapshot,
)
from runtime.raft.progress import ProgressState

from .interp import Cluster

IDS = ("1", "2", "3")
ELECTION_TICKS = Config(id="1", voters=IDS).election_ticks


def config(nid: str = "1", voters: tuple[str, ...] = IDS, **kw: object) -> Config:
    """A config with election timeout 10 and a seeded rng."""
    kw.setdefault("rng", random.Random(nid))
    return Config(id=nid, voters=voters, **kw)  # type: ignore[arg-type]


def node(nid: str = "1", voters: tuple[str, ...] = IDS, **kw: object) -> RaftNode:
    """A fresh node on empty memory storage."""
    return RaftNode(config(nid, voters, **kw), MemoryStorage())


def cluster(n: int = 3, **kw: object) -> Cluster:
    """A quiet cluster of n fresh nodes."""
    c = Cluster()
    c.level = 1000
    ids = tuple(str(i + 1) for i in range(n))
    for nid in ids:
        c.add_node(config(nid, ids, **kw))
    return c


def elect(c: Cluster, nid: str = "1") -> None:
    """Make nid the leader and replicate its no-op everywhere."""
    c.nodes[nid].node.campaign()
    c.stabilize(list(c.nodes))
    assert c.nodes[nid].node.role is Role.LEADER


def drain(n: RaftNode) -> Ready:
    """Take a node's Ready and advance it (nothing is persisted or sent)."""
    rd = n.ready()
    n.advance(rd)
    return rd


def msgs(n: RaftNode) -> list[Message]:
    """The messages in a node's next Ready, early ones first (the Ready is then advanced)."""
    rd = drain(n)
    return [*rd.early_messages, *rd.messages]


@contextlib.contextmanager
def captured_logs() -> Iterator[list[MutableMapping[str, Any]]]:
    """Capture structlog events of every level (the conftest restores the config)."""
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.DEBUG))
    with capture_logs() as logs:
        yield logs


def tick_until_campaign(n: RaftNode) -> int:
    """Tick until the node leaves the follower role; return the ticks it took."""
    for i in range(1, 100):
        n.tick()
        if n.role is not Role.FOLLOWER:
            return i
    raise AssertionError("never campaigned")


# --------------------------------------------------------------------------- elections


def test_node_starts_as_follower_without_leader() -> None:
    """A fresh node is a follower of term 0 that knows no leader."""
    n = node()

    assert (n.role, n.term, n.leader, n.vote) == (Role.FOLLOWER, 0, None, None)


@pytest.mark.parametrize("pre_vote", [False, True])
def test_follower_campaigns_after_election_timeout(pre_vote: bool) -> None:
    """A follower that hears nothing for an election timeout asks every peer for a vote."""
    n = node(pre_vote=pre_vote)

    ticks = tick_until_campaign(n)

    assert 10 <= ticks < 20
    expected = MsgType.PRE_VOTE if pre_vote else MsgType.VOTE
    assert sorted((m.type, m.to) for m in msgs(n)) == [(expected, "2"), (expected, "3")]
    assert n.role is (Role.PRE_CANDIDATE if pre_vote else Role.CANDIDATE)


def test_election_timeout_is_drawn_from_election_ticks_to_twice_that() -> None:
    """Election timeouts are spread over [election_ticks, 2 * election_ticks)."""
    timeouts = {node(rng=random.Random(seed)).randomized_election_timeout for seed in range(200)}

    assert min(timeouts) >= 10
    assert max(timeouts) < 20
    assert len(timeouts) > 5


def test_election_timeout_comes_only_from_the_injected_rng() -> None:
    """Two nodes with equally seeded rngs draw the same timeouts."""
    a = node(rng=random.Random(7))
    b = node(rng=random.Random(7))

    assert tick_until_campaign(a) == tick_until_campaign(b)


@pytest.mark.parametrize("pre_vote", [False, True])
def test_candidate_steps_down_on_higher_term(pre_vote: bool) -> None:
    """A candidate that hears from a leader of a higher term becomes its follower."""
    n = node(pre_vote=pre_vote)
    n.campaign()

    n.step(Message(MsgType.APPEND, "2", "1", term=5))

    assert (n.role, n.term, n.leader) == (Role.FOLLOWER, 5, "2")


def test_candidate_steps_down_on_append_from_leader_of_same_term() -> None:
    """A candidate that learns another node won its term becomes that node's follower."""
    n = node(pre_vote=False)
    n.campaign()

    n.step(Message(MsgType.HEARTBEAT, "2", "1", term=n.term))

    assert (n.role, n.term, n.leader) == (Role.FOLLOWER, 1, "2")


def test_leader_steps_down_on_higher_term() -> None:
    """A leader that sees a higher term in a response becomes a follower of that term."""
    c = cluster()
    elect(c)
    n = c.nodes["1"].node

    n.step(Message(MsgType.APPEND_RESP, "2", "1", term=7))

    assert (n.role, n.term, n.leader) == (Role.FOLLOWER, 7, None)


@pytest.mark.parametrize("pre_vote", [False, True])
@pytest.mark.parametrize(
    ("size", "grants", "expected"),
    [
        (1, (), Role.LEADER),
        (3, ("2",), Role.LEADER),
        (3, (), Role.CANDIDATE),
        (5, ("2",), Role.CANDIDATE),
        (5, ("2", "3"), Role.LEADER),
    ],
)
def test_candidate_wins_with_votes_from_a_majority(
    pre_vote: bool, size: int, grants: tuple[str, ...], expected: Role
) -> None:
    """A candidate becomes leader once a majority (itself included) granted its vote."""
    ids = tuple(str(i + 1) for i in range(size))
    n = node(voters=ids, pre_vote=pre_vote)
    n.campaign()
    if pre_vote:
        for g in ids[1:]:
            n.step(Message(MsgType.PRE_VOTE_RESP, g, "1", term=1))
    for g in grants:
        n.step(Message(MsgType.VOTE_RESP, g, "1", term=1))

    assert n.role is expected


def test_candidate_returns_to_follower_when_a_majority_rejects() -> None:
    """A candidate rejected by a majority gives up its candidacy for the term."""
    n = node(voters=("1", "2", "3", "4", "5"), pre_vote=False)
    n.campaign()
    for g in ("2", "3", "4"):
        n.step(Message(MsgType.VOTE_RESP, g, "1", term=1, reject=True))

    assert (n.role, n.term) == (Role.FOLLOWER, 1)


def test_voter_grants_at_most_one_vote_per_term() -> None:
    """A node votes for the first candidate of a term and rejects the others."""
    n = node(pre_vote=False)
    drain(n)

    n.step(Message(MsgType.VOTE, "2", "1", term=1))
    n.step(Message(MsgType.VOTE, "3", "1", term=1))
    n.step(Message(MsgType.VOTE, "2", "1", term=1))  # a retry from the same candidate

    assert [(m.to, m.reject) for m in msgs(n)] == [("2", False), ("3", True), ("2", False)]
    assert n.vote == "2"


def test_vote_is_in_the_same_ready_as_its_response() -> None:
    """A granted vote reaches the hard state in the Ready that carries the response."""
    n = node(pre_vote=False)
    drain(n)

    n.step(Message(MsgType.VOTE, "2", "1", term=1))
    rd = n.ready()

    assert rd.hard_state == HardState(term=1, vote="2", commit=0)
    assert [m.type for m in rd.messages] == [MsgType.VOTE_RESP]


@pytest.mark.parametrize(
    ("cand_last_term", "cand_last_index", "granted"),
    [(1, 2, False), (2, 1, False), (2, 2, True), (2, 3, True), (3, 1, True)],
)
def test_voter_rejects_candidate_whose_log_is_less_up_to_date(
    cand_last_term: int, cand_last_index: int, granted: bool
) -> None:
    """Votes go only to candidates whose last entry is at least as new as the voter's."""
    storage = MemoryStorage()
    storage.append([Entry(1, 1), Entry(2, 2)])
    storage.set_hard_state(HardState(2, None, 0))
    n = RaftNode(config(pre_vote=False), storage)

    n.step(Message(MsgType.VOTE, "2", "1", term=3, log_term=cand_last_term, index=cand_last_index))

    assert [m.reject for m in msgs(n)] == [not granted]


def test_pre_vote_does_not_change_anyones_term() -> None:
    """A pre-vote round bumps no term: not the pre-candidate's, not the voters'."""
    c = cluster(pre_vote=True)
    n1 = c.nodes["1"].node
    n1.campaign()
    c.process_ready("1")
    c.deliver("2")

    assert (n1.term, c.nodes["2"].node.term) == (0, 0)
    assert n1.role is Role.PRE_CANDIDATE


@pytest.mark.parametrize("msg_type", [MsgType.VOTE, MsgType.PRE_VOTE])
def test_follower_with_recent_leader_ignores_vote_requests(msg_type: MsgType) -> None:
    """A follower that heard from its leader within the election timeout ignores votes."""
    c = cluster()
    elect(c)
    n2 = c.nodes["2"].node

    n2.step(Message(msg_type, "3", "2", term=5, log_term=9, index=9))

    assert (n2.term, n2.leader, n2.has_ready()) == (1, "1", False)


def test_pre_vote_ignored_during_the_lease_is_answered_once_it_runs_out() -> None:
    """A pre-vote that arrived a tick before the lease ran out is granted when it does."""
    c = cluster()
    elect(c)
    n2 = c.nodes["2"].node
    for _ in range(ELECTION_TICKS - 1):
        n2.tick()
    request = Message(MsgType.PRE_VOTE, "3", "2", term=2, log_term=1, index=1)

    n2.step(request)
    assert not n2.has_ready()  # still in the lease: ignored for now
    n2.tick()  # the lease runs out

    granted = [m for m in msgs(n2) if m.type is MsgType.PRE_VOTE_RESP]
    assert [(m.to, m.term, m.reject) for m in granted] == [("3", 2, False)]
    assert (n2.term, n2.vote) == (1, "1")  # a pre-vote changes nothing here


def test_pre_vote_ignored_during_the_lease_is_dropped_when_the_leader_is_heard() -> None:
    """The leader is alive after all: the deferred pre-vote is never answered."""
    c = cluster()
    elect(c)
    n2 = c.nodes["2"].node
    for _ in range(ELECTION_TICKS - 1):
        n2.tick()
    n2.step(Message(MsgType.PRE_VOTE, "3", "2", term=2, log_term=1, index=1))
    n2.step(Message(MsgType.HEARTBEAT, "1", "2", term=1, commit=1))
    drain(n2)

    for _ in range(ELECTION_TICKS - 1):
        n2.tick()

    assert not [m for m in msgs(n2) if m.type is MsgType.PRE_VOTE_RESP]


def test_pre_candidates_that_refused_each_other_retry_within_an_election_timeout() -> None:
    """Two followers that time out together, their leader dead, refuse each other's
    pre-vote (each competes with its own), so neither can win this round; they try
    again within one minimum election timeout, not a whole new randomized one, and
    one of them wins."""
    c = cluster()
    elect(c)
    c.groups = [{"1"}, {"2", "3"}]  # the leader is gone
    n2, n3 = c.nodes["2"].node, c.nodes["3"].node
    n2.campaign()
    n3.campaign()
    c.stabilize(["2", "3"])
    assert (n2.role, n3.role) == (Role.PRE_CANDIDATE, Role.PRE_CANDIDATE)  # both refused
    assert max(n2.randomized_election_timeout, n3.randomized_election_timeout) <= ELECTION_TICKS

    for _ in range(ELECTION_TICKS):
        for n in (n2, n3):
            n.tick()
        c.stabilize(["2", "3"])

    assert {n2.role, n3.role} == {Role.LEADER, Role.FOLLOWER}


def test_follower_grants_transfer_vote_despite_recent_leader() -> None:
    """A vote request marked as a leadership transfer bypasses leader stickiness."""
    c = cluster()
    elect(c)
    n2 = c.nodes["2"].node

    n2.step(Message(MsgType.VOTE, "3", "2", term=2, log_term=1, index=1, context=CAMPAIGN_TRANSFER))

    assert n2.term == 2
    assert n2.vote == "3"


def test_stale_messages_are_ignored() -> None:
    """A message from an older term changes nothing (and raises nothing)."""
    n = node(pre_vote=False, check_quorum=False)
    n.step(Message(MsgType.APPEND, "2", "1", term=3))
    drain(n)

    n.step(Message(MsgType.VOTE, "3", "1", term=2, log_term=9, index=9))
    n.step(Message(MsgType.APPEND, "3", "1", term=2, index=5, log_term=2))

    assert (n.term, n.leader, n.has_ready()) == (3, "2", False)


# --------------------------------------------------------------------------- replication


def test_leader_appends_a_noop_when_elected() -> None:
    """A new leader's first entry is a no-op of its term."""
    c = cluster()

    elect(c)

    assert c.nodes["3"].node.log_entries(1, 2) == [Entry(1, 1, EntryKind.NOOP, b"")]


def test_leader_commits_once_a_majority_stores_the_entry() -> None:
    """An entry of the current term commits when a majority has it, not before."""
    c = cluster()
    elect(c)
    leader = c.nodes["1"].node
    index = leader.propose(b"x")
    c.process_ready("1")
    c.queue = [m for m in c.queue if m.to == "2"]

    assert leader.commit_index == index - 1
    c.deliver("2")
    c.process_ready("2")
    c.deliver("1")
    assert leader.commit_index == index


@pytest.mark.parametrize("defer", [False, True])
def test_leader_tells_followers_a_new_commit_index_at_once_or_at_its_next_tick(
    defer: bool,
) -> None:
    """A leader sends the new commit index in an APPEND to each follower as soon as it
    advances (etcd); with defer_commit_broadcast, only at its next tick, unless a
    proposal's APPENDs carry it first."""
    c = cluster(defer_commit_broadcast=defer)
    elect(c)
    leader = c.nodes["1"].node
    index = leader.propose(b"x")
    c.process_ready("1")
    c.queue = [m for m in c.queue if m.to == "2"]
    c.deliver("2")
    c.process_ready("2")
    c.deliver("1")
    assert leader.commit_index == index
    sent = msgs(leader)
    if not defer:
        assert {(m.type, m.to, m.commit, m.entries) for m in sent} == {
            (MsgType.APPEND, "2", index, ()),
            (MsgType.APPEND, "3", index, ()),
        }
        assert not leader.has_commit_broadcast_due
        return
    assert sent == []
    assert leader.has_commit_broadcast_due
    leader.tick()  # heartbeat_ticks is 1 here: heartbeats leave too
    sent = [m for m in msgs(leader) if m.type is not MsgType.HEARTBEAT]
    assert {(m.type, m.to, m.commit) for m in sent} == {
        (MsgType.APPEND, "2", index),
        (MsgType.APPEND, "3", index),
    }
    assert not leader.has_commit_broadcast_due
    # A proposal's APPENDs carry the commit index: nothing more is due.
    index2 = leader.propose(b"y")
    c.process_ready("1")
    c.queue = [m for m in c.queue if m.to == "2"]
    c.deliver("2")
    c.process_ready("2")
    c.deliver("1")
    assert leader.commit_index == index2
    assert leader.has_commit_broadcast_due
    leader.propose(b"z")
    appends = [m for m in msgs(leader) if m.type is MsgType.APPEND]
    assert {(m.to, m.commit) for m in appends} == {("2", index2), ("3", index2)}
    assert not leader.has_commit_broadcast_due


def test_leader_does_not_count_replicas_of_older_terms() -> None:
    """Figure 8: an old-term entry stored on a majority is not committed by counting."""
    storage = MemoryStorage()
    storage.append([Entry(1, 1), Entry(1, 2)])
    storage.set_hard_state(HardState(1, None, 1))
    n = RaftNode(config(pre_vote=False, max_entries_per_msg=1), storage)
    n.campaign()
    n.step(Message(MsgType.VOTE_RESP, "2", "1", term=2))
    assert n.role is Role.LEADER  # its no-op is 2/3
    rd = n.ready()
    storage.append(rd.entries)
    n.advance(rd)  # the no-op is durable on the leader

    n.step(Message(MsgType.APPEND_RESP, "2", "1", term=2, index=2))

    assert n.commit_index == 1
    n.step(Message(MsgType.APPEND_RESP, "2", "1", term=2, index=3))
    assert n.commit_index == 3


def test_follower_rejects_append_that_does_not_follow_its_log() -> None:
    """The consistency check: an append whose previous entry differs is rejected with a
    hint at the follower's last entry that may match."""
    storage = MemoryStorage()
    storage.append([Entry(1, 1), Entry(1, 2), Entry(1, 3)])
    storage.set_hard_state(HardState(1, None, 1))
    n = RaftNode(config(), storage)

    n.step(Message(MsgType.APPEND, "2", "1", term=3, index=5, log_term=3))

    (resp,) = msgs(n)
    assert (resp.reject, resp.index, resp.reject_hint, resp.log_term) == (True, 5, 3, 1)


def test_follower_replaces_a_conflicting_suffix() -> None:
    """Entries that conflict with the leader's are replaced, with everything after them."""
    storage = MemoryStorage()
    storage.append([Entry(1, 1), Entry(1, 2), Entry(1, 3)])
    storage.set_hard_state(HardState(1, None, 1))
    n = RaftNode(config(), storage)

    n.step(Message(MsgType.APPEND, "2", "1", term=2, index=1, log_term=1, entries=(Entry(2, 2),)))

    assert n.log_entries(1, 10) == [Entry(1, 1), Entry(2, 2)]
    rd = n.ready()
    assert rd.entries == (Entry(2, 2),)
    assert [(m.reject, m.index) for m in rd.messages] == [(False, 2)]


def test_follower_commit_follows_the_leader_up_to_what_it_stores() -> None:
    """A follower commits min(leader commit, last new entry)."""
    n = node()

    n.step(
        Message(
            MsgType.APPEND, "2", "1", term=1, index=0, log_term=0, entries=(Entry(1, 1),), commit=5
        )
    )

    assert n.commit_index == 1


def test_heartbeat_commit_never_exceeds_what_the_follower_matches() -> None:
    """Heartbeats carry min(commit, follower match), so a follower never commits blindly."""
    c = cluster()
    elect(c)
    leader = c.nodes["1"].node
    leader.propose(b"x")
    c.stabilize(["1", "2"])  # node 3 gets nothing more
    c.queue.clear()

    leader.tick()
    hb = {m.to: m.commit for m in msgs(leader) if m.type is MsgType.HEARTBEAT}

    assert hb == {"2": 2, "3": 1}


def test_entries_and_messages_come_together_and_entries_become_stable_on_advance() -> None:
    """A Ready lists entries to persist with the leader's appends of them, which may leave
    before the entries are durable (thesis 10.2.1), so they come as early messages."""
    c = cluster()
    elect(c)
    leader = c.nodes["1"].node

    leader.propose(b"x")
    rd = leader.ready()

    assert [e.data for e in rd.entries] == [b"x"]
    assert {m.type for m in rd.early_messages} == {MsgType.APPEND}
    assert rd.messages == ()
    leader.advance(rd)
    assert leader.ready().entries == ()


def test_vote_and_acknowledgement_messages_never_leave_early() -> None:
    """Whatever promises durable state (votes, vote requests, every response) waits for
    the Ready to be persisted; only what promises nothing may leave early."""
    early = {
        MsgType.APPEND,
        MsgType.HEARTBEAT,
        MsgType.SNAPSHOT,
        MsgType.TIMEOUT_NOW,
        MsgType.READ_INDEX,
        MsgType.READ_INDEX_RESP,
        MsgType.TRANSFER_LEADER,
    }

    assert early == set(EARLY_MESSAGE_TYPES)
    for t in (
        MsgType.VOTE,
        MsgType.VOTE_RESP,
        MsgType.PRE_VOTE,
        MsgType.PRE_VOTE_RESP,
        MsgType.APPEND_RESP,
        MsgType.HEARTBEAT_RESP,
    ):
        assert t not in EARLY_MESSAGE_TYPES


def test_leader_counts_its_own_entry_only_once_durable() -> None:
    """A leader sends its appends before persisting, but counts its own copy towards a
    commit only after advance() confirmed it durable: a follower's acknowledgement alone
    (one of three) does not commit the entry."""
    c = cluster()
    elect(c)
    leader = c.nodes["1"].node
    index = leader.propose(b"x")
    rd = leader.ready()  # the leader's fsync "runs" from here until advance
    c.queue.extend(rd.early_messages)
    c.deliver("2")
    c.process_ready("2")  # the follower persists and acknowledges
    c.deliver("1")

    assert leader.commit_index == index - 1
    assert leader.progress()["1"].match == index - 1

    c.nodes["1"].storage.append(rd.entries)
    leader.advance(rd)  # the leader's own write is durable now

    assert leader.commit_index == index
    rd2 = leader.ready()
    assert [e.index for e in rd2.committed] == [index]
    assert {(m.type, m.to, m.commit) for m in rd2.early_messages} >= {(MsgType.APPEND, "2", index)}


def test_followers_majority_may_commit_what_the_leader_has_not_persisted() -> None:
    """With five voters three followers are a quorum: an entry they store is committed
    even while the leader's own write is pending (it is durable on a majority), but the
    leader hands it out for applying only in a Ready after the one that persists it."""
    c = cluster(5)
    elect(c)
    leader = c.nodes["1"].node
    index = leader.propose(b"x")
    rd = leader.ready()
    c.queue.extend(rd.early_messages)
    for nid in ("2", "3", "4"):
        c.deliver(nid)
        c.process_ready(nid)
    c.deliver("1")

    assert leader.commit_index == index
    assert rd.committed == ()  # handed out with (or after) its own entry's Ready only
    c.nodes["1"].storage.append(rd.entries)
    leader.advance(rd)
    assert [e.index for e in leader.ready().committed] == [index]


def test_probe_state_sends_one_append_until_the_follower_answers() -> None:
    """A leader probing a follower holds further appends until a response arrives."""
    c = cluster()
    elect(c)
    leader = c.nodes["1"].node
    c.nodes["1"].node.progress()["3"].become_probe()
    c.nodes["1"].node.progress()["3"].probe_sent = True

    leader.propose(b"x")
    leader.propose(b"y")

    assert [m.to for m in msgs(leader)].count("3") == 0


def test_replicate_state_stops_at_max_inflight() -> None:
    """In replicate state at most max_inflight appends are unacknowledged at once."""
    c = cluster(max_inflight=2)
    elect(c)
    leader = c.nodes["1"].node
    for i in range(5):
        leader.propose(b"%d" % i)

    to2 = [m for m in msgs(leader) if m.to == "2"]

    assert len(to2) == 2
    assert leader.progress()["2"].state is ProgressState.REPLICATE


# --------------------------------------------------------------------------- check quorum


@pytest.mark.parametrize("pre_vote", [False, True])
def test_leader_without_quorum_steps_down_within_two_election_timeouts(pre_vote: bool) -> None:
    """Check-quorum: a leader that hears from no quorum for an election timeout steps down."""
    c = cluster(pre_vote=pre_vote)
    elect(c)
    leader = c.nodes["1"].node

    with captured_logs() as logs:
        for _ in range(20):
            leader.tick()

    assert leader.role is Role.FOLLOWER
    assert {"event": "stepped_down", "reason": "lost_quorum"}.items() <= logs[0].items()


def test_leader_without_check_quorum_stays_leader_alone() -> None:
    """With check-quorum off, a lonely leader keeps its role."""
    c = cluster(check_quorum=False)
    elect(c)
    leader = c.nodes["1"].node

    for _ in range(50):
        leader.tick()

    assert leader.role is Role.LEADER


# --------------------------------------------------------------------------- API contract


def test_propose_on_follower_raises_not_leader_with_hint() -> None:
    """A follower refuses proposals and names the leader it knows."""
    c = cluster()
    elect(c)

    with pytest.raises(NotLeader) as info:
        c.nodes["2"].node.propose(b"x")

    assert info.value.leader_hint == "1"


def test_propose_during_transfer_raises_proposal_dropped() -> None:
    """A leader handing over leadership takes no proposals."""
    c = cluster()
    elect(c)
    c.nodes["1"].node.transfer_leader("2")

    with pytest.raises(ProposalDropped):
        c.nodes["1"].node.propose(b"x")


def test_read_index_without_leader_raises_not_leader() -> None:
    """A node that knows no leader cannot serve a linearizable read."""
    with pytest.raises(NotLeader):
        node().read_index(b"r")


def test_compact_beyond_applied_is_refused() -> None:
    """A snapshot can only cover entries the application has applied."""
    c = cluster()
    elect(c)
    n = c.nodes["1"].node

    with pytest.raises(ValueError, match="beyond applied"):
        n.compact(n.applied_index + 1, b"")
    c.compact("1", n.applied_index)
    with pytest.raises(LogCompacted):
        n.compact(n.applied_index, b"")


def test_restarted_node_recovers_its_hard_state_and_replays_committed_entries() -> None:
    """After a restart a node has its term, vote and commit, and re-delivers its log."""
    c = cluster()
    elect(c)
    c.nodes["1"].node.propose(b"x")
    c.stabilize(list(c.nodes))

    c.restart("2")
    n = c.nodes["2"].node

    assert (n.term, n.vote, n.commit_index, n.applied_index) == (1, "1", 2, 0)
    assert [e.index for e in n.ready().committed] == [1, 2]


def test_follower_installs_a_newer_snapshot() -> None:
    """A snapshot past the follower's commit replaces its log and sets its commit."""
    n = node()
    snap = Snapshot(10, 3, IDS, b"state")

    n.step(Message(MsgType.SNAPSHOT, "2", "1", term=3, snapshot=snap))
    rd = n.ready()

    assert rd.snapshot == snap
    assert (n.commit_index, n.last_index, n.first_index) == (10, 10, 11)
    assert [(m.type, m.index) for m in rd.messages] == [(MsgType.APPEND_RESP, 10)]


def test_config_requires_election_ticks_above_heartbeat_ticks() -> None:
    """A config whose election timeout is not above the heartbeat interval is refused."""
    with pytest.raises(ValueError, match="election_ticks"):
        Config(id="1", voters=IDS, election_ticks=2, heartbeat_ticks=2)


def test_messages_are_msgpack_plain() -> None:
    """Every message field is a plain value or one of the core's attrs classes."""
    m = Message(MsgType.APPEND, "1", "2", 1, entries=(Entry(1, 1, EntryKind.NOOP),))

    fields = attrs.asdict(m, recurse=True)

    assert fields["entries"][0]["kind"] == 1
    assert isinstance(fields["type"], int)


@pytest.mark.parametrize(
    ("log_term", "index", "granted"), [(1, 1, False), (1, 2, True), (2, 1, True), (0, 0, False)]
)
def test_pre_candidate_refuses_a_competing_pre_vote_of_the_same_tick(
    log_term: int, index: int, granted: bool
) -> None:
    """A pre-candidate whose own round began this tick refuses a pre-vote for the same
    next term unless the requester's log is more up to date (else both would win and
    split the vote); a tick later it grants again."""
    storage = MemoryStorage()
    storage.append([Entry(1, 1)])
    storage.set_hard_state(HardState(1, None, 1))
    n = RaftNode(config(), storage)
    n.campaign()
    assert n.role is Role.PRE_CANDIDATE
    drain(n)
    pre_vote = Message(MsgType.PRE_VOTE, "2", "1", term=2, log_term=log_term, index=index)

    n.step(pre_vote)
    (resp,) = msgs(n)
    n.tick()
    n.step(pre_vote)
    (later,) = msgs(n)

    assert (MsgType.PRE_VOTE_RESP, not granted) == (resp.type, resp.reject)
    assert ((log_term, index) == (0, 0)) is later.reject  # a shorter log: never
