"""The app's dispatch: each request goes to the one app that serves its scope type, method and exact path."""

from __future__ import annotations

from typing import Any

import pytest

from gateway.dispatch import Dispatch

pytestmark = pytest.mark.anyio


class _App:
    def __init__(self) -> None:
        self.paths: list[str] = []

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        self.paths.append(scope.get("path", scope["type"]))


async def test_requests_go_to_the_app_of_their_route_and_everything_else_to_the_default() -> None:
    """A websocket and a POST reach their own apps; another method, another path and a lifespan scope
    reach the default app."""
    default, relay, start = _App(), _App(), _App()
    dispatch = Dispatch(
        default, {("websocket", "", "/worker/agent"): relay, ("http", "POST", "/start"): start}
    )

    async def nothing() -> Any:
        return None

    for scope in (
        {"type": "websocket", "path": "/worker/agent"},
        {"type": "http", "method": "POST", "path": "/start"},
        {"type": "http", "method": "GET", "path": "/start"},
        {"type": "http", "method": "POST", "path": "/start/"},
        {"type": "http", "method": "GET", "path": "/worker/agent"},
        {"type": "lifespan"},
    ):
        await dispatch(scope, nothing, nothing)  # type: ignore[arg-type]
    assert relay.paths == ["/worker/agent"]
    assert start.paths == ["/start"]
    assert default.paths == ["/start", "/start/", "/worker/agent", "lifespan"]
