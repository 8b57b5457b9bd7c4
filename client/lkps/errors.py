"""Typed errors of the lkps client, mapped from the service's error shape.

Every lkps error body is `{"error": <stable code>, "message": <what to do>, "request_id": <id>}`; the status
picks the class (so callers can `except NotFound`) and `code` is the stable detail to branch on.
"""

from __future__ import annotations

from collections.abc import Mapping

import msgspec


class LkpsError(Exception):
    """A call to lkps failed. `status` is None when lkps was not reached (no Entra token, no connection)."""

    def __init__(
        self,
        message: str,
        *,
        status: int | None,
        code: str,
        request_id: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.code = code
        self.request_id = request_id
        self.retry_after = retry_after  # seconds, from Retry-After on 429 and 503

    def __str__(self) -> str:
        where = f"HTTP {self.status}" if self.status is not None else "not sent"
        request = f", request id {self.request_id}" if self.request_id else ""
        return f"{self.code}: {self.message} ({where}{request})"


class CredentialError(LkpsError):
    """No Entra access token could be obtained (`code` is Entra's, e.g. `invalid_client`); lkps was not called."""


class ConnectionFailed(LkpsError):
    """lkps could not be reached or did not answer in time."""


class InvalidRequest(LkpsError):
    """400-class refusal of the request itself: a field, the body size or the media type (fix the call)."""


class Unauthorized(LkpsError):
    """401: the Entra token is missing or invalid (`code` is `invalid_token`, `missing_token`, ...)."""


class Forbidden(LkpsError):
    """403: a valid token, but this caller may not do this (missing scope or role, client not authorized)."""


class NotFound(LkpsError):
    """404: most often `agent_not_connected`, the agent has no current registration."""


class RateLimited(LkpsError):
    """429: slow down; retry after `retry_after` seconds."""


class ServiceUnavailable(LkpsError):
    """5xx: lkps or one of its dependencies failed; retry after `retry_after` seconds."""


class _ErrorBody(msgspec.Struct):
    error: str
    message: str
    request_id: str | None = None


_BY_STATUS: dict[int, type[LkpsError]] = {
    401: Unauthorized,
    403: Forbidden,
    404: NotFound,
    429: RateLimited,
}


def error_from_response(status: int, headers: Mapping[str, str], body: bytes) -> LkpsError:
    """The typed error for a non-2xx answer; a body that is not lkps's shape (a proxy's page) still maps."""
    try:
        shape = msgspec.json.decode(body, type=_ErrorBody)
    except msgspec.MsgspecError:
        shape = _ErrorBody(
            error=f"http_{status}", message=f"lkps answered HTTP {status} without an error body."
        )
    cls = ServiceUnavailable if status >= 500 else _BY_STATUS.get(status, InvalidRequest)
    return cls(
        shape.message,
        status=status,
        code=shape.error,
        request_id=shape.request_id or headers.get("x-request-id"),
        retry_after=_seconds(headers.get("retry-after")),
    )


def _seconds(value: str | None) -> float | None:
    try:
        seconds = float(value) if value is not None else None
    except ValueError:
        return None
    return seconds if seconds is not None and seconds >= 0 else None
