"""Access logging and errors: one line per request with its outcome, never a token, never a stack trace."""

from __future__ import annotations

import os

import pytest
from sqlalchemy import select
from structlog.testing import capture_logs

from gateway.persistence.tables import sessions
from tests.gateway.conftest import Gateway
from tests.support.asgi import raw_request

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


@pytest.mark.parametrize(
    ("sent", "logged"),
    [("abc-123", "abc-123"), ("a b\tc", None), ("x" * 65, None), ("ok\n", None)],
)
async def test_a_client_request_id_is_logged_beside_lkps_own_and_never_adopted(
    gateway: Gateway, sent: str, logged: str | None
) -> None:
    """Whatever X-Request-ID a client sends, the response, the log line and the audit row carry an id
    lkps minted; a well-formed client id (1-64 of A-Za-z0-9._:-) is logged as client_request_id."""
    with capture_logs() as logs:
        response = await raw_request(
            gateway.app, "GET", "/api/nothing-here", [(b"x-request-id", sent.encode())]
        )
    minted = response.headers["x-request-id"]
    assert minted != sent
    assert len(minted) == 24
    [line] = [entry for entry in logs if entry["event"] == "request"]
    assert line["request_id"] == minted
    assert line.get("client_request_id") == logged


async def test_a_session_row_carries_lkps_request_id_not_the_clients(gateway: Gateway) -> None:
    """A session start with a client X-Request-ID records lkps's own id in its row."""
    await gateway.register_agent()
    response = await gateway.start(**{"X-Request-ID": "client-chosen"})
    assert response.status_code == 200, response.text
    async with gateway.db.connect() as conn:
        stored = (await conn.execute(select(sessions.c.request_id))).scalar_one()
    assert stored == response.headers["x-request-id"] != "client-chosen"


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


async def _series(gateway: Gateway) -> set[str]:
    """The metric series /metrics exposes (name and labels, without values)."""
    text = (await gateway.client.get("/metrics")).text
    return {line.rpartition(" ")[0] for line in text.splitlines() if line and not line.startswith("#")}


async def _made_up_requests(gateway: Gateway, count: int) -> None:
    for index in range(count):
        method = "X" * (8192 if index % 2 else 12) + os.urandom(4).hex().upper()
        response = await raw_request(gateway.app, method, "/api/session/start", [])
        assert response.status == 501
        assert response.json() == {
            "error": "method_not_implemented",
            "message": response.json()["message"],
            "request_id": response.headers["x-request-id"],
        }
        path = f"/{os.urandom(8).hex()}/{'y' * (index % 300)}"
        assert (await raw_request(gateway.app, "GET", path, [])).status == 404


async def test_made_up_methods_and_paths_add_no_metric_series(gateway: Gateway) -> None:
    """Invented methods (up to 8 KB) get 501 with the error shape and paths 404; however many arrive,
    /metrics keeps the same series, because methods outside RFC 9110 count as "other" and routes are
    templates ("unmatched" for no route)."""
    await _made_up_requests(gateway, 3)
    await _series(gateway)
    before = await _series(gateway)
    await _made_up_requests(gateway, 200)
    after = await _series(gateway)
    assert after == before
    assert any('method="other"' in series for series in after)
    assert not any("XXXX" in series or "yyyy" in series for series in after)


async def test_metrics_content_type_is_prometheus_text_with_one_charset(gateway: Gateway) -> None:
    """/metrics answers Prometheus's text format 0.0.4 with a single `charset` parameter."""
    response = await gateway.client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
