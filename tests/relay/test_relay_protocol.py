"""The worker relay's edge cases against a protocol-level fake of LiveKit's `/agent` (types from
livekit-protocol): what is refused before the upgrade, what is rewritten, dropped or relayed byte for byte,
and how connections close."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Collection, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any
from unittest.mock import ANY

import httpx
import jwt
import pytest
from google.protobuf import json_format
from litestar import Litestar
from livekit.protocol import agent, models
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from config import Settings
from gateway.app import create_app
from gateway.observability.metrics import Metrics
from gateway.persistence.db import create_engine
from gateway.persistence.tables import worker_connections, worker_jobs, worker_security_events
from gateway.persistence.workers import AuditRecord, WorkerKey, WorkerStore
from gateway.relay.relay import MAX_FRAME_BYTES, RelayLimits, RelayStore, WorkerRelay, relayable
from gateway.services import Services, build_services
from tests.gateway.conftest import AGENT_ID, AGENT_OID, AGENT_ROLE
from tests.gateway.test_admin import ADMIN_APP, ADMIN_OID, ADMIN_ROLE
from tests.support.asgi_websocket import AsgiWebSocket
from tests.support.clock import FakeClock
from tests.support.entra import FakeEntra, make_settings
from tests.support.fake_livekit_agent import FakeAgentService, FakeWorkerLink
from tests.support.livekit import API_KEY, API_SECRET
from tests.support.sessions import insert_sessions, session_row
from tests.support.worker_protocol import register_frame, simulate_frame, worker_jwt

pytestmark = pytest.mark.anyio

OTHER_AGENT = "0f1e2d3c-4b5a-4978-8695-a4b3c2d1e0f9"
HOLD_SECONDS = 0.5


@dataclass
class Relay:
    gateway: RelayGateway
    livekit: FakeAgentService
    livekit_url: str

    def socket(self, token: str | None) -> AsgiWebSocket:
        headers = [] if token is None else [(b"authorization", f"Bearer {token}".encode())]
        return AsgiWebSocket(self.gateway.app, headers)

    async def credentials(self, agent_id: str = AGENT_ID) -> tuple[str, str]:
        body = await self.gateway.register_agent(agent_id)
        return body["worker_api_key"], body["worker_api_secret"]

    async def connected(self, agent_id: str = AGENT_ID) -> tuple[AsgiWebSocket, FakeWorkerLink]:
        """A worker registered through the relay, and its link as LiveKit sees it (register consumed)."""
        worker = self.socket(worker_jwt(*await self.credentials(agent_id)))
        assert (await worker.connect())["type"] == "websocket.accept"
        await worker.send(register_frame(agent_id))
        link = await self.livekit.links.get()
        await link.received.get()
        answer = await worker.next(5)
        assert agent.ServerMessage.FromString(answer["bytes"]).register.worker_id == "AW_fake"
        return worker, link


@dataclass
class RelayGateway:
    """The app served in the test's own event loop (the relay's tasks, its aiohttp client and the database
    pool must share one loop, which the threaded Litestar test client does not give)."""

    app: Litestar
    http: httpx.AsyncClient
    entra: FakeEntra
    clock: FakeClock
    services: Services
    settings: Settings
    db: AsyncEngine

    async def register_agent(self, agent_id: str = AGENT_ID, **body: Any) -> dict[str, Any]:
        token = self.entra.mint_app_token(azp=agent_id, oid=AGENT_OID, sub=AGENT_OID, roles=[AGENT_ROLE])
        response = await self.http.post(
            "/api/agent/register", headers={"Authorization": f"Bearer {token}"}, json=body
        )
        assert response.status_code == 200, response.text
        return response.json()  # type: ignore[no-any-return]


@asynccontextmanager
async def serving(database_url: str, **overrides: Any) -> AsyncIterator[RelayGateway]:
    clock = FakeClock(time.time())  # real "now": workers sign their handshakes with the real clock
    entra = FakeEntra(clock=clock)
    settings = make_settings(
        database_url=database_url,
        agent_roles=(AGENT_ROLE,),
        livekit_api_key=API_KEY,
        livekit_api_secret=API_SECRET,
        worker_refusal_hold_seconds=HOLD_SECONDS,
        worker_check_interval_seconds=0.1,
        **overrides,
    )
    services = build_services(settings, clock=clock, http=entra.client())
    app = create_app(settings, services)
    db = create_engine(database_url, pool_size=2)
    async with (
        app.lifespan(),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver") as http,
    ):
        yield RelayGateway(app, http, entra, clock, services, settings, db)
    await db.dispose()


@asynccontextmanager
async def relayed(database_url: str, **overrides: Any) -> AsyncIterator[Relay]:
    livekit = FakeAgentService()
    async with livekit.running() as url, serving(database_url, livekit_url=url, **overrides) as gateway:
        yield Relay(gateway, livekit, url)


@pytest.fixture
async def relay(database_url: str) -> AsyncIterator[Relay]:
    async with relayed(database_url) as relay:
        yield relay


async def _security_events(relay: Relay) -> list[tuple[str, str | None]]:
    """The audited security events so far: (kind, connection id)."""
    await relay.gateway.services.relay.flush_audit()
    async with relay.gateway.db.connect() as conn:
        rows = (
            await conn.execute(select(worker_security_events).order_by(worker_security_events.c.occurred_at))
        ).all()
    return [(row.kind, row.connection_id) for row in rows]


def _metric(relay: Relay, name: str, **labels: str) -> float:
    value = relay.gateway.services.metrics.registry.get_sample_value(name, labels)
    return value or 0.0


async def _refusal(worker: AsgiWebSocket) -> tuple[int, bytes]:
    start = await worker.connect()
    assert start["type"] == "websocket.http.response.start", start
    body = await worker.next(5)
    return start["status"], body["body"]


@pytest.mark.parametrize(
    ("token", "status"),
    [
        (None, 401),
        ("not-a-jwt", 401),
        (worker_jwt("APItestkey", "test-secret-that-is-at-least-32-characters-long"), 401),  # LiveKit's key
        (worker_jwt("lkw_000000000000000000000000", "a-guessed-secret-of-forty-three-characters"), 401),
    ],
)
async def test_bad_handshakes_are_refused_with_an_http_status(
    relay: Relay, token: str | None, status: int
) -> None:
    """No token, a non-JWT, a token signed with LiveKit's own key or with a guessed worker secret: an HTTP
    status instead of the upgrade (so a stock worker backs off), and nothing reaches LiveKit."""
    code, body = await _refusal(relay.socket(token))
    assert code == status
    assert b'"error"' in body
    assert relay.livekit.links.empty()


async def test_a_key_not_in_force_is_refused_403(relay: Relay) -> None:
    """A correctly signed token of a key no registration carries (or no longer) is refused with 403."""
    credentials = relay.gateway.services.credentials
    key = "lkw_" + "ab" * 12
    code, body = await _refusal(relay.socket(worker_jwt(key, credentials.secret(key))))
    assert code == 403
    assert b"register the agent again" in body


async def test_the_register_frame_is_rebuilt_with_the_products_permissions(relay: Relay) -> None:
    """LiveKit receives the worker's register with the agent name, type, version and deployment it sent,
    the permissions replaced by the product's (never hidden), and nothing else (unknown fields and newer
    fields such as endpoints are dropped); the relay's token is LiveKit-signed."""
    worker = relay.socket(worker_jwt(*await relay.credentials()))
    await worker.connect()
    asked = agent.WorkerMessage()
    asked.register.agent_name = AGENT_ID
    asked.register.version = "9.9"
    asked.register.deployment = "staging"
    asked.register.type = agent.JT_PUBLISHER
    asked.register.instance_id = "chosen-by-the-worker"
    asked.register.allowed_permissions.hidden = True
    asked.register.allowed_permissions.can_subscribe_metrics = True
    unknown = b"\xfa\x06\x03abc"  # field 111, length-delimited: not in this protocol version
    frame = agent.WorkerMessage()
    frame.register.ParseFromString(asked.register.SerializeToString() + unknown)
    await worker.send(frame.SerializeToString())
    link = await relay.livekit.links.get()
    seen = agent.WorkerMessage.FromString(await link.received.get()).register
    expected = agent.RegisterWorkerRequest(
        agent_name=AGENT_ID, version="9.9", deployment="staging", type=agent.JT_PUBLISHER
    )
    # LiveKit's defaults for an agent, spelled out: never hidden, never a recorder.
    expected.allowed_permissions.CopyFrom(
        models.ParticipantPermission(
            can_subscribe=True,
            can_publish=True,
            can_publish_data=True,
            can_update_metadata=True,
            hidden=False,
            recorder=False,
            agent=True,
        )
    )
    assert seen == expected
    assert unknown not in seen.SerializeToString()
    (claims,) = relay.livekit.handshakes
    assert claims.video is not None
    assert claims.video.agent is True
    await worker.disconnect()


