"""The worker relay's edge cases against a protocol-level fake of LiveKit's `/agent` (types from
livekit-protocol): what is refused before the upgrade, what is rewritten, dropped or relayed byte for byte,
and how connections close."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import httpx
import jwt
import pytest
from litestar import Litestar
from livekit.protocol import agent
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from config import Settings
from gateway.app import create_app
from gateway.persistence.db import create_engine
from gateway.persistence.tables import worker_connections, worker_jobs
from gateway.relay.frames import PRODUCT_PERMISSIONS
from gateway.relay.relay import MAX_FRAME_BYTES
from gateway.services import Services, build_services
from tests.gateway.conftest import AGENT_ID, AGENT_OID, AGENT_ROLE
from tests.gateway.test_admin import ADMIN_APP, ADMIN_OID, ADMIN_ROLE
from tests.support.asgi_websocket import AsgiWebSocket
from tests.support.clock import FakeClock
from tests.support.entra import FakeEntra, make_settings
from tests.support.fake_livekit_agent import FakeAgentService, FakeWorkerLink
from tests.support.livekit import API_KEY, API_SECRET
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

    async def register_agent(self, agent_id: str = AGENT_ID) -> dict[str, Any]:
        token = self.entra.mint_app_token(azp=agent_id, oid=AGENT_OID, sub=AGENT_OID, roles=[AGENT_ROLE])
        response = await self.http.post(
            "/api/agent/register", headers={"Authorization": f"Bearer {token}"}, json={}
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


@pytest.fixture
async def relay(database_url: str) -> AsyncIterator[Relay]:
    livekit = FakeAgentService()
    async with livekit.running() as url, serving(database_url, livekit_url=url) as gateway:
        yield Relay(gateway, livekit, url)


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


async def test_the_register_frame_gets_the_products_permissions(relay: Relay) -> None:
    """LiveKit receives the worker's register with the agent name and fields it sent, unknown ones included,
    but the permissions replaced by the product's (never hidden); the relay's token is LiveKit-signed."""
    worker = relay.socket(worker_jwt(*await relay.credentials()))
    await worker.connect()
    asked = agent.WorkerMessage()
    asked.register.agent_name = AGENT_ID
    asked.register.version = "9.9"
    asked.register.allowed_permissions.hidden = True
    asked.register.allowed_permissions.can_subscribe_metrics = True
    unknown = b"\xfa\x06\x03abc"  # field 111, length-delimited: not in this protocol version
    frame = agent.WorkerMessage()
    frame.register.ParseFromString(asked.register.SerializeToString() + unknown)
    await worker.send(frame.SerializeToString())
    link = await relay.livekit.links.get()
    seen = agent.WorkerMessage.FromString(await link.received.get()).register
    assert seen.agent_name == AGENT_ID
    assert seen.version == "9.9"
    assert seen.allowed_permissions == PRODUCT_PERMISSIONS
    assert unknown in seen.SerializeToString()
    (claims,) = relay.livekit.handshakes
    assert claims.video is not None
    assert claims.video.agent is True
    await worker.disconnect()


async def test_another_agents_name_is_held_then_closed_and_never_registered(relay: Relay) -> None:
    """A worker declaring an agent name other than its credentials' is not answered for the hold period,
    then closed with 1008; LiveKit never sees a register."""
    worker = relay.socket(worker_jwt(*await relay.credentials()))
    await worker.connect()
    await worker.send(register_frame(OTHER_AGENT))
    link = await relay.livekit.links.get()
    await link.closed.wait()
    assert link.received.empty()
    closed = await worker.next(HOLD_SECONDS + 5)
    assert (closed["type"], closed["code"]) == ("websocket.close", 1008)


async def test_frames_pass_both_ways_unchanged_and_in_order(relay: Relay) -> None:
    """Worker frames (unknown fields and kinds included) reach LiveKit byte for byte and in order, and so do
    LiveKit's frames to the worker."""
    worker, link = await relay.connected()
    update = agent.WorkerMessage()
    update.update_worker.load = 0.25
    frames = [
        update.SerializeToString() + b"\xa0\x1f\x01",
        b"\xc2\x3e\x02hi",
        *(update.SerializeToString(),) * 20,
    ]
    for frame in frames:
        await worker.send(frame)
    assert [await link.received.get() for _ in frames] == frames
    pong = agent.ServerMessage()
    pong.pong.last_timestamp = 7
    downstream = [pong.SerializeToString() + b"\xb8\x06\x01", b"\xb2\x07\x00", pong.SerializeToString()]
    for frame in downstream:
        await link.send(frame)
    assert [(await worker.next(5))["bytes"] for _ in downstream] == downstream
    await worker.disconnect()


async def test_simulate_job_and_a_second_register_are_dropped(relay: Relay) -> None:
    """`simulate_job` (even hidden behind another oneof member) and a second register never reach LiveKit;
    the next ordinary frame still does."""
    worker, link = await relay.connected()
    update = agent.WorkerMessage()
    update.update_worker.load = 0.5
    await worker.send(simulate_frame("victim-room"))
    await worker.send(update.SerializeToString() + simulate_frame("victim-room"))
    await worker.send(register_frame(OTHER_AGENT))
    await worker.send(update.SerializeToString())
    assert await link.received.get() == update.SerializeToString()
    assert link.received.empty()
    await worker.disconnect()


def _assignment(agent_name: str, job_id: str) -> bytes:
    message = agent.ServerMessage()
    message.assignment.job.id = job_id
    message.assignment.job.agent_name = agent_name
    message.assignment.job.room.name = f"room-of-{job_id}"
    message.assignment.token = "join-token"
    return message.SerializeToString()


async def test_assignments_carry_the_livekit_url_and_foreign_jobs_are_dropped(relay: Relay) -> None:
    """An assignment reaches the worker with LiveKit's public URL (media goes straight to LiveKit) and is
    audited; an assignment of another agent's job is dropped."""
    worker, link = await relay.connected()
    await link.send(_assignment(OTHER_AGENT, "AJ_foreign"))
    await link.send(_assignment(AGENT_ID, "AJ_own"))
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
        ("AJ_own", "room-of-AJ_own", AGENT_ID)
    ]
    assert (connection.agent_app_id, connection.worker_id, connection.close_reason) == (
        AGENT_ID,
        "AW_fake",
        "worker_closed",
    )
    assert connection.disconnected_at is not None


async def test_livekit_close_codes_reach_the_worker(relay: Relay) -> None:
    """LiveKit closing with an application code closes the worker with the same code."""
    worker, link = await relay.connected()
    await link.ws.close(code=4001)
    closed = await worker.next(5)
    assert (closed["type"], closed["code"]) == ("websocket.close", 4001)


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


async def test_more_than_a_hundred_workers_are_relayed_at_once(relay: Relay) -> None:
    """Worker 101 is relayed like worker 1 (aiohttp's default pool of 100 connections would stall it)."""
    workers = [await relay.connected() for _ in range(101)]
    assert relay.gateway.services.relay.connections == 101
    for worker, _ in workers:
        await worker.disconnect()


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
