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
3. Then frames are relayed as bytes both ways, except: the worker's `simulate_job` (and any second
   `register`) is dropped and recorded as a security event, and LiveKit's `assignment` gets the public
   LiveKit URL, so job processes take their media straight to LiveKit.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import aiohttp
import orjson
import structlog
from google.protobuf.message import DecodeError

from gateway.observability.context import mint_request_id
from gateway.persistence.workers import OpenedConnection
from gateway.relay.credentials import HandshakeRefused, WorkerCredentials
from gateway.relay.frames import (
    SERVER_ASSIGNMENT,
    SERVER_REGISTER,
    WORKER_REGISTER,
    WORKER_SIMULATE_JOB,
    WORKER_UPDATE_JOB,
    MalformedFrame,
    bound_register,
    field_numbers,
    parse_register,
    parse_server,
    parse_worker,
)

if TYPE_CHECKING:
    from authz.clock import Clock
    from gateway.livekit_tokens import LiveKitMinter
    from gateway.observability.metrics import Metrics
    from gateway.persistence.workers import WorkerKey, WorkerStore
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


_WEBSOCKET_SCHEMES = {"https": "wss", "http": "ws"}


def websocket_url(url: str) -> str:
    """`url` with an http(s) scheme made ws(s), without a trailing slash."""
    scheme, _, rest = url.partition("://")
    return f"{_WEBSOCKET_SCHEMES.get(scheme, scheme)}://{rest.rstrip('/')}"


def livekit_agent_url(server_api_url: str) -> str:
    """LiveKit's worker endpoint, from its server API URL."""
    return websocket_url(server_api_url) + "/agent"


class WorkerRelayLayer:
    """Routes `<prefix>/agent` websockets to the relay, beside the Litestar app (no router or DI per frame)."""

    def __init__(self, app: ASGIApp, relay: WorkerRelay) -> None:
        self.app = app
        self.relay = relay

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket" and scope["path"] == AGENT_PATH:
            await self.relay(scope, receive, send)
            return
        await self.app(scope, receive, send)


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


@dataclass(eq=False)  # identity: connections are kept in sets
class RelayedConnection:
    id: str
    agent_app_id: str
    key_id: str
    upstream: aiohttp.ClientWebSocketResponse
    deployment: str = ""
    stop: asyncio.Future[tuple[int, str]] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )

    def close(self, code: int, reason: str) -> None:
        if not self.stop.done():
            self.stop.set_result((code, reason))


