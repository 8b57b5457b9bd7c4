"""Starting a session, independent of HTTP: agent lookup, client authorization, room, token, audit row.

Both `POST /api/session/start` and the LiveKit-format token endpoint go through `SessionStarter.start`,
so limits, authorization and audit cannot differ between them.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol

from authz.caller import Caller
from authz.clock import Clock
from authz.errors import AuthUnavailable
from gateway.errors import ApiError, database_errors
from gateway.livekit_tokens import LiveKitMinter
from gateway.observability.context import RequestContext
from gateway.persistence.agents import AgentRegistry
from gateway.persistence.sessions import SessionRecord, SessionWriter
from gateway.ratelimit import SessionRateLimits, retry_after_header
from gateway.rooms import room_name


class Presence(Protocol):
    async def is_present(self, agent_id: str, deployment: str = "") -> bool:
        """Whether a worker of the agent is connected through the relay (or was, within the grace)."""
        ...


class ClientAuthorizer(Protocol):
    """Decides whether `caller`'s client application may talk to an agent that enforces client authz."""

    async def authorize(self, caller: Caller, agent_app_id: str) -> None:
        """Return if allowed; raise AccessDenied (403) or AuthUnavailable (503) otherwise."""
        ...

    async def aclose(self) -> None: ...


@dataclass(frozen=True, slots=True)
class StartRequest:
    """What a session-start body asks for, in either endpoint's format, already checked."""

    agent_app_id: str
    metadata: str  # the dispatch metadata JSON, already within the session-start limits
    display_name: str | None = None  # shown in the room; the identity always comes from the token
    deployment: str = ""  # LiveKit's default deployment; checked by `gateway.schemas.checked_deployment`


@dataclass(frozen=True, slots=True)
class StartedSession:
    room_name: str
    participant_token: str
    participant_identity: str
    expires_at: int


class SessionStarter:
    def __init__(
        self,
        *,
        registry: AgentRegistry,
        authorizer: ClientAuthorizer | None,
        minter: LiveKitMinter,
        writer: SessionWriter,
        clock: Clock,
        token_ttl_seconds: int,
        presence: Presence,
        first_check: Callable[[datetime], datetime | None],
        limits: SessionRateLimits | None = None,
    ) -> None:
        self._presence = presence
        self._first_check = first_check
        self._limits = limits
        self._registry = registry
        self._authorizer = authorizer
        self._minter = minter
        self._writer = writer
        self._clock = clock
        self._ttl = token_ttl_seconds

    async def start(
        self,
        caller: Caller,
        agent_app_id: str,
        agent_metadata: str,
        ctx: RequestContext,
        *,
        display_name: str | None = None,
        deployment: str = "",
    ) -> StartedSession:
        """`display_name` (the token endpoint's `participant_name`) replaces only the shown name, never
        the identity, which always comes from the validated token; `deployment` (validated by the caller,
        `gateway.schemas.checked_deployment`) picks which of the agent's LiveKit deployments gets the job."""
        ctx.fields["agent_id"] = agent_app_id
        # The user's own budget pays for everything they ask, refusals included; the budget shared by
        # their client's users only for what is served (see gateway.ratelimit).
        if self._limits is not None:
            _refuse_if_waiting(
                await self._limits.user_wait(caller),
                f"Too many session starts by you through client application '{caller.client_app_id}'",
                "rate_limited_user",
            )
        with database_errors("The agent registry could not be read; retry shortly."):
            agent = await self._registry.active(agent_app_id)
            present = agent is not None and await self._presence.is_present(agent_app_id, deployment)
        if agent is None or not present:
            raise ApiError(
                404,
                "agent_not_connected",
                f"Agent with app ID '{agent_app_id}' is not connected",
                reason="agent_not_connected",
            )
        if agent.enforce_client_authz:
            if self._authorizer is None:
                raise AuthUnavailable(
                    "preauthorization_unconfigured",
                    "This agent requires client authorization, but lkps has no Microsoft Graph credential "
                    "configured to check it; contact the lkps operators.",
                )
            await self._authorizer.authorize(caller, agent_app_id)
        if self._limits is not None:
            _refuse_if_waiting(
                await self._limits.client_wait(caller),
                f"Too many session starts for client application '{caller.client_app_id}'",
                "rate_limited_client",
            )

        now = self._clock.now()
        created_at = datetime.fromtimestamp(now, UTC)
        room = room_name(caller.user_id, agent_app_id, int(now * 1000), os.urandom(4).hex())
        identity = caller.identity
        token = self._minter.participant_token(
            identity=identity,
            name=display_name or caller.display_name,
            room=room,
            attributes={
                "lkps.client_app_id": caller.client_app_id,
                "lkps.object_id": caller.object_id,
                "lkps.caller_kind": caller.kind.value,
            },
            agent_name=agent_app_id,
            agent_metadata=agent_metadata,
            agent_deployment=deployment,
            ttl_seconds=self._ttl,
        )
        # The token is dropped unsent if this fails: no session is handed out without its audit row.
        with database_errors("The session could not be recorded, so no token was issued; retry shortly."):
            await self._writer.record(
                SessionRecord(
                    id=new_session_id(),
                    room_name=room,
                    agent_app_id=agent_app_id,
                    deployment=deployment,
                    tenant_id=caller.tenant_id,
                    caller_object_id=caller.object_id,
                    client_app_id=caller.client_app_id,
                    caller_kind=caller.kind.value,
                    user_id=caller.user_id,
                    participant_identity=identity,
                    created_at=created_at,
                    token_expires_at=datetime.fromtimestamp(token.expires_at, UTC),
                    request_id=ctx.request_id,
                    agent_metadata=agent_metadata,
                    next_check_at=self._first_check(created_at),
                )
            )
        ctx.fields["room"] = room
        return StartedSession(room, token.jwt, identity, token.expires_at)


def _refuse_if_waiting(wait: float, what: str, reason: str) -> None:
    if wait:
        retry_after = retry_after_header(wait)
        raise ApiError(
            429,
            "rate_limited",
            f"{what}; retry after {retry_after} s.",
            reason=reason,
            headers={"Retry-After": retry_after},
        )


# The variant nibble of an RFC 9562 UUID from any hex digit: its two high bits are 10.
_VARIANT = {digit: "89ab"[int(digit, 16) & 3] for digit in "0123456789abcdef"}


def new_session_id() -> str:
    """A random (version 4) UUID, formatted directly: `str(uuid.uuid4())` builds a `UUID` object first, at
    several times the cost, for a string written once."""
    h = os.urandom(16).hex()
    return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{_VARIANT[h[16]]}{h[17:20]}-{h[20:]}"
