"""The distribution handshake: a pure state machine (no IO, no clock), in the style of h11.

Two nodes that share a secret authenticate each other before any other frame flows.
The side that opens the TCP connection is the *initiator*, the side that accepted it
the *acceptor*. Four frames, each a handshake operation of :mod:`runtime.wire`:

1. initiator -> acceptor: ``Hello(versions, name, creation, nonce_i)``
2. acceptor -> initiator: ``Challenge(version, name, creation, nonce_a)``; *version* is
   the highest version both speak
3. initiator -> acceptor: ``Proof(HMAC(secret, transcript, role="initiator"))``
4. acceptor -> initiator: ``Proof(HMAC(secret, transcript, role="acceptor"))``, sent
   only after the initiator's proof checked out

The transcript binds everything said: a protocol label, the chosen version, the offered
versions, both names, both creations and both 32-byte nonces (fresh from
``os.urandom``). The role in each proof makes the two proofs of one session differ, so
a proof cannot be reflected back to its maker; the nonces make every session differ,
so a proof recorded earlier cannot be replayed. Digests are compared with
``hmac.compare_digest``. The initiator proves first, so an unauthenticated client that
merely connects learns nothing it could use to guess the secret offline.

Either side refuses, with :class:`~runtime.errors.AuthenticationFailed` and a
:class:`Failure` naming the reason: a wrong secret (or a forged proof), a peer that
claims this node's own name or not the expected one, no common version, a nonce or
proof seen before (replay), this node's own nonce or proof sent back (reflection), an
out-of-order or malformed frame, or a ``Reject`` from the peer. Before failing it
queues a ``Reject`` with the reason, for the peer's log.

Using it from a shell::

    hs = Handshake(Role.INITIATOR, name="a@host", creation=creation, secret=secret,
                   expected_peer="b@host", guard=node.replay_guard)
    with trio.fail_after(HANDSHAKE_TIMEOUT):   # the timeout is the shell's job
        await stream.send_all(hs.data_to_send())
        while not hs.done:
            data = await stream.receive_some()
            if not data:
                raise ProtocolError("connection closed during the handshake")
            try:
                hs.receive_data(data)
            finally:
                if out := hs.data_to_send():    # the next frame, or a Reject
                    await stream.send_all(out)
    peer = hs.result                            # name, creation, version
    decoder = FrameDecoder()
    ops = decoder.feed(peer.trailing_data)      # frames that came right after

Until :attr:`Handshake.done`, the machine decodes frames itself with
``FrameDecoder(handshake=True, max_frame=HANDSHAKE_MAX_FRAME)``: no ext types, no
registered classes, nothing bigger than 4 KiB. The acceptor is done once it has queued
its proof: the shell sends that before any other frame. The initiator is done when the
acceptor's proof has checked out; bytes that arrived after it are in
:attr:`HandshakeResult.trailing_data`. A peer that stalls is cut off by the shell's
timeout (:data:`HANDSHAKE_TIMEOUT` is a sane default), not by this module.

A node shares one :class:`ReplayGuard` among all its handshakes; a guard private to one
handshake still stops reflection within that connection, but not replay or reflection
across connections.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import os
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Final, NoReturn, final

import attrs
import msgpack

from .errors import AuthenticationFailed, ProtocolError
from .wire import (
    HANDSHAKE_MAX_FRAME,
    Challenge,
    FrameDecoder,
    FrameEncoder,
    Hello,
    Op,
    Proof,
    Reject,
)

__all__ = [
    "HANDSHAKE_TIMEOUT",
    "MIN_SECRET_SIZE",
    "NONCE_SIZE",
    "PROTOCOL_VERSION",
    "SUPPORTED_VERSIONS",
    "Failure",
    "Handshake",
    "HandshakeResult",
    "ReplayGuard",
    "Role",
    "load_secret",
]

PROTOCOL_VERSION: Final = 1
"""The distribution protocol version this code speaks best."""

SUPPORTED_VERSIONS: Final = (1,)
"""Every version this code can speak."""

NONCE_SIZE: Final = 32
"""Bytes in each side's challenge nonce."""

