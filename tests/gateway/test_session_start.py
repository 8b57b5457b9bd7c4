"""`POST /api/session/start` end to end: the contract of the client guide, through the real app."""

from __future__ import annotations

import json
import re
import uuid

import pytest
from sqlalchemy import select

from gateway.livekit_tokens import DEPARTURE_TIMEOUT_SECONDS, MAX_PARTICIPANTS
from gateway.persistence.tables import sessions
from gateway.session_start import new_session_id
from tests.gateway.conftest import AGENT_ID, Gateway
from tests.support.entra import SERVICE_CLIENT_ID, SERVICE_OID, SPA_CLIENT_ID, USER_OID
from tests.support.livekit import verify_node, verify_python

pytestmark = pytest.mark.anyio
ROOM = re.compile(r"^(?P<user>[A-Za-z0-9._-]+)-(?P<agent>[0-9a-f-]{36})-(?P<ms>\d{13})-(?P<hex>[0-9a-f]{8})$")


def assert_error(response, status: int, code: str, message: str | None = None) -> dict:  # type: ignore[no-untyped-def]
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error", "message", "request_id"}
    assert body["error"] == code
    assert body["request_id"] == response.headers["x-request-id"]
    if message is not None:
        assert body["message"] == message
    return body


class TestSuccess:
    async def test_user_gets_a_token_for_one_fresh_room_with_the_agent(self, gateway: Gateway) -> None:
        """A user token yields 200 with a room named after the user and a token for exactly that room."""
        await gateway.register_agent()
        token = gateway.entra.mint_user_token(cwid="AB12C", name="Ada Lovelace")
        response = await gateway.start(
            token, {"agent_entra_app_id": AGENT_ID, "metadata": {"language": "en"}}
        )
        assert response.status_code == 200, response.text
        body = response.json()
        assert set(body) == {
            "room_name",
            "livekit_url",
            "participant_token",
            "participant_identity",
            "expires_at",
        }
        assert body["livekit_url"] == gateway.settings.livekit_url
        match = ROOM.match(body["room_name"])
        assert match is not None
        assert (match["user"], match["agent"]) == ("AB12C", AGENT_ID)
        assert abs(int(match["ms"]) - gateway.clock.now() * 1000) < 1000

        claims = verify_python(body["participant_token"])
        assert claims.identity == "AB12C" == body["participant_identity"]
        assert claims.name == "Ada Lovelace"
        assert claims.kind == "standard"
        assert claims.video is not None
        assert claims.video.room_join is True
        assert claims.video.room == body["room_name"]
        assert claims.video.can_publish is True
        assert claims.video.can_subscribe is True
        assert claims.video.can_publish_data is True
        assert claims.video.can_update_own_metadata is False
        assert claims.video.room_admin is None
        assert claims.video.room_create is None
        assert claims.video.agent is None
        assert claims.attributes == {
            "lkps.client_app_id": SPA_CLIENT_ID,
            "lkps.object_id": USER_OID,
            "lkps.caller_kind": "user",
        }
        config = claims.room_config
        assert config is not None
        assert config.max_participants == MAX_PARTICIPANTS == 2
        assert config.departure_timeout == DEPARTURE_TIMEOUT_SECONDS == 30
        assert config.sync_streams is True
        assert [(a.agent_name, json.loads(a.metadata)) for a in config.agents] == [
            (AGENT_ID, {"language": "en"})
        ]
        assert body["expires_at"] == int(gateway.clock.now()) + 600
        assert await gateway.session_rows() == 1

    async def test_app_caller_is_identified_by_its_client_id(self, gateway: Gateway) -> None:
        """A backend's app-only token gets identity `app-<client id>` and a room named after the client id."""
        await gateway.register_agent()
        response = await gateway.start(gateway.entra.mint_app_token())
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["participant_identity"] == f"app-{SERVICE_CLIENT_ID}"
        assert body["room_name"].startswith(f"{SERVICE_CLIENT_ID}-{AGENT_ID}-")
        claims = verify_python(body["participant_token"])
        assert claims.attributes["lkps.object_id"] == SERVICE_OID
        assert claims.attributes["lkps.caller_kind"] == "app"

    async def test_each_start_gets_its_own_room(self, gateway: Gateway) -> None:
        """Two starts by the same user give two different rooms (roomConfig applies only on creation)."""
        await gateway.register_agent()
        first, second = (await gateway.start()).json(), (await gateway.start()).json()
        assert first["room_name"] != second["room_name"]
        assert await gateway.session_rows() == 2

    async def test_agent_id_is_accepted_in_upper_case(self, gateway: Gateway) -> None:
        """GUIDs compare case-insensitively; the room and dispatch use the canonical lower-case form."""
        await gateway.register_agent()
        response = await gateway.start(body={"agent_entra_app_id": AGENT_ID.upper()})
        assert response.status_code == 200, response.text
        assert AGENT_ID in response.json()["room_name"]

    async def test_session_row_records_who_which_client_which_agent_and_room(self, gateway: Gateway) -> None:
        """The audit row names the caller, its client app, the agent, the room and the request."""
        await gateway.register_agent()
        response = await gateway.start()
        body = response.json()
        async with gateway.db.connect() as conn:
            row = (await conn.execute(select(sessions))).one()
        assert row.room_name == body["room_name"]
        assert row.agent_app_id == AGENT_ID
        assert row.caller_object_id == USER_OID
        assert row.client_app_id == SPA_CLIENT_ID
        assert row.caller_kind == "user"
        assert row.participant_identity == body["participant_identity"]
        assert row.request_id == response.headers["x-request-id"]
        assert int(row.token_expires_at.timestamp()) == body["expires_at"]


