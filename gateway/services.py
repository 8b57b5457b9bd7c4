"""The collaborators one app instance uses, built once from settings; tests inject fakes at the seams."""

from __future__ import annotations

import asyncio
import os
import socket
from dataclasses import dataclass, field
from datetime import timedelta
from typing import TYPE_CHECKING, Any, Protocol

import httpx
from sqlalchemy.ext.asyncio import AsyncEngine

from authz.caller import Caller
from authz.clock import Clock, SystemClock
from authz.entra import build_validator
from authz.jwks import build_http_client
from authz.policy import CallerPolicy
from authz.preauth import build_preauthorizer
from config import Settings
from gateway.agent_changes import RedisAgentChanges
from gateway.background import cancel
from gateway.livekit_rooms import AgentDispatcher, LiveKitRooms, RoomControl, server_api_url
from gateway.livekit_tokens import LiveKitMinter
from gateway.livekit_webhooks import WebhookVerifier
from gateway.observability.metrics import Metrics
from gateway.persistence.admin_queries import AdminQueries
from gateway.persistence.agents import AgentRegistry
from gateway.persistence.db import create_engine
from gateway.persistence.lifecycle import SessionLifecycle
from gateway.persistence.migrate import CachedDatabaseStatus
from gateway.persistence.revocations import AgentRevocations
from gateway.persistence.sessions import SessionWriter
from gateway.persistence.supervision import SupervisionStore
from gateway.persistence.workers import WorkerStore
from gateway.presence import WorkerPresence
from gateway.ratelimit import build_rate_limits
from gateway.relay.credentials import WorkerCredentials
from gateway.relay.relay import RelayLimits, WorkerRelay, livekit_agent_url
from gateway.session_end import SessionEnder
from gateway.session_start import ClientAuthorizer, Presence, SessionStarter
from gateway.supervisor import Policy, SessionSupervisor
from gateway.worker_events import RelayedWorkerEvents

if TYPE_CHECKING:
    from litestar.connection import ASGIConnection


class TokenValidator(Protocol):
    @property
    def ready(self) -> bool: ...

    @property
    def age_seconds(self) -> float | None: ...

    @property
    def refresh_count(self) -> int: ...

    async def start(self) -> None: ...

    async def validate(self, token: str) -> Caller: ...

    async def aclose(self) -> None: ...


@dataclass
class Services:
    settings: Settings
    clock: Clock
    metrics: Metrics
    engine: AsyncEngine
    http: httpx.AsyncClient
    validator: TokenValidator
    policy: CallerPolicy
    registry: AgentRegistry
    writer: SessionWriter
    minter: LiveKitMinter
    sessions: SessionStarter
    authorizer: ClientAuthorizer | None
    rooms: RoomControl
    webhooks: WebhookVerifier
    lifecycle: SessionLifecycle
    ending: SessionEnder
    revocations: AgentRevocations
    admin: AdminQueries
    workers: WorkerStore
    credentials: WorkerCredentials
    relay: WorkerRelay
    presence: WorkerPresence
    supervisor: SessionSupervisor
    worker_events: RelayedWorkerEvents
    agent_changes: RedisAgentChanges | None = None
    draining: bool = False
    _owned: list[Any] = field(default_factory=list)
    database_status: CachedDatabaseStatus = field(init=False)

    def __post_init__(self) -> None:
        self.database_status = CachedDatabaseStatus(self.engine, self.clock)

    _presence_loop: asyncio.Task[None] | None = None
    _changes_loop: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Start the loops that run beside requests: presence refresh, the session supervisor and, with
        Redis, the other replicas' registry changes."""
        if self._presence_loop is None:
            self._presence_loop = asyncio.ensure_future(self.presence.run())
        if self.agent_changes is not None and self._changes_loop is None:
            self._changes_loop = asyncio.ensure_future(self.agent_changes.run(self.registry.forget))
        self.supervisor.start()

    async def aclose(self) -> None:
        self.draining = True
        await self.supervisor.aclose()
        await self.relay.aclose()
        await self.worker_events.aclose()
        await cancel(self._presence_loop)
        await cancel(self._changes_loop)
        await self.presence.aclose()
        await self.writer.aclose()
        await self.validator.aclose()
        if self.authorizer is not None:
            await self.authorizer.aclose()
        await self.rooms.aclose()
        for resource in self._owned:
            await resource()


