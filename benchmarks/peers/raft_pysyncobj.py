"""The pysyncobj peer of the raft suite: three member processes and their client.

Run as a script, this module is one member::

    python benchmarks/peers/raft_pysyncobj.py --self 127.0.0.1:RAFT --partner ... \\
        --client-port PORT --journal FILE --heartbeat-ms 50 --election-ms 150

a ``SyncObj`` holding a dict with one ``@replicated`` ``put``, configured with the
suite's timings (``appendEntriesPeriod`` = heartbeat, 49.9 ms rather than 50 as pysyncobj
demands a minimum election timeout strictly above three heartbeats, ``raftMinTimeout`` /
``raftMaxTimeout`` = [150, 300) ms, ``autoTickPeriod`` 10 ms like regency's tick,
``connectionRetryTime`` 0.1 s so a restarted member is reconnected at once,
``commandsWaitLeader`` off so a command without a leader fails at once, as regency's
do). Its log is kept in ``--journal`` (pysyncobj's memory-mapped journal, which it
never fsyncs: its commits are not durable on disk, unlike regency's and etcd's).
pysyncobj has no pre-vote. It serves a line protocol on ``--client-port`` (asyncio):
``put KEY VALUE`` -> ``ok`` or ``err REASON`` once the command is applied (a follower
forwards the command to the leader); ``status`` -> one JSON line (leader's raft address,
term, state, commit and applied indexes). It prints ``ready`` when it serves. On
SIGTERM a leader first hands leadership over (``transferLeadership``, then waits up to
one second for another leader) and exits.

Imported, it is the benchmark's side: :class:`SyncObjCluster` and
:class:`SyncObjClient`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
import time
from pathlib import Path
from typing import Any

import trio

if __package__ in (None, ""):  # run as a script: make `benchmarks` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from benchmarks.peers.raft_common import ProcessCluster, Timing, free_ports

__all__ = ["SyncObjClient", "SyncObjCluster", "available"]


def available() -> str | None:
    """None when pysyncobj is importable, else why not."""
    try:
        import pysyncobj  # noqa: F401
    except ImportError:
        return "pysyncobj is not installed (pip install pysyncobj)"
    return None


# --------------------------------------------------------------------------- the member


def _member_main(argv: list[str]) -> None:  # pragma: no cover - runs in a child process
    from pysyncobj import FAIL_REASON, SyncObj, SyncObjConf, replicated

    parser = argparse.ArgumentParser()
    parser.add_argument("--self", dest="me", required=True)
    parser.add_argument("--partner", action="append", default=[])
    parser.add_argument("--client-port", type=int, required=True)
    parser.add_argument("--journal", required=True)
    parser.add_argument("--heartbeat-ms", type=int, default=50)
    parser.add_argument("--election-ms", type=int, default=150)
    args = parser.parse_args(argv)

    class KV(SyncObj):  # type: ignore[misc]
        def __init__(self) -> None:
            conf = SyncObjConf(
                # pysyncobj demands raftMinTimeout > 3 * appendEntriesPeriod (strictly)
                appendEntriesPeriod=min(args.heartbeat_ms, args.election_ms / 3 - 0.1) / 1000,
                raftMinTimeout=args.election_ms / 1000,
                raftMaxTimeout=2 * args.election_ms / 1000,
                autoTickPeriod=0.01,
                connectionRetryTime=0.1,
                commandsWaitLeader=False,
                journalFile=args.journal,
                fullDumpFile=args.journal + ".dump",
            )
            super().__init__(args.me, args.partner, conf)
            self.data: dict[str, str] = {}

        @replicated  # type: ignore[untyped-decorator]
        def put(self, key: str, value: str) -> int:
            self.data[key] = value
            return len(self.data)

    obj = KV()
    loop = asyncio.new_event_loop()
    reasons = {v: k for k, v in vars(FAIL_REASON).items() if isinstance(v, int)}

    def status() -> dict[str, Any]:
        st = obj.getStatus()
        leader = st.get("leader")
        return {
            "leader": None if leader is None else str(leader.address),
            "term": st["raft_term"],
            "state": st["state"],
            "commit": st["commit_idx"],
            "applied": st["last_applied"],
        }

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while line := await reader.readline():
                parts = line.decode().split()
                if parts and parts[0] == "put" and len(parts) == 3:
                    fut: asyncio.Future[str] = loop.create_future()

                    def done(result: Any, error: int, fut: asyncio.Future[str] = fut) -> None:
                        answer = (
                            "ok" if error == FAIL_REASON.SUCCESS else f"err {reasons.get(error)}"
                        )

                        def settle() -> None:
                            if not fut.done():
                                fut.set_result(answer)

                        loop.call_soon_threadsafe(settle)

                    obj.put(parts[1], parts[2], callback=done)
                    answer = await fut
                elif parts == ["status"]:
                    answer = json.dumps(status())
                else:
                    answer = "err bad request"
                writer.write(answer.encode() + b"\n")
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            writer.close()

    async def main() -> None:
        server = await asyncio.start_server(serve, "127.0.0.1", args.client_port)
        stop = asyncio.Event()
        loop.add_signal_handler(signal.SIGTERM, stop.set)
        loop.add_signal_handler(signal.SIGINT, stop.set)
        print("ready", flush=True)
        await stop.wait()
        if obj.getStatus()["state"] == 2:  # leader: hand over first
            obj.transferLeadership()
            deadline = time.monotonic() + 1.0
            while time.monotonic() < deadline and obj.getStatus()["state"] == 2:  # noqa: ASYNC110
                await asyncio.sleep(0.002)  # pysyncobj's state changes in its own thread
        server.close()
        obj.destroy()

    loop.run_until_complete(main())


# --------------------------------------------------------------------------- the benchmark side


class SyncObjCluster(ProcessCluster):
    """Three pysyncobj members on loopback with the suite's timings."""

    name = "pysyncobj"
    ready_line = "ready"

    def __init__(self, timing: Timing) -> None:
        super().__init__(["p1", "p2", "p3"], timing)
        ports = free_ports(6)
        self.raft_addresses = {
            m: f"127.0.0.1:{p}" for m, p in zip(self.members, ports[:3], strict=True)
        }
        self.client_ports = dict(zip(self.members, ports[3:], strict=True))
        self.by_address = {a: m for m, a in self.raft_addresses.items()}

    def argv(self, member: str) -> list[str]:
        """The member script's command line."""
        argv = [
            sys.executable,
            str(Path(__file__).resolve()),
            "--self", self.raft_addresses[member],
            "--client-port", str(self.client_ports[member]),
            "--journal", str(self.root / f"{member}.journal"),
            "--heartbeat-ms", str(self.timing.heartbeat_ms),
            "--election-ms", str(self.timing.election_min_ms),
        ]  # fmt: skip
        for other in self.members:
            if other != member:
                argv += ["--partner", self.raft_addresses[other]]
        return argv


