"""Agents that arrive, against the real LiveKit server with unmodified livekit-agents workers through the relay:
presence decides session starts, the supervisor brings an agent (back) into the user's room, sessions end at
their age limit, and revoking with `end_sessions` ends the agent's rooms. LiveKit sends its webhooks to lkps.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx
import pytest
from livekit import rtc

from authz.dev_issuer import DEMO_OPERATOR
from bench.harness import Deployment, livekit_env
from gateway.dev_livekit import LiveKitConfig, LiveKitProcess
from tests.relay.test_real_livekit import KEY, SECRET, Relay, join, run_worker, wait_for
from tests.support.db import POSTGRES_SERVER
from tests.support.dev_service import free_port, free_port_run
from tests.support.groups import skip_unless_available
from tests.support.livekit_server import require_livekit

pytestmark = [pytest.mark.slow, pytest.mark.anyio]
__all__ = ["run_worker"]  # the fixture, used by name

REDIS_URL = os.environ.get("LKPS_TEST_REDIS_URL")
JOIN_TIMEOUT = 20  # the default: a stock worker registers well within it even on a busy machine
GRACE = 30  # long enough to start a session after killing the only worker


class Stack:
    """LiveKit with webhooks to every lkps replica, and those replicas on one deployment."""

    def __init__(self, work: Path, replicas: int, **settings: str) -> None:
        self._exit = ExitStack()
        ports = [free_port() for _ in range(replicas)]
        config = LiveKitConfig(
            port=free_port_run(3),
            api_key=KEY,
            api_secret=SECRET,
            webhook_urls=tuple(f"http://127.0.0.1:{port}/api/livekit/webhook" for port in ports),
        )
        env = livekit_env(
            config.url,
            KEY,
            SECRET,
            LKPS_AGENT_JOIN_TIMEOUT_SECONDS=str(JOIN_TIMEOUT),
            LKPS_WORKER_PRESENCE_GRACE_SECONDS=str(GRACE),
            LKPS_WORKER_CHECK_INTERVAL_SECONDS="1",
            **settings,
        )
        db = "sqlite"
        if replicas > 1:
            skip_unless_available("postgres")  # the groups' own reasons; CI requires both groups
            skip_unless_available("redis")
            assert POSTGRES_SERVER is not None
            assert REDIS_URL is not None
            db = "postgres"
            env["LKPS_REDIS_URL"] = REDIS_URL
        self.livekit = self._exit.enter_context(LiveKitProcess(require_livekit(), config, work))
        self.deployment = self._exit.enter_context(
            Deployment.create(work, db, POSTGRES_SERVER or "", extra_env=env)
        )
        self.relays = [
            Relay(self.deployment, self._exit.enter_context(self.deployment.server(port=port)), None)  # type: ignore[arg-type]
            for port in ports
        ]

    def close(self) -> None:
        self._exit.close()

    async def session(self, relay: Relay, room: str, token: str) -> dict[str, Any]:
        """`GET /api/session/{room}` as the user that started it."""
        async with httpx.AsyncClient(base_url=relay.server.url) as http:
            response = await http.get(f"/api/session/{room}", headers={"Authorization": f"Bearer {token}"})
        assert response.status_code == 200, response.text
        return response.json()  # type: ignore[no-any-return]

    async def events(self, room: str, event: str) -> list[dict[str, Any]]:
        """The session's recorded events named `event` (admin view)."""
        state = self.deployment.state
        operator = state.app_token(self.deployment.issuer.authority, state.client(DEMO_OPERATOR))
        async with httpx.AsyncClient(base_url=self.relays[0].server.url) as http:
            response = await http.get(
                f"/api/admin/sessions/{room}", headers={"Authorization": f"Bearer {operator}"}
            )
        assert response.status_code == 200, response.text
        return [item for item in response.json()["events"] if item["event"] == event]


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    built = Stack(tmp_path / "one", 1)
    try:
        yield built
    finally:
        built.close()


