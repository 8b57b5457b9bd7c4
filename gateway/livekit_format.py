"""LiveKit's standard token endpoint format (what livekit-client's `TokenSource.endpoint` sends and reads).

The request is LiveKit's `TokenSourceRequest` in snake_case: `room_name`, `participant_name`,
`participant_identity`, `participant_metadata`, `participant_attributes` and `room_config` (a
`RoomConfiguration` whose `agents[0]` names the agent and carries its metadata and deployment). lkps accepts
exactly what a session start accepts, the agent, its metadata and its deployment, plus `participant_name` as
the display name. Everything else is lkps's to decide, so it is refused by name instead of being silently
ignored: a client that asks for a room name must learn that it does not get one.
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar

import msgspec

from authz.entra import clean_display_name
from config.settings import is_guid
from gateway.errors import ApiError, bad_request
from gateway.schemas import agent_app_id, check_json_depth, checked_deployment, decode_body, metadata_json
from gateway.session_start import StartRequest

AGENT_NAME = "room_config.agents[0].agent_name"
AGENT_METADATA = "room_config.agents[0].metadata"
AGENT_DEPLOYMENT = "room_config.agents[0].deployment"
_WHAT_TO_SEND = (
    'Send only "participant_name" and "room_config": {"agents": [{"agent_name": <agent app id>, '
    '"metadata": <JSON object text>, "deployment": <LiveKit deployment, optional>}]}.'
)
_WHY_NOT = {
    "room_name": "lkps names every room",
    "participant_identity": "your identity is taken from your Entra token",
    "participant_metadata": "lkps sets the participant metadata",
    "participant_attributes": "lkps sets the participant attributes",
}


class AgentDispatch(msgspec.Struct):
    agent_name: (
        Annotated[str, msgspec.Meta(description="The target agent's Entra application (client) id.")] | None
    ) = None
    metadata: (
        Annotated[
            str,
            msgspec.Meta(
                description="JSON object text forwarded to the agent as its dispatch metadata; "
                "at most 50 keys and 10 KB."
            ),
        ]
        | None
    ) = None
    deployment: (
        Annotated[
            str,
            msgspec.Meta(
                description='The LiveKit deployment whose workers get the job; default "". At most 64 bytes, '
                "no `_`, no whitespace."
            ),
        ]
        | None
    ) = None


class RoomConfig(msgspec.Struct):
    agents: Annotated[list[AgentDispatch], msgspec.Meta(description="Exactly one agent.")] | None = None


class LiveKitTokenRequest(msgspec.Struct):
    """LiveKit's token request; lkps chooses the room, the identity, the attributes and the room limits."""

    # Cleaned like a name from Entra rather than refused: a browser app passes its user's name through.
    cleaned_fields: ClassVar[frozenset[str]] = frozenset({"participant_name"})

    participant_name: (
        Annotated[
            str,
            msgspec.Meta(
                max_length=128,
                description="Display name in the room; the identity comes from the Entra token. Control "
                "and invisible formatting characters (bidi overrides, zero-width) are removed.",
            ),
        ]
        | None
    ) = None
    room_config: RoomConfig | None = None


class LiveKitTokenResponse(msgspec.Struct):
    server_url: Annotated[str, msgspec.Meta(description="The LiveKit URL to connect to.")]
    participant_token: Annotated[str, msgspec.Meta(description="LiveKit JWT for this room only.")]
    room_name: Annotated[str, msgspec.Meta(description="`<user id>-<agent app id>-<unix ms>-<8 hex>`")]


def parse_token_request(body: bytes) -> StartRequest:
    """Decode a LiveKit-format body; 400 naming the field for anything lkps does not let a caller choose."""
    request = decode_body(body, LiveKitTokenRequest)  # JSON and types: the same messages as session start
    # decode_body ignores fields the structs do not declare; the plain decode finds them to refuse them.
    _refuse_undeclared(msgspec.json.decode(body) if body.strip() else {})
    agents = request.room_config.agents if request.room_config else None
    if agents is not None and len(agents) != 1:
        raise bad_request('"room_config.agents" must name exactly one agent')
    agent = agents[0] if agents else AgentDispatch()
    if agent.agent_name is None:
        raise bad_request(f'"{AGENT_NAME}" is required')
    if not is_guid(agent.agent_name.lower()):
        raise bad_request(f'"{AGENT_NAME}" must be a UUID: the agent\'s Entra application (client) id')
    return StartRequest(
        agent_app_id=agent_app_id(agent.agent_name),
        metadata=metadata_json(_metadata_object(agent.metadata)),
        display_name=clean_display_name(request.participant_name or "") or None,
        deployment=checked_deployment(AGENT_DEPLOYMENT, agent.deployment or ""),
    )


def _refuse_undeclared(document: dict[str, Any]) -> None:
    for name in document:
        if name not in LiveKitTokenRequest.__struct_fields__:
            raise _not_yours(name, _WHY_NOT.get(name, "it is not part of the request lkps accepts"))
    room_config = document.get("room_config") or {}
    for name in room_config:
        if name not in RoomConfig.__struct_fields__:
            raise _not_yours(f"room_config.{name}", "lkps fixes the room configuration")
    for index, agent in enumerate(room_config.get("agents") or []):
        for name in agent:
            if name not in AgentDispatch.__struct_fields__:
                raise _not_yours(
                    f"room_config.agents[{index}].{name}", "an agent is named by its app id alone"
                )


def _not_yours(path: str, why: str) -> ApiError:
    return bad_request(f'"{path}" cannot be chosen by the caller: {why}. {_WHAT_TO_SEND}', "field_refused")


def _metadata_object(text: str | None) -> dict[str, Any] | None:
    """LiveKit carries dispatch metadata as a string; lkps requires it to be JSON object text."""
    if not text:
        return None
    check_json_depth(text.encode(), f'"{AGENT_METADATA}"')
    try:
        value = msgspec.json.decode(text)
    except msgspec.DecodeError:
        value = None
    if not isinstance(value, dict):
        raise bad_request(f'"{AGENT_METADATA}" must be a JSON object encoded as a string, e.g. "{{}}"')
    return value
