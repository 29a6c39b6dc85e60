"""Orchestrator-group members and worker nodes as OS processes, and a launcher for them.

::

    REGENCY_SECRET=... python -m supervisors.member_app member --name o1 \\
        --listen 127.0.0.1:7001 --member o1=127.0.0.1:7001 --member o2=127.0.0.1:7002 \\
        --member o3=127.0.0.1:7003 --data /var/lib/regency
    REGENCY_SECRET=... python -m supervisors.member_app worker --name w1 \\
        --listen 127.0.0.1:0 --member o1=127.0.0.1:7001 ... [--capacity 2 --think-ms 200:600]

**member** runs one member of an orchestrator group: a :class:`~runtime.node.Node` named
``--name`` with a :class:`~runtime.dist.Distribution` on ``--listen`` that knows every
other ``--member``'s address, and :func:`~supervisors.failover.start_group_member` with
a :class:`~supervisors.raft_coordinator.RaftCoordinator` on a
:class:`~runtime.raft.durable.DurableStorage` in ``--data/NAME`` (fsync before every
acknowledgement) and the default :class:`~supervisors.failover.Dispatcher`. It also
serves :data:`AUDIT_SERVICE`, a record of every ledger command this member applied
(see :class:`AuditService`), so that a launcher can check exactly-once completion and
fencing from the replicated log itself.

**worker** runs one worker node: :func:`~supervisors.workers.start_worker` named
``--name`` with a deterministic handler (:func:`demo_handler`) that "thinks" for a
seeded time drawn from ``--think-ms LO:HI`` per job and returns :func:`expected_answer`
of its job; it logs ``task_started`` and ``task_executed`` (``job``) for every run, so a
launcher can count executions per job from the worker's own log.

Both print one line ``ready NAME HOST PORT`` on standard output once they accept
connections, log JSON lines on standard error (``ledger_committed``,
``orchestrator_started``, ``leader_elected``...), take the shared secret from
``REGENCY_SECRET`` (or ``--secret-file``), and stop gracefully on SIGTERM or SIGINT: a
member that leads first hands leadership over (Raft leadership transfer, through
``coordinator.resign()``) so the group has a new leader within a round trip instead of
an election timeout, then stops its supervisor and its node. SIGKILL is a crash;
restarting a member with the same ``--data`` recovers everything it acknowledged (it
replays its log and catches up from the leader).

Ports. Members must know one another's addresses before they start, so the launcher
chooses them: :func:`free_ports` binds port 0 on loopback, notes the port the kernel
gave and closes the socket, then every member gets the whole ``--member`` list. (A
restarted member reuses its port.) Workers and clients only dial members, so they
listen on port 0.

:class:`GroupProcesses` is that launcher, used by ``regency demo``, the failover
benchmark and the multi-process tests: it starts the members and the workers as
subprocesses (stderr appended to ``ROOT/NAME.log``), signals and restarts them, tails
their logs (:meth:`GroupProcesses.events`), and kills every child it started with
SIGKILL on :meth:`GroupProcesses.close` (children also get SIGKILL if the launcher
itself dies, through ``PR_SET_PDEATHSIG`` on Linux).
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import datetime as dt
import hashlib
import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import IO, Any, Final, final

import anyio
import structlog

from runtime.dist import Distribution
from runtime.dist_cli import _configure_logging, _hostport
from runtime.errors import CallTimeout, MailboxFull, NoProcError, ServerExited
from runtime.genserver import GenServer
from runtime.handshake import load_secret
from runtime.messages import From
from runtime.node import Node
from runtime.pid import Name
from runtime.raft.driver import DEFAULT_ELECTION_TICKS, DEFAULT_HEARTBEAT_TICKS, DriverStorage

from .coordination import Applied, CoordinatorStopped, NotLeader, Unavailable, fenced_term
from .failover import GroupConfig, start_group_member
from .ledger import Accepted, Complete, Duplicate, NewTerm, Submit, describe
from .raft_coordinator import RaftCoordinator
from .workers import WorkerConfig, start_worker

__all__ = [
    "AUDIT_SERVICE",
    "AuditRecord",
    "AuditService",
    "GroupProcesses",
    "demo_handler",
    "expected_answer",
    "fetch_audit",
    "free_ports",
    "main",
]

#: The registered name of the audit service on every member.
AUDIT_SERVICE: Final = "regency_audit"

#: Records returned by one ``("records", since)`` call.
_AUDIT_PAGE: Final = 2000

log = structlog.get_logger("regency")

AuditRecord = list[Any]
"""One applied command: ``[index, op, task_id, worker, term, key, kind, detail]``.