async def start_worker(relay: Relay, run_worker: Any, credentials: dict[str, Any]) -> Any:
    worker = run_worker(credentials, credentials["agent_name"])
    await wait_for(lambda: "registered worker" in worker.log_text(), 60, "the worker to register")
    return worker


def agents(room: rtc.Room) -> list[rtc.RemoteParticipant]:
    kind = rtc.ParticipantKind.PARTICIPANT_KIND_AGENT
    return [p for p in room.remote_participants.values() if p.kind == kind]


async def test_no_worker_means_404_and_a_worker_means_a_session(stack: Stack, run_worker: Any) -> None:
    """A registered agent with no worker connected is refused with 404 agent_not_connected; once its worker
    registered through the relay, the same request starts a session."""
    relay = stack.relays[0]
    agent = relay.agent("agent without worker")
    credentials = await relay.register(agent)
    token = relay.deployment.user_token("alice")
    async with httpx.AsyncClient(base_url=relay.server.url) as http:
        refused = await http.post(
            "/api/session/start",
            headers={"Authorization": f"Bearer {token}"},
            json={"agent_entra_app_id": agent.client_id},
        )
    assert refused.status_code == 404
    assert refused.json()["error"] == "agent_not_connected"
    assert refused.json()["message"] == f"Agent with app ID '{agent.client_id}' is not connected"
    await start_worker(relay, run_worker, credentials)
    session = await relay.start_session(agent.client_id)
    assert session["room_name"]


async def test_a_killed_worker_is_replaced_by_the_other_one(stack: Stack, run_worker: Any) -> None:
    """With two workers of the agent connected, SIGKILLing the one whose job is in the user's room brings
    an agent back into the room from the other, and the owner sees it joined again."""
    relay = stack.relays[0]
    agent = relay.agent("agent with two workers")
    credentials = await relay.register(agent)
    workers = [await start_worker(relay, run_worker, credentials) for _ in range(2)]
    session = await relay.start_session(agent.client_id)
    token = relay.deployment.user_token("alice")
    async with join(session) as joined:
        user_joined = time.monotonic()
        await wait_for(lambda: bool(agents(joined.room)), 30, "the first agent")
        first_join = time.monotonic() - user_joined
        await wait_for(lambda: any(session["room_name"] in w.rooms() for w in workers), 10, "the job record")
        serving = next(w for w in workers if session["room_name"] in w.rooms())
        other = next(w for w in workers if w is not serving)
        first_identity = agents(joined.room)[0].identity
        serving.process.send_signal(signal.SIGKILL)
        killed = time.monotonic()
        await wait_for(
            lambda: any(p.identity != first_identity for p in agents(joined.room)), 90, "an agent back"
        )
        back_after = time.monotonic() - killed
        assert session["room_name"] in other.rooms()
        status = await stack.session(relay, session["room_name"], token)
        assert status["agent"]["state"] == "joined"
        assert status["agent"]["dispatch_attempts"] == 2
    dispatches = await stack.events(session["room_name"], "lkps_agent_dispatch")
    assert [d["details"]["cause"] for d in dispatches] == ["agent_lost"]
    print(f"join latency: first {first_join:.2f} s; after SIGKILL {back_after:.2f} s")  # noqa: T201


