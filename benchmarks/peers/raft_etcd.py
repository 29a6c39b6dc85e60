"""The etcd peer of the raft suite: three ``etcd`` members on loopback, a raw HTTP client.

The members run with the suite's election timeout (``--election-timeout 150``), but a
heartbeat of 30 ms instead of 50 (:data:`ETCD_HEARTBEAT_MS`): etcd refuses an election
timeout below five heartbeats. etcd ticks once per heartbeat and draws its election
timeout from [150, 300) ms in whole ticks (150, 180, ..., 270 ms); a faster heartbeat
does not shorten a crash failover, which waits out the election timeout. Also
``--pre-vote``, default fsync, data directories in a temporary directory; etcd always
runs check-quorum.

The client speaks to etcd's gRPC-JSON gateway (``POST /v3/kv/put``,
``POST /v3/maintenance/status``) over plain HTTP/1.1 with keep-alive, written directly
on trio TCP streams (:class:`HttpConnection`): etcdctl would pay a process start per
request, and a general HTTP client costs more Python per request than the few lines
here, so etcd's figures are not held back by its client. One connection per worker,
to the leader (a follower would forward the proposal: an extra hop).
"""

from __future__ import annotations

import base64
import json
import shutil
from typing import Any

import trio

from benchmarks.peers.raft_common import ProcessCluster, Timing, free_ports

__all__ = ["EtcdClient", "EtcdCluster", "HttpConnection", "available"]

ETCD = "etcd"

ETCD_HEARTBEAT_MS = 30
"""etcd's heartbeat: it requires an election timeout of at least five heartbeats."""


def available() -> str | None:
    """The path of ``etcd``, or None when it is not installed (Debian: etcd-server)."""
    return shutil.which(ETCD)


