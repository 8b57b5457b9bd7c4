"""lkps's Graph token with MSAL (secret, certificate, federated token file) and the agent application lookup."""

from __future__ import annotations

import base64
import hashlib
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from structlog.testing import capture_logs

from authz.errors import AuthUnavailable
from authz.graph import (
    GraphClient,
    GraphError,
    GraphThrottledError,
    GraphTokenProvider,
    Scope,
    parse_agent_api,
)
from config.settings import GraphCredential, Settings
from tests.support.clock import FakeClock
from tests.support.entra import (
    CLIENT_ASSERTION_TYPE,
    SPA_CLIENT_ID,
    FakeEntra,
    b64url,
    make_settings,
    rsa_key,
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
    client_key,
    federated_token,
    register_lkps,
    scope,
    write_certificate,
)

pytestmark = pytest.mark.anyio


@pytest.fixture(autouse=True)
def _no_forced_region(monkeypatch: pytest.MonkeyPatch) -> None:
    # With a client credential MSAL reads MSAL_FORCE_REGION and would switch to regional endpoints.
    monkeypatch.delenv("MSAL_FORCE_REGION", raising=False)


@pytest.fixture
def entra() -> FakeEntra:
    # FakeEntra judges client assertions on its clock; MSAL makes its certificate assertions on the wall clock.
    entra = FakeEntra(clock=FakeClock(time.time()))
    register_lkps(entra, client_key())
    return entra


@pytest.fixture(autouse=True)
def graph(entra: FakeEntra) -> FakeGraph:
    """Every test gets it: it also makes FakeEntra issue tokens for the Graph resource."""
    graph = FakeGraph(entra)
    graph.put(application(preauthorized={SPA_CLIENT_ID: [SCOPE_ID]}))
    return graph


@pytest.fixture
def msal_http(entra: FakeEntra) -> Iterator[MsalTransport]:
    transport = MsalTransport(entra)
    yield transport
    transport.close()


def graph_settings(**credential: Any) -> Settings:
    return make_settings(graph=GraphCredential(LKPS_CLIENT_ID, **credential), graph_url=GRAPH_URL)


def provider(msal_http: MsalTransport, **credential: Any) -> GraphTokenProvider:
    settings = graph_settings(**credential)
    assert settings.graph is not None
    return GraphTokenProvider(settings, settings.graph, http_client=msal_http)


def claims_of(token: str) -> dict[str, Any]:
    return jwt.decode(token, options={"verify_signature": False})


async def test_secret_credential_gets_a_graph_token_and_reuses_msal_cache(
    entra: FakeEntra, msal_http: MsalTransport
) -> None:
    """A client secret yields a FakeEntra token for the Graph resource, and the second call comes from MSAL's cache."""
    tokens = provider(msal_http, client_secret=LKPS_CLIENT_SECRET)
    first = await tokens.token()
    second = await tokens.token()
    assert first == second
    claims = claims_of(first)
    assert (claims["aud"], claims["azp"], claims["iss"]) == (GRAPH_URL, LKPS_CLIENT_ID, entra.issuer_v2)
    assert entra.count("token") == 1
    assert msal_http.token_forms[0]["scope"] == f"{GRAPH_URL}/.default"
    assert msal_http.token_forms[0]["client_secret"] == LKPS_CLIENT_SECRET


async def test_nothing_is_fetched_before_the_first_token(entra: FakeEntra, msal_http: MsalTransport) -> None:
    """Building the provider makes no request, so an Entra outage at start-up cannot stop lkps from booting."""
    tokens = provider(msal_http, client_secret=LKPS_CLIENT_SECRET)
    assert entra.calls == []
    entra.fail("discovery", 503)
    with pytest.raises(AuthUnavailable):
        await tokens.token()
    assert claims_of(await tokens.token())["aud"] == GRAPH_URL


