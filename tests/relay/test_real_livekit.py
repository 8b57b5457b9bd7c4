"""The worker relay against the real LiveKit server: an unmodified livekit-agents 1.8 worker, holding only the
credentials `POST /api/agent/register` gave, serves its own agent's sessions through `lkps serve` and
nothing else; the realtime SDK plays the user."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import httpx
import jwt
import orjson
import pytest
from livekit import api, rtc
from livekit.protocol import agent as lk_agent

from authz.dev_issuer import DEMO_OPERATOR, DevClient
from bench.harness import Deployment, Server, livekit_env, seed_presence
from gateway.dev_livekit import LiveKitConfig, LiveKitProcess
from tests.support.dev_service import free_port, free_port_run
from tests.support.livekit_server import require_livekit
from tests.support.worker_protocol import (
    next_server_message,
    open_worker,
    register,
    simulate_frame,
    worker_jwt,
)

pytestmark = [pytest.mark.slow, pytest.mark.anyio]

WORKER_APP = Path(__file__).with_name("stock_worker.py")
REFUSAL_HOLD_SECONDS = 3
CONNECTION_CAP = 3
HANDSHAKES_PER_MINUTE = 10


KEY = "APIrelaytest"
SECRET = "relay-test-secret-that-is-long-enough-for-livekit"


@dataclass(frozen=True)
class LiveKitServer:
    config: LiveKitConfig

    @property
    def ws_url(self) -> str:
        return self.config.url

    @property
    def http_url(self) -> str:
        return self.config.api_url

    @property
    def key(self) -> str:
        return self.config.api_key

    @property
    def secret(self) -> str:
        return self.config.api_secret

    def lkps_env(self, **extra: str) -> dict[str, str]:
        """The environment of an lkps pointed at this server."""
        return livekit_env(self.ws_url, self.key, self.secret, **extra)


@pytest.fixture(scope="module")
def livekit_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveKitServer]:
    """The real LiveKit server, started by lkps's own launcher on free ports with a key of this module's."""
    binary = require_livekit()
    config = LiveKitConfig(port=free_port_run(3), api_key=KEY, api_secret=SECRET)
    with LiveKitProcess(binary, config, tmp_path_factory.mktemp("livekit")):
        yield LiveKitServer(config)


@dataclass
class Relay:
    deployment: Deployment
    server: Server
    livekit: LiveKitServer

    def agent(self, description: str) -> DevClient:
        """A new agent app registration of the dev tenant (its app-only tokens carry the agent role)."""
        return DevClient(
            str(uuid.uuid4()), "unused", [self.deployment.state.identity.agent_role], description
        )

    def app_token(self, client: DevClient) -> str:
        return self.deployment.state.app_token(self.deployment.issuer.authority, client)

    async def post(self, path: str, token: str, body: dict[str, Any]) -> dict[str, Any]:
        """POST to lkps; the answer must be 200."""
        async with httpx.AsyncClient(base_url=self.server.url) as http:
            response = await http.post(path, headers={"Authorization": f"Bearer {token}"}, json=body)
        assert response.status_code == 200, response.text
        return response.json()  # type: ignore[no-any-return]

    async def register(self, client: DevClient) -> dict[str, Any]:
        return await self.post("/api/agent/register", self.app_token(client), {"enforce_client_authz": False})

    async def start_session(self, agent_id: str, **fields: str) -> dict[str, Any]:
        token = self.deployment.user_token("alice")
        return await self.post("/api/session/start", token, {"agent_entra_app_id": agent_id, **fields})

    async def seem_connected(self, agent_id: str, deployment: str = "") -> None:
        """Let sessions to the agent (in `deployment`) start with none of its workers connected (nobody takes
        their job)."""
        await seed_presence(self.deployment.database_url, agent_id, deployment)

    async def revoke(self, agent_id: str) -> None:
        operator = self.app_token(self.deployment.state.client(DEMO_OPERATOR))
        await self.post(f"/api/admin/agents/{agent_id}/revoke", operator, {"reason": "relay test"})

    async def metric(self, name: str) -> float:
        async with httpx.AsyncClient(base_url=self.server.url) as http:
            text = (await http.get("/metrics")).text
        return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(name))


@pytest.fixture(scope="module")
def relay(livekit_server: LiveKitServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Relay]:
    env = livekit_server.lkps_env(
        LKPS_WORKER_REFUSAL_HOLD_SECONDS=str(REFUSAL_HOLD_SECONDS),
        LKPS_WORKER_CHECK_INTERVAL_SECONDS="1",
        LKPS_WORKER_MAX_CONNECTIONS_PER_AGENT=str(CONNECTION_CAP),
        LKPS_WORKER_HANDSHAKES_PER_MINUTE=str(HANDSHAKES_PER_MINUTE),
    )
    with (
        Deployment.create(tmp_path_factory.mktemp("relay"), extra_env=env) as deployment,
        deployment.server() as server,
    ):
        yield Relay(deployment, server, livekit_server)


@dataclass
class Worker:
    process: subprocess.Popen[bytes]
    log: Path
    jobs: Path

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")

    def rooms(self) -> list[str]:
        return self.jobs.read_text().split() if self.jobs.exists() else []


@pytest.fixture
def run_worker(tmp_path: Path) -> Iterator[Any]:
    """Start stock workers (`python stock_worker.py start`) with the given credentials; stopped at the end."""
    started: list[Worker] = []

    def start(credentials: dict[str, Any], agent_name: str, **extra_env: str) -> Worker:
        index = len(started)
        log, jobs = tmp_path / f"worker-{index}.log", tmp_path / f"jobs-{index}.txt"
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("LIVEKIT_", "LKPS_"))},
            "LIVEKIT_URL": credentials["worker_url"],
            "LIVEKIT_API_KEY": credentials["worker_api_key"],
            "LIVEKIT_API_SECRET": credentials["worker_api_secret"],
            "LIVEKIT_AGENT_NAME": agent_name,
            "RELAY_TEST_JOBS": str(jobs),
            **extra_env,
        }
        with log.open("wb") as out:
            process = subprocess.Popen(
                [sys.executable, str(WORKER_APP), "start", "--log-level", "debug"],
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        worker = Worker(process, log, jobs)
        started.append(worker)
        return worker

    yield start
    for worker in started:
        worker.process.terminate()
        try:
            worker.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            worker.process.kill()


async def open_relayed(
    http: aiohttp.ClientSession, credentials: dict[str, Any]
) -> aiohttp.ClientWebSocketResponse:
    """A raw worker connection through lkps with the credentials a registration returned."""
    return await open_worker(
        http, credentials["worker_url"], credentials["worker_api_key"], credentials["worker_api_secret"]
    )


async def wait_for(predicate: Any, seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.2)


@dataclass
class Joined:
    room: rtc.Room
    greetings: list[bytes]

    def agents(self) -> list[rtc.RemoteParticipant]:
        kind = rtc.ParticipantKind.PARTICIPANT_KIND_AGENT
        return [p for p in self.room.remote_participants.values() if p.kind == kind]

    def on_data(self, packet: rtc.DataPacket) -> None:
        self.greetings.append(packet.data)


@asynccontextmanager
async def join(session: dict[str, Any]) -> AsyncIterator[Joined]:
    """Join a session's room as its user, with the participant token lkps gave (which dispatches the agent)."""
    room = rtc.Room()
    joined = Joined(room, [])
    room.on("data_received", joined.on_data)
    await room.connect(session["livekit_url"], session["participant_token"])
    try:
        yield joined
    finally:
        await room.disconnect()