``term`` is the command's fencing term (``Complete``: the term the worker worked
under; ``Submit``: None); ``key`` the ``Submit``'s idempotency key or the ``NewTerm``'s
leader; ``kind`` is ``"accepted"``, ``"duplicate"`` or ``"refused"``; ``detail`` is the
ledger's one-line summary (:func:`~supervisors.ledger.describe`). A snapshot installed
in place of the log shows as ``[index, "snapshot", ...]``.
"""


# --------------------------------------------------------------------------- the member


def _record(rec: Applied) -> AuditRecord:
    cmd = rec.command
    if cmd is None:
        return [rec.index, "snapshot", None, None, None, None, "accepted", ""]
    result = rec.result
    kind = (
        "accepted"
        if isinstance(result, Accepted)
        else "duplicate"
        if isinstance(result, Duplicate)
        else "refused"
    )
    term = cmd.term if isinstance(cmd, Complete) else fenced_term(cmd)
    key: str | None = None
    if isinstance(cmd, Submit):
        key = cmd.idempotency_key
    elif isinstance(cmd, NewTerm):
        key = cmd.leader
    return [
        rec.index,
        cmd.op,
        getattr(cmd, "task_id", None),
        getattr(cmd, "worker", None),
        term,
        key,
        kind,
        describe(result) if result is not None else "",
    ]


@final
class _AuditLog:
    """Every command applied by this member's current process, by log index."""

    def __init__(self) -> None:
        self.records: dict[int, AuditRecord] = {}

    async def collect(self, feed: Any) -> None:
        async for rec in feed:
            if rec.command is None:  # a snapshot replaced what came before
                self.records.clear()
            self.records[rec.index] = _record(rec)


class AuditService(GenServer):
    """The audit service of a member (registered :data:`AUDIT_SERVICE`).

    Calls:

    * ``("records", since)`` -> ``["ok", {"records": [...], "more": bool}]``: the
      :data:`AuditRecord` of every command applied here with an index above ``since``,
      in index order, at most 2000 per call, after a linearizable read barrier (so they
      include every command acknowledged before the call); ``["retry", why]`` when no
      leader confirms the barrier.
    * ``"view"`` -> ``{"node", "leader", "term", "is_leader", "ready", "applied"}`` now.
    """

    async def init(self, *args: Any) -> None:
        """``init(audit_log, coordinator)``."""
        self.audit: _AuditLog
        self.coord: RaftCoordinator
        self.audit, self.coord = args

    async def handle_call(self, request: Any, from_: From) -> Any:
        """Answer ``records`` and ``view`` (see the class docstring)."""
        if request == "view":
            v = self.coord.view()
            return {
                "node": self.coord.node,
                "leader": v.leader,
                "term": v.term,
                "is_leader": v.is_leader,
                "ready": v.ready,
                "applied": max(self.audit.records, default=0),
            }
        if isinstance(request, list | tuple) and len(request) == 2 and request[0] == "records":
            since = int(request[1])
            try:
                await self.coord.read(lambda led: None, timeout=2.0)
            except (NotLeader, Unavailable, CoordinatorStopped) as exc:
                return ["retry", str(exc)]
            keys = sorted(i for i in self.audit.records if i > since)
            page = keys[:_AUDIT_PAGE]
            return [
                "ok",
                {"records": [self.audit.records[i] for i in page], "more": len(keys) > len(page)},
            ]
        return await super().handle_call(request, from_)


