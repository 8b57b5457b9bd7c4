"""Fault drills for Entra's signing keys, through the HTTP API: the JWKS endpoint down at start and after
start, a signing-key rotation, and a flood of unknown key ids. The cache itself is unit-tested in
tests/authz/test_jwks.py; these drills prove what a caller of lkps sees while it happens."""

from __future__ import annotations

import re
from typing import Any

import orjson
import pytest
from structlog.testing import capture_logs

from tests.authz.test_jwks import random_kid
from tests.gateway.conftest import AGENT_ID, Gateway, running_gateway
from tests.gateway.test_session_start import assert_error
from tests.support.asgi import RawRequest, all_at_once
from tests.support.attacks import bearer
from tests.support.entra import FakeEntra, FakeResponse, rsa_key

pytestmark = pytest.mark.anyio

TTL = 600
COOLDOWN = 60
MAX_STALE = 1800  # within the agent registration's hour, so the drill needs no re-registration
KEYS: dict[str, Any] = {
    "entra_jwks_ttl_seconds": TTL,
    "entra_jwks_refresh_cooldown_seconds": COOLDOWN,
    "entra_jwks_max_stale_seconds": MAX_STALE,
}
OUTAGE = FakeResponse.json(503, {"error": "temporarily_unavailable"})
BODY = orjson.dumps({"agent_entra_app_id": AGENT_ID})


def jwks_down(entra: FakeEntra) -> None:
    entra.override("jwks", OUTAGE)


async def readiness(gateway: Gateway) -> tuple[int, str]:
    response = await gateway.client.get("/api/health/ready")
    return response.status_code, response.json()["checks"]["signing_keys"]


def assert_keys_unavailable(response) -> None:  # type: ignore[no-untyped-def]
    """503 service_unavailable with Retry-After: lkps cannot check tokens, which is not the caller's fault."""
    body = assert_error(response, 503, "service_unavailable")
    assert "signing keys" in body["message"]
    assert int(response.headers["retry-after"]) >= 1
    assert "www-authenticate" not in response.headers


async def test_jwks_down_at_start_leaves_the_replica_unready_until_the_keys_load(database_url: str) -> None:
    """With the JWKS endpoint down at start the service stays alive but unready, logs why (naming the
    endpoint and status), answers token-bearing requests with 503 (not 401), and becomes ready by itself
    once the endpoint answers again."""
    with capture_logs() as logs:
        async for gateway in running_gateway(database_url, before_start=jwks_down, **KEYS):
            assert await readiness(gateway) == (503, "unavailable")
            assert (await gateway.client.get("/api/health/live")).status_code == 200
            assert_keys_unavailable(await gateway.start())
            agent = await gateway.client.post(
                "/api/agent/register", headers={"Authorization": f"Bearer {gateway.agent_token()}"}, json={}
            )
            assert_keys_unavailable(agent)
            assert await gateway.session_rows() == 0

            gateway.entra.override("jwks", None)
            gateway.clock.advance(COOLDOWN)  # the next request may retry the load
            await gateway.register_agent()
            assert (await gateway.start()).status_code == 200
            assert await readiness(gateway) == (200, "ok")

    started = [entry for entry in logs if entry["event"] == "signing_keys_unavailable_at_start"]
    assert len(started) == 1
    assert started[0]["log_level"] == "warning"
    assert gateway.entra.discovery_url_v2 in started[0]["error"]
    assert re.search(r"discovery/v2\.0/keys answered HTTP 503", started[0]["error"])