async def test_msal_runs_in_a_worker_thread(msal_http: MsalTransport) -> None:
    """MSAL's blocking HTTP happens off the event loop's thread."""
    await provider(msal_http, client_secret=LKPS_CLIENT_SECRET).token()
    assert msal_http.threads
    assert threading.get_ident() not in msal_http.threads


@pytest.mark.parametrize("password", [None, "correct horse"])
async def test_certificate_credential_gets_a_graph_token(
    msal_http: MsalTransport, tmp_path: Path, password: str | None
) -> None:
    """A PEM file with the key (password-protected or not) and its certificate yields a Graph token."""
    path = tmp_path / "lkps.pem"
    write_certificate(path, client_key(), password=password)
    tokens = provider(msal_http, certificate_path=path, certificate_password=password)
    assert claims_of(await tokens.token())["aud"] == GRAPH_URL


async def test_certificate_assertion_is_ps256_with_sha256_thumbprint_and_chain(
    entra: FakeEntra, msal_http: MsalTransport, tmp_path: Path
) -> None:
    """With a certificate MSAL sends a PS256 assertion with x5t#S256 and x5c, aud = token endpoint, iss = sub = client."""
    path = tmp_path / "lkps.pem"
    certificate = write_certificate(path, client_key())
    await provider(msal_http, certificate_path=path).token()
    form = msal_http.token_forms[0]
    assert "client_secret" not in form
    assert form["client_assertion_type"] == CLIENT_ASSERTION_TYPE
    header = jwt.get_unverified_header(form["client_assertion"])
    der = certificate.public_bytes(serialization.Encoding.DER)
    assert header["alg"] == "PS256"
    # MSAL pads its base64url thumbprint; compare the unpadded forms.
    assert header["x5t#S256"].rstrip("=") == b64url(hashlib.sha256(der).digest())
    # MSAL keeps the PEM line breaks inside its x5c entry; the certificate is what counts.
    assert [entry.replace("\n", "") for entry in header["x5c"]] == [base64.b64encode(der).decode()]
    claims = jwt.decode(
        form["client_assertion"],
        certificate.public_key(),
        algorithms=["PS256"],
        audience=entra.token_endpoint,
        issuer=LKPS_CLIENT_ID,
    )
    assert claims["sub"] == LKPS_CLIENT_ID


@pytest.mark.parametrize("problem", ["wrong_password", "key_mismatch", "no_key"])
def test_unusable_certificate_file_is_a_startup_error(
    msal_http: MsalTransport, tmp_path: Path, problem: str
) -> None:
    """A certificate file lkps cannot use fails when the provider is built, not at the first session start."""
    path = tmp_path / "lkps.pem"
    if problem == "key_mismatch":
        certificate = write_certificate(tmp_path / "other.pem", rsa_key("some-other-key"))
        key = client_key().private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        path.write_bytes(key + certificate.public_bytes(serialization.Encoding.PEM))
    elif problem == "no_key":
        certificate = write_certificate(tmp_path / "other.pem", client_key())
        path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    else:
        write_certificate(path, client_key(), password="right")
    password = "wrong" if problem == "wrong_password" else None
    with pytest.raises(ValueError, match=str(path)):
        provider(msal_http, certificate_path=path, certificate_password=password)


async def test_federated_token_file_is_read_fresh_for_every_token_request(
    entra: FakeEntra, tmp_path: Path
) -> None:
    """The workload-identity file is read at each token request (not at start-up), so a rotated file is used;
    neither its tokens nor the Graph token are logged."""
    path = tmp_path / "azure-identity-token"
    # Tokens shorter-lived than MSAL's 5-minute margin are fetched again on every call.
    msal_http = MsalTransport(entra, token_lifetime=60)
    tokens = provider(msal_http, federated_token_file=path)
    first, second = (
        federated_token(entra, client_key(), "first"),
        federated_token(entra, client_key(), "second"),
    )
    with capture_logs() as logs:
        path.write_text(first + "\n")
        graph_token = await tokens.token()
        path.write_text(second)
        await tokens.token()
    msal_http.close()
    assert [form["client_assertion"] for form in msal_http.token_forms] == [first, second]
    assert not [s for s in (first, second, graph_token) if s in repr(logs)]
    assert all(form["client_assertion_type"] == CLIENT_ASSERTION_TYPE for form in msal_http.token_forms)