def _member_spec(text: str) -> tuple[str, str, int]:
    name, sep, address = text.partition("=")
    if not sep or not name:
        raise argparse.ArgumentTypeError(f"expected NAME=HOST:PORT, got {text!r}")
    host, port = _hostport(address)
    return name, host, port


async def _wait_for_signal(node: str) -> None:
    with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async for signum in signals:
            log.info("node_stopping", node=node, signal=signal.Signals(signum).name)
            return


async def run_member(args: argparse.Namespace, secret: bytes) -> None:
    """Run one group member until SIGINT/SIGTERM; see the module docstring."""
    me: str = args.name
    addresses: list[tuple[str, str, int]] = args.member
    members = [name for name, _, _ in addresses]
    if me not in members:
        raise SystemExit(f"member_app: --name {me} is not among the --member names {members}")
    if len(set(members)) != len(members):
        raise SystemExit(f"member_app: duplicate member names in {members}")
    config = GroupConfig(
        lease=args.lease,
        dispatch_interval=args.dispatch_interval,
        worker_ttl=args.worker_ttl,
        stall_deadline=args.stall_deadline,
    )
    path = Path(args.data) / me
    voters = tuple(members)
    opened: list[Any] = []

    def storage() -> DriverStorage:
        from runtime.raft.durable import DurableStorage

        st = DurableStorage.open(path, voters=voters)
        opened.append(st)
        return st

    tick = args.tick_ms / 1000.0
    async with Node(me) as node:
        dist = await Distribution(node, secret=secret).start(listen=args.listen)
        for name, host, port in addresses:
            if name != me:
                dist.add_peer(name, host, port)
        coord = RaftCoordinator(
            node,
            members,
            storage=storage,
            ledger_config=config.ledger,
            tick_interval=tick,
            election_ticks=args.election_ticks,
            heartbeat_ticks=args.heartbeat_ticks,
            tick_phase=random.random() * tick,
        )
        audit = _AuditLog()
        feed = coord.watch()  # before the coordinator starts: every applied command
        async with anyio.create_task_group() as tg:
            tg.start_soon(audit.collect, feed)
            member = await start_group_member(node, members, config=config, coordinator=coord)
            await node.start_server(AuditService, audit, coord, name=AUDIT_SERVICE)
            assert dist.address is not None
            print(f"ready {me} {dist.address[0]} {dist.address[1]}", flush=True)
            await _wait_for_signal(me)
            if coord.view().is_leader:
                try:
                    await coord.resign(timeout=1.0)
                    log.info("leadership_handed_over", node=me, view=str(coord.view()))
                except (NotLeader, TimeoutError, CoordinatorStopped) as exc:
                    log.warning("handover_failed", node=me, error=str(exc))
            await member.stop()
            tg.cancel_scope.cancel()
    for st in opened:
        with contextlib.suppress(Exception):
            st.close()
    log.info("member_stopped", node=me)


# --------------------------------------------------------------------------- the worker


def expected_answer(job: str) -> str:
    """The answer :func:`demo_handler` gives for ``job`` (what a verifier expects)."""
    return hashlib.sha256(f"regency-demo/{job}".encode()).hexdigest()[:16]


