"""The app as built from settings honours each setting and promise the security review found untested:
the Redis URL reaches the rate limiter, the agent cache lasts as configured, a token is never handed out
without its session row (on SQLite too), and a 401 never echoes what the token said."""

from __future__ import annotations

import os
import uuid
from typing import Any

import pytest
from sqlalchemy import text, update

from gateway.persistence.tables import agent_registrations
from tests.gateway.conftest import AGENT_ID, Gateway, running_gateway
from tests.gateway.test_session_start import assert_error
from tests.support.entra import OTHER_API_APP_ID, OTHER_TENANT_ID, TENANT_ID

pytestmark = pytest.mark.anyio
REDIS_URL = os.environ.get("LKPS_TEST_REDIS_URL")


@pytest.mark.skipif(REDIS_URL is None, reason="needs LKPS_TEST_REDIS_URL")
async def test_two_apps_built_with_one_redis_url_share_a_users_budget(database_url: str) -> None:
    """LKPS_REDIS_URL reaches the limiter: what one app instance spent of a user's budget, the other
    instance sees (without Redis each would allow the burst on its own)."""
    limits = {"redis_url": REDIS_URL, "user_rate_limit_per_minute": 60, "user_rate_limit_burst": 1}
    async for first in running_gateway(database_url, **limits):
        async for second in running_gateway(database_url, **limits):
            await first.register_agent()
            token = first.entra.mint_user_token(oid=str(uuid.uuid4()))  # a fresh budget in the shared Redis
            assert [(await first.start(token)).status_code for _ in range(2)] == [200, 200]
            assert_error(await second.start(token), 429, "rate_limited")


async def _revoke_elsewhere(gateway: Gateway) -> None:
    """Revoke the agent's registrations in the database, as another replica's admin call would."""
    async with gateway.db.begin() as conn:
        await conn.execute(update(agent_registrations).values(revoked=True))


@pytest.mark.parametrize(("ttl", "still_served_after"), [(30.0, 10.0), (0.0, None)])
async def test_the_agent_cache_lasts_as_configured(
    database_url: str, ttl: float, still_served_after: float | None
) -> None:
    """LKPS_AGENT_CACHE_TTL_SECONDS decides how long a replica keeps serving an agent revoked elsewhere:
    30 s keeps it for 10 s and drops it after 31 s; 0 drops it at once."""
    async for gateway in running_gateway(database_url, agent_cache_ttl_seconds=ttl):
        await gateway.register_agent()
        assert (await gateway.start()).status_code == 200  # warms the cache
        await _revoke_elsewhere(gateway)
        if still_served_after is not None:
            gateway.clock.advance(still_served_after)
            assert (await gateway.start()).status_code == 200
            gateway.clock.advance(ttl + 1 - still_served_after)
        assert_error(await gateway.start(), 404, "agent_not_connected")


_REFUSE_SQLITE = (
    "CREATE TRIGGER refuse_sessions BEFORE INSERT ON sessions BEGIN SELECT RAISE(ABORT, 'no'); END"
)
_REFUSE_POSTGRES = (
    "CREATE FUNCTION refuse_sessions() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION 'no'; END $$",
    "CREATE TRIGGER refuse_sessions BEFORE INSERT ON sessions FOR EACH ROW EXECUTE FUNCTION refuse_sessions()",
)


async def _refuse_session_rows(gateway: Gateway, *, refuse: bool) -> None:
    postgres = gateway.settings.is_postgres
    async with gateway.db.begin() as conn:
        if refuse:
            for statement in _REFUSE_POSTGRES if postgres else (_REFUSE_SQLITE,):
                await conn.execute(text(statement))
        else:
            await conn.execute(text("DROP TRIGGER refuse_sessions" + (" ON sessions" if postgres else "")))


async def test_a_failed_session_row_write_never_yields_a_token(gateway: Gateway) -> None:
    """When the database refuses the session row, both session endpoints answer 503 without any token
    and nothing is written; once it accepts rows again, sessions start."""
    await gateway.register_agent()
    await _refuse_session_rows(gateway, refuse=True)
    user = gateway.entra.mint_user_token()
    refused = [
        await gateway.start(user),
        await gateway.client.post(
            "/api/livekit/token",
            headers={"Authorization": f"Bearer {user}"},
            json={"room_config": {"agents": [{"agent_name": AGENT_ID}]}},
        ),
    ]
    for response in refused:
        body = assert_error(response, 503, "database_unavailable")
        assert "no token was issued" in body["message"]
        assert "eyJ" not in response.text
    assert await gateway.session_rows() == 0
    await _refuse_session_rows(gateway, refuse=False)
    assert (await gateway.start(user)).status_code == 200
    assert await gateway.session_rows() == 1


MARKED: dict[str, Any] = {
    "name": "Zed Markerperson",
    "preferred_username": "zed.marker@contoso.example",
    "cwid": "CWIDMARK42",
    "oid": "5e4d3c2b-1a09-4f8e-9d7c-6b5a4f3e2d1c",
    "sub": "SubjectMarkerValue0123456789abcdefghijk",
    "uti": "UtiMarkerValue0123456",
}


@pytest.mark.parametrize(
    "claims",
    [
        {"exp": -3600, "iat": -7200, "nbf": -7200},
        {"nbf": 3600},
        {"iat": 3600},
        {"aud": OTHER_API_APP_ID},
        {"tid": OTHER_TENANT_ID},
        {"iss": f"https://login.fake.test/{TENANT_ID}/v1.0"},
        {"exp": "soon"},
        {"idtyp": "app"},
    ],
    ids=[
        "expired",
        "not-yet-valid",
        "issued-in-the-future",
        "audience",
        "tenant",
        "issuer",
        "exp-type",
        "kind",
    ],
)
async def test_a_401_never_echoes_the_tokens_claims(gateway: Gateway, claims: dict[str, Any]) -> None:
    """Whatever the reason a token is refused, neither the body nor any header of the 401 repeats a value
    the token carried (names, ids, subject, token id)."""
    now = int(gateway.clock.now())
    shifted = {
        name: now + value if name in {"exp", "nbf", "iat"} and isinstance(value, int) else value
        for name, value in claims.items()
    }
    token = gateway.entra.mint_user_token(**MARKED, **shifted)
    response = await gateway.start(token)
    assert response.status_code == 401, response.text
    answer = response.text + " ".join(f"{k}: {v}" for k, v in response.headers.items())
    assert [
        name for name, value in {**MARKED, **claims}.items() if str(value) in answer and len(str(value)) > 8
    ] == []
