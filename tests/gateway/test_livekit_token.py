"""`POST /api/livekit/token`: session start in LiveKit's standard token endpoint format, and CORS."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
from collections.abc import AsyncIterator
from typing import Any

import pytest
import requests
from sqlalchemy import select

from bench.harness import seed_presence
from gateway.livekit_format import LiveKitTokenRequest
from gateway.persistence.tables import sessions
from tests.gateway.conftest import AGENT_ID, Gateway, running_gateway
from tests.gateway.test_session_start import INVALID_DEPLOYMENTS, ROOM, assert_error
from tests.support.dev_service import DevService
from tests.support.livekit import NODE_DIR, verify_node, verify_python

SPA_ORIGIN = "http://127.0.0.1:5173"
REFUSAL = "cannot be chosen by the caller"


def dispatch(agent_name: str = AGENT_ID, **fields: Any) -> dict[str, Any]:
    """The body livekit-client sends for `fetch({agentName, agentMetadata, ...})`."""
    return {"room_config": {"agents": [{"agent_name": agent_name, **fields}]}}


async def request_token(gateway: Gateway, body: Any, token: str | None = None, **headers: str) -> Any:
    if token is None:
        token = gateway.entra.mint_user_token()
    return await gateway.client.post(
        "/api/livekit/token", headers={"Authorization": f"Bearer {token}", **headers}, json=body
    )


@pytest.fixture
async def cors_gateway(database_url: str) -> AsyncIterator[Gateway]:
    async for running in running_gateway(database_url, cors_allowed_origins=(SPA_ORIGIN,)):
        yield running


@pytest.mark.anyio
class TestSessionThroughLiveKitFormat:
    async def test_returns_201_with_a_token_for_a_fresh_room_and_the_agent(self, gateway: Gateway) -> None:
        """A LiveKit-format request yields 201 `{server_url, participant_token, room_name}` like a session start."""
        await gateway.register_agent()
        token = gateway.entra.mint_user_token(cwid="AB12C", name="Ada Lovelace")
        response = await request_token(gateway, dispatch(metadata='{"language": "en"}'), token)
        assert response.status_code == 201, response.text
        body = response.json()
        assert set(body) == {"server_url", "participant_token", "room_name"}
        assert body["server_url"] == gateway.settings.livekit_url
        match = ROOM.match(body["room_name"])
        assert match is not None
        assert (match["user"], match["agent"]) == ("AB12C", AGENT_ID)
        claims = verify_python(body["participant_token"])
        assert claims.identity == "AB12C"
        assert claims.name == "Ada Lovelace"
        assert claims.video is not None
        assert claims.video.room == body["room_name"]
        assert claims.video.room_admin is None
        assert claims.video.agent is None
        assert claims.room_config is not None
        assert claims.room_config.max_participants == 2
        assert [(a.agent_name, json.loads(a.metadata)) for a in claims.room_config.agents] == [
            (AGENT_ID, {"language": "en"})
        ]
        assert await gateway.session_rows() == 1

    async def test_participant_name_changes_the_display_name_only(self, gateway: Gateway) -> None:
        """`participant_name` becomes the shown name; the identity still comes from the Entra token."""
        await gateway.register_agent()
        token = gateway.entra.mint_user_token(cwid="AB12C")
        response = await request_token(gateway, {"participant_name": "  Ada  ", **dispatch()}, token)
        assert response.status_code == 201, response.text
        claims = verify_python(response.json()["participant_token"])
        assert (claims.identity, claims.name) == ("AB12C", "Ada")

    @pytest.mark.parametrize(
        ("sent", "shown"),
        [
            ("Ada\u202eecalevol", "Adaecalevol"),  # RIGHT-TO-LEFT OVERRIDE
            ("Ada\u0000\nLovelace\r", "AdaLovelace"),
            ("\u200bAda\u2066 L.\u2069\ufeff", "Ada L."),
            ("\u0007\u202e \u200b", "Alice L."),  # nothing left: the name from the Entra token
        ],
    )
    async def test_participant_name_is_cleaned_like_a_name_from_entra(
        self, gateway: Gateway, sent: str, shown: str
    ) -> None:
        """Control characters, newlines, bidi overrides and invisible formatting are removed from
        `participant_name` before it becomes the name others see; an empty result falls back to the
        token's name."""
        await gateway.register_agent()
        token = gateway.entra.mint_user_token(name="Alice L.")
        response = await request_token(gateway, {"participant_name": sent, **dispatch()}, token)
        assert response.status_code == 201, response.text
        assert verify_python(response.json()["participant_token"]).name == shown

    async def test_missing_metadata_is_an_empty_object_and_agent_id_case_is_normalised(
        self, gateway: Gateway
    ) -> None:
        """Without metadata the agent gets `{}`; an upper-case agent id is canonicalised as in session start."""
        await gateway.register_agent()
        response = await request_token(gateway, dispatch(AGENT_ID.upper()))
        assert response.status_code == 201, response.text
        claims = verify_python(response.json()["participant_token"])
        assert claims.room_config is not None
        assert [(a.agent_name, a.metadata) for a in claims.room_config.agents] == [(AGENT_ID, "{}")]

    async def test_same_authentication_and_agent_checks_as_session_start(self, gateway: Gateway) -> None:
        """No token is a 401 whatever the body; an unregistered agent is the documented 404; nothing is written."""
        response = await gateway.client.post("/api/livekit/token", json={"room_name": "x"})
        assert_error(response, 401, "missing_token")
        assert_error(
            await request_token(gateway, dispatch()),
            404,
            "agent_not_connected",
            f"Agent with app ID '{AGENT_ID}' is not connected",
        )
        assert await gateway.session_rows() == 0


