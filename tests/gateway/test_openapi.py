"""The generated OpenAPI document describes the real contract: bodies, responses and the error shape."""

from __future__ import annotations

import re

import pytest

from gateway.schemas import AgentRegisterRequest, SessionStartRequest
from tests.gateway.conftest import Gateway

pytestmark = pytest.mark.anyio


def _resolve(document: dict, schema: dict) -> dict:
    while "$ref" in schema:
        schema = document["components"]["schemas"][schema["$ref"].rsplit("/", 1)[-1]]
    return schema


async def test_request_bodies_document_exactly_the_accepted_fields(gateway: Gateway) -> None:
    """Each documented request body lists exactly the fields the handler accepts, and forbids others."""
    document = (await gateway.client.get("/schema/openapi.json")).json()
    for path, struct in (
        ("/api/session/start", SessionStartRequest),
        ("/api/agent/register", AgentRegisterRequest),
    ):
        operation = document["paths"][path]["post"]
        schema = _resolve(document, operation["requestBody"]["content"]["application/json"]["schema"])
        assert set(schema["properties"]) == set(struct.__struct_fields__), path
    start = _resolve(
        document,
        document["paths"]["/api/session/start"]["post"]["requestBody"]["content"]["application/json"][
            "schema"
        ],
    )
    assert start["required"] == ["agent_entra_app_id"]


async def test_responses_and_errors_are_documented(gateway: Gateway) -> None:
    """Session start documents its 200 body and every error status with the shared error shape."""
    document = (await gateway.client.get("/schema/openapi.json")).json()
    responses = document["paths"]["/api/session/start"]["post"]["responses"]
    assert set(responses) >= {"200", "400", "401", "403", "404", "429", "503"}
    ok = _resolve(document, responses["200"]["content"]["application/json"]["schema"])
    assert set(ok["properties"]) == {
        "room_name",
        "livekit_url",
        "participant_token",
        "participant_identity",
        "expires_at",
    }
    error = _resolve(document, responses["404"]["content"]["application/json"]["schema"])
    assert set(error["properties"]) == {"error", "message", "request_id"}
    assert document["components"]["securitySchemes"]["entra"]["scheme"] == "bearer"


async def test_probes_and_metrics_stay_out_of_the_api_document(gateway: Gateway) -> None:
    """Liveness, readiness and metrics are operational endpoints, not part of the documented API."""
    paths = (await gateway.client.get("/schema/openapi.json")).json()["paths"]
    assert "/api/health/live" not in paths
    assert "/api/health/ready" not in paths
    assert "/metrics" not in paths
    assert "/api/health" in paths


async def test_public_health_needs_no_credentials_and_documents_503(gateway: Gateway) -> None:
    """`/api/health` is documented as public, with its 503 body, unlike the bearer-protected API."""
    document = (await gateway.client.get("/schema/openapi.json")).json()
    operation = document["paths"]["/api/health"]["get"]
    assert operation["security"] == [{}]
    assert "503" in operation["responses"]
    assert document["paths"]["/api/session/start"]["post"].get("security", document["security"]) != []


async def test_the_documentation_ui_needs_nothing_but_lkps(gateway: Gateway) -> None:
    """`/schema` references only lkps's own paths (no CDN), and each asset it loads is served, non-empty."""
    page = await gateway.client.get("/schema")
    assert page.status_code == 200
    assert "SwaggerUIBundle" in page.text
    urls = re.findall(r"""(?:src|href)=["']([^"']+)["']""", page.text)
    assert len(urls) == 4, urls  # the bundle, its preset, the stylesheet, the icon
    assert [url for url in urls if not url.startswith("/schema/assets/")] == []
    for url in urls:
        asset = await gateway.client.get(url)
        assert asset.status_code == 200, url
        assert len(asset.content) > 500, url
        assert "max-age" in asset.headers["cache-control"]
    assert (await gateway.client.get("/schema/openapi.json")).status_code == 200
