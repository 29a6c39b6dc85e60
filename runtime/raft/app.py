"""A runnable Raft member: a replicated key-value store as its own OS process.

::

    REGENCY_SECRET=... python -m runtime.raft.app --id r1 --listen 127.0.0.1:7001 \\
        --peer r2=127.0.0.1:7002 --peer r3=127.0.0.1:7003 --data /var/lib/regency/r1 \\
        [--tick-ms 10 --heartbeat-ticks 5 --election-ticks 15]

Each member is a :class:`~runtime.node.Node` named by its id, with a
:class:`~runtime.dist.Distribution` listening on ``--listen``, a
:class:`~runtime.raft.durable.DurableStorage` in ``--data`` (fsync before every
acknowledgement, group commit) and a :class:`~runtime.raft.driver.RaftDriver` whose
messages travel over :class:`~runtime.raft.dist_transport.DistTransport`. The voters
are the member itself and every ``--peer``; the peers' node names are their ids. The
shared secret comes from ``REGENCY_SECRET`` (or ``--secret-file``). Once it accepts
connections the member prints one line ``ready ID HOST PORT`` on standard output; it
logs its events (``leader_elected``, ``stepped_down``, ...) as JSON lines on standard
error. SIGTERM or SIGINT stops it gracefully: a leader first hands leadership to the
most up-to-date follower (Raft leadership transfer), so the cluster has a new leader
within about one network round trip instead of an election timeout. SIGKILL is a crash;
restarting the member with the same ``--data`` recovers everything it acknowledged.

**The state machine** (:class:`KVStore`). A command is the msgpack of
``[op, key, value, client_id, seq]``; the only op is ``"put"``. Commands are idempotent
per client: the store keeps, for every ``client_id``, the highest ``seq`` it applied and
that command's result, so a retried command (same ``client_id`` and ``seq``) is not
applied twice and answers the first application's result with ``duplicate`` true. A
client must therefore number its commands in increasing ``seq`` and retry with the same
number. A malformed command fails the same way on every member.

**The client service** (:data:`CLIENT_SERVICE`, a GenServer registered on every member;
call it as ``Name("raft_client", member_id)``). Answers are msgpack-able lists whose
first element says what happened:

* ``("put", key, value, client_id, seq)`` -> ``["ok", {"index": i, "duplicate": b}]``
  once the command is committed and applied (``index``: the log index of its first
  application); ``["not_leader", hint]`` at once when this member is not the leader
  (``hint``: the leader's id, or None during an election; nothing was proposed, retry
  at the hint); ``["retry", why]`` when the outcome is unknown or the proposal was
  refused for a moment (a leadership transfer, leadership lost before commit):
  retry with the same ``seq``; ``["unavailable", why]`` when the member is
  stopping; ``["error", text]`` for a command the state machine rejected.
* ``("put", key, value, client_id, seq, wait)`` -> the same, except during an election
  (no leader known here): the member holds the request until it knows a leader, at
  most ``wait`` seconds (a number in ``[0, 10]``), then proposes it if it became the
  leader itself, else answers ``["not_leader", hint]`` with the new leader (None after
  ``wait``). A client that opts in learns the new leader the moment this member does,
  instead of polling through the election; a request is never held otherwise.
* ``("get", key)`` -> ``["ok", value]`` (None when absent), read linearizably (a read
  index confirmed by the leader's quorum, then the local store; works on followers);
  ``["not_leader", None]`` during an election, ``["retry", why]`` when the leader
  changed meanwhile or the read timed out.
* ``("dump",)`` -> ``["ok", {key: [value, version]}]``, a linearizable read of the
  whole store; ``version`` counts the applications of puts to that key.
* ``"status"`` -> a dict: ``id``, ``role``, ``term``, ``leader``, ``commit``,
  ``applied``, ``last_index``, ``leader_ready``, ``applies``, ``duplicates``,
  ``fsyncs``.

No call waits for an election unless it asks to (the ``wait`` of a put): a request that
cannot be served now is answered at once.
:class:`KVClient` is a client for a node of another process that follows the hints and
retries with the same ``seq``.
"""

