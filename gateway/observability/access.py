"""The outermost ASGI layer: request id, timing, RED metrics and exactly one access-log line per request."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from litestar.enums import ScopeType

from gateway.errors import encode_error
from gateway.observability.context import RequestContext, attach_context, client_request_id, mint_request_id
from gateway.observability.logging import DirectInfo

if TYPE_CHECKING:
    from litestar.types import (
        ASGIApp,
        HTTPResponseBodyEvent,
        HTTPResponseStartEvent,
        HTTPScope,
        Message,
        Receive,
        Scope,
        Send,
    )

    from gateway.observability.metrics import Metrics

_log_line = DirectInfo()
# Probes and scrapes would drown the access log; their metrics are still counted.
_QUIET_PATHS = frozenset({"/api/health/live", "/api/health/ready", "/metrics"})
# RFC 9110's methods. Any other is answered 501 here, before routing, and counted as "other": a metric
# label or log field taken from the request line would let any caller create series without bound.
HTTP_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH"})
OTHER_METHOD = "other"
_NOT_IMPLEMENTED = (
    "method_not_implemented",
    "lkps does not implement this HTTP method; the API uses GET, POST and DELETE (see /schema).",
)


class AccessLayer:
    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics
        # `labels()` costs a lock and a tuple hash per call; the label sets are few, so keep the children.
        self._children: dict[tuple[str, str, int, str], tuple[Any, Any, Any]] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != ScopeType.HTTP:
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        ctx = RequestContext(request_id=mint_request_id())
        if (client_id := client_request_id(scope["headers"])) is not None:
            ctx.fields["client_request_id"] = client_id
        attach_context(scope, ctx)
        status = 500
        header = (b"x-request-id", ctx.request_id.encode("ascii"))

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", ()), header]
            await send(message)

        method: str = scope["method"]
        try:
            if method in HTTP_METHODS:
                await self.app(scope, receive, send_with_id)
            else:
                method = OTHER_METHOD
                await _not_implemented(ctx, send_with_id)
        finally:
            self._record(scope, method, ctx, status, time.perf_counter() - started)

    def _record(
        self, scope: HTTPScope, method: str, ctx: RequestContext, status: int, elapsed: float
    ) -> None:
        route = ctx.route
        if route is None:
            handler: Any = scope.get("route_handler")
            route = (
                next(iter(handler.paths)) if handler is not None else "unmatched"
            )  # a template, not the path
        outcome = ctx.reason or ctx.outcome
        key = (method, route, status, outcome)
        children = self._children.get(key)
        if children is None:
            children = self._children[key] = (
                self.metrics.requests.labels(method, route, str(status)),
                self.metrics.latency.labels(route),
                self.metrics.outcomes.labels(route, outcome),
            )
        requests, latency, outcomes = children
        requests.inc()
        latency.observe(elapsed)
        if route in _QUIET_PATHS and status < 500:
            return
        outcomes.inc()
        _log_line(
            {
                "request_id": ctx.request_id,
                "method": method,
                "route": route,
                "status": status,
                "duration_ms": round(elapsed * 1000, 3),
                "outcome": ctx.outcome,
                "reason": ctx.reason,
                **ctx.fields,
                "event": "request",
            }
        )


async def _not_implemented(ctx: RequestContext, send: Send) -> None:
    code, message = _NOT_IMPLEMENTED
    ctx.outcome = code
    body = encode_error(code, message, ctx.request_id)
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    start: HTTPResponseStartEvent = {"type": "http.response.start", "status": 501, "headers": headers}
    content: HTTPResponseBodyEvent = {"type": "http.response.body", "body": body, "more_body": False}
    await send(start)
    await send(content)
