"""Every LiveKit promise lkps makes, proven against a real LiveKit server with the official realtime SDK as
the participant: the token joins exactly its room with the documented identity, name and attributes; the
room it creates has the product's limits and the agent dispatch; LiveKit's own webhooks drive the session
rows; ending a session closes the room for real."""

from __future__ import annotations

import asyncio
import json
from datetime import timedelta
from typing import Any
from urllib.parse import quote

import aiohttp
import httpx
import pytest
from livekit import api
from livekit.protocol import rtc as rtc_proto

from authz.dev_issuer import DEMO_BACKEND
from tests.support.livekit_server import LiveKitStack

pytestmark = [pytest.mark.slow, pytest.mark.anyio]


def events_of(detail: dict[str, Any]) -> list[str]:
    return [e["event"] for e in detail["events"]]


def server_api(stack: LiveKitStack) -> api.LiveKitAPI:
    return api.LiveKitAPI(stack.livekit.config.api_url, stack.api_key, stack.api_secret, failover=False)


async def rooms_named(stack: LiveKitStack, *names: str) -> list[Any]:
    lk = server_api(stack)
    try:
        return list((await lk.room.list_rooms(api.ListRoomsRequest(names=list(names)))).rooms)
    finally:
        await lk.aclose()


async def dispatches(stack: LiveKitStack, room: str) -> list[Any]:
    lk = server_api(stack)
    try:
        return list(await lk.agent_dispatch.list_dispatch(room))
    finally:
        await lk.aclose()


def extra_participant(stack: LiveKitStack, room: str, identity: str) -> str:
    """A token for one more ordinary participant of `room` (signed by the test with the deployment's key)."""
    return (
        api.AccessToken(stack.api_key, stack.api_secret)
        .with_identity(identity)
        .with_ttl(timedelta(minutes=5))
        .with_grants(api.VideoGrants(room_join=True, room=room))
        .to_jwt()
    )


def test_session_token_joins_its_room_as_the_readme_describes(stack: LiveKitStack) -> None:
    """The participant token of POST /api/session/start joins its room, with the user id as identity, the
    user's name and lkps's attributes (client app, object id, caller kind)."""
    token = stack.deployment.user_token("ada")
    started = stack.start_session(token)
    assert started["livekit_url"] == stack.livekit_url
    participant = stack.join(started["participant_token"], started["livekit_url"])
    joined = participant.expect("connected", "connect_failed")
    assert joined["event"] == "connected", joined
    assert joined["room"] == started["room_name"]
    assert joined["identity"] == started["participant_identity"]
    assert started["room_name"].startswith(f"{joined['identity']}-{stack.deployment.agent}-")
    claims = api.TokenVerifier(stack.api_key, stack.api_secret).verify(started["participant_token"])
    assert joined["name"] == claims.name
    assert joined["name"]
    assert joined["attributes"] == {
        "lkps.client_app_id": claims.attributes["lkps.client_app_id"],
        "lkps.object_id": claims.attributes["lkps.object_id"],
        "lkps.caller_kind": "user",
    }


def test_token_endpoint_token_joins_its_room(stack: LiveKitStack) -> None:
    """The token of POST /api/livekit/token (LiveKit's standard format, an app-only caller) joins the room
    it names, as `app-<client id>`, with the participant_name it asked for."""
    state = stack.deployment.state
    backend = state.client(DEMO_BACKEND)
    with stack.http() as http:
        response = http.post(
            "/api/livekit/token",
            headers={"Authorization": f"Bearer {stack.deployment.backend_token()}"},
            json={
                "participant_name": "Night batch",
                "room_config": {"agents": [{"agent_name": stack.deployment.agent, "metadata": "{}"}]},
            },
        )
    assert response.status_code == 201, response.text
    answer = response.json()
    participant = stack.join(answer["participant_token"], answer["server_url"])
    joined = participant.expect("connected", "connect_failed")
    assert joined["event"] == "connected", joined
    assert joined["room"] == answer["room_name"]
    assert joined["identity"] == f"app-{backend.client_id}"
    assert joined["name"] == "Night batch"
    assert joined["attributes"]["lkps.caller_kind"] == "app"


async def first_signal(stack: LiveKitStack, token: str, room: str) -> rtc_proto.SignalResponse:
    """Open LiveKit's signalling websocket as a client would, asking for `room`; the first message."""
    url = (
        f"{stack.livekit_url}/rtc?access_token={quote(token)}&room={quote(room)}&protocol=15&auto_subscribe=1"
    )
    async with aiohttp.ClientSession() as http, http.ws_connect(url) as ws:
        message = await asyncio.wait_for(ws.receive(), timeout=10)
        assert message.type == aiohttp.WSMsgType.BINARY, message
        return rtc_proto.SignalResponse.FromString(message.data)


async def test_token_cannot_join_any_other_room(stack: LiveKitStack) -> None:
    """A client that asks LiveKit for another room with lkps's token is put in the token's room, and the
    room it asked for is never created."""
    started = stack.start_session(stack.deployment.user_token("grace"))
    other = f"{started['room_name']}-other"
    signal = await first_signal(stack, started["participant_token"], other)
    assert signal.WhichOneof("message") == "join"
    assert signal.join.room.name == started["room_name"]
    assert await rooms_named(stack, other) == []


