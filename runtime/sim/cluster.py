"""A whole Raft cluster in one process, on a simulated network and disks, on fake time.

:func:`run_seed` runs one seeded history under trio's ``MockClock(autojump_threshold=0)``:
time jumps to the next deadline whenever every task waits, so 30 simulated seconds take
a fraction of a real second. Each node is a real :class:`~runtime.raft.driver.RaftDriver`
(the production driver) on a :class:`~runtime.sim.disk.SimDisk` and a
:class:`~runtime.sim.network.SimNetwork`.

**Reproducible.** ``random.Random(seed)`` is the root of every random choice: it derives
one rng each for the network (then one per sender), the fault schedule, the workload,
and every node's Raft election jitter, disk and tick phase. The fault schedule is drawn
up front. Deliveries are ordered by the network's own clock-and-sequence order, never by
trio's (deliberately shuffled) wake order, so the same seed gives the same history: the
run's :attr:`RunResult.digest` hashes every status change, fault, apply and client
outcome with its simulated time.

**A run.** ``duration`` simulated seconds of faults (those in ``faults``) under a client
workload of proposals with unique ids (about ``proposal_rate`` per second, each sent to
the leader the client last heard of, or to a random node); then every fault heals (nodes
restart, links heal, the network turns benign) and the liveness phase: a leader must be
elected, known to a majority and ready within ``liveness_timeouts`` maximum election
timeouts, and a probe proposal must commit within as long again; then a quiet period
until every node applied the probe; then the final checks (see
:mod:`runtime.sim.invariants`).

**Faults.** ``crash`` (power loss: unsynced writes partly lost; restart after a while),
``pause`` (the node stops ticking and processing), ``partition`` (symmetric, two
groups), ``oneway`` (one direction of some links), ``drop``, ``duplicate``, ``reorder``,
``delay`` (per-run network parameters), ``slow_disk`` (fsync latency of tens to hundreds
of milliseconds for a while).
"""

from __future__ import annotations

import hashlib
import random
import time
import traceback
from collections import Counter
from collections.abc import Callable, Iterable
from typing import Final, final

import attrs
import msgpack
import trio
import trio.testing

from runtime.raft.core import Entry, NotLeader, ProposalDropped, RaftError, Role
from runtime.raft.driver import (
    DEFAULT_TICK_INTERVAL,
    DriverStopped,
    LeadershipLost,
    ProposalTimeout,
    RaftDriver,
    Status,
    raft_config,
)

from .disk import Broken, SimDisk
from .invariants import Checker, SimViolation, Violation
from .network import LinkParams, NetTransport, SimNetwork

__all__ = [
    "ALL_FAULTS",
    "FAULT_MIXES",
    "RunResult",
    "SimConfig",
    "repro_commands",
    "run_seed",
]

#: Every fault kind the simulator knows.
ALL_FAULTS: Final = frozenset(
    {"crash", "pause", "partition", "oneway", "drop", "duplicate", "reorder", "delay", "slow_disk"}
)

#: Named fault mixes (``--faults`` accepts a name or a comma-separated list of kinds; a
#: kind's name wins over a mix's).
FAULT_MIXES: Final[dict[str, frozenset[str]]] = {
    "all": ALL_FAULTS,
    "none": frozenset(),
    "network": frozenset({"partition", "oneway", "drop", "duplicate", "reorder", "delay"}),
    "process": frozenset({"crash", "pause", "slow_disk"}),
}


def _faults(value: Iterable[str]) -> frozenset[str]:
    out = frozenset(value)
    unknown = out - ALL_FAULTS
    if unknown:
        raise ValueError(f"unknown fault kinds: {', '.join(sorted(unknown))}")
    return out


