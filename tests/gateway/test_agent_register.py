"""`POST /api/agent/register`: an agent's own app-only token buys worker credentials and a registration row."""

from __future__ import annotations

import pytest
from sqlalchemy import select, text

from gateway.persistence.tables import agent_registrations
from tests.gateway.conftest import AGENT_ID, AGENT_OID, Gateway, running_gateway
from tests.gateway.test_session_start import assert_error
from tests.support.entra import TENANT_ID
from tests.support.revocations import insert_revocation

pytestmark = pytest.mark.anyio


async def _register(gateway: Gateway, token: str, body: object = None, base: str = ""):  # type: ignore[no-untyped-def]
    """`base` (a scheme and host) sends the request to that host instead of the test client's default."""
    return await gateway.client.post(
        f"{base}/api/agent/register",
        headers={"Authorization": f"Bearer {token}"},
        json=body if body is not None else {},
    )


async def test_agent_gets_worker_credentials_named_after_its_app_id(gateway: Gateway) -> None:
    """The response holds the worker URL (lkps's relay), a worker key and secret, the expiry and agent name."""
    response = await _register(
        gateway, gateway.agent_token(), {"display_name": "Helpdesk", "agent_version": "2.1"}
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["worker_url"] == "wss://lkps.fake.test/worker"
    assert body["worker_api_key"].startswith("lkw_")
    assert body["worker_api_secret"] == gateway.services.credentials.secret(body["worker_api_key"])
    assert body["agent_name"] == AGENT_ID
    assert body["enforce_client_authz"] is True
    assert body["expires_at"] == int(gateway.clock.now()) + gateway.settings.agent_token_ttl_seconds


async def test_no_answer_carries_a_livekit_token(gateway: Gateway) -> None:
    """No value of the answer is a JWT, and the LiveKit secret appears nowhere in it."""
    response = await _register(gateway, gateway.agent_token())
    assert set(response.json()) == {
        "worker_url",
        "worker_api_key",
        "worker_api_secret",
        "expires_at",
        "agent_name",
        "registration_id",
        "enforce_client_authz",
    }
    for value in response.json().values():
        assert not (isinstance(value, str) and value.count(".") == 2 and value.startswith("eyJ"))
    assert gateway.settings.livekit_api_secret not in response.text


async def test_public_url_setting_names_the_worker_url(database_url: str) -> None:
    """With LKPS_PUBLIC_URL set, the worker URL is it (as wss) plus /worker, whatever the request's host."""
    async for gateway in running_gateway(database_url, public_url="https://lkps.example.com/base"):
        for base in ("", "http://127.0.0.1:8000"):
            body = (await _register(gateway, gateway.agent_token(), base=base)).json()
            assert body["worker_url"] == "wss://lkps.example.com/base/worker"


@pytest.mark.parametrize(
    ("base", "expected"),
    [
        ("http://127.0.0.1:8000", "ws://127.0.0.1:8000/worker"),
        ("http://localhost:8000", "ws://localhost:8000/worker"),
        ("https://127.0.0.2:8443", "wss://127.0.0.2:8443/worker"),
    ],
)
async def test_without_public_url_a_loopback_request_names_its_own_base_url(
    database_url: str, base: str, expected: str
) -> None:
    """Without LKPS_PUBLIC_URL, a registration sent to a loopback host (`lkps dev`) gets that base URL."""
    async for gateway in running_gateway(database_url, public_url=None):
        response = await _register(gateway, gateway.agent_token(), base=base)
        assert response.status_code == 200, response.text
        assert response.json()["worker_url"] == expected


@pytest.mark.parametrize(
    "base", ["http://testserver.local", "http://10.1.2.3:8000", "https://lkps.example.com"]
)
async def test_without_public_url_any_other_host_is_a_configuration_error(
    database_url: str, base: str
) -> None:
    """Without LKPS_PUBLIC_URL, a registration to a non-loopback host (a proxy's or a pod's address) answers
    500 `configuration_error` naming LKPS_PUBLIC_URL, and writes no registration."""
    async for gateway in running_gateway(database_url, public_url=None):
        response = await _register(gateway, gateway.agent_token(), base=base)
        body = assert_error(response, 500, "configuration_error")
        assert "LKPS_PUBLIC_URL" in body["message"]
        async with gateway.db.connect() as conn:
            assert (await conn.execute(select(agent_registrations))).first() is None


async def test_renewal_keeps_the_worker_credentials(gateway: Gateway) -> None:
    """A registration while one is in force hands back the same key and secret: the running worker keeps
    working without a restart."""
    first = (await _register(gateway, gateway.agent_token())).json()
    gateway.clock.advance(60)
    second = (await _register(gateway, gateway.agent_token())).json()
    assert second["registration_id"] != first["registration_id"]
    assert (second["worker_api_key"], second["worker_api_secret"]) == (
        first["worker_api_key"],
        first["worker_api_secret"],
    )
    assert second["expires_at"] == first["expires_at"] + 60


async def test_a_registration_after_expiry_gets_new_credentials(gateway: Gateway) -> None:
    """Once every registration carrying a key expired, the next registration gets a new key."""
    first = (await _register(gateway, gateway.agent_token())).json()
    gateway.clock.advance(gateway.settings.agent_token_ttl_seconds + 1)
    second = (await _register(gateway, gateway.agent_token())).json()
    assert second["worker_api_key"] != first["worker_api_key"]
    assert second["worker_api_secret"] != first["worker_api_secret"]


async def test_registration_is_audited(gateway: Gateway) -> None:
    """Each call writes a row with the requester, expiry, revocation status and enforcement flag."""
    body = (await _register(gateway, gateway.agent_token(), {"enforce_client_authz": False})).json()
    async with gateway.db.connect() as conn:
        row = (await conn.execute(select(agent_registrations))).one()
    assert row.id == body["registration_id"]
    assert row.agent_app_id == AGENT_ID
    assert row.tenant_id == TENANT_ID
    assert row.requester_object_id == AGENT_OID
    assert row.revoked is False
    assert row.enforce_client_authz is False
    assert int(row.expires_at.timestamp()) == body["expires_at"]


async def test_empty_body_means_enforcement_on(gateway: Gateway) -> None:
    """With no body, the agent registers with client authorization enforced (the secure default)."""
    response = await gateway.client.post(
        "/api/agent/register", headers={"Authorization": f"Bearer {gateway.agent_token()}"}
    )
    assert response.status_code == 200, response.text
    assert response.json()["enforce_client_authz"] is True


async def test_registration_makes_the_agent_reachable(gateway: Gateway) -> None:
    """Right after registering (no cache delay on this replica), session start finds the agent."""
    assert (await gateway.start()).status_code == 404
    await gateway.register_agent()
    assert (await gateway.start()).status_code == 200


async def test_a_revoked_agent_is_refused_before_any_registration_is_read(gateway: Gateway) -> None:
    """A revoked agent gets 403 agent_revoked from the revocation alone: with the registrations table out of
    reach (any read or write of it fails), the answer is still the refusal, not a database error."""
    async with gateway.db.begin() as conn:
        await insert_revocation(conn, AGENT_ID)
        await conn.execute(text("ALTER TABLE agent_registrations RENAME TO agent_registrations_away"))
    try:
        assert_error(await _register(gateway, gateway.agent_token()), 403, "agent_revoked")
    finally:  # the PostgreSQL test database is reused by the next test
        async with gateway.db.begin() as conn:
            await conn.execute(text("ALTER TABLE agent_registrations_away RENAME TO agent_registrations"))


async def test_user_token_cannot_register_an_agent(gateway: Gateway) -> None:
    """A delegated user token is refused: agents authenticate as themselves (client credentials)."""
    assert_error(await _register(gateway, gateway.entra.mint_user_token()), 403, "forbidden")


async def test_app_token_without_the_agent_role_is_refused(gateway: Gateway) -> None:
    """An app-only token without the configured agent role gets 403 and no registration row."""
    response = await _register(gateway, gateway.agent_token(roles=["Agent.Invoke"]))
    assert_error(response, 403, "forbidden")
    async with gateway.db.connect() as conn:
        assert (await conn.execute(select(agent_registrations))).first() is None


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"enforce_client_authz": "yes"}, '"enforce_client_authz" must be true or false'),
        ({"agent_name": "x"}, 'Unknown field "agent_name"'),
        ({"display_name": "x" * 129}, '"display_name": Expected str of length <= 128'),
    ],
)
async def test_invalid_body_is_a_400(gateway: Gateway, body: object, message: str) -> None:
    """Malformed registration bodies are refused with the field named, and nothing is recorded."""
    error = assert_error(await _register(gateway, gateway.agent_token(), body), 400, "invalid_request")
    assert error["message"].startswith(message)
