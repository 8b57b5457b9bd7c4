"""Every attack of entra-tokens.md §3, sent through the real app: the documented status, never a 500,
nothing minted, nothing written, and no key fetch for tokens refused on their form."""

from __future__ import annotations

from collections.abc import AsyncIterator

import orjson
import pytest

from tests.gateway.conftest import AGENT_ID, Gateway, running_gateway
from tests.support.asgi import raw_request
from tests.support.attacks import CASES, AttackCase

pytestmark = pytest.mark.anyio
BODY = orjson.dumps({"agent_entra_app_id": AGENT_ID})
# Refused before any key is looked up: these must not make lkps call the JWKS endpoint.
_FORM_REASONS = {
    "token_missing",
    "invalid_request",
    "token_too_large",
    "token_malformed",
    "alg_not_allowed",
    "header_param_forbidden",
    "kid_invalid",
}


@pytest.fixture(scope="module", params=["sqlite"])
def module_database(request: pytest.FixtureRequest, test_databases, tmp_path_factory) -> str:  # type: ignore[no-untyped-def]
    return test_databases.fresh(request.param, tmp_path_factory.mktemp("attacks"))


@pytest.fixture(scope="module")
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="module")
async def registered(module_database: str) -> AsyncIterator[Gateway]:
    """One gateway for the whole catalogue (startup dominates otherwise), with the agent registered."""
    async for gateway in running_gateway(module_database):
        await gateway.register_agent()
        yield gateway


@pytest.mark.parametrize("case", CASES, ids=lambda case: case.id)
async def test_attack_is_refused_as_documented(registered: Gateway, case: AttackCase) -> None:
    """The request gets the catalogue's status and error shape; refused requests write no session row."""
    gateway = registered
    headers = case.build(gateway.entra)
    query = case.query(gateway.entra) if case.query else None
    rows_before = await gateway.session_rows()
    fetches_before = gateway.entra.jwks_fetches
    response = await raw_request(gateway.app, "POST", "/api/session/start", headers, BODY, query)

    assert response.status == case.status, response.body
    if case.status == 200:
        assert "participant_token" in response.json()
        assert await gateway.session_rows() == rows_before + 1
        return
    body = response.json()
    assert set(body) == {"error", "message", "request_id"}
    assert "participant_token" not in response.body.decode()
    assert await gateway.session_rows() == rows_before
    if case.status == 401:
        assert response.headers["www-authenticate"].startswith('Bearer realm="lkps"')
        if case.reason not in {"token_missing", "invalid_request"}:
            assert f'error_description="{case.reason}"' in response.headers["www-authenticate"]
    if case.reason in _FORM_REASONS:
        assert gateway.entra.jwks_fetches == fetches_before
