"""LiveKit webhooks signed the way the LiveKit server signs them (livekit/protocol `webhook/url_notifier.go`).

The body is the protojson of a `WebhookEvent`; the `Authorization` header is the bare JWT (no "Bearer"),
HS256 with the webhook key's secret, `iss` = key, valid 5 minutes, and `sha256` = standard base64 of the
SHA-256 of the exact body bytes.
"""

from __future__ import annotations

import base64
import hashlib
import itertools
import time
from dataclasses import dataclass
from typing import Any

import jwt
from google.protobuf.json_format import MessageToJson
from livekit.protocol.models import ParticipantInfo, Room
from livekit.protocol.webhook import WebhookEvent

from tests.support.livekit import API_KEY, API_SECRET, run_node_script

CONTENT_TYPE = "application/webhook+json"
TOKEN_TTL_SECONDS = 5 * 60
_ids = itertools.count(1)


@dataclass(frozen=True)
class SignedWebhook:
    body: bytes
    authorization: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": self.authorization, "Content-Type": CONTENT_TYPE, "User-Agent": "LiveKit"}


def event(
    name: str,
    room: str,
    *,
    created_at: int | None = None,
    identity: str | None = None,
    kind: str = "STANDARD",
    event_id: str | None = None,
) -> WebhookEvent:
    """A webhook event as the server builds it; a participant is attached when `identity` is given."""
    message = WebhookEvent(
        event=name,
        room=Room(
            sid=f"RM_{hashlib.sha256(room.encode()).hexdigest()[:12]}", name=room, turn_password="turn-secret"
        ),
        id=event_id or f"EV_{next(_ids):012d}",
        created_at=int(time.time()) if created_at is None else created_at,
    )
    if identity is not None:
        message.participant.CopyFrom(ParticipantInfo(sid=f"PA_{identity}", identity=identity, kind=kind))
    return message


def sign_body(
    body: bytes, *, key: str = API_KEY, secret: str = API_SECRET, issued_at: float | None = None
) -> str:
    now = int(time.time() if issued_at is None else issued_at)
    digest = base64.b64encode(hashlib.sha256(body).digest()).decode("ascii")
    claims = {"iss": key, "nbf": now, "exp": now + TOKEN_TTL_SECONDS, "sha256": digest}
    return jwt.encode(claims, secret, algorithm="HS256")


def signed(
    message: WebhookEvent, *, key: str = API_KEY, secret: str = API_SECRET, issued_at: float | None = None
) -> SignedWebhook:
    """The protojson body of `message` and its Authorization header value."""
    body = MessageToJson(message).encode()
    return SignedWebhook(body, sign_body(body, key=key, secret=secret, issued_at=issued_at))


def verify_node(
    webhooks: list[SignedWebhook], key: str = API_KEY, secret: str = API_SECRET
) -> list[dict[str, Any]]:
    """Receive with the Node SDK's WebhookReceiver; each answer is {"event": ...} or {"error": message}."""
    return run_node_script(
        "verify-webhook.mjs",
        [
            {"body": hook.body.decode(), "authorization": hook.authorization, "key": key, "secret": secret}
            for hook in webhooks
        ],
    )
