"""Worker credentials: what a stock LiveKit Agents worker runs with as LIVEKIT_API_KEY / LIVEKIT_API_SECRET.

- `worker_api_key` is a random key id (`lkw_` + 24 hex digits), stored on the agent's registrations. A
  renewal inherits the key id of the registration in force, so the worker started with it keeps working;
  a registration after a revocation or after the last one expired, or one asking to rotate the
  credentials, gets a new key id (a rotation leaves the previous key in force for a grace period).
- `worker_api_secret` is never stored: it is HMAC-SHA256(root, key id), the root being derived from
  LKPS_LIVEKIT_API_SECRET with a versioned label (every replica derives the same, and nothing leads back
  from a worker secret to LiveKit's). While LKPS_LIVEKIT_PREVIOUS_API_SECRET is set, secrets derived from
  it are accepted too, so rotating LiveKit's secret leaves running workers a grace period; new secrets are
  always derived from the current one. A handshake's signature is checked before any database read.
- A key is valid while one of its registrations is unexpired and unrevoked and the agent is not revoked.
- A worker token may live at most 24 hours (a stock worker signs 6-hour tokens on every connect).
- LiveKit knows no `lkw_` key: the pair is useless at LiveKit itself.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from dataclasses import dataclass

import jwt

KEY_PREFIX = "lkw_"
_ROOT_LABEL = b"lkps worker credential root v1"
_MAX_TOKEN_BYTES = 8 * 1024
_LEEWAY_SECONDS = 60  # LiveKit's own leeway on nbf/exp
MAX_TOKEN_LIFETIME_SECONDS = 24 * 3600


class HandshakeRefused(Exception):
    """The worker's token is not a valid token of a worker key; `reason` is a bounded metric label."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class VerifiedToken:
    key_id: str
    claims: dict[str, object]


def new_key_id() -> str:
    return KEY_PREFIX + secrets.token_hex(12)


def _root(livekit_api_secret: str) -> bytes:
    return hmac.new(livekit_api_secret.encode(), _ROOT_LABEL, hashlib.sha256).digest()


def _derive(root: bytes, key_id: str) -> str:
    digest = hmac.new(root, key_id.encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


class WorkerCredentials:
    def __init__(self, livekit_api_secret: str, previous_livekit_api_secret: str | None = None) -> None:
        self._root = _root(livekit_api_secret)
        self._roots = (self._root,) + (
            (_root(previous_livekit_api_secret),) if previous_livekit_api_secret else ()
        )

    def secret(self, key_id: str) -> str:
        return _derive(self._root, key_id)

    def verify(self, token: str, *, now: float) -> VerifiedToken:
        """Check a worker-signed JWT (the `/agent` handshake or a Twirp call): HS256 with the secret of the
        key named in `iss` (from the current root, else the previous one), `exp` required, `nbf`/`exp` with
        LiveKit's leeway, a lifetime of at most 24 hours. Says nothing about whether the key is still in
        force; the caller asks the registry."""
        if len(token) > _MAX_TOKEN_BYTES:
            raise HandshakeRefused("malformed", "the token is too large")
        try:
            unverified = jwt.decode(token, options={"verify_signature": False})
        except jwt.PyJWTError:
            raise HandshakeRefused("malformed", "the token is not a JWT") from None
        key_id = unverified.get("iss")
        if not isinstance(key_id, str) or not key_id.startswith(KEY_PREFIX) or len(key_id) > 40:
            raise HandshakeRefused("unknown_key", "the token is not signed with an lkps worker key")
        claims = self._signed_claims(token, key_id)
        exp = claims["exp"]
        nbf = claims.get("nbf", 0)
        if not isinstance(exp, int | float) or exp + _LEEWAY_SECONDS < now:
            raise HandshakeRefused("token_expired", "the token has expired")
        if isinstance(nbf, int | float) and nbf - _LEEWAY_SECONDS > now:
            raise HandshakeRefused("token_not_yet_valid", "the token is not valid yet (nbf)")
        if exp - _issued(claims, now) > MAX_TOKEN_LIFETIME_SECONDS:
            raise HandshakeRefused(
                "token_lifetime", "the token lives longer than 24 hours; sign shorter ones"
            )
        return VerifiedToken(key_id, claims)

    def _signed_claims(self, token: str, key_id: str) -> dict[str, object]:
        for root in self._roots:
            try:
                claims: dict[str, object] = jwt.decode(
                    token,
                    _derive(root, key_id),
                    algorithms=["HS256"],
                    issuer=key_id,
                    # Times are checked by the caller against the injected clock, not PyJWT's.
                    options={"require": ["exp", "iss"], "verify_exp": False, "verify_nbf": False},
                )
            except jwt.InvalidSignatureError:
                continue
            except jwt.PyJWTError:
                break
            return claims
        raise HandshakeRefused("bad_signature", "the token's signature or claims are invalid")


def _issued(claims: dict[str, object], now: float) -> float:
    """When the token's lifetime starts: its `nbf`, else its `iat`, else now."""
    for name in ("nbf", "iat"):
        value = claims.get(name)
        if isinstance(value, int | float) and not isinstance(value, bool):
            return value
    return now
