"""LiveKit webhooks, verified exactly as LiveKit signs them and reduced to the lifecycle events lkps keeps.

LiveKit sends `Authorization: <JWT>` (no "Bearer"), HS256 with the secret of its webhook API key, whose
`sha256` claim is the base64 SHA-256 of the exact body bytes; `livekit-api`'s WebhookReceiver checks both.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta
from typing import Any

from google.protobuf.json_format import ParseError
from livekit import api
from livekit.protocol.models import DisconnectReason, ParticipantInfo, RoomEndReason
from livekit.protocol.webhook import WebhookEvent

from gateway.errors import ApiError, bad_request
from gateway.persistence.lifecycle import PARTICIPANT_JOINED, RECORDED_EVENTS, ROOM_STARTED, LifecycleEvent
from gateway.schemas import forbidden_character, storable_text

_MAX_EVENT_ID = 64  # session_events.id
_MAX_NAME = 255  # room names and identities as stored
_LAST_MICROSECOND = timedelta(microseconds=999_999)
_MAX_TIMESTAMP = 2**33  # seconds (year 2242): anything later is not a LiveKit clock


class WebhookVerifier:
    def __init__(self, api_key: str, api_secret: str) -> None:
        self._receiver = api.WebhookReceiver(api.TokenVerifier(api_key, api_secret))

    def verify(self, body: bytes, authorization: str | None) -> WebhookEvent:
        """The event in `body` if `authorization` is LiveKit's signature of exactly these bytes; else 401."""
        if not authorization:
            raise _rejected("The webhook carries no Authorization header.", "webhook_token_missing")
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError:
            raise _rejected("The webhook body is not UTF-8.", "webhook_body_not_utf8") from None
        try:
            return self._receiver.receive(text, authorization)
        except ParseError:
            # Only reached once signature and hash matched: LiveKit's key signed a body we cannot read.
            raise bad_request(
                "The webhook body is not a LiveKit WebhookEvent.", "webhook_unreadable"
            ) from None
        except Exception:
            # The receiver raises PyJWT errors, bare Exceptions (hash mismatch) and binascii errors alike.
            raise _rejected(
                "The webhook signature is invalid, expired, or does not match the body.",
                "webhook_signature_invalid",
            ) from None


def _rejected(message: str, reason: str) -> ApiError:
    return ApiError(
        401,
        "invalid_webhook_signature",
        message,
        reason=reason,
        headers={"WWW-Authenticate": 'LiveKit-Webhook realm="lkps"'},
    )


def lifecycle_event(event: WebhookEvent, body: bytes, received_at: datetime) -> LifecycleEvent | None:
    """What lkps keeps of a verified event; None for events outside the session lifecycle."""
    if event.event not in RECORDED_EVENTS or not event.room.name:
        return None
    has_participant = event.HasField("participant")
    participant = event.participant
    # Only fields that tell the story: a Room also carries its TURN password, which is never kept.
    details: dict[str, Any] = {
        "room_sid": storable_text(event.room.sid),
        "participant_sid": storable_text(participant.sid),
        "num_participants": event.room.num_participants,
        # Zero is each enum's "unknown": left out, as protojson leaves out every zero value.
        "disconnect_reason": participant.disconnect_reason
        and _enum_name(DisconnectReason, participant.disconnect_reason),
        "room_end_reason": event.room_end_reason and _enum_name(RoomEndReason, event.room_end_reason),
    }
    return LifecycleEvent(
        id=_event_id(event.id, body),
        event=event.event,
        room_name=storable_text(event.room.name[:_MAX_NAME]),
        participant_identity=storable_text(participant.identity[:_MAX_NAME]) if has_participant else None,
        participant_kind=_enum_name(ParticipantInfo.Kind, participant.kind) if has_participant else None,
        occurred_at=_occurred_at(event, received_at),
        received_at=received_at,
        details={name: value for name, value in details.items() if value},
    )


def _occurred_at(event: WebhookEvent, received_at: datetime) -> datetime:
    """When it happened, as precisely as LiveKit says: a join's or a room's own millisecond time; for other
    events, their whole second refined by when lkps received them (LiveKit sends at once), kept inside that
    second so that events of both kinds order correctly (a departure or the end in the same second as a
    join); without a usable time, the receipt time. Whether activity came after a session's end is decided
    on this."""
    precise_ms = 0
    if event.event == PARTICIPANT_JOINED:
        precise_ms = event.participant.joined_at_ms
    elif event.event == ROOM_STARTED:
        precise_ms = event.room.creation_time_ms
    if 0 < precise_ms < _MAX_TIMESTAMP * 1000:
        return datetime.fromtimestamp(precise_ms / 1000, UTC)
    if not 0 < event.created_at < _MAX_TIMESTAMP:
        return received_at
    second = datetime.fromtimestamp(event.created_at, UTC)
    return min(max(received_at, second), second + _LAST_MICROSECOND)


def _event_id(event_id: str, body: bytes) -> str:
    """LiveKit's event id; without a usable one, the body's digest, which a retry repeats byte for byte."""
    if 0 < len(event_id) <= _MAX_EVENT_ID and forbidden_character(event_id) is None:
        return event_id
    return "sha256:" + hashlib.sha256(body).hexdigest()[: _MAX_EVENT_ID - len("sha256:")]


def _enum_name(enum: Any, value: int) -> str:
    """The enum value's name, or its number when it is newer than this livekit-protocol."""
    try:
        return str(enum.Name(value))
    except ValueError:
        return str(value)