async def test_missing_federated_token_file_is_unavailable(msal_http: MsalTransport, tmp_path: Path) -> None:
    """An absent or empty token file is a 503-style failure with a reason, never a crash or an empty assertion."""
    path = tmp_path / "azure-identity-token"
    tokens = provider(msal_http, federated_token_file=path)
    with pytest.raises(AuthUnavailable) as missing:
        await tokens.token()
    path.write_text("  \n")
    with pytest.raises(AuthUnavailable) as empty:
        await tokens.token()
    assert missing.value.reason == empty.value.reason == "graph_token_unavailable"
    assert msal_http.token_forms == []


async def test_refused_credential_is_unavailable_and_logs_only_codes(msal_http: MsalTransport) -> None:
    """Entra's invalid_client becomes AuthUnavailable; neither the message nor the log carries the secret."""
    wrong_secret = "not-the-registered-secret-value"
    with capture_logs() as logs, pytest.raises(AuthUnavailable) as raised:
        await provider(msal_http, client_secret=wrong_secret).token()
    assert raised.value.reason == "graph_token_unavailable"
    assert "invalid_client" in raised.value.detail
    assert wrong_secret not in repr(raised.value)
    assert [(e["event"], e["error"]) for e in logs] == [("graph.token_failed", "invalid_client")]
    assert wrong_secret not in repr(logs)


async def test_throttled_token_endpoint_is_unavailable(entra: FakeEntra, msal_http: MsalTransport) -> None:
    """A 429 from the token endpoint surfaces as AuthUnavailable, and MSAL does not retry inside the window."""
    entra.fail("token", 429, retry_after=30)
    tokens = provider(msal_http, client_secret=LKPS_CLIENT_SECRET)
    for _ in range(2):
        with pytest.raises(AuthUnavailable):
            await tokens.token()
    assert entra.count("token") == 1


# ---- the application lookup ----------------------------------------------------------------------------


@pytest.fixture
def client(entra: FakeEntra, msal_http: MsalTransport) -> GraphClient:
    tokens = provider(msal_http, client_secret=LKPS_CLIENT_SECRET)
    return GraphClient(entra.client(), tokens, GRAPH_URL, timeout_seconds=2.0)


async def test_application_is_read_with_a_valid_graph_token(graph: FakeGraph, client: GraphClient) -> None:
    """The lookup sends a FakeEntra Graph token and parses the agent's scopes and pre-authorized clients."""
    api = await client.application(AGENT_ID)
    assert api is not None
    assert api.app_id == AGENT_ID
    assert api.scopes == {"access_as_client": Scope(SCOPE_ID, enabled=True)}
    assert api.preauthorized == {SPA_CLIENT_ID: frozenset({SCOPE_ID})}
    assert api.requested_access_token_version == 2
    assert graph.calls == 1
    assert graph.rejections == []


async def test_unknown_agent_app_is_none(graph: FakeGraph, client: GraphClient) -> None:
    """Graph's 404 for an app id that has no registration is None, not an error."""
    graph.remove(AGENT_ID)
    assert await client.application(AGENT_ID) is None


@pytest.mark.parametrize(("header", "expected"), [(7, 7.0), (3600, 60.0), (None, 5.0)])
async def test_throttling_carries_retry_after_capped_at_a_minute(
    graph: FakeGraph, client: GraphClient, header: int | None, expected: float
) -> None:
    """429 raises GraphThrottledError with Graph's Retry-After, capped at 60 s (5 s when absent)."""
    graph.fail(429, retry_after=header)
    with pytest.raises(GraphThrottledError) as raised:
        await client.application(AGENT_ID)
    assert raised.value.retry_after == expected