from __future__ import annotations

import argparse
import itertools
import os
import random
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final, final

import anyio
import anyio.abc
import msgpack
import structlog

from ..dist import Distribution
from ..dist_cli import _configure_logging, _hostport
from ..errors import CallTimeout, MailboxFull, ServerExited
from ..genserver import NOREPLY, GenServer
from ..handshake import load_secret
from ..messages import From
from ..node import Node
from ..pid import Name
from .core import Entry, NotLeader, ProposalDropped, RaftError
from .dist_transport import DistTransport
from .driver import (
    DEFAULT_ELECTION_TICKS,
    DEFAULT_HEARTBEAT_TICKS,
    DriverStopped,
    LeadershipLost,
    ProposalCallback,
    ProposalTimeout,
    RaftDriver,
    ReadTimeout,
    raft_config,
)
from .durable import DurableStorage

__all__ = [
    "CLIENT_SERVICE",
    "ClientService",
    "KVClient",
    "KVStore",
    "Member",
    "PutFailed",
    "encode_put",
    "keep_connected",
    "main",
    "run_member",
]

CLIENT_SERVICE: Final = "raft_client"
"""The registered name of the client service on every member."""

READ_TIMEOUT: Final = 2.0
"""Seconds a get waits for its read index before answering ``retry``."""

RECONNECT_INTERVAL: Final = 0.1
"""Seconds between two checks that this member is connected to every other member."""

MAX_LEADER_WAIT: Final = 10.0
"""The longest ``wait`` a put may ask for (seconds)."""

log = structlog.get_logger("regency.raft.app")


def encode_put(key: str, value: object, client_id: str, seq: int) -> bytes:
    """Return the command that puts ``value`` at ``key`` (see the module docstring)."""
    packed: bytes = msgpack.packb(["put", key, value, client_id, seq], use_bin_type=True)
    return packed


@final
class KVStore:
    """The replicated key-value store with per-client deduplication.

    ``applies`` counts puts applied (not duplicates), ``duplicates`` counts retried
    commands recognised and skipped; ``versions[key]`` counts the puts applied to a key.
    """

    def __init__(self) -> None:
        """Create an empty store."""
        self.data: dict[str, object] = {}
        self.versions: dict[str, int] = {}
        self.sessions: dict[str, list[int]] = {}  # client_id -> [seq, index]
        self.applies = 0
        self.duplicates = 0

    def apply(self, entry: Entry) -> object:
        """Apply one committed command; return ``{"index": i, "duplicate": b}``.

        Raises:
            ValueError: The command is malformed or its op unknown (on every member alike).
        """
        try:
            op, key, value, client_id, seq = msgpack.unpackb(entry.data, raw=False)
        except Exception as exc:  # msgpack raises several unrelated types
            raise ValueError(f"kv: malformed command at index {entry.index}") from exc
        if (
            op != "put"
            or not isinstance(key, str)
            or not isinstance(client_id, str)
            or type(seq) is not int
        ):
            raise ValueError(f"kv: not a valid put command at index {entry.index}")
        session = self.sessions.get(client_id)
        if session is not None and seq <= session[0]:
            self.duplicates += 1
            first = session[1] if seq == session[0] else None
            return {"index": first, "duplicate": True}
        self.sessions[client_id] = [seq, entry.index]
        self.data[key] = value
        self.versions[key] = self.versions.get(key, 0) + 1
        self.applies += 1
        return {"index": entry.index, "duplicate": False}

    def snapshot(self) -> bytes:
        """Return the whole store as msgpack."""
        packed: bytes = msgpack.packb(
            [self.data, self.versions, self.sessions, self.applies, self.duplicates],
            use_bin_type=True,
        )
        return packed

    def restore(self, data: bytes) -> None:
        """Replace the store with a snapshot's (``b""``: empty)."""
        if not data:
            self.data, self.versions, self.sessions = {}, {}, {}
            self.applies = self.duplicates = 0
            return
        (self.data, self.versions, self.sessions, self.applies, self.duplicates) = msgpack.unpackb(
            data, raw=False
        )


