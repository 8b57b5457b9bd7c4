"""A running gateway for end-to-end tests: the real app, a fake Entra tenant, a migrated database."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from config import Settings
from gateway.app import create_app
from gateway.persistence.db import create_engine
from gateway.persistence.tables import sessions
from gateway.services import Services, build_services
from tests.support.clock import FakeClock
from tests.support.entra import FakeEntra, make_settings
from tests.support.livekit import API_KEY, API_SECRET
from tests.support.supervision import FakeDispatcher, FakePresence

AGENT_ID = "5b7d9f1a-3c5e-4a7b-9d1f-2a4c6e8b0d2f"
AGENT_OID = "6c8e0a2b-4d6f-4b8c-8e2a-3b5d7f9a1c3e"
AGENT_ROLE = "Agent.Register"


@dataclass
class Gateway:
    client: AsyncTestClient[Litestar]
    app: Litestar
    entra: FakeEntra
    clock: FakeClock
    services: Services
    settings: Settings
    db: AsyncEngine  # the test's own engine: the app's runs on the test client's portal loop

    def agent_token(self, agent_id: str = AGENT_ID, **claims: Any) -> str:
        return self.entra.mint_app_token(
            **{"azp": agent_id, "oid": AGENT_OID, "sub": AGENT_OID, "roles": [AGENT_ROLE], **claims}
        )

    async def register_agent(self, agent_id: str = AGENT_ID, *, enforce: bool = False) -> dict[str, Any]:
        response = await self.client.post(
            "/api/agent/register",
            headers={"Authorization": f"Bearer {self.agent_token(agent_id)}"},
            json={"enforce_client_authz": enforce},
        )
        assert response.status_code == 200, response.text
        return response.json()  # type: ignore[no-any-return]

    async def start(self, token: str | None = None, body: Any = None, **headers: str) -> Any:
        if token is None:
            token = self.entra.mint_user_token()
        return await self.client.post(
            "/api/session/start",
            headers={"Authorization": f"Bearer {token}", **headers},
            json={"agent_entra_app_id": AGENT_ID} if body is None else body,
        )

    async def session_rows(self) -> int:
        async with self.db.connect() as conn:
            return int((await conn.execute(select(func.count()).select_from(sessions))).scalar_one())


async def running_gateway(
    database_url: str,
    *,
    authorizer: Any = None,
    rooms: Any = None,
    presence: Any = None,
    dispatcher: Any = None,
    before_start: Callable[[FakeEntra], None] | None = None,
    **overrides: Any,
) -> AsyncIterator[Gateway]:
    """Build and start a gateway; `before_start` may set up the fake tenant (e.g. make JWKS fail);
    `authorizer` and `rooms` replace the Graph pre-authorizer and LiveKit's RoomService client; `presence`
    what session start asks (default: every agent has a worker connected), `dispatcher` LiveKit's
    AgentDispatchService client (default: a recording fake)."""
    clock = FakeClock(time.time())  # real "now": minted LiveKit tokens are checked by real verifiers
    entra = FakeEntra(clock=clock)
    if before_start is not None:
        before_start(entra)
    settings = make_settings(
        database_url=database_url,
        agent_roles=(AGENT_ROLE,),
        livekit_api_key=API_KEY,
        livekit_api_secret=API_SECRET,
        **overrides,
    )
    services = build_services(
        settings,
        clock=clock,
        http=entra.client(),
        authorizer=authorizer,
        rooms=rooms,
        presence=presence or FakePresence(),
        dispatcher=dispatcher or FakeDispatcher(),
    )
    app = create_app(settings, services)
    db = create_engine(database_url, pool_size=2)
    async with AsyncTestClient(app) as client:
        yield Gateway(client, app, entra, clock, services, settings, db)
    await db.dispose()


@pytest.fixture
async def gateway(database_url: str) -> AsyncIterator[Gateway]:
    async for running in running_gateway(database_url):
        yield running
