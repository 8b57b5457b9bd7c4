"""`GET /api/session/{room_name}`: the caller that started a session sees how it stands and whether its agent
is there."""

from __future__ import annotations

from typing import Any

from litestar import Request, get
from litestar.datastructures import CacheControlHeader

from gateway.auth import session_caller
from gateway.observability.context import context_of
from gateway.openapi import error_responses
from gateway.schemas import AgentStatus, SessionStatusResponse, checked_room_name
from gateway.services import services_of
from gateway.session_end import check_owner, existing_session


@get(
    "/api/session/{room_name:str}",
    cache_control=CacheControlHeader(no_store=True),  # it changes as the room does
    responses=error_responses(400, 401, 403, 404, 503),
    operation_id="getSession",
    tags=["sessions"],
    summary="Your session and its agent",
    description="The session's state and its agent's: `waiting` until an agent joins the room, `joined`, "
    "`lost` when it left while you are in the room (lkps dispatches one again), `unavailable` once every "
    "allowed dispatch (LKPS_AGENT_DISPATCH_ATTEMPTS) went unanswered: try again later. Only the caller that "
    "started the session may read it (same tenant, user or service principal, and client application).",
)
async def session_status(request: Request[Any, Any, Any], room_name: str) -> SessionStatusResponse:
    caller = await session_caller(request)
    room_name = checked_room_name(room_name)
    context_of(request.scope).fields["room"] = room_name
    session = await existing_session(services_of(request).lifecycle, room_name)
    check_owner(session, caller)
    return SessionStatusResponse(
        room_name=session.room_name,
        status=session.status,
        created_at=session.created_at,
        started_at=session.started_at,
        ended_at=session.ended_at,
        ended_by=session.ended_by,
        agent=AgentStatus(
            state=session.agent_state,
            dispatch_attempts=session.dispatch_attempts,
            joined_at=session.agent_joined_at,
        ),
    )
