"""Client pre-authorization against a fake Graph: the §2.6 decision rules, the per-agent cache and fail-closed."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import certifi
import pytest
import requests
from prometheus_client import CollectorRegistry
from structlog.testing import capture_logs

from authz.caller import Caller, CallerKind
from authz.errors import AccessDenied, AuthUnavailable
from authz.graph import GraphClient, GraphTokenProvider
from authz.jwks import build_http_client
from authz.preauth import GraphPreAuthorizer, build_preauthorizer
from config.settings import GraphCredential
from tests.support.clock import FakeClock
from tests.support.entra import (
    OTHER_CLIENT_ID,
    SERVICE_CLIENT_ID,
    SERVICE_OID,
    SPA_CLIENT_ID,
    TENANT_ID,
    USER_OID,
    FakeEntra,
    FakeEntraServer,
    FakeResponse,
    make_settings,
)
from tests.support.graph import (
    AGENT_ID,
    GRAPH_URL,
    LKPS_CLIENT_ID,
    LKPS_CLIENT_SECRET,
    OTHER_AGENT_ID,
    OTHER_SCOPE_ID,
    SCOPE_ID,
    FakeGraph,
    MsalTransport,
    application,
    register_lkps,
    scope,
)

pytestmark = pytest.mark.anyio

TTL = 300
MAX_STALE = 3600
NEGATIVE_TTL = 60
DENIED = "You are not authorized to access this agent"


@pytest.fixture(autouse=True)
def _no_forced_region(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MSAL_FORCE_REGION", raising=False)


def user(client: str = SPA_CLIENT_ID) -> Caller:
    return Caller(
        tenant_id=TENANT_ID,
        object_id=USER_OID,
        client_app_id=client,
        kind=CallerKind.USER,
        user_id="ADA0001",
        display_name="Ada Lovelace",
        scopes=frozenset({"access_as_client"}),
        roles=frozenset(),
        token_id=None,
        expires_at=2_000_000_000,
        version="2.0",
    )


def app(client: str = SERVICE_CLIENT_ID) -> Caller:
    return Caller(
        tenant_id=TENANT_ID,
        object_id=SERVICE_OID,
        client_app_id=client,
        kind=CallerKind.APP,
        user_id=client,
        display_name=client,
        scopes=frozenset(),
        roles=frozenset({"Agent.Invoke"}),
        token_id=None,
        expires_at=2_000_000_000,
        version="2.0",
    )


async def denied(authorizer: GraphPreAuthorizer, caller: Caller, agent: str = AGENT_ID) -> AccessDenied:
    with pytest.raises(AccessDenied) as raised:
        await authorizer.authorize(caller, agent)
    return raised.value


@dataclass
class Rig:
    """The authorizer wired to FakeEntra (for MSAL) and FakeGraph, with its own clock and metrics registry."""

    authorizer: GraphPreAuthorizer
    graph: FakeGraph
    entra: FakeEntra
    clock: FakeClock
    registry: CollectorRegistry

    def sample(self, name: str, **labels: str) -> float:
        return self.registry.get_sample_value(name, labels) or 0.0

    async def denied(self, caller: Caller, agent: str = AGENT_ID) -> AccessDenied:
        return await denied(self.authorizer, caller, agent)

    async def unavailable(self, caller: Caller, agent: str = AGENT_ID) -> AuthUnavailable:
        with pytest.raises(AuthUnavailable) as raised:
            await self.authorizer.authorize(caller, agent)
        return raised.value


@contextlib.asynccontextmanager
async def make_rig(**options: Any) -> AsyncIterator[Rig]:
    # The Graph side has its own clock: the cache's clock may run hours ahead without expiring Graph tokens.
    entra = FakeEntra()
    register_lkps(entra)
    graph = FakeGraph(entra)
    graph.put(
        application(
            preauthorized={
                SPA_CLIENT_ID: [SCOPE_ID],
                SERVICE_CLIENT_ID: [],
                OTHER_CLIENT_ID: [OTHER_SCOPE_ID],
            }
        )
    )
    settings = make_settings(
        graph=GraphCredential(LKPS_CLIENT_ID, client_secret=LKPS_CLIENT_SECRET), graph_url=GRAPH_URL
    )
    assert settings.graph is not None
    msal_http = MsalTransport(entra)
    tokens = GraphTokenProvider(settings, settings.graph, http_client=msal_http)
    clock, registry = FakeClock(), CollectorRegistry()
    authorizer = GraphPreAuthorizer(
        GraphClient(entra.client(), tokens, GRAPH_URL, timeout_seconds=2.0),
        clock,
        scope_value=options.pop("scope_value", "access_as_client"),
        ttl_seconds=TTL,
        max_stale_seconds=MAX_STALE,
        negative_ttl_seconds=NEGATIVE_TTL,
        registry=registry,
        **options,
    )
    try:
        yield Rig(authorizer, graph, entra, clock, registry)
    finally:
        await authorizer.aclose()
        msal_http.close()


@pytest.fixture
async def rig() -> AsyncIterator[Rig]:
    async with make_rig() as built:
        yield built


# ---- decisions -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("field", ["delegatedPermissionIds", "permissionIds"])
async def test_user_client_preauthorized_for_the_scope_is_allowed(rig: Rig, field: str) -> None:
    """A delegated caller whose client is listed for the enabled access_as_client scope id passes (both spellings)."""
    rig.graph.put(application(preauthorized={SPA_CLIENT_ID: [OTHER_SCOPE_ID, SCOPE_ID]}, field=field))
    await rig.authorizer.authorize(user(), AGENT_ID)
    assert rig.sample("lkps_preauth_decisions_total", outcome="allowed") == 1
    assert rig.graph.rejections == []


async def test_client_listed_for_another_scope_only_is_denied(rig: Rig) -> None:
    """Being pre-authorized for some other scope of the agent is not enough for a delegated caller."""
    denied = await rig.denied(user(OTHER_CLIENT_ID))
    assert denied.reason == "client_preauthorized_for_other_scope"
    assert denied.detail.startswith(DENIED)
    assert OTHER_CLIENT_ID in denied.detail
    assert AGENT_ID in denied.detail


async def test_client_not_listed_is_denied(rig: Rig) -> None:
    """A client absent from preAuthorizedApplications is refused with which agent and which client."""
    stranger = "9e8d7c6b-5a4f-4e3d-8c2b-1a0f9e8d7c6b"
    denied = await rig.denied(user(stranger))
    assert denied.reason == "client_not_preauthorized"
    assert denied.detail == (
        f"{DENIED}: client application '{stranger}' is not pre-authorized on agent '{AGENT_ID}'."
    )


async def test_disabled_scope_denies_even_a_listed_client(rig: Rig) -> None:
    """When the agent disabled access_as_client, no delegated caller gets through."""
    rig.graph.put(application(scopes=[scope(enabled=False)], preauthorized={SPA_CLIENT_ID: [SCOPE_ID]}))
    assert (await rig.denied(user())).reason == "agent_scope_disabled"


async def test_agent_without_the_scope_denies_user_callers(rig: Rig) -> None:
    """An agent that does not expose access_as_client at all cannot pre-authorize delegated callers."""
    rig.graph.put(
        application(
            scopes=[scope("other_scope", OTHER_SCOPE_ID)], preauthorized={SPA_CLIENT_ID: [OTHER_SCOPE_ID]}
        )
    )
    assert (await rig.denied(user())).reason == "agent_scope_missing"


async def test_scope_value_is_configurable() -> None:
    """With another configured scope value, its id (not access_as_client's) is what the client must hold."""
    async with make_rig(scope_value="Sessions.Start") as rig:
        rig.graph.put(
            application(
                scopes=[scope(), scope("Sessions.Start", OTHER_SCOPE_ID)],
                preauthorized={SPA_CLIENT_ID: [SCOPE_ID], OTHER_CLIENT_ID: [OTHER_SCOPE_ID]},
            )
        )
        await rig.authorizer.authorize(user(OTHER_CLIENT_ID), AGENT_ID)
        assert (await rig.denied(user(SPA_CLIENT_ID))).reason == "client_preauthorized_for_other_scope"


async def test_app_only_caller_listed_with_any_permission_is_allowed(rig: Rig) -> None:
    """An app-only caller needs only an entry in the list; its permission ids (delegated scopes) do not matter."""
    await rig.authorizer.authorize(app(SERVICE_CLIENT_ID), AGENT_ID)  # listed with no ids
    await rig.authorizer.authorize(app(OTHER_CLIENT_ID), AGENT_ID)  # listed for another scope
    rig.graph.put(application(scopes=[], preauthorized={SERVICE_CLIENT_ID: []}))
    rig.clock.advance(TTL * 2)
    await rig.authorizer.authorize(app(SERVICE_CLIENT_ID), AGENT_ID)  # even with no scope exposed


async def test_app_only_caller_not_listed_is_denied(rig: Rig) -> None:
    """An app-only caller whose client id has no entry is refused."""
    stranger = "9e8d7c6b-5a4f-4e3d-8c2b-1a0f9e8d7c6b"
    assert (await rig.denied(app(stranger))).reason == "client_not_preauthorized"


async def test_unknown_agent_app_is_denied_and_negatively_cached(rig: Rig) -> None:
    """Graph 404 denies with agent_app_not_found; within the negative TTL no further Graph call is made."""
    rig.graph.remove(AGENT_ID)
    assert (await rig.denied(user())).reason == "agent_app_not_found"
    rig.clock.advance(NEGATIVE_TTL - 1)
    assert (await rig.denied(user())).reason == "agent_app_not_found"
    assert rig.graph.calls == 1
    assert rig.sample("lkps_preauth_cache_total", result="negative") == 1
    rig.graph.put(application(preauthorized={SPA_CLIENT_ID: [SCOPE_ID]}))
    rig.clock.advance(2)
    await rig.authorizer.authorize(user(), AGENT_ID)
    assert rig.graph.calls == 2


async def test_malformed_agent_id_is_denied_without_a_graph_call(rig: Rig) -> None:
    """An agent id that is not a GUID cannot have an app registration: denied, Graph untouched."""
    assert (await rig.denied(user(), "not-a-guid")).reason == "agent_app_not_found"
    assert rig.graph.calls == 0


# ---- cache ---------------------------------------------------------------------------------------------


async def test_hit_makes_no_graph_call_and_expiry_makes_one(rig: Rig) -> None:
    """Within the TTL (jitter included) decisions come from the cache; after it, exactly one Graph call."""
    await rig.authorizer.authorize(user(), AGENT_ID)
    rig.clock.advance(TTL * 0.5)
    await rig.authorizer.authorize(user(), AGENT_ID)
    await rig.authorizer.authorize(app(), AGENT_ID)
    assert rig.graph.calls == 1
    rig.clock.advance(TTL * 0.7)  # past TTL + 10 % jitter
    await rig.authorizer.authorize(user(), AGENT_ID)
    await rig.authorizer.authorize(user(), AGENT_ID)
    assert rig.graph.calls == 2
    assert rig.sample("lkps_preauth_cache_total", result="miss") == 2
    assert rig.sample("lkps_preauth_cache_total", result="hit") == 3
    assert rig.entra.count("token") == 1  # MSAL's cached Graph token is reused


async def test_revocation_takes_effect_after_the_ttl(rig: Rig) -> None:
    """Removing a client from the list denies it once the cached entry expires (the revocation latency)."""
    await rig.authorizer.authorize(user(), AGENT_ID)
    rig.graph.put(application(preauthorized={}))
    await rig.authorizer.authorize(user(), AGENT_ID)
    rig.clock.advance(TTL * 1.2)
    assert (await rig.denied(user())).reason == "client_not_preauthorized"


async def test_concurrent_misses_make_one_graph_call(rig: Rig) -> None:
    """Many simultaneous requests for an uncached agent share a single token request and Graph call."""
    await asyncio.gather(*(rig.authorizer.authorize(user(), AGENT_ID) for _ in range(25)))
    assert rig.graph.calls == 1
    assert rig.entra.count("token") == 1
    rig.graph.fail(500)
    rig.clock.advance(MAX_STALE * 2)
    failures = await asyncio.gather(
        *(rig.authorizer.authorize(user(), AGENT_ID) for _ in range(25)), return_exceptions=True
    )
    assert all(isinstance(f, AuthUnavailable) for f in failures)
    assert rig.graph.calls == 2


async def test_a_caller_giving_up_does_not_cancel_the_shared_call(rig: Rig) -> None:
    """Cancelling one waiting request leaves the Graph call running for the others."""
    first = asyncio.create_task(rig.authorizer.authorize(user(), AGENT_ID))
    second = asyncio.create_task(rig.authorizer.authorize(user(), AGENT_ID))
    await asyncio.sleep(0)
    first.cancel()
    await second
    assert first.cancelled()
    assert rig.graph.calls == 1


@pytest.mark.parametrize("failure", ["500", "timeout"])
async def test_graph_failure_without_a_cached_value_fails_closed(rig: Rig, failure: str) -> None:
    """Graph 5xx or a timeout with nothing cached is a 503 with a clear message, never an allow."""
    if failure == "timeout":
        rig.graph.time_out()
    else:
        rig.graph.fail(500)
    unavailable = await rig.unavailable(user())
    assert unavailable.reason == "graph_unavailable"
    assert "Microsoft Graph is unreachable" in unavailable.detail
    assert unavailable.retry_after >= 1
    assert rig.sample("lkps_graph_requests_total", outcome="error") == 1
    assert rig.sample("lkps_preauth_decisions_total", outcome="allowed") == 0


async def test_refused_lkps_credential_fails_closed(rig: Rig) -> None:
    """When Entra refuses lkps's own credential there is no Graph answer: 503, and Graph is never called."""
    rig.entra.clients[LKPS_CLIENT_ID].secret = "rotated-away"
    assert (await rig.unavailable(user())).reason == "graph_unavailable"
    assert rig.graph.calls == 0
    assert rig.sample("lkps_graph_requests_total", outcome="error") == 1


@pytest.mark.parametrize("failure", ["500", "timeout"])
async def test_graph_failure_with_a_cached_value_serves_it_stale(rig: Rig, failure: str) -> None:
    """After the TTL, a failing Graph leaves the last good answer in force (both allow and deny)."""
    await rig.authorizer.authorize(user(), AGENT_ID)
    rig.clock.advance(TTL * 2)
    if failure == "timeout":
        rig.graph.time_out()
    else:
        rig.graph.fail(500)
    await rig.authorizer.authorize(user(), AGENT_ID)
    assert (await rig.denied(user(OTHER_CLIENT_ID))).reason == "client_preauthorized_for_other_scope"
    assert rig.graph.calls == 2  # the second request is inside the error backoff: no new call
    assert rig.sample("lkps_preauth_cache_total", result="stale") == 2
    rig.clock.advance(10)  # past the backoff: Graph answers again and the entry is fresh
    await rig.authorizer.authorize(user(), AGENT_ID)
    assert rig.graph.calls == 3


async def test_beyond_maximum_staleness_graph_failure_is_503_never_allow(rig: Rig) -> None:
    """Once the cached answer is older than the maximum staleness, a failing Graph means 503."""
    await rig.authorizer.authorize(user(), AGENT_ID)
    rig.clock.advance(MAX_STALE - 60)
    rig.graph.fail(503, times=2)
    await rig.authorizer.authorize(user(), AGENT_ID)  # stale but within the limit
    rig.clock.advance(120)
    unavailable = await rig.unavailable(user())
    assert unavailable.reason == "graph_unavailable"
    assert rig.sample("lkps_preauth_decisions_total", outcome="allowed") == 2


async def test_throttling_without_a_cached_value_is_503_until_retry_after(rig: Rig) -> None:
    """429 with nothing cached: 503 with Retry-After, and Graph is not called again before it passes."""
    rig.graph.fail(429, retry_after=30)
    assert (await rig.unavailable(user())).retry_after >= 30
    rig.clock.advance(29)
    assert (await rig.unavailable(user())).retry_after >= 1
    assert rig.graph.calls == 1
    assert rig.sample("lkps_graph_requests_total", outcome="throttled") == 1
    rig.clock.advance(5)  # 30 s plus up to 10 % jitter have passed
    await rig.authorizer.authorize(user(), AGENT_ID)
    assert rig.graph.calls == 2


async def test_throttling_with_a_cached_value_serves_stale_and_respects_retry_after(rig: Rig) -> None:
    """429 after the TTL: the stale answer is served and Graph is left alone for the Retry-After window."""
    await rig.authorizer.authorize(user(), AGENT_ID)
    rig.clock.advance(TTL * 2)
    rig.graph.fail(429, retry_after=45)
    for _ in range(3):
        await rig.authorizer.authorize(user(), AGENT_ID)
        rig.clock.advance(10)
    assert rig.graph.calls == 2
    rig.clock.advance(20)
    await rig.authorizer.authorize(user(), AGENT_ID)
    assert rig.graph.calls == 3


async def test_hot_entry_is_refreshed_ahead_of_expiry() -> None:
    """A hit in the last tenth of the TTL is served at once and refreshes the entry in the background."""
    async with make_rig(ttl_jitter=0.0) as rig:
        await rig.authorizer.authorize(user(), AGENT_ID)
        rig.clock.advance(TTL * 0.95)
        await rig.authorizer.authorize(user(), AGENT_ID)  # served from the cache
        # The refresh is done when its Graph answer is counted; the timeout is only against a hang (a fixed
        # budget of polls would fail on a loaded machine).
        async with asyncio.timeout(60):
            while rig.sample("lkps_graph_requests_total", outcome="ok") != 2:  # noqa: ASYNC110 - no awaitable signal
                await asyncio.sleep(0.005)
        assert rig.graph.calls == 2
        rig.clock.advance(TTL * 0.5)  # past the first entry's expiry, within the refreshed one's
        await rig.authorizer.authorize(user(), AGENT_ID)
        assert rig.graph.calls == 2
        assert rig.sample("lkps_preauth_cache_total", result="miss") == 1


async def test_cache_is_bounded_least_recently_used_first() -> None:
    """With room for two agents, looking up a third evicts the least recently used one."""
    async with make_rig(max_agents=2) as rig:
        third = "2c3d4e5f-6a7b-4c8d-9e0f-1a2b3c4d5e6f"
        for agent in (OTHER_AGENT_ID, third):
            rig.graph.put(application(agent, preauthorized={SPA_CLIENT_ID: [SCOPE_ID]}))
        for agent in (AGENT_ID, OTHER_AGENT_ID, AGENT_ID, third):
            await rig.authorizer.authorize(user(), agent)
        assert rig.graph.calls == 3
        await rig.authorizer.authorize(user(), AGENT_ID)  # still cached: it was used more recently
        await rig.authorizer.authorize(user(), OTHER_AGENT_ID)  # evicted: fetched again
        assert rig.graph.calls == 4


# ---- operations ----------------------------------------------------------------------------------------


async def test_metrics_count_graph_calls_latency_cache_and_decisions(rig: Rig) -> None:
    """Graph outcomes and latency, cache results and decision outcomes land in the given registry."""
    await rig.authorizer.authorize(user(), AGENT_ID)
    await rig.denied(user(OTHER_CLIENT_ID))
    assert rig.sample("lkps_graph_requests_total", outcome="ok") == 1
    assert rig.sample("lkps_graph_request_seconds_count") == 1
    assert rig.sample("lkps_preauth_cache_total", result="hit") == 1
    assert rig.sample("lkps_preauth_decisions_total", outcome="allowed") == 1
    assert rig.sample("lkps_preauth_decisions_total", outcome="client_preauthorized_for_other_scope") == 1


async def test_no_graph_token_or_secret_reaches_a_log_event(rig: Rig) -> None:
    """Across token acquisition, lookups, denials and failures, logs name reasons and ids, never credentials."""
    with capture_logs() as logs:
        await rig.authorizer.authorize(user(), AGENT_ID)
        await rig.denied(user(OTHER_CLIENT_ID))
        rig.clock.advance(MAX_STALE * 2)
        rig.graph.fail(500)
        await rig.unavailable(user())
    secrets = [*rig.graph.received_tokens, LKPS_CLIENT_SECRET]
    assert rig.graph.received_tokens
    text = repr(logs)
    assert not [s for s in secrets if s in text]
    denials = [e for e in logs if e["event"] == "preauth.denied"]
    assert denials == [
        {
            "event": "preauth.denied",
            "log_level": "info",
            "reason": "client_preauthorized_for_other_scope",
            "agent": AGENT_ID,
            "client": OTHER_CLIENT_ID,
            "caller_kind": "user",
        }
    ]
    assert {e["event"] for e in logs} >= {
        "graph.token_acquired",
        "graph.request_failed",
        "preauth.unavailable",
    }


async def test_no_credential_means_no_preauthorizer() -> None:
    """Without LKPS_ENTRA_CLIENT_ID lkps builds no authorizer (session start then refuses enforcing agents)."""
    async with FakeEntra().client() as http:
        assert build_preauthorizer(make_settings(), http, FakeClock(), None) is None


@pytest.fixture
def wrong_ca_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """REQUESTS_CA_BUNDLE / CURL_CA_BUNDLE / SSL_CERT_FILE pointing at a bundle that does not trust the fake."""
    for name in ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE", "SSL_CERT_FILE"):
        monkeypatch.setenv(name, certifi.where())


async def test_real_tls_uses_the_configured_ca_bundle_despite_environment_overrides(
    tmp_path: Path, wrong_ca_env: None
) -> None:
    """Over real TLS, MSAL and the Graph client trust LKPS_ENTRA_CA_BUNDLE even with CA variables set in the env."""
    with FakeEntraServer(tmp_path) as server:
        register_lkps(server.entra)
        graph = FakeGraph(server.entra, server.authority)
        graph.put(application(preauthorized={SPA_CLIENT_ID: [SCOPE_ID]}))
        # The trap is real: a plain requests session lets the environment replace its CA.
        with requests.Session() as naive:
            naive.verify = str(server.ca_path)
            with pytest.raises(requests.exceptions.SSLError):
                naive.get(server.entra.discovery_url_v2, timeout=5)
        settings = make_settings(
            entra_authority=server.authority,
            entra_ca_bundle=server.ca_path,
            graph=GraphCredential(LKPS_CLIENT_ID, client_secret=LKPS_CLIENT_SECRET),
            graph_url=server.authority,
        )
        http = build_http_client(settings)
        authorizer = build_preauthorizer(settings, http, FakeClock(), CollectorRegistry())
        assert authorizer is not None
        try:
            await authorizer.authorize(user(), AGENT_ID)
            assert (await denied(authorizer, user(OTHER_CLIENT_ID))).reason == "client_not_preauthorized"
        finally:
            await authorizer.aclose()
            await http.aclose()
        assert graph.calls == 1
        assert graph.rejections == []
        assert server.entra.count("token") == 1


@contextlib.asynccontextmanager
async def preauthorizer_from_settings(
    tmp_path: Path, **settings: Any
) -> AsyncIterator[tuple[Any, FakeGraph, FakeClock]]:
    """The pre-authorizer exactly as `build_preauthorizer` wires it from settings (real TLS, MSAL), with
    `settings` for its cache, and the fake Graph behind it."""
    clock = FakeClock()
    with FakeEntraServer(tmp_path) as server:
        register_lkps(server.entra)
        graph = FakeGraph(server.entra, server.authority)
        configured = make_settings(
            entra_authority=server.authority,
            entra_ca_bundle=server.ca_path,
            graph=GraphCredential(LKPS_CLIENT_ID, client_secret=LKPS_CLIENT_SECRET),
            graph_url=server.authority,
            **settings,
        )
        http = build_http_client(configured)
        authorizer = build_preauthorizer(configured, http, clock, CollectorRegistry())
        assert authorizer is not None
        try:
            yield authorizer, graph, clock
        finally:
            await authorizer.aclose()
            await http.aclose()


GRAPH_DOWN = FakeResponse.json(503, {"error": {"code": "ServiceUnavailable", "message": "Graph is down"}})


async def test_the_configured_maximum_staleness_bounds_serving_stale(tmp_path: Path) -> None:
    """LKPS_GRAPH_CACHE_MAX_STALE_SECONDS (30 here, not the 3600 default) is where serving the last good
    answer during a Graph outage stops: before it the session is allowed, after it 503."""
    async with preauthorizer_from_settings(
        tmp_path, graph_cache_ttl_seconds=10, graph_cache_max_stale_seconds=30
    ) as (authorizer, graph, clock):
        graph.put(application(preauthorized={SPA_CLIENT_ID: [SCOPE_ID]}))
        await authorizer.authorize(user(), AGENT_ID)
        graph.entra.override("graph", GRAPH_DOWN)
        clock.advance(20)
        await authorizer.authorize(user(), AGENT_ID)  # stale but within 30 s
        clock.advance(20)
        with pytest.raises(AuthUnavailable):
            await authorizer.authorize(user(), AGENT_ID)


async def test_a_not_found_answer_is_never_served_stale(tmp_path: Path) -> None:
    """Graph said the agent app does not exist; once that answer expires and Graph fails, the caller gets
    503 (try again), not a refusal built from the expired "not found"."""
    async with preauthorizer_from_settings(tmp_path, graph_negative_ttl_seconds=5) as (
        authorizer,
        graph,
        clock,
    ):
        graph.remove(AGENT_ID)
        with pytest.raises(AccessDenied):
            await authorizer.authorize(user(), AGENT_ID)
        graph.entra.override("graph", GRAPH_DOWN)
        clock.advance(6)
        with pytest.raises(AuthUnavailable):
            await authorizer.authorize(user(), AGENT_ID)
