"""The API reference: the committed OpenAPI document is the one the app serves, and every operation is on
the page."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from docsite import openapi
from docsite.hooks import expand
from tests.gateway.conftest import Gateway, running_gateway

pytestmark = pytest.mark.slow


@pytest.fixture
async def gateway(database_url: str) -> AsyncIterator[Gateway]:
    async for running in running_gateway(database_url):
        yield running


def test_the_committed_document_is_the_served_one() -> None:
    """docs/reference/openapi.json equals the app's document (run `scripts/docs openapi` after a route change)."""
    assert openapi.committed() == openapi.served_document(), "run scripts/docs openapi"


@pytest.mark.anyio
async def test_the_document_is_the_one_a_running_app_serves(gateway: Gateway) -> None:
    """The document built for the docs equals what a configured, running app answers at /schema/openapi.json."""
    served = (await gateway.client.get("/schema/openapi.json")).json()
    assert served == openapi.served_document()


def test_every_operation_and_schema_is_rendered() -> None:
    """The page has a section for each path and method (with the authorization it needs), and for each
    named schema, linked from its uses."""
    document = openapi.committed()
    page = expand("<!-- generated: openapi -->")
    for path, item in document["paths"].items():
        for method in item.keys() & set(openapi.METHODS):
            assert f"### `{method.upper()} {path}`" in page
    for name in document["components"]["schemas"]:
        assert f"### {name}\n" in page
    assert "[SessionStartRequest](#sessionstartrequest)" in page
    health = page.split("### `GET /api/health`", 1)[1].split("### ", 1)[0]
    assert "Authorization: none." in health
    start = page.split("### `POST /api/session/start`", 1)[1].split("### ", 1)[0]
    assert "Authorization: An Entra ID access token" in start