@pytest.mark.parametrize(("failure", "reason"), [("500", "graph_http_500"), ("timeout", "graph_timeout")])
async def test_server_errors_and_timeouts_are_graph_errors(
    graph: FakeGraph, client: GraphClient, failure: str, reason: str
) -> None:
    """A 5xx or a timeout raises GraphError with a stable reason (and is not mistaken for throttling)."""
    if failure == "timeout":
        graph.time_out()
    else:
        graph.fail(500)
    with pytest.raises(GraphError) as raised:
        await client.application(AGENT_ID)
    assert raised.value.reason == reason
    assert not isinstance(raised.value, GraphThrottledError)


async def test_graph_refusing_lkps_token_is_an_error(
    entra: FakeEntra, graph: FakeGraph, client: GraphClient
) -> None:
    """When Graph refuses lkps's token (here: no Application.Read.All) the lookup fails; it is not retried."""
    entra.clients[LKPS_CLIENT_ID].roles = ()
    with pytest.raises(GraphError) as raised:
        await client.application(AGENT_ID)
    assert raised.value.reason == "graph_http_401"
    assert graph.calls == 1


async def test_answer_for_another_application_is_refused(graph: FakeGraph, client: GraphClient) -> None:
    """An answer whose appId is not the agent's is never applied to the agent."""
    graph.applications[AGENT_ID] = application(OTHER_AGENT_ID)
    with pytest.raises(GraphError) as raised:
        await client.application(AGENT_ID)
    assert raised.value.reason == "graph_bad_response"


async def test_non_guid_agent_id_is_never_put_in_a_graph_url(graph: FakeGraph, client: GraphClient) -> None:
    """An agent id that is not a lowercase GUID cannot reach the URL (no OData injection)."""
    with pytest.raises(ValueError, match="GUID"):
        await client.application("x') or (appId eq 'y")
    assert graph.calls == 0


def test_both_spellings_of_the_permission_list_are_parsed() -> None:
    """v1.0 `delegatedPermissionIds` and beta/manifest `permissionIds` both fill the pre-authorization map."""
    for field in ("delegatedPermissionIds", "permissionIds"):
        document = application(preauthorized={SPA_CLIENT_ID: [SCOPE_ID]}, field=field)
        assert parse_agent_api(AGENT_ID, document["api"]).preauthorized == {
            SPA_CLIENT_ID: frozenset({SCOPE_ID})
        }


def test_malformed_entries_are_skipped_and_guids_lowercased() -> None:
    """Entries with missing or non-GUID ids or wrong types are dropped; GUIDs compare in lowercase."""
    api = parse_agent_api(
        AGENT_ID,
        {
            "requestedAccessTokenVersion": "2",
            "oauth2PermissionScopes": [
                scope("access_as_client", SCOPE_ID.upper()),
                scope("no_id", "not-a-guid"),
                {"value": "truthy_flag", "id": OTHER_SCOPE_ID, "isEnabled": "true"},
                "garbage",
            ],
            "preAuthorizedApplications": [
                {"appId": SPA_CLIENT_ID.upper(), "delegatedPermissionIds": [SCOPE_ID.upper(), 42, "nope"]},
                {"appId": "not-a-guid", "delegatedPermissionIds": [SCOPE_ID]},
                {"appId": LKPS_CLIENT_ID, "delegatedPermissionIds": "not-a-list"},
                None,
            ],
        },
    )
    assert api.scopes == {
        "access_as_client": Scope(SCOPE_ID, enabled=True),
        "truthy_flag": Scope(OTHER_SCOPE_ID, enabled=False),
    }
    assert api.preauthorized == {SPA_CLIENT_ID: frozenset({SCOPE_ID}), LKPS_CLIENT_ID: frozenset()}
    assert api.requested_access_token_version is None
    assert parse_agent_api(AGENT_ID, None).preauthorized == {}