async def test_stock_worker_is_dispatched_into_its_agents_session_and_joins(
    relay: Relay, run_worker: Any
) -> None:
    """The worker registers through lkps, gets the job of its agent's session and joins the room at LiveKit
    (the assignment carries LiveKit's URL: lkps serves no media), greeting the user there."""
    agent = relay.agent("agent a")
    credentials = await relay.register(agent)
    worker = run_worker(credentials, credentials["agent_name"])
    await wait_for(lambda: "registered worker" in worker.log_text(), 30, "the worker to register")
    session = await relay.start_session(agent.client_id)
    async with join(session) as joined:
        await wait_for(lambda: bool(joined.greetings), 30, "the agent's greeting")
        assert joined.greetings == [b"hello from the agent"]
        await wait_for(lambda: bool(joined.agents()), 10, "the agent participant")
        (agent_participant,) = joined.agents()
        assert agent_participant.attributes.get("lk.agent.name") == agent.client_id, (
            agent_participant.attributes
        )
    assert worker.rooms() == [session["room_name"]]
    assert await relay.metric("lkps_worker_jobs_total") >= 1


async def test_a_renewal_does_not_drop_the_running_worker(relay: Relay, run_worker: Any) -> None:
    """Registering again while the worker runs returns the same credentials, the worker stays connected and
    still gets its agent's next session."""
    agent = relay.agent("agent renewing")
    credentials = await relay.register(agent)
    worker = run_worker(credentials, credentials["agent_name"])
    await wait_for(lambda: "registered worker" in worker.log_text(), 30, "the worker to register")
    renewed = await relay.register(agent)
    assert renewed["worker_api_secret"] == credentials["worker_api_secret"]
    await asyncio.sleep(2.5)  # more than a key check interval of the relay
    session = await relay.start_session(agent.client_id)
    async with join(session) as joined:
        await wait_for(lambda: bool(joined.greetings), 30, "the agent's greeting")
    assert worker.log_text().count("registered worker") == 1