async def test_a_job_nobody_took_arrives_once_a_worker_is_there(tmp_path: Path, run_worker: Any) -> None:
    """Two replicas on one PostgreSQL and Redis: a worker on replica A is seen by replica B, which starts a
    session after the worker died (within the grace); nobody takes the room's dispatch, and once a new
    worker is connected, exactly one re-dispatch brings the agent."""
    stack = await asyncio.to_thread(Stack, tmp_path / "two", 2)
    try:
        relay_a, relay_b = stack.relays
        agent = relay_a.agent("agent arriving late")
        credentials = await relay_a.register(agent)
        first = await start_worker(relay_a, run_worker, credentials)  # its worker_url is replica A's
        started = await relay_b.start_session(agent.client_id)  # presence seen by B
        assert started["room_name"]
        first.process.send_signal(signal.SIGKILL)
        first.process.wait(timeout=10)
        await asyncio.sleep(2)  # LiveKit notices the worker's connection is gone
        session = await relay_b.start_session(agent.client_id)  # within the grace: still counted
        token = relay_b.deployment.user_token("alice")
        async with join(session) as joined:
            joined_at = time.monotonic()
            await start_worker(relay_a, run_worker, credentials)
            registered_after = time.monotonic() - joined_at
            assert registered_after < JOIN_TIMEOUT, "too slow a worker start for this test to tell"
            assert agents(joined.room) == []  # the room's own dispatch found no worker
            await wait_for(lambda: bool(agents(joined.room)), JOIN_TIMEOUT + 30, "the agent")
            status = await stack.session(relay_a, session["room_name"], token)
            assert status["agent"]["state"] == "joined"
        dispatches = await stack.events(session["room_name"], "lkps_agent_dispatch")
        assert [d["details"] for d in dispatches] == [
            {"attempt": 2, "cause": "join_timeout", "outcome": "created"}
        ], dispatches
    finally:
        await asyncio.to_thread(stack.close)


async def test_the_session_limit_disconnects_the_user_and_ends_the_row(
    tmp_path: Path, run_worker: Any
) -> None:
    """With LKPS_MAX_SESSION_SECONDS=4 the user is disconnected soon after the session's age passes 4 s and
    the owner sees it ended with `max_duration`."""
    stack = await asyncio.to_thread(Stack, tmp_path / "limit", 1, LKPS_MAX_SESSION_SECONDS="4")
    try:
        relay = stack.relays[0]
        agent = relay.agent("agent with a limit")
        credentials = await relay.register(agent)
        await start_worker(relay, run_worker, credentials)
        session = await relay.start_session(agent.client_id)
        token = relay.deployment.user_token("alice")
        async with join(session) as joined:
            await wait_for(
                lambda: joined.room.connection_state == rtc.ConnectionState.CONN_DISCONNECTED,
                20,
                "the limit to disconnect the user",
            )
        status = await stack.session(relay, session["room_name"], token)
        assert (status["status"], status["ended_by"]) == ("ended", "max_duration")
    finally:
        await asyncio.to_thread(stack.close)


async def test_revoking_with_end_sessions_disconnects_the_user_within_5_seconds(
    stack: Stack, run_worker: Any
) -> None:
    """`revoke` with `end_sessions` deletes the agent's live room: the user is disconnected within 5 s and
    the session ends with `revoked`; revoking another agent without it leaves its session running."""
    relay = stack.relays[0]
    agent, bystander = relay.agent("agent revoked live"), relay.agent("agent kept live")
    credentials = await relay.register(agent)
    await relay.register(bystander)
    await relay.seem_connected(bystander.client_id)
    await start_worker(relay, run_worker, credentials)
    session = await relay.start_session(agent.client_id)
    kept = await relay.start_session(bystander.client_id)
    token = relay.deployment.user_token("alice")
    operator = relay.app_token(relay.deployment.state.client(DEMO_OPERATOR))
    async with join(session) as joined, join(kept) as staying:
        await wait_for(lambda: bool(agents(joined.room)), 30, "the agent")
        without = await relay.post(f"/api/admin/agents/{bystander.client_id}/revoke", operator, {})
        assert without["sessions_ending"] == 0
        revoked_at = time.monotonic()
        answer = await relay.post(
            f"/api/admin/agents/{agent.client_id}/revoke", operator, {"end_sessions": True}
        )
        assert answer["sessions_ending"] == 1
        await wait_for(
            lambda: joined.room.connection_state == rtc.ConnectionState.CONN_DISCONNECTED,
            10,
            "the user to be disconnected",
        )
        assert time.monotonic() - revoked_at < 5
        assert staying.room.connection_state == rtc.ConnectionState.CONN_CONNECTED
    status = await stack.session(relay, session["room_name"], token)
    assert (status["status"], status["ended_by"]) == ("ended", "revoked")
