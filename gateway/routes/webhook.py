"""`POST /api/livekit/webhook`: LiveKit's room and participant events, verified, feed the session lifecycle."""

from __future__ import annotations

from typing import Annotated, Any

import msgspec
import structlog
from litestar import Request, post

from authz.clock import utc_now
from gateway.errors import ApiError, database_errors
from gateway.livekit_webhooks import lifecycle_event
from gateway.observability.context import context_of
from gateway.openapi import error_responses
from gateway.persistence.lifecycle import AGENT_KIND, PARTICIPANT_JOINED
from gateway.services import services_of

log = structlog.get_logger("lkps.webhooks")

MAX_WEBHOOK_BYTES = 1024 * 1024  # LiveKit's largest events (a full room in track events) are far smaller
# LiveKit sends its own type so frameworks leave the body unparsed; plain JSON is accepted too, as lkps
# reads raw bytes either way and the signature, not the type, is what is checked.
CONTENT_TYPES = frozenset({"application/webhook+json", "application/json"})


class WebhookAck(msgspec.Struct):
    status: Annotated[
        str,
        msgspec.Meta(
            description="recorded | duplicate (this event id was already recorded) | ignored (not a "
            "session lifecycle event)"
        ),
    ]


@post(
    "/api/livekit/webhook",
    status_code=200,
    request_max_body_size=MAX_WEBHOOK_BYTES,
    security=[{"livekit_webhook": []}],
    responses=error_responses(400, 401, 413, 415, 502, 503),
    operation_id="receiveLiveKitWebhook",
    tags=["livekit"],
    summary="Receive a LiveKit webhook",
    description="Configure the LiveKit server with `webhook: {api_key: <LKPS_LIVEKIT_API_KEY>, urls: "
    "[https://<lkps>/api/livekit/webhook]}`. `room_started`, `participant_joined`, `participant_left`, "
    "`participant_connection_aborted` and `room_finished` are recorded against the session; other events "
    "are acknowledged and dropped. A retried event (same id) changes nothing. A session that ended stays "
    "ended: `room_started` or a join after its end is counted on the session (`reopened_count`) and the room "
    "is deleted again (502 if LiveKit cannot be reached, so LiveKit retries).",
)
async def livekit_webhook(request: Request[Any, Any, Any]) -> WebhookAck:
    services = services_of(request)
    ctx = context_of(request.scope)
    media_type = request.headers.get("content-type", "").partition(";")[0].strip().lower()
    if media_type not in CONTENT_TYPES:
        raise ApiError(
            415, "unsupported_media_type", "Send the webhook as application/webhook+json, as LiveKit does."
        )
    body = await request.body()
    event = services.webhooks.verify(body, request.headers.get("authorization"))
    ctx.fields.update(webhook_event=event.event, webhook_id=event.id)
    record = lifecycle_event(event, body, utc_now(services.clock))
    if record is None:
        return WebhookAck(status="ignored")
    ctx.fields["room"] = record.room_name
    with database_errors("The webhook could not be recorded; LiveKit retries it."):
        recorded = await services.lifecycle.record(record)
    if recorded.new and record.event == PARTICIPANT_JOINED and record.participant_kind == AGENT_KIND:
        try:
            await services.supervisor.observe_join(record.room_name, record.occurred_at)
        except Exception as exc:  # only a measurement is lost: the event itself is recorded
            log.warning("agent_join_not_measured", error=type(exc).__name__)
    if recorded.reopened:
        ctx.fields["reopened"] = True
        await services.ending.close_reopened(record.room_name)
    return WebhookAck(status="recorded" if recorded.new else "duplicate")