@final
class Member:
    """What the client service needs of a running member."""

    def __init__(
        self, node: Node, driver: RaftDriver, store: KVStore, tg: anyio.abc.TaskGroup
    ) -> None:
        """Bundle the member's node, driver, store and the task group for requests."""
        self.node = node
        self.driver = driver
        self.store = store
        self.tg = tg

    def status(self) -> dict[str, object]:
        """The ``"status"`` answer (see the module docstring)."""
        st = self.driver.status()
        return {
            "id": st.id,
            "role": st.role.value,
            "term": st.term,
            "leader": st.leader,
            "commit": st.commit,
            "applied": st.applied,
            "last_index": st.last_index,
            "leader_ready": st.leader_ready,
            "applies": self.store.applies,
            "duplicates": self.store.duplicates,
            "fsyncs": self.driver.fsyncs,
        }


def _refusal(exc: RaftError) -> list[object]:
    """The answer for a request the driver refused or could not finish."""
    if isinstance(exc, NotLeader):
        return ["not_leader", exc.leader_hint]
    if isinstance(exc, DriverStopped):
        return ["unavailable", str(exc)]
    if isinstance(exc, ProposalDropped):
        return ["retry", "leadership_transfer"]
    if isinstance(exc, LeadershipLost):
        return ["retry", "leadership_lost"]
    if isinstance(exc, ProposalTimeout | ReadTimeout):
        return ["retry", "timeout"]
    return ["retry", str(exc)]


def _put_answer(result: object, error: BaseException | None) -> list[object]:
    """The answer to a put, from its proposal's outcome."""
    if error is None:
        return ["ok", result]
    if isinstance(error, RaftError):
        return _refusal(error)
    if isinstance(error, ValueError):  # the store rejected the command (on every member)
        return ["error", str(error)]
    return ["retry", repr(error)]


