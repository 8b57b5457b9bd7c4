"""Durability: `lkps serve` killed with SIGKILL in the middle of load loses no session it acknowledged and
records none it refused.

A session start whose response died with the server may or may not have its row (the commit can land
just before the kill); so the exact claim is: every 200 has exactly one row (with the room it was told),
and every row belongs to a request that was answered 200 or got no answer at all. Each request is sent by
a user of its own, so its row is found by the user id that begins the room name (lkps mints its request
ids itself, so an unanswered request's id is unknown to the client).
"""

from __future__ import annotations

import asyncio
import random
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from bench.harness import Deployment, Server, session_rows
from tests.support.db import POSTGRES_SERVER

pytestmark = pytest.mark.slow

CONNECTIONS = 16


@dataclass
class Outcomes:
    ok: dict[str, str] = field(default_factory=dict)  # user id -> the room name it was given
    refused: dict[str, int] = field(default_factory=dict)  # user id -> error status
    unanswered: set[str] = field(default_factory=set)  # user ids


def user_of(room: str) -> str:
    """The user id a room name begins with (the users here have no hyphen in theirs)."""
    return room.split("-", 1)[0]


async def load_until_killed(deployment: Deployment, server: Server, outcomes: Outcomes) -> None:
    """Session starts from CONNECTIONS clients (a tenth with a bad token, a tenth for an unknown agent);
    once enough were answered, the server is killed while requests are in flight."""
    stop = asyncio.Event()

    async def client() -> None:
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
            while not stop.is_set():
                user = f"D{uuid.uuid4().hex[:12].upper()}"  # the dev issuer's cwid: the user id
                roll = random.random()
                token = "not-a-token" if roll < 0.1 else deployment.user_token(user.lower())
                agent = str(uuid.uuid4()) if 0.1 <= roll < 0.2 else deployment.agent
                try:
                    response = await http.post(
                        "/api/session/start",
                        json={"agent_entra_app_id": agent},
                        headers={"Authorization": f"Bearer {token}"},
                    )
                except httpx.HTTPError:
                    outcomes.unanswered.add(user)
                    continue
                if response.status_code == 200:
                    outcomes.ok[user] = response.json()["room_name"]
                else:
                    outcomes.refused[user] = response.status_code

    workers = [asyncio.create_task(client()) for _ in range(CONNECTIONS)]
    for _ in range(200):
        if len(outcomes.ok) >= 300:
            break
        await asyncio.sleep(0.05)
    server.kill()
    stop.set()
    await asyncio.gather(*workers)


def test_sigkill_mid_load_loses_no_acknowledged_session_and_records_no_refused_one(tmp_path: Path) -> None:
    """After a SIGKILL of the whole server process group under load and a restart, every 200 has exactly
    one row with its room, no refused request has one, and the restarted server serves again."""
    db = "sqlite" if POSTGRES_SERVER is None else "postgres"
    # The rate limits would turn most of this burst into 429s; durability is the subject here.
    no_limit = {"LKPS_RATE_LIMIT_PER_MINUTE": "0", "LKPS_USER_RATE_LIMIT_PER_MINUTE": "0"}
    with Deployment.create(tmp_path, db, POSTGRES_SERVER or "", extra_env=no_limit) as deployment:
        outcomes = Outcomes()
        with deployment.server() as server:
            asyncio.run(load_until_killed(deployment, server, outcomes))
        assert len(outcomes.ok) >= 100, "the kill came before the load was under way"
        assert outcomes.refused, "no request was refused: the drill proves nothing about refusals"
        assert outcomes.unanswered, "no request was in flight at the kill"
        assert set(outcomes.refused.values()) <= {401, 404}

        with deployment.server() as restarted:
            rows = asyncio.run(session_rows(deployment.database_url))
            counts = Counter(user_of(room) for _, room in rows)
            rooms = {user_of(room): room for _, room in rows}
            assert {user: counts[user] for user in outcomes.ok} == dict.fromkeys(outcomes.ok, 1)
            assert {user: rooms[user] for user in outcomes.ok} == outcomes.ok
            strays = set(counts) - set(outcomes.ok) - outcomes.unanswered
            assert strays == set(), f"rows for requests that were refused or never sent: {sorted(strays)[:5]}"
            assert not set(counts) & set(outcomes.refused)
            committed_unanswered = len(set(counts) & outcomes.unanswered)
            print(  # noqa: T201 - the drill's figures, for docs/security/hardening.md (pytest -s)
                f"durability ({db}): {len(outcomes.ok)} answered 200, {len(outcomes.refused)} refused, "
                f"{len(outcomes.unanswered)} unanswered at the kill ({committed_unanswered} of them committed)"
            )

            after = httpx.post(
                f"{restarted.url}/api/session/start",
                json={"agent_entra_app_id": deployment.agent},
                headers={"Authorization": f"Bearer {deployment.user_token('after-restart')}"},
                timeout=30,
            )
            assert after.status_code == 200, after.text
