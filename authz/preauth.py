"""Client pre-authorization: may this client app start sessions with an agent that enforces client authz?

The agent's app registration decides (`api.preAuthorizedApplications`, read from Microsoft Graph). Answers
are cached per agent so the steady state makes no Graph call, and an unreachable Graph never means allow.
"""

from __future__ import annotations

import asyncio
import math
import random
import time
from collections import OrderedDict
from dataclasses import dataclass

import httpx
import structlog
from prometheus_client import CollectorRegistry, Counter, Histogram

from authz.caller import Caller, CallerKind
from authz.clock import Clock
from authz.errors import AccessDenied, AuthUnavailable
from authz.graph import AgentApi, GraphClient, GraphError, GraphThrottledError, GraphTokenProvider
from config.settings import Settings, is_guid

log = structlog.get_logger("lkps.preauth")

DENIED = "You are not authorized to access this agent"
MAX_AGENTS = 1000
TTL_JITTER = 0.1  # ±10 %, so replicas (and agents cached together) do not refresh in lockstep
REFRESH_AHEAD_FRACTION = 0.1  # a hit in the last 10 % of an entry's TTL refreshes it in the background
ERROR_BACKOFF_SECONDS = 5.0  # after a failed Graph call without Retry-After, the next try waits this long
_GRAPH_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


@dataclass(frozen=True, slots=True)
class _Entry:
    api: AgentApi | None  # None: Graph has no such application (a negative entry)
    fetched_at: float  # monotonic
    fresh_until: float  # monotonic; after this the entry is only served while Graph is failing


@dataclass(slots=True)
class _AgentState:
    entry: _Entry | None = None
    refresh: asyncio.Task[GraphError | None] | None = None  # the single Graph call in flight for this agent
    not_before: float = 0.0  # monotonic; no Graph call for this agent before then (Retry-After, backoff)