class _LineConnection:
    def __init__(self, port: int) -> None:
        self.port = port
        self.stream: trio.SocketStream | None = None
        self.buf = b""

    async def ask(self, line: str) -> str:
        if self.stream is None:
            self.stream = await trio.open_tcp_stream("127.0.0.1", self.port)
            self.buf = b""
        try:
            await self.stream.send_all(line.encode() + b"\n")
            while b"\n" not in self.buf:
                chunk = await self.stream.receive_some(65536)
                if not chunk:
                    raise trio.BrokenResourceError("closed")  # noqa: TRY301
                self.buf += chunk
        except BaseException:
            await self.aclose()
            raise
        answer, _, self.buf = self.buf.partition(b"\n")
        return answer.decode()

    async def aclose(self) -> None:
        stream, self.stream = self.stream, None
        if stream is not None:
            await stream.aclose()


class _SyncObjWorker:
    def __init__(self, client: SyncObjClient) -> None:
        self.client = client
        self.conn: _LineConnection | None = None

    async def put(self, key: str, value: bytes) -> None:
        request = f"put {key} {value.decode()}"
        while True:
            if self.conn is None:
                leader = self.client.known_leader or (await self.client.leader())[0]
                if leader is None:
                    await trio.sleep(0.005)
                    continue
                self.conn = _LineConnection(self.client.cluster.client_ports[leader])
            try:
                answer = await self.conn.ask(request)
            except (OSError, trio.BrokenResourceError):
                answer = "err connection"
            if answer == "ok":
                return
            await self.conn.aclose()
            self.conn = None
            self.client.known_leader = None
            await trio.sleep(0.005)


class SyncObjClient:
    """The raft suite's client interface for a :class:`SyncObjCluster`."""

    def __init__(self, cluster: SyncObjCluster) -> None:
        self.cluster = cluster
        self.known_leader: str | None = None

    async def worker(self) -> _SyncObjWorker:
        """A sequential putter with its own connection to the leader."""
        return _SyncObjWorker(self)

    async def put_once(self, member: str, key: str, value: bytes) -> bool:
        """One put through ``member`` (a follower forwards it to the leader)."""
        conn = _LineConnection(self.cluster.client_ports[member])
        try:
            return await conn.ask(f"put {key} {value.decode()}") == "ok"
        finally:
            await conn.aclose()

    async def _status(self, member: str) -> dict[str, Any] | None:
        conn = _LineConnection(self.cluster.client_ports[member])
        try:
            with trio.move_on_after(0.5):
                st = json.loads(await conn.ask("status"))
                return st if isinstance(st, dict) else None
        except (OSError, trio.BrokenResourceError, ValueError):
            return None
        finally:
            await conn.aclose()
        return None

    async def leader(self) -> tuple[str | None, int]:
        """The member that reports itself leader in the highest term, and that term."""
        statuses = {m: await self._status(m) for m in self.cluster.members}
        term = max((s["term"] for s in statuses.values() if s), default=0)
        leader = next(
            (m for m, s in statuses.items() if s and s["state"] == 2 and s["term"] == term), None
        )
        self.known_leader = leader
        return leader, term

    async def healthy(self, member: str) -> bool:
        """``member`` knows the leader and has applied what the leader committed."""
        st = await self._status(member)
        if not st or st["leader"] is None:
            return False
        lead = self.cluster.by_address.get(st["leader"])
        if lead is None:
            return False
        lst = await self._status(lead)
        return lst is not None and st["applied"] >= lst["commit"]


if __name__ == "__main__":  # pragma: no cover
    _member_main(sys.argv[1:])
