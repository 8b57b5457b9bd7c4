"""`POST /api/livekit/webhook`: LiveKit-signed events are recorded once; anything else is refused, unwritten."""

from __future__ import annotations

import json
import time

import pytest
from livekit import api
from sqlalchemy import func, select

from gateway.persistence.tables import session_events, sessions
from tests.gateway.conftest import Gateway
from tests.gateway.test_session_start import assert_error
from tests.support.livekit import API_KEY, API_SECRET
from tests.support.livekit_webhooks import SignedWebhook, event, sign_body, signed, verify_node

pytestmark = pytest.mark.anyio


async def post(gateway: Gateway, hook: SignedWebhook, **headers: str):  # type: ignore[no-untyped-def]
    return await gateway.client.post(
        "/api/livekit/webhook", content=hook.body, headers={**hook.headers, **headers}
    )


async def event_rows(gateway: Gateway) -> int:
    async with gateway.db.connect() as conn:
        return int(await conn.scalar(select(func.count()).select_from(session_events)) or 0)


async def started_room(gateway: Gateway) -> str:
    await gateway.register_agent()
    response = await gateway.start()
    assert response.status_code == 200, response.text
    return str(response.json()["room_name"])


class TestSigning:
    def test_the_official_receivers_accept_what_the_tests_sign(self) -> None:
        """Bodies signed like the LiveKit server verify with livekit-api's and the Node SDK's WebhookReceiver."""
        hook = signed(event("participant_joined", "room-1", identity="ada", kind="AGENT"))
        received = api.WebhookReceiver(api.TokenVerifier(API_KEY, API_SECRET)).receive(
            hook.body.decode(), hook.authorization
        )
        assert (received.event, received.room.name, received.participant.identity) == (
            "participant_joined",
            "room-1",
            "ada",
        )
        tampered = SignedWebhook(hook.body.replace(b"ada", b"eve"), hook.authorization)
        node = verify_node([hook, tampered])
        assert node[0]["event"]["participant"]["kind"] == "AGENT"
        assert "sha256" in node[1]["error"]


class TestRecording:
    async def test_an_event_is_recorded_against_its_session(self, gateway: Gateway) -> None:
        """room_started for a room lkps issued makes that session active and stores the event."""
        room = await started_room(gateway)
        response = await post(gateway, signed(event("room_started", room)))
        assert response.status_code == 200, response.text
        assert response.json() == {"status": "recorded"}
        async with gateway.db.connect() as conn:
            status = await conn.scalar(select(sessions.c.status).where(sessions.c.room_name == room))
            stored = (await conn.execute(select(session_events))).one()
        assert status == "active"
        assert (stored.room_name, stored.event) == (room, "room_started")

    async def test_a_retried_delivery_is_a_no_op(self, gateway: Gateway) -> None:
        """LiveKit retries with the same event id: the second delivery answers 200 duplicate and writes nothing."""
        room = await started_room(gateway)
        hook = signed(event("room_started", room))
        assert (await post(gateway, hook)).json() == {"status": "recorded"}
        again = await post(gateway, hook)
        assert again.status_code == 200
        assert again.json() == {"status": "duplicate"}
        assert await event_rows(gateway) == 1

    async def test_events_for_unknown_rooms_are_stored(self, gateway: Gateway) -> None:
        """A room lkps did not issue still has its events kept (for the admin API), not dropped."""
        response = await post(
            gateway, signed(event("participant_joined", "someone-elses-room", identity="x"))
        )
        assert response.json() == {"status": "recorded"}
        assert await event_rows(gateway) == 1

    async def test_other_events_are_acknowledged_and_dropped(self, gateway: Gateway) -> None:
        """Track and egress events answer 200 ignored, so LiveKit does not retry them, and are not stored."""
        response = await post(gateway, signed(event("track_published", "room-1", identity="ada")))
        assert response.status_code == 200
        assert response.json() == {"status": "ignored"}
        assert await event_rows(gateway) == 0

    async def test_only_the_useful_fields_are_kept(self, gateway: Gateway) -> None:
        """The stored details name the room and participant but never the room's TURN password."""
        message = event("participant_joined", "room-1", identity="ada", kind="AGENT")
        await post(gateway, signed(message))
        async with gateway.db.connect() as conn:
            stored = (await conn.execute(select(session_events))).one()
        assert (stored.participant_identity, stored.participant_kind) == ("ada", "AGENT")
        assert json.loads(stored.details) == {"room_sid": message.room.sid, "participant_sid": "PA_ada"}
        assert "turn" not in stored.details.lower()

    async def test_plain_json_content_type_is_accepted(self, gateway: Gateway) -> None:
        """application/json works as well as LiveKit's application/webhook+json; other types get 415."""
        hook = signed(event("room_started", "room-1"))
        assert (
            await post(gateway, hook, **{"Content-Type": "application/json; charset=utf-8"})
        ).status_code == 200
        refused = await post(
            gateway, signed(event("room_started", "room-2")), **{"Content-Type": "text/plain"}
        )
        assert_error(refused, 415, "unsupported_media_type")
        assert await event_rows(gateway) == 1


