"""The Raft driver: a thin anyio shell that runs a :class:`~runtime.raft.core.RaftNode`.

The driver owns one pure core and does its IO through three small interfaces, so the same
driver runs in production (``DurableStorage``, TCP transport, threads for fsync) and in
the deterministic simulator (:mod:`runtime.sim`: simulated disk and network, mock clock).

* :class:`Transport` -- ``send(to, msg)``: non-blocking, may drop (the network is
  unreliable; Raft retries). Inbound messages are handed to :meth:`RaftDriver.deliver`,
  which only enqueues.
* :class:`DriverStorage` -- the core's ``Storage`` plus the writes the driver makes:
  ``append``, ``set_hard_state``, ``apply_snapshot``, ``create_snapshot``, ``compact``
  and ``begin_sync``. :class:`~runtime.raft.durable.DurableStorage` fits as is.
* :class:`StateMachine` -- ``apply(entry) -> result``, ``snapshot() -> bytes``,
  ``restore(data)``. The replicated application (the failover ledger) implements it.

**The loop.** One task (:meth:`RaftDriver.run`) owns the core; nothing else touches it.
Each turn it ticks the core if a tick is due, feeds it every queued inbound message and
request (proposals, reads, transfers), and, if the core has a ``Ready``, handles it
strictly in this order:

0. send the early messages (``Ready.early_messages``: a leader's appends and heartbeats,
   which promise nothing about this node's disk), so the followers write the new entries
   while the leader writes them too (Raft thesis section 10.2.1);
1. persist: install the snapshot (durable on return), append the entries, save the hard
   state, and **fsync** (``begin_sync()``'s job, run by ``run_io``: a worker thread in
   production, a simulated latency in the simulator);
2. **then** send the other messages (a vote or an acknowledgement promises what step 1
   made durable, so it must never leave before the fsync);
3. then apply the committed entries to the state machine, in index order, and answer
   their proposers and any read whose index is now applied;
4. then ``advance`` (a leader's own entries count towards a commit from here on, so it
   never commits, applies or acknowledges an entry before its own fsync), and take a
   snapshot when ``snapshot_entries`` entries were applied since the last one.

Group commit falls out of the loop: while one fsync runs, every proposal and message that
arrives is queued, and the next turn feeds them all to the core, so one fsync covers the
whole batch. A commit-index-only change of the hard state is written but not fsynced on
its own (the commit index can be recovered; etcd does the same). A proposal wakes the
loop at once; it never waits for the next tick.

**Time.** The loop ticks every ``tick_interval`` seconds of the event loop's clock (an
idle loop sleeps through the ticks that cannot change anything -- a follower until its
election timeout, a leader until its next heartbeat -- and applies them when it wakes,
which is exactly equivalent and wakes a follower ~20 times a second instead of 100). A tick
missed because the loop was busy (slow fsync, a long pause of the Python process) is
dropped, not replayed: after a stall the node first reads the messages that queued up
(heartbeats from a healthy leader) before its election timer can fire, so a pause of this
process does not by itself start an election. The defaults (:data:`DEFAULT_TICK_INTERVAL`,
:data:`DEFAULT_HEARTBEAT_TICKS`, :data:`DEFAULT_ELECTION_TICKS`, see
:func:`raft_config`) are a heartbeat every 50 ms and an election timeout drawn from
[150 ms, 300 ms), the Raft paper's window:

* CPython stalls: a full garbage collection or a blocking call in some task can hold the
  event loop for tens of milliseconds. A 50 ms heartbeat with a 150 ms minimum timeout
  tolerates losing two heartbeats in a row (or a ~100 ms stall) without an election, and
  pre-vote plus leader stickiness turn a spurious timeout into a failed pre-vote round
  rather than a new term.
* Split votes: the timeout has 15 possible tick counts, and each process ticks at its own
  phase within the 10 ms period (processes start at unrelated instants; the simulator
  draws the phase from its seed), so two followers' timeouts are a continuous random
  variable over a 150 ms window rather than 15 buckets, and ties within one network round
  trip are rare.
* Cost: 100 wake-ups per second per node is negligible, and 10 ms ticks keep a simulated
  30 s run at 3000 ticks per node.

**Proposals.** :meth:`RaftDriver.propose` returns the state machine's result once the
entry is committed *and applied on this node*. It fails fast with ``NotLeader(hint)``
when this node is not the leader (also during an election: it never waits for one), with
``ProposalDropped`` during a leadership transfer, and with :class:`LeadershipLost` when
this node stops being leader before the entry committed. After ``LeadershipLost``,
:class:`ProposalTimeout` or cancellation the outcome is unknown: the entry may still
commit under the next leader. A client that retries must therefore make its commands
idempotent (carry a unique id the state machine deduplicates). A successful result means
the entry is durable on a majority and will be applied by every node, in the same order.

**Reads.** :meth:`RaftDriver.read_index` confirms with a quorum that the leader is still
leader and returns an index; once it returns, the local state machine has applied at
least that index, so reading it is linearizable. :meth:`RaftDriver.linearizable_read`
wraps that around a function. Works on followers too (the leader confirms the index).

**Observability.** :meth:`RaftDriver.status`, :meth:`RaftDriver.wait_for`,
:meth:`RaftDriver.wait_for_leader`, :meth:`RaftDriver.watch` and the ``on_status``
callback (called synchronously on every change of role, term, leader or
``leader_ready``). Logging goes to ``structlog.get_logger("regency.raft.driver")`` with
``node`` bound once and ``term`` on each event: ``driver_started``, ``leader_elected``,
``leader_ready``, ``leader_changed``, ``stepped_down``, ``became_candidate``,
``became_pre_candidate``, ``snapshot_taken``, ``snapshot_installed``,
``leadership_transfer_started``, ``send_failed``, ``inbox_overflowed``, ``apply_failed``,
``driver_stopped``.
"""