async def test_a_credentials_cannot_register_as_b_nor_get_bs_jobs(relay: Relay, run_worker: Any) -> None:
    """A worker with agent A's credentials declaring agent B's name is never registered at LiveKit, gets no
    job of B's session, and is refused about once per hold period (no reconnect storm)."""
    agent_a, agent_b = relay.agent("agent a2"), relay.agent("agent b")
    credentials = await relay.register(agent_a)
    await relay.register(agent_b)
    await relay.seem_connected(agent_b.client_id)
    mismatches = 'lkps_worker_refusals_total{reason="agent_name_mismatch"}'
    refused_before = await relay.metric(mismatches)
    worker = run_worker(credentials, agent_b.client_id)
    deadline = time.monotonic() + 60
    while await relay.metric(mismatches) == refused_before:  # the worker's first attempt (its start is slow)
        assert time.monotonic() < deadline, "the worker never tried to register"
        await asyncio.sleep(0.2)
    started = time.monotonic()
    first = await relay.metric(mismatches)
    session = await relay.start_session(agent_b.client_id)
    async with join(session) as joined:
        await asyncio.sleep(3 * REFUSAL_HOLD_SECONDS)
        assert joined.agents() == []
    elapsed = time.monotonic() - started
    refused = await relay.metric(mismatches) - first
    assert "registered worker" not in worker.log_text()
    assert worker.rooms() == []
    assert 1 <= refused <= elapsed / REFUSAL_HOLD_SECONDS + 1  # one attempt per hold period


async def test_simulate_job_through_lkps_gets_nothing(relay: Relay) -> None:
    """`simulate_job` for another agent's room, sent by a worker registered through lkps, brings no job; the
    same frame sent straight to LiveKit with a LiveKit key does (so the check can fail)."""
    agent_a, agent_b = relay.agent("agent a3"), relay.agent("agent b3")
    credentials = await relay.register(agent_a)
    await relay.register(agent_b)
    await relay.seem_connected(agent_b.client_id)
    victim_room = (await relay.start_session(agent_b.client_id))["room_name"]
    async with aiohttp.ClientSession() as http:
        through_lkps = await open_relayed(http, credentials)
        await register(through_lkps, agent_a.client_id)
        await through_lkps.send_bytes(simulate_frame(victim_room))
        assert await _job_offer(through_lkps, 5) is None
        await through_lkps.close()

        direct = await open_worker(http, relay.livekit.ws_url, relay.livekit.key, relay.livekit.secret)
        await register(direct, agent_a.client_id)
        await direct.send_bytes(simulate_frame(victim_room))
        offer = await _job_offer(direct, 10)
        assert offer is not None
        assert offer.room.name == victim_room
        await direct.close()
    assert await relay.metric('lkps_worker_security_events_total{kind="simulate_job"}') >= 1