async def test_another_agents_name_is_held_then_closed_and_never_registered(relay: Relay) -> None:
    """A worker declaring an agent name other than its credentials' is not answered for the hold period,
    then closed with 1008; LiveKit never sees a register; the attempt is an audited security event."""
    worker = relay.socket(worker_jwt(*await relay.credentials()))
    await worker.connect()
    await worker.send(register_frame(OTHER_AGENT))
    link = await relay.livekit.links.get()
    await link.closed.wait()
    assert link.received.empty()
    closed = await worker.next(HOLD_SECONDS + 5)
    assert (closed["type"], closed["code"]) == ("websocket.close", 1008)
    assert await _security_events(relay) == [("agent_name_mismatch", None)]


def _register_with(deployment: str) -> bytes:
    message = agent.WorkerMessage.FromString(register_frame(AGENT_ID))
    message.register.deployment = deployment
    return message.SerializeToString()


@pytest.mark.parametrize(
    ("first", "kind"),
    [
        (_register_with("a_b"), "malformed_register"),
        (_register_with("with space"), "malformed_register"),
        (_register_with("x" * 65), "malformed_register"),
        (json_format.MessageToJson(agent.WorkerMessage.FromString(register_frame(AGENT_ID))), "text_frame"),
        (simulate_frame("any-room"), "malformed_register"),
        (b"\xff\xff", "malformed_frame"),
    ],
    ids=["deployment-underscore", "deployment-space", "deployment-too-long", "json", "simulate", "garbage"],
)
async def test_a_first_frame_that_is_not_a_valid_register_is_held_then_closed(
    relay: Relay, first: bytes | str, kind: str
) -> None:
    """A register with a deployment LiveKit would refuse, a protojson register, or any other first frame:
    nothing reaches LiveKit, the worker is closed with 1008 after the hold, and it is a security event."""
    worker = relay.socket(worker_jwt(*await relay.credentials()))
    await worker.connect()
    await worker.send(first)
    link = await relay.livekit.links.get()
    await link.closed.wait()
    assert link.received.empty()
    closed = await worker.next(HOLD_SECONDS + 5)
    assert (closed["type"], closed["code"]) == ("websocket.close", 1008)
    assert await _security_events(relay) == [(kind, None)]