@pytest.mark.anyio
class TestRefusedFields:
    @pytest.mark.parametrize(
        ("body", "field"),
        [
            ({"room_name": "my-room", **dispatch()}, "room_name"),
            ({"participant_identity": "admin", **dispatch()}, "participant_identity"),
            ({"participant_metadata": "{}", **dispatch()}, "participant_metadata"),
            ({"participant_attributes": {"role": "admin"}, **dispatch()}, "participant_attributes"),
            (
                {"room_config": {"max_participants": 50, **dispatch()["room_config"]}},
                "room_config.max_participants",
            ),
            ({"room_config": {"egress": {}, **dispatch()["room_config"]}}, "room_config.egress"),
            (dispatch(attributes={"k": "v"}), "room_config.agents[0].attributes"),
            ({"roomName": "camel", **dispatch()}, "roomName"),
        ],
    )
    async def test_fields_the_caller_may_not_choose_are_refused_by_name(
        self, gateway: Gateway, body: dict[str, Any], field: str
    ) -> None:
        """Room name, identity, participant metadata/attributes and room settings are 400s naming the field."""
        await gateway.register_agent()
        error = assert_error(await request_token(gateway, body), 400, "invalid_request")
        assert error["message"].startswith(f'"{field}" {REFUSAL}: ')
        assert await gateway.session_rows() == 0

    @pytest.mark.parametrize(
        ("body", "message"),
        [
            ({}, '"room_config.agents[0].agent_name" is required'),
            ({"participant_name": "Ada"}, '"room_config.agents[0].agent_name" is required'),
            (
                {"room_config": {"agents": [{"metadata": "{}"}]}},
                '"room_config.agents[0].agent_name" is required',
            ),
            ({"room_config": {"agents": []}}, '"room_config.agents" must name exactly one agent'),
            (
                {"room_config": {"agents": [{"agent_name": AGENT_ID}, {"agent_name": AGENT_ID}]}},
                '"room_config.agents" must name exactly one agent',
            ),
            (
                dispatch("my-agent"),
                '"room_config.agents[0].agent_name" must be a UUID: the agent\'s Entra application (client) id',
            ),
            (dispatch(7), '"room_config.agents[0].agent_name" must be a string'),
            (
                dispatch(metadata={"language": "en"}),
                '"room_config.agents[0].metadata" must be a string',
            ),
            (
                dispatch(metadata="[1, 2]"),
                '"room_config.agents[0].metadata" must be a JSON object encoded as a string, e.g. "{}"',
            ),
            (
                dispatch(metadata="{not json"),
                '"room_config.agents[0].metadata" must be a JSON object encoded as a string, e.g. "{}"',
            ),
            (
                dispatch(metadata=json.dumps({f"k{i}": i for i in range(51)})),
                '"metadata" has 51 keys; at most 50 are allowed',
            ),
        ],
    )
    async def test_agent_and_metadata_follow_the_session_start_rules(
        self, gateway: Gateway, body: dict[str, Any], message: str
    ) -> None:
        """Exactly one agent named by its app id, metadata as JSON object text within the same 50-key limit."""
        await gateway.register_agent()
        assert_error(await request_token(gateway, body), 400, "invalid_request", message)

    async def test_deployment_is_dispatched_in_the_token_and_recorded(self, gateway: Gateway) -> None:
        """`room_config.agents[0].deployment` reaches the token's dispatch (both verifiers) and the row."""
        await gateway.register_agent()
        response = await request_token(gateway, dispatch(deployment="staging"))
        assert response.status_code == 201, response.text
        token = response.json()["participant_token"]
        config = verify_python(token).room_config
        assert config is not None
        assert [(a.agent_name, a.deployment) for a in config.agents] == [(AGENT_ID, "staging")]
        [node] = verify_node([token])
        assert node["claims"]["roomConfig"]["agents"][0]["deployment"] == "staging"
        async with gateway.db.connect() as conn:
            assert (await conn.execute(select(sessions.c.deployment))).scalar_one() == "staging"

    @pytest.mark.parametrize(("deployment", "problem"), INVALID_DEPLOYMENTS)
    async def test_an_invalid_deployment_is_a_400_naming_the_field(
        self, gateway: Gateway, deployment: str, problem: str
    ) -> None:
        """LiveKit's deployment rules apply here too, with the field named by its path; nothing is written."""
        await gateway.register_agent()
        error = assert_error(
            await request_token(gateway, dispatch(deployment=deployment)), 400, "invalid_request"
        )
        assert error["message"].startswith('"room_config.agents[0].deployment"')
        assert problem in error["message"]
        assert await gateway.session_rows() == 0

    async def test_metadata_over_10_kb_is_refused(self, gateway: Gateway) -> None:
        """The 10 KB metadata limit of session start applies to the decoded metadata string too."""
        await gateway.register_agent()
        body = dispatch(metadata=json.dumps({"blob": "x" * (10 * 1024)}))
        error = assert_error(await request_token(gateway, body), 400, "invalid_request")
        assert error["message"].startswith('"metadata" is ')