class HttpConnection:
    """One keep-alive HTTP/1.1 connection; requests one at a time."""

    def __init__(self, host: str, port: int) -> None:
        self.host = host
        self.port = port
        self._stream: trio.SocketStream | None = None
        self._buf = b""

    async def request(self, path: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        """POST ``body`` as JSON to ``path``; return (status, JSON body).

        Raises:
            OSError, trio.BrokenResourceError: the connection failed (it is reset).
        """
        if self._stream is None:
            self._stream = await trio.open_tcp_stream(self.host, self.port)
            self._buf = b""
        data = json.dumps(body).encode()
        head = (
            f"POST {path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(data)}\r\n\r\n"
        ).encode()
        try:
            await self._stream.send_all(head + data)
            return await self._response()
        except BaseException:
            await self.aclose()
            raise

    async def _fill(self) -> None:
        assert self._stream is not None
        chunk = await self._stream.receive_some(65536)
        if not chunk:
            raise trio.BrokenResourceError("connection closed by etcd")
        self._buf += chunk

    async def _response(self) -> tuple[int, dict[str, Any]]:
        while b"\r\n\r\n" not in self._buf:
            await self._fill()
        head, _, self._buf = self._buf.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        headers = {
            k.strip().lower(): v.strip() for k, _, v in (x.partition(":") for x in lines[1:])
        }
        if "content-length" in headers:
            size = int(headers["content-length"])
            while len(self._buf) < size:
                await self._fill()
            body, self._buf = self._buf[:size], self._buf[size:]
        elif headers.get("transfer-encoding") == "chunked":
            body = b""
            while True:
                while b"\r\n" not in self._buf:
                    await self._fill()
                size_line, _, self._buf = self._buf.partition(b"\r\n")
                size = int(size_line.split(b";")[0], 16)
                while len(self._buf) < size + 2:
                    await self._fill()
                body += self._buf[:size]
                self._buf = self._buf[size + 2 :]
                if size == 0:
                    break
        else:
            raise trio.BrokenResourceError("etcd answered without a length")
        return status, json.loads(body) if body.strip() else {}

    async def aclose(self) -> None:
        """Close the connection (the next request reconnects)."""
        stream, self._stream = self._stream, None
        if stream is not None:
            await stream.aclose()


class EtcdCluster(ProcessCluster):
    """Three etcd members on loopback with the suite's timings and pre-vote."""

    name = "etcd"

    def __init__(self, timing: Timing) -> None:
        super().__init__(["e1", "e2", "e3"], timing)
        ports = free_ports(6)
        self.client_ports = dict(zip(self.members, ports[:3], strict=True))
        self.peer_ports = dict(zip(self.members, ports[3:], strict=True))
        self.member_ids: dict[str, str] = {}

    def argv(self, member: str) -> list[str]:
        """etcd's command line for ``member``."""
        cp, pp = self.client_ports[member], self.peer_ports[member]
        cluster = ",".join(f"{m}=http://127.0.0.1:{self.peer_ports[m]}" for m in self.members)
        return [
            ETCD,
            "--name", member,
            "--data-dir", str(self.root / member),
            "--listen-client-urls", f"http://127.0.0.1:{cp}",
            "--advertise-client-urls", f"http://127.0.0.1:{cp}",
            "--listen-peer-urls", f"http://127.0.0.1:{pp}",
            "--initial-advertise-peer-urls", f"http://127.0.0.1:{pp}",
            "--initial-cluster", cluster,
            "--initial-cluster-token", "raftbench",
            "--initial-cluster-state", "new",
            "--heartbeat-interval", str(min(self.timing.heartbeat_ms, ETCD_HEARTBEAT_MS)),
            "--election-timeout", str(self.timing.election_min_ms),
            "--pre-vote",
            "--logger", "zap",
            "--log-level", "error",
        ]  # fmt: skip

    async def wait_up(self, member: str, timeout: float) -> None:
        """Poll the member's status until it answers."""
        conn = HttpConnection("127.0.0.1", self.client_ports[member])
        with trio.fail_after(timeout):
            while True:
                if self.procs[member].poll() is not None:
                    raise RuntimeError(f"etcd {member} exited: {self.log_tail(member)}")
                try:
                    status, body = await conn.request("/v3/maintenance/status", {})
                    if status == 200:
                        self.member_ids[body["header"]["member_id"]] = member
                        await conn.aclose()
                        return
                except (OSError, trio.BrokenResourceError, ValueError, KeyError):
                    pass
                await trio.sleep(0.02)


def _b64(text: str | bytes) -> str:
    raw = text.encode() if isinstance(text, str) else text
    return base64.b64encode(raw).decode()


class _EtcdWorker:
    def __init__(self, client: EtcdClient) -> None:
        self.client = client
        self.conn: HttpConnection | None = None

    async def put(self, key: str, value: bytes) -> None:
        body = {"key": _b64(key), "value": _b64(value)}
        while True:
            if self.conn is None:
                leader = self.client.known_leader or (await self.client.leader())[0]
                if leader is None:
                    await trio.sleep(0.005)
                    continue
                self.conn = HttpConnection("127.0.0.1", self.client.cluster.client_ports[leader])
            try:
                status, answer = await self.conn.request("/v3/kv/put", body)
            except (OSError, trio.BrokenResourceError):
                status, answer = 0, {}
            if status == 200 and "header" in answer:
                return
            if self.conn is not None:
                await self.conn.aclose()
            self.conn = None
            self.client.known_leader = None
            await trio.sleep(0.005)


class EtcdClient:
    """The raft suite's client interface for an :class:`EtcdCluster`."""

    def __init__(self, cluster: EtcdCluster) -> None:
        self.cluster = cluster
        self.known_leader: str | None = None

    async def worker(self) -> _EtcdWorker:
        """A sequential putter with its own connection to the leader."""
        return _EtcdWorker(self)

    async def put_once(self, member: str, key: str, value: bytes) -> bool:
        """One put through ``member`` on a fresh connection (followers forward it)."""
        conn = HttpConnection("127.0.0.1", self.cluster.client_ports[member])
        try:
            status, answer = await conn.request(
                "/v3/kv/put", {"key": _b64(key), "value": _b64(value)}
            )
        finally:
            await conn.aclose()
        return status == 200 and "header" in answer

    async def _status(self, member: str) -> dict[str, Any] | None:
        conn = HttpConnection("127.0.0.1", self.cluster.client_ports[member])
        try:
            with trio.move_on_after(0.5):
                status, body = await conn.request("/v3/maintenance/status", {})
                return body if status == 200 else None
        except (OSError, trio.BrokenResourceError, ValueError):
            return None
        finally:
            await conn.aclose()
        return None

    async def leader(self) -> tuple[str | None, int]:
        """The leader the live members agree on, and the highest term they report."""
        statuses = [await self._status(m) for m in self.cluster.members]
        term = max((int(s.get("raftTerm", 0)) for s in statuses if s), default=0)
        leaders = {s.get("leader") for s in statuses if s and int(s.get("raftTerm", 0)) == term}
        leaders.discard(None)
        leaders.discard("0")
        if len(leaders) != 1:
            return None, term
        leader = self.cluster.member_ids.get(str(leaders.pop()))
        self.known_leader = leader
        return leader, term

    async def healthy(self, member: str) -> bool:
        """``member`` knows a leader and has applied what the leader committed."""
        st = await self._status(member)
        if not st or st.get("leader") in (None, "0"):
            return False
        lead = self.cluster.member_ids.get(st["leader"])
        if lead is None:
            return False
        lst = await self._status(lead)
        return lst is not None and int(st.get("raftAppliedIndex", 0)) >= int(
            lst.get("raftIndex", 0)
        )