async def test_allowed_frames_arrive_re_encoded_and_in_order(relay: Relay) -> None:
    """Allowed worker frames reach LiveKit in order as the messages they carry, unknown fields dropped, and
    so do LiveKit's frames to the worker; `migrate_job` (sent by a stock worker after a reconnect, ignored
    by LiveKit v1.13.5) is consumed without closing."""
    worker, link = await relay.connected()
    update = agent.WorkerMessage()
    update.update_worker.load = 0.25
    job_status = agent.WorkerMessage()
    job_status.update_job.job_id = "AJ_1"
    job_status.update_job.status = agent.JS_RUNNING
    ping = agent.WorkerMessage()
    ping.ping.timestamp = 42
    migrate = agent.WorkerMessage()
    migrate.migrate_job.job_ids.append("AJ_1")
    nested_unknown = b"\x1a\x08\x1d\x00\x00\x80>\xa0\x1f\x01"  # update_worker{load: 0.25, field 500}
    for frame in [
        nested_unknown,
        job_status.SerializeToString(),
        migrate.SerializeToString(),
        ping.SerializeToString(),
        *(update.SerializeToString(),) * 20,
    ]:
        await worker.send(frame)
    expected = [update, job_status, ping, *(update,) * 20]
    assert [agent.WorkerMessage.FromString(await link.received.get()) for _ in expected] == expected
    pong = agent.ServerMessage()
    pong.pong.last_timestamp = 7
    termination = agent.ServerMessage()
    termination.termination.job_id = "AJ_1"
    downstream = [pong.SerializeToString() + b"\xb8\x06\x01"[:0], termination.SerializeToString()]
    for frame in downstream:
        await link.send(frame)
    received = [agent.ServerMessage.FromString((await worker.next(5))["bytes"]) for _ in downstream]
    assert received == [pong, termination]
    await worker.disconnect()


async def test_a_livekit_frame_with_an_unknown_nested_field_arrives_without_it(relay: Relay) -> None:
    """LiveKit's pong with a field this protocol version does not know reaches the worker without it."""
    worker, link = await relay.connected()
    await link.send(b"\x22\x05\x08\x07\xb8\x06\x01")  # pong{last_timestamp: 7, field 103: 1}
    received = (await worker.next(5))["bytes"]
    assert received == b"\x22\x02\x08\x07"
    await worker.disconnect()


_update = agent.WorkerMessage(update_worker=agent.UpdateWorkerStatus(load=0.5)).SerializeToString()