MIN_SECRET_SIZE: Final = 16
"""The shortest shared secret accepted, in bytes."""

HANDSHAKE_TIMEOUT: Final = 10.0
"""Seconds a shell should allow for a whole handshake before dropping the connection."""

_LABEL: Final = "regency-handshake"
_DIGEST_SIZE: Final = 32
_U64: Final = 2**64


class Role(enum.Enum):
    """Which end of the connection a node is."""

    INITIATOR = "initiator"
    """It opened the connection; it speaks first and proves first."""
    ACCEPTOR = "acceptor"
    """It accepted the connection; it proves second, after checking the initiator."""


class Failure(enum.Enum):
    """Why a handshake failed: :attr:`Handshake.failure` once it raised."""

    WRONG_SECRET = "wrong_secret"
    """The peer's proof does not match: it has another secret, or forged the proof."""
    SELF_NAME = "self_name"
    """The peer claims to be this very node."""
    NAME_MISMATCH = "name_mismatch"
    """The peer is not the node this side expected."""
    VERSION_MISMATCH = "version_mismatch"
    """The two sides have no protocol version in common."""
    REPLAY = "replay"
    """The peer sent a nonce or proof already seen in an earlier handshake."""
    REFLECTION = "reflection"
    """The peer sent back this node's own nonce or proof."""
    UNEXPECTED_MESSAGE = "unexpected_message"
    """A frame arrived out of order (e.g. a proof before the hello)."""
    MALFORMED = "malformed"
    """A frame was not a well-formed handshake operation."""
    REJECTED = "rejected"
    """The peer refused the handshake, and said why."""


@attrs.frozen
class HandshakeResult:
    """The authenticated peer."""

    name: str
    """Its node name."""
    creation: int
    """Its creation: changes each time a node with that name starts again."""
    version: int
    """The protocol version both sides now speak."""
    trailing_data: bytes = attrs.field(default=b"", repr=False)
    """Bytes received after the last handshake frame: feed them to the session decoder."""


@final
class ReplayGuard:
    """Remembers the nonces and proofs of a node's recent handshakes.

    One guard per node, shared by all its handshakes (never by two nodes: a node would
    take the other's nonces for its own). It holds the latest *capacity* entries and
    forgets the oldest first.
    """

    _OWN = 0
    _PEER = 1
    _PROOF = 2

    def __init__(self, capacity: int = 65536) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be positive, not {capacity}")
        self.capacity = capacity
        self._seen: dict[bytes, int] = {}

    def _add(self, key: bytes, kind: int) -> None:
        seen = self._seen
        seen.setdefault(key, kind)
        while len(seen) > self.capacity:
            del seen[next(iter(seen))]

    def issue(self, nonce: bytes) -> None:
        """Record a nonce this node sends."""
        self._add(nonce, self._OWN)

    def check_nonce(self, nonce: bytes) -> Failure | None:
        """Why a peer's *nonce* must be refused (None if it is fresh); then remember it."""
        kind = self._seen.get(nonce)
        self._add(nonce, self._PEER)
        if kind == self._OWN:
            return Failure.REFLECTION
        if kind is not None:
            return Failure.REPLAY
        return None

    def seen_proof(self, digest: bytes) -> bool:
        """True if *digest* was already accepted in an earlier handshake."""
        return self._seen.get(digest) == self._PROOF

    def accept_proof(self, digest: bytes) -> None:
        """Record a proof that checked out."""
        self._add(digest, self._PROOF)


class _State(enum.Enum):
    WAIT_HELLO = "wait_hello"
    WAIT_CHALLENGE = "wait_challenge"
    WAIT_PROOF = "wait_proof"
    DONE = "done"
    FAILED = "failed"


def _check_name(name: str, what: str) -> None:
    if not isinstance(name, str) or not 0 < len(name) <= 255:
        raise ValueError(f"{what} must be a str of 1..255 characters, not {name!r}")