def demo_handler(worker: str, seed: int, think_ms: tuple[float, float]) -> Callable[[Any], Any]:
    """A worker's task function: think for a seeded time, answer deterministically.

    The payload is a map with a ``"job"`` (str); the thinking time is drawn from
    ``think_ms`` by a ``random.Random`` seeded with ``seed`` and the job, so the same job
    always thinks as long, on any worker. The result is ``{"job", "answer", "worker"}``.
    Logs ``task_started`` and ``task_executed`` (``job``, ``think_ms``).
    """
    wlog = structlog.get_logger("regency", node=worker, worker=worker)

    async def handler(payload: Any) -> Any:
        job = str(payload["job"]) if isinstance(payload, dict) else str(payload)
        lo, hi = think_ms
        ms = random.Random(f"{seed}/{job}").uniform(lo, hi)
        wlog.info("task_started", job=job, think_ms=round(ms, 1))
        await anyio.sleep(ms / 1000.0)
        wlog.info("task_executed", job=job, think_ms=round(ms, 1))
        return {"job": job, "answer": expected_answer(job), "worker": worker}

    return handler


def _think(text: str) -> tuple[float, float]:
    lo, sep, hi = text.partition(":")
    try:
        low = float(lo)
        high = float(hi) if sep else low
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected LO:HI milliseconds, got {text!r}") from None
    if not 0 <= low <= high:
        raise argparse.ArgumentTypeError(f"expected 0 <= LO <= HI, got {text!r}")
    return low, high


async def run_worker_node(args: argparse.Namespace, secret: bytes) -> None:
    """Run one worker node until SIGINT/SIGTERM; see the module docstring."""
    me: str = args.name
    addresses: list[tuple[str, str, int]] = args.member
    members = [name for name, _, _ in addresses]
    async with Node(me) as node:
        dist = await Distribution(node, secret=secret).start(listen=args.listen)
        for name, host, port in addresses:
            dist.add_peer(name, host, port)
        config = WorkerConfig(
            hello_interval=args.hello_interval,
            progress_interval=args.progress_interval,
            retry_interval=0.05,
        )
        await start_worker(
            node,
            members,
            demo_handler(me, args.seed, args.think_ms),
            name=me,
            capacity=args.capacity,
            config=config,
        )
        assert dist.address is not None
        print(f"ready {me} {dist.address[0]} {dist.address[1]}", flush=True)
        await _wait_for_signal(me)
    log.info("worker_node_stopped", node=me)


# --------------------------------------------------------------------------- the command