@pytest.mark.anyio
class TestCors:
    async def test_preflight_from_an_allowed_origin_is_answered(self, cors_gateway: Gateway) -> None:
        """A browser's preflight for POST with Authorization and JSON gets 204 and the allow headers."""
        response = await cors_gateway.client.options(
            "/api/livekit/token",
            headers={
                "Origin": SPA_ORIGIN,
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "authorization, content-type",
            },
        )
        assert response.status_code == 204, response.text
        assert response.headers["access-control-allow-origin"] == SPA_ORIGIN
        assert "POST" in response.headers["access-control-allow-methods"]
        allowed_headers = response.headers["access-control-allow-headers"].lower()
        assert "authorization" in allowed_headers
        assert "content-type" in allowed_headers
        assert "access-control-allow-credentials" not in response.headers

    async def test_preflight_from_another_origin_is_refused(self, cors_gateway: Gateway) -> None:
        """An origin not in LKPS_CORS_ALLOWED_ORIGINS gets no allow-origin header, so the browser blocks it."""
        response = await cors_gateway.client.options(
            "/api/livekit/token",
            headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"},
        )
        assert response.status_code == 400
        assert "access-control-allow-origin" not in response.headers

    async def test_responses_and_errors_are_readable_by_the_allowed_origin(
        self, cors_gateway: Gateway
    ) -> None:
        """Both the 201 and an error carry the allow-origin header and expose X-Request-ID to the page."""
        await cors_gateway.register_agent()
        ok = await request_token(cors_gateway, dispatch(), Origin=SPA_ORIGIN)
        assert ok.status_code == 201, ok.text
        refused = await request_token(cors_gateway, {"room_name": "x"}, Origin=SPA_ORIGIN)
        assert refused.status_code == 400
        for response in (ok, refused):
            assert response.headers["access-control-allow-origin"] == SPA_ORIGIN
            assert response.headers["access-control-expose-headers"] == "X-Request-ID"

    async def test_cors_is_off_unless_configured(self, gateway: Gateway) -> None:
        """With no origins configured, no response grants any origin access."""
        response = await gateway.client.options(
            "/api/livekit/token",
            headers={"Origin": SPA_ORIGIN, "Access-Control-Request-Method": "POST"},
        )
        assert "access-control-allow-origin" not in response.headers