class GraphPreAuthorizer:
    """Implements `gateway.session_start.ClientAuthorizer` from cached Graph application objects."""

    def __init__(
        self,
        graph: GraphClient,
        clock: Clock,
        *,
        scope_value: str,
        ttl_seconds: float,
        max_stale_seconds: float,
        negative_ttl_seconds: float,
        registry: CollectorRegistry | None = None,
        max_agents: int = MAX_AGENTS,
        ttl_jitter: float = TTL_JITTER,
    ) -> None:
        self._graph = graph
        self._clock = clock
        self._scope_value = scope_value
        self._ttl = ttl_seconds
        self._max_stale = max_stale_seconds
        self._negative_ttl = negative_ttl_seconds
        self._max_agents = max_agents
        self._jitter = ttl_jitter
        self._agents: OrderedDict[str, _AgentState] = OrderedDict()  # LRU order: least recent first
        self._tasks: set[asyncio.Task[GraphError | None]] = set()
        registry = registry or CollectorRegistry()
        self._graph_requests = Counter(
            "lkps_graph_requests",
            "Microsoft Graph application lookups by outcome (ok, not_found, throttled, error).",
            ["outcome"],
            registry=registry,
        )
        self._graph_seconds = Histogram(
            "lkps_graph_request_seconds",
            "Duration of one Graph application lookup, token acquisition included.",
            buckets=_GRAPH_BUCKETS,
            registry=registry,
        )
        self._cache = Counter(
            "lkps_preauth_cache",
            "Pre-authorization cache lookups: hit, miss (waited for Graph), stale (served during a Graph "
            "failure), negative (agent app known not to exist).",
            ["result"],
            registry=registry,
        )
        self._decisions = Counter(
            "lkps_preauth_decisions",
            "Client pre-authorization decisions: allowed, or the deny reason.",
            ["outcome"],
            registry=registry,
        )

    async def authorize(self, caller: Caller, agent_app_id: str) -> None:
        """Return if `caller`'s client app is pre-authorized on the agent, else raise AccessDenied (403) or
        AuthUnavailable (503)."""
        agent, client = agent_app_id.lower(), caller.client_app_id.lower()
        api = await self._agent_api(agent) if is_guid(agent) else None
        reason = "agent_app_not_found" if api is None else self._failed_rule(caller.kind, client, api)
        self._decisions.labels(reason or "allowed").inc()
        if reason is None:
            log.debug("preauth.allowed", agent=agent, client=client, caller_kind=caller.kind.value)
            return
        log.info("preauth.denied", reason=reason, agent=agent, client=client, caller_kind=caller.kind.value)
        raise AccessDenied(
            reason, f"{DENIED}: client application '{client}' is not pre-authorized on agent '{agent}'."
        )

    async def aclose(self) -> None:
        """Cancel background refreshes and release the Graph token provider."""
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._graph.aclose()

    def _failed_rule(self, kind: CallerKind, client: str, api: AgentApi) -> str | None:
        """The deny reason, or None when allowed (entra-tokens.md §2.6)."""
        permission_ids = api.preauthorized.get(client)
        if kind is CallerKind.APP:
            # Permission ids are delegated scopes and say nothing about app-only calls: any entry will do.
            return None if permission_ids is not None else "client_not_preauthorized"
        scope = api.scopes.get(self._scope_value)
        if scope is None:
            return "agent_scope_missing"
        if not scope.enabled:
            return "agent_scope_disabled"
        if permission_ids is None:
            return "client_not_preauthorized"
        # Being listed for some other scope of the agent is not consent to this one.
        return None if scope.id in permission_ids else "client_preauthorized_for_other_scope"

    async def _agent_api(self, agent: str) -> AgentApi | None:
        """The agent's API settings (None: no such app) from the cache or Graph; else AuthUnavailable."""
        state = self._state(agent)
        now = self._clock.monotonic()
        entry = state.entry
        if entry is not None and now < entry.fresh_until:
            self._cache.labels("hit" if entry.api is not None else "negative").inc()
            hot = entry.api is not None and now >= entry.fresh_until - self._ttl * REFRESH_AHEAD_FRACTION
            if hot and now >= state.not_before:
                self._refresh(agent, state)  # not awaited: this caller is served from the cache
            return entry.api
        if now >= state.not_before:
            self._cache.labels("miss").inc()
            # Shielded: a caller that gives up must not cancel the call other callers are waiting for.
            if await asyncio.shield(self._refresh(agent, state)) is None:
                assert state.entry is not None
                return state.entry.api
        return self._stale(agent, state)

    def _stale(self, agent: str, state: _AgentState) -> AgentApi:
        """The last good answer while Graph fails, up to the maximum staleness; then fail closed (503)."""
        now = self._clock.monotonic()
        entry = state.entry
        # A negative entry is not served stale: the app may exist by now, and 503 says "try again" honestly.
        if entry is not None and entry.api is not None and now - entry.fetched_at <= self._max_stale:
            self._cache.labels("stale").inc()
            return entry.api
        log.warning(
            "preauth.unavailable",
            agent=agent,
            cache_age_seconds=None if entry is None else round(now - entry.fetched_at, 1),
        )
        raise AuthUnavailable(
            "graph_unavailable",
            "Client authorization cannot be checked right now (Microsoft Graph is unreachable); "
            "retry shortly.",
            retry_after=max(1, math.ceil(state.not_before - now)),
        )

    def _state(self, agent: str) -> _AgentState:
        state = self._agents.get(agent)
        if state is not None:
            self._agents.move_to_end(agent)
            return state
        state = self._agents[agent] = _AgentState()
        if len(self._agents) > self._max_agents:
            # An evicted agent's in-flight call still completes for whoever awaits it (see aclose for tasks).
            self._agents.popitem(last=False)
        return state

    def _refresh(self, agent: str, state: _AgentState) -> asyncio.Task[GraphError | None]:
        """The agent's in-flight Graph call, started if there is none (single-flight)."""
        if state.refresh is None:
            task = state.refresh = asyncio.create_task(self._fetch(agent, state), name=f"preauth-{agent}")
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        return state.refresh

    async def _fetch(self, agent: str, state: _AgentState) -> GraphError | None:
        """One Graph call whose outcome goes into `state`. The failure is returned, not raised, so that a
        background refresh nobody awaits cannot leave an unretrieved exception behind."""
        started = time.perf_counter()
        try:
            api = await self._graph.application(agent)
        except Exception as exc:
            error = (
                exc
                if isinstance(exc, GraphError)
                else GraphError("graph_unexpected_error", type(exc).__name__)
            )
            self._failed(agent, state, error, time.perf_counter() - started)
            return error
        else:
            self._fetched(agent, state, api, time.perf_counter() - started)
            return None
        finally:
            state.refresh = None

    def _fetched(self, agent: str, state: _AgentState, api: AgentApi | None, elapsed: float) -> None:
        self._graph_seconds.observe(elapsed)
        self._graph_requests.labels("ok" if api is not None else "not_found").inc()
        now = self._clock.monotonic()
        ttl = self._negative_ttl if api is None else _spread(self._ttl, -self._jitter, self._jitter)
        state.entry = _Entry(api, now, now + ttl)
        log.info(
            "graph.application_fetched",
            agent=agent,
            found=api is not None,
            requested_access_token_version=None if api is None else api.requested_access_token_version,
            duration_ms=round(elapsed * 1000, 1),
        )

    def _failed(self, agent: str, state: _AgentState, error: GraphError, elapsed: float) -> None:
        self._graph_seconds.observe(elapsed)
        self._graph_requests.labels("throttled" if isinstance(error, GraphThrottledError) else "error").inc()
        now = self._clock.monotonic()
        wait = error.retry_after if error.retry_after is not None else ERROR_BACKOFF_SECONDS
        state.not_before = now + _spread(wait, 0, self._jitter)
        log.warning(
            "graph.request_failed",
            agent=agent,
            reason=error.reason,
            error=str(error),  # built by authz.graph from status, codes and ids: never a token
            status=error.status,
            graph_request_id=error.request_id,
            retry_in_seconds=round(state.not_before - now, 1),
            cache_age_seconds=None if state.entry is None else round(now - state.entry.fetched_at, 1),
            duration_ms=round(elapsed * 1000, 1),
        )


def _spread(seconds: float, low: float, high: float) -> float:
    """`seconds` scaled by a random factor in [1 + low, 1 + high]."""
    return seconds * (1 + random.uniform(low, high))  # noqa: S311 - spread, not secrecy


def build_preauthorizer(
    settings: Settings, http: httpx.AsyncClient, clock: Clock, registry: CollectorRegistry | None
) -> GraphPreAuthorizer | None:
    """The production pre-authorizer, or None when no Graph credential is configured."""
    if settings.graph is None:
        return None
    tokens = GraphTokenProvider(settings, settings.graph)
    return GraphPreAuthorizer(
        GraphClient(http, tokens, settings.graph_url, settings.entra_http_timeout_seconds),
        clock,
        scope_value=settings.graph_scope_value,
        ttl_seconds=settings.graph_cache_ttl_seconds,
        max_stale_seconds=settings.graph_cache_max_stale_seconds,
        negative_ttl_seconds=settings.graph_negative_ttl_seconds,
        registry=registry,
    )
