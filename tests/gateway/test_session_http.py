"""The session-start endpoints served beside Litestar: the same contract as Litestar's handlers, bounded
bodies, and refusals that leave no row."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from opentelemetry.sdk.trace import TracerProvider

from tests.gateway.conftest import AGENT_ID, Gateway, running_gateway

pytestmark = pytest.mark.anyio
# Values that differ between any two requests: masked before two answers are compared.
_VOLATILE = {"request_id", "room_name", "participant_token", "participant_identity", "expires_at"}
_CASES: list[tuple[str, str, dict[str, Any]]] = [
    ("/api/session/start", "valid", {"json": {"agent_entra_app_id": AGENT_ID}}),
    ("/api/session/start", "no token", {"json": {}, "token": None}),
    ("/api/session/start", "malformed token", {"json": {}, "token": "x.y.z"}),
    ("/api/session/start", "bad field", {"json": {"agent_entra_app_id": "nope"}}),
    ("/api/session/start", "unknown field", {"json": {"agent_entra_app_id": AGENT_ID, "room": "r"}}),
    ("/api/session/start", "not json", {"content": b"{not json"}),
    ("/api/session/start", "too deep", {"content": b"[" * 40 + b"]" * 40}),
    ("/api/session/start", "too large", {"content": b"{" + b" " * 70_000 + b"}"}),
    ("/api/session/start", "unknown agent", {"json": {"agent_entra_app_id": AGENT_ID.replace("5", "6")}}),
    (
        "/api/session/start",
        "control character",
        {"json": {"agent_entra_app_id": AGENT_ID, "metadata": {"k": "\x00"}}},
    ),
    ("/api/livekit/token", "valid", {"json": {"room_config": {"agents": [{"agent_name": AGENT_ID}]}}}),
    ("/api/livekit/token", "no token", {"json": {}, "token": None}),
    ("/api/livekit/token", "refused field", {"json": {"room_name": "mine"}}),
    ("/api/livekit/token", "empty body", {"content": b""}),
]


def _answer(response: Any) -> tuple[int, list[tuple[str, str]], Any]:
    headers = sorted(
        (k, v) for k, v in response.headers.items() if k not in {"x-request-id", "content-length"}
    )
    body = response.json()
    return response.status_code, headers, {k: "<varies>" if k in _VOLATILE else v for k, v in body.items()}


async def _send(gateway: Gateway, path: str, request: dict[str, Any]) -> Any:
    request = dict(request)
    token = request.pop("token", gateway.entra.mint_user_token())
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return await gateway.client.post(path, headers=headers, **request)


@pytest.fixture
async def both(database_url: str) -> AsyncIterator[tuple[Gateway, Gateway]]:
    """On one database: the app as deployed (session starts beside Litestar) and the app with tracing on
    (session starts through Litestar's handlers)."""
    async for direct in running_gateway(database_url):
        async for traced in running_gateway(database_url, tracer_provider=TracerProvider()):
            await direct.register_agent()
            yield direct, traced


@pytest.mark.parametrize(("path", "case", "request_"), _CASES, ids=[f"{p}:{c}" for p, c, _ in _CASES])
async def test_both_ways_in_answer_alike(
    both: tuple[Gateway, Gateway], path: str, case: str, request_: dict[str, Any]
) -> None:
    """Every answer of a session-start route, success or refusal, has the same status, headers and body
    whether the request is served beside Litestar or by Litestar's handler."""
    direct, traced = both
    assert case
    assert _answer(await _send(direct, path, request_)) == _answer(await _send(traced, path, request_))


async def _asgi_post(gateway: Gateway, messages: list[dict[str, Any]]) -> tuple[int, dict[str, Any]]:
    """POST /api/session/start straight into the app with these receive messages (no Content-Length)."""
    token = gateway.entra.mint_user_token().encode()
    scope = {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/api/session/start",
        "raw_path": b"/api/session/start",
        "query_string": b"",
        "root_path": "",
        "headers": [(b"authorization", b"Bearer " + token), (b"transfer-encoding", b"chunked")],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8000),
        "state": {},
    }
    pending = list(messages)
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return pending.pop(0) if pending else {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await gateway.app(scope, receive, send)  # type: ignore[arg-type]
    return sent[0]["status"], json.loads(sent[1]["body"])


async def test_a_body_over_the_bound_is_refused_without_a_row(gateway: Gateway) -> None:
    """A body streamed past 64 KB without a Content-Length is a 413 in the error shape; nothing is recorded."""
    await gateway.register_agent()
    start = b'{"agent_entra_app_id": "' + AGENT_ID.encode() + b'", "metadata": {"k": "'
    chunks = [start, *(b"x" * 1024 for _ in range(70)), b'"}}']
    messages = [{"type": "http.request", "body": chunk, "more_body": True} for chunk in chunks]
    messages[-1]["more_body"] = False
    status, body = await _asgi_post(gateway, messages)
    assert (status, body["error"]) == (413, "payload_too_large")
    assert await gateway.session_rows() == 0


async def test_a_client_gone_before_its_body_ends_gets_no_session(gateway: Gateway) -> None:
    """A connection that closes halfway through the body is answered 400 (nobody reads it) with no row."""
    await gateway.register_agent()
    half = {"type": "http.request", "body": b'{"agent_entra_app_id": "', "more_body": True}
    status, body = await _asgi_post(gateway, [half])
    assert (status, body["error"]) == (400, "invalid_request")
    assert await gateway.session_rows() == 0


async def test_a_path_with_a_trailing_slash_is_still_served(gateway: Gateway) -> None:
    """`/api/session/start/` reaches the same route (through Litestar) and starts a session."""
    await gateway.register_agent()
    response = await gateway.client.post(
        "/api/session/start/",
        headers={"Authorization": f"Bearer {gateway.entra.mint_user_token()}"},
        json={"agent_entra_app_id": AGENT_ID},
    )
    assert response.status_code == 200
    assert response.headers["cache-control"] == "no-store"
    assert await gateway.session_rows() == 1
