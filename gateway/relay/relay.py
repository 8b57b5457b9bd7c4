"""The `<prefix>/agent` websocket: one stock LiveKit Agents worker relayed to LiveKit's `/agent`, bound to
the agent its credentials belong to.

Order of a connection, and why:
1. Before the upgrade: the worker's handshake JWT (HS256 with its worker secret) and its key in force, then
   LiveKit's `/agent` is opened. Every refusal here is an HTTP status: a stock worker backs off on a failed
   upgrade (2 s more per attempt, up to 10 s, 16 attempts) but reconnects at once after an upgrade that
   succeeded, so nothing that can be decided before the upgrade is decided after it.
2. The first frame must be `register` with the bound agent's name. A wrong name can only be seen here; the
   connection is then held open without an answer (the worker waits for one) for
   LKPS_WORKER_REFUSAL_HOLD_SECONDS before it is closed, so a refused worker retries once per hold period.
3. Then every frame in both directions goes through the allow-list of `frames.py`: decoded, checked and
   re-encoded. A frame outside it (a TEXT frame, `simulate_job`, a second `register`, an unknown kind, a
   malformed frame) is a security event (metric, log line, audit row) and closes the connection with 1008,
   nothing of it forwarded. Jobs reach the worker only for this agent's own sessions, its availability
   answers are lkps's (see `ConnectionPolicy`), and LiveKit's `assignment` gets the public LiveKit URL, so
   job processes take their media straight to LiveKit.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import uuid
from collections import deque
from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING, Any, Protocol

import aiohttp
import orjson
import structlog
from livekit.protocol import agent

from authz.clock import utc_now
from gateway.observability.context import mint_request_id
from gateway.persistence.workers import (
    AuditRecord,
    ConnectionClosed,
    JobAssigned,
    OpenedConnection,
    SecurityEvent,
    WorkerKey,
    WorkerRegistered,
)
from gateway.ratelimit import Gcra, MemoryRateLimitStore, retry_after_header
from gateway.relay.credentials import HandshakeRefused, WorkerCredentials
from gateway.relay.frames import ConnectionPolicy, Violation, bound_register, parse_register

if TYPE_CHECKING:
    from authz.clock import Clock
    from gateway.livekit_tokens import LiveKitMinter
    from gateway.observability.metrics import Metrics
    from gateway.worker_events import WorkerEvents

log = structlog.get_logger("lkps.relay")

# Plain ASGI: the relay speaks the websocket messages itself (litestar's TypedDicts would not add safety).
Scope = Mapping[str, Any]
Receive = Callable[..., Awaitable[Any]]
Send = Callable[..., Awaitable[None]]
ASGIApp = Callable[..., Awaitable[None]]

WORKER_PREFIX = "/worker"
AGENT_PATH = f"{WORKER_PREFIX}/agent"
MAX_FRAME_BYTES = 1024 * 1024  # LiveKit's worker frames are a few KiB; job metadata is bounded by lkps
FIRST_FRAME_TIMEOUT_SECONDS = 10.0
UPSTREAM_TOKEN_TTL_SECONDS = 60  # LiveKit checks it only at the upgrade
UPSTREAM_CONNECT_TIMEOUT_SECONDS = 10.0
# Close codes a peer may send (RFC 6455 7.4): others are replaced by 1011 rather than relayed.
_RELAYABLE_CODES = frozenset({1000, 1001, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014})
CLOSE_POLICY = 1008
CLOSE_RESTART = 1012
CAP_RETRY_AFTER_SECONDS = 30.0
ROOM_CACHE_SIZE = 10_000
AUDIT_BATCH = 256
AUDIT_LINGER_SECONDS = 0.05


class RelayStore(Protocol):
    """What the relay reads and writes (gateway/persistence/workers.py)."""

    async def key_in_force(self, key_id: str) -> WorkerKey | None: ...
    async def keys_in_force(self, key_ids: Collection[str]) -> dict[str, WorkerKey]: ...
    async def why_not_in_force(self, key_id: str) -> str: ...
    async def room_agent(self, room_name: str) -> str | None: ...
    async def write(self, records: Sequence[AuditRecord]) -> None: ...


@dataclass(frozen=True, slots=True)
class RelayLimits:
    """The relay's bounds, from the settings (see config/settings.py)."""

    max_connections_per_agent: int = 100
    handshakes_per_minute: int = 120
    audit_queue: int = 10_000
    check_interval_seconds: float = 2.0
    refusal_hold_seconds: float = 30.0


