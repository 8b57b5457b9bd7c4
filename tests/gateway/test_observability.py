"""Access logging and errors: one line per request with its outcome, never a token, never a stack trace."""

from __future__ import annotations

import pytest
from structlog.testing import capture_logs

from tests.gateway.conftest import Gateway

pytestmark = pytest.mark.anyio


async def test_one_access_line_per_request_with_ids_and_reason(gateway: Gateway) -> None:
    """A refused session start logs exactly one line with request id, caller ids, agent and reason."""
    token = gateway.entra.mint_user_token()
    with capture_logs() as logs:
        response = await gateway.start(token)
    lines = [entry for entry in logs if entry["event"] == "request"]
    assert len(lines) == 1
    line = lines[0]
    assert line["request_id"] == response.headers["x-request-id"]
    assert line["status"] == 404
    assert line["outcome"] == "agent_not_connected"
    assert line["route"] == "/api/session/start"
    assert line["oid"]
    assert line["azp"]
    assert line["tid"]
    assert line["agent_id"]
    assert token not in repr(logs)


async def test_tokens_never_reach_a_log_line(gateway: Gateway) -> None:
    """Neither the presented Entra token nor the minted LiveKit token appears in any log event."""
    await gateway.register_agent()
    token = gateway.entra.mint_user_token()
    with capture_logs() as logs:
        response = await gateway.start(token)
        bad = await gateway.start(token + "x")
    assert bad.status_code == 401
    rendered = repr(logs)
    assert token not in rendered
    assert token.split(".")[2] not in rendered
    assert response.json()["participant_token"] not in rendered
    assert gateway.settings.livekit_api_secret not in rendered


async def test_incoming_request_id_is_reused_and_malformed_ones_replaced(gateway: Gateway) -> None:
    """A well-formed X-Request-ID is propagated; one with unsafe characters is replaced by a fresh id."""
    good = await gateway.client.get("/api/health/live", headers={"X-Request-ID": "abc-123"})
    assert good.headers["x-request-id"] == "abc-123"
    bad = await gateway.client.get("/api/health/live", headers={"X-Request-ID": "a b\tc"})
    assert bad.headers["x-request-id"] != "a b\tc"
    assert len(bad.headers["x-request-id"]) == 24


@pytest.mark.parametrize(
    ("method", "path", "status", "code"),
    [("GET", "/nope", 404, "not_found"), ("GET", "/api/session/start", 405, "method_not_allowed")],
)
async def test_framework_errors_use_the_error_shape(
    gateway: Gateway, method: str, path: str, status: int, code: str
) -> None:
    """Unknown routes and wrong methods answer with the same error shape as everything else."""
    response = await gateway.client.request(method, path)
    assert response.status_code == status
    assert response.json() == {
        "error": code,
        "message": response.json()["message"],
        "request_id": response.headers["x-request-id"],
    }


async def test_unexpected_failure_is_a_500_without_details(gateway: Gateway) -> None:
    """An internal failure answers 500 with the error shape and no exception text, and is logged."""
    await gateway.register_agent()

    async def broken(*_: object) -> None:
        raise ZeroDivisionError("internal detail")

    gateway.services.sessions._minter.participant_token = broken  # type: ignore[method-assign]
    with capture_logs() as logs:
        response = await gateway.start()
    assert response.status_code == 500
    assert "internal detail" not in response.text
    assert response.json()["error"] == "internal_error"
    assert any(entry["event"] == "unhandled_exception" for entry in logs)