class WorkerRelay:
    """Every relayed connection of this process. A watcher closes, within
    LKPS_WORKER_CHECK_INTERVAL_SECONDS, the connections whose key is no longer in force (revoked or expired,
    as the shared database says: so on every replica), and `aclose` closes them all when the process drains."""

    def __init__(
        self,
        *,
        credentials: WorkerCredentials,
        store: WorkerStore,
        minter: LiveKitMinter,
        metrics: Metrics,
        clock: Clock,
        livekit_agent_url: str,
        livekit_public_url: str,
        check_interval_seconds: float,
        refusal_hold_seconds: float,
        events: WorkerEvents,
    ) -> None:
        self._events = events
        self._credentials = credentials
        self._store = store
        self._minter = minter
        self._metrics = metrics
        self._clock = clock
        self._agent_url = livekit_agent_url
        self._public_url = livekit_public_url
        self._interval = check_interval_seconds
        self._hold = refusal_hold_seconds
        self._by_key: dict[str, set[RelayedConnection]] = {}
        self._idle = asyncio.Event()  # set while no connection is relayed
        self._idle.set()
        self._http: aiohttp.ClientSession | None = None
        self._watcher: asyncio.Task[None] | None = None
        self._audit: asyncio.Queue[Awaitable[None]] = asyncio.Queue()
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
        refusal: tuple[int, str, str] | None = None
        key: WorkerKey | None = None
        upstream: aiohttp.ClientWebSocketResponse | None = None
        try:
            key = await self._authorize(scope)
            upstream = await self._open_upstream()
        except _Refusal as exc:
            refusal = (exc.status, exc.reason, exc.message)
        if refusal is not None or key is None or upstream is None:
            status, reason, text = refusal or (503, "unavailable", "lkps could not relay the worker")
            self._metrics.worker_refusals.labels(reason).inc()
            log.info("worker_refused", reason=reason, status=status)
            await _refuse_upgrade(scope, send, status, reason, text)
            return
        await send({"type": "websocket.accept"})
        try:
            await self._serve(scope, receive, send, key, upstream)
        except Exception:
            # A worker closed on at once after the upgrade reconnects at once: never let a fault do that.
            log.exception("worker_relay_failed", agent_id=key.agent_app_id)
            await self._hold_then_close(receive, send, "lkps failed to relay this worker")
        finally:
            await upstream.close()

    async def _authorize(self, scope: Scope) -> WorkerKey:
        if self.draining:
            raise _Refusal(503, "draining", "this lkps replica is shutting down; reconnect to another one")
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
        try:
            key = await self._store.key_in_force(verified.key_id)
            if key is not None:
                return key
            why = await self._store.why_not_in_force(verified.key_id)
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
        first = await _first_frame(receive)
        try:
            register = parse_register(first) if first is not None else None
        except MalformedFrame:
            register = None
        if register is None or register.agent_name != key.agent_app_id:
            await upstream.close()
            reason = "not_register" if register is None else "agent_name_mismatch"
            self._metrics.worker_refusals.labels(reason).inc()
            log.warning(
                "security_event",
                kind=reason,
                agent_id=key.agent_app_id,
                declared_agent_name=None if register is None else register.agent_name[:128],
            )
            await self._hold_then_close(
                receive,
                send,
                f"register first, with agent_name {key.agent_app_id} (the agent_name lkps gave)",
            )
            return
        connection = RelayedConnection(
            str(uuid.uuid4()), key.agent_app_id, key.key_id, upstream, register.deployment[:128]
        )
        self._add(connection)
        client = scope.get("client")
        self._later(
            self._store.connection_opened(
                OpenedConnection(
                    connection.id, key.agent_app_id, key.key_id, client[0] if client else None, self._replica
                )
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
            self._events.ended(connection.id)  # hook: connection ended
            await upstream.close()
            self._later(self._store.connection_closed(connection.id, reason))
            log.info(
                "worker_disconnected", connection_id=connection.id, agent_id=key.agent_app_id, reason=reason
            )

    async def _pump(self, receive: Receive, send: Send, connection: RelayedConnection) -> str:
        """Relay until one side closes or the relay closes the connection; returns why (an audit word)."""
        down = asyncio.ensure_future(self._worker_to_livekit(receive, connection))
        up = asyncio.ensure_future(self._livekit_to_worker(send, connection))
        try:
            waited: set[asyncio.Future[Any]] = {down, up, connection.stop}
            done, _ = await asyncio.wait(waited, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (down, up):
                task.cancel()
            await asyncio.gather(down, up, return_exceptions=True)
        if connection.stop in done:
            code, reason = connection.stop.result()
            await connection.upstream.close(code=code)
            await _close_worker(send, code)
            return reason
        if down in done:
            worker_gone, reason = down.result()
            if not worker_gone:
                await _close_worker(send, 1009 if reason == "frame_too_large" else CLOSE_POLICY)
            else:
                await connection.upstream.close(code=1000)
            return reason
        await _close_worker(send, relayable(up.result()))
        return "livekit_closed"

    async def _worker_to_livekit(self, receive: Receive, connection: RelayedConnection) -> tuple[bool, str]:
        """(whether the worker is gone, why the relay stopped)."""
        upstream = connection.upstream
        while True:
            message = await receive()
            if message["type"] == "websocket.disconnect":
                return True, "worker_closed"
            data: bytes | None = message.get("bytes")
            if data is None:
                text = message.get("text") or ""
                if len(text) > MAX_FRAME_BYTES:
                    return False, "frame_too_large"
                await upstream.send_str(text)
                continue
            if len(data) > MAX_FRAME_BYTES:
                return False, "frame_too_large"
            try:
                fields = field_numbers(data)
            except MalformedFrame:
                return False, "malformed_frame"
            if WORKER_UPDATE_JOB in fields:  # hook: job status update
                with contextlib.suppress(DecodeError):  # LiveKit answers an unreadable frame itself
                    update = parse_worker(data).update_job
                    self._events.job_status(connection.id, update.job_id, update.status)
            if WORKER_SIMULATE_JOB in fields or WORKER_REGISTER in fields:
                kind = "simulate_job" if WORKER_SIMULATE_JOB in fields else "second_register"
                self._metrics.worker_security_events.labels(kind).inc()
                log.warning(
                    "security_event", kind=kind, agent_id=connection.agent_app_id, connection_id=connection.id
                )
                continue
            await upstream.send_bytes(data)

    async def _livekit_to_worker(self, send: Send, connection: RelayedConnection) -> int | None:
        """Relay LiveKit's frames; returns LiveKit's close code when it closes."""
        upstream = connection.upstream
        registered = False
        async for message in upstream:
            if message.type == aiohttp.WSMsgType.TEXT:
                await send({"type": "websocket.send", "text": message.data})
                continue
            if message.type != aiohttp.WSMsgType.BINARY:
                break
            data: bytes = message.data
            try:
                fields = field_numbers(data)
            except MalformedFrame:
                fields = set()
            if SERVER_ASSIGNMENT in fields:
                rewritten = self._assignment(data, connection)
                if rewritten is None:
                    continue
                data = rewritten
            elif SERVER_REGISTER in fields and not registered:
                registered = True
                worker_id = parse_server(data).register.worker_id
                self._later(self._store.worker_registered(connection.id, worker_id))
                # hook: registered (LiveKit answered register)
                self._events.registered(connection.id, connection.agent_app_id, connection.deployment)
            await send({"type": "websocket.send", "bytes": data})
        return upstream.close_code

    def _assignment(self, data: bytes, connection: RelayedConnection) -> bytes | None:
        """The assignment with the public LiveKit URL, or None (dropped) for a job of another agent."""
        message = parse_server(data)
        job = message.assignment.job
        if job.agent_name != connection.agent_app_id:
            self._metrics.worker_security_events.labels("foreign_job").inc()
            log.warning("security_event", kind="foreign_job", agent_id=connection.agent_app_id, job_id=job.id)
            return None
        message.assignment.url = self._public_url
        self._metrics.worker_jobs.inc()
        self._later(self._store.job_assigned(job.id, connection.id, connection.agent_app_id, job.room.name))
        self._events.job_assigned(connection.id, job.id, job.room.name)  # hook: job assigned
        log.info(
            "worker_job",
            connection_id=connection.id,
            agent_id=connection.agent_app_id,
            job_id=job.id,
            room=job.room.name,
        )
        return message.SerializeToString()

    async def _hold_then_close(self, receive: Receive, send: Send, reason: str) -> None:
        """Keep a refused worker waiting (discarding what it sends) instead of closing at once."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self._hold):
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
            await asyncio.sleep(self._interval)
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

    def _later(self, work: Awaitable[None]) -> None:
        """Audit writes off the relay path (a slow database never delays a frame), one at a time in order,
        so a connection's row is closed only after it was written."""
        self._audit.put_nowait(work)
        if self._auditor is None or self._auditor.done():
            self._auditor = asyncio.ensure_future(self._write_audit())

    async def _write_audit(self) -> None:
        while True:
            work = await self._audit.get()
            try:
                await work
            except Exception as exc:
                log.warning("worker_audit_write_failed", error=type(exc).__name__)
            finally:
                self._audit.task_done()

    async def flush_audit(self) -> None:
        """Wait until every audit write queued so far is done."""
        await self._audit.join()

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
        await self.flush_audit()
        if self._auditor is not None:
            self._auditor.cancel()
        if self._http is not None:
            await self._http.close()


class _Refusal(Exception):
    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason
        self.message = message


async def _first_frame(receive: Receive) -> bytes | None:
    try:
        async with asyncio.timeout(FIRST_FRAME_TIMEOUT_SECONDS):
            message = await receive()
    except TimeoutError:
        return None
    if message["type"] != "websocket.receive":
        return None
    data: bytes | None = message.get("bytes")
    return data if data is not None and len(data) <= MAX_FRAME_BYTES else None


async def _close_worker(send: Send, code: int, reason: str = "") -> None:
    with contextlib.suppress(Exception):  # the worker may be gone already
        await send({"type": "websocket.close", "code": code, "reason": reason[:120]})


async def _refuse_upgrade(scope: Scope, send: Send, status: int, reason: str, message: str) -> None:
    """An HTTP answer instead of the upgrade (ASGI websocket.http.response), else a close before accept (a
    server answers 403)."""
    if "websocket.http.response" not in scope.get("extensions", {}):
        await send({"type": "websocket.close", "code": CLOSE_POLICY})
        return
    body = orjson.dumps(
        {
            "error": reason,
            "message": message,
            "request_id": mint_request_id(),  # lkps's own, as for every answer (never the caller's)
        }
    )
    await send(
        {
            "type": "websocket.http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "websocket.http.response.body", "body": body})