@final
class Handshake:
    """One side of one handshake. See the module doc for the protocol and a shell.

    Args:
        role: which end of the connection this node is.
        name: this node's name.
        creation: this node's creation number, in ``[0, 2**64)``.
        secret: the shared secret, at least :data:`MIN_SECRET_SIZE` bytes (see
            :func:`load_secret`).
        expected_peer: the name the peer must have; None accepts any name but this
            node's own. An initiator usually knows whom it dialled.
        versions: the protocol versions this side speaks.
        guard: this node's :class:`ReplayGuard`; None makes one for this handshake only.
        random_bytes: the source of nonces, ``os.urandom`` unless a test injects one.

    Raises:
        ValueError: a short secret, a bad name, creation or version list.
    """

    def __init__(
        self,
        role: Role,
        *,
        name: str,
        creation: int,
        secret: bytes,
        expected_peer: str | None = None,
        versions: Iterable[int] = SUPPORTED_VERSIONS,
        guard: ReplayGuard | None = None,
        random_bytes: Callable[[int], bytes] = os.urandom,
    ) -> None:
        _check_name(name, "name")
        if expected_peer is not None:
            _check_name(expected_peer, "expected_peer")
        if type(creation) is not int or not 0 <= creation < _U64:
            raise ValueError(f"creation must be an int in [0, 2**64), not {creation!r}")
        if not isinstance(secret, bytes) or len(secret) < MIN_SECRET_SIZE:
            raise ValueError(f"the shared secret must be at least {MIN_SECRET_SIZE} bytes")
        self._versions = tuple(sorted(set(versions)))
        if not self._versions or not all(type(v) is int and 0 <= v < _U64 for v in self._versions):
            raise ValueError(f"versions must be non-negative ints, not {self._versions!r}")
        nonce = random_bytes(NONCE_SIZE)
        if len(nonce) != NONCE_SIZE:
            raise ValueError(f"random_bytes returned {len(nonce)} bytes, not {NONCE_SIZE}")
        self.role = role
        self.name = name
        self.creation = creation
        self.expected_peer = expected_peer
        self._secret = secret
        self._nonce = nonce
        self._guard = guard if guard is not None else ReplayGuard(capacity=16)
        self._outbox: list[Op] = []
        self._encoder = FrameEncoder(max_frame=HANDSHAKE_MAX_FRAME)
        self._decoder = FrameDecoder(max_frame=HANDSHAKE_MAX_FRAME, handshake=True)
        self._failure: Failure | None = None
        self._error: AuthenticationFailed | None = None
        self._result: HandshakeResult | None = None
        # Settled once both hellos are known.
        self._offered: tuple[int, ...] = ()
        self._version = 0
        self._peer_name = ""
        self._peer_creation = 0
        self._peer_nonce = b""
        self._own_proof = b""
        self._peer_proof = b""
        if role is Role.INITIATOR:
            self._offered = self._versions
            self._guard.issue(nonce)
            self._outbox.append(Hello(self._versions, name, creation, nonce))
            self._state = _State.WAIT_CHALLENGE
        else:
            self._state = _State.WAIT_HELLO

    # ----------------------------------------------------------------- observers

    @property
    def done(self) -> bool:
        """True once the peer is authenticated (and this side's last frame is queued)."""
        return self._state is _State.DONE

    @property
    def failure(self) -> Failure | None:
        """Why the handshake failed, or None while it has not."""
        return self._failure

    @property
    def result(self) -> HandshakeResult:
        """The authenticated peer.

        Raises:
            AuthenticationFailed: the handshake failed (the same error again).
            RuntimeError: it is not finished yet.
        """
        if self._error is not None:
            raise self._error
        if self._result is None:
            raise RuntimeError("the handshake is not finished")
        return self._result

    # ----------------------------------------------------------------- message level

    def messages_to_send(self) -> list[Op]:
        """Take the handshake operations to send, in order (or use :meth:`data_to_send`)."""
        out, self._outbox = self._outbox, []
        return out

    def receive_message(self, msg: Op) -> None:
        """Take in one handshake operation from the peer.

        Raises:
            AuthenticationFailed: the handshake failed, for the reason in
                :attr:`failure`; a ``Reject`` for the peer is queued (except when the
                peer rejected first). Every later call raises the same error.
            RuntimeError: the handshake already succeeded.
        """
        state = self._state
        if state is _State.FAILED:
            assert self._error is not None
            raise self._error
        if state is _State.DONE:
            raise RuntimeError("the handshake already succeeded; decode session frames instead")
        if type(msg) is Reject:
            self._fail(Failure.REJECTED, f"the peer rejected the handshake: {msg.reason}")
        if state is _State.WAIT_HELLO and type(msg) is Hello:
            self._on_hello(msg)
        elif state is _State.WAIT_CHALLENGE and type(msg) is Challenge:
            self._on_challenge(msg)
        elif state is _State.WAIT_PROOF and type(msg) is Proof:
            self._on_proof(msg)
        else:
            self._fail(
                Failure.UNEXPECTED_MESSAGE,
                f"unexpected {type(msg).__name__} while waiting for "
                f"{state.value.removeprefix('wait_')}",
            )

    # ----------------------------------------------------------------- byte level

    def data_to_send(self) -> bytes:
        """Take the frames to send, as bytes for one write (possibly empty)."""
        return self._encoder.encode_many(self.messages_to_send())

    def receive_data(self, data: bytes) -> None:
        """Take in bytes from the peer: a part of a frame, or several frames.

        Raises:
            AuthenticationFailed: as :meth:`receive_message`; a malformed frame (too
                big, not a handshake operation, any ext type) fails with
                :attr:`Failure.MALFORMED`.
            RuntimeError: the handshake already succeeded.
        """
        if self._state is _State.DONE:
            raise RuntimeError("the handshake already succeeded; decode session frames instead")
        if self._state is _State.FAILED:
            assert self._error is not None
            raise self._error
        decoder = self._decoder
        while True:
            try:
                msgs = decoder.feed(data, limit=1)
            except ProtocolError as exc:
                self._fail(Failure.MALFORMED, f"malformed handshake frame: {exc}", cause=exc)
            data = b""
            if not msgs:
                return
            self.receive_message(msgs[0])
            if self.done:
                assert self._result is not None
                self._result = attrs.evolve(self._result, trailing_data=decoder.take_buffered())
                return

    # ----------------------------------------------------------------- transitions

    def _on_hello(self, hello: Hello) -> None:
        common = set(hello.versions) & set(self._versions)
        if not common:
            self._fail(
                Failure.VERSION_MISMATCH,
                f"no common protocol version: the peer speaks {sorted(hello.versions)}, "
                f"this node {list(self._versions)}",
            )
        self._offered = tuple(hello.versions)
        self._meet(max(common), hello.name, hello.creation, hello.nonce)
        self._guard.issue(self._nonce)
        self._outbox.append(Challenge(self._version, self.name, self.creation, self._nonce))
        self._state = _State.WAIT_PROOF

    def _on_challenge(self, challenge: Challenge) -> None:
        if challenge.version not in self._versions:
            self._fail(
                Failure.VERSION_MISMATCH,
                f"the peer chose protocol version {challenge.version}, "
                f"which this node did not offer ({list(self._versions)})",
            )
        self._meet(challenge.version, challenge.name, challenge.creation, challenge.nonce)
        self._outbox.append(Proof(self._own_proof))
        self._state = _State.WAIT_PROOF

    def _meet(self, version: int, name: str, creation: int, nonce: bytes) -> None:
        """Check the peer's hello or challenge; compute both proofs."""
        if len(nonce) != NONCE_SIZE:
            self._fail(Failure.MALFORMED, f"nonce of {len(nonce)} bytes, not {NONCE_SIZE}")
        if name == self.name:
            self._fail(Failure.SELF_NAME, f"the peer claims to be this node ({name!r})")
        if self.expected_peer is not None and name != self.expected_peer:
            self._fail(
                Failure.NAME_MISMATCH,
                f"the peer is {name!r}, not the expected {self.expected_peer!r}",
            )
        if hmac.compare_digest(nonce, self._nonce):
            self._fail(Failure.REFLECTION, "the peer sent back this side's own nonce")
        problem = self._guard.check_nonce(nonce)
        if problem is Failure.REFLECTION:
            self._fail(problem, "the peer sent a nonce this node issued to another connection")
        if problem is Failure.REPLAY:
            self._fail(problem, "the peer reused a nonce from an earlier handshake")
        self._version = version
        self._peer_name = name
        self._peer_creation = creation
        self._peer_nonce = nonce
        me = (self.name, self.creation, self._nonce)
        peer = (name, creation, nonce)
        if self.role is Role.INITIATOR:
            self._own_proof = self._mac(Role.INITIATOR, me, peer)
            self._peer_proof = self._mac(Role.ACCEPTOR, me, peer)
        else:
            self._own_proof = self._mac(Role.ACCEPTOR, peer, me)
            self._peer_proof = self._mac(Role.INITIATOR, peer, me)

    def _mac(
        self,
        prover: Role,
        initiator: tuple[str, int, bytes],
        acceptor: tuple[str, int, bytes],
    ) -> bytes:
        transcript = msgpack.packb(
            [
                _LABEL,
                self._version,
                list(self._offered),
                prover.value,
                initiator[0],
                acceptor[0],
                initiator[1],
                acceptor[1],
                initiator[2],
                acceptor[2],
            ]
        )
        return hmac.new(self._secret, transcript, hashlib.sha256).digest()

    def _on_proof(self, proof: Proof) -> None:
        digest = proof.digest
        if len(digest) != _DIGEST_SIZE:
            self._fail(Failure.MALFORMED, f"proof of {len(digest)} bytes, not {_DIGEST_SIZE}")
        if hmac.compare_digest(digest, self._own_proof):
            self._fail(Failure.REFLECTION, "the peer sent back this side's own proof")
        if self._guard.seen_proof(digest):
            self._fail(Failure.REPLAY, "the peer replayed a proof from an earlier handshake")
        if not hmac.compare_digest(digest, self._peer_proof):
            self._fail(
                Failure.WRONG_SECRET,
                "the peer's proof does not match: it has a different secret (or forged the proof)",
            )
        self._guard.accept_proof(digest)
        if self.role is Role.ACCEPTOR:
            self._outbox.append(Proof(self._own_proof))
        self._result = HandshakeResult(self._peer_name, self._peer_creation, self._version)
        self._state = _State.DONE

    def _fail(self, failure: Failure, text: str, cause: BaseException | None = None) -> NoReturn:
        self._state = _State.FAILED
        self._failure = failure
        self._error = AuthenticationFailed(f"handshake with peer failed ({failure.value}): {text}")
        if failure is not Failure.REJECTED:
            self._outbox = [Reject(f"{failure.value}: {text}")]
        raise self._error from cause


