"""Why a caller was refused, as stable reason codes; the gateway maps these to HTTP in one place."""

from __future__ import annotations


class AuthzError(Exception):
    """Base of every refusal raised by `authz`; `reason` is a stable machine code, `detail` human text."""

    def __init__(self, reason: str, detail: str) -> None:
        self.reason = reason
        self.detail = detail
        super().__init__(f"{reason}: {detail}")


class TokenRejected(AuthzError):
    """No valid credentials: HTTP 401 with `WWW-Authenticate: Bearer ... error="invalid_token"`.

    `reason == "token_missing"` means no credentials were presented at all (RFC 6750 §3.1: no error code).
    `reason == "invalid_request"` means the Authorization header itself was malformed.
    """


class AccessDenied(AuthzError):
    """Authenticated, but not allowed (missing scope or role, client not allowed): HTTP 403."""


class AuthUnavailable(AuthzError):
    """lkps cannot decide right now (no signing keys, Graph unreachable beyond staleness): HTTP 503."""

    def __init__(self, reason: str, detail: str, retry_after: int = 30) -> None:
        super().__init__(reason, detail)
        self.retry_after = retry_after
