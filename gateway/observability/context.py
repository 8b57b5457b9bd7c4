"""Per-request facts collected while a request runs and logged once when it ends."""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from authz.caller import Caller

_REQUEST_ID = re.compile(rb"^[A-Za-z0-9._:-]{1,64}$")
_STATE_KEY = "lkps_ctx"


@dataclass(slots=True)
class RequestContext:
    """Mutable bag owned by one request: handlers fill it, the access-log line reads it."""

    request_id: str
    outcome: str = "ok"
    reason: str | None = None
    caller: Caller | None = None
    fields: dict[str, Any] = field(default_factory=dict)


def new_request_id(raw_headers: Iterable[tuple[bytes, bytes]], trust_incoming: bool) -> str:
    """Reuse a well-formed incoming `X-Request-ID` (so traces join up across proxies), else mint one."""
    if trust_incoming:
        for name, value in raw_headers:
            if name == b"x-request-id":
                if _REQUEST_ID.match(value):
                    return value.decode("ascii")
                break
    return os.urandom(12).hex()


def context_of(scope: Any) -> RequestContext:
    """The context of this request; one is created lazily for paths that bypassed the middleware."""
    state = scope.setdefault("state", {})
    ctx = state.get(_STATE_KEY)
    if ctx is None:
        ctx = state[_STATE_KEY] = RequestContext(request_id=os.urandom(12).hex())
    return ctx  # type: ignore[no-any-return]


def attach_context(scope: Any, ctx: RequestContext) -> None:
    scope.setdefault("state", {})[_STATE_KEY] = ctx