def load_secret(
    env_var: str = "REGENCY_SECRET", path: str | os.PathLike[str] | None = None
) -> bytes:
    """The shared secret of the cluster: there is no default.

    Taken from the environment variable *env_var* if it is set and not empty, else from
    the file at *path*; leading and trailing whitespace is stripped. The file must be
    accessible by its owner only (mode 600 or stricter), as Erlang demands of its
    cookie. Make one with ``python -c "import secrets; print(secrets.token_urlsafe(32))"``.

    Raises:
        ValueError: neither source is set, the secret is shorter than
            :data:`MIN_SECRET_SIZE` bytes, or the file is open to group or others.
        OSError: the file cannot be read.
    """
    value = os.environ.get(env_var)
    if value:
        secret = value.encode().strip()
        source = f"environment variable {env_var}"
    elif path is not None:
        file = Path(path)
        mode = file.stat().st_mode
        if os.name == "posix" and mode & 0o077:
            raise ValueError(
                f"secret file {file} is accessible by group or others (mode {mode & 0o777:o}); "
                f"run: chmod 600 {file}"
            )
        secret = file.read_bytes().strip()
        source = f"file {file}"
    else:
        raise ValueError(
            f"no shared secret: set the {env_var} environment variable or give a secret "
            "file; regency has no default secret"
        )
    if len(secret) < MIN_SECRET_SIZE:
        raise ValueError(
            f"the shared secret from {source} is {len(secret)} bytes; "
            f"at least {MIN_SECRET_SIZE} are needed"
        )
    return secret
