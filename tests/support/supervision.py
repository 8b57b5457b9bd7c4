"""Fakes of what session start and the supervisor ask: presence of agents, and LiveKit's dispatch and room
APIs."""

from __future__ import annotations

from dataclasses import dataclass, field

from gateway.livekit_rooms import LiveKitUnavailable


class FakePresence:
    """Implements `gateway.session_start.Presence`: agents in `present` count as connected (every agent
    when `present` is None)."""

    def __init__(self, present: set[str] | None = None) -> None:
        self.present = present

    async def is_present(self, agent_id: str, deployment: str = "") -> bool:
        return self.present is None or agent_id in self.present


@dataclass
class FakeDispatcher:
    """Implements `gateway.livekit_rooms.AgentDispatcher`, recording each dispatch; `unavailable` makes
    every call fail as if LiveKit could not be reached."""

    unavailable: bool = False
    dispatches: list[tuple[str, str, str, str]] = field(default_factory=list)

    async def create_dispatch(self, room: str, agent_name: str, metadata: str, deployment: str = "") -> None:
        self.dispatches.append((room, agent_name, metadata, deployment))
        if self.unavailable:
            raise LiveKitUnavailable("LiveKit could not be reached (ClientConnectorError)")


@dataclass
class FakeRooms:
    """Implements `gateway.livekit_rooms.RoomControl`, recording deleted rooms; `unavailable` makes every
    call fail as if LiveKit could not be reached."""

    unavailable: bool = False
    deleted: list[str] = field(default_factory=list)

    async def delete_room(self, room: str) -> None:
        if self.unavailable:
            raise LiveKitUnavailable("LiveKit could not be reached (ClientConnectorError)")
        self.deleted.append(room)

    async def remove_participant(self, room: str, identity: str) -> None:
        raise AssertionError(f"not expected: remove_participant({room}, {identity})")

    async def aclose(self) -> None:
        """Nothing to close."""