def build_parser() -> argparse.ArgumentParser:
    """The command line of ``python -m supervisors.member_app``."""
    parser = argparse.ArgumentParser(
        prog="python -m supervisors.member_app", description=(__doc__ or "").split("\n")[0]
    )
    sub = parser.add_subparsers(dest="role", required=True)
    for role in ("member", "worker"):
        p = sub.add_parser(role, help=f"run one {role} node")
        p.add_argument("--name", required=True, help="this node's name, unique in the group")
        p.add_argument(
            "--listen", type=_hostport, default=("127.0.0.1", 0), help="HOST:PORT to accept on"
        )
        p.add_argument(
            "--member",
            type=_member_spec,
            action="append",
            required=True,
            help="NAME=HOST:PORT of a group member (every member, this one included)",
        )
        p.add_argument("--secret-file", help="file holding the shared secret (mode 600)")
        p.add_argument("--log-level", default="info", choices=["debug", "info", "warning"])
        if role == "member":
            p.add_argument("--data", required=True, help="directory of the durable logs")
            p.add_argument("--tick-ms", type=float, default=10.0, help="Raft tick, ms")
            p.add_argument("--heartbeat-ticks", type=int, default=DEFAULT_HEARTBEAT_TICKS)
            p.add_argument(
                "--election-ticks",
                type=int,
                default=DEFAULT_ELECTION_TICKS,
                help="minimum election timeout in ticks; drawn from [N, 2N)",
            )
            p.add_argument("--lease", type=float, default=10.0, help="assignment lease, s")
            p.add_argument("--dispatch-interval", type=float, default=0.05, help="seconds")
            p.add_argument("--worker-ttl", type=float, default=3.0, help="seconds")
            p.add_argument("--stall-deadline", type=float, default=30.0, help="seconds")
        else:
            p.add_argument("--capacity", type=int, default=2, help="tasks run at once")
            p.add_argument("--think-ms", type=_think, default=(200.0, 600.0), help="LO:HI per task")
            p.add_argument("--seed", type=int, default=1, help="seeds the thinking times")
            p.add_argument("--hello-interval", type=float, default=0.2, help="seconds")
            p.add_argument("--progress-interval", type=float, default=0.5, help="seconds")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m supervisors.member_app``; returns the exit status."""
    args = build_parser().parse_args(list(sys.argv[1:] if argv is None else argv))
    try:
        secret = load_secret(path=args.secret_file)
    except (ValueError, OSError) as e:
        print(f"member_app: {e}", file=sys.stderr)
        return 2
    _configure_logging(args.log_level)
    run = run_member if args.role == "member" else run_worker_node
    anyio.run(run, args, secret, backend="trio")
    return 0


# --------------------------------------------------------------------------- the launcher


def free_ports(n: int, host: str = "127.0.0.1") -> list[int]:
    """``n`` distinct ports that were free on ``host`` a moment ago.

    The caller hands them to child processes, which bind them later. A port from the
    kernel's ephemeral range can be taken in between by any outgoing connection (the
    runtime's own dials among them), which made a member fail with "address already in
    use" now and then; so the ports are drawn at random from below that range, where
    only another listener choosing the same number can collide.

    Raises:
        OSError: no free port was found in 1,000 tries.
    """
    low = _ephemeral_low()
    floor = 10_000 if low > 12_000 else 1_024
    rng = random.SystemRandom()
    ports: list[int] = []
    socks: list[socket.socket] = []
    try:
        for _ in range(1_000):
            if len(ports) == n:
                return ports
            port = rng.randrange(floor, low)
            if port in ports:
                continue
            s = socket.socket()
            try:
                s.bind((host, port))
            except OSError:
                s.close()
                continue
            socks.append(s)
            ports.append(port)
        if len(ports) == n:
            return ports
        raise OSError(f"no {n} free ports on {host} below {low}")
    finally:
        for s in socks:
            s.close()


def _ephemeral_low() -> int:
    """The lowest port of the kernel's ephemeral range (32768 where it cannot be read)."""
    try:
        text = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text()
        return int(text.split()[0])
    except (OSError, ValueError, IndexError):
        return 32_768


def _die_with_parent() -> None:  # pragma: no cover - runs in the child before exec
    with contextlib.suppress(Exception):
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def spawn_child(
    root: Path, name: str, argv: list[str], secret: str, logs: dict[str, IO[bytes]]
) -> subprocess.Popen[bytes]:
    """Start ``argv`` as ``name``: stdout piped, stderr appended to ``ROOT/NAME.log``.

    The log file is opened once per name and kept in ``logs``; the child gets
    ``REGENCY_SECRET``, this checkout on ``PYTHONPATH`` and, on Linux, SIGKILL when its
    parent dies.
    """
    logf = logs.get(name)
    if logf is None:
        logf = logs[name] = (root / f"{name}.log").open("ab")
    env = {**os.environ, "REGENCY_SECRET": secret}
    here = str(Path(__file__).resolve().parents[1])
    env["PYTHONPATH"] = here + os.pathsep + env.get("PYTHONPATH", "")
    return subprocess.Popen(
        argv,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=logf,
        env=env,
        preexec_fn=_die_with_parent if sys.platform == "linux" else None,
    )


async def wait_ready_line(
    proc: subprocess.Popen[bytes], timeout: float, exited: Callable[[], str]
) -> None:
    """Return once ``proc`` printed a line starting ``ready ``.

    Raises:
        RuntimeError: it exited first; the message is ``exited()``.
        TimeoutError: not ready within ``timeout``.
    """
    assert proc.stdout is not None
    stdout = proc.stdout
    with anyio.fail_after(timeout):
        while True:
            line = await anyio.to_thread.run_sync(stdout.readline, abandon_on_cancel=True)
            if not line:
                raise RuntimeError(exited())
            if line.startswith(b"ready "):
                return


