"""Worker credentials: the versioned derivation root with a previous LiveKit secret for rotations, and the
bound on a worker token's lifetime."""

from __future__ import annotations

import time

import jwt
import pytest

from gateway.relay.credentials import HandshakeRefused, WorkerCredentials, new_key_id

OLD_SECRET = "the-livekit-secret-before-the-rotation-0123"
NEW_SECRET = "the-livekit-secret-after-the-rotation-456789"


def _token(key_id: str, secret: str, *, lifetime: float, now: float, **claims: object) -> str:
    body = {"iss": key_id, "nbf": int(now), "exp": int(now + lifetime), "video": {"agent": True}, **claims}
    return jwt.encode(body, secret, algorithm="HS256")


def _verdict(credentials: WorkerCredentials, token: str, now: float) -> str:
    """The key id a token verifies with, else the reason it is refused."""
    try:
        return credentials.verify(token, now=now).key_id
    except HandshakeRefused as refused:
        return refused.reason


def test_a_secret_from_the_previous_livekit_secret_stays_valid_while_it_is_configured() -> None:
    """After LKPS_LIVEKIT_API_SECRET is rotated, a worker secret derived from the previous one verifies
    while LKPS_LIVEKIT_PREVIOUS_API_SECRET names it, and no longer once it is unset; new secrets come from
    the current secret."""
    now = time.time()
    key_id = new_key_id()
    old_worker_secret = WorkerCredentials(OLD_SECRET).secret(key_id)
    token = _token(key_id, old_worker_secret, lifetime=3600, now=now)
    rotating = WorkerCredentials(NEW_SECRET, OLD_SECRET)
    assert rotating.verify(token, now=now).key_id == key_id
    assert rotating.secret(key_id) == WorkerCredentials(NEW_SECRET).secret(key_id) != old_worker_secret
    with pytest.raises(HandshakeRefused) as refused:
        WorkerCredentials(NEW_SECRET).verify(token, now=now)
    assert refused.value.reason == "bad_signature"


@pytest.mark.parametrize(
    ("lifetime", "claims", "accepted"),
    [
        (6 * 3600, {}, True),  # what a stock worker signs
        (24 * 3600, {}, True),
        (24 * 3600 + 1, {}, False),
        (30 * 86400, {"nbf": None}, False),  # no nbf: the lifetime counts from now
        (30 * 86400, {"nbf": None, "iat": int(time.time()) - 29 * 86400}, False),
    ],
    ids=["six-hours", "a-day", "over-a-day", "a-month-without-nbf", "a-month-by-iat"],
)
def test_worker_tokens_living_longer_than_a_day_are_refused(
    lifetime: float, claims: dict[str, object], accepted: bool
) -> None:
    """A handshake token whose lifetime (from nbf, else iat, else now, to exp) exceeds 24 hours is refused."""
    now = time.time()
    credentials = WorkerCredentials(NEW_SECRET)
    key_id = new_key_id()
    token = _token(key_id, credentials.secret(key_id), lifetime=lifetime, now=now)
    body = jwt.decode(token, options={"verify_signature": False})
    body.update(claims)
    body = {name: value for name, value in body.items() if value is not None}
    token = jwt.encode(body, credentials.secret(key_id), algorithm="HS256")
    assert _verdict(credentials, token, now) == (key_id if accepted else "token_lifetime")


@pytest.mark.parametrize(("ahead", "accepted"), [(59, True), (61, False)], ids=["59s-ahead", "61s-ahead"])
def test_a_token_not_valid_yet_has_sixty_seconds_of_leeway(ahead: int, accepted: bool) -> None:
    """A handshake token whose `nbf` is 59 s in the future is accepted (clock skew), 61 s is refused."""
    now = time.time()
    credentials = WorkerCredentials(NEW_SECRET)
    key_id = new_key_id()
    token = _token(key_id, credentials.secret(key_id), lifetime=3600, now=now + ahead)
    assert _verdict(credentials, token, now) == (key_id if accepted else "token_not_yet_valid")


def test_a_token_over_eight_kib_is_refused_before_it_is_parsed() -> None:
    """A handshake token of 8 KiB verifies; one byte more is refused as malformed."""
    now = time.time()
    credentials = WorkerCredentials(NEW_SECRET)
    key_id = new_key_id()
    pad = 5000
    while (
        len(_token(key_id, credentials.secret(key_id), lifetime=3600, now=now, pad="x" * (pad + 1))) <= 8192
    ):
        pad += 1
    fits = _token(key_id, credentials.secret(key_id), lifetime=3600, now=now, pad="x" * pad)
    assert 8 * 1024 - 4 < len(fits) <= 8 * 1024
    assert credentials.verify(fits, now=now).key_id == key_id
    too_large = fits + "A"
    with pytest.raises(HandshakeRefused) as refused:
        credentials.verify(too_large, now=now)
    assert refused.value.reason == "malformed"
