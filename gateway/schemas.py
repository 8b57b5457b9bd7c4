"""Request and response bodies, and strict decoding with messages a client developer can act on.

Bodies are decoded by the handlers (after authentication, as the request flow requires) rather than by
Litestar's signature model, so every refusal reads like `"agent_entra_app_id" is required`.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Any, TypeVar

import msgspec

from gateway.errors import bad_request

T = TypeVar("T", bound=msgspec.Struct)

MAX_METADATA_KEYS = 50
MAX_METADATA_BYTES = 10 * 1024
GUID_PATTERN = "^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"


class SessionStartRequest(msgspec.Struct, forbid_unknown_fields=True):
    """Start a session with an agent."""

    agent_entra_app_id: Annotated[
        str,
        msgspec.Meta(description="The target agent's Entra application (client) id.", pattern=GUID_PATTERN),
    ]
    metadata: (
        Annotated[
            dict[str, Any],
            msgspec.Meta(
                description="Forwarded to the agent as its dispatch metadata (JSON); at most 50 keys and 10 KB."
            ),
        ]
        | None
    ) = None


class SessionStartResponse(msgspec.Struct):
    room_name: Annotated[str, msgspec.Meta(description="`<user id>-<agent app id>-<unix ms>-<8 hex>`")]
    livekit_url: Annotated[str, msgspec.Meta(description="Connect here with the participant token.")]
    participant_token: Annotated[str, msgspec.Meta(description="LiveKit JWT for this room only.")]
    participant_identity: Annotated[str, msgspec.Meta(description="Your identity in the room.")]
    expires_at: Annotated[int, msgspec.Meta(description="Unix time after which the token cannot join.")]


class AgentRegisterRequest(msgspec.Struct, forbid_unknown_fields=True):
    """Register the calling agent (its own app-only token) and receive its worker credentials."""

    enforce_client_authz: Annotated[
        bool,
        msgspec.Meta(
            description="Only clients pre-authorized on the agent's Entra app registration may start sessions."
        ),
    ] = True
    display_name: Annotated[str, msgspec.Meta(max_length=128)] | None = None
    description: Annotated[str, msgspec.Meta(max_length=1024)] | None = None
    agent_version: Annotated[str, msgspec.Meta(max_length=64)] | None = None


class AgentRegisterResponse(msgspec.Struct):
    worker_url: Annotated[
        str,
        msgspec.Meta(
            description="LIVEKIT_URL for the worker: lkps's worker relay, which relays it to LiveKit."
        ),
    ]
    worker_api_key: Annotated[str, msgspec.Meta(description="LIVEKIT_API_KEY for the worker (an lkps key).")]
    worker_api_secret: Annotated[
        str,
        msgspec.Meta(
            description="LIVEKIT_API_SECRET for the worker: valid at lkps only, for this agent, while it "
            "is registered; unchanged by a renewal."
        ),
    ]
    expires_at: Annotated[int, msgspec.Meta(description="Unix time the registration expires; renew before.")]
    agent_name: Annotated[
        str, msgspec.Meta(description="The worker's agent_name: the only one lkps lets it register under.")
    ]
    registration_id: str
    enforce_client_authz: bool


class SessionEndResponse(msgspec.Struct):
    room_name: str
    status: Annotated[str, msgspec.Meta(description='Always "ended".')]
    ended_at: Annotated[
        datetime, msgspec.Meta(description="When the session was first ended (RFC 3339, UTC).")
    ]


_MISSING = re.compile(r"^Object missing required field `(?P<field>[^`]+)`")
_UNKNOWN = re.compile(r"^Object contains unknown field `(?P<field>[^`]+)`")
_AT = re.compile(r"^(?P<problem>.*) - at `\$\.(?P<path>[^`]+)`$")
_GUID_MEANING = {"agent_entra_app_id": "the agent's Entra application (client) id"}
_TYPE_WORDS = {"str": "a string", "bool": "true or false", "object": "a JSON object", "int": "an integer"}


def decode_body(body: bytes, struct: type[T]) -> T:
    """Decode a JSON body into `struct`, raising a 400 ApiError that names the field and the fix."""
    if not body.strip():
        body = b"{}"
    try:
        return msgspec.json.decode(body, type=struct)
    except msgspec.ValidationError as exc:
        raise bad_request(_describe(str(exc), struct)) from None
    except msgspec.DecodeError:
        raise bad_request("The body is not valid JSON.", reason="invalid_json") from None


def _describe(problem: str, struct: type[msgspec.Struct]) -> str:  # noqa: PLR0911 - one return per message
    if match := _MISSING.match(problem):
        return f'"{match["field"]}" is required'
    if match := _UNKNOWN.match(problem):
        allowed = ", ".join(struct.__struct_fields__)
        return f'Unknown field "{match["field"]}"; the allowed fields are: {allowed}'
    if match := _AT.match(problem):
        field, detail = match["path"], match["problem"]
        expected = re.match(r"^Expected `(?P<type>[a-z]+)(?: \| null)?`, got `[a-z]+`$", detail)
        if expected and expected["type"] in _TYPE_WORDS:
            return f'"{field}" must be {_TYPE_WORDS[expected["type"]]}'
        if GUID_PATTERN in detail:
            return f'"{field}" must be a UUID: {_GUID_MEANING.get(field, "a GUID")}'
        return f'"{field}": {detail.replace("`", "")}'
    if problem.startswith("Expected `object`"):
        return "The body must be a JSON object."
    return problem.replace("`", "")


def agent_app_id(value: str) -> str:
    """Normalise a decoded (pattern-checked) agent application id: GUIDs compare in lowercase."""
    return value.lower()


def metadata_json(metadata: dict[str, Any] | None) -> str:
    """The dispatch metadata string the agent receives; enforces the 50-key / 10 KB contract."""
    if metadata is None:
        return "{}"
    if len(metadata) > MAX_METADATA_KEYS:
        raise bad_request(
            f'"metadata" has {len(metadata)} keys; at most {MAX_METADATA_KEYS} are allowed',
            reason="metadata_too_many_keys",
        )
    encoded = msgspec.json.encode(metadata)
    if len(encoded) > MAX_METADATA_BYTES:
        raise bad_request(
            f'"metadata" is {len(encoded)} bytes as JSON; at most {MAX_METADATA_BYTES} (10 KB) are allowed',
            reason="metadata_too_large",
        )
    return encoded.decode()
