"""Retention: `lkps prune` deletes rows older than the period, in batches, and keeps everything else."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, insert, select
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.cli import main
from gateway.persistence.db import create_engine
from gateway.persistence.retention import prune
from gateway.persistence.tables import (
    admin_actions,
    agent_registrations,
    agent_revocations,
    session_events,
    sessions,
    worker_connections,
    worker_jobs,
    worker_security_events,
)
from lkps.commands import ExitCode
from tests.support.entra import SERVICE_CLIENT_ID, SERVICE_OID, TENANT_ID
from tests.support.sessions import AGENT, insert_sessions, session_row

pytestmark = pytest.mark.anyio
NOW = datetime.now(UTC)
OLD = NOW - timedelta(days=120)
RECENT = NOW - timedelta(days=10)
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(database_url, pool_size=2)
    yield engine
    await engine.dispose()


async def seed(engine: AsyncEngine, old: int = 3) -> None:
    """`old` rows older than 90 days in every pruned table, and one recent row in each."""
    await insert_sessions(
        engine, *(session_row(f"old-{n}", OLD) for n in range(old)), session_row("recent", RECENT)
    )
    async with engine.begin() as conn:
        for n, at in enumerate([OLD] * old + [RECENT]):
            await conn.execute(
                insert(session_events).values(
                    id=f"EV_{n}",
                    room_name="r",
                    event="room_started",
                    occurred_at=at,
                    received_at=at,
                    details="{}",
                )
            )
            await conn.execute(
                insert(admin_actions).values(
                    id=str(uuid.uuid4()),
                    actor_tenant_id=TENANT_ID,
                    actor_object_id=SERVICE_OID,
                    actor_client_app_id=SERVICE_CLIENT_ID,
                    action="list_agents",
                    target="agents",
                    at=at,
                    request_id="req",
                )
            )
            await conn.execute(
                insert(agent_registrations).values(
                    id=str(uuid.uuid4()),
                    agent_app_id=AGENT,
                    tenant_id=TENANT_ID,
                    requester_object_id=SERVICE_OID,
                    issued_at=at - timedelta(hours=1),
                    expires_at=at,
                    enforce_client_authz=True,
                    request_id="req",
                )
            )
            connection_id = str(uuid.uuid4())
            await conn.execute(
                insert(worker_connections).values(
                    id=connection_id,
                    agent_app_id=AGENT,
                    worker_key_id="lkw_test",
                    replica="test",
                    connected_at=at,
                )
            )
            await conn.execute(
                insert(worker_jobs).values(
                    id=f"AJ_{n}",
                    connection_id=connection_id,
                    agent_app_id=AGENT,
                    room_name="r",
                    assigned_at=at,
                )
            )
            await conn.execute(
                insert(worker_security_events).values(
                    id=str(uuid.uuid4()),
                    occurred_at=at,
                    agent_app_id=AGENT,
                    worker_key_id="lkw_test",
                    kind="simulate_job",
                )
            )
        # An unexpired registration issued long ago must survive, and so must every revocation.
        await conn.execute(
            insert(agent_registrations).values(
                id=str(uuid.uuid4()),
                agent_app_id=AGENT,
                tenant_id=TENANT_ID,
                requester_object_id=SERVICE_OID,
                issued_at=OLD,
                expires_at=NOW + timedelta(hours=1),
                enforce_client_authz=True,
                request_id="req",
            )
        )
        await conn.execute(
            insert(agent_revocations).values(
                agent_app_id=AGENT,
                revoked_at=OLD,
                revoked_by_object_id=SERVICE_OID,
                revoked_by_client_app_id=SERVICE_CLIENT_ID,
            )
        )


async def counts(engine: AsyncEngine) -> dict[str, int]:
    async with engine.connect() as conn:
        return {
            table.name: int(await conn.scalar(select(func.count()).select_from(table)) or 0)
            for table in (sessions, session_events, agent_registrations, admin_actions, agent_revocations)
        }


async def test_rows_older_than_the_period_are_deleted_and_the_rest_kept(engine: AsyncEngine) -> None:
    """Old sessions, events, expired registrations and admin actions go; recent rows and revocations stay."""
    await seed(engine)
    deleted = await prune(engine, NOW - timedelta(days=90), batch_size=1000)
    assert deleted == {
        "sessions": 3,
        "session_events": 3,
        "agent_registrations": 3,
        "admin_actions": 3,
        "worker_connections": 3,
        "worker_jobs": 3,
        "worker_security_events": 3,
    }
    assert await counts(engine) == {
        "sessions": 1,
        "session_events": 1,
        "agent_registrations": 2,  # the recent one and the long-lived unexpired one
        "admin_actions": 1,
        "agent_revocations": 1,
    }


async def test_batches_smaller_than_the_backlog_delete_it_all(engine: AsyncEngine) -> None:
    """With batch size 2, five old rows per table are deleted over three commits, counted exactly."""
    await seed(engine, old=5)
    deleted = await prune(engine, NOW - timedelta(days=90), batch_size=2)
    assert set(deleted.values()) == {5}
    assert (await counts(engine))["sessions"] == 1


async def test_a_dry_run_counts_without_deleting(engine: AsyncEngine) -> None:
    """--dry-run reports what would go and leaves every row in place."""
    await seed(engine)
    before = await counts(engine)
    assert set((await prune(engine, NOW - timedelta(days=90), 1000, dry_run=True)).values()) == {3}
    assert await counts(engine) == before


async def test_nothing_to_prune_is_zero_everywhere(engine: AsyncEngine) -> None:
    """An empty database prunes to zero counts without error."""
    assert set((await prune(engine, NOW, 10)).values()) == {0}


def lkps(*args: str, **environment: str) -> subprocess.CompletedProcess[str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("LKPS_")}
    return subprocess.run(
        [sys.executable, "-m", "gateway.cli", *args],
        env={**env, **environment},
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.mark.slow
async def test_the_command_prunes_with_only_the_database_url(engine: AsyncEngine, database_url: str) -> None:
    """`lkps prune --batch-size 2` (as the CronJob runs it) needs only LKPS_DATABASE_URL and prints JSON."""
    await seed(engine)
    result = lkps("prune", "--batch-size", "2", LKPS_DATABASE_URL=database_url, LKPS_RETENTION_DAYS="30")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["dry_run"] is False
    assert report["deleted"] == {
        "sessions": 3,
        "session_events": 3,
        "agent_registrations": 3,
        "admin_actions": 3,
        "worker_connections": 3,
        "worker_jobs": 3,
        "worker_security_events": 3,
    }
    assert datetime.fromisoformat(report["cutoff"]) < NOW - timedelta(days=29)
    assert (await counts(engine))["sessions"] == 1


@pytest.mark.parametrize(
    "argv", [["--days", "0"], ["--days", "3651"], ["--batch-size", "0"], ["--days", "x"]]
)
def test_the_command_refuses_bad_arguments(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    """An out-of-range --days or --batch-size is a usage error (status 64) before the database is touched."""
    with pytest.raises(SystemExit) as exited:
        main(["prune", *argv])
    assert exited.value.code == ExitCode.USAGE
    error = capsys.readouterr().err
    assert f"argument {argv[0]}: " in error
    assert "_days" not in error  # the message names the flag, not the parser's function
