"""The admin API: who may use it, what it shows, revocation taking effect at once, and its audit trail."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select

from gateway.persistence.tables import admin_actions, agent_registrations
from tests.gateway.conftest import AGENT_ID, Gateway, running_gateway
from tests.gateway.test_session_start import assert_error
from tests.support.entra import OTHER_CLIENT_ID, SERVICE_CLIENT_ID, SPA_CLIENT_ID, USER_OID
from tests.support.livekit_webhooks import SignedWebhook, event, signed
from tests.support.sessions import insert_sessions, session_row

pytestmark = pytest.mark.anyio
ADMIN_ROLE = "Lkps.Admin"
ADMIN_SCOPE = "lkps.admin"
ADMIN_APP = "9e8d7c6b-5a49-4382-9170-6f5e4d3c2b1a"
ADMIN_OID = "1f2e3d4c-5b6a-4798-8a7b-6c5d4e3f2a1b"
OTHER_AGENT = "0b1c2d3e-4f5a-4b6c-8d7e-9f0a1b2c3d4e"
T0 = datetime(2027, 1, 15, 8, 0, tzinfo=UTC)


@dataclass
class Admin:
    gateway: Gateway

    def token(self, **claims: Any) -> str:
        return self.gateway.entra.mint_app_token(
            **{"azp": ADMIN_APP, "oid": ADMIN_OID, "sub": ADMIN_OID, "roles": [ADMIN_ROLE], **claims}
        )

    async def get(self, path: str, token: str | None = None, **params: Any):  # type: ignore[no-untyped-def]
        return await self.gateway.client.get(
            f"/api/admin{path}", params=params, headers={"Authorization": f"Bearer {token or self.token()}"}
        )

    async def post(self, path: str, body: Any = None, token: str | None = None):  # type: ignore[no-untyped-def]
        headers = {"Authorization": f"Bearer {token or self.token()}"}
        if body is None:
            return await self.gateway.client.post(f"/api/admin{path}", headers=headers)
        return await self.gateway.client.post(f"/api/admin{path}", headers=headers, json=body)

    async def ok(self, path: str, **params: Any) -> Any:
        response = await self.get(path, **params)
        assert response.status_code == 200, response.text
        return response.json()

    async def webhook(self, hook: SignedWebhook) -> None:
        response = await self.gateway.client.post(
            "/api/livekit/webhook", content=hook.body, headers=hook.headers
        )
        assert response.status_code == 200, response.text

    async def actions(self) -> list[Any]:
        async with self.gateway.db.connect() as conn:
            return list((await conn.execute(select(admin_actions).order_by(admin_actions.c.at))).all())


@pytest.fixture
async def admin(database_url: str) -> AsyncIterator[Admin]:
    async for gateway in running_gateway(
        database_url,
        admin_roles=(ADMIN_ROLE,),
        admin_client_app_ids=(ADMIN_APP, SPA_CLIENT_ID),
        admin_scopes=(ADMIN_SCOPE,),
    ):
        yield Admin(gateway)


ROUTES = [
    ("GET", "/api/admin/agents"),
    ("GET", "/api/admin/sessions"),
    ("GET", "/api/admin/sessions/some-room"),
    ("DELETE", "/api/admin/sessions/some-room"),
    ("POST", f"/api/admin/agents/{AGENT_ID}/revoke"),
    ("POST", f"/api/admin/agents/{AGENT_ID}/unrevoke"),
]


class TestAuthorization:
    @pytest.mark.parametrize(("method", "path"), ROUTES)
    async def test_callers_without_the_admin_role_get_403(self, admin: Admin, method: str, path: str) -> None:
        """A valid token without an admin role is refused on every admin route, and nothing is audited."""
        for token in (admin.gateway.entra.mint_user_token(), admin.token(roles=["Agent.Invoke"])):
            response = await admin.gateway.client.request(
                method, path, headers={"Authorization": f"Bearer {token}"}
            )
            assert_error(response, 403, "forbidden")
        assert await admin.actions() == []

    @pytest.mark.parametrize(("method", "path"), ROUTES)
    async def test_unauthenticated_callers_get_401(self, admin: Admin, method: str, path: str) -> None:
        """No token, no admin API."""
        assert_error(await admin.gateway.client.request(method, path), 401, "missing_token")

    async def test_the_admin_api_is_off_without_configured_roles(self, database_url: str) -> None:
        """With LKPS_ADMIN_ROLES unset, even a token carrying an admin-looking role is refused (fail closed)."""
        async for gateway in running_gateway(database_url, admin_client_app_ids=(ADMIN_APP,)):
            response = await Admin(gateway).get("/agents")
            body = assert_error(response, 403, "forbidden")
            assert "LKPS_ADMIN_ROLES" in body["message"]

    async def test_the_admin_api_is_off_without_an_admin_client_allow_list(self, database_url: str) -> None:
        """With LKPS_ADMIN_CLIENT_APP_IDS unset, an admin role alone opens nothing (fail closed)."""
        async for gateway in running_gateway(database_url, admin_roles=(ADMIN_ROLE,)):
            response = await Admin(gateway).get("/agents")
            body = assert_error(response, 403, "forbidden")
            assert "LKPS_ADMIN_CLIENT_APP_IDS" in body["message"]
            assert await Admin(gateway).actions() == []

    async def test_a_user_assigned_the_admin_role_is_an_admin(self, admin: Admin) -> None:
        """Entra puts a user's app-role assignments in `roles`: a delegated token with the role, the admin
        scope and an allowed admin client is accepted."""
        token = admin.gateway.entra.mint_user_token(roles=[ADMIN_ROLE], scp=ADMIN_SCOPE)
        assert (await admin.get("/agents", token=token)).status_code == 200

    @pytest.mark.parametrize(("method", "path"), ROUTES)
    async def test_a_user_admin_through_another_client_is_refused(
        self, admin: Admin, method: str, path: str
    ) -> None:
        """The user's admin role does not follow them into a client that is not on the admin allow-list, nor
        into an allowed client without the admin scope; nothing is audited."""
        entra = admin.gateway.entra
        for token in (
            entra.mint_user_token(roles=[ADMIN_ROLE], azp=OTHER_CLIENT_ID, scp="something.else"),
            entra.mint_user_token(roles=[ADMIN_ROLE], azp=OTHER_CLIENT_ID, scp=ADMIN_SCOPE),
            entra.mint_user_token(roles=[ADMIN_ROLE], scp="something.else"),
        ):
            response = await admin.gateway.client.request(
                method, path, headers={"Authorization": f"Bearer {token}"}
            )
            assert_error(response, 403, "forbidden")
        assert await admin.actions() == []

    async def test_an_admin_app_off_the_allow_list_is_refused(self, admin: Admin) -> None:
        """An app-only token with the admin role is refused unless its own app id is an admin client."""
        body = assert_error(
            await admin.get("/agents", token=admin.token(azp=OTHER_CLIENT_ID)), 403, "forbidden"
        )
        assert OTHER_CLIENT_ID in body["message"]
        assert await admin.actions() == []

    async def test_user_tokens_are_refused_without_an_admin_scope(self, database_url: str) -> None:
        """With no admin (or client) scope configured, delegated tokens never reach the admin API."""
        async for gateway in running_gateway(
            database_url, admin_roles=(ADMIN_ROLE,), admin_client_app_ids=(SPA_CLIENT_ID,), client_scopes=()
        ):
            token = gateway.entra.mint_user_token(roles=[ADMIN_ROLE])
            body = assert_error(await Admin(gateway).get("/agents", token=token), 403, "forbidden")
            assert "LKPS_ADMIN_SCOPES" in body["message"]


class TestAgents:
    async def test_agents_are_listed_with_their_registration_state(self, admin: Admin) -> None:
        """Each agent shows its latest registration, how many it made, and connected / expired / revoked."""
        gateway = admin.gateway
        await gateway.register_agent(OTHER_AGENT)
        gateway.clock.advance(gateway.settings.agent_token_ttl_seconds + 1)
        await gateway.register_agent()
        gateway.clock.advance(1)
        second = await gateway.register_agent(enforce=True)
        agents = {agent["agent_app_id"]: agent for agent in (await admin.ok("/agents"))["agents"]}
        assert set(agents) == {AGENT_ID, OTHER_AGENT}
        assert (agents[AGENT_ID]["state"], agents[AGENT_ID]["registrations"]) == ("connected", 2)
        assert agents[AGENT_ID]["latest_registration"]["id"] == second["registration_id"]
        assert agents[AGENT_ID]["latest_registration"]["enforce_client_authz"] is True
        assert agents[AGENT_ID]["revocation"] is None
        assert agents[OTHER_AGENT]["state"] == "expired"

    async def test_revocation_refuses_the_agent_at_once(self, admin: Admin) -> None:
        """After revoke: session start is 404 not connected and register is 403 agent_revoked, with no new row."""
        gateway = admin.gateway
        await gateway.register_agent()
        assert (await gateway.start()).status_code == 200  # also warms the "connected" cache
        response = await admin.post(f"/agents/{AGENT_ID.upper()}/revoke", {"reason": "leaks data"})
        assert response.status_code == 200, response.text
        result = response.json()
        assert (result["agent_app_id"], result["revoked"], result["registrations_revoked"]) == (
            AGENT_ID,
            True,
            1,
        )
        assert result["revocation"]["reason"] == "leaks data"
        assert result["revocation"]["revoked_by_object_id"] == ADMIN_OID

        assert_error(
            await gateway.start(),
            404,
            "agent_not_connected",
            f"Agent with app ID '{AGENT_ID}' is not connected",
        )
        refused = await gateway.client.post(
            "/api/agent/register", headers={"Authorization": f"Bearer {gateway.agent_token()}"}, json={}
        )
        assert_error(refused, 403, "agent_revoked")
        async with gateway.db.connect() as conn:
            rows = (await conn.execute(select(agent_registrations.c.revoked))).scalars().all()
        assert rows == [True]
        [listed] = (await admin.ok("/agents"))["agents"]
        assert (listed["state"], listed["revocation"]["reason"]) == ("revoked", "leaks data")

    async def test_unrevoking_lets_the_agent_register_again(self, admin: Admin) -> None:
        """Unrevoke lifts the block; the agent is not connected until it registers anew."""
        gateway = admin.gateway
        await gateway.register_agent()
        await admin.post(f"/agents/{AGENT_ID}/revoke")
        response = await admin.post(f"/agents/{AGENT_ID}/unrevoke")
        assert response.json() == {"agent_app_id": AGENT_ID, "revoked": False, "was_revoked": True}
        assert_error(await gateway.start(), 404, "agent_not_connected")
        await gateway.register_agent()
        assert (await gateway.start()).status_code == 200
        again = await admin.post(f"/agents/{AGENT_ID}/unrevoke")
        assert again.json()["was_revoked"] is False

    async def test_unrevoking_one_agent_leaves_the_others_revoked(self, admin: Admin) -> None:
        """With two agents revoked, unrevoking one lets only that one register: the other is still refused
        (403 agent_revoked) and still listed as revoked."""
        gateway = admin.gateway
        for agent_id in (AGENT_ID, OTHER_AGENT):
            await gateway.register_agent(agent_id)
            assert (await admin.post(f"/agents/{agent_id}/revoke")).status_code == 200
        assert (await admin.post(f"/agents/{AGENT_ID}/unrevoke")).json()["was_revoked"] is True
        gateway.clock.advance(1)  # the new registration is the latest one (the same instant would be a tie)
        await gateway.register_agent(AGENT_ID)
        refused = await gateway.client.post(
            "/api/agent/register",
            headers={"Authorization": f"Bearer {gateway.agent_token(OTHER_AGENT)}"},
            json={},
        )
        assert_error(refused, 403, "agent_revoked")
        states = {agent["agent_app_id"]: agent["state"] for agent in (await admin.ok("/agents"))["agents"]}
        assert states == {AGENT_ID: "connected", OTHER_AGENT: "revoked"}

    async def test_an_agent_can_be_revoked_before_it_ever_registers(self, admin: Admin) -> None:
        """Revoking an unknown agent blocks it pre-emptively and lists it as revoked."""
        await admin.post(f"/agents/{OTHER_AGENT}/revoke")
        [listed] = (await admin.ok("/agents"))["agents"]
        assert (listed["agent_app_id"], listed["state"], listed["latest_registration"]) == (
            OTHER_AGENT,
            "revoked",
            None,
        )
        refused = await admin.gateway.client.post(
            "/api/agent/register",
            headers={"Authorization": f"Bearer {admin.gateway.agent_token(OTHER_AGENT)}"},
            json={},
        )
        assert_error(refused, 403, "agent_revoked")

    @pytest.mark.parametrize(
        ("path", "body", "fragment"),
        [
            ("/agents/not-a-guid/revoke", None, '"app_id" must be a UUID'),
            (f"/agents/{AGENT_ID}/revoke", {"why": "x"}, 'Unknown field "why"'),
            (f"/agents/{AGENT_ID}/revoke", {"reason": "x" * 513}, '"reason"'),
            ("/agents/not-a-guid/unrevoke", None, '"app_id" must be a UUID'),
        ],
    )
    async def test_bad_revocation_requests_are_400(
        self, admin: Admin, path: str, body: Any, fragment: str
    ) -> None:
        """A malformed agent id or body is refused with a message naming the problem, and nothing changes."""
        response = await admin.post(path, body)
        assert fragment in assert_error(response, 400, "invalid_request")["message"]
        assert [row.action for row in await admin.actions()] == []


class TestSessions:
    async def seed(self, admin: Admin) -> list[dict[str, Any]]:
        """Five sessions a minute apart (newest last), varied by agent, client, user and status."""
        rows = [
            session_row("r0", T0),
            session_row("r1", T0 + timedelta(minutes=1), agent_app_id=OTHER_AGENT),
            session_row("r2", T0 + timedelta(minutes=2), client_app_id=SERVICE_CLIENT_ID, caller_kind="app"),
            session_row("r3", T0 + timedelta(minutes=3), user_id="BOB0002", caller_object_id=ADMIN_OID),
            session_row(
                "r4",
                T0 + timedelta(minutes=4),
                status="ended",
                ended_at=T0 + timedelta(minutes=5),
                ended_by="webhook",
            ),
        ]
        await insert_sessions(admin.gateway.db, *rows)
        return rows

    async def rooms(self, admin: Admin, **params: Any) -> list[str]:
        return [item["room_name"] for item in (await admin.ok("/sessions", **params))["items"]]

    async def test_sessions_are_listed_newest_first(self, admin: Admin) -> None:
        """Without filters every session is listed, newest first, with its lifecycle fields."""
        await self.seed(admin)
        page = await admin.ok("/sessions")
        assert [item["room_name"] for item in page["items"]] == ["r4", "r3", "r2", "r1", "r0"]
        assert page["next_cursor"] is None
        first = page["items"][-1]
        assert (first["status"], first["agent_joined"], first["duration_seconds"]) == ("issued", False, None)
        assert datetime.fromisoformat(first["created_at"]) == T0

    @pytest.mark.parametrize(
        ("params", "expected"),
        [
            ({"agent": OTHER_AGENT.upper()}, ["r1"]),
            ({"client_app": SERVICE_CLIENT_ID}, ["r2"]),
            ({"user": "BOB0002"}, ["r3"]),
            ({"user": USER_OID}, ["r4", "r2", "r1", "r0"]),
            ({"status": "ended"}, ["r4"]),
            ({"since": "2027-01-15T08:02:00Z"}, ["r4", "r3", "r2"]),
            ({"until": "2027-01-15T10:02:00+02:00"}, ["r1", "r0"]),
            ({"since": "2027-01-15T08:01:00", "until": "2027-01-15T08:03:00Z"}, ["r2", "r1"]),
            ({"client_app": SPA_CLIENT_ID, "status": "issued", "agent": AGENT_ID}, ["r3", "r0"]),
            ({"status": "active"}, []),
        ],
    )
    async def test_filters_combine(self, admin: Admin, params: dict[str, str], expected: list[str]) -> None:
        """agent, client_app, user (user id or object id), status and the time range narrow the list together."""
        await self.seed(admin)
        assert await self.rooms(admin, **params) == expected

    @pytest.mark.parametrize(
        ("params", "name"),
        [
            ({"agent": "helpdesk"}, "agent"),
            ({"client_app": "123"}, "client_app"),
            ({"status": "open"}, "status"),
            ({"since": "yesterday"}, "since"),
            ({"until": "2027-13-01"}, "until"),
            ({"limit": "0"}, "limit"),
            ({"limit": "501"}, "limit"),
            ({"limit": "ten"}, "limit"),
            ({"limit": "-1"}, "limit"),
            ({"cursor": "not-a-cursor"}, "cursor"),
            ({"cursor": "WzEsMl0"}, "cursor"),  # base64url of [1,2]: well-formed, not ours
            ({"user": "x" * 129}, "user"),
        ],
    )
    async def test_invalid_parameters_are_400_naming_the_parameter(
        self, admin: Admin, params: dict[str, str], name: str
    ) -> None:
        """Each bad filter, limit or cursor is a 400 whose message names the parameter."""
        body = assert_error(await admin.get("/sessions", **params), 400, "invalid_request")
        assert f'"{name}"' in body["message"]

    async def test_pages_follow_the_cursor_to_the_end(self, admin: Admin) -> None:
        """limit=2 over five sessions gives pages of 2, 2, 1 with no repeats; the last has no cursor."""
        await self.seed(admin)
        seen, cursor, sizes = [], None, []
        while True:
            params = {"limit": "2", **({"cursor": cursor} if cursor else {})}
            page = await admin.ok("/sessions", **params)
            sizes.append(len(page["items"]))
            seen += [item["room_name"] for item in page["items"]]
            cursor = page["next_cursor"]
            if cursor is None:
                break
        assert sizes == [2, 2, 1]
        assert seen == ["r4", "r3", "r2", "r1", "r0"]

    async def test_a_page_exactly_full_has_no_cursor(self, admin: Admin) -> None:
        """When the rows fit the limit exactly, next_cursor is null (no empty trailing page)."""
        await self.seed(admin)
        assert (await admin.ok("/sessions", limit="5"))["next_cursor"] is None
        assert (await admin.ok("/sessions", limit="4"))["next_cursor"] is not None

    async def test_an_empty_table_is_one_empty_page(self, admin: Admin) -> None:
        """No sessions: an empty list and no cursor."""
        assert await admin.ok("/sessions") == {"items": [], "next_cursor": None}

    async def test_sessions_created_at_the_same_instant_are_neither_lost_nor_repeated(
        self, admin: Admin
    ) -> None:
        """Rows sharing created_at are ordered by id, so paging one at a time visits each exactly once."""
        rows = [session_row(f"same-{n}", T0) for n in range(4)]
        await insert_sessions(admin.gateway.db, *rows)
        seen, cursor = [], None
        for _ in range(4):
            page = await admin.ok("/sessions", limit="1", **({"cursor": cursor} if cursor else {}))
            seen += [item["id"] for item in page["items"]]
            cursor = page["next_cursor"]
        assert cursor is None
        assert seen == sorted((row["id"] for row in rows), reverse=True)

    async def test_new_sessions_do_not_shift_later_pages(self, admin: Admin) -> None:
        """Sessions started between two page reads appear on no later page: the cursor is keyset, not offset."""
        await self.seed(admin)
        page = await admin.ok("/sessions", limit="2")
        await insert_sessions(admin.gateway.db, session_row("r5", T0 + timedelta(minutes=5)))
        rest = await self.rooms(admin, cursor=page["next_cursor"])
        assert rest == ["r2", "r1", "r0"]

    async def test_a_session_is_shown_with_its_events_in_order(self, admin: Admin) -> None:
        """GET /sessions/{room} returns the session and its webhook events sorted by when they happened."""
        await self.seed(admin)
        now = int(T0.timestamp())
        await admin.webhook(signed(event("participant_joined", "r0", created_at=now + 2, identity="ADA0001")))
        await admin.webhook(signed(event("room_started", "r0", created_at=now + 1)))
        detail = await admin.ok("/sessions/r0")
        assert detail["session"]["room_name"] == "r0"
        assert [item["event"] for item in detail["events"]] == ["room_started", "participant_joined"]
        assert detail["events"][1]["participant_identity"] == "ADA0001"

    async def test_events_of_a_room_lkps_did_not_issue_are_shown_without_a_session(
        self, admin: Admin
    ) -> None:
        """A room known only from webhooks has session null and its events; a room never seen is 404."""
        await admin.webhook(signed(event("room_started", "stranger")))
        detail = await admin.ok("/sessions/stranger")
        assert (detail["session"], len(detail["events"])) == (None, 1)
        assert_error(await admin.get("/sessions/never-seen"), 404, "session_not_found")

    async def test_an_admin_ends_any_session(self, admin: Admin) -> None:
        """DELETE /api/admin/sessions/{room} ends a session the admin did not start, recorded as by admin."""
        await self.seed(admin)
        # No LiveKit answers at the default URL in tests: the call fails before any state changes.
        response = await admin.gateway.client.delete(
            "/api/admin/sessions/r0", headers={"Authorization": f"Bearer {admin.token()}"}
        )
        assert_error(response, 502, "livekit_unavailable")
        ended = await admin.gateway.client.delete(
            "/api/admin/sessions/r4", headers={"Authorization": f"Bearer {admin.token()}"}
        )
        assert ended.status_code == 200, ended.text  # already ended: answered without LiveKit


class TestAudit:
    async def test_every_admin_call_is_recorded(self, admin: Admin) -> None:
        """Reads and writes alike leave who, what, on what and when in admin_actions."""
        await admin.ok("/agents")
        await admin.ok("/sessions", status="ended", limit="10")
        await admin.post(f"/agents/{AGENT_ID}/revoke", {"reason": "test"})
        await admin.post(f"/agents/{AGENT_ID}/unrevoke")
        actions = await admin.actions()
        assert [(row.action, row.target) for row in actions] == [
            ("list_agents", "agents"),
            ("list_sessions", "sessions"),
            ("revoke_agent", AGENT_ID),
            ("unrevoke_agent", AGENT_ID),
        ]
        assert {(row.actor_object_id, row.actor_client_app_id) for row in actions} == {(ADMIN_OID, ADMIN_APP)}
        assert '"status":"ended"' in actions[1].details
        assert '"registrations_revoked":0' in actions[2].details
        assert all(row.request_id for row in actions)

    async def test_reading_and_ending_one_session_are_recorded(self, admin: Admin) -> None:
        """GET and DELETE of /api/admin/sessions/{room} each leave their row, naming the room (and, for the
        end, who ended it)."""
        ended_at = datetime.now(UTC)
        await insert_sessions(
            admin.gateway.db,
            session_row("room-read"),
            session_row("room-ended", status="ended", ended_at=ended_at, ended_by="caller"),
        )
        assert (await admin.get("/sessions/room-read")).status_code == 200
        ended = await admin.gateway.client.delete(
            "/api/admin/sessions/room-ended", headers={"Authorization": f"Bearer {admin.token()}"}
        )
        assert ended.status_code == 200, ended.text
        actions = await admin.actions()
        assert [(row.action, row.target) for row in actions] == [
            ("get_session", "room-read"),
            ("end_session", "room-ended"),
        ]
        assert '"ended_by":"caller"' in actions[1].details
        assert {(row.actor_object_id, row.actor_client_app_id) for row in actions} == {(ADMIN_OID, ADMIN_APP)}


@pytest.mark.parametrize("shuffled", [False, True], ids=["in-order", "shuffled"])
async def test_a_session_is_followed_from_start_to_end_and_its_agent_revoked(
    admin: Admin, shuffled: bool
) -> None:
    """Done when: start a session, feed only webhooks, read it back ended with duration and agent; then
    revoke the agent and see session start and registration refused at once."""
    gateway = admin.gateway
    await gateway.register_agent()
    started = await gateway.start()
    assert started.status_code == 200, started.text
    room = started.json()["room_name"]
    now = int(gateway.clock.now())
    hooks = [
        signed(event("room_started", room, created_at=now + 1)),
        signed(event("participant_joined", room, created_at=now + 2, identity="ADA0001")),
        signed(
            event("participant_joined", room, created_at=now + 3, identity=f"agent-{AGENT_ID}", kind="AGENT")
        ),
        signed(event("room_finished", room, created_at=now + 95)),
    ]
    if shuffled:
        random.Random(4).shuffle(hooks)
    for hook in hooks:
        await admin.webhook(hook)

    [listed] = (await admin.ok("/sessions", agent=AGENT_ID))["items"]
    assert listed["room_name"] == room
    assert (listed["status"], listed["ended_by"], listed["agent_joined"]) == ("ended", "webhook", True)
    assert listed["duration_seconds"] == 94.0
    assert datetime.fromisoformat(listed["started_at"]).timestamp() == now + 1
    detail = await admin.ok(f"/sessions/{room}")
    assert [item["event"] for item in detail["events"]] == [
        "room_started",
        "participant_joined",
        "participant_joined",
        "room_finished",
    ]

    assert (await admin.post(f"/agents/{AGENT_ID}/revoke")).status_code == 200
    assert_error(await gateway.start(), 404, "agent_not_connected")
    refused = await gateway.client.post(
        "/api/agent/register", headers={"Authorization": f"Bearer {gateway.agent_token()}"}, json={}
    )
    assert_error(refused, 403, "agent_revoked")


async def test_the_admin_api_is_documented(admin: Admin) -> None:
    """Every admin operation is in the OpenAPI document under the admin tag, with its filters and body."""
    paths = (await admin.gateway.client.get("/schema/openapi.json")).json()["paths"]
    operations = [
        (method.upper(), path, operation)
        for path, item in paths.items()
        if path.startswith("/api/admin/")
        for method, operation in item.items()
    ]
    assert {
        (method, path.replace("{app_id}", AGENT_ID).replace("{room_name}", "some-room"))
        for method, path, _ in operations
    } == set(ROUTES)
    assert all(operation["tags"] == ["admin"] for _, _, operation in operations)
    listing = paths["/api/admin/sessions"]["get"]
    assert [parameter["name"] for parameter in listing["parameters"]] == [
        "agent",
        "client_app",
        "user",
        "status",
        "since",
        "until",
        "limit",
        "cursor",
    ]
    assert "requestBody" in paths["/api/admin/agents/{app_id}/revoke"]["post"]
