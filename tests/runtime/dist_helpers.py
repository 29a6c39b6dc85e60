"""Shared pieces of the distribution tests: clusters on loopback, an echo server, raw peers.

Every node listens on ``127.0.0.1`` port 0. Waits poll a condition under a generous
``anyio.fail_after`` bound: a slow machine makes a test slower, never wrong.
"""

from __future__ import annotations

import datetime
import ipaddress
import ssl
import struct
import tempfile
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import anyio.abc
import attrs

import runtime
from runtime import GenServer, Node
from runtime.dist import Distribution
from runtime.handshake import Handshake, HandshakeResult, Role
from runtime.pid import Pid
from runtime.wire import FrameDecoder, FrameEncoder, Op, register_message

SECRET = b"regency-test-secret-0123456789ab"
"""The shared secret of every test cluster."""

OTHER_SECRET = b"some-other-cluster-secret-987654"
"""A secret no test cluster uses."""

BOUND = 10.0
"""Seconds any single wait may take before the test fails: generous, never a speed claim."""

FAST_HEARTBEAT: dict[str, float] = {"heartbeat_interval": 0.05, "heartbeat_timeout": 0.3}
"""Settings for tests about heartbeats: a silent peer is declared down after 0.3 s."""

CALM_HEARTBEAT: dict[str, float] = {"heartbeat_interval": 0.5, "heartbeat_timeout": 5.0}
"""Settings for every other test: no false alarm on a loaded machine."""


@attrs.frozen
class Ping:
    """A registered message class."""

    n: int
    payload: bytes = b""


register_message(Ping, "tests.dist.Ping")


@attrs.frozen
class Secret:
    """Never registered: it may not travel."""

    value: int


class Echo(GenServer):
    """Answers ``("echo", x)`` with x, ``"pid"`` with its pid; crashes on ``("crash", text)``.

    ``("hold", pid)`` never replies, and tells *pid* ``"holding"`` (to crash mid-call).
    """

    async def init(self, *args: Any) -> None:
        """Start with no held call."""
        self.held: list[Any] = []

    async def handle_call(self, request: Any, from_: Any) -> Any:
        """See the class doc."""
        match request:
            case ("echo", x):
                return x
            case "pid":
                return runtime.self_pid()
            case ("crash", text):
                raise RuntimeError(text)
            case ("hold", notify):
                self.held.append(from_)
                if notify is not None:
                    runtime.send(notify, "holding")
                return runtime.NOREPLY
        raise ValueError(f"unexpected call {request!r}")

    async def handle_cast(self, msg: Any) -> None:
        """``("crash", text)`` crashes the server (with held calls pending)."""
        match msg:
            case ("crash", text):
                raise RuntimeError(text)
        raise ValueError(f"unexpected cast {msg!r}")


@attrs.define
class Member:
    """One node of a test cluster with its distribution layer."""

    node: Node
    dist: Distribution

    @property
    def name(self) -> str:
        """The node's name."""
        return self.node.name

    @property
    def address(self) -> tuple[str, int]:
        """Where the node listens."""
        assert self.dist.address is not None
        return self.dist.address


async def start_member(
    stack: AsyncExitStack, name: str, *, creation: int | None = None, **kw: Any
) -> Member:
    """Enter a node named *name* on *stack* and start its distribution on loopback."""
    settings: dict[str, Any] = {"secret": SECRET, **CALM_HEARTBEAT, **kw}
    node = await stack.enter_async_context(Node(name, creation=creation))
    dist = await Distribution(node, **settings).start(listen=("127.0.0.1", 0))
    return Member(node, dist)


@asynccontextmanager
async def cluster(*names: str, connect: bool = True, **kw: Any) -> AsyncIterator[list[Member]]:
    """Nodes *names*, each knowing every other's address; with *connect*, all connected."""
    async with AsyncExitStack() as stack:
        members = [await start_member(stack, n, **kw) for n in names]
        for m in members:
            for other in members:
                if other is not m:
                    m.dist.add_peer(other.name, *other.address)
        if connect:
            with anyio.fail_after(BOUND):
                for i, m in enumerate(members):
                    for other in members[i + 1 :]:
                        await m.dist.connect(*other.address, name=other.name)
                for m in members:
                    for other in members:
                        if other is not m:
                            await m.dist.wait_connected(other.name)
        yield members


async def wait_until(pred: Callable[[], bool], timeout: float = BOUND) -> None:
    """Poll *pred* until it holds; fail the test after *timeout* seconds."""
    with anyio.fail_after(timeout):
        while not pred():  # noqa: ASYNC110 - runtime state has no event to await
            await anyio.sleep(0.005)


