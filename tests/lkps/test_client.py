"""The Python client's wire contract: what it sends, the typed results, and errors mapped from lkps's shape."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from lkps import (
    AgentRegistration,
    ConnectionFailed,
    CredentialError,
    EndedSession,
    Forbidden,
    InvalidRequest,
    LkpsClient,
    LkpsError,
    NotFound,
    RateLimited,
    ServiceUnavailable,
    Session,
    Unauthorized,
)

AGENT_ID = "5b7d9f1a-3c5e-4a7b-9d1f-2a4c6e8b0d2f"
SESSION = {
    "room_name": f"AB12C-{AGENT_ID}-1795390390842-a884a1ee",
    "livekit_url": "wss://livekit.example.com",
    "participant_token": "lk.jwt",
    "participant_identity": "AB12C",
    "expires_at": 1795390990,
}
REGISTRATION = {
    "worker_url": "https://lkps.example.com/agent-worker",
    "worker_api_key": "wk-1",
    "worker_api_secret": "worker-secret-not-for-logs",
    "expires_at": 1795394590,
    "agent_name": AGENT_ID,
    "registration_id": "r-1",
}


class StaticToken:
    def __init__(self, token: str = "entra.jwt") -> None:
        self.value = token

    def token(self) -> str:
        return self.value


def client_answering(
    handler: Callable[[httpx.Request], httpx.Response], credential: Any = None
) -> tuple[LkpsClient, list[httpx.Request]]:
    seen: list[httpx.Request] = []

    def record(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return handler(request)

    http = httpx.Client(transport=httpx.MockTransport(record))
    return LkpsClient("https://lkps.example.com/", credential or StaticToken(), http=http), seen


def test_start_session_posts_the_contract_body_with_the_bearer_token() -> None:
    """`start_session` sends the agent id and metadata with `Bearer <Entra token>` and returns a Session."""
    client, seen = client_answering(lambda _: httpx.Response(200, json={**SESSION, "future_field": 1}))
    session = client.start_session(AGENT_ID, {"language": "en"})
    assert session == Session(**SESSION)
    [request] = seen
    assert (request.method, str(request.url)) == ("POST", "https://lkps.example.com/api/session/start")
    assert request.headers["Authorization"] == "Bearer entra.jwt"
    assert request.headers["User-Agent"].startswith("lkps-python/")
    assert json.loads(request.content) == {"agent_entra_app_id": AGENT_ID, "metadata": {"language": "en"}}


def test_register_agent_sends_only_the_fields_given() -> None:
    """`register_agent` always states enforce_client_authz and leaves unset descriptive fields out."""
    client, seen = client_answering(lambda _: httpx.Response(200, json=REGISTRATION))
    registration = client.register_agent(enforce_client_authz=False, agent_version="1.2.0")
    assert registration == AgentRegistration(**REGISTRATION)
    assert REGISTRATION["worker_api_secret"] not in repr(registration)
    [request] = seen
    assert request.url.path == "/api/agent/register"
    assert json.loads(request.content) == {"enforce_client_authz": False, "agent_version": "1.2.0"}


@pytest.mark.parametrize(
    ("status", "code", "expected"),
    [
        (400, "invalid_request", InvalidRequest),
        (413, "payload_too_large", InvalidRequest),
        (401, "invalid_token", Unauthorized),
        (403, "forbidden", Forbidden),
        (404, "agent_not_connected", NotFound),
        (429, "rate_limited", RateLimited),
        (503, "database_unavailable", ServiceUnavailable),
        (500, "internal_error", ServiceUnavailable),
    ],
)
def test_error_bodies_map_to_typed_errors(status: int, code: str, expected: type[LkpsError]) -> None:
    """Each status family raises its own LkpsError subclass carrying lkps's code, message and request id."""
    body = {"error": code, "message": "what to do", "request_id": "req-1"}
    client, _ = client_answering(lambda _: httpx.Response(status, json=body, headers={"Retry-After": "2"}))
    with pytest.raises(expected) as raised:
        client.start_session(AGENT_ID)
    error = raised.value
    assert (error.status, error.code, error.message, error.request_id) == (
        status,
        code,
        "what to do",
        "req-1",
    )
    assert error.retry_after == 2.0
    assert str(error) == f"{code}: what to do (HTTP {status}, request id req-1)"


def test_an_answer_without_lkps_error_shape_still_maps() -> None:
    """A proxy's HTML 502 becomes ServiceUnavailable with a synthetic code and the X-Request-ID header."""
    client, _ = client_answering(lambda _: httpx.Response(502, text="<html>", headers={"X-Request-ID": "px"}))
    with pytest.raises(ServiceUnavailable) as raised:
        client.start_session(AGENT_ID)
    assert (raised.value.code, raised.value.request_id, raised.value.retry_after) == ("http_502", "px", None)


def test_unreachable_service_and_unexpected_bodies_are_lkps_errors() -> None:
    """A connection failure is ConnectionFailed (status None); a 200 of the wrong shape is `unexpected_response`."""

    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    client, _ = client_answering(refuse)
    with pytest.raises(ConnectionFailed) as failed:
        client.start_session(AGENT_ID)
    assert (failed.value.status, failed.value.code) == (None, "connection_failed")
    client, _ = client_answering(lambda _: httpx.Response(200, json={"room_name": "x"}))
    with pytest.raises(LkpsError) as unexpected:
        client.start_session(AGENT_ID)
    assert unexpected.value.code == "unexpected_response"


def test_no_request_is_sent_without_an_entra_token() -> None:
    """When the credential fails, its CredentialError reaches the caller and lkps is never called."""

    class Refused:
        def token(self) -> str:
            raise CredentialError("wrong secret", status=None, code="invalid_client")

    client, seen = client_answering(lambda _: httpx.Response(200, json=SESSION), Refused())
    with pytest.raises(CredentialError):
        client.start_session(AGENT_ID)
    assert seen == []


def test_end_session_sends_delete_for_the_room_and_returns_the_result() -> None:
    """`end_session` DELETEs the (escaped) room and returns the typed answer."""
    room = SESSION["room_name"]
    ended = {"room_name": room, "status": "ended", "ended_at": "2026-11-23T01:00:00Z"}
    client, seen = client_answering(lambda request: httpx.Response(200, json=ended))
    result = client.end_session(room)
    assert result == EndedSession(**ended)
    assert seen[0].method == "DELETE"
    assert seen[0].url.path == f"/api/session/{room}"
    assert seen[0].headers["authorization"] == "Bearer entra.jwt"


def test_a_plaintext_url_to_another_host_is_refused_before_any_token() -> None:
    """`LkpsClient` refuses http to a non-loopback host before it asks for a token or sends anything, and
    accepts http on loopback."""

    class NoToken:
        def token(self) -> str:
            raise AssertionError("no token may be asked for")

    with pytest.raises(
        ValueError, match=r"lkps URL 'http://lkps\.example\.com' is plaintext http .* use https://"
    ):
        LkpsClient("http://lkps.example.com", NoToken())
    LkpsClient("http://127.0.0.1:8000", NoToken()).close()
