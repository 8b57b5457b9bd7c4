"""Per-request facts collected while a request runs and logged once when it ends."""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from authz.caller import Caller

_REQUEST_ID = re.compile(rb"[A-Za-z0-9._:-]{1,64}")
_STATE_KEY = "lkps_ctx"


@dataclass(slots=True)
class RequestContext:
    """Mutable bag owned by one request: handlers fill it, the access-log line reads it."""

    request_id: str
    outcome: str = "ok"
    reason: str | None = None
    caller: Caller | None = None
    route: str | None = None  # the route template, when a request is served outside Litestar's router
    fields: dict[str, Any] = field(default_factory=dict)


def mint_request_id() -> str:
    """lkps's own id of a request: the one in its response, its log line and its audit rows."""
    return os.urandom(12).hex()


def client_request_id(raw_headers: Iterable[tuple[bytes, bytes]]) -> str | None:
    """A caller's `X-Request-ID`, if well-formed (1 to 64 of `A-Za-z0-9._:-`), to be logged beside lkps's
    own id so traces join up; never adopted: a caller must not choose the id that audit rows carry."""
    for name, value in raw_headers:
        if name == b"x-request-id":
            return value.decode("ascii") if _REQUEST_ID.fullmatch(value) else None
    return None


def context_of(scope: Any) -> RequestContext:
    """The context of this request; one is created lazily for paths that bypassed the middleware."""
    state = scope.setdefault("state", {})
    ctx = state.get(_STATE_KEY)
    if ctx is None:
        ctx = state[_STATE_KEY] = RequestContext(request_id=mint_request_id())
    return ctx  # type: ignore[no-any-return]


def attach_context(scope: Any, ctx: RequestContext) -> None:
    scope.setdefault("state", {})[_STATE_KEY] = ctx
