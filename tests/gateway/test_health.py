"""Health endpoints: liveness without I/O, readiness from the database, the signing keys and draining."""

from __future__ import annotations

from importlib.metadata import version
from pathlib import Path

import pytest
from sqlalchemy import event

from gateway.persistence.db import create_engine
from gateway.persistence.migrate import upgrade
from tests.gateway.conftest import Gateway, running_gateway
from tests.support.db import unreachable

pytestmark = pytest.mark.anyio


async def test_live_answers_without_dependencies(gateway: Gateway) -> None:
    """Liveness is 200 with no database or Entra call."""
    response = await gateway.client.get("/api/health/live")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


async def test_ready_and_health_report_every_check(gateway: Gateway) -> None:
    """With keys loaded and the database answering, ready and health are 200 and list their checks."""
    for path in ("/api/health/ready", "/api/health"):
        response = await gateway.client.get(path)
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["status"] == "ok"
        assert body["checks"] == {"database": "ok", "signing_keys": "ok", "draining": "no"}


async def test_health_answers_name_no_version_or_environment(database_url: str) -> None:
    """The unauthenticated health answers carry only the status and the checks: no version, no environment."""
    async for gateway in running_gateway(database_url, environment="prod-eu-label"):
        for path in ("/api/health/ready", "/api/health"):
            response = await gateway.client.get(path)
            assert set(response.json()) == {"status", "checks"}
            assert "prod-eu-label" not in response.text
            assert version("lkps") not in response.text


async def test_the_database_check_is_cached_for_a_second(gateway: Gateway) -> None:
    """Within a second, readiness reuses its database answer (one check for many probes) even if the
    database changed; after a second it asks again. Draining is never cached."""
    # Counted by statement, not by connection: the replica's own background loops use the engine too.
    revision_reads: list[str] = []

    def count(_conn: object, _cursor: object, statement: str, *_: object) -> None:
        if statement.startswith("SELECT alembic_version.version_num"):
            revision_reads.append(statement)

    event.listen(gateway.services.engine.sync_engine, "before_cursor_execute", count)
    for path in ("/api/health", "/api/health/ready") * 10:
        assert (await gateway.client.get(path)).status_code == 200
    assert len(revision_reads) == 1
    async with gateway.db.begin() as conn:
        await conn.exec_driver_sql("UPDATE alembic_version SET version_num = '0001'")
    gateway.clock.advance(0.9)
    assert (await gateway.client.get("/api/health")).json()["checks"]["database"] == "ok"
    gateway.services.draining = True
    assert (await gateway.client.get("/api/health/ready")).json()["checks"]["draining"] == "yes"
    gateway.clock.advance(0.2)
    response = await gateway.client.get("/api/health")
    assert response.status_code == 503
    assert response.json()["checks"]["database"].startswith("not migrated (revision 0001")


async def test_not_ready_without_signing_keys(database_url: str) -> None:
    """If the JWKS could not be loaded at start, the replica is not ready (and says why) but stays alive."""
    async for gateway in running_gateway(
        database_url, before_start=lambda entra: entra.fail("jwks", times=10)
    ):
        ready = await gateway.client.get("/api/health/ready")
        assert ready.status_code == 503
        assert ready.json()["checks"]["signing_keys"] == "unavailable"
        assert (await gateway.client.get("/api/health/live")).status_code == 200


async def test_not_ready_when_the_database_is_unreachable(database_url: str) -> None:
    """A database that cannot be reached makes readiness 503 with the database check named."""
    async for gateway in running_gateway(unreachable(database_url)):
        response = await gateway.client.get("/api/health/ready")
        assert response.status_code == 503
        assert response.json()["checks"]["database"] == "unreachable"


async def test_not_ready_on_an_unmigrated_database(tmp_path: Path) -> None:
    """An empty database, and one at an older revision, make readiness and health 503 naming `lkps migrate`."""
    older = tmp_path / "older.db"
    engine = create_engine(f"sqlite+aiosqlite:///{older}", pool_size=1)
    await upgrade(engine, "0001")
    await engine.dispose()
    for path, revision in ((tmp_path / "empty.db", "none"), (older, "0001")):
        async for gateway in running_gateway(f"sqlite+aiosqlite:///{path}"):
            for endpoint in ("/api/health/ready", "/api/health"):
                response = await gateway.client.get(endpoint)
                assert response.status_code == 503
                database = response.json()["checks"]["database"]
                assert database.startswith(f"not migrated (revision {revision}, head ")
                assert database.endswith("run `lkps migrate`")


async def test_a_newer_schema_is_ready(database_url: str) -> None:
    """A revision this code does not know (a rolling upgrade migrated first) keeps the replica ready."""
    async for gateway in running_gateway(database_url):
        async with gateway.db.begin() as conn:
            await conn.exec_driver_sql("UPDATE alembic_version SET version_num = '9999'")
        response = await gateway.client.get("/api/health/ready")
        assert response.status_code == 200, response.text


async def test_metrics_are_exposed(gateway: Gateway) -> None:
    """`/metrics` serves Prometheus text including request and outcome counters."""
    await gateway.start()
    text = (await gateway.client.get("/metrics")).text
    assert "lkps_http_requests_total" in text
    assert "lkps_jwks_age_seconds " in text
    assert "lkps_jwks_refreshes 1.0" in text  # the load at start
    assert 'lkps_outcomes_total{outcome="agent_not_connected",route="/api/session/start"} 1.0' in text