def build_services(
    settings: Settings,
    *,
    clock: Clock | None = None,
    http: httpx.AsyncClient | None = None,
    engine: AsyncEngine | None = None,
    authorizer: ClientAuthorizer | None = None,
    validator: TokenValidator | None = None,
    rooms: RoomControl | None = None,
    dispatcher: AgentDispatcher | None = None,
    presence: Presence | None = None,
) -> Services:
    """Wire the production collaborators; anything passed in replaces its default.

    `http` and `engine` given by the caller are left for the caller to close; an `authorizer` or `rooms`
    given is closed with the services like the default one. `presence` replaces only what session start
    asks (the relay always reports to the real one).
    """
    clock = clock or SystemClock()
    owned: list[Any] = []
    if http is None:
        http = build_http_client(settings)
        owned.append(http.aclose)
    if engine is None:
        engine = create_engine(
            settings.database_url, settings.database_pool_size, settings.database_pool_timeout_seconds
        )
        owned.append(engine.dispose)
    metrics = Metrics()
    if authorizer is None:
        authorizer = build_preauthorizer(settings, http, clock, metrics.registry)
    limits = build_rate_limits(settings, clock, metrics.registry)
    if limits is not None:
        owned.append(limits.aclose)
    changes = None
    if settings.redis_url is not None:
        changes = RedisAgentChanges.from_url(settings.redis_url, metrics.registry)
        owned.append(changes.aclose)
    registry = AgentRegistry(engine, clock, settings.agent_cache_ttl_seconds, changes)
    writer = SessionWriter(engine, metrics, settings.session_batch_max)
    minter = LiveKitMinter(settings.livekit_api_key, settings.livekit_api_secret, clock)
    livekit = LiveKitRooms(
        server_api_url(settings),
        settings.livekit_api_key,
        settings.livekit_api_secret,
        settings.livekit_api_timeout_seconds,
    )
    if rooms is None:
        rooms = livekit  # closed as `rooms`
    else:
        owned.append(livekit.aclose)
    lifecycle = SessionLifecycle(engine, clock, settings.agent_join_timeout_seconds)
    workers = WorkerStore(engine, clock)
    replica = f"{socket.gethostname()}:{os.getpid()}"[:64]
    worker_presence = WorkerPresence(engine, clock, replica, settings.worker_presence_grace_seconds)
    supervisor = SessionSupervisor(
        store=SupervisionStore(engine),
        lifecycle=lifecycle,
        rooms=rooms,
        dispatcher=dispatcher or livekit,
        metrics=metrics,
        clock=clock,
        policy=Policy(
            join_timeout=timedelta(seconds=settings.agent_join_timeout_seconds),
            dispatch_attempts=settings.agent_dispatch_attempts,
            max_age=timedelta(seconds=settings.max_session_seconds) if settings.max_session_seconds else None,
        ),
    )
    worker_events = RelayedWorkerEvents(worker_presence, supervisor)
    credentials = WorkerCredentials(settings.livekit_api_secret, settings.livekit_previous_api_secret)
    return Services(
        settings=settings,
        clock=clock,
        metrics=metrics,
        engine=engine,
        http=http,
        validator=validator or build_validator(settings, http, clock),
        policy=CallerPolicy(
            client_scopes=settings.client_scopes,
            client_roles=settings.client_roles,
            client_app_ids=settings.client_app_ids,
            agent_roles=settings.agent_roles,
            admin_roles=settings.admin_roles,
            admin_client_app_ids=settings.admin_client_app_ids,
            admin_scopes=settings.admin_scopes,
        ),
        registry=registry,
        writer=writer,
        minter=minter,
        sessions=SessionStarter(
            registry=registry,
            authorizer=authorizer,
            minter=minter,
            writer=writer,
            clock=clock,
            token_ttl_seconds=settings.participant_token_ttl_seconds,
            presence=presence or worker_presence,
            first_check=supervisor.first_check,
            limits=limits,
        ),
        authorizer=authorizer,
        rooms=rooms,
        webhooks=WebhookVerifier(settings.livekit_api_key, settings.livekit_api_secret),
        lifecycle=lifecycle,
        ending=SessionEnder(lifecycle, rooms, clock),
        revocations=AgentRevocations(engine, clock),
        admin=AdminQueries(engine),
        workers=workers,
        credentials=credentials,
        relay=WorkerRelay(
            credentials=credentials,
            store=workers,
            minter=minter,
            metrics=metrics,
            clock=clock,
            livekit_agent_url=livekit_agent_url(server_api_url(settings)),
            livekit_public_url=settings.livekit_url,
            limits=RelayLimits(
                max_connections_per_agent=settings.worker_max_connections_per_agent,
                handshakes_per_minute=settings.worker_handshakes_per_minute,
                check_interval_seconds=settings.worker_check_interval_seconds,
                refusal_hold_seconds=settings.worker_refusal_hold_seconds,
            ),
            events=worker_events,
        ),
        presence=worker_presence,
        supervisor=supervisor,
        worker_events=worker_events,
        agent_changes=changes,
        _owned=owned,
    )


def services_of(connection: ASGIConnection[Any, Any, Any, Any]) -> Services:
    services: Services = connection.app.state.services
    return services