async def _job_offer(ws: aiohttp.ClientWebSocketResponse, seconds: float) -> Any:
    """The job of the next availability request or assignment within `seconds`, else None."""
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        message = await next_server_message(ws, left)
        if message is None:
            return None
        if message.HasField("availability"):
            return message.availability.job
        if message.HasField("assignment"):
            return message.assignment.job
    return None


async def _livekit_answers(relay: Relay) -> bool:
    """LiveKit's server API answers (the server did not crash)."""
    async with api.LiveKitAPI(relay.livekit.http_url, relay.livekit.key, relay.livekit.secret) as livekit:
        await livekit.room.list_rooms(api.ListRoomsRequest())
    return True


@pytest.mark.parametrize("target", ["another-agents-session", "never-created", "no-room"])
async def test_a_text_simulate_job_gets_nothing_and_livekit_stays_up(relay: Relay, target: str) -> None:
    """A worker registered through lkps that sends `simulateJob` as a protojson TEXT frame (for another
    agent's session room, for a room lkps never created, or without any room, which crashes LiveKit
    v1.13.5) gets no offer and no assignment: lkps closes it with 1008, counts a security event, and
    LiveKit still answers."""
    agent_a, agent_b = relay.agent(f"agent a {target}"), relay.agent(f"agent b {target}")
    credentials = await relay.register(agent_a)
    await relay.register(agent_b)
    await relay.seem_connected(agent_b.client_id)
    victim = (await relay.start_session(agent_b.client_id))["room_name"]
    room = {
        "another-agents-session": {"room": {"name": victim}},
        "never-created": {"room": {"name": "made-up"}},
    }
    frame = orjson.dumps({"simulateJob": room.get(target, {})}).decode()
    counted = 'lkps_worker_security_events_total{kind="text_frame"}'
    before = await relay.metric(counted)
    async with aiohttp.ClientSession() as http:
        ws = await open_relayed(http, credentials)
        await register(ws, agent_a.client_id)
        await ws.send_str(frame)
        assert await _job_offer(ws, 5) is None
        assert ws.closed
        assert ws.close_code == 1008
    assert await relay.metric(counted) == before + 1
    await asyncio.sleep(1)  # what a crash would need to show
    assert await _livekit_answers(relay)


async def test_an_answer_with_the_users_identity_and_lkps_attributes_gets_neither(relay: Relay) -> None:
    """A worker answering its own session's job with the user's identity and an `lkps.*` attribute gets a
    room token for `agent-<job id>` without that attribute, and the user stays in the room."""
    agent = relay.agent("agent answering")
    credentials = await relay.register(agent)
    async with aiohttp.ClientSession() as http:
        ws = await open_relayed(http, credentials)
        await register(ws, agent.client_id)
        session = await relay.start_session(agent.client_id)
        async with join(session) as joined:
            job = await _job_offer(ws, 30)
            assert job is not None
            assert job.room.name == session["room_name"]
            answer = lk_agent.WorkerMessage()
            answer.availability.job_id = job.id
            answer.availability.available = True
            answer.availability.participant_identity = session["participant_identity"]
            answer.availability.participant_attributes.update({"lkps.verified": "true", "topic": "help"})
            await ws.send_bytes(answer.SerializeToString())
            assignment = await _assignment(ws, 15)
            claims = jwt.decode(assignment.token, options={"verify_signature": False})
            assert claims["sub"] == f"agent-{job.id}"
            assert claims["sub"] != session["participant_identity"]
            assert claims.get("attributes", {}).get("topic") == "help"
            assert not any(key.startswith("lkps.") for key in claims.get("attributes", {}))
            assert joined.room.connection_state == rtc.ConnectionState.CONN_CONNECTED
        await ws.close()


async def _assignment(ws: aiohttp.ClientWebSocketResponse, seconds: float) -> Any:
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        message = await next_server_message(ws, left)
        if message is not None and message.HasField("assignment"):
            return message.assignment
    raise AssertionError("no assignment")