from __future__ import annotations

import itertools
import math
import queue
import random
import threading
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from functools import partial
from typing import Final, Protocol, TypeVar, final

import anyio
import anyio.abc
import anyio.to_thread
import attrs
import outcome
import sniffio
import structlog
import trio

from .core import (
    Config,
    Entry,
    EntryKind,
    HardState,
    Message,
    NotLeader,
    ProposalDropped,
    RaftError,
    RaftNode,
    Ready,
    Role,
    Snapshot,
    Storage,
)
from .progress import ProgressState

__all__ = [
    "DEFAULT_ELECTION_TICKS",
    "DEFAULT_HEARTBEAT_TICKS",
    "DEFAULT_TICK_INTERVAL",
    "DriverStopped",
    "DriverStorage",
    "IoRunner",
    "IoThread",
    "LeadershipLost",
    "ProposalCallback",
    "ProposalTimeout",
    "RaftDriver",
    "ReadTimeout",
    "StateMachine",
    "Status",
    "TransferFailed",
    "Transport",
    "raft_config",
    "run_in_thread",
]

T = TypeVar("T")

_module_log = structlog.get_logger("regency.raft.driver")

#: Seconds between ticks of the core.
DEFAULT_TICK_INTERVAL: Final = 0.010
#: Ticks between leader heartbeats: 50 ms.
DEFAULT_HEARTBEAT_TICKS: Final = 5
#: Minimum election timeout in ticks: 150 ms; the timeout is drawn from [150, 300) ms.
DEFAULT_ELECTION_TICKS: Final = 15
#: Applied entries between two snapshots of the state machine.
DEFAULT_SNAPSHOT_ENTRIES: Final = 10_000
#: Entries kept in the log behind a snapshot, so a slightly lagging follower catches up
#: from the log instead of receiving the whole snapshot.
DEFAULT_SNAPSHOT_KEEP: Final = 1_000
#: Inbound messages queued before further ones are dropped (and counted).
DEFAULT_MAX_INBOX: Final = 10_000


# --------------------------------------------------------------------------- errors


class LeadershipLost(RaftError):
    """This node stopped being leader before the request finished.

    For a proposal the outcome is unknown: the entry may still be committed by the next
    leader. Retry through the new leader with the same idempotency key.
    """


class ProposalTimeout(RaftError, TimeoutError):
    """The proposal was not applied within its timeout; it may still commit later."""


class ReadTimeout(RaftError, TimeoutError):
    """The read index was not confirmed within the timeout (no quorum reachable?)."""


class TransferFailed(RaftError, TimeoutError):
    """Leadership did not move within the timeout; this node is still leader."""


class DriverStopped(RaftError):
    """The driver stopped (or crashed) while the request waited, or before it was made."""


# --------------------------------------------------------------------------- interfaces


class Transport(Protocol):
    """Where the driver's outbound messages go.

    ``send`` must not block and may drop the message (Raft resends what matters). The
    transport hands inbound messages for this node to :meth:`RaftDriver.deliver`.
    """

    def send(self, to: str, msg: Message) -> None:
        """Queue ``msg`` for node ``to``; never blocks, may drop."""
        ...


class DriverStorage(Storage, Protocol):
    """The core's ``Storage`` plus the writes the driver makes for each ``Ready``.

    ``append`` and ``set_hard_state`` may be buffered; they are durable once the job
    returned by ``begin_sync`` (called after them) has run. ``apply_snapshot``,
    ``create_snapshot`` and ``compact`` are durable when they return. ``DurableStorage``
    implements this protocol.
    """

    def append(self, entries: Sequence[Entry]) -> None:
        """Append entries, replacing any stored entry at their indexes and all after it."""
        ...

    def set_hard_state(self, hard_state: HardState) -> None:
        """Save the hard state."""
        ...

    def apply_snapshot(self, snapshot: Snapshot) -> None:
        """Install a snapshot from the leader, discarding the log; durable on return."""
        ...

    def create_snapshot(self, snapshot: Snapshot) -> None:
        """Keep a locally made snapshot; durable on return."""
        ...

    def compact(self, index: int) -> None:
        """Discard the entries up to ``index``, which a snapshot covers; durable on return."""
        ...

    def begin_sync(self) -> Callable[[], None]:
        """Return a job that makes every write made before this call durable."""
        ...


class StateMachine(Protocol):
    """The replicated application. Must be deterministic: same entries, same state."""

    def apply(self, entry: Entry) -> object:
        """Apply a committed ``NORMAL`` entry; the result goes back to its proposer.

        Called once per entry per run, in index order (after a restart, again for the
        entries after the last snapshot). An exception is logged (``apply_failed``) and
        raised to the proposer; the entry still counts as applied, so the state machine
        must fail deterministically (the same way on every node).
        """
        ...

    def snapshot(self) -> bytes:
        """Return the whole state, as of the last applied entry."""
        ...

    def restore(self, data: bytes) -> None:
        """Replace the whole state with a snapshot's data (``b""``: the empty state)."""
        ...