class Inbox:
    """A process that records every message it receives, in order."""

    def __init__(self, node: Node, *, trap_exit: bool = False, name: str | None = None) -> None:
        self.messages: list[Any] = []
        self.node = node
        self.pid: Pid = node.spawn(self._loop, trap_exit=trap_exit, name=name)

    async def _loop(self) -> None:
        while True:
            self.messages.append(await runtime.receive())

    async def wait_for(self, pred: Callable[[Any], bool], timeout: float = BOUND) -> Any:
        """The first recorded message satisfying *pred*, waiting for it."""
        await wait_until(lambda: any(pred(m) for m in self.messages), timeout)
        return next(m for m in self.messages if pred(m))

    async def wait_count(self, n: int, timeout: float = BOUND) -> list[Any]:
        """The first *n* messages, waiting for them."""
        await wait_until(lambda: len(self.messages) >= n, timeout)
        return self.messages[:n]


# ----------------------------------------------------------------------------- raw peers


def frame(body: bytes) -> bytes:
    """A frame: 4-byte big-endian length, then *body*."""
    return struct.pack(">I", len(body)) + body


class RawPeer:
    """A plain TCP client speaking the wire protocol by hand, for abuse tests."""

    def __init__(self, stream: anyio.abc.SocketStream) -> None:
        self.stream = stream
        self.encoder = FrameEncoder()
        self.decoder = FrameDecoder()
        self.result: HandshakeResult | None = None
        self.sent: list[bytes] = []  # every write, to replay it elsewhere

    @classmethod
    async def open(cls, address: tuple[str, int]) -> RawPeer:
        """Connect to *address*."""
        return cls(await anyio.connect_tcp(*address))

    async def send(self, data: bytes) -> None:
        """Write raw bytes (recorded in :attr:`sent`)."""
        self.sent.append(data)
        await self.stream.send(data)

    async def send_op(self, op: Op) -> None:
        """Write one well-formed session frame."""
        await self.send(self.encoder.encode(op))

    async def authenticate(
        self,
        name: str,
        expected: str | None,
        secret: bytes = SECRET,
        creation: int = 7,
        after_proof: bytes = b"",
    ) -> HandshakeResult:
        """Run a real initiator handshake; *after_proof* is written with the proof."""
        hs = Handshake(
            Role.INITIATOR, name=name, creation=creation, secret=secret, expected_peer=expected
        )
        await self.send(hs.data_to_send())
        while not hs.done:
            data = await self.stream.receive()
            try:
                hs.receive_data(data)
            finally:
                out = hs.data_to_send()
                if out:
                    await self.send(out + after_proof)
        self.result = hs.result
        if self.result.trailing_data:
            self.decoder.feed(self.result.trailing_data)
        return self.result

    async def read_until_closed(self, timeout: float = BOUND) -> bytes:
        """Everything the node writes until it closes the connection."""
        got = bytearray()
        with anyio.fail_after(timeout):
            while True:
                try:
                    got += await self.stream.receive()
                except (anyio.EndOfStream, anyio.BrokenResourceError):
                    return bytes(got)

    async def aclose(self) -> None:
        """Close the connection."""
        await anyio.aclose_forcefully(self.stream)


# ----------------------------------------------------------------------------- TLS


@attrs.frozen
class TLSFiles:
    """A private CA and one certificate for ``127.0.0.1`` signed by it, as PEM."""

    ca_cert: bytes
    cert: bytes
    key: bytes

    def server_context(self) -> ssl.SSLContext:
        """Serves the certificate and demands a client certificate from the same CA."""
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cadata=self.ca_cert.decode())
        ctx.verify_mode = ssl.CERT_REQUIRED
        self._load_chain(ctx)
        return ctx

    def client_context(self, *, with_cert: bool = True) -> ssl.SSLContext:
        """Checks the server against the CA and the host name; presents the certificate."""
        ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cadata=self.ca_cert.decode())
        if with_cert:
            self._load_chain(ctx)
        return ctx

    def _load_chain(self, ctx: ssl.SSLContext) -> None:
        with tempfile.TemporaryDirectory(prefix="dist_tls_") as d:
            cert, key = Path(d, "cert.pem"), Path(d, "key.pem")
            cert.write_bytes(self.cert)
            key.write_bytes(self.key)
            ctx.load_cert_chain(cert, key)


def make_tls_files() -> TLSFiles:
    """Generate a CA and a certificate for the IP address 127.0.0.1 (EC P-256, one day)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.UTC)

    def name(cn: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (
        x509.CertificateBuilder()
        .subject_name(name("regency test CA"))
        .issuer_name(name("regency test CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(name("regency node"))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    return TLSFiles(
        ca.public_bytes(pem),
        cert.public_bytes(pem),
        key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()),
    )