@pytest.mark.parametrize(
    ("frame", "kind"),
    [
        (simulate_frame("victim-room"), "simulate_job"),
        (agent.WorkerMessage(simulate_job=agent.SimulateJobRequest()).SerializeToString(), "simulate_job"),
        (_update + simulate_frame("victim-room"), "malformed_frame"),
        (simulate_frame("victim-room") + _update, "malformed_frame"),
        (register_frame(AGENT_ID), "second_register"),
        ('{"simulateJob":{"room":{"name":"victim-room"}}}', "text_frame"),
        ('{"simulateJob":{}}', "text_frame"),
        ("{}", "text_frame"),
        ("", "text_frame"),
        (b"\xc2\x3e\x02hi", "unknown_kind"),
        (b"", "unknown_kind"),
        (b"\x1a\xff", "malformed_frame"),
    ],
    ids=[
        "simulate-job",
        "simulate-job-without-room",
        "simulate-after-update",
        "simulate-before-update",
        "second-register",
        "json-simulate-job",
        "json-simulate-job-without-room",
        "json-empty",
        "empty-text",
        "unknown-kind",
        "empty",
        "truncated",
    ],
)
async def test_a_frame_outside_the_allow_list_closes_the_connection_unforwarded(
    relay: Relay, frame: bytes | str, kind: str
) -> None:
    """simulate_job (with or without a room, alone or beside another member), a second register, every TEXT
    frame, an unknown kind and a malformed frame: nothing of it reaches LiveKit, the worker is closed with
    1008, and it is a security event (metric and audit row)."""
    worker, link = await relay.connected()
    before = _metric(relay, "lkps_worker_security_events_total", kind=kind)
    await worker.send(frame)
    closed = await worker.next(5)
    assert (closed["type"], closed["code"]) == ("websocket.close", 1008)
    await link.closed.wait()
    assert link.received.empty()
    assert _metric(relay, "lkps_worker_security_events_total", kind=kind) == before + 1
    [(recorded, connection_id)] = await _security_events(relay)
    assert recorded == kind
    assert connection_id is not None


@pytest.mark.parametrize(
    ("frame", "kind"),
    [
        ('{"availability":{"job":{"id":"AJ_x"}}}', "server_text_frame"),
        (
            agent.ServerMessage(go_away=agent.AgentHttp.GoAway(reason="x")).SerializeToString(),
            "server_go_away",
        ),
        (b"\xc2\x3e\x02hi", "unknown_kind"),
        (
            agent.ServerMessage(register=agent.RegisterWorkerResponse(worker_id="AW_2")).SerializeToString(),
            "server_second_register",
        ),
    ],
    ids=["json", "go-away", "unknown-kind", "second-register"],
)
async def test_a_livekit_frame_outside_the_allow_list_never_reaches_the_worker(
    relay: Relay, frame: bytes | str, kind: str
) -> None:
    """A LiveKit frame the pinned protocol does not allow is not relayed: the worker is closed (1011, it
    reconnects), the LiveKit side with 1008, and it is a security event."""
    worker, link = await relay.connected()
    await (link.ws.send_str(frame) if isinstance(frame, str) else link.send(frame))
    closed = await worker.next(5)
    assert (closed["type"], closed["code"]) == ("websocket.close", 1011)
    [(recorded, _)] = await _security_events(relay)
    assert recorded == kind


def _offer(job_id: str, room: str, agent_name: str = AGENT_ID) -> bytes:
    message = agent.ServerMessage()
    message.availability.job.id = job_id
    message.availability.job.agent_name = agent_name
    message.availability.job.room.name = room
    return message.SerializeToString()


def _assignment(job_id: str, room: str, agent_name: str = AGENT_ID) -> bytes:
    message = agent.ServerMessage()
    message.assignment.job.id = job_id
    message.assignment.job.agent_name = agent_name
    message.assignment.job.room.name = room
    message.assignment.token = "join-token"
    return message.SerializeToString()


def _accept(job_id: str, identity: str = "", attributes: dict[str, str] | None = None) -> bytes:
    message = agent.WorkerMessage()
    message.availability.job_id = job_id
    message.availability.available = True
    message.availability.participant_identity = identity
    message.availability.participant_name = "Helper\u202e bot"
    message.availability.participant_attributes.update(attributes or {})
    return message.SerializeToString()


