"""`DELETE /api/session/{room_name}`: the caller that started a session ends it through LiveKit's RoomService."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime

import pytest
from sqlalchemy import select

from config import Settings
from gateway.livekit_rooms import server_api_url
from gateway.persistence.tables import sessions
from tests.gateway.conftest import Gateway, running_gateway
from tests.gateway.test_session_start import assert_error
from tests.support.entra import SERVICE_CLIENT_ID, make_settings
from tests.support.twirp import FakeRoomService, Mode

pytestmark = pytest.mark.anyio
OTHER_USER_OID = "0a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d"


@dataclass
class Ending:
    gateway: Gateway
    livekit: FakeRoomService

    async def start(self, token: str | None = None) -> str:
        response = await self.gateway.start(token)
        assert response.status_code == 200, response.text
        return str(response.json()["room_name"])

    async def end(self, room: str, token: str | None = None):  # type: ignore[no-untyped-def]
        token = token or self.gateway.entra.mint_user_token()
        return await self.gateway.client.delete(
            f"/api/session/{room}", headers={"Authorization": f"Bearer {token}"}
        )

    async def row(self, room: str):  # type: ignore[no-untyped-def]
        async with self.gateway.db.connect() as conn:
            return (await conn.execute(select(sessions).where(sessions.c.room_name == room))).one()


@pytest.fixture
async def ending(database_url: str) -> AsyncIterator[Ending]:
    livekit = FakeRoomService()
    with livekit.running() as url:
        async for gateway in running_gateway(
            database_url, livekit_api_url=url, livekit_api_timeout_seconds=0.5
        ):
            await gateway.register_agent()
            yield Ending(gateway, livekit)
    assert livekit.refusals == [], "lkps sent a token without exactly the DeleteRoom grant"


async def test_the_owner_ends_the_session_and_its_room_is_deleted(ending: Ending) -> None:
    """200 with the end time; LiveKit got DeleteRoom for that room with a roomCreate-only token."""
    room = await ending.start()
    response = await ending.end(room)
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == {"room_name", "status", "ended_at"}
    assert (body["room_name"], body["status"]) == (room, "ended")
    [call] = ending.livekit.calls
    assert call.room == room
    assert call.claims.video is not None
    assert call.claims.video.room_create is True
    assert not call.claims.identity
    row = await ending.row(room)
    assert (row.status, row.ended_by) == ("ended", "caller")
    assert row.ended_at == datetime.fromisoformat(body["ended_at"])


async def test_ending_twice_answers_the_same_without_calling_livekit(ending: Ending) -> None:
    """Ending an ended session is 200 again with the first end time, and LiveKit is not called again."""
    room = await ending.start()
    first = (await ending.end(room)).json()
    second = await ending.end(room)
    assert second.status_code == 200
    assert second.json() == first
    assert len(ending.livekit.calls) == 1


async def test_an_app_only_caller_ends_its_own_session(ending: Ending) -> None:
    """A backend service (client credentials) ends the session it started."""
    token = ending.gateway.entra.mint_app_token()
    room = await ending.start(token)
    assert (await ending.end(room, token)).status_code == 200


@pytest.mark.parametrize(
    "other",
    [
        pytest.param({"oid": OTHER_USER_OID}, id="another-user"),
        pytest.param({"azp": SERVICE_CLIENT_ID}, id="same-user-other-client-app"),
    ],
)
async def test_someone_elses_session_is_403(ending: Ending, other: dict[str, str]) -> None:
    """Only the same tenant, object id and client app may end a session; nothing reaches LiveKit otherwise."""
    room = await ending.start()
    response = await ending.end(room, ending.gateway.entra.mint_user_token(**other))
    assert_error(response, 403, "forbidden", "This session belongs to another caller")
    assert ending.livekit.calls == []
    assert (await ending.row(room)).status == "issued"


async def test_an_unknown_room_is_404(ending: Ending) -> None:
    """A room lkps never issued is 404 session_not_found."""
    assert_error(await ending.end("no-such-room"), 404, "session_not_found")
    assert ending.livekit.calls == []


async def test_an_unauthenticated_request_is_401(ending: Ending) -> None:
    """Without a valid token nothing is looked up or deleted."""
    room = await ending.start()
    response = await ending.gateway.client.delete(f"/api/session/{room}")
    assert_error(response, 401, "missing_token")
    assert ending.livekit.calls == []


async def test_a_room_already_gone_still_ends_the_session(ending: Ending) -> None:
    """LiveKit's not_found (the room closed, or was never joined) counts as deleted."""
    ending.livekit.mode = Mode.NOT_FOUND
    room = await ending.start()
    assert (await ending.end(room)).status_code == 200
    assert (await ending.row(room)).status == "ended"


@pytest.mark.parametrize("mode", [Mode.FAIL, Mode.STALL])
async def test_livekit_failing_is_502_and_the_session_stays_open(ending: Ending, mode: Mode) -> None:
    """A LiveKit 500 or a call beyond the timeout is 502 livekit_unavailable; a retry later succeeds."""
    room = await ending.start()
    ending.livekit.mode = mode
    body = assert_error(await ending.end(room), 502, "livekit_unavailable")
    assert "retry" in body["message"]
    assert (await ending.row(room)).status == "issued"
    ending.livekit.mode = Mode.OK
    assert (await ending.end(room)).status_code == 200


async def test_livekit_unreachable_is_502(database_url: str) -> None:
    """With nothing listening at the LiveKit API URL, ending is 502 with a clear message."""
    async for gateway in running_gateway(database_url, livekit_api_url="http://127.0.0.1:9"):
        await gateway.register_agent()
        room = (await gateway.start()).json()["room_name"]
        response = await gateway.client.delete(
            f"/api/session/{room}", headers={"Authorization": f"Bearer {gateway.entra.mint_user_token()}"}
        )
        body = assert_error(response, 502, "livekit_unavailable")
        assert "LiveKit could not be reached" in body["message"]


async def test_livekit_refusing_lkps_key_is_502_livekit_error(database_url: str) -> None:
    """LiveKit refusing the call (e.g. lkps has the wrong key) is 502 livekit_error, pointing at operators."""
    livekit = FakeRoomService(key="APIanotherkey")
    with livekit.running() as url:
        async for gateway in running_gateway(database_url, livekit_api_url=url):
            await gateway.register_agent()
            room = (await gateway.start()).json()["room_name"]
            response = await gateway.client.delete(
                f"/api/session/{room}", headers={"Authorization": f"Bearer {gateway.entra.mint_user_token()}"}
            )
            body = assert_error(response, 502, "livekit_error")
            assert "unauthenticated" in body["message"]
    assert livekit.calls == []


@pytest.mark.parametrize(
    ("livekit_url", "api_url", "expected"),
    [
        ("wss://livekit.example.com", None, "https://livekit.example.com"),
        ("ws://127.0.0.1:7880", None, "http://127.0.0.1:7880"),
        ("https://livekit.example.com/base/", None, "https://livekit.example.com/base"),
        ("wss://livekit.example.com", "http://livekit.lkps.svc:7880", "http://livekit.lkps.svc:7880"),
    ],
)
def test_the_server_api_url_follows_the_livekit_url(
    livekit_url: str, api_url: str | None, expected: str
) -> None:
    """The API URL is LKPS_LIVEKIT_API_URL, else the client URL with wss made https and ws made http."""
    settings: Settings = make_settings(livekit_url=livekit_url, livekit_api_url=api_url)
    assert server_api_url(settings) == expected