class IoRunner(Protocol):
    """Runs a blocking storage job (an fsync) without blocking the event loop."""

    def __call__(self, fn: Callable[[], T], /) -> Awaitable[T]:
        """Run ``fn`` and return its result."""
        ...


async def run_in_thread(fn: Callable[[], T], /) -> T:
    """Run ``fn`` in a worker thread from anyio's pool (a generic :class:`IoRunner`)."""
    return await anyio.to_thread.run_sync(fn)


_Job = Callable[[], None]


@final
class IoThread:
    """An :class:`IoRunner` with one long-lived worker thread: the driver's default.

    Jobs run one at a time, in the order they were submitted (the driver has at most one
    in flight). Under trio a job costs one lock release to wake the thread and one
    ``run_sync_soon`` to wake the waiting task, where ``anyio.to_thread.run_sync`` also
    claims a pooled thread, names it, copies the context and enters cancel scopes on
    every call: that bookkeeping was a tenth of a Raft member's CPU per commit. Like
    ``anyio.to_thread.run_sync``, a cancelled caller still waits for its job to finish
    (an fsync cannot be interrupted). Other backends use ``anyio.to_thread.run_sync``.

    The thread starts at the first job and exits after :meth:`close`.
    """

    __slots__ = ("_jobs", "_thread")

    def __init__(self) -> None:
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None

    async def __call__(self, fn: Callable[[], T], /) -> T:
        """Run ``fn`` in the worker thread and return its result (or raise its error)."""
        if sniffio.current_async_library() != "trio":
            return await anyio.to_thread.run_sync(fn)
        if self._thread is None:
            self._thread = threading.Thread(target=self._work, name="regency-raft-io", daemon=True)
            self._thread.start()
        token = trio.lowlevel.current_trio_token()
        task = trio.lowlevel.current_task()
        reschedule = trio.lowlevel.reschedule

        def job() -> None:
            token.run_sync_soon(reschedule, task, outcome.capture(fn))

        self._jobs.put(job)
        result: T = await trio.lowlevel.wait_task_rescheduled(_abort_failed)
        return result

    def close(self) -> None:
        """Let the worker thread exit once the jobs already submitted have run."""
        if self._thread is not None:
            self._jobs.put(None)
            self._thread = None

    def _work(self) -> None:
        jobs = self._jobs
        while (job := jobs.get()) is not None:
            job()


def _abort_failed(_: object) -> trio.lowlevel.Abort:
    return trio.lowlevel.Abort.FAILED


def raft_config(
    id: str,
    voters: Sequence[str],
    *,
    rng: random.Random | None = None,
    election_ticks: int = DEFAULT_ELECTION_TICKS,
    heartbeat_ticks: int = DEFAULT_HEARTBEAT_TICKS,
    pre_vote: bool = True,
    check_quorum: bool = True,
    defer_commit_broadcast: bool = True,
    campaign_on_leader_loss: bool = True,
) -> Config:
    """Return a core :class:`~runtime.raft.core.Config` with the driver's default timings.

    With the default ``tick_interval`` of 10 ms: heartbeats every 50 ms, election timeout
    in [150, 300) ms, pre-vote and check-quorum on, and ``defer_commit_broadcast`` on: a
    follower learns a new commit index with the leader's next APPEND or at the leader's
    next tick (at most one tick later), which spares an APPEND and its acknowledgement
    per follower per commit when proposals come one at a time. ``campaign_on_leader_loss``
    on: a follower told by :meth:`RaftDriver.peer_down` that its leader's connection
    closed campaigns within a few ticks. ``rng`` defaults to one seeded from the OS
    (production); the simulator passes one derived from its seed.
    """
    return Config(
        id=id,
        voters=tuple(voters),
        election_ticks=election_ticks,
        heartbeat_ticks=heartbeat_ticks,
        pre_vote=pre_vote,
        check_quorum=check_quorum,
        defer_commit_broadcast=defer_commit_broadcast,
        campaign_on_leader_loss=campaign_on_leader_loss,
        rng=rng if rng is not None else random.Random(),
    )


# --------------------------------------------------------------------------- status


@attrs.frozen
class Status:
    """A point-in-time view of the driver.

    ``leader_ready`` is True on a leader once it has applied an entry of its own term
    (its no-op), hence every entry committed before its term: only then may a leader-only
    service (the orchestrator singleton) start.
    """

    id: str
    role: Role
    term: int
    leader: str | None
    commit: int
    applied: int
    last_index: int
    leader_ready: bool


# --------------------------------------------------------------------------- internals


#: Called by the loop with a proposal's outcome: ``(result, None)`` or ``(None, error)``.
ProposalCallback = Callable[[object, BaseException | None], None]