@pytest.mark.anyio
async def test_openapi_documents_the_livekit_format(gateway: Gateway) -> None:
    """The token endpoint documents exactly the accepted request fields and its 201 response."""
    document = (await gateway.client.get("/schema/openapi.json")).json()
    operation = document["paths"]["/api/livekit/token"]["post"]
    schemas = document["components"]["schemas"]
    request_ref = operation["requestBody"]["content"]["application/json"]["schema"]["$ref"]
    assert set(schemas[request_ref.rsplit("/", 1)[-1]]["properties"]) == set(
        LiveKitTokenRequest.__struct_fields__
    )
    created = operation["responses"]["201"]["content"]["application/json"]["schema"]["$ref"]
    assert set(schemas[created.rsplit("/", 1)[-1]]["properties"]) == {
        "server_url",
        "participant_token",
        "room_name",
    }
    assert {"400", "401", "403", "404", "503"} <= set(operation["responses"])


def token_source_fetch(service: DevService, authorization: str, options: dict[str, Any]) -> dict[str, Any]:
    """livekit-client's `TokenSource.endpoint(url, {headers: {Authorization}}).fetch(options)`, in Node."""
    node = shutil.which("node")
    assert node, "node is required for livekit-client"
    request = {"url": f"{service.url}/api/livekit/token", "authorization": authorization, "options": options}
    result = subprocess.run(
        [node, str(NODE_DIR / "token-source.mjs")],
        input=json.dumps(request),
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    return json.loads(result.stdout)  # type: ignore[no-any-return]


@pytest.mark.slow
class TestLiveKitClientTokenSource:
    """The real livekit-client `TokenSource.endpoint` (Node) against a running `lkps dev`."""

    def test_token_source_endpoint_gets_a_verified_token_with_the_agent_dispatch(
        self, lkps_dev: DevService
    ) -> None:
        """`fetch({agentName, agentMetadata, participantName, deployment})` returns a token both LiveKit SDKs
        verify, with the deployment in its dispatch."""
        # The demo agent's worker serves the default deployment; `staging` is made to count as connected.
        database = f"sqlite+aiosqlite:///{lkps_dev.state.dir / 'lkps.db'}"
        asyncio.run(seed_presence(database, lkps_dev.agent_id, "staging"))
        answer = token_source_fetch(
            lkps_dev,
            f"Bearer {lkps_dev.user_token('alice')}",
            {
                "agentName": lkps_dev.agent_id,
                "agentMetadata": '{"language": "en"}',
                "participantName": "Alice L.",
                "deployment": "staging",
            },
        )
        assert set(answer) == {"serverUrl", "participantToken"}, answer
        assert answer["serverUrl"] == lkps_dev.livekit_url
        identity = lkps_dev.state.identity
        claims = verify_python(
            answer["participantToken"], identity.livekit_api_key, identity.livekit_api_secret
        )
        assert (claims.identity, claims.name) == ("ALICE", "Alice L.")
        assert claims.room_config is not None
        assert [(a.agent_name, json.loads(a.metadata), a.deployment) for a in claims.room_config.agents] == [
            (lkps_dev.agent_id, {"language": "en"}, "staging")
        ]
        [node] = verify_node(
            [answer["participantToken"]], identity.livekit_api_key, identity.livekit_api_secret
        )
        assert node["claims"]["roomConfig"]["agents"][0]["agentName"] == lkps_dev.agent_id
        assert node["claims"]["roomConfig"]["agents"][0]["deployment"] == "staging"

    def test_token_source_surfaces_refusals(self, lkps_dev: DevService) -> None:
        """A room name asked through livekit-client, or no Entra token, fails with lkps's 400 / 401."""
        refused = token_source_fetch(
            lkps_dev, f"Bearer {lkps_dev.user_token()}", {"agentName": lkps_dev.agent_id, "roomName": "mine"}
        )
        assert "received 400" in refused["error"]
        assert "room_name" in refused["error"]
        assert REFUSAL in refused["error"]
        unauthenticated = token_source_fetch(lkps_dev, "Bearer not-a-token", {"agentName": lkps_dev.agent_id})
        assert "received 401" in unauthenticated["error"]

    def test_browser_preflight_is_answered_for_the_configured_origin(self, lkps_dev: DevService) -> None:
        """`lkps dev --cors-origin` lets that origin's preflight through, over a real socket."""
        response = requests.options(
            f"{lkps_dev.url}/api/livekit/token",
            headers={
                "Origin": lkps_dev.spa_origin,
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "authorization,content-type",
            },
            timeout=10,
        )
        assert response.status_code == 204
        assert response.headers["Access-Control-Allow-Origin"] == lkps_dev.spa_origin