_WEBSOCKET_SCHEMES = {"https": "wss", "http": "ws"}


def websocket_url(url: str) -> str:
    """`url` with an http(s) scheme made ws(s), without a trailing slash."""
    scheme, _, rest = url.partition("://")
    return f"{_WEBSOCKET_SCHEMES.get(scheme, scheme)}://{rest.rstrip('/')}"


def livekit_agent_url(server_api_url: str) -> str:
    """LiveKit's worker endpoint, from its server API URL."""
    return websocket_url(server_api_url) + "/agent"


def relayable(code: int | None) -> int:
    if code is not None and (code in _RELAYABLE_CODES or 3000 <= code <= 4999):
        return code
    return 1011


def _bearer(scope: Scope) -> str | None:
    values = [value for name, value in scope["headers"] if name == b"authorization"]
    if len(values) != 1:
        return None
    scheme, _, token = values[0].decode("latin-1").partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


@dataclass(frozen=True, slots=True)
class _Ended:
    """Why a relayed connection ended, and the close codes each side still has to get (None: closed)."""

    reason: str
    upstream_code: int | None
    worker_code: int | None


@dataclass(eq=False)  # identity: connections are kept in sets
class RelayedConnection:
    id: str
    key: WorkerKey
    upstream: aiohttp.ClientWebSocketResponse
    policy: ConnectionPolicy
    stop: asyncio.Future[_Ended] = field(default_factory=lambda: asyncio.get_running_loop().create_future())
    deployment: str = ""  # the worker's register.deployment ("" for LiveKit's default)

    @property
    def agent_app_id(self) -> str:
        return self.key.agent_app_id

    @property
    def key_id(self) -> str:
        return self.key.key_id

    def close(self, code: int, reason: str) -> None:
        if not self.stop.done():
            self.stop.set_result(_Ended(reason, upstream_code=code, worker_code=code))


