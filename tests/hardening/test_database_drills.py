"""Fault drills for the database, through the HTTP API: PostgreSQL going away in the middle of a run (and
coming back), and the connection pool running dry. What must hold: a clear 503 with Retry-After and no
token, no row for a refused request and exactly one for an answered one, and recovery without a restart."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection

from gateway.persistence.tables import sessions
from tests.gateway.conftest import AGENT_ID, Gateway, running_gateway
from tests.gateway.test_session_start import assert_error
from tests.support.asgi import RawRequest, RawResponse, all_at_once
from tests.support.db import (
    POSTGRES_SERVER,
    TestDatabases,
    block_connections,
    dedicated_postgres,
    drop_postgres,
)
from tests.support.groups import needs

pytestmark = pytest.mark.anyio

# LKPS_DATABASE_POOL_TIMEOUT_SECONDS in these drills: short of the default 5 s, so the wait shows the
# setting is applied, and past readiness's own 2 s bound, so the two cannot be confused.
POOL_TIMEOUT = 3.5
needs_postgres = needs("postgres")


@pytest.fixture
def own_postgres() -> Iterator[str]:
    """A PostgreSQL database nobody else uses, since the drill takes it away."""
    url = dedicated_postgres()
    yield url
    drop_postgres(url)


@pytest.fixture
def drill_database(test_databases: TestDatabases, tmp_path: Path) -> Iterator[str]:
    """PostgreSQL (a database of its own) when configured, else SQLite: the drill runs either way."""
    if POSTGRES_SERVER is None:
        yield test_databases.fresh("sqlite", tmp_path)
        return
    url = dedicated_postgres()
    yield url
    drop_postgres(url)


async def start(gateway: Gateway) -> Any:
    return await gateway.start()


def request_id(response: Any) -> str:
    """lkps's id of the request (it mints every one), by which its session row is found."""
    return str(response.headers["x-request-id"])


def start_request(gateway: Gateway) -> RawRequest:
    """A session start, for `all_at_once`."""
    headers = [(b"authorization", f"Bearer {gateway.entra.mint_user_token()}".encode())]
    return RawRequest("POST", "/api/session/start", headers, orjson.dumps({"agent_entra_app_id": AGENT_ID}))


def assert_error_shape(response: RawResponse, status: int, code: str) -> dict[str, Any]:
    assert response.status == status, response.body
    body: dict[str, Any] = response.json()
    assert body == {"error": code, "message": body["message"], "request_id": response.headers["x-request-id"]}
    return body


async def rows_by_request_id(gateway: Gateway) -> dict[str, int]:
    """How many session rows each request id has (through a fresh pool: the old one saw the outage)."""
    await gateway.db.dispose()
    async with gateway.db.connect() as conn:
        ids = (await conn.execute(select(sessions.c.request_id))).scalars().all()
    return {request_id: ids.count(request_id) for request_id in set(ids)}


def assert_database_unavailable(response: Any) -> None:
    body = assert_error(response, 503, "database_unavailable")
    assert "retry" in body["message"]
    assert int(response.headers["retry-after"]) >= 1
    assert "participant_token" not in response.text


@needs_postgres
@pytest.mark.postgres
async def test_database_down_mid_run_is_503_without_partial_rows_and_recovers_by_itself(
    own_postgres: str,
) -> None:
    """PostgreSQL refusing connections and dropping the open ones mid-run: session starts and registrations
    get 503 database_unavailable promptly, readiness names the database, no refused request leaves a row;
    when the database is back the same process serves again, and every 200 has exactly one row."""
    async for gateway in running_gateway(own_postgres, database_pool_timeout_seconds=POOL_TIMEOUT):
        await gateway.register_agent()
        answered = {request_id(r): r for r in [await start(gateway) for _ in range(3)]}
        assert {r.status_code for r in answered.values()} == {200}

        await block_connections(own_postgres, blocked=True)
        began = time.monotonic()
        responses = all_at_once(
            gateway.client.blocking_portal, gateway.app, [start_request(gateway) for _ in range(8)]
        )
        refused = [request_id(response) for response in responses]
        assert time.monotonic() - began < POOL_TIMEOUT  # refused at once, not after a hang
        for response in responses:
            body = assert_error_shape(response, 503, "database_unavailable")
            assert "retry" in body["message"]
            assert "participant_token" not in response.body.decode()
        registration = await gateway.client.post(
            "/api/agent/register", headers={"Authorization": f"Bearer {gateway.agent_token()}"}, json={}
        )
        assert_database_unavailable(registration)
        ready = await gateway.client.get("/api/health/ready")
        assert ready.status_code == 503
        assert ready.json()["checks"]["database"] == "unreachable"

        await block_connections(own_postgres, blocked=False)
        after = {request_id(r): r for r in [await start(gateway) for _ in range(3)]}
        assert [r.status_code for r in after.values()] == [200, 200, 200], [r.text for r in after.values()]
        gateway.clock.advance(1)  # past the second readiness keeps its database check
        assert (await gateway.client.get("/api/health/ready")).status_code == 200

        rows = await rows_by_request_id(gateway)
        assert {request_id: rows.get(request_id, 0) for request_id in [*answered, *after]} == dict.fromkeys(
            [*answered, *after], 1
        )
        assert not set(refused) & set(rows)


async def hold_connections(gateway: Gateway, count: int) -> list[AsyncConnection]:
    """Check `count` connections out of the app's own pool, on the loop the app runs on."""

    async def checkout() -> list[AsyncConnection]:
        return [await gateway.services.engine.connect() for _ in range(count)]

    return gateway.client.blocking_portal.call(checkout)


def release(gateway: Gateway, held: list[AsyncConnection]) -> None:
    async def close() -> None:
        for conn in held:
            await conn.close()

    gateway.client.blocking_portal.call(close)


@pytest.fixture
async def small_pool(drill_database: str) -> AsyncIterator[Gateway]:
    async for gateway in running_gateway(
        drill_database,
        database_pool_size=2,
        database_pool_timeout_seconds=POOL_TIMEOUT,
        agent_cache_ttl_seconds=0,
    ):
        await gateway.register_agent()
        yield gateway


async def test_pool_exhaustion_waits_the_pool_timeout_then_answers_503_and_recovers(
    small_pool: Gateway,
) -> None:
    """With every pooled connection held, concurrent session starts wait at most the pool timeout and get
    503 database_unavailable (no row), readiness answers 503 within its own bound instead of hanging, and
    once connections are returned the next start succeeds."""
    gateway = small_pool
    warm = await start(gateway)
    assert warm.status_code == 200
    held = await hold_connections(gateway, 2)
    try:
        began = time.monotonic()
        ready = await gateway.client.get("/api/health/ready")
        assert ready.status_code == 503
        assert ready.json()["checks"]["database"] == "unreachable"
        assert time.monotonic() - began < 3  # the probe's own 2 s bound, not the pool's

        began = time.monotonic()
        responses = all_at_once(
            gateway.client.blocking_portal,
            gateway.app,
            [start_request(gateway) for _ in range(6)],
        )
        waited = time.monotonic() - began
        for response in responses:
            body = assert_error_shape(response, 503, "database_unavailable")
            assert "retry" in body["message"]
            assert int(response.headers["retry-after"]) >= 1
        assert POOL_TIMEOUT - 0.5 <= waited < POOL_TIMEOUT + 1.4  # together, once, not the default 5 s
    finally:
        release(gateway, held)
    recovered = await start(gateway)
    assert recovered.status_code == 200
    rows = await rows_by_request_id(gateway)
    assert rows == {request_id(warm): 1, request_id(recovered): 1}