@attrs.frozen
class SimConfig:
    """What one simulated run does; every field has a default except ``seed``."""

    seed: int
    nodes: int = 3  # cluster size
    faults: frozenset[str] = attrs.field(default=ALL_FAULTS, converter=_faults)
    duration: float = 30.0  # simulated seconds of faults and workload
    proposal_rate: float = 20.0  # client proposals per simulated second
    propose_timeout: float = 2.0  # seconds a client waits for an acknowledgement
    fault_interval: float = 1.5  # mean simulated seconds between fault onsets
    snapshot_entries: int = 64  # small, so snapshots and catch-up by snapshot happen
    snapshot_keep: int = 16
    liveness_timeouts: int = 10  # bound on electing after the heal, in max election timeouts
    broken: Broken | None = None  # a deliberately broken disk (tests of the checker only)
    test_name: str = ""  # the pytest test to name in the reproduction command


@attrs.frozen
class RunResult:
    """What happened in one run, its invariant violations and its history digest."""

    config: SimConfig
    digest: str
    violations: tuple[str, ...]
    elections: int
    leader_changes: int
    proposals: int
    acked: int
    failed: dict[str, int]
    time_to_elect: float | None  # simulated seconds from the heal to a ready leader
    crashes: int
    messages: int
    dropped: int
    fsyncs: int
    sim_time: float
    real_time: float

    @property
    def ok(self) -> bool:
        """True when no invariant was violated."""
        return not self.violations

    def raise_on_violation(self) -> None:
        """Raise :class:`SimViolation` (seed and reproducing commands) if any failed."""
        if self.violations:
            raise SimViolation(self.config.seed, self.violations, repro_commands(self.config))


def repro_commands(cfg: SimConfig) -> list[str]:
    """Return the shell commands that rerun exactly this configuration."""
    faults = ",".join(sorted(cfg.faults)) or "none"
    cmd = (
        f"regency chaos --sim --seed {cfg.seed} --nodes {cfg.nodes} "
        f"--faults {faults} --duration {cfg.duration:g}"
    )
    if cfg.broken:
        cmd += f" --broken {cfg.broken}"
    out = [cmd]
    if cfg.test_name:
        out.append(f"pytest tests/runtime/sim -k {cfg.test_name} --sim-seed={cfg.seed}")
    return out


def run_seed(cfg: SimConfig) -> RunResult:
    """Run one simulated history (blocking; it owns a trio run) and check it."""
    started = time.perf_counter()
    sim = _Sim(cfg)
    if _SEED_TRIO_SCHEDULER:
        _seed_trio_scheduler(cfg.seed)
    trio.run(sim.main, clock=trio.testing.MockClock(autojump_threshold=0))
    return sim.result(time.perf_counter() - started)


# --------------------------------------------------------------------------- internals

#: Simulated seconds after which a transport heartbeat gives up on a cut link.
WATCHDOG = 0.4

#: Also seed trio's scheduler shuffle (what Hypothesis does for trio); see below.
_SEED_TRIO_SCHEDULER = True


def _seed_trio_scheduler(seed: int) -> None:
    """Seed the rng trio shuffles each scheduler batch with.

    The simulator does not rely on wake order for what it delivers and when; but tasks
    woken at one instant (a client and the driver that answered it, the liveness
    observer) still interleave in trio's shuffled order, which can change *when* an
    observer acts. Seeding that shuffle, as Hypothesis does through ``register_random``,
    makes the interleaving a function of the seed too. trio exposes no API for this;
    if its internals move, runs stay safe but may not replay bit for bit.
    """
    import trio._core._run as trio_run

    rng = getattr(trio_run, "_r", None)
    if isinstance(rng, random.Random):
        rng.seed(seed)


@final
class _StateMachine:
    """The simulated application: the sequence of applied proposal ids."""

    def __init__(self, node: str, on_apply: Callable[[str, Entry], None]) -> None:
        self.node = node
        self.ids: list[bytes] = []
        self.index = 0
        self._on_apply = on_apply

    def apply(self, entry: Entry) -> object:
        self._on_apply(self.node, entry)
        self.ids.append(entry.data)
        self.index = entry.index
        return entry.index

    def snapshot(self) -> bytes:
        packed: bytes = msgpack.packb([self.index, self.ids], use_bin_type=True)
        return packed

    def restore(self, data: bytes) -> None:
        self.index, ids = msgpack.unpackb(data) if data else (0, [])
        self.ids = list(ids)


