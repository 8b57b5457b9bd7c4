"""What the worker relay reports about the workers it relays, and what lkps does with it: presence (a
worker LiveKit registered counts until its connection ends) and supervision (a failed job means the agent
is lost from its room).

The relay calls these synchronously from its frame loop; nothing here waits on the database there.
"""

from __future__ import annotations

from typing import Protocol

from livekit.protocol.agent import JobStatus

from gateway.background import OrderedWrites
from gateway.presence import WorkerPresence
from gateway.supervisor import SessionSupervisor


class WorkerEvents(Protocol):
    def registered(self, connection_id: str, agent_app_id: str, deployment: str) -> None:
        """LiveKit answered the worker's `register`."""
        ...

    def ended(self, connection_id: str) -> None:
        """The relayed connection is over (either side, or lkps, closed it)."""
        ...

    def job_assigned(self, connection_id: str, job_id: str, room_name: str) -> None:
        """LiveKit assigned the worker a job (relayed to it)."""
        ...

    def job_status(self, connection_id: str, job_id: str, status: int) -> None:
        """The worker reported a job's status (`livekit.protocol.agent.JobStatus`)."""
        ...


class RelayedWorkerEvents:
    def __init__(self, presence: WorkerPresence, supervisor: SessionSupervisor) -> None:
        self._presence = presence
        self._supervisor = supervisor
        self._rooms: dict[str, dict[str, str]] = {}  # connection id -> job id -> room, of running jobs
        self._writes = OrderedWrites("worker_event_write_failed")

    def registered(self, connection_id: str, agent_app_id: str, deployment: str) -> None:
        self._presence.registered(connection_id, agent_app_id, deployment)

    def ended(self, connection_id: str) -> None:
        self._rooms.pop(connection_id, None)
        self._presence.ended(connection_id)

    def job_assigned(self, connection_id: str, job_id: str, room_name: str) -> None:
        self._rooms.setdefault(connection_id, {})[job_id] = room_name

    def job_status(self, connection_id: str, job_id: str, status: int) -> None:
        if status in {JobStatus.JS_PENDING, JobStatus.JS_RUNNING}:
            return
        room = self._rooms.get(connection_id, {}).pop(job_id, None)
        if room is not None and status == JobStatus.JS_FAILED:
            self._writes.later(self._supervisor.agent_failed(room))

    async def aclose(self) -> None:
        await self._writes.aclose()
