"""The built-in Raft as a :class:`~supervisors.coordination.Coordinator` (the embedded default).

A :class:`RaftCoordinator` is one member of an orchestrator group's Raft cluster: a
:class:`~runtime.raft.driver.RaftDriver` whose state machine is the
:class:`~supervisors.ledger.TaskLedger`, whose log lives in the storage it is given
(``DurableStorage`` in production, ``SimStorage`` in the simulator), and whose messages
travel over regency distribution (Raft's ``Message`` is sent to ``Name(SERVICE, peer)``,
as :mod:`runtime.raft.dist_transport` does; the member ids are the node names).

Running. :meth:`RaftCoordinator.serve` is the body of the member's process (a supervisor
child, see :mod:`supervisors.failover`): it registers the process as :data:`SERVICE`
(unless it already is), builds a fresh ledger and a fresh driver on a freshly opened
storage, runs the driver, and hands it every Raft message the process receives. Each
run is one *incarnation*: if the process ends (crash, supervisor restart, node stop),
the driver stops with it, as a crash would, and the next ``serve`` recovers from the
storage. Between incarnations the view is ``LeaderView(None, last term, False, False)``
and every request raises ``CoordinatorStopped``. :meth:`stop` ends an incarnation in an
orderly way (a leader first hands leadership over).

Terms are Raft terms: the leader of term T is the only node that can commit entries of
term T, so a leader's term is a sound fencing token. ``ready`` is the driver's
``leader_ready``: the leader applied an entry of its own term, hence everything
committed before it.

Mapping of the driver's outcomes to the interface's:

* ``append``: not leader -> :class:`~supervisors.coordination.NotLeader` (``hint``);
  a leadership transfer in progress -> ``NotLeader(None)``; leadership lost before the
  commit, or the timeout -> :class:`~supervisors.coordination.OutcomeUnknown`; driver
  not running -> :class:`~supervisors.coordination.CoordinatorStopped`.
* ``read``: read index, then ``fn(ledger)``. No leader known -> ``NotLeader(None)``;
  leader changed meanwhile or the timeout -> :class:`~supervisors.coordination.Unavailable`.
* ``resign``: Raft leadership transfer to ``to`` or the most up-to-date follower;
  ``NotLeader`` when not leading; ``TimeoutError`` when leadership did not move.

Every request without a timeout uses ``default_timeout`` (a lost read request would
otherwise wait forever). Logs ``ledger_committed`` (``node``, ``term``: the entry's term,
``index``, ``result``) for every applied command, on every member.
"""

from __future__ import annotations

import random
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Final, TypeVar, final

import anyio
import structlog

from runtime.api import monitor_nodes, receive
from runtime.node import Node, current_process
from runtime.raft.core import Entry, ProposalDropped, Role
from runtime.raft.core import NotLeader as RaftNotLeader
from runtime.raft.dist_transport import SERVICE, DistTransport, route
from runtime.raft.driver import (
    DEFAULT_ELECTION_TICKS,
    DEFAULT_HEARTBEAT_TICKS,
    DEFAULT_TICK_INTERVAL,
    DriverStopped,
    DriverStorage,
    IoRunner,
    LeadershipLost,
    ProposalTimeout,
    RaftDriver,
    ReadTimeout,
    Status,
    TransferFailed,
    raft_config,
    run_in_thread,
)

from .coordination import (
    Applied,
    AppliedFeed,
    CoordinatorStopped,
    LeaderView,
    NotLeader,
    OutcomeUnknown,
    Unavailable,
)
from .ledger import (
    Command,
    LedgerConfig,
    MalformedCommand,
    Result,
    TaskLedger,
    decode_command,
    describe,
    encode_command,
)

__all__ = ["DEFAULT_REQUEST_TIMEOUT", "SERVICE", "RaftCoordinator"]

T = TypeVar("T")

#: Seconds a request waits when no timeout is given.
DEFAULT_REQUEST_TIMEOUT: Final = 5.0


@final
class _LedgerMachine:
    """The driver's state machine: the ledger, plus the log line and the watch feed."""

    def __init__(self, ledger: TaskLedger, feed: AppliedFeed, node: str) -> None:
        self.ledger = ledger
        self._feed = feed
        self._log = structlog.get_logger("regency", node=node)

    def apply(self, entry: Entry) -> object:
        result = self.ledger.apply(entry)
        try:
            command: Command | None = decode_command(entry.data)
        except MalformedCommand:
            command = None
        self._log.info(
            "ledger_committed", term=entry.term, index=entry.index, result=describe(result)
        )
        self._feed.publish(Applied(entry.index, command, result))
        return result

    def snapshot(self) -> bytes:
        return self.ledger.snapshot()

    def restore(self, data: bytes) -> None:
        self.ledger.restore(data)
        self._feed.publish(Applied(0, None, None))


