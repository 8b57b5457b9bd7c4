"""Bodies of the admin API, and their construction from what persistence returns.

Times are RFC 3339 in UTC; a session's duration is derived (ended - started), never stored.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, ClassVar

import msgspec

from gateway.persistence.admin_queries import AgentOverview
from gateway.persistence.lifecycle import LifecycleEvent, SessionState
from gateway.persistence.revocations import Revocation


class SessionView(msgspec.Struct):
    id: str
    room_name: str
    agent_app_id: str
    tenant_id: str
    client_app_id: str
    caller_object_id: str
    caller_kind: Annotated[str, msgspec.Meta(description="user | app")]
    user_id: Annotated[str, msgspec.Meta(description="The user id in the room name (client id for apps).")]
    participant_identity: str
    status: Annotated[str, msgspec.Meta(description="issued | active | ended")]
    created_at: Annotated[datetime, msgspec.Meta(description="When lkps issued the participant token.")]
    token_expires_at: datetime
    started_at: Annotated[datetime | None, msgspec.Meta(description="LiveKit: room started / user joined.")]
    ended_at: datetime | None
    ended_by: Annotated[
        str | None, msgspec.Meta(description="webhook | caller | admin | max_duration | revoked")
    ]
    agent_joined: bool
    agent_joined_at: datetime | None
    duration_seconds: Annotated[float | None, msgspec.Meta(description="ended_at - started_at")]
    request_id: Annotated[str, msgspec.Meta(description="The session start's request id.")]
    reopened_count: Annotated[
        int,
        msgspec.Meta(
            description="How often LiveKit reported activity in the room after the session ended (its room "
            "was deleted again each time); anything but 0 means a still-valid token was used after the end."
        ),
    ]
    reopened_at: Annotated[datetime | None, msgspec.Meta(description="The latest such activity.")]


class SessionPage(msgspec.Struct):
    items: list[SessionView]
    next_cursor: Annotated[
        str | None, msgspec.Meta(description="Pass as `cursor` for the next page; null on the last page.")
    ]


class SessionEventView(msgspec.Struct):
    id: Annotated[str, msgspec.Meta(description="LiveKit's event id.")]
    event: str
    participant_identity: str | None
    participant_kind: Annotated[str | None, msgspec.Meta(description="STANDARD, AGENT, SIP, ...")]
    occurred_at: Annotated[datetime, msgspec.Meta(description="LiveKit's createdAt.")]
    received_at: datetime
    details: dict[str, Any]


class SessionDetail(msgspec.Struct):
    room_name: str
    session: Annotated[
        SessionView | None, msgspec.Meta(description="null: LiveKit reported a room lkps did not create.")
    ]
    events: list[SessionEventView]


class RegistrationView(msgspec.Struct):
    id: str
    issued_at: datetime
    expires_at: datetime
    enforce_client_authz: bool
    display_name: str | None
    agent_version: str | None


class RevocationView(msgspec.Struct):
    revoked_at: datetime
    revoked_by_object_id: str
    revoked_by_client_app_id: str
    reason: str | None


class AgentView(msgspec.Struct):
    agent_app_id: str
    state: Annotated[
        str,
        msgspec.Meta(
            description="connected (latest registration in force) | expired | revoked (by an administrator)"
        ),
    ]
    latest_registration: RegistrationView | None
    registrations: Annotated[int, msgspec.Meta(description="Registrations kept (within retention).")]
    revocation: RevocationView | None


class AgentList(msgspec.Struct):
    agents: list[AgentView]


class RevokeRequest(msgspec.Struct, forbid_unknown_fields=True):
    """Revoke an agent: it cannot register, and sessions to it are refused, until it is un-revoked."""

    multiline_fields: ClassVar[frozenset[str]] = frozenset({"reason"})

    reason: Annotated[str, msgspec.Meta(max_length=512, description="Why, for the audit trail.")] | None = (
        None
    )
    end_sessions: Annotated[
        bool,
        msgspec.Meta(
            description="Also end every open session of the agent: their rooms are deleted (everyone "
            "disconnected) within 5 s, each session ending with `ended_by` revoked."
        ),
    ] = False


class RevocationResult(msgspec.Struct):
    agent_app_id: str
    revoked: bool
    revocation: RevocationView | None
    registrations_revoked: Annotated[int, msgspec.Meta(description="Unexpired registrations revoked now.")]
    sessions_ending: Annotated[
        int, msgspec.Meta(description="Open sessions being ended (0 unless `end_sessions` was true).")
    ] = 0


def session_view(session: SessionState) -> SessionView:
    return SessionView(
        id=session.id,
        room_name=session.room_name,
        agent_app_id=session.agent_app_id,
        tenant_id=session.tenant_id,
        client_app_id=session.client_app_id,
        caller_object_id=session.caller_object_id,
        caller_kind=session.caller_kind,
        user_id=session.user_id,
        participant_identity=session.participant_identity,
        status=session.status,
        created_at=session.created_at,
        token_expires_at=session.token_expires_at,
        started_at=session.started_at,
        ended_at=session.ended_at,
        ended_by=session.ended_by,
        agent_joined=session.agent_joined_at is not None,
        agent_joined_at=session.agent_joined_at,
        duration_seconds=session.duration_seconds,
        request_id=session.request_id,
        reopened_count=session.reopened_count,
        reopened_at=session.reopened_at,
    )


def event_view(event: LifecycleEvent) -> SessionEventView:
    return SessionEventView(
        id=event.id,
        event=event.event,
        participant_identity=event.participant_identity,
        participant_kind=event.participant_kind,
        occurred_at=event.occurred_at,
        received_at=event.received_at,
        details=event.details,
    )


def revocation_view(revocation: Revocation | None) -> RevocationView | None:
    if revocation is None:
        return None
    return RevocationView(
        revoked_at=revocation.revoked_at,
        revoked_by_object_id=revocation.revoked_by_object_id,
        revoked_by_client_app_id=revocation.revoked_by_client_app_id,
        reason=revocation.reason,
    )


def agent_view(agent: AgentOverview, now: datetime) -> AgentView:
    latest = agent.latest
    if agent.revocation is not None or (latest is not None and latest.revoked):
        state = "revoked"
    elif latest is not None and latest.expires_at > now:
        state = "connected"
    else:
        state = "expired"
    return AgentView(
        agent_app_id=agent.agent_app_id,
        state=state,
        latest_registration=None
        if latest is None
        else RegistrationView(
            id=latest.id,
            issued_at=latest.issued_at,
            expires_at=latest.expires_at,
            enforce_client_authz=latest.enforce_client_authz,
            display_name=latest.display_name,
            agent_version=latest.agent_version,
        ),
        registrations=agent.registrations,
        revocation=revocation_view(agent.revocation),
    )
