"""The HTTP side of a session start, once for both session-start routes and for both ways a request arrives.

Both routes do the same thing in two body formats: authenticate (the bearer token, then the session-caller
policy) before the body is read, so an unauthenticated request is a 401 whatever its body; decode and check
the body; start the session; answer with a token no cache may keep. `SessionRoute` is one route's format
and `serve` is that sequence. Two ways in share it:

- `SessionStartEndpoints`, an ASGI app the app's dispatch hands every `POST` to either path. It serves the
  request without Litestar's router, middleware stack, request and response objects and signature model,
  which together cost more CPU than the session start itself; the access layer around it still mints the
  request id, counts the metrics and writes the one log line.
- Litestar's route handlers, which document the routes in the OpenAPI schema and serve what the dispatch
  does not send here: a path spelled with a trailing slash, and every request when tracing is configured
  (the OpenTelemetry plugin spans requests inside Litestar).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic, TypeVar

import msgspec
from litestar.middleware._internal.cors import CORSMiddleware

from gateway.auth import session_caller_in
from gateway.body_drain import drain, has_body
from gateway.errors import ApiError, encode_error, payload_too_large, settle_error
from gateway.observability.context import context_of
from gateway.session_start import StartedSession, StartRequest

if TYPE_CHECKING:
    from litestar.config.cors import CORSConfig
    from litestar.types import Receive, Scope, Send

    from config import Settings
    from gateway.services import Services

R = TypeVar("R", bound=msgspec.Struct)

_JSON = (b"content-type", b"application/json")
# A response carrying a token: no browser, proxy or CDN may keep a copy (see gateway.openapi.NOT_CACHED).
_NOT_CACHED = ((b"cache-control", b"no-store"), (b"pragma", b"no-cache"))
_encode = msgspec.json.Encoder().encode


@dataclass(frozen=True, slots=True)
class SessionRoute(Generic[R]):
    """One session-start route: its path, its success status and its body format."""

    path: str
    status_code: int
    parse: Callable[[bytes], StartRequest]
    respond: Callable[[StartedSession, Settings], R]


async def serve(
    route: SessionRoute[R], services: Services, scope: Any, body: Callable[[], Awaitable[bytes]]
) -> R:
    """Authenticate, then read and check the body, then start the session: the order both routes promise."""
    caller = await session_caller_in(services, scope)
    wanted = route.parse(await body())
    started = await services.sessions.start(
        caller,
        wanted.agent_app_id,
        wanted.metadata,
        context_of(scope),
        display_name=wanted.display_name,
        deployment=wanted.deployment,
    )
    return route.respond(started, services.settings)


class SessionStartEndpoints:
    """Serves `POST` to the paths of `routes` directly (see the module docstring)."""

    def __init__(
        self,
        services: Services,
        routes: Iterable[SessionRoute[Any]],
        max_body_bytes: int,
        cors: CORSConfig | None,
    ) -> None:
        self._services = services
        self._routes = {route.path: route for route in routes}
        self._max_body_bytes = max_body_bytes
        # Litestar's own CORS handling, for the requests that carry an Origin (browser apps).
        self._cors = CORSMiddleware(self._serve, cors) if cors is not None else None

    @property
    def paths(self) -> tuple[str, ...]:
        return tuple(self._routes)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self._cors is not None and any(name == b"origin" for name, _ in scope["headers"]):
            await self._cors(scope, receive, send)
        else:
            await self._serve(scope, receive, send)

    async def _serve(self, scope: Scope, receive: Receive, send: Send) -> None:
        route = self._routes[scope["path"]]
        ctx = context_of(scope)
        ctx.route = route.path
        body = _Body(receive, scope, self._max_body_bytes)
        try:
            answer = await serve(route, self._services, scope, body.read)
        except Exception as exc:  # every failure is answered with the error shape
            error = settle_error(exc, scope)
            if not body.complete and has_body(scope):
                await drain(receive)  # so the keep-alive connection survives an answer given early
            headers = [_JSON]
            headers += [(name.lower().encode(), value.encode()) for name, value in error.headers.items()]
            await _respond(
                send, error.status, headers, encode_error(error.code, error.message, ctx.request_id)
            )
            return
        await _respond(send, route.status_code, [_JSON, *_NOT_CACHED], _encode(answer))


class _Body:
    """The request body, bounded as Litestar bounds a route's (`request_max_body_size`)."""

    __slots__ = ("_max_bytes", "_receive", "_scope", "complete")

    def __init__(self, receive: Receive, scope: Scope, max_bytes: int) -> None:
        self._receive = receive
        self._scope = scope
        self._max_bytes = max_bytes
        self.complete = False

    async def read(self) -> bytes:
        for name, value in self._scope["headers"]:
            if name == b"content-length" and value.isdigit() and int(value) > self._max_bytes:
                raise payload_too_large()  # announced too large: nothing is read
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await self._receive()
            if message["type"] != "http.request":
                self.complete = True  # the client is gone: there is nothing left to drain
                raise ApiError(
                    400,
                    "invalid_request",
                    "The connection closed before the request body was complete.",
                    reason="client_disconnected",
                )
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self._max_bytes:
                raise payload_too_large()
            more = message.get("more_body", False)
            if not chunks and not more:
                self.complete = True
                return chunk
            chunks.append(chunk)
            if not more:
                self.complete = True
                return b"".join(chunks)


async def _respond(send: Send, status: int, headers: list[tuple[bytes, bytes]], body: bytes) -> None:
    headers.append((b"content-length", str(len(body)).encode()))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body, "more_body": False})
