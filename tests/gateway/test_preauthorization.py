"""Client-to-agent authorization end to end: session start consults the agent's Entra app registration
(Microsoft Graph, through MSAL) whenever the agent registered with enforce_client_authz."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import orjson
import pytest

from authz.graph import GraphClient, GraphTokenProvider
from authz.preauth import GraphPreAuthorizer
from config import GraphCredential
from tests.gateway.conftest import AGENT_ID, Gateway, running_gateway
from tests.gateway.test_session_start import assert_error
from tests.support.asgi import RawRequest, all_at_once
from tests.support.attacks import bearer
from tests.support.entra import SERVICE_CLIENT_ID, SPA_CLIENT_ID, make_settings
from tests.support.graph import (
    GRAPH_URL,
    LKPS_CLIENT_ID,
    LKPS_CLIENT_SECRET,
    OTHER_SCOPE_ID,
    SCOPE_ID,
    FakeGraph,
    MsalTransport,
    application,
    register_lkps,
    scope,
)

pytestmark = pytest.mark.anyio
DENIED = "You are not authorized to access this agent"


@dataclass
class Enforcing:
    gateway: Gateway
    graph: FakeGraph


@pytest.fixture
async def enforcing(database_url: str) -> AsyncIterator[Enforcing]:
    """A gateway with Graph configured and the agent registered with enforce_client_authz=true."""
    async for running in enforcing_gateway(database_url):
        yield running


async def enforcing_gateway(
    database_url: str, *, token_lifetime: int | None = None, **overrides: Any
) -> AsyncIterator[Enforcing]:
    """`running_gateway` (with `overrides`) whose pre-authorizer reads FakeGraph with a Graph token from
    MSAL, and the agent registered with enforce_client_authz=true. A `token_lifetime` under MSAL's refresh
    margin makes every Graph call fetch a fresh Graph token (for drills that move the clock by hours)."""
    fakes: dict[str, FakeGraph] = {}

    def prepare(entra) -> None:  # type: ignore[no-untyped-def]
        register_lkps(entra)
        fakes["graph"] = FakeGraph(entra, GRAPH_URL)

    state: dict[str, GraphPreAuthorizer] = {}

    async for gateway in running_gateway(
        database_url, before_start=prepare, authorizer=_LazyAuthorizer(state), **overrides
    ):
        credential = GraphCredential(client_id=LKPS_CLIENT_ID, client_secret=LKPS_CLIENT_SECRET)
        settings = make_settings(graph=credential, graph_url=GRAPH_URL)
        transport = MsalTransport(gateway.entra, token_lifetime=token_lifetime)
        tokens = GraphTokenProvider(settings, credential, http_client=transport)
        state["authorizer"] = GraphPreAuthorizer(
            GraphClient(gateway.services.http, tokens, GRAPH_URL, 5.0),
            gateway.clock,
            scope_value="access_as_client",
            ttl_seconds=300,
            max_stale_seconds=3600,
            negative_ttl_seconds=60,
            registry=gateway.services.metrics.registry,
        )
        await gateway.register_agent(enforce=True)
        yield Enforcing(gateway, fakes["graph"])


class _LazyAuthorizer:
    """Forwards to the Graph pre-authorizer built once the gateway (and its fake tenant) exists."""

    def __init__(self, state: dict[str, GraphPreAuthorizer]) -> None:
        self._state = state

    async def authorize(self, caller, agent_app_id: str) -> None:  # type: ignore[no-untyped-def]
        await self._state["authorizer"].authorize(caller, agent_app_id)

    async def aclose(self) -> None:
        await self._state["authorizer"].aclose()


async def test_preauthorized_spa_starts_a_session(enforcing: Enforcing) -> None:
    """A user of a client pre-authorized for access_as_client gets a session."""
    enforcing.graph.put(application(AGENT_ID, preauthorized={SPA_CLIENT_ID: [SCOPE_ID]}))
    response = await enforcing.gateway.start()
    assert response.status_code == 200, response.text
    assert enforcing.graph.calls == 1


async def test_client_not_listed_is_refused_with_the_documented_message(enforcing: Enforcing) -> None:
    """A client absent from preAuthorizedApplications gets 403 naming the client and agent, and no row."""
    enforcing.graph.put(application(AGENT_ID, preauthorized={SERVICE_CLIENT_ID: [SCOPE_ID]}))
    body = assert_error(await enforcing.gateway.start(), 403, "forbidden")
    assert body["message"].startswith(DENIED)
    assert SPA_CLIENT_ID in body["message"]
    assert AGENT_ID in body["message"]
    assert await enforcing.gateway.session_rows() == 0


async def test_client_listed_for_another_scope_only_is_refused(enforcing: Enforcing) -> None:
    """Pre-authorization for some other scope of the agent does not count."""
    enforcing.graph.put(
        application(
            AGENT_ID,
            scopes=[scope(), scope("other", OTHER_SCOPE_ID)],
            preauthorized={SPA_CLIENT_ID: [OTHER_SCOPE_ID]},
        )
    )
    assert_error(await enforcing.gateway.start(), 403, "forbidden")


async def test_app_only_caller_must_be_listed(enforcing: Enforcing) -> None:
    """A backend's app-only token passes when its client is listed and is refused when it is not."""
    enforcing.graph.put(application(AGENT_ID, preauthorized={SERVICE_CLIENT_ID: []}))
    assert (await enforcing.gateway.start(enforcing.gateway.entra.mint_app_token())).status_code == 200
    assert_error(await enforcing.gateway.start(), 403, "forbidden")


async def test_graph_outage_without_cached_answer_fails_closed(enforcing: Enforcing) -> None:
    """With Graph failing and nothing cached, session start is 503 with Retry-After, never allowed."""
    enforcing.graph.put(application(AGENT_ID, preauthorized={SPA_CLIENT_ID: [SCOPE_ID]}))
    enforcing.graph.fail(500, times=10)
    response = await enforcing.gateway.start()
    assert_error(response, 503, "service_unavailable")
    assert "Retry-After" in response.headers
    assert await enforcing.gateway.session_rows() == 0


async def test_concurrent_starts_make_one_graph_call(enforcing: Enforcing) -> None:
    """Twenty simultaneous session starts for an uncached agent share one Graph lookup."""
    enforcing.graph.put(application(AGENT_ID, preauthorized={SPA_CLIENT_ID: [SCOPE_ID]}))
    gateway = enforcing.gateway
    body = orjson.dumps({"agent_entra_app_id": AGENT_ID})
    requests = [
        RawRequest("POST", "/api/session/start", bearer(gateway.entra.mint_user_token()), body)
        for _ in range(20)
    ]
    # Truly concurrent on the app's loop: the test client alone would serve them one after another.
    responses = all_at_once(gateway.client.blocking_portal, gateway.app, requests)
    assert [r.status for r in responses] == [200] * 20
    assert enforcing.graph.calls == 1


async def test_enforcement_off_skips_graph(enforcing: Enforcing) -> None:
    """After the agent re-registers with enforce_client_authz=false, any allowed caller starts sessions."""
    enforcing.gateway.clock.advance(1)
    await enforcing.gateway.register_agent(enforce=False)
    assert (await enforcing.gateway.start()).status_code == 200
    assert enforcing.graph.calls == 0
