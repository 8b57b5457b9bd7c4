"""The admin API (`/api/admin/...`): agents and their registration state, sessions and their lifecycle, ending
a session, and agent revocation. Callers need an admin app role (LKPS_ADMIN_ROLES); every call is audited.
"""

from __future__ import annotations

from typing import Annotated, Any

import msgspec
from litestar import Request, delete, get, post
from litestar.params import Parameter

from authz.clock import utc_now
from config.settings import is_guid
from gateway.admin_filters import MAX_LIMIT, STATUSES, check_parameters, encode_cursor, session_query
from gateway.admin_schemas import (
    AgentList,
    RevocationResult,
    RevokeRequest,
    SessionDetail,
    SessionPage,
    agent_view,
    event_view,
    revocation_view,
    session_view,
)
from gateway.auth import admin_guard, caller_of
from gateway.errors import bad_request, database_errors
from gateway.observability.context import context_of
from gateway.openapi import documented_body, error_responses
from gateway.persistence.audit import AdminAction, record
from gateway.schemas import SessionEndResponse, checked_room_name, decode_body
from gateway.services import services_of
from gateway.session_end import session_not_found

_Request = Request[Any, Any, Any]
# Full paths on each handler (not a Controller prefix), so logs and metrics name the whole route.
_ADMIN: dict[str, Any] = {"guards": [admin_guard], "tags": ["admin"]}
_AppId = Annotated[str, Parameter(description="The agent's Entra application (client) id.")]
# Documented as date-time so that fuzzers generate real times (with offsets) as well as malformed ones.
DATE_TIME: dict[str, Any] = {"format": "date-time"}
_RoomName = Annotated[str, Parameter(description="The session's room name.")]


class UnrevokeResult(msgspec.Struct):
    agent_app_id: str
    revoked: bool
    was_revoked: bool


def _action(request: _Request, action: str, target: str, **details: Any) -> AdminAction:
    return AdminAction(caller_of(request), action, target, context_of(request.scope).request_id, details)


async def _audit(request: _Request, action: str, target: str, **details: Any) -> None:
    """Record an admin call that has no transaction of its own; if that fails the call fails (503)."""
    services = services_of(request)
    await record(services.engine, _action(request, action, target, **details), utc_now(services.clock))


def _agent_id(app_id: str) -> str:
    if not is_guid(app_id.lower()):
        raise bad_request('"app_id" must be a UUID: the agent\'s Entra application (client) id')
    return app_id.lower()


@get(
    "/api/admin/agents",
    **_ADMIN,
    operation_id="adminListAgents",
    summary="List agents and their registration state",
    responses=error_responses(401, 403, 503),
)
async def list_agents(request: _Request) -> AgentList:
    services = services_of(request)
    with database_errors("The agents could not be read; retry shortly."):
        agents = await services.admin.agents()
        await _audit(request, "list_agents", "agents")
    now = utc_now(services.clock)
    return AgentList(agents=[agent_view(agent, now) for agent in agents])


@get(
    "/api/admin/sessions",
    **_ADMIN,
    operation_id="adminListSessions",
    summary="List sessions, newest first",
    description="Filters combine with AND. Pages are cut by `limit`; pass `next_cursor` back as "
    "`cursor` for the next page (stable while new sessions arrive).",
    responses=error_responses(400, 401, 403, 503),
)
async def list_sessions(
    request: _Request,
    *,
    agent: Annotated[str | None, Parameter(description="Agent application id.")] = None,
    client_app: Annotated[str | None, Parameter(description="Client application id.")] = None,
    user: Annotated[str | None, Parameter(description="User id (as in room names) or object id.")] = None,
    status: Annotated[str | None, Parameter(description=" | ".join(STATUSES))] = None,
    since: Annotated[
        str | None, Parameter(description="Created at or after (RFC 3339).", schema_extra=DATE_TIME)
    ] = None,
    until: Annotated[
        str | None, Parameter(description="Created before (RFC 3339).", schema_extra=DATE_TIME)
    ] = None,
    limit: Annotated[str | None, Parameter(description=f"Page size, 1 to {MAX_LIMIT} (default 50).")] = None,
    cursor: Annotated[str | None, Parameter(description="`next_cursor` of the previous page.")] = None,
) -> SessionPage:
    check_parameters(request.query_params.multi_items())
    query = session_query(
        agent=agent,
        client_app=client_app,
        user=user,
        status=status,
        since=since,
        until=until,
        limit=limit,
        cursor=cursor,
    )
    services = services_of(request)
    # Only parameters that passed validation are recorded: the audit row holds no caller text unchecked.
    given = {"agent": agent, "client_app": client_app, "user": user, "status": status}
    given |= {"since": since, "until": until, "limit": limit}
    filters = {name: value for name, value in given.items() if value is not None}
    with database_errors("The sessions could not be read; retry shortly."):
        page, more = await services.admin.sessions(query)
        await _audit(request, "list_sessions", "sessions", **filters)
    return SessionPage(
        items=[session_view(session) for session in page],
        next_cursor=encode_cursor(page[-1]) if more else None,
    )