class ClientService(GenServer):
    """The ``raft_client`` service: puts, linearizable gets and status (module docstring).

    Requests are served concurrently, so one slow commit never holds up the next request:
    a put is handed to the driver (:meth:`~runtime.raft.driver.RaftDriver.propose_nowait`),
    whose loop replies as soon as the entry is applied (no task waits for it, which
    saves a task start and a wake-up per put); a get runs in its own task.
    """

    async def init(self, member: Member) -> None:
        """Keep the member to serve."""
        self.member = member
        # Puts held until the election ends: (deadline, caller, command, callback).
        self._held: list[tuple[float, From, bytes, ProposalCallback]] = []

    async def handle_call(self, request: Any, from_: From) -> Any:
        """Answer ``put``, ``get``, ``dump`` and ``status`` (see the module docstring)."""
        m = self.member
        if request == "status":
            return m.status()
        if isinstance(request, list | tuple) and request:
            op = request[0]
            if op == "put" and len(request) in (5, 6):
                _, key, value, client_id, seq, *rest = request
                wait = rest[0] if rest else 0
                if (
                    not (isinstance(key, str) and isinstance(client_id, str))
                    or type(seq) is not int
                    or type(wait) not in (int, float)
                    or not 0 <= wait <= MAX_LEADER_WAIT
                ):
                    return [
                        "error",
                        "put expects (put, str key, value, str client_id, int seq[, wait s])",
                    ]
                node = m.node
                command = encode_put(key, value, client_id, seq)

                def done(result: object, error: BaseException | None) -> None:
                    node.reply(from_, _put_answer(result, error))

                try:
                    m.driver.propose_nowait(command, done)
                except NotLeader as exc:
                    if exc.leader_hint is not None or not wait:
                        return _refusal(exc)
                    if not self._held:
                        m.tg.start_soon(self._release_held)
                    self._held.append((anyio.current_time() + wait, from_, command, done))
                except RaftError as exc:
                    return _refusal(exc)
                return NOREPLY
            if op == "get" and len(request) == 2 and isinstance(request[1], str):
                m.tg.start_soon(self._read, from_, request[1])
                return NOREPLY
            if op == "dump" and len(request) == 1:
                m.tg.start_soon(self._read, from_, None)
                return NOREPLY
        return ["error", f"unknown request {request!r:.100}"]

    async def _release_held(self) -> None:
        """Retry the held puts once this member knows a leader, or answer them at their wait.

        One task serves every held put, so a change of the driver's status wakes one task
        however many puts wait (each would otherwise wake, during the candidate's fsync).
        """
        m = self.member
        while self._held:
            with anyio.move_on_at(min(h[0] for h in self._held)):
                await m.driver.wait_for(lambda s: s.leader is not None)
            now = anyio.current_time()
            held, self._held = self._held, []
            for deadline, from_, command, done in held:
                try:
                    m.driver.propose_nowait(command, done)
                except NotLeader as exc:
                    if exc.leader_hint is None and deadline > now:
                        self._held.append((deadline, from_, command, done))
                    else:
                        m.node.reply(from_, _refusal(exc))
                except RaftError as exc:
                    m.node.reply(from_, _refusal(exc))

    async def _read(self, from_: From, key: str | None) -> None:
        m = self.member
        store = m.store
        answer: list[object]
        try:
            if key is None:
                dump = await m.driver.linearizable_read(
                    lambda: {k: [v, store.versions[k]] for k, v in store.data.items()},
                    timeout=READ_TIMEOUT,
                )
                answer = ["ok", dump]
            else:
                answer = [
                    "ok",
                    await m.driver.linearizable_read(
                        lambda: store.data.get(key), timeout=READ_TIMEOUT
                    ),
                ]
        except RaftError as exc:
            answer = _refusal(exc)
        m.node.reply(from_, answer)


# --------------------------------------------------------------------------- the client


class PutFailed(RuntimeError):
    """A put was not acknowledged before the client's deadline; it may still commit."""


