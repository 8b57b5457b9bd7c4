"""Ending a session, independent of HTTP: delete its LiveKit room, then mark the session row ended.

The row is marked only once LiveKit confirms the room is gone (or never existed), so a session reported
ended really is over; when LiveKit cannot be reached the row stays as it was and the caller may retry.
"""

from __future__ import annotations

import structlog

from authz.caller import Caller
from authz.clock import Clock, utc_now
from gateway.errors import ApiError, database_errors
from gateway.livekit_rooms import LiveKitRefused, LiveKitUnavailable, RoomControl
from gateway.persistence.lifecycle import SessionLifecycle, SessionState

log = structlog.get_logger("lkps.sessions")


class SessionEnder:
    def __init__(self, lifecycle: SessionLifecycle, rooms: RoomControl, clock: Clock) -> None:
        self._lifecycle = lifecycle
        self._rooms = rooms
        self._clock = clock

    async def end(self, room_name: str, ended_by: str, owner: Caller | None = None) -> SessionState:
        """End the session in `room_name`; with `owner`, only if that caller started it. Idempotent."""
        session = await existing_session(self._lifecycle, room_name)
        if owner is not None:
            check_owner(session, owner)
        if session.status == "ended":
            return session
        deleting_since = utc_now(self._clock)
        await self._delete_room(room_name, "the session is still open")
        with database_errors("The room was deleted but the session could not be marked ended; retry."):
            ended = await self._lifecycle.end(room_name, ended_by, since=deleting_since)
        if ended is None:  # pruned meanwhile
            raise session_not_found(room_name)
        return ended

    async def close_reopened(self, room_name: str) -> None:
        """Delete again the room of an ended session that LiveKit reports activity in: a participant token
        still within its TTL re-created it. An ended session stays ended."""
        log.warning("session.reopened_after_end", room=room_name)
        await self._delete_room(
            room_name, "the ended session's room is open again; LiveKit retries this webhook"
        )

    async def _delete_room(self, room_name: str, consequence: str) -> None:
        try:
            await self._rooms.delete_room(room_name)
        except LiveKitUnavailable as exc:
            raise ApiError(
                502,
                "livekit_unavailable",
                f"LiveKit could not be reached to delete the room ({exc}); {consequence}, retry shortly.",
                headers={"Retry-After": "5"},
            ) from exc
        except LiveKitRefused as exc:
            raise ApiError(
                502,
                "livekit_error",
                f"LiveKit refused to delete the room ({exc}); {consequence}. "
                "Contact the lkps operators: its LiveKit API key may be wrong.",
            ) from exc


async def existing_session(lifecycle: SessionLifecycle, room_name: str) -> SessionState:
    """The session in `room_name`; else 404."""
    with database_errors("The session could not be read; retry shortly."):
        session = await lifecycle.session(room_name)
    if session is None:
        raise session_not_found(room_name)
    return session


def check_owner(session: SessionState, owner: Caller) -> None:
    """403 unless `owner` started the session (same tenant, user or service principal, and client app)."""
    if (session.tenant_id, session.caller_object_id, session.client_app_id) != (
        owner.tenant_id,
        owner.object_id,
        owner.client_app_id,
    ):
        raise ApiError(403, "forbidden", "This session belongs to another caller", reason="session_not_owned")


def session_not_found(room_name: str) -> ApiError:
    return ApiError(404, "session_not_found", f"No session with room name '{room_name}'.")