async def test_a_job_of_the_agents_own_session_goes_through_with_lkps_answer(relay: Relay) -> None:
    """An availability request for the agent's own session room reaches the worker; its answer reaches
    LiveKit with identity `agent-<job id>`, no `lkps.*` attribute and a cleaned name; the assignment then
    reaches the worker with LiveKit's public URL and is audited."""
    await insert_sessions(relay.gateway.db, session_row("ada-own-room"))
    worker, link = await relay.connected()
    await link.send(_offer("AJ_own", "ada-own-room"))
    offered = agent.ServerMessage.FromString((await worker.next(5))["bytes"]).availability
    assert offered.job.room.name == "ada-own-room"
    await worker.send(_accept("AJ_own", identity="ADA0001", attributes={"lkps.role": "admin", "topic": "x"}))
    answer = agent.WorkerMessage.FromString(await link.received.get()).availability
    assert (answer.job_id, answer.available, answer.participant_identity) == ("AJ_own", True, "agent-AJ_own")
    assert dict(answer.participant_attributes) == {"topic": "x"}
    assert answer.participant_name == "Helper bot"
    await link.send(_assignment("AJ_own", "ada-own-room"))
    received = agent.ServerMessage.FromString((await worker.next(5))["bytes"]).assignment
    assert received.job.id == "AJ_own"
    assert received.url == relay.gateway.settings.livekit_url
    assert received.token == "join-token"
    await worker.disconnect()
    await relay.gateway.services.relay.flush_audit()
    async with relay.gateway.db.connect() as conn:
        jobs = (await conn.execute(select(worker_jobs))).all()
        connection = (await conn.execute(select(worker_connections))).one()
    assert [(job.id, job.room_name, job.agent_app_id) for job in jobs] == [
        ("AJ_own", "ada-own-room", AGENT_ID)
    ]
    assert (connection.agent_app_id, connection.worker_id, connection.close_reason) == (
        AGENT_ID,
        "AW_fake",
        "worker_closed",
    )
    assert connection.disconnected_at is not None


@pytest.mark.parametrize(
    ("room", "agent_name"),
    [
        ("other-agents-room", AGENT_ID),
        ("never-created", AGENT_ID),
        ("", AGENT_ID),
        ("ada-own-room", OTHER_AGENT),
    ],
    ids=["another-agents-session", "no-session", "no-room", "another-agent-name"],
)
async def test_a_foreign_job_is_refused_towards_livekit_and_never_shown(
    relay: Relay, room: str, agent_name: str
) -> None:
    """An availability request for a room that is not a session of this agent is answered "not available"
    to LiveKit, never shown to the worker, and recorded as `foreign_job`; the connection stays."""
    await insert_sessions(
        relay.gateway.db,
        session_row("ada-own-room"),
        session_row("other-agents-room", agent_app_id=OTHER_AGENT),
    )
    worker, link = await relay.connected()
    await link.send(_offer("AJ_foreign", room, agent_name))
    answer = agent.WorkerMessage.FromString(await link.received.get()).availability
    assert (answer.job_id, answer.available) == ("AJ_foreign", False)
    pong = agent.ServerMessage(pong=agent.WorkerPong(last_timestamp=1))
    await link.send(pong.SerializeToString())
    assert agent.ServerMessage.FromString((await worker.next(5))["bytes"]) == pong  # and nothing before it
    assert await _security_events(relay) == [("foreign_job", ANY)]
    await worker.disconnect()


async def test_an_assignment_the_worker_never_accepted_is_refused(relay: Relay) -> None:
    """An assignment for a job the worker did not accept through this connection never reaches it; LiveKit
    is told the job failed, and it is recorded as `foreign_job`."""
    await insert_sessions(relay.gateway.db, session_row("ada-own-room"))
    worker, link = await relay.connected()
    await link.send(_assignment("AJ_unasked", "ada-own-room"))
    refused = agent.WorkerMessage.FromString(await link.received.get()).update_job
    assert (refused.job_id, refused.status) == ("AJ_unasked", agent.JS_FAILED)
    pong = agent.ServerMessage(pong=agent.WorkerPong(last_timestamp=1))
    await link.send(pong.SerializeToString())
    assert agent.ServerMessage.FromString((await worker.next(5))["bytes"]) == pong
    assert await _security_events(relay) == [("foreign_job", ANY)]
    await worker.disconnect()


async def test_an_answer_over_the_bounds_declines_the_job(relay: Relay) -> None:
    """An acceptance with more attributes than lkps allows reaches LiveKit as "not available"."""
    await insert_sessions(relay.gateway.db, session_row("ada-own-room"))
    worker, link = await relay.connected()
    await link.send(_offer("AJ_big", "ada-own-room"))
    await worker.next(5)
    await worker.send(_accept("AJ_big", attributes={f"k{i}": "v" for i in range(100)}))
    answer = agent.WorkerMessage.FromString(await link.received.get()).availability
    assert (answer.job_id, answer.available) == ("AJ_big", False)
    assert await _security_events(relay) == [("oversized_answer", ANY)]
    await worker.disconnect()


@pytest.mark.parametrize("code", [1001, 1008, 1009, 1011, 1012, 1013, 4001])
async def test_livekit_close_codes_reach_the_worker(relay: Relay, code: int) -> None:
    """LiveKit closing with a code a peer may send (RFC 6455 7.4, or an application code) closes the worker
    with the same code."""
    worker, link = await relay.connected()
    await link.ws.close(code=code)
    closed = await worker.next(5)
    assert (closed["type"], closed["code"]) == ("websocket.close", code)