# LiveKit's ValidateDeployment (livekit/protocol agent/environment.go): at most 64 bytes, no "_", no byte
# up to the space, no DEL.
INVALID_DEPLOYMENTS = [
    ("blue_green", 'must not contain "_" (reserved by LiveKit) (position 4)'),
    ("x" * 65, "is 65 bytes; a LiveKit deployment is at most 64"),
    ("\u00e9" * 33, "is 66 bytes; a LiveKit deployment is at most 64"),
    ("two words", "must not contain U+0020 (position 3)"),
    ("tab\there", "U+0009"),
    ("del\x7f", "U+007F"),
]


class TestDeployment:
    async def test_deployment_is_dispatched_in_the_token_and_recorded(self, gateway: Gateway) -> None:
        """A `deployment` reaches the token's agent dispatch, read alike by both verifiers, and the row."""
        await gateway.register_agent()
        response = await gateway.start(body={"agent_entra_app_id": AGENT_ID, "deployment": "staging"})
        assert response.status_code == 200, response.text
        token = response.json()["participant_token"]
        config = verify_python(token).room_config
        assert config is not None
        assert [(a.agent_name, a.deployment) for a in config.agents] == [(AGENT_ID, "staging")]
        [node] = verify_node([token])
        assert node["claims"]["roomConfig"]["agents"] == [
            {"agentName": AGENT_ID, "metadata": "{}", "deployment": "staging"}
        ]
        async with gateway.db.connect() as conn:
            assert (await conn.execute(select(sessions.c.deployment))).scalar_one() == "staging"

    async def test_no_deployment_is_livekit_default_and_left_out_of_the_token(self, gateway: Gateway) -> None:
        """Without `deployment` the dispatch names none (LiveKit's default workers) and the row holds ""."""
        await gateway.register_agent()
        response = await gateway.start()
        [node] = verify_node([response.json()["participant_token"]])
        assert "deployment" not in node["claims"]["roomConfig"]["agents"][0]
        async with gateway.db.connect() as conn:
            assert (await conn.execute(select(sessions.c.deployment))).scalar_one() == ""

    async def test_a_deployment_of_64_bytes_with_any_other_character_is_accepted(
        self, gateway: Gateway
    ) -> None:
        """LiveKit's limit is 64 bytes; dots, dashes, slashes and letters beyond ASCII are allowed."""
        await gateway.register_agent()
        name = "eu-west.v2/caf\u00e9-" + "x" * 47
        assert len(name.encode()) == 64
        response = await gateway.start(body={"agent_entra_app_id": AGENT_ID, "deployment": name})
        assert response.status_code == 200, response.text
        config = verify_python(response.json()["participant_token"]).room_config
        assert config is not None
        assert config.agents[0].deployment == name

    @pytest.mark.parametrize(("deployment", "problem"), INVALID_DEPLOYMENTS)
    async def test_an_invalid_deployment_is_a_400_naming_the_field(
        self, gateway: Gateway, deployment: str, problem: str
    ) -> None:
        """Whatever LiveKit's rules refuse is a 400 naming "deployment" and the problem; nothing is written."""
        await gateway.register_agent()
        response = await gateway.start(body={"agent_entra_app_id": AGENT_ID, "deployment": deployment})
        error = assert_error(response, 400, "invalid_request")
        assert error["message"].startswith('"deployment"')
        assert problem in error["message"]
        assert await gateway.session_rows() == 0

    async def test_a_deployment_that_is_not_a_string_is_a_400(self, gateway: Gateway) -> None:
        """`deployment` must be a string."""
        await gateway.register_agent()
        response = await gateway.start(body={"agent_entra_app_id": AGENT_ID, "deployment": 1})
        assert_error(response, 400, "invalid_request", '"deployment" must be a string')