@final
class RaftCoordinator:
    """One member of an orchestrator group on the built-in Raft; see the module docstring.

    Args:
        node: the member's node (its name is the member id), with distribution started
            and every other member added as a peer.
        members: every member's node name, this one included (the Raft voters).
        storage: opens this member's Raft storage; called once per incarnation, e.g.
            ``lambda: DurableStorage.open(path, voters=members)``.
        ledger_config: the ledger's policy (the same on every member).
        tick_interval, election_ticks, heartbeat_ticks: Raft timing (driver defaults:
            10 ms ticks, 50 ms heartbeats, elections after 150-300 ms).
        run_io: runs the storage's fsync jobs (a thread; the simulator's disk latency).
        rng: Raft's election jitter (seed it in the simulator).
        tick_phase: delay before the first tick (the simulator spreads nodes).
        snapshot_entries: applied entries between ledger snapshots.
        default_timeout: seconds a request waits when given no timeout.
    """

    def __init__(
        self,
        node: Node,
        members: Sequence[str],
        *,
        storage: Callable[[], DriverStorage],
        ledger_config: LedgerConfig | None = None,
        tick_interval: float = DEFAULT_TICK_INTERVAL,
        election_ticks: int = DEFAULT_ELECTION_TICKS,
        heartbeat_ticks: int = DEFAULT_HEARTBEAT_TICKS,
        run_io: IoRunner = run_in_thread,
        rng: random.Random | None = None,
        tick_phase: float = 0.0,
        snapshot_entries: int = 10_000,
        default_timeout: float = DEFAULT_REQUEST_TIMEOUT,
    ) -> None:
        if node.name not in members:
            raise ValueError(f"member list {list(members)} lacks this node {node.name!r}")
        self._node = node
        self._members = tuple(members)
        self._storage = storage
        self._ledger_config = ledger_config or LedgerConfig()
        self._tick_interval = tick_interval
        self._election_ticks = election_ticks
        self._heartbeat_ticks = heartbeat_ticks
        self._run_io = run_io
        self._rng = rng
        self._tick_phase = tick_phase
        self._snapshot_entries = snapshot_entries
        self.default_timeout = default_timeout
        self._feed = AppliedFeed()
        self._driver: RaftDriver | None = None
        self._ledger = TaskLedger(self._ledger_config)
        self._changed = anyio.Event()
        self._last_term = 0
        self._log = structlog.get_logger("regency", node=node.name)

    # ------------------------------------------------------------------ introspection

    @property
    def node(self) -> str:
        """This member's name."""
        return self._node.name

    @property
    def members(self) -> tuple[str, ...]:
        """Every member's name."""
        return self._members

    @property
    def driver(self) -> RaftDriver | None:
        """The running driver (tests, the simulator's faults), or None between runs."""
        return self._driver

    @property
    def ledger(self) -> TaskLedger:
        """The local ledger (possibly stale on a follower; never change it)."""
        return self._ledger

    def _running(self) -> RaftDriver:
        driver = self._driver
        if driver is None:
            raise CoordinatorStopped(f"coordinator {self.node} is not running")
        return driver

    def _on_status(self, status: Status) -> None:
        self._last_term = status.term
        changed, self._changed = self._changed, anyio.Event()
        changed.set()

    # ------------------------------------------------------------------ running

    async def serve(self) -> None:
        """Run one incarnation in the calling process until it ends; see the module doc.

        Raises:
            RuntimeError: an incarnation is already running.
            AlreadyRegistered: another process holds the name :data:`SERVICE`.
        """
        if self._driver is not None:
            raise RuntimeError(f"coordinator {self.node} is already running")
        proc = current_process()
        if proc.name != SERVICE:
            self._node.register(SERVICE, proc.pid)
        config = raft_config(
            self.node,
            self._members,
            rng=self._rng,
            election_ticks=self._election_ticks,
            heartbeat_ticks=self._heartbeat_ticks,
        )
        ledger = TaskLedger(self._ledger_config)
        driver = RaftDriver(
            config,
            self._storage(),
            DistTransport(self._node, SERVICE),
            _LedgerMachine(ledger, self._feed, self.node),
            tick_interval=self._tick_interval,
            tick_phase=self._tick_phase,
            snapshot_entries=self._snapshot_entries,
            run_io=self._run_io,
            on_status=self._on_status,
        )
        self._ledger = ledger
        self._driver = driver
        try:
            async with anyio.create_task_group() as tg:
                await tg.start(driver.run)
                self._on_status(driver.status())
                monitor_nodes()
                while True:
                    msg = await receive()
                    if route(driver, msg):
                        pass
                    elif msg == "stop":
                        break
                    else:
                        self._log.warning("raft_message_dropped", message=repr(msg)[:200])
                await driver.stop()
                tg.cancel_scope.cancel()
        finally:
            self._driver = None
            self._on_status(driver.status())

    async def stop(self, timeout: float | None = None) -> None:
        """End the running incarnation in order (a leader hands leadership over first).

        Returns once the driver stopped; the serving process then returns. Idempotent.
        """
        driver = self._driver
        if driver is not None:
            await driver.stop(timeout)
            try:
                self._node.send(SERVICE, "stop")
            except Exception:  # the process is gone already
                self._log.debug("coordinator_stop_unsent")

    # ------------------------------------------------------------------ the interface

    def view(self) -> LeaderView:
        """Who leads now, as this node sees it."""
        driver = self._driver
        if driver is None:
            return LeaderView(None, self._last_term, False, False)
        st = driver.status()
        is_leader = st.role is Role.LEADER
        return LeaderView(st.leader, st.term, is_leader, is_leader and st.leader_ready)

    async def wait_view(
        self, predicate: Callable[[LeaderView], bool], timeout: float | None = None
    ) -> LeaderView:
        """The first view satisfying ``predicate`` (now or after a change).

        Raises:
            TimeoutError: not within ``timeout`` seconds (None: wait forever).
        """
        with anyio.fail_after(timeout):
            while True:
                changed = self._changed
                view = self.view()
                if predicate(view):
                    return view
                await changed.wait()

    async def campaign(self, timeout: float | None = None) -> int:
        """Wait until this node leads and is ready (Raft elects on its own); the term."""
        view = await self.wait_view(lambda v: v.is_leader and v.ready, timeout)
        return view.term

    async def resign(self, to: str | None = None, timeout: float | None = None) -> None:
        """Transfer leadership to ``to`` (or the most up-to-date follower).

        Raises:
            NotLeader: this node does not lead.
            TimeoutError: still leading at the timeout.
            CoordinatorStopped: not running.
        """
        driver = self._running()
        try:
            await driver.transfer_leadership(to, timeout)
        except RaftNotLeader as exc:
            raise NotLeader(exc.leader_hint) from None
        except TransferFailed as exc:
            raise TimeoutError(str(exc)) from None
        except DriverStopped as exc:
            raise CoordinatorStopped(str(exc)) from None

    async def append(self, command: Command, timeout: float | None = None) -> Result:
        """Replicate ``command``; the ledger's result once applied here.

        Raises:
            NotLeader: not the leader (or a transfer is under way); nothing appended.
            OutcomeUnknown: leadership lost first, or no result within the timeout.
            CoordinatorStopped: not running, or stopped meanwhile.
            MalformedCommand: the command does not encode (a bug of the caller).
        """
        driver = self._running()
        data = encode_command(command)
        try:
            result = await driver.propose(
                data, self.default_timeout if timeout is None else timeout
            )
        except RaftNotLeader as exc:
            raise NotLeader(exc.leader_hint) from None
        except ProposalDropped:
            raise NotLeader(None) from None
        except (LeadershipLost, ProposalTimeout) as exc:
            raise OutcomeUnknown(str(exc)) from None
        except DriverStopped as exc:
            raise CoordinatorStopped(str(exc)) from None
        return result  # type: ignore[return-value]

    async def read(self, fn: Callable[[TaskLedger], T], timeout: float | None = None) -> T:
        """``fn(ledger)`` on a linearizable state (read index); see the module docstring.

        Raises:
            NotLeader: no leader is known (``hint`` None).
            Unavailable: the leader changed meanwhile, or no confirmation in time.
            CoordinatorStopped: not running.
        """
        driver = self._running()
        try:
            await driver.read_index(self.default_timeout if timeout is None else timeout)
        except RaftNotLeader as exc:
            raise NotLeader(exc.leader_hint) from None
        except (LeadershipLost, ReadTimeout) as exc:
            raise Unavailable(str(exc)) from None
        except DriverStopped as exc:
            raise CoordinatorStopped(str(exc)) from None
        return fn(self._ledger)

    def peek(self, fn: Callable[[TaskLedger], T]) -> T:
        """``fn(ledger)`` on the local state now (possibly stale on a follower)."""
        return fn(self._ledger)

    def watch(self) -> AsyncIterator[Applied]:
        """Commands applied on this node from now on, in log order."""
        return self._feed.subscribe()