@pytest.mark.parametrize("code", [None, 1004, 1005, 1006, 1015, 2000, 2999, 5000])
def test_close_codes_no_peer_may_send_reach_the_worker_as_1011(code: int | None) -> None:
    """A close without a code, or with one reserved for the endpoints themselves, reaches the worker as 1011."""
    assert relayable(code) == 1011


async def test_an_oversized_frame_closes_with_1009(relay: Relay) -> None:
    """A worker frame over the relay's limit closes the worker with 1009 and the LiveKit side too, unsent."""
    worker, link = await relay.connected()
    await worker.send(b"\x1a" + b"\x00" * MAX_FRAME_BYTES)
    closed = await worker.next(5)
    assert (closed["type"], closed["code"]) == ("websocket.close", 1009)
    await link.closed.wait()
    assert link.received.empty()


async def test_expiry_closes_a_live_connection(relay: Relay) -> None:
    """When the agent's registrations expire, the relay closes its live worker connection (1008)."""
    worker, _ = await relay.connected()
    relay.gateway.clock.advance(relay.gateway.settings.agent_token_ttl_seconds + 1)
    closed = await worker.next(5)
    assert (closed["type"], closed["code"]) == ("websocket.close", 1008)


async def test_draining_closes_with_1012_and_refuses_new_workers(relay: Relay) -> None:
    """A draining replica closes relayed connections with 1012 (service restart: reconnect elsewhere) and
    refuses new handshakes with 503."""
    worker, _ = await relay.connected()
    await relay.gateway.services.relay.aclose()
    closed = await worker.next(5)
    assert (closed["type"], closed["code"]) == ("websocket.close", 1012)
    code, _ = await _refusal(relay.socket(worker_jwt(*await relay.credentials())))
    assert code == 503


async def test_livekit_unreachable_is_503_before_the_upgrade(database_url: str) -> None:
    """When LiveKit's /agent cannot be reached the worker gets 503 (and backs off), not an upgrade."""
    async with serving(database_url, livekit_url="ws://127.0.0.1:9") as gateway:
        body = await gateway.register_agent()
        worker = AsgiWebSocket(
            gateway.app,
            [
                (
                    b"authorization",
                    f"Bearer {worker_jwt(body['worker_api_key'], body['worker_api_secret'])}".encode(),
                )
            ],
        )
        start = await worker.connect()
        assert (start["type"], start["status"]) == ("websocket.http.response.start", 503)


async def test_more_than_a_hundred_workers_are_relayed_at_once(database_url: str) -> None:
    """Worker 101 is relayed like worker 1 (aiohttp's default pool of 100 connections would stall it)."""
    async with relayed(database_url, worker_max_connections_per_agent=101) as relay:
        workers = [await relay.connected() for _ in range(101)]
        assert relay.gateway.services.relay.connections == 101
        for worker, _ in workers:
            await worker.disconnect()


async def _refused_with_retry_after(worker: AsgiWebSocket) -> tuple[int, str]:
    start = await worker.connect()
    assert start["type"] == "websocket.http.response.start", start
    headers = dict(start["headers"])
    await worker.next(5)
    return start["status"], headers.get(b"retry-after", b"").decode()


async def test_the_per_agent_connection_cap_answers_429_before_the_upgrade(database_url: str) -> None:
    """Beyond LKPS_WORKER_MAX_CONNECTIONS_PER_AGENT relayed connections of one agent, a handshake gets 429
    with Retry-After (so a stock worker backs off) and LiveKit is not contacted; a slot freed is usable."""
    async with relayed(database_url, worker_max_connections_per_agent=2) as relay:
        first, _ = await relay.connected()
        await relay.connected()
        status, retry_after = await _refused_with_retry_after(
            relay.socket(worker_jwt(*await relay.credentials()))
        )
        assert (status, retry_after.isdigit()) == (429, True)
        assert relay.livekit.links.empty()
        await first.disconnect()
        await relay.connected()


async def test_the_handshake_rate_limit_per_key_answers_429(database_url: str) -> None:
    """Beyond LKPS_WORKER_HANDSHAKES_PER_MINUTE handshakes with one worker key, the next gets 429 with
    Retry-After before the upgrade; another agent's key is not affected."""
    async with relayed(database_url, worker_handshakes_per_minute=3) as relay:
        for _ in range(3):
            worker, _ = await relay.connected()
            await worker.disconnect()
        status, retry_after = await _refused_with_retry_after(
            relay.socket(worker_jwt(*await relay.credentials()))
        )
        assert (status, int(retry_after) > 0) == (429, True)
        other, _ = await relay.connected(OTHER_AGENT)
        await other.disconnect()