class TestAgentAvailability:
    async def test_unregistered_agent_is_not_connected(self, gateway: Gateway) -> None:
        """An agent without a registration gives the documented 404 and writes nothing."""
        response = await gateway.start()
        assert_error(response, 404, "agent_not_connected", f"Agent with app ID '{AGENT_ID}' is not connected")
        assert await gateway.session_rows() == 0

    async def test_expired_registration_is_not_connected(self, gateway: Gateway) -> None:
        """Once the agent's registration (its token lifetime) has passed, the agent is not connected."""
        await gateway.register_agent()
        gateway.clock.advance(gateway.settings.agent_token_ttl_seconds + 5)
        fresh_user_token = gateway.entra.mint_user_token()
        assert_error(await gateway.start(fresh_user_token), 404, "agent_not_connected")

    async def test_enforcing_agent_without_graph_credentials_fails_closed(self, gateway: Gateway) -> None:
        """If the agent enforces client authorization and lkps cannot check it, the answer is 503, not 200."""
        await gateway.register_agent(enforce=True)
        response = await gateway.start()
        assert_error(response, 503, "service_unavailable")
        assert "Retry-After" in response.headers
        assert await gateway.session_rows() == 0


class TestBadRequests:
    @pytest.mark.parametrize(
        ("body", "message"),
        [
            ({}, '"agent_entra_app_id" is required'),
            ({"metadata": {}}, '"agent_entra_app_id" is required'),
            ({"agent_entra_app_id": 42}, '"agent_entra_app_id" must be a string'),
            (
                {"agent_entra_app_id": "not-a-uuid"},
                '"agent_entra_app_id" must be a UUID: the agent\'s Entra application (client) id',
            ),
            ({"agent_entra_app_id": AGENT_ID, "metadata": []}, '"metadata" must be a JSON object'),
            ({"agent_entra_app_id": AGENT_ID, "metadata": "x"}, '"metadata" must be a JSON object'),
            (
                {"agent_entra_app_id": AGENT_ID, "room_name": "mine"},
                'Unknown field "room_name"; the allowed fields are: agent_entra_app_id, metadata, deployment',
            ),
            (
                {"agent_entra_app_id": AGENT_ID, "metadata": {f"k{i}": i for i in range(51)}},
                '"metadata" has 51 keys; at most 50 are allowed',
            ),
            ([AGENT_ID], "The body must be a JSON object."),
        ],
    )
    async def test_invalid_body_is_a_400_naming_the_field(
        self, gateway: Gateway, body: object, message: str
    ) -> None:
        """Each malformed body gets 400 with an actionable message and writes nothing."""
        await gateway.register_agent()
        assert_error(await gateway.start(body=body), 400, "invalid_request", message)
        assert await gateway.session_rows() == 0

    async def test_metadata_over_10_kb_is_refused(self, gateway: Gateway) -> None:
        """Metadata whose JSON exceeds 10 KB is refused with its size in the message."""
        await gateway.register_agent()
        body = {"agent_entra_app_id": AGENT_ID, "metadata": {"blob": "x" * 10_240}}
        error = assert_error(await gateway.start(body=body), 400, "invalid_request")
        assert "at most 10240 (10 KB)" in error["message"]

    async def test_metadata_of_exactly_the_limits_is_accepted(self, gateway: Gateway) -> None:
        """50 keys and exactly 10 KB of JSON are within the contract."""
        await gateway.register_agent()
        metadata = {f"k{i:02d}": "v" for i in range(50)}
        metadata["k00"] = "x" * (10_240 - len(json.dumps(metadata, separators=(",", ":"))) + 1)
        assert len(json.dumps(metadata, separators=(",", ":"))) == 10_240
        response = await gateway.start(body={"agent_entra_app_id": AGENT_ID, "metadata": metadata})
        assert response.status_code == 200, response.text

    async def test_invalid_json_is_a_400(self, gateway: Gateway) -> None:
        """A body that is not JSON gets 400, not 500."""
        response = await gateway.client.post(
            "/api/session/start",
            headers={"Authorization": f"Bearer {gateway.entra.mint_user_token()}"},
            content=b"{not json",
        )
        assert_error(response, 400, "invalid_request", "The body is not valid JSON.")

    async def test_oversized_body_is_a_413(self, gateway: Gateway) -> None:
        """A body far beyond the metadata limit is cut off with 413 before decoding."""
        response = await gateway.client.post(
            "/api/session/start",
            headers={"Authorization": f"Bearer {gateway.entra.mint_user_token()}"},
            content=b"{" + b" " * 70_000 + b"}",
        )
        assert_error(response, 413, "payload_too_large")

    async def test_authentication_comes_before_body_validation(self, gateway: Gateway) -> None:
        """Without a token, even a malformed body is answered 401: nothing is revealed to anonymous callers."""
        response = await gateway.client.post("/api/session/start", content=b"{not json")
        assert_error(response, 401, "missing_token")
        assert response.headers["www-authenticate"] == 'Bearer realm="lkps"'


