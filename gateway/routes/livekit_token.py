"""`POST /api/livekit/token`: session start in LiveKit's standard token endpoint format.

livekit-client's `TokenSource.endpoint(url, {headers: {Authorization: "Bearer <Entra token>"}})` talks to it
directly. It goes through the very same `gateway.session_http.serve` and `SessionStarter.start` as
`POST /api/session/start`, so Entra validation, authorization, room naming, limits and the audit row cannot
differ between the two.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from litestar import Request, post

from gateway.livekit_format import LiveKitTokenRequest, LiveKitTokenResponse, parse_token_request
from gateway.openapi import NOT_CACHED, documented_body, error_responses
from gateway.routes.session import MAX_BODY_BYTES
from gateway.services import services_of
from gateway.session_http import SessionRoute, serve

if TYPE_CHECKING:
    from config import Settings
    from gateway.session_start import StartedSession


def _respond(started: StartedSession, settings: Settings) -> LiveKitTokenResponse:
    return LiveKitTokenResponse(
        server_url=settings.livekit_url,
        participant_token=started.participant_token,
        room_name=started.room_name,
    )


LIVEKIT_TOKEN = SessionRoute(
    "/api/livekit/token",
    201,  # what LiveKit's documentation of the format specifies
    parse_token_request,
    _respond,
)


@post(
    LIVEKIT_TOKEN.path,
    status_code=LIVEKIT_TOKEN.status_code,
    dependencies=documented_body(LiveKitTokenRequest),
    request_max_body_size=MAX_BODY_BYTES,
    **NOT_CACHED,
    responses=error_responses(400, 401, 403, 404, 413, 429, 503),
    operation_id="livekitToken",
    tags=["sessions"],
    summary="Start a session (LiveKit standard token endpoint format)",
    description="For livekit-client `TokenSource.endpoint`: name the agent in `room_config.agents[0].agent_name`"
    " (its app id) with optional `metadata` (JSON object text) and `deployment` (the LiveKit deployment whose "
    "workers get the job); `participant_name` sets the display name. "
    "The room name, identity, participant metadata and attributes and every other room setting are lkps's: "
    "sending them is a 400 that names the field.",
)
async def livekit_token(request: Request[Any, Any, Any]) -> LiveKitTokenResponse:
    return await serve(LIVEKIT_TOKEN, services_of(request), request.scope, request.body)
