"""`GET /api/session/{room_name}` for the session's owner, session start refused when no worker is
connected, and revocation with `end_sessions`."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import datetime

import pytest

from authz.clock import utc_now
from gateway.persistence.lifecycle import LifecycleEvent, SessionLifecycle
from tests.gateway.conftest import AGENT_ID, Gateway, running_gateway
from tests.gateway.test_session_start import assert_error
from tests.relay.test_real_livekit import wait_for
from tests.support.supervision import FakePresence, FakeRooms

pytestmark = pytest.mark.anyio
OTHER_USER_OID = "0a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d"
ADMIN_ROLE = "Lkps.Admin"
ADMIN_APP = "9e8d7c6b-5a49-4382-9170-6f5e4d3c2b1a"
ADMIN_OID = "1f2e3d4c-5b6a-4798-8a7b-6c5d4e3f2a1b"


@pytest.fixture
async def rooms() -> FakeRooms:
    return FakeRooms()


@pytest.fixture
async def gateway(database_url: str, rooms: FakeRooms) -> AsyncIterator[Gateway]:
    async for running in running_gateway(
        database_url, rooms=rooms, admin_roles=(ADMIN_ROLE,), admin_client_app_ids=(ADMIN_APP,)
    ):
        await running.register_agent()
        yield running


async def status(gateway: Gateway, room: str, token: str | None = None):  # type: ignore[no-untyped-def]
    token = token or gateway.entra.mint_user_token()
    return await gateway.client.get(f"/api/session/{room}", headers={"Authorization": f"Bearer {token}"})


async def start(gateway: Gateway) -> str:
    response = await gateway.start()
    assert response.status_code == 200, response.text
    return str(response.json()["room_name"])


def lifecycle(gateway: Gateway) -> SessionLifecycle:
    """The lifecycle on the test's own engine (the app's runs on the test client's loop)."""
    return SessionLifecycle(gateway.db, gateway.clock)


async def joined(gateway: Gateway, room: str, identity: str, kind: str) -> None:
    now = utc_now(gateway.clock)
    await lifecycle(gateway).record(
        LifecycleEvent(f"EV_{identity}", "participant_joined", room, identity, kind, now, now, {})
    )


async def test_the_owner_sees_the_agent_waiting_then_joined(gateway: Gateway) -> None:
    """A new session's agent is waiting with one dispatch (the room's own); after its join it is joined,
    with the join time."""
    room = await start(gateway)
    response = await status(gateway, room)
    assert response.status_code == 200, response.text
    assert response.headers["cache-control"] == "no-store"
    body = response.json()
    assert (body["room_name"], body["status"], body["ended_by"]) == (room, "issued", None)
    assert body["agent"] == {"state": "waiting", "dispatch_attempts": 1, "joined_at": None}
    session = await lifecycle(gateway).session(room)
    assert session is not None
    await joined(gateway, room, session.participant_identity, "STANDARD")
    await joined(gateway, room, "agent-1", "AGENT")
    body = (await status(gateway, room)).json()
    assert body["status"] == "active"
    assert body["agent"]["state"] == "joined"
    assert datetime.fromisoformat(body["agent"]["joined_at"]) == utc_now(gateway.clock)


async def test_only_the_owner_may_read_it(gateway: Gateway) -> None:
    """Another user is refused with 403; an unknown room is 404."""
    room = await start(gateway)
    other = gateway.entra.mint_user_token(oid=OTHER_USER_OID)
    assert_error(
        await status(gateway, room, other), 403, "forbidden", "This session belongs to another caller"
    )
    unknown = "ADA0001-" + AGENT_ID + "-1-abcd"
    assert_error(await status(gateway, unknown), 404, "session_not_found")


async def test_no_connected_worker_means_agent_not_connected(database_url: str) -> None:
    """A registered agent with no worker connected: 404 agent_not_connected with the documented message,
    and no session row."""
    async for gateway in running_gateway(database_url, presence=FakePresence(set())):
        await gateway.register_agent()
        assert_error(
            await gateway.start(),
            404,
            "agent_not_connected",
            f"Agent with app ID '{AGENT_ID}' is not connected",
        )
        assert await gateway.session_rows() == 0


async def test_revoking_with_end_sessions_ends_every_open_session(gateway: Gateway, rooms: FakeRooms) -> None:
    """Without `end_sessions` the agent's sessions are left as they are; with it, the answer says how many
    are being ended, and within 5 s each one's room is deleted and the session ended by `revoked`."""
    rooms_started = [await start(gateway), await start(gateway)]
    admin = gateway.entra.mint_app_token(azp=ADMIN_APP, oid=ADMIN_OID, sub=ADMIN_OID, roles=[ADMIN_ROLE])
    response = await gateway.client.post(
        f"/api/admin/agents/{AGENT_ID}/revoke",
        headers={"Authorization": f"Bearer {admin}"},
        json={"reason": "compromised", "end_sessions": False},
    )
    assert response.status_code == 200, response.text
    assert response.json()["sessions_ending"] == 0
    await asyncio.sleep(1.5)  # more than a supervisor tick
    assert rooms.deleted == []
    response = await gateway.client.post(
        f"/api/admin/agents/{AGENT_ID}/revoke",
        headers={"Authorization": f"Bearer {admin}"},
        json={"end_sessions": True},
    )
    assert response.status_code == 200, response.text
    assert response.json()["sessions_ending"] == 2
    await wait_for(lambda: sorted(rooms.deleted) == sorted(rooms_started), 5, "both rooms deleted")
    for room in rooms_started:
        session = await lifecycle(gateway).session(room)
        assert session is not None
        assert (session.status, session.ended_by) == ("ended", "revoked")
