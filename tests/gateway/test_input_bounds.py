"""Hostile caller input is a 400 with the error shape, never a 5xx and never a write, on SQLite and
PostgreSQL alike: JSON nested too deep, times and numbers out of range, and text with NUL or other control
characters wherever caller text would reach the database."""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from sqlalchemy import func, select
from sqlalchemy.sql import Select

from gateway.persistence.tables import admin_actions, agent_registrations, session_events
from gateway.schemas import MAX_JSON_DEPTH
from tests.gateway.conftest import AGENT_ID, Gateway, running_gateway
from tests.gateway.test_session_start import assert_error
from tests.support.entra import SERVICE_CLIENT_ID
from tests.support.livekit_webhooks import event, signed

pytestmark = pytest.mark.anyio
ADMIN_ROLE = "Lkps.Admin"
SESSION_ID = "0f7e6d5c-4b3a-4291-8f7e-6d5c4b3a2918"


@pytest.fixture
async def gateway(database_url: str) -> AsyncIterator[Gateway]:
    async for running in running_gateway(
        database_url, admin_roles=(ADMIN_ROLE,), admin_client_app_ids=(SERVICE_CLIENT_ID,)
    ):
        await running.register_agent()
        yield running


def admin_headers(gateway: Gateway) -> dict[str, str]:
    return {"Authorization": f"Bearer {gateway.entra.mint_app_token(roles=[ADMIN_ROLE])}"}


def user_headers(gateway: Gateway) -> dict[str, str]:
    return {"Authorization": f"Bearer {gateway.entra.mint_user_token()}"}


async def count(gateway: Gateway, query: Select[Any]) -> int:
    async with gateway.db.connect() as conn:
        return int((await conn.execute(query)).scalar_one())


async def rows(gateway: Gateway) -> tuple[int, ...]:
    """Every table a refused request must leave alone."""
    return (
        await gateway.session_rows(),
        await count(gateway, select(func.count()).select_from(agent_registrations)),
        await count(gateway, select(func.count()).select_from(admin_actions)),
    )


def nested(depth: int) -> Any:
    value: Any = "leaf"
    for _ in range(depth):
        value = [value]
    return value


def deep_json(depth: int) -> str:
    return "[" * depth + "]" * depth


def cursor(created_at: str, session_id: str = SESSION_ID) -> str:
    raw = json.dumps([created_at, session_id]).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


class TestJsonDepth:
    @pytest.mark.parametrize(
        ("path", "who", "body"),
        [
            ("/api/session/start", "user", f'{{"agent_entra_app_id":"{AGENT_ID}","metadata":{{"a":{deep_json(5000)}}}}}'),
            ("/api/livekit/token", "user", f'{{"room_config":{{"agents":[{{"agent_name":"{AGENT_ID}","x":{deep_json(5000)}}}]}}}}'),
            ("/api/livekit/token", "user", json.dumps({"room_config": {"agents": [{"agent_name": AGENT_ID, "metadata": '{"a":' + deep_json(5000) + "}"}]}})),
            ("/api/agent/register", "agent", f'{{"display_name":{deep_json(5000)}}}'),
            (f"/api/admin/agents/{AGENT_ID}/revoke", "admin", f'{{"reason":{deep_json(5000)}}}'),
        ],
        ids=["session-metadata", "token-body", "token-metadata-string", "register", "revoke"],
    )  # fmt: skip
    async def test_json_nested_5000_levels_is_refused(
        self, gateway: Gateway, path: str, who: str, body: str
    ) -> None:
        """A body (or the metadata JSON it carries) nested 5,000 levels deep is a 400 naming the depth
        limit, decided before any recursive decoder runs, and nothing is written."""
        headers = {
            "user": user_headers(gateway),
            "agent": {"Authorization": f"Bearer {gateway.agent_token()}"},
            "admin": admin_headers(gateway),
        }[who]
        before = await rows(gateway)
        response = await gateway.client.post(path, content=body.encode(), headers=headers)
        message = assert_error(response, 400, "invalid_request")["message"]
        assert f"more than {MAX_JSON_DEPTH} levels deep" in message
        assert await rows(gateway) == before

    async def test_json_within_the_depth_limit_and_with_many_brackets_is_accepted(
        self, gateway: Gateway
    ) -> None:
        """Metadata as deep as the limit allows, with more brackets than the limit side by side and
        inside strings, starts a session."""
        metadata = {
            "deep": nested(MAX_JSON_DEPTH - 2),
            "wide": [[i] for i in range(100)],
            "text": "[[[{{{" * 50,
        }
        response = await gateway.start(body={"agent_entra_app_id": AGENT_ID, "metadata": metadata})
        assert response.status_code == 200, response.text

    @pytest.mark.parametrize(("depth", "status"), [(MAX_JSON_DEPTH, 200), (MAX_JSON_DEPTH + 1, 400)])
    async def test_the_depth_limit_is_exact(self, gateway: Gateway, depth: int, status: int) -> None:
        """A body nested exactly as deep as the limit starts a session; one level more is a 400."""
        # The body and its metadata object are two levels: the lists inside make up the rest.
        body = {"agent_entra_app_id": AGENT_ID, "metadata": {"deep": nested(depth - 2)}}
        response = await gateway.start(body=body)
        assert response.status_code == status, response.text

    async def test_a_body_that_is_not_utf8_is_refused(self, gateway: Gateway) -> None:
        """Invalid UTF-8 inside a JSON string is a 400, not a decoding crash."""
        response = await gateway.client.post(
            "/api/agent/register",
            content=b'{"display_name":"\xff"}',
            headers={"Authorization": f"Bearer {gateway.agent_token()}"},
        )
        assert_error(response, 400, "invalid_request")