class TestRefusal:
    @pytest.mark.parametrize(
        "forge",
        [
            pytest.param(
                lambda h: SignedWebhook(h.body.replace(b"room-1", b"room-2"), h.authorization),
                id="tampered-body",
            ),
            pytest.param(lambda h: SignedWebhook(h.body + b" ", h.authorization), id="one-byte-appended"),
            pytest.param(
                lambda h: SignedWebhook(
                    h.body, sign_body(h.body, secret="another-secret-that-is-long-enough-to-use")
                ),
                id="wrong-secret",
            ),
            pytest.param(
                lambda h: SignedWebhook(h.body, sign_body(h.body, key="APIotherkey")), id="wrong-key"
            ),
            pytest.param(
                lambda h: SignedWebhook(h.body, sign_body(h.body, issued_at=time.time() - 600)), id="stale"
            ),
            pytest.param(
                lambda h: SignedWebhook(h.body, sign_body(h.body, issued_at=time.time() + 600)),
                id="not-yet-valid",
            ),
            pytest.param(lambda h: SignedWebhook(h.body, f"Bearer {h.authorization}"), id="bearer-prefix"),
            pytest.param(lambda h: SignedWebhook(h.body, "garbage"), id="garbage-token"),
            pytest.param(lambda h: SignedWebhook(b"\xff\xfe" + h.body, h.authorization), id="not-utf8"),
        ],
    )
    async def test_anything_but_livekits_signature_of_the_exact_body_is_401(
        self, gateway: Gateway, forge
    ) -> None:  # type: ignore[no-untyped-def]
        """Tampered bodies, other keys or secrets, stale tokens and malformed headers are 401 and write nothing."""
        hook = forge(signed(event("room_started", "room-1")))
        response = await post(gateway, hook)
        assert_error(response, 401, "invalid_webhook_signature")
        assert await event_rows(gateway) == 0

    async def test_a_missing_signature_is_401(self, gateway: Gateway) -> None:
        """Without an Authorization header nothing is read."""
        hook = signed(event("room_started", "room-1"))
        response = await gateway.client.post(
            "/api/livekit/webhook", content=hook.body, headers={"Content-Type": "application/webhook+json"}
        )
        assert_error(response, 401, "invalid_webhook_signature")
        assert await event_rows(gateway) == 0

    async def test_a_signed_body_that_is_not_an_event_is_400(self, gateway: Gateway) -> None:
        """A correctly signed body that is not a WebhookEvent is refused with 400, never a 500."""
        for body in (b"not json", b'{"event": 5}', b'{"createdAt": "soon"}'):
            response = await post(gateway, SignedWebhook(body, sign_body(body)))
            assert_error(response, 400, "invalid_request")
        assert await event_rows(gateway) == 0

    async def test_an_oversized_body_is_413(self, gateway: Gateway) -> None:
        """Bodies over 1 MiB are refused before verification."""
        body = b"{" + b" " * (1024 * 1024) + b"}"
        response = await post(gateway, SignedWebhook(body, sign_body(body)))
        assert_error(response, 413, "payload_too_large")


async def test_the_webhook_is_documented_with_livekits_signature(gateway: Gateway) -> None:
    """The OpenAPI document describes the webhook with the LiveKit signature scheme, not an Entra token."""
    document = (await gateway.client.get("/schema/openapi.json")).json()
    operation = document["paths"]["/api/livekit/webhook"]["post"]
    assert operation["security"] == [{"livekit_webhook": []}]
    assert document["components"]["securitySchemes"]["livekit_webhook"]["in"] == "header"
