"""`POST /api/session/start`: a LiveKit token for one fresh room with the named agent dispatched."""

from __future__ import annotations

from typing import Any

from litestar import Request, post

from gateway.auth import session_caller
from gateway.observability.context import context_of
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

MAX_BODY_BYTES = 64 * 1024  # metadata is capped at 10 KB; anything far larger is not a session request


@post(
    "/api/session/start",
    status_code=200,
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
    caller = await session_caller(request)
    services = services_of(request)
    body = decode_body(await request.body(), SessionStartRequest)
    agent = agent_app_id(body.agent_entra_app_id)
    metadata = metadata_json(body.metadata)
    deployment = checked_deployment("deployment", body.deployment)
    started = await services.sessions.start(
        caller, agent, metadata, context_of(request.scope), deployment=deployment
    )
    return SessionStartResponse(
        room_name=started.room_name,
        livekit_url=services.settings.livekit_url,
        participant_token=started.participant_token,
        participant_identity=started.participant_identity,
        expires_at=started.expires_at,
    )