class TestAdminParameters:
    @pytest.mark.parametrize(
        ("query", "name"),
        [
            ("since=0001-01-01T00:00:00%2B01:00", "since"),
            ("until=9999-12-31T23:59:59-01:00", "until"),
            ("since=2026-01-01T00:00:00%00", "since"),
            ("limit=%C2%B2", "limit"),
            ("limit=%D9%A3", "limit"),  # ARABIC-INDIC DIGIT THREE: a digit to str.isdigit, not to int()
            ("limit=" + "9" * 5000, "limit"),
            (f"cursor={cursor('9999-12-31T23:59:59-01:00')}", "cursor"),
            (f"cursor={cursor('0001-01-01T00:00:00+01:00')}", "cursor"),
            ("cursor=" + cursor("2027-01-15T08:00:00Z", "a\u0000b"), "cursor"),
            (f"cursor={cursor('2027-01-15T08:00:00Z')}%00", "cursor"),
            ("cursor=" + "A" * 5000, "cursor"),
            ("user=a%00b", "user"),
            ("user=a%1Bb", "user"),
            ("usr=alice", "usr"),
            ("foo=%00", "foo"),
        ],
    )
    async def test_an_out_of_range_or_unstorable_parameter_is_400(
        self, gateway: Gateway, query: str, name: str
    ) -> None:
        """Times an offset pushes past year 1 or 9999, non-ASCII digits, overflowing cursors, control
        characters and unknown parameters are 400s naming the parameter; no audit row is written."""
        before = await rows(gateway)
        response = await gateway.client.get(f"/api/admin/sessions?{query}", headers=admin_headers(gateway))
        assert f'"{name}"' in assert_error(response, 400, "invalid_request")["message"]
        assert await rows(gateway) == before

    async def test_the_audit_row_records_only_validated_parameters(self, gateway: Gateway) -> None:
        """A listing's audit row holds the filters it applied, each as validated."""
        response = await gateway.client.get(
            "/api/admin/sessions", params={"user": "ada", "limit": "5"}, headers=admin_headers(gateway)
        )
        assert response.status_code == 200, response.text
        async with gateway.db.connect() as conn:
            details = (await conn.execute(select(admin_actions.c.details))).scalar_one()
        assert json.loads(details) == {"user": "ada", "limit": "5"}


