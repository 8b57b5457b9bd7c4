"""`POST /api/session/start`: a LiveKit token for one fresh room with the named agent dispatched."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from litestar import Request, post

from gateway.openapi import NOT_CACHED, documented_body, error_responses
from gateway.schemas import (
    SessionStartRequest,
    SessionStartResponse,
    agent_app_id,
    checked_deployment,
    decode_body,
    metadata_json,
)
from gateway.services import services_of
from gateway.session_http import SessionRoute, serve
from gateway.session_start import StartRequest

if TYPE_CHECKING:
    from config import Settings
    from gateway.session_start import StartedSession

MAX_BODY_BYTES = 64 * 1024  # metadata is capped at 10 KB; anything far larger is not a session request


def _parse(body: bytes) -> StartRequest:
    decoded = decode_body(body, SessionStartRequest)
    return StartRequest(
        agent_app_id(decoded.agent_entra_app_id),
        metadata_json(decoded.metadata),
        deployment=checked_deployment("deployment", decoded.deployment),
    )


def _respond(started: StartedSession, settings: Settings) -> SessionStartResponse:
    return SessionStartResponse(
        room_name=started.room_name,
        livekit_url=settings.livekit_url,
        participant_token=started.participant_token,
        participant_identity=started.participant_identity,
        expires_at=started.expires_at,
    )


SESSION_START = SessionRoute("/api/session/start", 200, _parse, _respond)


@post(
    SESSION_START.path,
    status_code=SESSION_START.status_code,
    dependencies=documented_body(SessionStartRequest),
    request_max_body_size=MAX_BODY_BYTES,
    **NOT_CACHED,
    responses=error_responses(400, 401, 403, 404, 413, 429, 503),
    operation_id="startSession",
    tags=["sessions"],
    summary="Start a session with an agent",
    description="Validates the Entra access token, checks the caller may use the agent, and returns a "
    "LiveKit token for one fresh room in which the agent is dispatched.",
)
async def start_session(request: Request[Any, Any, Any]) -> SessionStartResponse:
    return await serve(SESSION_START, services_of(request), request.scope, request.body)