@final
class _Waiter:
    """A one-shot result slot for a request waiting on the loop, or a callback for it."""

    __slots__ = ("_callback", "_done", "_error", "_result", "abandoned", "index", "term")

    def __init__(self, callback: ProposalCallback | None = None) -> None:
        self._done = anyio.Event()
        self._callback = callback
        self._result: object = None
        self._error: BaseException | None = None
        self.index = 0
        self.term = 0
        self.abandoned = False

    def set_result(self, value: object) -> None:
        if not self._done.is_set():
            self._result = value
            self._done.set()
            if self._callback is not None:
                self._call(value, None)

    def set_error(self, error: BaseException) -> None:
        if not self._done.is_set():
            self._error = error
            self._done.set()
            if self._callback is not None:
                self._call(None, error)

    def _call(self, result: object, error: BaseException | None) -> None:
        assert self._callback is not None
        try:
            self._callback(result, error)
        except Exception as exc:  # a broken callback must not stop consensus
            _module_log.warning("proposal_callback_failed", error=repr(exc))

    @property
    def done(self) -> bool:
        return self._done.is_set()

    async def wait(self) -> object:
        await self._done.wait()
        if self._error is not None:
            raise self._error
        return self._result


def _never(_: Status) -> None:
    return None


@final
class RaftDriver:
    """Runs one Raft node: ticks, persists, sends, applies. See the module docstring.

    Create it, start :meth:`run` in a task group (``await tg.start(driver.run)``), feed it
    inbound messages with :meth:`deliver`, and stop it with :meth:`stop` (or by
    cancelling the task group: a crash, as far as the cluster is concerned).

    On start the state machine is restored from the storage's snapshot (if any), then the
    core hands out again every committed entry after it, so pass a fresh state machine.
    """

    def __init__(
        self,
        config: Config,
        storage: DriverStorage,
        transport: Transport,
        state_machine: StateMachine,
        *,
        tick_interval: float = DEFAULT_TICK_INTERVAL,
        tick_phase: float = 0.0,
        snapshot_entries: int = DEFAULT_SNAPSHOT_ENTRIES,
        snapshot_keep: int = DEFAULT_SNAPSHOT_KEEP,
        max_inbox: int = DEFAULT_MAX_INBOX,
        run_io: IoRunner | None = None,
        on_status: Callable[[Status], None] | None = None,
    ) -> None:
        """Create a driver; nothing runs until :meth:`run`.

        Args:
            config: The core's config (see :func:`raft_config` for good defaults).
            storage: The node's stable log (``DurableStorage`` in production).
            transport: Where outbound messages go.
            state_machine: The application; fresh (empty), see the class docstring.
            tick_interval: Seconds per tick (default 10 ms).
            tick_phase: Delay in seconds before the first tick, in ``[0, tick_interval)``;
                the simulator draws it from its seed so nodes tick at distinct instants.
            snapshot_entries: Snapshot the state machine and compact the log every this
                many applied entries (default 10 000).
            snapshot_keep: Entries kept in the log behind a snapshot (default 1 000).
            max_inbox: Inbound messages queued at most; more are dropped.
            run_io: Runs the blocking storage jobs (fsync); default an :class:`IoThread`
                of this driver's, whose thread exits when the driver stops.
            on_status: Called synchronously on every status change (role, term, leader,
                ``leader_ready``); must not block or raise.

        Raises:
            ValueError: A bad tick interval or snapshot setting, or the core refused the
                storage (see ``RaftNode``).
        """
        if not (tick_interval > 0 and math.isfinite(tick_interval)):
            raise ValueError(f"tick_interval must be a positive number, got {tick_interval}")
        if snapshot_entries < 1 or snapshot_keep < 0:
            raise ValueError("snapshot_entries must be >= 1 and snapshot_keep >= 0")
        self._cfg = config
        self._id = config.id
        self._storage = storage
        self._transport = transport
        self._sm = state_machine
        self._tick_interval = tick_interval
        self._tick_phase = tick_phase
        self._snapshot_entries = snapshot_entries
        self._snapshot_keep = snapshot_keep
        self._max_inbox = max_inbox
        self._io_thread: IoThread | None = None
        if run_io is None:
            run_io = self._io_thread = IoThread()
        self._run_io = run_io
        self._on_status = on_status if on_status is not None else _never
        self._core = RaftNode(config, storage)
        self._log = structlog.get_logger("regency.raft.driver", node=self._id)

        self._inbox: deque[Message] = deque()
        self._ops: deque[tuple[Callable[[], None], _Waiter | None]] = deque()
        self._wake = anyio.Event()
        self._next_tick = 0.0
        self._paused_until = -math.inf
        self._tick_budget = 1  # ticks the next turn may apply before dropping the rest
        self._leader_ticks = 0  # ticks since this node became leader (heartbeat phase)
        self._proposals: dict[int, _Waiter] = {}
        self._reads: dict[bytes, _Waiter] = {}
        self._read_ready: list[tuple[int, bytes]] = []
        self._read_ids = itertools.count(1)
        self._snap_index = storage.snapshot().index
        self._restored_index = 0  # entries up to here are in the restored snapshot
        hs, _ = storage.initial_state()
        self._synced_term_vote: tuple[int, str | None] = (hs.term, hs.vote)
        self._leader_ready = False
        self._status = self._make_status()
        self._changed = anyio.Event()
        self._scope: anyio.CancelScope | None = None
        self._running = False
        self._stopped = False
        self._done = anyio.Event()
        self.dropped_messages = 0
        """Inbound messages dropped because the inbox was full."""
        self.fsyncs = 0
        """Number of fsync jobs run (one per persisted batch)."""

    # ------------------------------------------------------------------ introspection

    @property
    def id(self) -> str:
        """This node's id."""
        return self._id

    @property
    def node(self) -> RaftNode:
        """The core, for inspection only (tests, the simulator's checks): never drive it."""
        return self._core

    @property
    def state_machine(self) -> StateMachine:
        """The state machine this driver applies to."""
        return self._sm

    def status(self) -> Status:
        """Return the current status (role, term, leader, commit, applied...)."""
        return self._make_status()

    def _make_status(self) -> Status:
        c = self._core
        return Status(
            id=self._id,
            role=c.role,
            term=c.term,
            leader=c.leader,
            commit=c.commit_index,
            applied=c.applied_index,
            last_index=c.last_index,
            leader_ready=self._leader_ready,
        )

    async def wait_for(
        self, predicate: Callable[[Status], bool], timeout: float | None = None
    ) -> Status:
        """Wait until ``predicate(status)`` holds.

        The predicate is checked now and after every change of role, term, leader or
        ``leader_ready`` (not after every commit: poll for commit or applied indexes).

        Raises:
            TimeoutError: Not within ``timeout`` seconds.
        """
        with anyio.fail_after(timeout):
            while True:
                st = self._make_status()
                if predicate(st):
                    return st
                await self._changed.wait()

    async def wait_for_leader(self, timeout: float | None = None) -> str:
        """Return the id of the leader once this node knows one (at once if it does).

        Raises:
            TimeoutError: No leader known within ``timeout`` seconds.
        """
        st = await self.wait_for(lambda s: s.leader is not None, timeout)
        assert st.leader is not None
        return st.leader

    async def watch(self) -> AsyncIterator[Status]:
        """Yield the status now and after each change of role, term, leader or readiness.

        Latest-value semantics: a slow consumer sees the newest status and may miss
        intermediate ones (use ``on_status`` to see every change).
        """
        last: Status | None = None
        while True:
            st = self._make_status()
            key = (st.role, st.term, st.leader, st.leader_ready)
            if last is None or key != (last.role, last.term, last.leader, last.leader_ready):
                last = st
                yield st
            await self._changed.wait()

    # ------------------------------------------------------------------ inputs

    def deliver(self, msg: Message) -> None:
        """Queue an inbound message for the loop; never blocks.

        When the inbox holds ``max_inbox`` messages the message is dropped and counted
        (``dropped_messages``), as a lossy network would.
        """
        if len(self._inbox) >= self._max_inbox:
            self.dropped_messages += 1
            if self.dropped_messages & (self.dropped_messages - 1) == 0:
                self._log.warning("inbox_overflowed", dropped=self.dropped_messages)
            return
        self._inbox.append(msg)
        self._wake.set()

    async def propose(self, data: bytes, timeout: float | None = None) -> object:
        """Replicate ``data``; return the state machine's result once applied here.

        Args:
            data: The command, opaque to Raft.
            timeout: Seconds to wait for the result (None: until decided; the wait still
                ends with ``LeadershipLost`` when check-quorum deposes a cut-off leader).

        Returns:
            What ``StateMachine.apply`` returned for the entry on this node. The entry is
            then durable on a majority and every node applies it at the same index.

        Raises:
            NotLeader: Not the leader (``leader_hint``: the leader known, or None during
                an election); the entry was not appended, retrying is safe.
            ProposalDropped: A leadership transfer is in progress; not appended.
            LeadershipLost: Leadership was lost first; the entry may still commit.
            ProposalTimeout: Not applied within ``timeout``; it may still commit.
            DriverStopped: The driver is not running, or stopped meanwhile.
            Exception: Whatever ``StateMachine.apply`` raised for this entry.
        """
        waiter = self._enqueue_proposal(data, None)
        return await self._await(waiter, timeout, ProposalTimeout, "proposal")

    def propose_nowait(self, data: bytes, done: ProposalCallback) -> None:
        """Replicate ``data`` like :meth:`propose`, but report the outcome to ``done``.

        For a server that answers its clients itself: no task waits, and the loop calls
        ``done(result, None)`` right after applying the entry, or ``done(None, error)``
        with the error :meth:`propose` would raise (``LeadershipLost``,
        ``DriverStopped``, whatever ``StateMachine.apply`` raised, ...). There is no
        timeout: the outcome always comes, because a leader that cannot commit steps
        down (check-quorum) and a stopping driver fails every request. ``done`` runs on
        the loop, so it must be quick and must not block; an exception it raises is
        logged and ignored.

        Raises:
            NotLeader, ProposalDropped, DriverStopped: at once, as :meth:`propose`
                (``done`` is then never called).
        """
        self._enqueue_proposal(data, done)

    def _enqueue_proposal(self, data: bytes, done: ProposalCallback | None) -> _Waiter:
        self._check_running()
        self._check_leader()
        waiter = _Waiter(done)

        def op() -> None:
            waiter.index = self._core.propose(data)
            waiter.term = self._core.term
            self._proposals[waiter.index] = waiter

        self._ops.append((op, waiter))
        self._wake.set()
        return waiter

    async def read_index(self, timeout: float | None = None) -> int:
        """Confirm leadership with a quorum and wait until this node applied that index.

        When it returns, the state machine reflects every write acknowledged before the
        call: reading it now is linearizable. On a follower the leader confirms the index.

        Raises:
            NotLeader: No leader is known (an election is going on); retry later.
            LeadershipLost: The leader changed while the read waited; retry.
            ReadTimeout: Not confirmed within ``timeout`` (e.g. the request was lost).
            DriverStopped: The driver is not running, or stopped meanwhile.
        """
        self._check_running()
        if self._core.role is not Role.LEADER and self._core.leader is None:
            raise NotLeader(None)
        waiter = _Waiter()
        ctx = f"{self._id}:{next(self._read_ids)}".encode()

        def op() -> None:
            self._reads[ctx] = waiter
            try:
                self._core.read_index(ctx)
            except BaseException:
                del self._reads[ctx]
                raise

        self._ops.append((op, waiter))
        self._wake.set()
        try:
            index = await self._await(waiter, timeout, ReadTimeout, "read")
        finally:
            self._reads.pop(ctx, None)
        assert isinstance(index, int)
        return index

    async def linearizable_read(self, fn: Callable[[], T], timeout: float | None = None) -> T:
        """Run ``fn`` (a read of the state machine) linearizably; see :meth:`read_index`."""
        await self.read_index(timeout)
        return fn()

    async def transfer_leadership(self, to: str | None = None, timeout: float | None = None) -> str:
        """Hand leadership to ``to`` (default: the most up-to-date other voter).

        Proposals fail with ``ProposalDropped`` while the transfer runs. Returns once
        this node is no longer leader.

        Args:
            to: The target voter, or None to pick the follower with the longest log.
            timeout: Seconds to wait (default: two maximum election timeouts).

        Returns:
            The target's id.

        Raises:
            NotLeader: This node is not the leader.
            TransferFailed: Still leader at the timeout (the core abandons a transfer
                after one election timeout).
            ValueError: No other voter to transfer to.
            DriverStopped: The driver is not running.
        """
        self._check_running()
        if self._core.role is not Role.LEADER:
            raise NotLeader(self._core.leader)
        if to is None:
            progress = self._core.progress()
            others = sorted(
                (v for v in self._core.voters if v != self._id),
                key=lambda v: (-progress[v].match if v in progress else 0, v),
            )
            if not others:
                raise ValueError("raft: no other voter to transfer leadership to")
            to = others[0]
        target = to
        self._log.info("leadership_transfer_started", term=self._core.term, to=target)
        self._ops.append((lambda: self._core.transfer_leader(target), None))
        self._wake.set()
        if timeout is None:
            timeout = 4 * self._cfg.election_ticks * self._tick_interval
        try:
            await self.wait_for(lambda s: s.role is not Role.LEADER or self._stopped, timeout)
        except TimeoutError:
            raise TransferFailed(f"raft: leadership did not move to {target}") from None
        return target

    def campaign(self) -> None:
        """Start an election now (after a pre-vote round); ignored on a leader."""
        self._ops.append((self._core.campaign, None))
        self._wake.set()

    def peer_down(self, peer: str) -> None:
        """Tell the core that member *peer* is lost (its connection closed for good).

        A follower that lost its leader this way campaigns within a few ticks instead of
        at its election timeout (:meth:`RaftNode.peer_down
        <runtime.raft.core.RaftNode.peer_down>`). The shell calls it when the connection
        closed and a redial failed (``DistTransport`` does, from ``NodeDown``).
        """
        self._ops.append((partial(self._core.peer_down, peer), None))
        self._wake.set()

    def pause_for(self, seconds: float) -> None:
        """Stop ticking and processing for ``seconds``, as a stalled process would.

        A test aid for the simulator: inbound messages and requests queue up and are
        handled when the pause ends. A pause in progress is extended, never shortened.
        """
        self._paused_until = max(self._paused_until, anyio.current_time() + seconds)
        self._wake.set()

    # ------------------------------------------------------------------ lifecycle

    async def run(
        self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        """Run the loop until :meth:`stop` or cancellation; signals started at once.

        Cancelling the enclosing scope is a crash: nothing is transferred, and every
        waiting request fails with ``DriverStopped``.

        Raises:
            RuntimeError: The driver already ran (a driver runs once; build a new one
                from the same storage to restart).
        """
        if self._running or self._stopped:
            raise RuntimeError("raft: a driver runs only once")
        self._running = True
        self._next_tick = anyio.current_time() + self._tick_phase
        snap = self._storage.snapshot()
        if snap.index > 0:
            self._sm.restore(snap.data)
            self._restored_index = snap.index
        self._log.info(
            "driver_started",
            term=self._core.term,
            commit=self._core.commit_index,
            applied=self._core.applied_index,
            last_index=self._core.last_index,
        )
        try:
            with anyio.CancelScope() as scope:
                self._scope = scope
                task_status.started()
                await self._loop()
        finally:
            self._running = False
            self._stopped = True
            self._fail_all(DriverStopped(f"raft: driver {self._id} stopped"))
            if self._io_thread is not None:
                self._io_thread.close()
            self._notify()
            self._done.set()
            self._log.info("driver_stopped", term=self._core.term)

    async def stop(self, timeout: float | None = None) -> None:
        """Stop the driver; a leader first hands leadership to another node.

        The transfer is bounded by ``timeout`` (default: two maximum election timeouts);
        if it does not finish in time the driver stops anyway (the others elect a leader
        after an election timeout). Idempotent; returns once the loop has exited.
        """
        if self._running and not self._stopped:
            if self._core.role is Role.LEADER and len(self._core.voters) > 1:
                try:
                    await self.transfer_leadership(timeout=timeout)
                except (RaftError, ValueError) as exc:
                    self._log.info("leadership_transfer_failed", error=str(exc))
            if self._scope is not None:
                self._scope.cancel()
            await self._done.wait()

    # ------------------------------------------------------------------ the loop

    async def _loop(self) -> None:
        core = self._core
        while True:
            now = anyio.current_time()
            if self._paused_until > now:
                await anyio.sleep_until(self._paused_until)
                continue
            budget, self._tick_budget = self._tick_budget, 1
            while now >= self._next_tick and budget > 0:
                core.tick()
                self._leader_ticks += 1
                self._next_tick += self._tick_interval
                budget -= 1
            if self._next_tick <= now:  # we were late (busy, stalled): drop missed ticks
                self._next_tick = now + self._tick_interval
            inbox = self._inbox
            while inbox:
                core.step(inbox.popleft())
            ops = self._ops
            while ops:
                op, waiter = ops.popleft()
                try:
                    op()
                except RaftError as exc:
                    if waiter is not None:
                        waiter.set_error(exc)
                    else:
                        self._log.info("request_refused", term=core.term, error=str(exc))
            st = self._status
            if core.role is not st.role or core.term != st.term or core.leader != st.leader:
                self._on_role_change()
            if core.has_ready():
                await self._handle_ready(core.ready())
                continue
            if inbox or ops:
                continue
            # Idle: sleep through the ticks in which nothing can happen, unless woken.
            ticks = self._idle_ticks()
            self._tick_budget = ticks
            self._wake = anyio.Event()
            with anyio.move_on_at(self._next_tick + (ticks - 1) * self._tick_interval):
                await self._wake.wait()

    def _idle_ticks(self) -> int:
        """Return how many ticks can pass before a tick changes anything (at least 1).

        Ticking a core N times in a row with no input in between is the same as ticking
        it at each interval, so an idle loop sleeps until the tick that matters: a
        follower's or candidate's election timeout, a leader's next heartbeat or
        check-quorum round, or the end of a follower's leader lease when a pre-vote
        request waits for it. Messages and requests wake it earlier, and the ticks that
        elapsed meanwhile are applied before they are handled.
        """
        core = self._core
        if core.role is Role.LEADER:
            if core.has_commit_broadcast_due:
                return 1  # the followers learn the new commit index at the next tick
            if any(pr.state is ProgressState.SNAPSHOT for pr in core.progress().values()):
                return 1  # the snapshot timeout counts every tick
            hb = self._cfg.heartbeat_ticks
            ticks = min(
                hb - self._leader_ticks % hb,
                self._cfg.election_ticks - core.election_elapsed,
            )
        else:
            ticks = core.randomized_election_timeout - core.election_elapsed
            if core.has_deferred_pre_votes:  # answered at the tick the lease runs out
                ticks = min(ticks, self._cfg.election_ticks - core.election_elapsed)
        return max(1, ticks)

    async def _handle_ready(self, rd: Ready) -> None:
        core = self._core
        storage = self._storage
        # 0. A leader's appends leave now: the followers persist while we do.
        if rd.early_messages:
            self._send_all(rd.early_messages)
        # 1. Persist (snapshot, entries, hard state), then fsync.
        # A snapshot makes the commit index jump: the hard state after it must be durable
        # too, or a restart would find a commit index behind the snapshot.
        must_sync = bool(rd.entries) or rd.snapshot is not None
        if rd.snapshot is not None:
            snap = rd.snapshot
            await self._run_io(lambda: storage.apply_snapshot(snap))
        if rd.entries:
            storage.append(rd.entries)
        if rd.hard_state is not None:
            hs = rd.hard_state
            storage.set_hard_state(hs)
            if (hs.term, hs.vote) != self._synced_term_vote:
                must_sync = True
        if must_sync:
            await self._run_io(storage.begin_sync())
            self.fsyncs += 1
            if rd.hard_state is not None:
                self._synced_term_vote = (rd.hard_state.term, rd.hard_state.vote)
        # 2. Only now send: the messages may promise what step 1 made durable.
        if rd.messages:
            self._send_all(rd.messages)
        # 3. Apply.
        if rd.snapshot is not None:
            self._install_snapshot(rd.snapshot)
        for e in rd.committed:
            self._apply(e)
        for rs in rd.read_states:
            self._read_ready.append((rs.index, rs.context))
        applied = rd.committed[-1].index if rd.committed else core.applied_index
        if rd.snapshot is not None:
            applied = max(applied, rd.snapshot.index)
        self._serve_reads(applied)
        # 4. Advance, then maybe snapshot.
        core.advance(rd)
        if (
            not self._leader_ready
            and core.role is Role.LEADER
            and rd.committed
            and rd.committed[-1].term == core.term
        ):
            self._leader_ready = True
            self._log.info("leader_ready", term=core.term, applied=core.applied_index)
            self._notify()
        if core.applied_index - self._snap_index >= self._snapshot_entries:
            await self._take_snapshot()

    def _send_all(self, msgs: Sequence[Message]) -> None:
        send = self._transport.send
        for m in msgs:
            try:
                send(m.to, m)
            except Exception as exc:  # a broken transport must not stop consensus
                self._log.warning("send_failed", term=self._core.term, to=m.to, error=repr(exc))

    def _apply(self, e: Entry) -> None:
        waiter = self._proposals.pop(e.index, None)
        if e.index <= self._restored_index:
            # After a restart the core re-hands out entries from the first index kept in
            # the log, which may precede the snapshot (``snapshot_keep``); the state
            # machine already holds them.
            return
        if e.kind is not EntryKind.NORMAL:
            if waiter is not None:  # pragma: no cover - our index held someone else's entry
                waiter.set_error(LeadershipLost(f"raft: entry {e.index} was replaced"))
            return
        try:
            result = self._sm.apply(e)
        except Exception as exc:
            self._log.warning("apply_failed", term=self._core.term, index=e.index, error=repr(exc))
            if waiter is not None and waiter.term == e.term:
                waiter.set_error(exc)
            return
        if waiter is not None:
            if waiter.term == e.term:
                waiter.set_result(result)
            else:
                waiter.set_error(
                    LeadershipLost(f"raft: entry {e.index} was replaced by term {e.term}")
                )

    def _install_snapshot(self, snap: Snapshot) -> None:
        self._sm.restore(snap.data)
        self._snap_index = snap.index
        self._log.info("snapshot_installed", term=self._core.term, index=snap.index)
        for index in [i for i in self._proposals if i <= snap.index]:
            self._proposals.pop(index).set_error(
                LeadershipLost(f"raft: entry {index} outcome unknown (snapshot installed)")
            )

    def _serve_reads(self, applied: int) -> None:
        if not self._read_ready:
            return
        keep: list[tuple[int, bytes]] = []
        for index, ctx in self._read_ready:
            if index <= applied:
                waiter = self._reads.get(ctx)
                if waiter is not None:
                    waiter.set_result(index)
            else:
                keep.append((index, ctx))
        self._read_ready = keep

    def _on_role_change(self) -> None:
        core = self._core
        role, term, leader = core.role, core.term, core.leader
        old = self._status
        log = self._log
        if role is not old.role:
            if role is Role.LEADER:
                self._leader_ticks = 0
                log.info("leader_elected", term=term)
            elif role is Role.CANDIDATE:
                log.info("became_candidate", term=term)
            elif role is Role.PRE_CANDIDATE:
                log.info("became_pre_candidate", term=term)
            if old.role is Role.LEADER:
                log.info("stepped_down", term=term, role=role.value, leader=leader)
        if leader != old.leader and leader is not None and leader != self._id:
            log.info("leader_changed", term=term, leader=leader)
        if old.role is Role.LEADER and (role is not Role.LEADER or term != old.term):
            self._leader_ready = False
            commit = core.commit_index
            for index in [i for i in self._proposals if i > commit]:
                self._proposals.pop(index).set_error(
                    LeadershipLost(
                        f"raft: {self._id} lost leadership in term {old.term} before entry "
                        f"{index} committed; it may still commit"
                    )
                )
        if (leader, term) != (old.leader, old.term):
            reads, self._reads = self._reads, {}
            self._read_ready = []
            for w in reads.values():
                w.set_error(LeadershipLost("raft: the leader changed while the read waited"))
        self._notify()

    async def _take_snapshot(self) -> None:
        core = self._core
        index = core.applied_index
        data = self._sm.snapshot()
        snap = core.compact(index, data)
        storage = self._storage
        compact_to = index - self._snapshot_keep

        def save() -> None:
            storage.create_snapshot(snap)
            if compact_to >= storage.first_index():
                storage.compact(compact_to)

        await self._run_io(save)
        self._snap_index = index
        self._log.info("snapshot_taken", term=core.term, index=index, bytes=len(data))

    # ------------------------------------------------------------------ helpers

    def _notify(self) -> None:
        st = self._make_status()
        self._status = st
        changed, self._changed = self._changed, anyio.Event()
        changed.set()
        self._on_status(st)

    def _check_running(self) -> None:
        if not self._running:
            raise DriverStopped(f"raft: driver {self._id} is not running")

    def _check_leader(self) -> None:
        core = self._core
        if core.role is not Role.LEADER:
            raise NotLeader(core.leader)
        if core.lead_transferee is not None:
            raise ProposalDropped(f"raft: leadership transfer to {core.lead_transferee}")

    async def _await(
        self, waiter: _Waiter, timeout: float | None, timeout_error: type[RaftError], what: str
    ) -> object:
        try:
            with anyio.fail_after(timeout):
                return await waiter.wait()
        except TimeoutError:
            if waiter.done:
                return await waiter.wait()
            raise timeout_error(
                f"raft: {what} not done within {timeout} s; it may still take effect"
            ) from None
        finally:
            waiter.abandoned = True
            if not waiter.done and self._proposals.get(waiter.index) is waiter:
                del self._proposals[waiter.index]

    def _fail_all(self, error: RaftError) -> None:
        for w in self._proposals.values():
            w.set_error(error)
        self._proposals.clear()
        for w in self._reads.values():
            w.set_error(error)
        self._reads.clear()
        for _, pending in self._ops:
            if pending is not None:
                pending.set_error(error)
        self._ops.clear()