class TestControlCharacters:
    @pytest.mark.parametrize(
        ("method", "path", "who"),
        [
            ("DELETE", "/api/session/a%00b", "user"),
            ("DELETE", "/api/session/a%0Ab", "user"),
            ("GET", "/api/admin/sessions/a%00b", "admin"),
            ("DELETE", "/api/admin/sessions/a%00b", "admin"),
            ("GET", f"/api/admin/sessions/{'r' * 256}", "admin"),
        ],
    )
    async def test_a_room_name_that_cannot_be_stored_is_400(
        self, gateway: Gateway, method: str, path: str, who: str
    ) -> None:
        """A room name in a path with NUL, a newline or over 255 characters is a 400 naming room_name."""
        headers = user_headers(gateway) if who == "user" else admin_headers(gateway)
        before = await rows(gateway)
        response = await gateway.client.request(method, path, headers=headers)
        assert '"room_name"' in assert_error(response, 400, "invalid_request")["message"]
        assert await rows(gateway) == before

    @pytest.mark.parametrize(
        "body",
        [
            {"display_name": "a\u0000b"},
            {"display_name": "line\nbreak"},
            {"agent_version": "1.0\u0007"},
            {"description": "a\u0000b"},
            {"description": "escape \u001b[31m"},
            {"description": "next line\u0085"},
            {"display_name": "delete\u007f"},
            {"display_name": "next line\u0085"},
            {"agent_version": "1.0\u009f"},
        ],
    )
    async def test_a_registration_with_control_characters_is_400(
        self, gateway: Gateway, body: dict[str, str]
    ) -> None:
        """NUL and control characters in a registration's text fields are a 400 naming the field; no
        registration is written."""
        before = await rows(gateway)
        response = await gateway.client.post(
            "/api/agent/register", json=body, headers={"Authorization": f"Bearer {gateway.agent_token()}"}
        )
        message = assert_error(response, 400, "invalid_request")["message"]
        assert f'"{next(iter(body))}" must be text without control characters' in message
        assert await rows(gateway) == before

    async def test_the_characters_around_the_control_ranges_are_text(self, gateway: Gateway) -> None:
        """The neighbours of the refused ranges (space, "~", no-break space, "é") are stored as sent."""
        name = " ~\u00a0\u00e9"
        response = await gateway.client.post(
            "/api/agent/register",
            json={"display_name": name},
            headers={"Authorization": f"Bearer {gateway.agent_token()}"},
        )
        assert response.status_code == 200, response.text
        async with gateway.db.connect() as conn:
            stored = await conn.scalar(
                select(agent_registrations.c.display_name).where(
                    agent_registrations.c.id == response.json()["registration_id"]
                )
            )
        assert stored == name

    async def test_multi_line_text_keeps_its_lines(self, gateway: Gateway) -> None:
        """A description and a revocation reason may span lines (tab, LF, CR); they are stored as sent."""
        response = await gateway.client.post(
            "/api/agent/register",
            json={"description": "first line\r\n\tsecond line"},
            headers={"Authorization": f"Bearer {gateway.agent_token()}"},
        )
        assert response.status_code == 200, response.text
        revoked = await gateway.client.post(
            f"/api/admin/agents/{AGENT_ID}/revoke",
            json={"reason": "leaked key\nsee ticket"},
            headers=admin_headers(gateway),
        )
        assert revoked.status_code == 200, revoked.text
        assert revoked.json()["revocation"]["reason"] == "leaked key\nsee ticket"

    async def test_a_revocation_reason_with_nul_is_400_and_revokes_nothing(self, gateway: Gateway) -> None:
        """A NUL in the reason is a 400 naming "reason"; the agent stays connected."""
        before = await rows(gateway)
        response = await gateway.client.post(
            f"/api/admin/agents/{AGENT_ID}/revoke",
            json={"reason": "a\u0000b"},
            headers=admin_headers(gateway),
        )
        assert '"reason"' in assert_error(response, 400, "invalid_request")["message"]
        assert await rows(gateway) == before
        assert (await gateway.start()).status_code == 200

    async def test_a_livekit_webhook_with_control_characters_is_recorded(self, gateway: Gateway) -> None:
        """A signed LiveKit event whose room, identity or id holds NUL is recorded (the characters
        replaced) rather than failing in the database, which LiveKit would retry forever."""
        hook = signed(event("participant_joined", "room\u0000x", identity="who\u0000", event_id="EV_\u0000"))
        response = await gateway.client.post("/api/livekit/webhook", content=hook.body, headers=hook.headers)
        assert response.status_code == 200, response.text
        assert response.json() == {"status": "recorded"}
        async with gateway.db.connect() as conn:
            row = (await conn.execute(select(session_events))).one()
        assert (row.room_name, row.participant_identity) == ("room\ufffdx", "who\ufffd")
        assert row.id.startswith("sha256:")
