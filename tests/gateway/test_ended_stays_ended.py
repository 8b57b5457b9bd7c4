"""An ended session stays ended: LiveKit activity in its room afterwards gets the room deleted again and is
recorded on the session, where the admin API shows it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest
from sqlalchemy import select

from gateway.persistence.tables import sessions
from tests.gateway.conftest import Gateway, running_gateway
from tests.gateway.test_admin import ADMIN_APP, ADMIN_ROLE, Admin
from tests.gateway.test_session_start import assert_error
from tests.support.livekit_webhooks import SignedWebhook, event, signed
from tests.support.twirp import FakeRoomService, Mode

pytestmark = pytest.mark.anyio


@dataclass
class Ended:
    """A gateway with the Twirp stub as LiveKit's RoomService, and one session its owner has ended."""

    gateway: Gateway
    livekit: FakeRoomService
    room: str

    @property
    def now(self) -> int:
        return int(self.gateway.clock.now())

    async def webhook(self, hook: SignedWebhook) -> Any:
        return await self.gateway.client.post("/api/livekit/webhook", content=hook.body, headers=hook.headers)

    async def row(self) -> Any:
        async with self.gateway.db.connect() as conn:
            return (await conn.execute(select(sessions).where(sessions.c.room_name == self.room))).one()

    @property
    def deletions(self) -> list[str]:
        return [call.room for call in self.livekit.calls]


@pytest.fixture
async def ended(database_url: str) -> AsyncIterator[Ended]:
    livekit = FakeRoomService()
    with livekit.running() as url:
        async for gateway in running_gateway(
            database_url,
            livekit_api_url=url,
            livekit_api_timeout_seconds=0.5,
            admin_roles=(ADMIN_ROLE,),
            admin_client_app_ids=(ADMIN_APP,),
        ):
            await gateway.register_agent()
            started = await gateway.start()
            assert started.status_code == 200, started.text
            room = started.json()["room_name"]
            token = gateway.entra.mint_user_token()
            deleted = await gateway.client.delete(
                f"/api/session/{room}", headers={"Authorization": f"Bearer {token}"}
            )
            assert deleted.status_code == 200, deleted.text
            gateway.clock.advance(5)
            yield Ended(gateway, livekit, room)
    assert livekit.refusals == [], "lkps sent a token without exactly the DeleteRoom grant"


@pytest.mark.parametrize(
    ("name", "participant"),
    [("room_started", {}), ("participant_joined", {"identity": "ADA0001", "kind": "STANDARD"})],
)
async def test_activity_after_the_end_deletes_the_room_again(
    ended: Ended, name: str, participant: dict[str, str]
) -> None:
    """room_started or a join after the end: LiveKit is told to delete the room again, the session stays
    ended, and the reopening is counted with its time."""
    response = await ended.webhook(signed(event(name, ended.room, created_at=ended.now, **participant)))
    assert response.status_code == 200, response.text
    assert ended.deletions == [ended.room, ended.room]
    row = await ended.row()
    assert (row.status, row.ended_by, row.reopened_count) == ("ended", "caller", 1)
    assert int(row.reopened_at.timestamp()) == ended.now


async def test_the_admin_listings_show_the_reopening(ended: Ended) -> None:
    """Both the session list and the session detail carry the reopen count and the latest reopening."""
    await ended.webhook(signed(event("room_started", ended.room, created_at=ended.now)))
    ended.gateway.clock.advance(3)
    joined = event("participant_joined", ended.room, created_at=ended.now, identity="ADA0001")
    assert (await ended.webhook(signed(joined))).status_code == 200
    admin = Admin(ended.gateway)
    [listed] = (await admin.ok("/sessions"))["items"]
    detail = (await admin.ok(f"/sessions/{ended.room}"))["session"]
    for view in (listed, detail):
        assert (view["status"], view["reopened_count"]) == ("ended", 2)
        assert view["reopened_at"] is not None
    assert ended.deletions == [ended.room] * 3


async def test_a_retried_delivery_deletes_again_but_counts_once(ended: Ended) -> None:
    """The same event delivered twice is one reopening, and each delivery asks LiveKit to delete the room."""
    hook = signed(event("room_started", ended.room, created_at=ended.now, event_id="EV_reopened"))
    assert (await ended.webhook(hook)).json() == {"status": "recorded"}
    assert (await ended.webhook(hook)).json() == {"status": "duplicate"}
    assert ended.deletions == [ended.room] * 3
    assert (await ended.row()).reopened_count == 1


async def test_a_late_delivery_of_earlier_activity_is_no_reopening(ended: Ended) -> None:
    """An event that happened before the end, delivered after it, neither deletes nor counts."""
    early = event("participant_joined", ended.room, created_at=ended.now - 60, identity="ADA0001")
    assert (await ended.webhook(signed(early))).status_code == 200
    assert ended.deletions == [ended.room]
    assert (await ended.row()).reopened_count == 0


async def test_livekit_down_answers_502_so_livekit_retries(ended: Ended) -> None:
    """If the room cannot be deleted the webhook gets 502 (LiveKit retries it); the retry deletes it."""
    hook = signed(event("room_started", ended.room, created_at=ended.now))
    ended.livekit.mode = Mode.FAIL
    assert_error(await ended.webhook(hook), 502, "livekit_unavailable")
    ended.livekit.mode = Mode.OK
    assert (await ended.webhook(hook)).status_code == 200
    assert ended.deletions == [ended.room] * 3
    assert (await ended.row()).reopened_count == 1


async def test_activity_in_an_open_session_deletes_nothing(ended: Ended) -> None:
    """Joins in a session that has not ended are ordinary lifecycle events: no DeleteRoom."""
    started = await ended.gateway.start()
    room = started.json()["room_name"]
    hook = signed(event("participant_joined", room, created_at=ended.now, identity="ADA0001"))
    assert (await ended.webhook(hook)).status_code == 200
    assert ended.deletions == [ended.room]