async def test_the_connection_cap_and_the_handshake_limit_answer_429(relay: Relay) -> None:
    """Beyond LKPS_WORKER_MAX_CONNECTIONS_PER_AGENT connections of one agent, and beyond
    LKPS_WORKER_HANDSHAKES_PER_MINUTE handshakes with one key, the handshake is answered 429 with
    Retry-After before the upgrade."""
    capped, limited = relay.agent("agent capped"), relay.agent("agent limited")
    async with aiohttp.ClientSession() as http:
        credentials = await relay.register(capped)
        held = [await open_relayed(http, credentials) for _ in range(CONNECTION_CAP)]
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await open_relayed(http, credentials)
        assert refused.value.status == 429
        assert refused.value.headers is not None
        assert int(refused.value.headers["Retry-After"]) >= 1
        for ws in held:
            await ws.close()

        credentials = await relay.register(limited)
        for _ in range(HANDSHAKES_PER_MINUTE):
            await (await open_relayed(http, credentials)).close()
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await open_relayed(http, credentials)
        assert refused.value.status == 429
        assert refused.value.headers is not None
        assert int(refused.value.headers["Retry-After"]) >= 1


async def test_revocation_closes_the_worker_and_refuses_its_reconnects(relay: Relay, run_worker: Any) -> None:
    """Revoking the agent closes its relayed connection (1008, at the relay's next key check), and the
    worker's reconnects are refused before the upgrade (so it backs off) until it gives up."""
    agent = relay.agent("agent revoked")
    credentials = await relay.register(agent)
    async with aiohttp.ClientSession() as http:
        ws = await open_relayed(http, credentials)
        await register(ws, agent.client_id)
        await relay.revoke(agent.client_id)
        message = await ws.receive(timeout=60)  # only against a hang: no wall-clock bound under load
        assert message.type in {aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED}
        assert ws.close_code == 1008
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await open_relayed(http, credentials)
        assert refused.value.status == 403


async def test_livekit_itself_refuses_the_worker_credentials(relay: Relay) -> None:
    """At LiveKit, the worker key and secret open neither `/agent` nor the server API."""
    agent = relay.agent("agent at livekit")
    credentials = await relay.register(agent)
    key, secret = credentials["worker_api_key"], credentials["worker_api_secret"]
    async with aiohttp.ClientSession() as http:
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await http.ws_connect(
                relay.livekit.ws_url + "/agent",
                headers={"Authorization": f"Bearer {worker_jwt(key, secret)}"},
            )
        assert refused.value.status == 401
    async with api.LiveKitAPI(relay.livekit.http_url, key, secret, failover=False) as livekit:
        with pytest.raises(api.TwirpError) as denied:
            await livekit.room.list_rooms(api.ListRoomsRequest())
        assert denied.value.status == 401


async def test_worker_server_api_reaches_only_its_own_rooms(relay: Relay) -> None:
    """Through lkps, the worker's `livekit-api` client may delete its own session's room but not another
    agent's, and may not call anything else (Twirp permission_denied)."""
    agent_a, agent_b = relay.agent("agent a4"), relay.agent("agent b4")
    credentials = await relay.register(agent_a)
    await relay.register(agent_b)
    for agent in (agent_a, agent_b):
        await relay.seem_connected(agent.client_id)
    own = await relay.start_session(agent_a.client_id)
    other = await relay.start_session(agent_b.client_id)
    url = credentials["worker_url"]
    async with (
        join(other) as joined,
        api.LiveKitAPI(
            url, credentials["worker_api_key"], credentials["worker_api_secret"], failover=False
        ) as worker_api,
    ):
        for call in (
            worker_api.room.delete_room(api.DeleteRoomRequest(room=other["room_name"])),
            worker_api.room.remove_participant(
                api.RoomParticipantIdentity(room=other["room_name"], identity="alice")
            ),
            worker_api.room.list_rooms(api.ListRoomsRequest()),
        ):
            with pytest.raises(api.TwirpError) as denied:
                await call
            assert (denied.value.status, denied.value.code) == (403, "permission_denied")
        assert joined.room.connection_state == rtc.ConnectionState.CONN_CONNECTED
        async with join(own) as own_room:
            await worker_api.room.delete_room(api.DeleteRoomRequest(room=own["room_name"]))
            await wait_for(
                lambda: own_room.room.connection_state == rtc.ConnectionState.CONN_DISCONNECTED,
                10,
                "the deleted room to disconnect its participant",
            )