async def test_jwks_down_after_start_serves_the_last_good_keys_until_the_maximum_age(
    database_url: str,
) -> None:
    """Once started, a JWKS outage changes nothing for callers until the keys are older than the configured
    maximum age (one failed refresh per cooldown, logged); then token-bearing requests get 503 and the
    replica turns unready, and both recover by themselves when the endpoint is back."""
    async for gateway in running_gateway(database_url, **KEYS):
        await gateway.register_agent()
        known = gateway.entra.mint_user_token()
        assert (await gateway.start(known)).status_code == 200
        jwks_down(gateway.entra)
        fetches = gateway.entra.jwks_fetches

        gateway.clock.advance(TTL * 1.06)  # past the TTL and its jitter: the next request tries a refresh
        with capture_logs() as logs:
            for _ in range(5):
                assert (await gateway.start()).status_code == 200
        assert gateway.entra.jwks_fetches == fetches + 1  # the cooldown bounds the attempts
        failed = [entry for entry in logs if entry["event"] == "jwks_refresh_failed"]
        assert len(failed) == 1
        assert failed[0]["serving_stale"] is True
        assert "503" in failed[0]["error"]
        assert await readiness(gateway) == (200, "ok")

        gateway.clock.advance(MAX_STALE - TTL * 1.06 - 1)  # one second before the maximum age
        assert (await gateway.start()).status_code == 200
        gateway.clock.advance(2)
        rows = await gateway.session_rows()
        assert_keys_unavailable(await gateway.start())
        # A token verified while the keys were good is not waved through by the verified-token cache.
        assert_keys_unavailable(await gateway.start(known))
        assert await readiness(gateway) == (503, "unavailable")
        assert await gateway.session_rows() == rows

        gateway.entra.override("jwks", None)
        gateway.clock.advance(COOLDOWN)
        assert (await gateway.start()).status_code == 200
        assert await readiness(gateway) == (200, "ok")


async def test_key_rotation_accepts_the_new_kid_after_one_refresh_and_refuses_the_removed_one(
    database_url: str,
) -> None:
    """When Entra starts signing with a new key, its first token costs exactly one refresh and every later
    one none; once the old key is withdrawn (seen at the next refresh), tokens signed with it are refused
    with kid_unknown, including one that was verified and cached before."""
    async for gateway in running_gateway(database_url, **KEYS):
        entra = gateway.entra
        await gateway.register_agent()
        old_kid = entra.signing_kid
        old_token = entra.mint_user_token()
        assert (await gateway.start(old_token)).status_code == 200

        gateway.clock.advance(COOLDOWN)  # a rotation does not happen within a cooldown of start-up
        entra.add_key("rotated", sign=True)
        fetches = entra.jwks_fetches
        assert (await gateway.start()).status_code == 200
        assert entra.jwks_fetches == fetches + 1
        for _ in range(3):
            assert (await gateway.start()).status_code == 200
        assert entra.jwks_fetches == fetches + 1

        entra.remove_key(old_kid)
        gateway.clock.advance(TTL * 1.06)
        assert (await gateway.start()).status_code == 200  # this request's refresh drops the old key
        fetches = entra.jwks_fetches
        fresh_old = entra.mint(
            payload=entra.user_claims(), header=entra.header(kid=old_kid), key=rsa_key("primary")
        )
        for token in (old_token, fresh_old):
            response = await gateway.start(token)
            assert_error(response, 401, "invalid_token")
            assert 'error_description="kid_unknown"' in response.headers["www-authenticate"]
        assert entra.jwks_fetches == fetches  # within the cooldown of the last refresh: no fetch


async def test_unknown_kid_flood_makes_at_most_one_jwks_fetch_per_cooldown(database_url: str) -> None:
    """Hundreds of simultaneous tokens with random key ids are refused with kid_unknown while valid callers
    keep getting sessions, and lkps fetches the JWKS at most once per cooldown window for the whole flood."""
    async for gateway in running_gateway(database_url, **KEYS):
        entra = gateway.entra
        await gateway.register_agent()
        attacker = rsa_key("attacker")
        fetches = entra.jwks_fetches
        for window in range(2):
            gateway.clock.advance(COOLDOWN)
            forged = [
                entra.mint(payload=entra.user_claims(), header=entra.header(kid=random_kid()), key=attacker)
                for _ in range(150)
            ]
            tokens = [*forged, *(entra.mint_user_token() for _ in range(10))]
            responses = all_at_once(
                gateway.client.blocking_portal,
                gateway.app,
                [RawRequest("POST", "/api/session/start", bearer(token), BODY) for token in tokens],
            )
            refused, served = responses[:150], responses[150:]
            assert {r.status for r in refused} == {401}
            assert all('error_description="kid_unknown"' in r.headers["www-authenticate"] for r in refused)
            assert [r.status for r in served] == [200] * 10
            assert entra.jwks_fetches == fetches + window + 1