class TestAuthentication:
    async def test_invalid_token_gets_rfc6750_challenge(self, gateway: Gateway) -> None:
        """An expired token is a 401 whose WWW-Authenticate names invalid_token and the reason."""
        token = gateway.entra.mint_user_token(exp=int(gateway.clock.now()) - 3600)
        response = await gateway.start(token)
        assert_error(response, 401, "invalid_token")
        assert response.headers["www-authenticate"] == (
            'Bearer realm="lkps", error="invalid_token", error_description="token_expired"'
        )

    async def test_missing_scope_is_403_with_insufficient_scope(self, gateway: Gateway) -> None:
        """A valid user token without the required scope is refused with 403 insufficient_scope."""
        await gateway.register_agent()
        response = await gateway.start(gateway.entra.mint_user_token(scp="User.Read"))
        assert_error(response, 403, "forbidden")
        assert 'error="insufficient_scope"' in response.headers["www-authenticate"]

    async def test_agent_token_cannot_start_sessions_without_the_client_role(self, gateway: Gateway) -> None:
        """An app token carrying only the agent role is not a client: 403."""
        await gateway.register_agent()
        assert_error(await gateway.start(gateway.agent_token()), 403, "forbidden")


def test_session_ids_are_random_version_4_uuids() -> None:
    """Each session id is the canonical text of an RFC 9562 version-4 UUID, its random digits all used."""
    ids = [new_session_id() for _ in range(2000)]
    assert len(set(ids)) == len(ids)
    parsed = [uuid.UUID(session_id) for session_id in ids]
    assert all(u.version == 4 and u.variant == uuid.RFC_4122 for u in parsed)
    assert [str(u) for u in parsed] == ids
    assert {session_id[19] for session_id in ids} == set("89ab")  # the variant digit takes each value
    assert {session_id[0] for session_id in ids} == set("0123456789abcdef")