class WorkerRelay:
    """Every relayed connection of this process. A watcher closes, within
    LKPS_WORKER_CHECK_INTERVAL_SECONDS, the connections whose key is no longer in force (revoked or expired,
    as the shared database says: so on every replica), and `aclose` closes them all when the process drains.

    The points where a connection's life is visible are one method each: `_on_registered` (LiveKit answered
    the register), `_on_job_assigned`, `_on_job_status` and `_on_ended`."""

    def __init__(
        self,
        *,
        credentials: WorkerCredentials,
        store: RelayStore,
        minter: LiveKitMinter,
        metrics: Metrics,
        clock: Clock,
        livekit_agent_url: str,
        livekit_public_url: str,
        limits: RelayLimits,
        events: WorkerEvents,
    ) -> None:
        self._events = events  # presence and supervision (gateway.worker_events)
        self._credentials = credentials
        self._store = store
        self._minter = minter
        self._metrics = metrics
        self._clock = clock
        self._agent_url = livekit_agent_url
        self._public_url = livekit_public_url
        self._limits = limits
        self._handshakes = MemoryRateLimitStore(clock)
        # GCRA lets a burst of `burst + 1` through: a full minute's handshakes at once, then the steady rate.
        self._handshake_rate = Gcra(limits.handshakes_per_minute, limits.handshakes_per_minute - 1)
        self._by_key: dict[str, set[RelayedConnection]] = {}
        self._per_agent: dict[str, int] = {}  # connections being relayed or about to be, per agent
        self._room_agents: dict[str, str] = {}  # session room -> its agent (a room never changes agent)
        self._idle = asyncio.Event()  # set while no connection is relayed
        self._idle.set()
        self._http: aiohttp.ClientSession | None = None
        self._watcher: asyncio.Task[None] | None = None
        self._audit: deque[AuditRecord] = deque()
        self._audit_ready = asyncio.Event()
        self._audit_written = asyncio.Event()  # set while nothing is queued or being written
        self._audit_written.set()
        self._auditor: asyncio.Task[None] | None = None
        self._replica = f"{socket.gethostname()}:{os.getpid()}"[:64]
        self.draining = False

    @property
    def connections(self) -> int:
        return sum(len(group) for group in self._by_key.values())

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        message = await receive()
        if message["type"] != "websocket.connect":
            return
        key: WorkerKey | None = None
        try:
            key = await self._authorize(scope)
            self._per_agent[key.agent_app_id] = self._per_agent.get(key.agent_app_id, 0) + 1
            upstream = await self._open_upstream()
        except _Refusal as exc:
            if key is not None:
                self._release(key.agent_app_id)
            self._metrics.worker_refusals.labels(exc.reason).inc()
            log.info("worker_refused", reason=exc.reason, status=exc.status)
            await _refuse_upgrade(scope, send, exc)
            return
        try:
            await send({"type": "websocket.accept"})
            await self._serve(scope, receive, send, key, upstream)
        except Exception:
            # A worker closed on at once after the upgrade reconnects at once: never let a fault do that.
            log.exception("worker_relay_failed", agent_id=key.agent_app_id)
            await self._hold_then_close(receive, send, "lkps failed to relay this worker")
        finally:
            self._release(key.agent_app_id)
            await upstream.close()

    def _release(self, agent_app_id: str) -> None:
        left = self._per_agent.get(agent_app_id, 1) - 1
        if left > 0:
            self._per_agent[agent_app_id] = left
        else:
            self._per_agent.pop(agent_app_id, None)

    async def _authorize(self, scope: Scope) -> WorkerKey:
        """The worker key in force behind the handshake, or a refusal: every check that can be made before
        the upgrade is made here, the cheap ones first."""
        if self.draining:
            raise _Refusal(503, "draining", "this lkps replica is shutting down; reconnect to another one")
        if len(self._audit) >= self._limits.audit_queue:
            raise _Refusal(
                503, "audit_backlog", "lkps cannot record new worker connections yet; retry shortly"
            )
        token = _bearer(scope)
        if token is None:
            raise _Refusal(401, "no_token", "send exactly one Authorization: Bearer header (a worker JWT)")
        try:
            verified = self._credentials.verify(token, now=self._clock.now())
        except HandshakeRefused as exc:
            raise _Refusal(401, exc.reason, f"worker credentials refused: {exc}") from None
        video = verified.claims.get("video")
        if not isinstance(video, dict) or video.get("agent") is not True:
            raise _Refusal(401, "no_agent_grant", "the handshake token must carry the video.agent grant")
        wait = await self._handshakes.acquire(verified.key_id, self._handshake_rate)
        if wait:
            raise _Refusal(
                429,
                "handshake_rate",
                "too many worker handshakes with this key (LKPS_WORKER_HANDSHAKES_PER_MINUTE); retry later",
                retry_after=wait,
            )
        key = await self._key_in_force(verified.key_id)
        if self._per_agent.get(key.agent_app_id, 0) >= self._limits.max_connections_per_agent:
            raise _Refusal(
                429,
                "connection_cap",
                "this agent has the most worker connections this replica relays "
                "(LKPS_WORKER_MAX_CONNECTIONS_PER_AGENT); retry later",
                retry_after=CAP_RETRY_AFTER_SECONDS,
            )
        return key

    async def _key_in_force(self, key_id: str) -> WorkerKey:
        try:
            key = await self._store.key_in_force(key_id)
            if key is not None:
                return key
            why = await self._store.why_not_in_force(key_id)
        except Exception as exc:
            log.warning("worker_key_lookup_failed", error=type(exc).__name__)
            raise _Refusal(
                503, "database_unavailable", "lkps could not check the worker credentials"
            ) from exc
        raise _Refusal(
            403,
            why,
            f"the worker credentials are {why}: register the agent again (POST /api/agent/register)",
        )

    async def _open_upstream(self) -> aiohttp.ClientWebSocketResponse:
        if self._http is None:  # made in the serving event loop, which an aiohttp session belongs to
            # No connection limit: each relayed worker holds one upstream websocket for as long as it lives
            # (aiohttp's default of 100 would make the 101st worker wait for a slot).
            self._http = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))
        token = self._minter.agent_token(identity="lkps-relay", ttl_seconds=UPSTREAM_TOKEN_TTL_SECONDS).jwt
        try:
            return await asyncio.wait_for(
                self._http.ws_connect(
                    self._agent_url,
                    headers={"Authorization": f"Bearer {token}"},
                    max_msg_size=MAX_FRAME_BYTES,
                    heartbeat=30.0,
                ),
                UPSTREAM_CONNECT_TIMEOUT_SECONDS,
            )
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            log.warning("livekit_agent_unreachable", error=type(exc).__name__)
            raise _Refusal(503, "livekit_unavailable", "LiveKit could not be reached; retry shortly") from exc

    async def _serve(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        key: WorkerKey,
        upstream: aiohttp.ClientWebSocketResponse,
    ) -> None:
        register = await self._first_register(receive, key)
        if register is None or register.agent_name != key.agent_app_id:
            await upstream.close()
            if register is not None:
                self._metrics.worker_refusals.labels("agent_name_mismatch").inc()
                self._security_event(key, None, "agent_name_mismatch", register.agent_name)
            await self._hold_then_close(
                receive,
                send,
                f"register first, with agent_name {key.agent_app_id} (the agent_name lkps gave)",
            )
            return
        policy = ConnectionPolicy(
            key.agent_app_id, self._public_url, partial(self._owns_room, key.agent_app_id)
        )
        connection = RelayedConnection(
            str(uuid.uuid4()), key, upstream, policy, deployment=register.deployment
        )
        self._add(connection)
        client = scope.get("client")
        self._record(
            OpenedConnection(
                connection.id,
                key.agent_app_id,
                key.key_id,
                client[0] if client else None,
                self._replica,
                utc_now(self._clock),
            )
        )
        log.info(
            "worker_connected", connection_id=connection.id, agent_id=key.agent_app_id, key_id=key.key_id
        )
        reason = "worker_closed"
        try:
            await upstream.send_bytes(bound_register(register))
            reason = await self._pump(receive, send, connection)
        except (aiohttp.ClientError, ConnectionError) as exc:
            reason = "livekit_error"
            log.warning("livekit_agent_error", connection_id=connection.id, error=type(exc).__name__)
            await _close_worker(send, 1011)
        finally:
            self._remove(connection)
            await upstream.close()
            self._on_ended(connection, reason)

    async def _first_register(self, receive: Receive, key: WorkerKey) -> agent.RegisterWorkerRequest | None:
        """The worker's first frame as a register; anything else is a security event (None)."""
        try:
            async with asyncio.timeout(FIRST_FRAME_TIMEOUT_SECONDS):
                message = await receive()
        except TimeoutError:
            message = {"type": "timeout"}
        if message["type"] != "websocket.receive":
            self._metrics.worker_refusals.labels("not_register").inc()
            return None
        data = _frame(message)
        if len(data) > MAX_FRAME_BYTES:
            self._metrics.worker_refusals.labels("not_register").inc()
            return None
        try:
            return parse_register(data)
        except Violation as exc:
            self._metrics.worker_refusals.labels("not_register").inc()
            self._security_event(key, None, exc.kind)
            return None

    async def _owns_room(self, agent_app_id: str, room_name: str) -> bool | None:
        """Whether `room_name` is a session room of this agent (sessions rows are written before the
        participant token exists, so before LiveKit can dispatch; a room never changes agent: cached);
        None when the database could not say."""
        owner = self._room_agents.get(room_name)
        if owner is None and room_name:
            try:
                owner = await self._store.room_agent(room_name)
            except Exception as exc:
                log.warning("worker_room_lookup_failed", error=type(exc).__name__)
                return None
            if owner is not None:
                if len(self._room_agents) >= ROOM_CACHE_SIZE:
                    self._room_agents.clear()
                self._room_agents[room_name] = owner
        return owner == agent_app_id

    async def _pump(self, receive: Receive, send: Send, connection: RelayedConnection) -> str:
        """Relay until one side closes, a frame breaks the allow-list or the relay closes the connection;
        returns why (an audit word)."""
        down = asyncio.ensure_future(self._worker_to_livekit(receive, connection))
        up = asyncio.ensure_future(self._livekit_to_worker(send, connection))
        try:
            waited: set[asyncio.Future[Any]] = {down, up, connection.stop}
            done, _ = await asyncio.wait(waited, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (down, up):
                task.cancel()
            await asyncio.gather(down, up, return_exceptions=True)
        finished = connection.stop if connection.stop in done else down if down in done else up
        ended: _Ended = finished.result()
        if ended.upstream_code is not None:
            await connection.upstream.close(code=ended.upstream_code)
        if ended.worker_code is not None:
            await _close_worker(send, ended.worker_code)
        return ended.reason

    async def _worker_to_livekit(self, receive: Receive, connection: RelayedConnection) -> _Ended:
        upstream = connection.upstream
        while True:
            message = await receive()
            if message["type"] == "websocket.disconnect":
                return _Ended("worker_closed", upstream_code=1000, worker_code=None)
            data = _frame(message)
            if len(data) > MAX_FRAME_BYTES:
                return _Ended("frame_too_large", upstream_code=1000, worker_code=1009)
            try:
                outcome = connection.policy.from_worker(data)
            except Violation as exc:
                self._security_event(connection.key, connection.id, exc.kind)
                return _Ended(exc.kind, upstream_code=1000, worker_code=CLOSE_POLICY)
            if outcome.event is not None:
                self._security_event(connection.key, connection.id, outcome.event)
            if outcome.forward is not None:
                await upstream.send_bytes(outcome.forward)
            if isinstance(outcome.decoded, agent.WorkerMessage) and outcome.kind == "update_job":
                self._on_job_status(connection, outcome.decoded.update_job)

    async def _livekit_to_worker(self, send: Send, connection: RelayedConnection) -> _Ended:
        upstream = connection.upstream
        async for message in upstream:
            if message.type not in {aiohttp.WSMsgType.BINARY, aiohttp.WSMsgType.TEXT}:
                break
            try:
                outcome = await connection.policy.from_livekit(message.data)
            except Violation as exc:
                # LiveKit spoke outside the pinned protocol: the worker reconnects and starts over.
                self._security_event(connection.key, connection.id, exc.kind)
                return _Ended(exc.kind, upstream_code=CLOSE_POLICY, worker_code=1011)
            if outcome.event is not None:
                self._security_event(connection.key, connection.id, outcome.event)
            if outcome.reply is not None:
                await upstream.send_bytes(outcome.reply)
            if outcome.forward is None:
                continue
            await send({"type": "websocket.send", "bytes": outcome.forward})
            if not isinstance(outcome.decoded, agent.ServerMessage):
                continue
            if outcome.kind == "register":
                self._on_registered(connection, outcome.decoded.register)
            elif outcome.kind == "assignment":
                self._on_job_assigned(connection, outcome.decoded.assignment.job)
        return _Ended("livekit_closed", upstream_code=None, worker_code=relayable(upstream.close_code))

    def _on_registered(self, connection: RelayedConnection, answer: agent.RegisterWorkerResponse) -> None:
        """LiveKit registered the worker (it answered the register)."""
        self._record(WorkerRegistered(connection.id, answer.worker_id))
        self._events.registered(connection.id, connection.agent_app_id, connection.deployment)

    def _on_job_assigned(self, connection: RelayedConnection, job: agent.Job) -> None:
        """A job of this agent's own session reached the worker, with its room token."""
        self._metrics.worker_jobs.inc()
        self._events.job_assigned(connection.id, job.id, job.room.name)
        self._record(
            JobAssigned(job.id, connection.id, connection.agent_app_id, job.room.name, utc_now(self._clock))
        )
        log.info(
            "worker_job",
            connection_id=connection.id,
            agent_id=connection.agent_app_id,
            job_id=job.id,
            room=job.room.name,
        )

    def _on_job_status(self, connection: RelayedConnection, update: agent.UpdateJobStatus) -> None:
        """The worker reported a job's status (relayed to LiveKit)."""
        self._events.job_status(connection.id, update.job_id, update.status)
        log.debug(
            "worker_job_status",
            connection_id=connection.id,
            job_id=update.job_id,
            status=agent.JobStatus.Name(update.status),
        )

    def _on_ended(self, connection: RelayedConnection, reason: str) -> None:
        """The relayed connection ended (both sides closed)."""
        self._events.ended(connection.id)
        self._record(ConnectionClosed(connection.id, reason, utc_now(self._clock)))
        log.info(
            "worker_disconnected",
            connection_id=connection.id,
            agent_id=connection.agent_app_id,
            reason=reason,
        )

    def _security_event(
        self, key: WorkerKey, connection_id: str | None, kind: str, detail: str | None = None
    ) -> None:
        """A frame or answer outside what the relay allows: counted, logged and recorded."""
        self._metrics.worker_security_events.labels(kind).inc()
        log.warning(
            "security_event",
            kind=kind,
            agent_id=key.agent_app_id,
            key_id=key.key_id,
            connection_id=connection_id,
            detail=None if detail is None else detail[:128],
        )
        self._record(
            SecurityEvent(kind, key.agent_app_id, key.key_id, connection_id, detail, utc_now(self._clock))
        )

    async def _hold_then_close(self, receive: Receive, send: Send, reason: str) -> None:
        """Keep a refused worker waiting (discarding what it sends) instead of closing at once."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self._limits.refusal_hold_seconds):
                while (await receive())["type"] != "websocket.disconnect":
                    pass
                return
        await _close_worker(send, CLOSE_POLICY, reason)

    def _add(self, connection: RelayedConnection) -> None:
        self._by_key.setdefault(connection.key_id, set()).add(connection)
        self._idle.clear()
        self._metrics.worker_connections.inc()
        if self._watcher is None or self._watcher.done():
            self._watcher = asyncio.ensure_future(self._watch())

    def _remove(self, connection: RelayedConnection) -> None:
        group = self._by_key.get(connection.key_id)
        if group is not None and connection in group:
            group.discard(connection)
            self._metrics.worker_connections.dec()
            if not group:
                del self._by_key[connection.key_id]
        if not self._by_key:
            self._idle.set()

    async def _watch(self) -> None:
        while self._by_key:
            await asyncio.sleep(self._limits.check_interval_seconds)
            try:
                await self.check_keys()
            except Exception as exc:
                log.warning("worker_key_check_failed", error=type(exc).__name__)

    async def check_keys(self) -> None:
        """Close the connections whose key is no longer in force."""
        keys = list(self._by_key)
        in_force = await self._store.keys_in_force(keys)
        for key_id in keys:
            if key_id in in_force:
                continue
            why = await self._store.why_not_in_force(key_id)
            for connection in list(self._by_key.get(key_id, ())):
                connection.close(CLOSE_POLICY, why)

    def _record(self, record: AuditRecord) -> None:
        """Audit rows are written off the relay path (a slow database never delays a frame), in order and in
        batches. The queue is bounded: new connections are refused while it is full (503), and a record
        that finds it full is dropped, counted and logged, never held in unbounded memory."""
        if len(self._audit) >= self._limits.audit_queue:
            self._metrics.worker_audit_dropped.inc()
            log.warning("worker_audit_dropped", record=type(record).__name__)
            return
        self._audit.append(record)
        self._audit_written.clear()
        self._audit_ready.set()
        if self._auditor is None or self._auditor.done():
            self._auditor = asyncio.ensure_future(self._write_audit())

    async def _write_audit(self) -> None:
        while True:
            await self._audit_ready.wait()
            if len(self._audit) < AUDIT_BATCH:
                await asyncio.sleep(AUDIT_LINGER_SECONDS)  # what else arrives meanwhile shares the commit
            batch = [self._audit.popleft() for _ in range(min(AUDIT_BATCH, len(self._audit)))]
            if not self._audit:
                self._audit_ready.clear()
            try:
                await self._store.write(batch)
            except Exception as exc:
                log.warning("worker_audit_write_failed", error=type(exc).__name__, records=len(batch))
            if not self._audit:
                self._audit_written.set()

    async def flush_audit(self) -> None:
        """Wait until every audit record queued so far is written."""
        await self._audit_written.wait()

    async def aclose(self) -> None:
        """Drain: refuse new workers, close every relayed connection with 1012 (service restart) so the
        workers reconnect to another replica; their job processes keep their own room connections."""
        self.draining = True
        for group in list(self._by_key.values()):
            for connection in list(group):
                connection.close(CLOSE_RESTART, "draining")
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(10):
                await self._idle.wait()
        if self._watcher is not None:
            self._watcher.cancel()
        with contextlib.suppress(TimeoutError):  # a database that stopped answering must not hang the drain
            async with asyncio.timeout(10):
                await self.flush_audit()
        if self._auditor is not None:
            self._auditor.cancel()
        if self._http is not None:
            await self._http.close()


class _Refusal(Exception):
    def __init__(self, status: int, reason: str, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason
        self.message = message
        self.retry_after = retry_after


def _frame(message: Mapping[str, Any]) -> bytes | str:
    """An ASGI websocket.receive's frame: its bytes, else its text (a TEXT frame, even an empty one)."""
    data: bytes | None = message.get("bytes")
    return data if data is not None else str(message.get("text") or "")


async def _close_worker(send: Send, code: int, reason: str = "") -> None:
    with contextlib.suppress(Exception):  # the worker may be gone already
        await send({"type": "websocket.close", "code": code, "reason": reason[:120]})


async def _refuse_upgrade(scope: Scope, send: Send, refusal: _Refusal) -> None:
    """An HTTP answer instead of the upgrade (ASGI websocket.http.response), else a close before accept (a
    server answers 403)."""
    if "websocket.http.response" not in scope.get("extensions", {}):
        await send({"type": "websocket.close", "code": CLOSE_POLICY})
        return
    body = orjson.dumps(
        {
            "error": refusal.reason,
            "message": refusal.message,
            "request_id": mint_request_id(),  # lkps's own, as for every answer (never the caller's)
        }
    )
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    if refusal.retry_after is not None:
        headers.append((b"retry-after", retry_after_header(refusal.retry_after).encode()))
    await send({"type": "websocket.http.response.start", "status": refusal.status, "headers": headers})
    await send({"type": "websocket.http.response.body", "body": body})
