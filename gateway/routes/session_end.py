"""`DELETE /api/session/{room_name}`: the caller that started a session ends it (its LiveKit room is deleted)."""

from __future__ import annotations

from typing import Any

from litestar import Request, delete

from gateway.auth import session_caller
from gateway.observability.context import context_of
from gateway.openapi import error_responses
from gateway.schemas import SessionEndResponse, checked_room_name
from gateway.services import services_of


@delete(
    "/api/session/{room_name:str}",
    status_code=200,
    responses=error_responses(400, 401, 403, 404, 502, 503),
    operation_id="endSession",
    tags=["sessions"],
    summary="End your session",
    description="Deletes the session's LiveKit room (disconnecting you and the agent) and marks the session "
    "ended. Only the caller that started it may end it (same tenant, user or service principal, and client "
    "application). Ending an ended session answers 200 again. 502 when LiveKit cannot be reached: the "
    "session stays open; retry.",
)
async def end_session(request: Request[Any, Any, Any], room_name: str) -> SessionEndResponse:
    caller = await session_caller(request)
    room_name = checked_room_name(room_name)
    context_of(request.scope).fields["room"] = room_name
    ended = await services_of(request).ending.end(room_name, "caller", owner=caller)
    assert ended.ended_at is not None  # an ended session always has its end time
    return SessionEndResponse(room_name=ended.room_name, status=ended.status, ended_at=ended.ended_at)
