"""The app's first decision about a request: which ASGI app serves it, by scope type, method and path.

One dictionary lookup instead of a chain of layers that each inspect every request: the worker relay's
websocket and the session-start `POST`s go to their own apps; everything else goes to Litestar.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from litestar.types import ASGIApp, Receive, Scope, Send

# A websocket scope has no method.
Route = tuple[str, str, str]  # (scope type, method or "", exact path)


class Dispatch:
    def __init__(self, default: ASGIApp, routes: Mapping[Route, ASGIApp]) -> None:
        self._default = default
        self._routes = dict(routes)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        app = self._routes.get((scope["type"], scope.get("method", ""), scope.get("path", "")))  # type: ignore[arg-type]
        await (app or self._default)(scope, receive, send)