async def test_rotated_credentials_keep_the_previous_key_for_the_grace_period(database_url: str) -> None:
    """`rotate_worker_credentials` issues a new key and secret, which renewals then keep; the previous key
    still opens the relay until LKPS_WORKER_KEY_GRACE_SECONDS have passed, then it is refused (403) and its
    live connection closed (1008)."""
    async with relayed(database_url, worker_key_grace_seconds=60) as relay:
        gateway = relay.gateway
        old = await gateway.register_agent()
        new = await gateway.register_agent(rotate_worker_credentials=True)
        assert new["worker_api_key"] != old["worker_api_key"]
        assert new["worker_api_secret"] != old["worker_api_secret"]
        renewed = await gateway.register_agent()
        assert (renewed["worker_api_key"], renewed["worker_api_secret"]) == (
            new["worker_api_key"],
            new["worker_api_secret"],
        )
        old_pair = (old["worker_api_key"], old["worker_api_secret"])
        on_old = relay.socket(worker_jwt(*old_pair))
        assert (await on_old.connect())["type"] == "websocket.accept"
        await on_old.send(register_frame(AGENT_ID))
        await on_old.next(5)
        gateway.clock.advance(gateway.settings.worker_key_grace_seconds + 1)
        closed = await on_old.next(5)
        assert (closed["type"], closed["code"]) == ("websocket.close", 1008)
        code, _ = await _refusal(relay.socket(worker_jwt(*old_pair)))
        assert code == 403
        # (Not connected: the fake LiveKit checks the relay's token against the real clock, not the test's.)
        assert await gateway.services.workers.key_in_force(new["worker_api_key"]) is not None


class StalledAudit:
    """The gateway's own worker store whose audit writes hang until released (a database that stopped
    answering writes): the keys and rooms are read as usual."""

    def __init__(self, store: WorkerStore) -> None:
        self._store = store
        self.writing = asyncio.Event()
        self.released = asyncio.Event()

    async def key_in_force(self, key_id: str) -> WorkerKey | None:
        return await self._store.key_in_force(key_id)

    async def keys_in_force(self, key_ids: Collection[str]) -> dict[str, WorkerKey]:
        return await self._store.keys_in_force(key_ids)

    async def why_not_in_force(self, key_id: str) -> str:
        return await self._store.why_not_in_force(key_id)

    async def room_agent(self, room_name: str) -> str | None:
        return await self._store.room_agent(room_name)

    async def write(self, records: Sequence[AuditRecord]) -> None:
        self.writing.set()
        await self.released.wait()


class RoomsUnreadable(StalledAudit):
    """A store whose session rooms cannot be read (the database is down for reads)."""

    async def room_agent(self, room_name: str) -> str | None:
        raise ConnectionError(room_name)


def _relay_over(relay: Relay, store: RelayStore, metrics: Metrics, **limits: Any) -> WorkerRelay:
    """Another relay in the test's gateway, over `store`."""
    services = relay.gateway.services
    return WorkerRelay(
        credentials=services.credentials,
        store=store,
        minter=services.minter,
        metrics=metrics,
        clock=relay.gateway.clock,
        livekit_agent_url=relay.livekit_url + "/agent",
        livekit_public_url=relay.gateway.settings.livekit_url,
        limits=RelayLimits(**limits),
        events=services.worker_events,
    )


async def test_a_room_the_database_cannot_look_up_is_refused_without_an_event(relay: Relay) -> None:
    """When the session rooms cannot be read, a job is answered "not available" to LiveKit (fail closed)
    and not shown to the worker, without a foreign_job event."""
    store = RoomsUnreadable(relay.gateway.services.workers)
    store.released.set()
    metrics = Metrics()
    unreadable = _relay_over(relay, store, metrics)
    worker = AsgiWebSocket(
        unreadable, [(b"authorization", f"Bearer {worker_jwt(*await relay.credentials())}".encode())]
    )
    assert (await worker.connect())["type"] == "websocket.accept"
    await worker.send(register_frame(AGENT_ID))
    link = await relay.livekit.links.get()
    await link.received.get()
    await worker.next(5)
    await link.send(_offer("AJ_unknown", "ada-own-room"))
    answer = agent.WorkerMessage.FromString(await link.received.get()).availability
    assert (answer.job_id, answer.available) == ("AJ_unknown", False)
    assert (
        metrics.registry.get_sample_value("lkps_worker_security_events_total", {"kind": "foreign_job"})
        is None
    )
    await worker.disconnect()
    await unreadable.aclose()


