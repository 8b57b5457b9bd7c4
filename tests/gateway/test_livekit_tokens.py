"""LiveKit tokens minted by lkps, checked by both official verifiers and against livekit-api's own builder."""

from __future__ import annotations

import base64
import json
from datetime import timedelta

import pytest
from livekit import api

from authz.clock import SystemClock
from gateway.livekit_tokens import LiveKitMinter
from tests.support.livekit import API_KEY, API_SECRET, verify_node, verify_python

ROOM = "ALICE-3f0c5a53-7a53-4c77-8d3e-5c0a2c4f1c11-1800000000000-a1b2c3d4"
AGENT = "3f0c5a53-7a53-4c77-8d3e-5c0a2c4f1c11"
ATTRIBUTES = {"lkps.client_app_id": "c1", "lkps.object_id": "o1", "lkps.caller_kind": "user"}


def _payload(token: str) -> dict:
    segment = token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4)))


def _header(token: str) -> dict:
    segment = token.split(".", maxsplit=1)[0]
    return json.loads(base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4)))


@pytest.fixture
def minter() -> LiveKitMinter:
    return LiveKitMinter(API_KEY, API_SECRET, SystemClock())


def _participant(minter: LiveKitMinter, metadata: str = '{"language":"en"}'):
    return minter.participant_token(
        identity="ALICE",
        name="Alice Example",
        room=ROOM,
        attributes=ATTRIBUTES,
        agent_name=AGENT,
        agent_metadata=metadata,
        ttl_seconds=600,
    )


class TestParticipantToken:
    def test_every_claim_is_exactly_as_specified(self, minter: LiveKitMinter) -> None:
        """The participant token carries exactly the identity, grants, attributes and room config lkps decides."""
        minted = _participant(minter)
        claims = _payload(minted.jwt)
        assert _header(minted.jwt) == {"alg": "HS256", "typ": "JWT"}
        assert claims == {
            "sub": "ALICE",
            "name": "Alice Example",
            "kind": "standard",
            "video": {
                "roomJoin": True,
                "room": ROOM,
                "canPublish": True,
                "canSubscribe": True,
                "canPublishData": True,
                "canUpdateOwnMetadata": False,
            },
            "attributes": ATTRIBUTES,
            "roomConfig": {
                "departureTimeout": 30,
                "maxParticipants": 2,
                "syncStreams": True,
                "agents": [{"agentName": AGENT, "metadata": '{"language":"en"}'}],
            },
            "iss": API_KEY,
            "nbf": claims["nbf"],
            "exp": claims["nbf"] + 600,
        }
        assert minted.expires_at == claims["exp"]

    def test_python_verifier_reads_every_grant(self, minter: LiveKitMinter) -> None:
        """livekit-api's TokenVerifier accepts the token and parses grants and room configuration."""
        claims = verify_python(_participant(minter).jwt)
        assert claims.identity == "ALICE"
        assert claims.name == "Alice Example"
        assert claims.kind == "standard"
        assert claims.video is not None
        assert claims.video.room_join is True
        assert claims.video.room == ROOM
        assert claims.video.room_admin is None
        assert claims.video.room_create is None
        assert claims.video.agent is None
        assert claims.video.can_update_own_metadata is False
        assert claims.attributes == ATTRIBUTES
        config = claims.room_config
        assert config is not None
        assert config.max_participants == 2
        assert config.departure_timeout == 30
        assert config.sync_streams is True
        assert [(a.agent_name, a.metadata) for a in config.agents] == [(AGENT, '{"language":"en"}')]

    def test_matches_what_livekit_api_builds(self, minter: LiveKitMinter) -> None:
        """The hand-built JWT has the same claims as livekit-api's AccessToken builder would produce."""
        ours = _payload(_participant(minter).jwt)
        reference = _payload(
            api.AccessToken(API_KEY, API_SECRET)
            .with_identity("ALICE")
            .with_name("Alice Example")
            .with_kind("standard")
            .with_attributes(ATTRIBUTES)
            .with_ttl(timedelta(seconds=600))
            .with_grants(
                api.VideoGrants(
                    room_join=True,
                    room=ROOM,
                    can_publish=True,
                    can_subscribe=True,
                    can_publish_data=True,
                    can_update_own_metadata=False,
                )
            )
            .with_room_config(
                api.RoomConfiguration(
                    max_participants=2,
                    departure_timeout=30,
                    sync_streams=True,
                    agents=[api.RoomAgentDispatch(agent_name=AGENT, metadata='{"language":"en"}')],
                )
            )
            .to_jwt()
        )
        for timing in ("nbf", "exp"):
            assert abs(ours.pop(timing) - reference.pop(timing)) <= 2
        assert ours == reference

    def test_a_deployment_is_in_the_dispatch_as_livekit_api_puts_it(self, minter: LiveKitMinter) -> None:
        """With a deployment, the dispatch carries it under the name livekit-api's own builder uses."""
        minted = minter.participant_token(
            identity="ALICE",
            name="Alice Example",
            room=ROOM,
            attributes=ATTRIBUTES,
            agent_name=AGENT,
            agent_metadata="{}",
            agent_deployment="staging",
            ttl_seconds=600,
        )
        reference = _payload(
            api.AccessToken(API_KEY, API_SECRET)
            .with_room_config(
                api.RoomConfiguration(
                    agents=[api.RoomAgentDispatch(agent_name=AGENT, metadata="{}", deployment="staging")]
                )
            )
            .to_jwt()
        )
        assert _payload(minted.jwt)["roomConfig"]["agents"] == reference["roomConfig"]["agents"]
        config = verify_python(minted.jwt).room_config
        assert config is not None
        assert config.agents[0].deployment == "staging"

    def test_wrong_secret_is_refused_by_both_verifiers(self, minter: LiveKitMinter) -> None:
        """A token checked with another secret fails in Python and in Node: the signature is real HMAC."""
        token = _participant(minter).jwt
        with pytest.raises(Exception, match="Signature"):
            verify_python(token, secret="another-secret-that-is-at-least-32-chars")
        [answer] = verify_node([token], secret="another-secret-that-is-at-least-32-chars")
        assert answer == {"error": "ERR_JWS_SIGNATURE_VERIFICATION_FAILED"}

    def test_node_verifier_reads_the_same_claims(self, minter: LiveKitMinter) -> None:
        """The Node SDK's TokenVerifier accepts the token and sees the same grants and room config."""
        minted = _participant(minter, metadata="{}")
        [answer] = verify_node([minted.jwt])
        claims = answer["claims"]
        assert claims["sub"] == "ALICE"
        assert claims["video"] == _payload(minted.jwt)["video"]
        assert claims["roomConfig"] == _payload(minted.jwt)["roomConfig"]
        assert claims["attributes"] == ATTRIBUTES
        assert claims["exp"] == minted.expires_at


class TestAgentToken:
    def test_agent_token_has_the_agent_grant_and_no_room(self, minter: LiveKitMinter) -> None:
        """The agent token lets a worker register (`video.agent`) and grants no room, kind or admin right."""
        minted = minter.agent_token(identity="agent-x", ttl_seconds=3600)
        claims = _payload(minted.jwt)
        assert claims == {
            "sub": "agent-x",
            "video": {"agent": True},
            "iss": API_KEY,
            "nbf": claims["nbf"],
            "exp": claims["nbf"] + 3600,
        }
        verified = verify_python(minted.jwt)
        assert verified.video is not None
        assert verified.video.agent is True
        assert verified.video.room_join is None
        [answer] = verify_node([minted.jwt])
        assert answer["claims"]["video"] == {"agent": True}