async def test_room_has_the_product_limits_and_the_agent_dispatch(stack: LiveKitStack) -> None:
    """The room the token creates has maxParticipants 2 and a 30 s departure timeout, and dispatches the
    agent named by its app id with the caller's metadata, as the real server reports them."""
    metadata = {"language": "de", "ticket": 4711}
    started = stack.start_session(stack.deployment.user_token("linus"), metadata)
    stack.join(started["participant_token"]).expect("connected")
    [room] = await rooms_named(stack, started["room_name"])
    assert room.max_participants == 2
    assert room.departure_timeout == 30
    [dispatch] = await dispatches(stack, started["room_name"])
    assert dispatch.agent_name == stack.deployment.agent
    assert json.loads(dispatch.metadata) == metadata


def test_third_participant_is_refused(stack: LiveKitStack) -> None:
    """With the user and one more participant in the room, LiveKit refuses a third (maxParticipants 2)."""
    started = stack.start_session(stack.deployment.user_token("barbara"))
    room = started["room_name"]
    stack.join(started["participant_token"]).expect("connected")
    second = stack.join(extra_participant(stack, room, "second")).expect("connected", "connect_failed")
    assert second["event"] == "connected", second
    third = stack.join(extra_participant(stack, room, "third")).expect("connected", "connect_failed")
    assert third["event"] == "connect_failed"
    assert "room has exceeded its max participants" in livekit_errors(stack, "third")


def livekit_errors(stack: LiveKitStack, participant: str) -> set[str]:
    """The errors the LiveKit server logged for `participant` (the SDK only sees a failed handshake)."""
    lines = stack.livekit.log_path.read_text().splitlines()
    entries = [json.loads(line) for line in lines if line.startswith("{")]
    return {e["error"] for e in entries if e.get("participant") == participant and "error" in e}


def test_livekit_webhooks_drive_the_session_lifecycle(stack: LiveKitStack) -> None:
    """The server's own room_started, participant_joined, participant_left and room_finished reach lkps,
    pass verification and move the session from issued to active to ended."""
    token = stack.deployment.user_token("margaret")
    started = stack.start_session(token)
    room = started["room_name"]
    assert stack.session_detail(room)["session"]["status"] == "issued"
    participant = stack.join(started["participant_token"])
    participant.expect("connected")
    detail = stack.wait_for_session(room, lambda d: "participant_joined" in events_of(d))
    assert detail["session"]["status"] == "active"
    assert {"room_started", "participant_joined"} <= set(events_of(detail))
    assert detail["session"]["started_at"] is not None
    participant.close()
    detail = stack.wait_for_session(room, lambda d: "participant_left" in events_of(d))
    assert "participant_left" in events_of(detail)
    ended = stack.end_session(room, token)
    assert ended.status_code == 200, ended.text
    detail = stack.wait_for_session(room, lambda d: "room_finished" in events_of(d))
    assert events_of(detail)[-1] == "room_finished"
    assert detail["session"]["status"] == "ended"


def test_real_webhooks_replayed_or_tampered_are_refused(stack: LiveKitStack) -> None:
    """A webhook exactly as LiveKit sent it changes nothing when replayed; with its body altered, or with
    another event's signature, lkps refuses it with 401 and records nothing."""
    started = stack.start_session(stack.deployment.user_token("katherine"))
    room = started["room_name"]
    stack.join(started["participant_token"]).expect("connected")
    room_started = stack.webhooks.wait_for("room_started", room)
    joined = stack.webhooks.wait_for("participant_joined", room)
    before = stack.wait_for_session(room, lambda d: len(d["events"]) >= 2)

    def post(body: bytes, authorization: str) -> httpx.Response:
        with stack.http() as http:
            return http.post(
                "/api/livekit/webhook",
                content=body,
                headers={"Authorization": authorization, "Content-Type": room_started.content_type},
            )

    replayed = post(room_started.body, room_started.authorization)
    assert replayed.status_code == 200
    assert replayed.json() == {"status": "duplicate"}
    forged_room = room_started.body.replace(room.encode(), f"{room}-x".encode())
    assert forged_room != room_started.body
    assert post(forged_room, room_started.authorization).status_code == 401
    assert post(room_started.body, joined.authorization).status_code == 401
    assert stack.session_detail(room)["events"] == before["events"]
    with stack.http() as http:
        unknown = http.get(
            f"/api/admin/sessions/{room}-x", headers={"Authorization": f"Bearer {stack.admin_token()}"}
        )
    assert unknown.status_code == 404


def test_ending_a_session_closes_the_room_for_real(stack: LiveKitStack) -> None:
    """DELETE /api/session/{room} deletes the LiveKit room: the connected participant is disconnected,
    the server no longer knows the room, and the session is ended by its caller."""
    token = stack.deployment.user_token("hedy")
    started = stack.start_session(token)
    room = started["room_name"]
    participant = stack.join(started["participant_token"])
    participant.expect("connected")
    response = stack.end_session(room, token)
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "ended"
    assert participant.expect("disconnected")["reason"] == "ROOM_DELETED"
    assert asyncio.run(rooms_named(stack, room)) == []
    session = stack.session_detail(room)["session"]
    assert session["status"] == "ended"
    assert session["ended_by"] == "caller"
