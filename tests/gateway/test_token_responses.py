"""Responses that carry a token are never stored by a browser, proxy or CDN: `Cache-Control: no-store` and
`Pragma: no-cache` on session start, the LiveKit-format token endpoint and agent registration."""

from __future__ import annotations

import pytest

from tests.gateway.conftest import AGENT_ID, Gateway

pytestmark = pytest.mark.anyio


def assert_not_cached(response) -> None:  # type: ignore[no-untyped-def]
    assert response.headers["cache-control"] == "no-store"
    assert response.headers["pragma"] == "no-cache"


async def test_a_session_start_is_not_cached(gateway: Gateway) -> None:
    """The participant token of `POST /api/session/start` comes with no-store and no-cache."""
    await gateway.register_agent()
    response = await gateway.start()
    assert response.status_code == 200, response.text
    assert_not_cached(response)


async def test_a_livekit_format_token_is_not_cached(gateway: Gateway) -> None:
    """The participant token of `POST /api/livekit/token` comes with no-store and no-cache."""
    await gateway.register_agent()
    response = await gateway.client.post(
        "/api/livekit/token",
        headers={"Authorization": f"Bearer {gateway.entra.mint_user_token()}"},
        json={"room_config": {"agents": [{"agent_name": AGENT_ID}]}},
    )
    assert response.status_code == 201, response.text
    assert_not_cached(response)


async def test_an_agent_registration_is_not_cached(gateway: Gateway) -> None:
    """The agent token of `POST /api/agent/register` comes with no-store and no-cache."""
    response = await gateway.client.post(
        "/api/agent/register", headers={"Authorization": f"Bearer {gateway.agent_token()}"}, json={}
    )
    assert response.status_code == 200, response.text
    assert_not_cached(response)


async def test_the_document_names_the_headers(gateway: Gateway) -> None:
    """The OpenAPI document tells clients these three answers carry Pragma (Litestar documents it)."""
    paths = (await gateway.client.get("/schema/openapi.json")).json()["paths"]
    for path, status in (
        ("/api/session/start", "200"),
        ("/api/livekit/token", "201"),
        ("/api/agent/register", "200"),
    ):
        assert "Pragma" in paths[path]["post"]["responses"][status]["headers"], path
