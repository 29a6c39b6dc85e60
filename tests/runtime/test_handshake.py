"""The handshake: mutual HMAC challenge-response, and every way it must refuse."""

from __future__ import annotations

import os
import struct
from collections.abc import Callable, Iterator
from pathlib import Path

import msgpack
import pytest

from runtime.errors import AuthenticationFailed
from runtime.handshake import (
    MIN_SECRET_SIZE,
    NONCE_SIZE,
    Failure,
    Handshake,
    HandshakeResult,
    ReplayGuard,
    Role,
    load_secret,
)
from runtime.wire import Challenge, Heartbeat, Hello, Op, Proof, Reject, encode

SECRET = b"correct horse battery staple 42!"
OTHER = b"a completely different secret!!"


def counter_bytes(seed: int) -> Callable[[int], bytes]:
    """A deterministic stand-in for os.urandom: distinct nonces, reproducible."""
    state = iter(range(seed * 1_000_000, (seed + 1) * 1_000_000))

    def random_bytes(n: int) -> bytes:
        return next(state).to_bytes(8, "big") * (n // 8)

    return random_bytes


def initiator(**kw: object) -> Handshake:
    """Node a@h dialling b@h."""
    args: dict[str, object] = {
        "name": "a@h",
        "creation": 1,
        "secret": SECRET,
        "expected_peer": "b@h",
    }
    args.update(kw)
    return Handshake(Role.INITIATOR, **args)  # type: ignore[arg-type]


def acceptor(**kw: object) -> Handshake:
    """Node b@h accepting a connection."""
    args: dict[str, object] = {"name": "b@h", "creation": 2, "secret": SECRET}
    args.update(kw)
    return Handshake(Role.ACCEPTOR, **args)  # type: ignore[arg-type]


def pump(a: Handshake, b: Handshake) -> None:
    """Shuttle bytes between *a* and *b* until neither has anything to say."""
    while True:
        out_a = a.data_to_send()
        if out_a:
            b.receive_data(out_a)
        out_b = b.data_to_send()
        if out_b:
            a.receive_data(out_b)
        if not out_a and not out_b:
            return


def fails(hs: Handshake, msg: Op, failure: Failure) -> AuthenticationFailed:
    """Feed *msg* to *hs*, which must fail for *failure*; the error."""
    with pytest.raises(AuthenticationFailed) as info:
        hs.receive_message(msg)
    assert hs.failure is failure
    return info.value


def transcript(a: Handshake, b: Handshake) -> Iterator[Op]:
    """Run a successful handshake at the message level, yielding every message sent."""
    for msg in a.messages_to_send():  # HELLO
        yield msg
        b.receive_message(msg)
    for msg in b.messages_to_send():  # CHALLENGE
        yield msg
        a.receive_message(msg)
    for msg in a.messages_to_send():  # initiator's PROOF
        yield msg
        b.receive_message(msg)
    for msg in b.messages_to_send():  # acceptor's PROOF
        yield msg
        a.receive_message(msg)


class TestSuccess:
    def test_both_sides_authenticate_each_other(self) -> None:
        """Each side learns the other's name, creation and the common version."""
        a, b = initiator(), acceptor()

        pump(a, b)

        assert a.done
        assert b.done
        assert HandshakeResult("b@h", 2, 1) == a.result
        assert HandshakeResult("a@h", 1, 1) == b.result

    def test_roles_can_be_taken_by_either_node(self) -> None:
        """The node that accepted before can dial next time."""
        a = Handshake(Role.ACCEPTOR, name="a@h", creation=5, secret=SECRET)
        b = Handshake(Role.INITIATOR, name="b@h", creation=6, secret=SECRET)

        pump(b, a)

        assert (b.result.name, b.result.creation) == ("a@h", 5)
        assert (a.result.name, a.result.creation) == ("b@h", 6)

    def test_four_messages_in_order(self) -> None:
        """HELLO, CHALLENGE, PROOF, PROOF; the acceptor proves only after checking."""
        msgs = list(transcript(initiator(), acceptor()))

        assert [Hello, Challenge, Proof, Proof] == [type(m) for m in msgs]

    def test_highest_common_version_is_chosen(self) -> None:
        """With versions {1, 2, 3} and {2, 3, 4}, both speak 3."""
        a, b = initiator(versions=[1, 2, 3]), acceptor(versions=[2, 3, 4])

        pump(a, b)

        assert a.result.version == 3
        assert b.result.version == 3

    def test_bytes_after_the_handshake_are_handed_over(self) -> None:
        """Frames the acceptor sends right after its proof are trailing data."""
        a, b = initiator(), acceptor()
        b.receive_data(a.data_to_send())
        a.receive_data(b.data_to_send())
        b.receive_data(a.data_to_send())

        a.receive_data(b.data_to_send() + encode(Heartbeat()))

        assert encode(Heartbeat()) == a.result.trailing_data

    def test_handshake_fed_one_byte_at_a_time(self) -> None:
        """Frames split anywhere still complete the handshake."""
        a, b = initiator(), acceptor()
        while not (a.done and b.done):
            for src, dst in ((a, b), (b, a)):
                for byte in src.data_to_send():
                    dst.receive_data(bytes([byte]))

        assert a.result.name == "b@h"

    def test_proofs_are_deterministic_given_the_nonces(self) -> None:
        """The machine is pure: the same nonces give the same transcript."""
        runs = [
            list(
                transcript(
                    initiator(random_bytes=counter_bytes(1)),
                    acceptor(random_bytes=counter_bytes(2)),
                )
            )
            for _ in range(2)
        ]

        assert runs[0] == runs[1]

    def test_data_after_success_is_a_caller_error(self) -> None:
        """Once done, session frames go to a session decoder, not the handshake."""
        a, b = initiator(), acceptor()
        pump(a, b)

        with pytest.raises(RuntimeError, match="already succeeded"):
            a.receive_data(encode(Heartbeat()))


class TestWrongSecret:
    def test_initiator_with_the_wrong_secret_is_refused(self) -> None:
        """The acceptor checks the initiator's proof first, and never proves itself."""
        a, b = initiator(secret=OTHER), acceptor()
        b.receive_message(a.messages_to_send()[0])
        a.receive_message(b.messages_to_send()[0])

        fails(b, a.messages_to_send()[0], Failure.WRONG_SECRET)
        (reject,) = b.messages_to_send()

        assert isinstance(reject, Reject)
        assert "wrong_secret" in reject.reason
        fails(a, reject, Failure.REJECTED)

    def test_acceptor_with_the_wrong_secret_is_refused(self) -> None:
        """An acceptor with another secret fails the initiator's proof and says so."""
        a, b = initiator(), acceptor(secret=OTHER)

        with pytest.raises(AuthenticationFailed, match="wrong_secret"):
            pump(a, b)
        with pytest.raises(AuthenticationFailed, match="rejected the handshake: wrong_secret"):
            a.receive_data(b.data_to_send())

        assert b.failure is Failure.WRONG_SECRET
        assert a.failure is Failure.REJECTED
        assert not a.done

    def test_impostor_acceptor_with_a_forged_proof_is_refused(self) -> None:
        """An acceptor that answers without the secret cannot forge its proof."""
        a = initiator()
        a.messages_to_send()
        a.receive_message(Challenge(1, "b@h", 2, os.urandom(NONCE_SIZE)))
        a.messages_to_send()

        fails(a, Proof(os.urandom(32)), Failure.WRONG_SECRET)

    def test_failure_is_final(self) -> None:
        """After a failure every call raises the same error again."""
        a, b = initiator(secret=OTHER), acceptor()
        b.receive_message(a.messages_to_send()[0])
        a.receive_message(b.messages_to_send()[0])
        error = fails(b, a.messages_to_send()[0], Failure.WRONG_SECRET)

        with pytest.raises(AuthenticationFailed) as again:
            b.receive_message(Proof(b"x" * 32))
        with pytest.raises(AuthenticationFailed):
            b.receive_data(b"\x00")
        with pytest.raises(AuthenticationFailed):
            _ = b.result
        assert again.value is error


class TestReplay:
    def test_replayed_hello_is_refused_by_a_shared_guard(self) -> None:
        """A recorded HELLO sent again to the same node: its nonce was seen."""
        guard = ReplayGuard()
        recorded = list(transcript(initiator(), acceptor(guard=guard)))

        fails(acceptor(guard=guard), recorded[0], Failure.REPLAY)

    def test_replayed_proof_is_refused_by_a_shared_guard(self) -> None:
        """A recorded PROOF after a fresh HELLO: the proof was seen."""
        guard = ReplayGuard()
        recorded = list(transcript(initiator(), acceptor(guard=guard)))
        b = acceptor(guard=guard)
        b.receive_message(Hello((1,), "a@h", 1, os.urandom(NONCE_SIZE)))

        fails(b, recorded[2], Failure.REPLAY)

    def test_replayed_proof_fails_even_without_a_guard(self) -> None:
        """The fresh nonce of the new session makes an old proof wrong anyway."""
        recorded = list(transcript(initiator(), acceptor()))
        b = acceptor()
        b.receive_message(recorded[0])

        fails(b, recorded[2], Failure.WRONG_SECRET)


class TestReflection:
    def test_challenge_echoing_the_initiators_nonce_is_refused(self) -> None:
        """A peer that sends back our own nonce hopes we will prove for it."""
        a = initiator()
        (hello,) = a.messages_to_send()
        assert isinstance(hello, Hello)

        fails(a, Challenge(1, "b@h", 2, hello.nonce), Failure.REFLECTION)

    def test_initiators_own_proof_sent_back_is_refused(self) -> None:
        """The initiator's proof, reflected as the acceptor's, is recognized."""
        a = initiator()
        a.messages_to_send()
        a.receive_message(Challenge(1, "b@h", 2, os.urandom(NONCE_SIZE)))
        (proof,) = a.messages_to_send()

        fails(a, proof, Failure.REFLECTION)

    def test_nonce_from_another_connection_is_refused(self) -> None:
        """The acceptor's challenge, reflected into a second connection to it, is refused."""
        guard = ReplayGuard()
        b1 = acceptor(guard=guard)
        b1.receive_message(Hello((1,), "a@h", 1, os.urandom(NONCE_SIZE)))
        (challenge,) = b1.messages_to_send()
        assert isinstance(challenge, Challenge)

        fails(acceptor(guard=guard), Hello((1,), "a@h", 1, challenge.nonce), Failure.REFLECTION)

    def test_proofs_of_the_two_roles_differ(self) -> None:
        """One session's two proofs differ, so neither can stand in for the other."""
        msgs = list(transcript(initiator(), acceptor()))

        assert msgs[2] != msgs[3]


class TestRefusals:
    def test_version_mismatch(self) -> None:
        """No common version: the acceptor refuses and tells the initiator why."""
        a, b = initiator(versions=[1]), acceptor(versions=[2])

        with pytest.raises(AuthenticationFailed, match="no common protocol version"):
            b.receive_data(a.data_to_send())
        assert b.failure is Failure.VERSION_MISMATCH
        with pytest.raises(AuthenticationFailed, match="version"):
            a.receive_data(b.data_to_send())
        assert a.failure is Failure.REJECTED

    def test_challenge_with_a_version_not_offered(self) -> None:
        """The acceptor may only choose among the offered versions."""
        a = initiator(versions=[1])
        a.messages_to_send()

        fails(a, Challenge(7, "b@h", 2, os.urandom(NONCE_SIZE)), Failure.VERSION_MISMATCH)

    def test_peer_claiming_to_be_the_acceptor_itself(self) -> None:
        """A HELLO that names the acceptor is spoofed."""
        fails(acceptor(), Hello((1,), "b@h", 1, os.urandom(NONCE_SIZE)), Failure.SELF_NAME)

    def test_peer_claiming_to_be_the_initiator_itself(self) -> None:
        """A CHALLENGE that names the initiator is spoofed."""
        a = initiator(expected_peer=None)
        a.messages_to_send()

        fails(a, Challenge(1, "a@h", 2, os.urandom(NONCE_SIZE)), Failure.SELF_NAME)

    def test_peer_that_is_not_the_expected_node(self) -> None:
        """The initiator dialled b@h; c@h answering is refused."""
        a = initiator()
        a.messages_to_send()

        fails(a, Challenge(1, "c@h", 2, os.urandom(NONCE_SIZE)), Failure.NAME_MISMATCH)

    def test_acceptor_can_require_a_name_too(self) -> None:
        """An acceptor with expected_peer refuses other names."""
        fails(
            acceptor(expected_peer="a@h"),
            Hello((1,), "x@h", 1, os.urandom(NONCE_SIZE)),
            Failure.NAME_MISMATCH,
        )

    @pytest.mark.parametrize(
        ("make", "msg"),
        [
            (acceptor, Proof(b"x" * 32)),
            (acceptor, Challenge(1, "a@h", 1, b"n" * NONCE_SIZE)),
            (initiator, Hello((1,), "b@h", 2, b"n" * NONCE_SIZE)),
            (initiator, Proof(b"x" * 32)),
        ],
    )
    def test_message_out_of_order(self, make: Callable[[], Handshake], msg: Op) -> None:
        """A frame that does not fit the state is refused."""
        fails(make(), msg, Failure.UNEXPECTED_MESSAGE)

    @pytest.mark.parametrize(
        "msg",
        [
            Hello((1,), "a@h", 1, b"short"),
            Hello((1,), "a@h", 1, b"n" * (NONCE_SIZE + 1)),
        ],
    )
    def test_bad_nonce_is_malformed(self, msg: Op) -> None:
        """Nonces are exactly 32 bytes."""
        fails(acceptor(), msg, Failure.MALFORMED)

    def test_short_proof_is_malformed(self) -> None:
        """Proofs are exactly 32 bytes."""
        b = acceptor()
        b.receive_message(Hello((1,), "a@h", 1, os.urandom(NONCE_SIZE)))

        fails(b, Proof(b"x" * 31), Failure.MALFORMED)

    @pytest.mark.parametrize(
        "data",
        [
            encode(Heartbeat()),  # a session op before authentication
            struct.pack(">I", 5000) + b"\x00" * 5000,  # over the 4 KiB handshake limit
            struct.pack(">I", 3) + msgpack.packb([18, msgpack.ExtType(1, b"")])[:3],
            b"\x00\x00\x00\x01\xc1",  # not msgpack
        ],
    )
    def test_malformed_frames_during_the_handshake(self, data: bytes) -> None:
        """Only small, plain handshake frames are decoded before authentication."""
        b = acceptor()

        with pytest.raises(AuthenticationFailed, match="malformed handshake frame"):
            b.receive_data(data)
        assert b.failure is Failure.MALFORMED

    def test_frame_with_an_ext_type_during_the_handshake(self) -> None:
        """No pid, registered class or any ext is decoded from an unauthenticated peer."""
        body = msgpack.packb([16, [1], "a@h", 1, msgpack.ExtType(10, b"x")])

        with pytest.raises(AuthenticationFailed, match="ext type 10 is not allowed"):
            acceptor().receive_data(struct.pack(">I", len(body)) + body)

    def test_reject_is_queued_for_the_peer(self) -> None:
        """A failing side leaves one Reject frame saying why, for the peer's log."""
        b = acceptor()
        fails(b, Proof(b"x" * 32), Failure.UNEXPECTED_MESSAGE)

        (reject,) = b.messages_to_send()

        assert isinstance(reject, Reject)
        assert reject.reason.startswith("unexpected_message:")

    def test_result_before_the_end_is_a_caller_error(self) -> None:
        """result is only there once the handshake is done."""
        with pytest.raises(RuntimeError, match="not finished"):
            _ = initiator().result


class TestConfiguration:
    @pytest.mark.parametrize(
        "kw",
        [
            {"secret": b"x" * (MIN_SECRET_SIZE - 1)},
            {"secret": "a str secret is not bytes"},
            {"name": ""},
            {"creation": -1},
            {"creation": 2**64},
            {"versions": []},
            {"random_bytes": lambda n: b"short"},
        ],
    )
    def test_bad_arguments_are_refused(self, kw: dict[str, object]) -> None:
        """A weak secret or a bad name, creation or version list is a ValueError."""
        with pytest.raises(ValueError):
            initiator(**kw)

    def test_secret_from_the_environment(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """The environment variable is used, stripped of whitespace."""
        monkeypatch.setenv("REGENCY_SECRET", "  s3cret-s3cret-s3cret  \n")

        assert load_secret() == b"s3cret-s3cret-s3cret"

    def test_environment_takes_precedence_over_the_file(
        self, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
    ) -> None:
        """An operator can override the file with the variable."""
        path = tmp_path / "secret"
        path.write_bytes(b"from-the-file-from-the-file")
        path.chmod(0o600)
        monkeypatch.setenv("MY_SECRET", "from-the-environment")

        assert load_secret("MY_SECRET", path) == b"from-the-environment"

    def test_secret_from_a_private_file(
        self, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
    ) -> None:
        """A mode-600 file is read, its trailing newline dropped."""
        monkeypatch.delenv("REGENCY_SECRET", raising=False)
        path = tmp_path / "secret"
        path.write_bytes(b"0123456789abcdef0123\n")
        path.chmod(0o600)

        assert load_secret(path=path) == b"0123456789abcdef0123"

    @pytest.mark.skipif(os.name != "posix", reason="file modes are POSIX")
    def test_secret_file_open_to_others_is_refused(
        self, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
    ) -> None:
        """As Erlang's cookie: a file others can read is not a secret."""
        monkeypatch.delenv("REGENCY_SECRET", raising=False)
        path = tmp_path / "secret"
        path.write_bytes(b"0123456789abcdef0123")
        path.chmod(0o644)

        with pytest.raises(ValueError, match="chmod 600"):
            load_secret(path=path)

    def test_no_secret_at_all_is_an_error(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """There is no default secret."""
        monkeypatch.delenv("REGENCY_SECRET", raising=False)

        with pytest.raises(ValueError, match="no shared secret"):
            load_secret()

    def test_short_secret_is_an_error(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """Fewer than 16 bytes is refused."""
        monkeypatch.setenv("REGENCY_SECRET", "short")

        with pytest.raises(ValueError, match="at least 16"):
            load_secret()

    def test_guard_forgets_the_oldest_entries(self) -> None:
        """A guard holds at most its capacity."""
        guard = ReplayGuard(capacity=2)
        guard.issue(b"1")
        guard.issue(b"2")
        guard.issue(b"3")

        assert guard.check_nonce(b"1") is None
        assert guard.check_nonce(b"3") is Failure.REFLECTION