@final
class _Node:
    """One node's lasting parts (disk, seeds) and its current incarnation."""

    def __init__(self, nid: str, disk: SimDisk, raft_seed: int, tick_phase: float) -> None:
        self.id = nid
        self.disk = disk
        self.raft_seed = raft_seed
        self.tick_phase = tick_phase
        self.incarnation = 0
        self.driver: RaftDriver | None = None
        self.sm: _StateMachine | None = None
        self.transport: _GuardedTransport | None = None
        self.scope: trio.CancelScope | None = None


@final
class _GuardedTransport:
    """A node incarnation's transport; dead once the incarnation crashed."""

    def __init__(self, inner: NetTransport) -> None:
        self.inner = inner
        self.alive = True

    def send(self, to: str, msg: object) -> None:
        if self.alive:
            self.inner.send(to, msg)  # type: ignore[arg-type]


@final
class _Sim:
    def __init__(self, cfg: SimConfig) -> None:
        if cfg.nodes < 1:
            raise ValueError("a cluster needs at least one node")
        self.cfg = cfg
        root = random.Random(cfg.seed)
        self.ids = [f"n{i + 1}" for i in range(cfg.nodes)]
        self.net = SimNetwork(self.ids, random.Random(root.getrandbits(64)))
        self.fault_rng = random.Random(root.getrandbits(64))
        self.work_rng = random.Random(root.getrandbits(64))
        self.nodes: dict[str, _Node] = {}
        for nid in self.ids:
            disk = SimDisk(nid, self.ids, random.Random(root.getrandbits(64)), broken=cfg.broken)
            self.nodes[nid] = _Node(
                nid, disk, root.getrandbits(64), root.random() * DEFAULT_TICK_INTERVAL
            )
        self.checker = Checker()
        self.ended = False
        self.hash = hashlib.blake2b(digest_size=16)
        self._batch: list[str] = []
        self._batch_time = 0.0
        self.acked: list[bytes] = []
        self.proposals = 0
        self.failed: Counter[str] = Counter()
        self.crashes = 0
        self.time_to_elect: float | None = None
        self.status_changed = trio.Event()
        self.hint: str | None = None
        self.cuts: Counter[tuple[str, str]] = Counter()
        self.nursery: trio.Nursery | None = None
        self.max_election = 2 * raft_config("x", ["x"]).election_ticks * DEFAULT_TICK_INTERVAL

    # -- history

    def record(self, *event: object) -> None:
        if self.ended:
            return  # the teardown's cancellations run in trio's order: not history
        now = self.checker.now = trio.current_time()
        if now != self._batch_time:
            self._flush_history()
            self._batch_time = now
        self._batch.append(repr(event))

    def _flush_history(self) -> None:
        # Events of one instant are hashed sorted: tasks woken together run in trio's
        # shuffled order, which is not part of the history.
        if self._batch:
            self.hash.update(f"{self._batch_time:.9f}".encode())
            for ev in sorted(self._batch):
                self.hash.update(ev.encode())
            self._batch = []

    # -- nodes

    def start_node(self, node: _Node) -> None:
        """Start a new incarnation of ``node`` from what its disk holds (synchronously)."""
        assert self.nursery is not None
        if node.driver is not None:
            return
        node.incarnation += 1
        storage = node.disk.open()
        sm = _StateMachine(node.id, self.on_apply)
        transport = _GuardedTransport(self.net.transport(node.id))
        rng = random.Random(node.raft_seed + node.incarnation)
        cfg = self.cfg
        holder: list[RaftDriver] = []
        driver = RaftDriver(
            raft_config(node.id, self.ids, rng=rng),
            storage,
            transport,
            sm,
            tick_phase=node.tick_phase,
            snapshot_entries=cfg.snapshot_entries,
            snapshot_keep=cfg.snapshot_keep,
            run_io=node.disk.run_io,
            on_status=lambda st: self.on_status(st, holder[0]),
        )
        holder.append(driver)
        node.driver, node.sm, node.transport = driver, sm, transport
        node.scope = trio.CancelScope()
        self.record("start", node.id, node.incarnation)
        self.net.attach(node.id, driver.deliver, driver.peer_down)
        self.nursery.start_soon(self._run_node, node, driver, node.scope)

    async def _run_node(self, node: _Node, driver: RaftDriver, scope: trio.CancelScope) -> None:
        with scope:
            try:
                await driver.run()
            except Exception as exc:
                self.checker.now = trio.current_time()
                self.checker.fail(
                    "crashed",
                    f"{node.id} driver raised {exc!r}: "
                    + "".join(traceback.format_exception(exc)[-3:]).strip(),
                )
                if node.driver is driver:
                    self.crash(node)

    def crash(self, node: _Node) -> None:
        if node.driver is None:
            return
        self.record("crash", node.id)
        self.crashes += 1
        self.net.detach(node.id)
        for other in self.ids:  # its operating system closes its connections
            if other != node.id:
                self.net.connection_lost(node.id, other)
        if node.transport is not None:
            node.transport.alive = False
        if node.scope is not None:
            node.scope.cancel()
        node.disk.crash()
        node.driver = node.sm = node.transport = None
        node.scope = None

    # -- observation

    def on_status(self, st: Status, driver: RaftDriver) -> None:
        if self.ended:
            return
        self.record("status", st.id, st.role.value, st.term, st.leader, st.leader_ready)
        self.checker.on_status(st, driver.node)
        self.status_changed.set()

    def on_apply(self, nid: str, entry: Entry) -> None:
        self.record("apply", nid, entry.index, entry.term)
        self.checker.on_apply(nid, entry)

    # -- the run

    async def main(self) -> None:
        async with trio.open_nursery() as nursery:
            self.nursery = nursery
            nursery.start_soon(self.net.run)
            for node in self.nodes.values():
                self.start_node(node)
            self.net.params = self._net_params()
            self.record("net", attrs.astuple(self.net.params))
            nursery.start_soon(self.workload)
            await self.run_faults()
            self.heal()
            await self.liveness()
            self.final_checks()
            nursery.cancel_scope.cancel()

    def _net_params(self) -> LinkParams:
        f, rng = self.cfg.faults, self.fault_rng
        return LinkParams(
            delay=rng.uniform(0.002, 0.03) if "delay" in f else 0.001,
            jitter=rng.uniform(0.005, 0.05) if "delay" in f else 0.002,
            drop=rng.uniform(0.01, 0.2) if "drop" in f else 0.0,
            duplicate=rng.uniform(0.01, 0.1) if "duplicate" in f else 0.0,
            reorder="reorder" in f and rng.random() < 0.8,
        )

    def _schedule(self) -> list[tuple[float, int, str, tuple[object, ...]]]:
        """Draw the fault schedule up front: (time, seq, action, args), sorted."""
        cfg, rng = self.cfg, self.fault_rng
        kinds = sorted(cfg.faults & {"crash", "pause", "partition", "oneway", "slow_disk"})
        events: list[tuple[float, int, str, tuple[object, ...]]] = []
        if not kinds:
            return events
        t, seq, end = 0.5, 0, cfg.duration
        while True:
            t += rng.expovariate(1.0 / cfg.fault_interval)
            if t >= end:
                break
            kind = rng.choice(kinds)
            nid = rng.choice(self.ids)
            if kind == "crash":
                back = min(t + rng.uniform(0.05, 3.0), end)
                events += [(t, seq, "crash", (nid,)), (back, seq + 1, "restart", (nid,))]
            elif kind == "pause":
                events.append((t, seq, "pause", (nid, min(rng.uniform(0.05, 1.0), end - t))))
            elif kind == "slow_disk":
                dur = min(rng.uniform(0.3, 3.0), end - t)
                events.append((t, seq, "slow_disk", (nid, dur, rng.uniform(0.01, 0.3))))
            else:
                if kind == "partition":
                    shuffled = rng.sample(self.ids, len(self.ids))
                    k = rng.randint(1, max(1, len(shuffled) - 1))
                    a, b = shuffled[:k], shuffled[k:]
                    links = tuple((x, y) for x in a for y in b) + tuple(
                        (y, x) for x in a for y in b
                    )
                else:
                    n = rng.randint(1, len(self.ids))
                    links = tuple(
                        (x, y)
                        for x, y in (tuple(rng.sample(self.ids, 2)) for _ in range(n))
                        if len(self.ids) > 1
                    )
                heal_at = min(t + rng.uniform(0.2, 4.0), end)
                events += [(t, seq, "cut", links), (heal_at, seq + 1, "uncut", links)]
            seq += 2
        events.sort()
        return events

    async def run_faults(self) -> None:
        for at, _, action, args in self._schedule():
            await trio.sleep_until(at)
            self.do_fault(action, args)
        await trio.sleep_until(self.cfg.duration)

    def do_fault(self, action: str, args: tuple[object, ...]) -> None:
        self.record("fault", action, args)
        if action == "crash":
            self.crash(self.nodes[str(args[0])])
        elif action == "restart":
            node = self.nodes[str(args[0])]
            self.start_node(node)
        elif action == "pause":
            node = self.nodes[str(args[0])]
            if node.driver is not None:
                dur = args[1]
                assert isinstance(dur, float)
                node.driver.pause_for(dur)
        elif action == "slow_disk":
            nid, dur, latency = args
            assert isinstance(dur, float)
            assert isinstance(latency, float)
            self.nodes[str(nid)].disk.slow_until(trio.current_time() + dur, latency)
        elif action in ("cut", "uncut"):
            for link in args:
                assert isinstance(link, tuple)
                if action == "cut":
                    self.cuts[link] += 1
                    self.net.cut(*link)
                    assert self.nursery is not None
                    self.nursery.start_soon(self._watchdog, str(link[0]), str(link[1]))
                else:
                    self.cuts[link] -= 1
                    if self.cuts[link] <= 0:
                        del self.cuts[link]
                        self.net.heal([link])

    async def _watchdog(self, a: str, b: str) -> None:
        """A transport heartbeat gives up on a link cut for WATCHDOG seconds: both ends
        see the connection lost, whether the leader behind it is alive or not."""
        await trio.sleep(WATCHDOG)
        if self.cuts.get((a, b), 0) > 0:
            for me, peer in ((b, a), (a, b)):
                driver = self.nodes[me].driver
                if driver is not None:
                    self.record("connection_lost", me, peer)
                    driver.peer_down(peer)

    async def workload(self) -> None:
        assert self.nursery is not None
        rng, cfg = self.work_rng, self.cfg
        n = 0
        while True:
            await trio.sleep(rng.expovariate(cfg.proposal_rate))
            if trio.current_time() >= cfg.duration:
                return
            n += 1
            pid = f"p{n}".encode()
            if self.hint is not None and rng.random() < 0.9:
                target = self.hint
            else:
                target = rng.choice(self.ids)
            self.nursery.start_soon(self.propose, pid, target)

    async def propose(self, pid: bytes, target: str) -> None:
        self.proposals += 1
        driver = self.nodes[target].driver
        if driver is None:
            self.failed["down"] += 1
            self.record("proposal", pid, target, "down")
            return
        try:
            await driver.propose(pid, timeout=self.cfg.propose_timeout)
        except NotLeader as exc:
            self.hint = exc.leader_hint
            outcome = "not_leader"
        except ProposalDropped:
            outcome = "dropped"
        except LeadershipLost:
            outcome = "leadership_lost"
        except ProposalTimeout:
            outcome = "timeout"
        except DriverStopped:
            outcome = "stopped"
        else:
            self.acked.append(pid)
            self.hint = target
            outcome = "acked"
        if outcome != "acked":
            self.failed[outcome] += 1
        self.record("proposal", pid, target, outcome)

    def heal(self) -> None:
        self.record("heal")
        self.net.heal()
        self.cuts.clear()
        self.net.params = LinkParams()
        for node in self.nodes.values():
            node.disk.slow_until(0.0, 0.0)
            self.start_node(node)

    def _ready_leader(self) -> RaftDriver | None:
        statuses = [n.driver.status() for n in self.nodes.values() if n.driver is not None]
        for st in statuses:
            if st.role is Role.LEADER and st.leader_ready:
                agree = sum(1 for s in statuses if s.leader == st.id and s.term == st.term)
                if agree > len(self.ids) // 2:
                    return self.nodes[st.id].driver
        return None

    async def liveness(self) -> None:
        healed = trio.current_time()
        bound = self.cfg.liveness_timeouts * self.max_election
        leader: RaftDriver | None = None
        with trio.move_on_after(bound):
            while (leader := self._ready_leader()) is None:
                self.status_changed = trio.Event()
                with trio.move_on_after(0.05):
                    await self.status_changed.wait()
        if leader is None:
            self.fail("liveness", f"no ready leader known to a majority {bound:g} s after heal")
            return
        self.time_to_elect = trio.current_time() - healed
        self.record("elected", leader.id, self.time_to_elect)
        index: int | None = None
        with trio.move_on_after(bound):
            while index is None:
                try:
                    result = await leader.propose(b"probe", timeout=bound)
                    assert isinstance(result, int)
                    index = result
                except (RaftError, TimeoutError):
                    await trio.sleep(0.05)
                    leader = self._ready_leader() or leader
        if index is None:
            self.fail("liveness", f"a probe proposal did not commit within {bound:g} s")
            return
        self.record("probe", index)
        with trio.move_on_after(bound):
            while any(  # noqa: ASYNC110 - polls the applied index of several drivers
                n.driver is None or n.driver.status().applied < index for n in self.nodes.values()
            ):
                await trio.sleep(0.05)
        lagging = [
            n.id
            for n in self.nodes.values()
            if n.driver is None or n.driver.status().applied < index
        ]
        if lagging:
            self.fail("liveness", f"{', '.join(lagging)} did not apply the probe {index}")

    def fail(self, invariant: str, detail: str) -> None:
        self.checker.now = trio.current_time()
        self.checker.fail(invariant, detail)
        self.record("violation", invariant)

    def final_checks(self) -> None:
        self.checker.now = trio.current_time()
        logs: dict[str, list[Entry]] = {}
        applied: dict[str, list[bytes]] = {}
        for node in self.nodes.values():
            if node.driver is None or node.sm is None:
                continue
            core = node.driver.node
            logs[node.id] = core.log_entries(core.first_index, core.last_index + 1)
            applied[node.id] = [i for i in node.sm.ids if i != b"probe"]
        self.checker.check_final(logs, applied, self.acked)
        self.record("end", len(self.checker.violations))
        self._flush_history()
        self.ended = True

    def result(self, real_time: float) -> RunResult:
        violations: list[Violation] = self.checker.violations
        return RunResult(
            config=self.cfg,
            digest=self.hash.hexdigest(),
            violations=tuple(str(v) for v in violations),
            elections=self.checker.elections,
            leader_changes=self.checker.leader_changes,
            proposals=self.proposals,
            acked=len(self.acked),
            failed=dict(self.failed),
            time_to_elect=self.time_to_elect,
            crashes=self.crashes,
            messages=self.net.delivered,
            dropped=self.net.dropped,
            fsyncs=sum(n.disk.fsyncs for n in self.nodes.values()),
            sim_time=self.checker.now,
            real_time=real_time,
        )