async def wait_exit_or_kill(proc: subprocess.Popen[bytes], timeout: float) -> None:
    """Wait for ``proc`` to exit, SIGKILL it past ``timeout``; then close its stdout."""
    deadline = time.monotonic() + timeout
    while proc.poll() is None:
        if time.monotonic() > deadline:
            proc.kill()
        await anyio.sleep(0.01)
    if proc.stdout is not None:
        proc.stdout.close()


def log_tail(path: Path, n: int) -> str:
    """The last ``n`` bytes of the log at ``path`` as text; ``""`` if it cannot be read."""
    try:
        return path.read_bytes()[-n:].decode(errors="replace")
    except OSError:
        return ""


def kill_children(procs: Iterable[subprocess.Popen[bytes]], logs: Iterable[IO[bytes]] = ()) -> None:
    """SIGKILL every process still running (a stopped one too), reap it, close the logs."""
    procs = list(procs)
    for proc in procs:
        if proc.poll() is None:
            with contextlib.suppress(OSError):
                proc.kill()
    for proc in procs:
        with contextlib.suppress(Exception):
            proc.wait(timeout=5)
        if proc.stdout is not None:
            with contextlib.suppress(Exception):
                proc.stdout.close()
    for logf in logs:
        logf.close()


def _parse_ts(text: object) -> float | None:
    if not isinstance(text, str):
        return None
    try:
        return dt.datetime.fromisoformat(text).replace(tzinfo=dt.UTC).timestamp()
    except ValueError:
        return None


