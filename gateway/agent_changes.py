"""Agent registry changes announced to every replica through Redis, so that a revocation, an unrevocation or
a new registration on one replica drops the agent's cached answer on the others within a Redis round trip
instead of within LKPS_AGENT_CACHE_TTL_SECONDS.

The cache's TTL stays the bound when a message is lost: Redis pub/sub delivers at most once, and a replica
whose subscription was down missed whatever was published meanwhile. So a replica forgets its whole cache
each time its subscription is (re)established, and until then every cached answer still expires after the
TTL. A failed announcement is logged, never an error of the request that changed the registry
(its change is committed; the other replicas see it within the TTL). Without LKPS_REDIS_URL nothing is
announced and each replica sees the others' changes within the TTL.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Protocol

import structlog
from prometheus_client import CollectorRegistry, Counter
from redis.asyncio import Redis

from gateway.background import OrderedWrites

log = structlog.get_logger("lkps.agent_changes")

CHANNEL = "lkps:agent-changes"
RESUBSCRIBE_SECONDS = 1.0
# An idle subscription is pinged this often, so a connection that died silently is noticed and replaced.
HEALTH_CHECK_SECONDS = 5
_POLL_SECONDS = 1.0

Forget = Callable[[str | None], None]  # an agent id, or None: everything


class AgentChanges(Protocol):
    def announce(self, agent_app_id: str) -> None:
        """Tell the other replicas that this agent's registry answer changed (fire and forget)."""
        ...


class RedisAgentChanges:
    """Publishes this replica's registry changes and applies the other replicas' (`run`)."""

    def __init__(
        self,
        redis: Redis,
        registry: CollectorRegistry,
        channel: str = CHANNEL,
        resubscribe_seconds: float = RESUBSCRIBE_SECONDS,
    ) -> None:
        self._redis = redis
        self._channel = channel
        self._resubscribe_seconds = resubscribe_seconds
        self._writes = OrderedWrites("agent_change_announce_failed")
        self._unavailable = False  # since the last failure, not subscribed again yet
        self._received = Counter(
            "lkps_agent_changes_received",
            "Registry changes announced by a replica (this one included) and applied to this replica's cache.",
            registry=registry,
        )
        self._subscriptions = Counter(
            "lkps_agent_changes_subscriptions",
            "Subscriptions to the replicas' registry changes established (each forgets the whole cache).",
            registry=registry,
        )

    @classmethod
    def from_url(cls, url: str, registry: CollectorRegistry) -> RedisAgentChanges:
        redis = Redis.from_url(
            url, socket_timeout=0.5, socket_connect_timeout=0.5, health_check_interval=HEALTH_CHECK_SECONDS
        )
        return cls(redis, registry)

    def announce(self, agent_app_id: str) -> None:
        self._writes.later(self._publish(agent_app_id))

    async def run(self, forget: Forget) -> None:
        """Apply announced changes until cancelled, resubscribing after any failure (logged once per
        outage, not once per attempt)."""
        while True:
            try:
                await self._listen(forget)
            except Exception as exc:
                if not self._unavailable:
                    log.warning("agent_changes_unavailable", error=type(exc).__name__)
                self._unavailable = True
            await asyncio.sleep(self._resubscribe_seconds)

    async def flush(self) -> None:
        """Wait until every announcement queued so far was published (or failed)."""
        await self._writes.flush()

    async def aclose(self) -> None:
        await self._writes.aclose()
        await self._redis.aclose()

    async def _publish(self, agent_app_id: str) -> None:
        await self._redis.publish(self._channel, agent_app_id)

    async def _listen(self, forget: Forget) -> None:
        async with self._redis.pubsub() as pubsub:
            await pubsub.subscribe(self._channel)
            while True:
                message = await pubsub.get_message(timeout=_POLL_SECONDS)
                if message is None:
                    continue
                if message["type"] == "subscribe":
                    # Whatever was announced while not subscribed is lost: nothing cached can be trusted.
                    self._subscriptions.inc()
                    forget(None)
                    if self._unavailable:
                        self._unavailable = False
                        log.info("agent_changes_subscribed_again")
                elif message["type"] == "message":
                    self._received.inc()
                    forget(message["data"].decode("utf-8", "replace"))
