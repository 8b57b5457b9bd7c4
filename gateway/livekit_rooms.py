"""Deleting rooms, removing participants (RoomService) and dispatching agents (AgentDispatchService) through
LiveKit's server API over Twirp, behind small seams."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable
from typing import Protocol
from urllib.parse import urlsplit, urlunsplit

import aiohttp
from livekit import api

from config import Settings


class LiveKitUnavailable(Exception):
    """LiveKit could not be reached or failed (transport error, timeout, 5xx): worth retrying later."""


class LiveKitNotFound(Exception):
    """LiveKit has no such room or participant."""


class LiveKitRefused(Exception):
    """LiveKit refused the call (a 4xx other than not found): lkps's key or configuration is wrong."""


class RoomControl(Protocol):
    async def delete_room(self, room: str) -> None:
        """Delete `room` and disconnect everyone in it; a room that is already gone counts as deleted.

        Raises LiveKitUnavailable or LiveKitRefused.
        """
        ...

    async def remove_participant(self, room: str, identity: str) -> None:
        """Disconnect `identity` from `room`. Raises LiveKitNotFound, LiveKitUnavailable or LiveKitRefused."""
        ...

    async def aclose(self) -> None: ...


class AgentDispatcher(Protocol):
    async def create_dispatch(self, room: str, agent_name: str, metadata: str, deployment: str = "") -> None:
        """Ask LiveKit to send the agent into `room` again. Raises LiveKitUnavailable or LiveKitRefused."""
        ...


def server_api_url(settings: Settings) -> str:
    """`LKPS_LIVEKIT_API_URL`, else the clients' LiveKit URL with its websocket scheme made HTTP."""
    if settings.livekit_api_url:
        return settings.livekit_api_url
    parts = urlsplit(settings.livekit_url)
    scheme = {"wss": "https", "ws": "http"}.get(parts.scheme, parts.scheme)
    return urlunsplit((scheme, parts.netloc, parts.path, "", "")).rstrip("/")


class LiveKitRooms:
    """RoomControl and AgentDispatcher with `livekit-api`: each call carries a fresh token with only the
    grant it needs."""

    def __init__(self, url: str, api_key: str, api_secret: str, timeout_seconds: float) -> None:
        self._url = url
        self._key = api_key
        self._secret = api_secret
        self._timeout = timeout_seconds
        self._api: api.LiveKitAPI | None = None

    def _client(self) -> api.LiveKitAPI:
        # Made on first use, inside the serving event loop: an aiohttp session belongs to the loop that
        # created it. No failover: its region discovery is for LiveKit Cloud and would exceed the timeout.
        if self._api is None:
            self._api = api.LiveKitAPI(self._url, self._key, self._secret, failover=False)
        return self._api

    async def delete_room(self, room: str) -> None:
        with contextlib.suppress(LiveKitNotFound):
            await self._call(self._client().room.delete_room(api.DeleteRoomRequest(room=room)))

    async def remove_participant(self, room: str, identity: str) -> None:
        await self._call(
            self._client().room.remove_participant(api.RoomParticipantIdentity(room=room, identity=identity))
        )

    async def create_dispatch(self, room: str, agent_name: str, metadata: str, deployment: str = "") -> None:
        request = api.CreateAgentDispatchRequest(
            agent_name=agent_name, room=room, metadata=metadata, deployment=deployment
        )
        await self._call(self._client().agent_dispatch.create_dispatch(request))

    async def _call(self, call: Awaitable[object]) -> None:
        try:
            # Bounded here: livekit-api 1.2.2 passes `timeout=None` per call, which disables the timeout of
            # its aiohttp session.
            async with asyncio.timeout(self._timeout):
                await call
        except api.TwirpError as exc:
            if exc.code == api.TwirpErrorCode.NOT_FOUND:
                raise LiveKitNotFound(exc.message) from exc
            if exc.status >= 500:
                raise LiveKitUnavailable(f"LiveKit answered {exc.status} ({exc.code})") from exc
            raise LiveKitRefused(f"LiveKit refused the call with {exc.status} ({exc.code})") from exc
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise LiveKitUnavailable(f"LiveKit could not be reached ({type(exc).__name__})") from exc

    async def aclose(self) -> None:
        if self._api is not None:
            await self._api.aclose()
