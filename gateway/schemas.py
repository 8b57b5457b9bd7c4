"""Request and response bodies, and strict decoding with messages a client developer can act on.

Bodies are decoded by the handlers (after authentication, as the request flow requires) rather than by
Litestar's signature model, so every refusal reads like `"agent_entra_app_id" is required`.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Any, ClassVar, TypeVar

import msgspec

from gateway.errors import bad_request

T = TypeVar("T", bound=msgspec.Struct)

MAX_METADATA_KEYS = 50
MAX_METADATA_BYTES = 10 * 1024
GUID_PATTERN = "^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"
# Far beyond any real body (a LiveKit token request is 4 levels deep), far below where a recursive
# decoder or encoder hits Python's recursion limit (~1,000 frames).
MAX_JSON_DEPTH = 32
MAX_ROOM_NAME = 255  # as stored (sessions.room_name, session_events.room_name)
_JSON_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"')
_INNERMOST_PAIR = re.compile(rb"\[\]|\{\}")
_NOT_BRACKETS = bytes(sorted(set(range(256)) - set(b"[]{}")))
# Text that reaches the database or a log line: no NUL (PostgreSQL refuses it), no other C0/C1 control
# character, no lone surrogate (no UTF-8 encoder accepts one). Multi-line fields keep tab, LF and CR.
_NOT_IN_A_LINE = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff]")
_NOT_IN_LINES = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ud800-\udfff]")


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

    multiline_fields: ClassVar[frozenset[str]] = frozenset({"description"})

    enforce_client_authz: Annotated[
        bool,
        msgspec.Meta(
            description="Only clients pre-authorized on the agent's Entra app registration may start sessions."
        ),
    ] = True
    display_name: Annotated[str, msgspec.Meta(max_length=128)] | None = None
    description: Annotated[str, msgspec.Meta(max_length=1024)] | None = None
    agent_version: Annotated[str, msgspec.Meta(max_length=64)] | None = None
    rotate_worker_credentials: Annotated[
        bool,
        msgspec.Meta(
            description="Issue a new worker key and secret; the previous key stays in force for "
            "LKPS_WORKER_KEY_GRACE_SECONDS (default one hour) so running workers can be restarted onto it."
        ),
    ] = False


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
            "is registered; unchanged by a renewal unless the credentials are rotated."
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
    """Decode a JSON body into `struct`, raising a 400 ApiError that names the field and the fix.

    Its nesting depth is checked first, and every text field after (see `checked_text`); a struct lists
    its multi-line fields in `multiline_fields` and the fields it cleans itself in `cleaned_fields`.
    """
    if not body.strip():
        body = b"{}"
    check_json_depth(body, "The body")
    try:
        decoded = msgspec.json.decode(body, type=struct)
    except msgspec.ValidationError as exc:
        raise bad_request(_describe(str(exc), struct)) from None
    except (msgspec.DecodeError, UnicodeDecodeError):
        raise bad_request("The body is not valid JSON.", reason="invalid_json") from None
    _check_texts(decoded, "")
    return decoded


def check_json_depth(document: bytes, what: str) -> None:
    """Refuse JSON nested deeper than MAX_JSON_DEPTH before any recursive decoder sees it (400)."""
    if document.count(b"[") + document.count(b"{") <= MAX_JSON_DEPTH:
        return  # nothing nests deeper than its number of opening brackets
    # Strings can hold brackets; without them, each pass removes the innermost level of every nesting.
    brackets = _JSON_STRING.sub(b"", document).translate(None, _NOT_BRACKETS)
    for _ in range(MAX_JSON_DEPTH):
        brackets = _INNERMOST_PAIR.sub(b"", brackets)
    if brackets:
        raise bad_request(
            f"{what} nests arrays and objects more than {MAX_JSON_DEPTH} levels deep (or is not valid JSON).",
            reason="json_too_deep",
        )


def forbidden_character(value: str, *, multiline: bool = False) -> str | None:
    """The first character `value` may not hold as text (see _NOT_IN_A_LINE), as "U+0000 at position 3"."""
    found = (_NOT_IN_LINES if multiline else _NOT_IN_A_LINE).search(value)
    return None if found is None else f"U+{ord(found[0]):04X} at position {found.start()}"


def storable_text(value: str) -> str:
    """`value` with every character `forbidden_character` names replaced by U+FFFD, for text lkps records
    but does not refuse (a LiveKit webhook: refusing it would only make LiveKit retry it forever)."""
    return _NOT_IN_A_LINE.sub("\ufffd", value)


def checked_text(name: str, value: str, *, multiline: bool = False) -> str:
    """`value` if it is storable text; else 400 naming the field and the character."""
    if (found := forbidden_character(value, multiline=multiline)) is not None:
        raise bad_request(
            f'"{name}" must be text without control characters (found {found})', reason="control_character"
        )
    return value


def checked_room_name(value: str) -> str:
    """A room name from a path: storable text of 1 to MAX_ROOM_NAME characters, else 400."""
    if not 0 < len(value) <= MAX_ROOM_NAME:
        raise bad_request(f'"room_name" must be 1 to {MAX_ROOM_NAME} characters', reason="invalid_room_name")
    return checked_text("room_name", value)


def _check_texts(value: Any, path: str) -> None:
    """Apply `checked_text` to every string of a decoded struct, nested structs and lists included."""
    if isinstance(value, msgspec.Struct):
        multiline: frozenset[str] = getattr(value, "multiline_fields", frozenset())
        cleaned: frozenset[str] = getattr(value, "cleaned_fields", frozenset())
        for name in value.__struct_fields__:
            field = getattr(value, name)
            if isinstance(field, str):
                if name not in cleaned:
                    checked_text(f"{path}{name}", field, multiline=name in multiline)
            else:
                _check_texts(field, f"{path}{name}.")
    elif isinstance(value, list):
        for index, item in enumerate(value):
            _check_texts(item, f"{path.removesuffix('.')}[{index}].")


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