async def test_a_restarted_lkps_keeps_the_running_job_and_the_worker_comes_back(
    livekit_server: LiveKitServer,
    tmp_path: Path,
    run_worker: Any,
) -> None:
    """Stopping `lkps serve` (SIGTERM) while a job runs and starting it again: the agent never leaves the
    room (job processes talk to LiveKit directly), and the worker registers again by itself."""
    env = livekit_server.lkps_env()
    deployment = await asyncio.to_thread(Deployment.create, tmp_path / "restart", extra_env=env)
    try:
        port = free_port()
        with deployment.server(port=port) as server:
            relay = Relay(deployment, server, livekit_server)
            agent = relay.agent("agent restarted")
            credentials = await relay.register(agent)
            worker = run_worker(credentials, credentials["agent_name"])
            await wait_for(lambda: "registered worker" in worker.log_text(), 60, "the worker to register")
            session = await relay.start_session(agent.client_id)
            async with join(session) as joined:
                await wait_for(lambda: bool(joined.greetings), 30, "the agent's greeting")
                # The greeting comes over the data channel, the agent's arrival over the signal connection:
                # either can reach the user first.
                await wait_for(lambda: len(joined.agents()) == 1, 10, "the agent participant")
                left: list[str] = []
                joined.room.on("participant_disconnected", lambda p: left.append(p.identity))
                server.stop()
                with deployment.server(port=port):
                    await wait_for(
                        lambda: worker.log_text().count("registered worker") == 2,
                        60,
                        "the worker to come back",
                    )
                    assert left == []
                    assert len(joined.agents()) == 1
    finally:
        await asyncio.to_thread(deployment.close)


async def test_a_staging_and_a_default_worker_each_get_only_their_deployments_jobs(
    relay: Relay, run_worker: Any
) -> None:
    """Two stock workers of one agent, one started with LIVEKIT_AGENT_DEPLOYMENT=staging: a session for a
    deployment no worker has is refused (404), and LiveKit gives its job to neither worker even when lkps
    lets it start; one for `staging` goes to that worker, one for none to the other."""
    agent = relay.agent("agent deployed twice")
    credentials = await relay.register(agent)
    staging = run_worker(credentials, credentials["agent_name"], LIVEKIT_AGENT_DEPLOYMENT="staging")
    default = run_worker(credentials, credentials["agent_name"])
    for worker in (staging, default):
        # Two workers importing livekit-agents at once: a start of minutes on a busy machine.
        await wait_for(lambda w=worker: "registered worker" in w.log_text(), 120, "both workers to register")
    async with httpx.AsyncClient(base_url=relay.server.url) as http:
        refused = await http.post(
            "/api/session/start",
            headers={"Authorization": f"Bearer {relay.deployment.user_token('alice')}"},
            json={"agent_entra_app_id": agent.client_id, "deployment": "canary"},
        )
    assert refused.status_code == 404, refused.text
    assert refused.json()["error"] == "agent_not_connected"
    # While both workers are idle: no deployment falls back to another one's workers.
    await relay.seem_connected(agent.client_id, "preview")
    nobodys = await relay.start_session(agent.client_id, deployment="preview")
    async with join(nobodys) as joined:
        await asyncio.sleep(5)
        assert joined.agents() == []
    assert staging.rooms() == default.rooms() == []
    for deployment, worker in (("staging", staging), ("", default)):
        session = await relay.start_session(agent.client_id, deployment=deployment)
        async with join(session) as joined:
            await wait_for(lambda j=joined: bool(j.greetings), 30, f"the {deployment or 'default'} greeting")
        assert worker.rooms() == [session["room_name"]]
    assert len(staging.rooms() + default.rooms()) == 2