@final
class GroupProcesses:
    """Members and workers of one orchestrator group as subprocesses on loopback.

    Args:
        root: a directory for the data directories and the logs (``NAME.log``).
        members: the members' names; ports are chosen with :func:`free_ports`.
        workers: the worker nodes' names.
        secret: the shared secret (passed as ``REGENCY_SECRET``).
        member_args, worker_args: extra command-line arguments for every member/worker.
    """

    def __init__(
        self,
        root: Path,
        members: Sequence[str] = ("o1", "o2", "o3"),
        workers: Sequence[str] = ("w1", "w2", "w3"),
        *,
        secret: str,
        member_args: Sequence[str] = (),
        worker_args: Sequence[str] = (),
    ) -> None:
        self.root = root
        self.members = list(members)
        self.workers = list(workers)
        self.secret = secret
        self.member_args = list(member_args)
        self.worker_args = list(worker_args)
        self.ports = dict(zip(self.members, free_ports(len(self.members)), strict=True))
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self._logs: dict[str, IO[bytes]] = {}
        self._offsets: dict[str, int] = {}
        self._partial: dict[str, bytes] = {}
        self._closed = False
        root.mkdir(parents=True, exist_ok=True)

    # -- processes --------------------------------------------------------------------

    def member_list(self) -> list[str]:
        """The ``--member NAME=HOST:PORT`` arguments every node gets."""
        out: list[str] = []
        for m in self.members:
            out += ["--member", f"{m}=127.0.0.1:{self.ports[m]}"]
        return out

    def argv(self, name: str) -> list[str]:
        """The command line of ``name`` (a member or a worker)."""
        base = [sys.executable, "-m", "supervisors.member_app"]
        if name in self.members:
            return [
                *base,
                "member",
                "--name",
                name,
                "--listen",
                f"127.0.0.1:{self.ports[name]}",
                "--data",
                str(self.root / "data"),
                *self.member_list(),
                *self.member_args,
            ]
        return [*base, "worker", "--name", name, *self.member_list(), *self.worker_args]

    def spawn(self, name: str) -> None:
        """Start ``name`` (again: a member recovers from its data directory)."""
        if self._closed:
            raise RuntimeError("the group's processes were closed")
        self.procs[name] = spawn_child(self.root, name, self.argv(name), self.secret, self._logs)

    async def wait_ready(self, name: str, timeout: float = 30.0) -> None:
        """Return once ``name`` printed its ready line.

        Raises:
            RuntimeError: it exited first (the message holds the end of its log).
            TimeoutError: not ready within ``timeout``.
        """
        await wait_ready_line(
            self.procs[name], timeout, lambda: f"{name} exited: {self.log_tail(name)}"
        )

    async def start(self, timeout: float = 60.0) -> None:
        """Start every member and worker; return once each is ready."""
        for name in self.members + self.workers:
            self.spawn(name)
        for name in self.members + self.workers:
            await self.wait_ready(name, timeout)

    def signal(self, name: str, sig: int) -> None:
        """Send ``sig`` to ``name`` (if it still runs)."""
        proc = self.procs[name]
        if proc.poll() is None:
            proc.send_signal(sig)

    def alive(self, name: str) -> bool:
        """Whether ``name``'s process runs (a stopped one counts as running)."""
        proc = self.procs.get(name)
        return proc is not None and proc.poll() is None

    async def wait_exit(self, name: str, timeout: float = 10.0) -> None:
        """Wait for ``name`` to exit; SIGKILL it past ``timeout``."""
        await wait_exit_or_kill(self.procs[name], timeout)

    async def restart(self, name: str, timeout: float = 30.0) -> None:
        """Restart ``name`` once it has exited; return once it is ready."""
        await self.wait_exit(name)
        self.spawn(name)
        await self.wait_ready(name, timeout)

    def log_tail(self, name: str, n: int = 800) -> str:
        """The end of ``name``'s log (for error messages)."""
        return log_tail(self.root / f"{name}.log", n)

    def close(self) -> None:
        """SIGKILL every child still running (a stopped one too), reap it. Idempotent."""
        if self._closed:
            return
        self._closed = True
        kill_children(self.procs.values(), self._logs.values())

    def __enter__(self) -> GroupProcesses:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- logs -------------------------------------------------------------------------

    def events(self) -> Iterator[dict[str, Any]]:
        """The log events written since the last call, from every child, as dicts.

        Each has ``"src"`` (the child's name) and ``"ts"`` (seconds since the epoch, from
        its ``timestamp``) added. Lines that are not JSON are skipped.
        """
        for name in self.members + self.workers:
            path = self.root / f"{name}.log"
            try:
                with path.open("rb") as f:
                    f.seek(self._offsets.get(name, 0))
                    data = f.read()
            except OSError:
                continue
            self._offsets[name] = self._offsets.get(name, 0) + len(data)
            data = self._partial.pop(name, b"") + data
            lines = data.split(b"\n")
            if lines and lines[-1]:
                self._partial[name] = lines[-1]
            for line in lines[:-1]:
                if not line.startswith(b"{"):
                    continue
                try:
                    ev = json.loads(line)
                except ValueError:
                    continue
                if isinstance(ev, dict):
                    ev["src"] = name
                    ev["ts"] = _parse_ts(ev.get("timestamp"))
                    yield ev


async def fetch_audit(node: Node, member: str, timeout: float = 10.0) -> list[AuditRecord]:
    """Every command ``member`` applied, in log order, read after a linearizable barrier.

    Raises:
        TimeoutError: no complete answer within ``timeout``.
    """
    out: list[AuditRecord] = []
    since = 0
    with anyio.fail_after(timeout):
        while True:
            try:
                answer = await node.call(
                    Name(AUDIT_SERVICE, member), ("records", since), timeout=3.0
                )
            except (ServerExited, CallTimeout, MailboxFull, NoProcError):
                await anyio.sleep(0.1)
                continue
            if answer[0] != "ok":
                await anyio.sleep(0.1)
                continue
            page = answer[1]["records"]
            out += page
            if page:
                since = int(page[-1][0])
            if not answer[1]["more"]:
                return out


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