async def test_a_full_audit_queue_refuses_new_workers_with_503(relay: Relay) -> None:
    """While the bounded audit queue is full (the database does not take the writes), a new worker is
    refused with 503 before the upgrade, and a record that finds the queue full is dropped and counted,
    never held."""
    store = StalledAudit(relay.gateway.services.workers)
    metrics = Metrics()
    stalled = _relay_over(relay, store, metrics, audit_queue=1)
    credentials = await relay.credentials()
    first = AsgiWebSocket(stalled, [(b"authorization", f"Bearer {worker_jwt(*credentials)}".encode())])
    assert (await first.connect())["type"] == "websocket.accept"
    await first.send(register_frame(AGENT_ID))
    await store.writing.wait()  # the connection's row is being written, and hangs
    await first.next(5)  # LiveKit's register answer: its record fills the queue
    await first.disconnect()  # the close record finds it full
    assert metrics.registry.get_sample_value("lkps_worker_audit_dropped_total") == 1
    second = AsgiWebSocket(stalled, [(b"authorization", f"Bearer {worker_jwt(*credentials)}".encode())])
    start = await second.connect()
    assert (start["type"], start["status"]) == ("websocket.http.response.start", 503)
    assert b"audit_backlog" in (await second.next(5))["body"]
    store.released.set()
    await stalled.aclose()


def _handshake(key: str, secret: str, now: float, **claims: Any) -> str:
    """A worker handshake JWT shaped like livekit-agents' (valid from an hour ago to an hour ahead), with
    `claims` replacing its own; a claim given as None is left out."""
    payload = {
        "iss": key,
        "sub": "",
        "nbf": int(now) - 3600,
        "exp": int(now) + 3600,
        "video": {"agent": True},
        **claims,
    }
    return jwt.encode({name: value for name, value in payload.items() if value is not None}, secret, "HS256")


async def test_a_handshake_without_exp_is_refused(relay: Relay) -> None:
    """A correctly signed handshake of a key in force that carries no `exp` is refused with 401, and
    nothing reaches LiveKit."""
    key, secret = await relay.credentials()
    code, body = await _refusal(relay.socket(_handshake(key, secret, relay.gateway.clock.now(), exp=None)))
    assert code == 401, body
    assert relay.livekit.links.empty()


@pytest.mark.parametrize(("expired_seconds_ago", "accepted"), [(59, True), (61, False)])
async def test_an_expired_handshake_has_sixty_seconds_of_leeway(
    relay: Relay, expired_seconds_ago: int, accepted: bool
) -> None:
    """A handshake that expired 59 s ago is still relayed (LiveKit's own 60 s leeway); one that expired 61 s
    ago is refused with 401 `token_expired`."""
    key, secret = await relay.credentials()
    now = relay.gateway.clock.now()
    worker = relay.socket(_handshake(key, secret, now, exp=int(now) - expired_seconds_ago))
    if accepted:
        assert (await worker.connect())["type"] == "websocket.accept"
        await worker.disconnect()
        return
    code, body = await _refusal(worker)
    assert (code, json.loads(body)["error"]) == (401, "token_expired")


@pytest.mark.parametrize("issuer", ["APIlivekitstylekey1", "lkx_" + "ab" * 12, "LKW_" + "ab" * 12])
async def test_only_lkps_worker_key_ids_are_accepted_as_issuer(relay: Relay, issuer: str) -> None:
    """A handshake whose `iss` is not an lkps worker key id is refused as `unknown_key`, even when it is
    signed with the secret lkps would derive for that id."""
    secret = relay.gateway.services.credentials.secret(issuer)
    code, body = await _refusal(relay.socket(_handshake(issuer, secret, relay.gateway.clock.now())))
    assert (code, json.loads(body)["error"]) == (401, "unknown_key")


async def test_a_revoked_worker_key_never_comes_back(database_url: str) -> None:
    """Register, revoke, unrevoke, register: the new registration carries a new key and secret, which is
    relayed, while the old key's handshake stays refused as revoked."""
    livekit = FakeAgentService()
    async with (
        livekit.running() as url,
        serving(
            database_url, livekit_url=url, admin_roles=(ADMIN_ROLE,), admin_client_app_ids=(ADMIN_APP,)
        ) as gateway,
    ):
        relay = Relay(gateway, livekit, url)
        old = await relay.credentials()
        admin = gateway.entra.mint_app_token(azp=ADMIN_APP, oid=ADMIN_OID, sub=ADMIN_OID, roles=[ADMIN_ROLE])
        for action in ("revoke", "unrevoke"):
            response = await gateway.http.post(
                f"/api/admin/agents/{AGENT_ID}/{action}", headers={"Authorization": f"Bearer {admin}"}
            )
            assert response.status_code == 200, response.text
        new = await relay.credentials()
        assert new[0] != old[0]
        assert new[1] != old[1]
        code, body = await _refusal(relay.socket(worker_jwt(*old)))
        assert (code, json.loads(body)["error"]) == (403, "revoked")
        worker, _ = await relay.connected()
        await worker.disconnect()
