"""The one error type of the HTTP API and the one place that renders every failure.

Every error body is `{"error": <stable code>, "message": <human text>, "request_id": <id>}`. Codes are part
of the public contract: clients branch on them, so they never change meaning.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import msgspec
import structlog
from litestar import MediaType, Request, Response
from litestar.exceptions import HTTPException, NotFoundException, ValidationException

from authz.errors import AccessDenied, AuthUnavailable, AuthzError, TokenRejected
from gateway.observability.context import context_of

if TYPE_CHECKING:
    from collections.abc import Mapping

log = structlog.get_logger("lkps.errors")

# RFC 6750 §3: the realm names the protected resource; the error code tells clients to get a new token.
_REALM = 'Bearer realm="lkps"'


class ApiError(Exception):
    """An expected failure with an HTTP status, a stable machine code and an actionable message."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        reason: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.reason = reason or code  # finer-grained cause, for logs and metrics only
        self.headers = dict(headers or {})


class ErrorBody(msgspec.Struct):
    """The error shape every non-2xx response carries."""

    error: str
    message: str
    request_id: str


def encode_error(code: str, message: str, request_id: str) -> bytes:
    """The JSON of an error body; also used by the access layer, which answers some requests itself."""
    return msgspec.json.encode(ErrorBody(error=code, message=message, request_id=request_id))


def bad_request(message: str, reason: str = "invalid_request") -> ApiError:
    return ApiError(400, "invalid_request", message, reason=reason)


def payload_too_large() -> ApiError:
    code, message = _FRAMEWORK_CODES[413]
    return ApiError(413, code, message)


def database_unavailable(message: str, exc: Exception) -> ApiError:
    return ApiError(
        503,
        "database_unavailable",
        message,
        reason=f"database_error:{type(exc).__name__}",
        headers={"Retry-After": "2"},
    )


class database_errors:  # noqa: N801 - used as a function: `with database_errors("..."):`
    """Turn any failure of the database work in the block into 503 `database_unavailable` with `message`.

    A class rather than a `@contextmanager` generator: session start enters two per request, and a
    generator-based one costs several times as much to enter and leave."""

    __slots__ = ("_message",)

    def __init__(self, message: str) -> None:
        self._message = message

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: object) -> None:
        if isinstance(exc, Exception) and not isinstance(exc, ApiError):
            raise database_unavailable(self._message, exc) from exc


def from_authz(exc: AuthzError) -> ApiError:
    """Map an `authz` refusal to its HTTP form (401 / 403 / 503) with the RFC 6750 challenge."""
    if isinstance(exc, TokenRejected):
        if exc.reason == "token_missing":
            challenge = _REALM
            code = "missing_token"
        elif exc.reason == "invalid_request":
            challenge = f'{_REALM}, error="invalid_request"'
            code = "invalid_authorization_header"
        else:
            challenge = f'{_REALM}, error="invalid_token", error_description="{exc.reason}"'
            code = "invalid_token"
        return ApiError(401, code, exc.detail, reason=exc.reason, headers={"WWW-Authenticate": challenge})
    if isinstance(exc, AccessDenied):
        headers = {}
        if exc.reason in {"scope_missing", "role_missing"}:
            headers["WWW-Authenticate"] = f'{_REALM}, error="insufficient_scope"'
        return ApiError(403, "forbidden", exc.detail, reason=exc.reason, headers=headers)
    if isinstance(exc, AuthUnavailable):
        return ApiError(
            503,
            "service_unavailable",
            exc.detail,
            reason=exc.reason,
            headers={"Retry-After": str(exc.retry_after)},
        )
    return ApiError(500, "internal_error", "The request could not be processed.", reason=exc.reason)


_FRAMEWORK_CODES = {
    404: ("not_found", "No such endpoint; see /schema for the API."),
    405: ("method_not_allowed", "This endpoint does not support that HTTP method."),
    413: ("payload_too_large", "The request body is too large."),
    415: ("unsupported_media_type", "Send the body as application/json."),
}


def _as_api_error(exc: Exception) -> ApiError:
    if isinstance(exc, ApiError):
        return exc
    if isinstance(exc, AuthzError):
        return from_authz(exc)
    if isinstance(exc, ValidationException):
        return bad_request("The request is invalid.")
    if isinstance(exc, NotFoundException):
        code, message = _FRAMEWORK_CODES[404]
        return ApiError(404, code, message)
    if isinstance(exc, HTTPException) and exc.status_code < 500:
        code, message = _FRAMEWORK_CODES.get(exc.status_code, ("invalid_request", "The request is invalid."))
        return ApiError(exc.status_code, code, message, headers=exc.headers)
    return ApiError(500, "internal_error", "The request could not be processed; it has been logged.")


def settle_error(exc: Exception, scope: Any) -> ApiError:
    """The `ApiError` answering `exc` (an unexpected one is logged with its traceback and becomes a 500),
    recorded as the request's outcome; shared by Litestar's exception handler and the session-start path."""
    error = _as_api_error(exc)
    ctx = context_of(scope)
    if error.status >= 500 and not isinstance(exc, ApiError | AuthzError):
        # Unexpected: keep the traceback in the log, never in the response.
        log.error("unhandled_exception", exc_info=exc, request_id=ctx.request_id)
    ctx.outcome = error.code
    ctx.reason = error.reason
    return error


def render_error(request: Request[Any, Any, Any], exc: Exception) -> Response[bytes]:
    """Litestar exception handler for everything: known failures keep their code, the rest become 500."""
    error = settle_error(exc, request.scope)
    body = encode_error(error.code, error.message, context_of(request.scope).request_id)
    return Response(content=body, status_code=error.status, media_type=MediaType.JSON, headers=error.headers)