@final
class KVClient:
    """A client of a cluster of members, for a node in another OS process.

    It follows ``not_leader`` hints, retries the same ``seq`` after an unknown outcome,
    and tries the next member when one is unreachable. One client issues one command at
    a time (its ``seq`` numbers increase); use one client per concurrent task.

    Args:
        node: the local node, whose ``Distribution`` knows every member's address.
        members: the members' ids (node names).
        client_id: this client's unique id (default: random).
        retry_pause: seconds to wait before retrying when no leader is known.
        call_timeout: seconds one call to a member may take.
        leader_wait: seconds a member may hold a put during an election (the put's
            ``wait``, at most ``MAX_LEADER_WAIT``); 0 (the default): refused at once,
            and retried after ``retry_pause``.
    """

    def __init__(
        self,
        node: Node,
        members: Sequence[str],
        *,
        client_id: str | None = None,
        retry_pause: float = 0.005,
        call_timeout: float = 6.0,
        leader_wait: float = 0.0,
    ) -> None:
        """Create a client; nothing is sent until the first request."""
        self.node = node
        self.members = list(members)
        self.client_id = client_id or os.urandom(8).hex()
        self.retry_pause = retry_pause
        self.call_timeout = call_timeout
        self.leader_wait = leader_wait
        self.leader: str | None = None
        self.attempts = 0
        """Calls made, including retries."""
        self._seq = itertools.count(1)
        self._rr = random.randrange(len(self.members))

    def _next_member(self, current: str | None) -> str:
        if current in self.members:
            i = self.members.index(current)
            return self.members[(i + 1) % len(self.members)]
        self._rr += 1
        return self.members[self._rr % len(self.members)]

    async def call(self, member: str, request: object, timeout: float | None = None) -> Any:
        """Call ``request`` on ``member``'s client service and return its raw answer.

        Raises:
            ServerExited: the member is unreachable or its service is not running.
            CallTimeout: no answer within ``timeout`` (default ``call_timeout``).
        """
        t = self.call_timeout if timeout is None else timeout
        return await self.node.call(Name(CLIENT_SERVICE, member), request, timeout=t)

    async def put(self, key: str, value: object, *, deadline: float = 30.0) -> dict[str, Any]:
        """Put ``value`` at ``key``; return the store's result once it is applied.

        Retries (same ``seq``) until acknowledged or ``deadline`` seconds have passed.

        Raises:
            PutFailed: not acknowledged in time (the put may still commit).
        """
        seq = next(self._seq)
        request: tuple[object, ...] = ("put", key, value, self.client_id, seq)
        if self.leader_wait > 0:
            request = (*request, self.leader_wait)
        result = await self._until_ok(request, deadline)
        assert isinstance(result, dict)
        return result

    async def get(self, key: str, *, member: str | None = None, deadline: float = 10.0) -> Any:
        """Read ``key`` linearizably, from ``member`` if given (else any member).

        Raises:
            PutFailed: no answer before ``deadline``.
        """
        return await self._until_ok(("get", key), deadline, member=member, follow=member is None)

    async def dump(self, member: str, *, deadline: float = 10.0) -> dict[str, list[Any]]:
        """Read the whole store of ``member`` linearizably: ``{key: [value, version]}``."""
        result = await self._until_ok(("dump",), deadline, member=member, follow=False)
        assert isinstance(result, dict)
        return result

    async def status(self, member: str, timeout: float = 1.0) -> dict[str, Any] | None:
        """Return ``member``'s status, or None if it does not answer in time."""
        try:
            st = await self.call(member, "status", timeout=timeout)
        except (ServerExited, CallTimeout, MailboxFull):
            return None
        return st if isinstance(st, dict) else None

    async def _until_ok(
        self, request: object, deadline: float, *, member: str | None = None, follow: bool = True
    ) -> Any:
        target = member or self.leader or self._next_member(None)
        last: object = None
        with anyio.move_on_after(deadline):
            while True:
                self.attempts += 1
                try:
                    answer = await self.call(target, request)
                except (ServerExited, CallTimeout, MailboxFull) as exc:
                    last = exc
                    if follow:
                        target = self._next_member(target)
                    await anyio.sleep(self.retry_pause)
                    continue
                status = answer[0] if isinstance(answer, list) and answer else None
                if status == "ok":
                    if follow:
                        self.leader = target
                    return answer[1]
                last = answer
                if status == "not_leader" and follow:
                    hint = answer[1]
                    if isinstance(hint, str) and hint != target and hint in self.members:
                        target = hint
                        continue
                    target = self._next_member(target)
                elif status == "unavailable" and follow:
                    target = self._next_member(target)
                elif status == "error":
                    raise ValueError(f"kv: {answer[1]}")
                await anyio.sleep(self.retry_pause)
        raise PutFailed(f"kv: {request!r:.80} not acknowledged within {deadline} s: {last!r:.200}")


# --------------------------------------------------------------------------- the member


async def keep_connected(
    dist: Distribution, name: str, host: str, port: int, interval: float = RECONNECT_INTERVAL
) -> None:
    """Keep a connection up to the member ``name``, dialling it again when it is lost.

    The distribution layer connects on demand, and in a healthy cluster only the leader
    talks to the followers: two followers would otherwise first connect when the leader
    is gone and one asks the other for a (pre-)vote, so the election's first round trip
    would carry a TCP connect and a handshake, and two requests crossing that slow round
    trip can both win their pre-vote and split the vote. A restarted member also dials
    everyone at once, so its leader need not wait out its own redial backoff to reach it.
    """
    while True:
        if not dist.is_connected(name):
            try:
                await dist.connect(host, port, name)
            except Exception as exc:  # the layer logs the failure; try again later
                log.debug("member_unreachable", peer=name, error=str(exc))
        await anyio.sleep(interval)


