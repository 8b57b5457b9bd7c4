"""Worker credentials: what a stock LiveKit Agents worker runs with as LIVEKIT_API_KEY / LIVEKIT_API_SECRET.

- `worker_api_key` is a random key id (`lkw_` + 24 hex digits), stored on the agent's registrations. A
  renewal inherits the key id of the registration in force, so the worker started with it keeps working;
  a registration after a revocation or after the last one expired gets a new key id.
- `worker_api_secret` is never stored: it is HMAC-SHA256(root, key id), the root being derived from
  LKPS_LIVEKIT_API_SECRET with a fixed label (every replica derives the same, and nothing leads back from a
  worker secret to LiveKit's). A handshake's signature is therefore checked before any database read.
- A key is valid while one of its registrations is unexpired and unrevoked and the agent is not revoked.
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


class WorkerCredentials:
    def __init__(self, livekit_api_secret: str) -> None:
        self._root = hmac.new(livekit_api_secret.encode(), _ROOT_LABEL, hashlib.sha256).digest()

    def secret(self, key_id: str) -> str:
        digest = hmac.new(self._root, key_id.encode(), hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")

    def verify(self, token: str, *, now: float) -> VerifiedToken:
        """Check a worker-signed JWT (the `/agent` handshake or a Twirp call): HS256 with the secret of the
        key named in `iss`, `exp` required, `nbf`/`exp` with LiveKit's leeway. Says nothing about whether
        the key is still in force; the caller asks the registry."""
        if len(token) > _MAX_TOKEN_BYTES:
            raise HandshakeRefused("malformed", "the token is too large")
        try:
            unverified = jwt.decode(token, options={"verify_signature": False})
        except jwt.PyJWTError:
            raise HandshakeRefused("malformed", "the token is not a JWT") from None
        key_id = unverified.get("iss")
        if not isinstance(key_id, str) or not key_id.startswith(KEY_PREFIX) or len(key_id) > 40:
            raise HandshakeRefused("unknown_key", "the token is not signed with an lkps worker key")
        try:
            claims = jwt.decode(
                token,
                self.secret(key_id),
                algorithms=["HS256"],
                issuer=key_id,
                # Times are checked below against the injected clock, not PyJWT's.
                options={"require": ["exp", "iss"], "verify_exp": False, "verify_nbf": False},
            )
        except jwt.PyJWTError:
            raise HandshakeRefused("bad_signature", "the token's signature or claims are invalid") from None
        exp = claims["exp"]
        nbf = claims.get("nbf", 0)
        if not isinstance(exp, int | float) or exp + _LEEWAY_SECONDS < now:
            raise HandshakeRefused("token_expired", "the token has expired")
        if isinstance(nbf, int | float) and nbf - _LEEWAY_SECONDS > now:
            raise HandshakeRefused("bad_signature", "the token is not valid yet")
        return VerifiedToken(key_id, claims)