@get(
    "/api/admin/sessions/{room_name:str}",
    **_ADMIN,
    operation_id="adminGetSession",
    summary="A session and its LiveKit events, in the order they happened",
    responses=error_responses(400, 401, 403, 404, 503),
)
async def get_session(request: _Request, room_name: _RoomName) -> SessionDetail:
    room_name = checked_room_name(room_name)
    services = services_of(request)
    with database_errors("The session could not be read; retry shortly."):
        session = await services.lifecycle.session(room_name)
        events = await services.admin.events(room_name)
        if session is None and not events:
            raise session_not_found(room_name)
        await _audit(request, "get_session", room_name)
    return SessionDetail(
        room_name=room_name,
        session=None if session is None else session_view(session),
        events=[event_view(event) for event in events],
    )


@delete(
    "/api/admin/sessions/{room_name:str}",
    **_ADMIN,
    status_code=200,
    operation_id="adminEndSession",
    summary="End any session",
    description="As `DELETE /api/session/{room_name}`, for any caller's session; recorded as ended by admin.",
    responses=error_responses(400, 401, 403, 404, 502, 503),
)
async def end_any_session(request: _Request, room_name: _RoomName) -> SessionEndResponse:
    room_name = checked_room_name(room_name)
    services = services_of(request)
    ended = await services.ending.end(room_name, "admin")
    with database_errors("The session was ended but the audit record failed; retry."):
        await _audit(request, "end_session", room_name, ended_by=ended.ended_by)
    assert ended.ended_at is not None  # an ended session always has its end time
    return SessionEndResponse(room_name=ended.room_name, status=ended.status, ended_at=ended.ended_at)


@post(
    "/api/admin/agents/{app_id:str}/revoke",
    **_ADMIN,
    status_code=200,
    operation_id="adminRevokeAgent",
    summary="Revoke an agent",
    description="At once on this replica; on the others as soon as the change announced through Redis "
    "arrives (with LKPS_REDIS_URL), at the latest within LKPS_AGENT_CACHE_TTL_SECONDS: the agent "
    "cannot register (403 agent_revoked) and session starts to it answer 404 agent_not_connected. Its "
    "unexpired registrations are marked revoked. Revoking again updates the reason. Open sessions go on "
    "unless `end_sessions` is true: then each one's room is deleted within 5 s (by whichever replica "
    "supervises it) and the session ends with `ended_by` revoked.",
    dependencies=documented_body(RevokeRequest),
    request_max_body_size=16 * 1024,
    responses=error_responses(400, 401, 403, 413, 503),
)
async def revoke_agent(request: _Request, app_id: _AppId) -> RevocationResult:
    agent = _agent_id(app_id)
    body = decode_body(await request.body(), RevokeRequest)
    services = services_of(request)
    with database_errors("The revocation could not be recorded; retry shortly."):
        revocation, revoked = await services.revocations.revoke(
            agent, body.reason, _action(request, "revoke_agent", agent, end_sessions=body.end_sessions)
        )
    services.registry.invalidate(agent)
    ending = 0
    if body.end_sessions:
        with database_errors("The agent is revoked but its sessions could not be ended; revoke again."):
            ending = await services.supervisor.request_end(agent, "revoked")
    return RevocationResult(
        agent_app_id=agent,
        revoked=True,
        revocation=revocation_view(revocation),
        registrations_revoked=revoked,
        sessions_ending=ending,
    )


@post(
    "/api/admin/agents/{app_id:str}/unrevoke",
    **_ADMIN,
    status_code=200,
    operation_id="adminUnrevokeAgent",
    summary="Lift an agent's revocation",
    description="The agent may register again; its revoked registrations stay revoked, so it is not "
    "connected until it registers anew.",
    responses=error_responses(400, 401, 403, 503),
)
async def unrevoke_agent(request: _Request, app_id: _AppId) -> UnrevokeResult:
    agent = _agent_id(app_id)
    services = services_of(request)
    with database_errors("The revocation could not be lifted; retry shortly."):
        was_revoked = await services.revocations.unrevoke(agent, _action(request, "unrevoke_agent", agent))
    services.registry.invalidate(agent)
    return UnrevokeResult(agent_app_id=agent, revoked=False, was_revoked=was_revoked)


ADMIN_ROUTES = [list_agents, list_sessions, get_session, end_any_session, revoke_agent, unrevoke_agent]