def _peer(text: str) -> tuple[str, str, int]:
    name, sep, address = text.partition("=")
    if not sep or not name:
        raise argparse.ArgumentTypeError(f"expected ID=HOST:PORT, got {text!r}")
    host, port = _hostport(address)
    return name, host, port


async def run_member(args: argparse.Namespace, secret: bytes) -> None:
    """Run one member until SIGINT/SIGTERM; then stop gracefully (transfer leadership)."""
    me: str = args.id
    peers: list[tuple[str, str, int]] = args.peer
    voters = sorted([me, *(name for name, _, _ in peers)])
    if len(set(voters)) != len(voters):
        raise SystemExit(f"raft app: duplicate member ids in {voters}")
    store = KVStore()
    storage = DurableStorage.open(Path(args.data), voters=voters)
    try:
        async with Node(me) as node:
            dist = await Distribution(node, secret=secret).start(listen=args.listen)
            for name, host, port in peers:
                dist.add_peer(name, host, port)
            transport = DistTransport(node, compact=True)
            tick = args.tick_ms / 1000.0
            config = raft_config(
                me,
                voters,
                election_ticks=args.election_ticks,
                heartbeat_ticks=args.heartbeat_ticks,
                campaign_on_leader_loss=args.campaign_on_leader_loss,
            )
            driver = RaftDriver(
                config,
                storage,
                transport,
                store,
                tick_interval=tick,
                tick_phase=random.random() * tick,
            )
            async with anyio.create_task_group() as tg:
                await tg.start(driver.run)
                transport.serve(driver)
                for name, host, port in peers:
                    tg.start_soon(keep_connected, dist, name, host, port)
                member = Member(node, driver, store, tg)
                await node.start_server(ClientService, member, name=CLIENT_SERVICE)
                assert dist.address is not None
                print(f"ready {me} {dist.address[0]} {dist.address[1]}", flush=True)
                with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
                    async for signum in signals:
                        log.info("member_stopping", node=me, signal=signal.Signals(signum).name)
                        break
                await driver.stop()
                tg.cancel_scope.cancel()
    finally:
        storage.close()
    log.info("member_stopped", node=me)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m runtime.raft.app``; returns the exit status."""
    parser = argparse.ArgumentParser(
        prog="python -m runtime.raft.app", description=(__doc__ or "").split("\n")[0]
    )
    parser.add_argument("--id", required=True, help="this member's id (and node name)")
    parser.add_argument("--listen", type=_hostport, required=True, help="HOST:PORT to accept on")
    parser.add_argument(
        "--peer", type=_peer, action="append", default=[], help="ID=HOST:PORT of another member"
    )
    parser.add_argument("--data", required=True, help="directory of the durable log")
    parser.add_argument("--secret-file", help="file holding the shared secret (mode 600)")
    parser.add_argument("--tick-ms", type=float, default=10.0, help="milliseconds per tick")
    parser.add_argument("--heartbeat-ticks", type=int, default=DEFAULT_HEARTBEAT_TICKS)
    parser.add_argument(
        "--election-ticks",
        type=int,
        default=DEFAULT_ELECTION_TICKS,
        help="minimum election timeout in ticks; the timeout is drawn from [N, 2N)",
    )
    parser.add_argument(
        "--campaign-on-leader-loss",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="campaign a few ticks after the leader's connection closes (default: on)",
    )
    parser.add_argument("--log-level", default="info", choices=["debug", "info", "warning"])
    args = parser.parse_args(list(sys.argv[1:] if argv is None else argv))
    try:
        secret = load_secret(path=args.secret_file)
    except (ValueError, OSError) as e:
        print(f"raft app: {e}", file=sys.stderr)
        return 2
    _configure_logging(args.log_level)
    anyio.run(run_member, args, secret, backend="trio")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
