"""Microsoft Graph access for client pre-authorization: lkps's own app token (MSAL) and the agent lookup.

`GraphTokenProvider` gets an app-only Graph token with a secret, a certificate or a workload-identity token
file; `GraphClient` reads an agent's `api` object and parses it into an immutable `AgentApi`.
"""

from __future__ import annotations

import asyncio
import math
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple, Protocol

import httpx
import msal
import requests
import structlog

from authz.errors import AuthUnavailable
from config.settings import GraphCredential, Settings, is_guid
from lkps.msal_transport import MsalSession, certificate_credential

log = structlog.get_logger("lkps.graph")

# The public cloud keeps MSAL's authority validation; any other host (sovereign clouds are known to MSAL,
# test fakes are not) is trusted as configured instead of being checked against login.microsoftonline.com.
_VALIDATED_AUTHORITY = "https://login.microsoftonline.com"
MAX_RETRY_AFTER_SECONDS = 60.0  # entra-tokens.md §2.4: honour Retry-After, but never wait longer than this
DEFAULT_RETRY_AFTER_SECONDS = 5.0  # a 429 without a usable Retry-After (MSAL's own default for the same case)


class MsalHttpClient(Protocol):
    """What MSAL calls on its `http_client` (a `requests.Session` in production, an adapter in tests)."""

    def get(self, url: str, **kwargs: Any) -> Any: ...

    def post(self, url: str, **kwargs: Any) -> Any: ...

    def close(self) -> None: ...


class TokenSource(Protocol):
    async def token(self) -> str: ...

    async def aclose(self) -> None: ...


class GraphTokenProvider:
    """lkps's app-only token for Graph from one MSAL confidential client whose token cache is reused."""

    def __init__(
        self,
        settings: Settings,
        credential: GraphCredential,
        *,
        http_client: requests.Session | MsalHttpClient | None = None,
    ) -> None:
        """Check the credential now (a bad certificate file is a start-up error); talk to Entra only later."""
        self._owned_session: MsalSession | None = None
        if http_client is None:
            verify = str(settings.entra_ca_bundle) if settings.entra_ca_bundle else True
            http_client = self._owned_session = MsalSession(verify, settings.entra_http_timeout_seconds)
        self._http_client: requests.Session | MsalHttpClient = http_client
        self._client_id = credential.client_id
        self._authority = f"{settings.authority_host}/{settings.entra_tenant_id}"
        self._instance_discovery = None if settings.authority_host == _VALIDATED_AUTHORITY else False
        self._scopes = [f"{settings.graph_url.rstrip('/')}/.default"]
        self._federated_token_file = credential.federated_token_file
        self._credential = self._client_credential(credential)
        self._app: msal.ConfidentialClientApplication | None = None
        self._build_lock = threading.Lock()
        # Concurrent cold misses (several agents at start-up) share one token request instead of racing.
        self._lock = asyncio.Lock()

    async def token(self) -> str:
        """A valid Graph access token (from MSAL's cache when possible); AuthUnavailable if Entra refuses."""
        async with self._lock:
            try:
                # MSAL is synchronous (requests): keep it off the event loop.
                result = await asyncio.to_thread(self._acquire)
            except Exception as exc:
                log.warning("graph.token_failed", error=type(exc).__name__)
                raise AuthUnavailable(
                    "graph_token_unavailable",
                    f"lkps could not obtain a Microsoft Graph token from Entra ({type(exc).__name__}).",
                ) from exc
        access_token = result.get("access_token")
        if not isinstance(access_token, str) or not access_token:
            # Only codes and ids are logged: error_description may echo request details.
            error, correlation_id = result.get("error", "no_access_token"), result.get("correlation_id")
            log.warning(
                "graph.token_failed",
                error=error,
                error_codes=result.get("error_codes"),
                correlation_id=correlation_id,
            )
            raise AuthUnavailable(
                "graph_token_unavailable",
                f"lkps could not obtain a Microsoft Graph token from Entra ({error}, "
                f"correlation id {correlation_id}).",
            )
        if result.get("token_source") == "identity_provider":
            log.info("graph.token_acquired", expires_in=result.get("expires_in"))
        return access_token

    async def aclose(self) -> None:
        if self._owned_session is not None:
            self._owned_session.close()

    def _acquire(self) -> dict[str, Any]:
        result = self._application().acquire_token_for_client(scopes=self._scopes)
        return result if isinstance(result, dict) else {}

    def _application(self) -> msal.ConfidentialClientApplication:
        """The MSAL application, built on first use: its constructor already fetches the tenant's metadata,
        which must neither block start-up nor make an Entra outage at boot fatal."""
        with self._build_lock:  # a cancelled caller's thread may still be building it
            if self._app is None:
                self._app = msal.ConfidentialClientApplication(
                    client_id=self._client_id,
                    client_credential=self._credential,
                    authority=self._authority,
                    instance_discovery=self._instance_discovery,
                    http_client=self._http_client,
                    token_cache=msal.TokenCache(),
                )
            return self._app

    def _client_credential(self, credential: GraphCredential) -> str | dict[str, Any]:
        if credential.client_secret is not None:
            return credential.client_secret
        if credential.certificate_path is not None:
            return certificate_credential(credential.certificate_path, credential.certificate_password)
        if credential.federated_token_file is not None:
            # A callable, so MSAL asks again for every token request: AKS rotates the projected file.
            return {"client_assertion": self._federated_assertion}
        raise ValueError("the Graph credential has no secret, certificate or federated token file")

    def _federated_assertion(self) -> str:
        assert self._federated_token_file is not None
        assertion = self._federated_token_file.read_text(encoding="utf-8").strip()
        if not assertion:
            raise ValueError(f"the federated token file {self._federated_token_file} is empty")
        return assertion


class Scope(NamedTuple):
    id: str  # lowercase GUID
    enabled: bool


@dataclass(frozen=True, slots=True)
class AgentApi:
    """The part of an agent's application object that pre-authorization needs (entra-tokens.md §2.5)."""

    app_id: str
    scopes: Mapping[str, Scope]  # scope value (case-sensitive, as in `scp`) -> id and isEnabled
    preauthorized: Mapping[str, frozenset[str]]  # client app id -> permission ids (lowercase GUIDs)
    requested_access_token_version: int | None


class GraphError(Exception):
    """Graph gave no usable answer; `reason` is a stable code for logs and `retry_after` a server hint."""

    def __init__(
        self,
        reason: str,
        detail: str,
        *,
        status: int | None = None,
        retry_after: float | None = None,
        request_id: str | None = None,
    ) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.status = status
        self.retry_after = retry_after
        self.request_id = request_id


class GraphThrottledError(GraphError):
    """HTTP 429: Graph must not be called again for `retry_after` seconds (capped)."""


class GraphClient:
    """Reads agents' application objects over the shared HTTP client (same CA and no-redirect policy)."""

    def __init__(
        self, http: httpx.AsyncClient, tokens: TokenSource, graph_url: str, timeout_seconds: float
    ) -> None:
        self._http = http
        self._tokens = tokens
        self._base = graph_url.rstrip("/")
        self._timeout = timeout_seconds

    async def application(self, agent_app_id: str) -> AgentApi | None:
        """The agent's `api` settings, or None when Graph has no application with that app id (404)."""
        if not is_guid(agent_app_id):
            raise ValueError(f"agent app id {agent_app_id!r} is not a lowercase GUID")
        try:
            token = await self._tokens.token()
        except AuthUnavailable as exc:
            raise GraphError(exc.reason, exc.detail) from exc
        # The query is written out: Graph documents `$select` literally and httpx would escape the `$`.
        url = f"{self._base}/v1.0/applications(appId='{agent_app_id}')?$select=appId,api"
        try:
            response = await self._http.get(
                url,
                headers={"Authorization": f"Bearer {token}"},
                timeout=self._timeout,
                follow_redirects=False,  # whatever client is passed in: the bearer token goes to Graph only
            )
        except httpx.TimeoutException:
            raise GraphError("graph_timeout", f"no answer within {self._timeout:g} s") from None
        except httpx.HTTPError as exc:
            raise GraphError("graph_transport_error", type(exc).__name__) from None
        if response.status_code == 404:
            return None
        return _agent_api(agent_app_id, response)

    async def aclose(self) -> None:
        """Release the token provider; the HTTP client belongs to whoever created it."""
        await self._tokens.aclose()


def _agent_api(agent_app_id: str, response: httpx.Response) -> AgentApi:
    """The parsed application object of a Graph answer other than 404; GraphError for anything unusable."""
    request_id = response.headers.get("request-id")  # Graph's correlation id, for logs and support cases
    if response.status_code == 429:
        raise GraphThrottledError(
            "graph_throttled",
            "Graph answered 429 Too Many Requests",
            status=429,
            retry_after=_retry_after(response.headers.get("Retry-After")) or DEFAULT_RETRY_AFTER_SECONDS,
            request_id=request_id,
        )
    if response.status_code != 200:
        raise GraphError(
            f"graph_http_{response.status_code}",
            f"Graph answered HTTP {response.status_code} ({_graph_error_code(response)})",
            status=response.status_code,
            retry_after=_retry_after(response.headers.get("Retry-After")),
            request_id=request_id,
        )
    try:
        document = response.json()
    except (ValueError, RecursionError):
        document = None
    if not isinstance(document, dict):
        raise GraphError("graph_bad_response", "the answer is not a JSON object", request_id=request_id)
    app_id = document.get("appId")
    if not isinstance(app_id, str) or app_id.lower() != agent_app_id:
        # Never apply another application's list to this agent.
        raise GraphError("graph_bad_response", "the answer is for another application", request_id=request_id)
    return parse_agent_api(agent_app_id, document.get("api"))


def parse_agent_api(app_id: str, api: Any) -> AgentApi:
    """Parse `application.api`; malformed entries are skipped, so they can only ever deny, never allow."""
    api = api if isinstance(api, dict) else {}
    scopes: dict[str, Scope] = {}
    for entry in _dicts(api.get("oauth2PermissionScopes")):
        value, scope_id = entry.get("value"), _guid(entry.get("id"))
        if isinstance(value, str) and scope_id is not None:
            # Entra keeps values unique; should a duplicate ever appear, the first one decides.
            scopes.setdefault(value, Scope(scope_id, entry.get("isEnabled") is True))
    preauthorized: dict[str, frozenset[str]] = {}
    for entry in _dicts(api.get("preAuthorizedApplications")):
        client = _guid(entry.get("appId"))
        if client is None:
            continue
        # v1.0 says delegatedPermissionIds, beta and the manifest say permissionIds (entra-tokens.md §2.3).
        ids = {
            permission
            for field in ("delegatedPermissionIds", "permissionIds")
            for permission in map(_guid, _list(entry.get(field)))
            if permission is not None
        }
        preauthorized[client] = preauthorized.get(client, frozenset()) | ids
    version = api.get("requestedAccessTokenVersion")
    return AgentApi(
        app_id=app_id,
        scopes=scopes,
        preauthorized=preauthorized,
        requested_access_token_version=version if type(version) is int else None,
    )


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _dicts(value: Any) -> list[dict[str, Any]]:
    return [entry for entry in _list(value) if isinstance(entry, dict)]


def _guid(value: Any) -> str | None:
    return value.lower() if isinstance(value, str) and is_guid(value.lower()) else None


def _retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After header (Graph sends delta-seconds), capped; None if absent or unusable."""
    try:
        seconds = float(value) if value is not None else math.nan
    except ValueError:
        return None
    if not math.isfinite(seconds) or seconds < 0:
        return None
    return min(seconds, MAX_RETRY_AFTER_SECONDS)


def _graph_error_code(response: httpx.Response) -> str:
    """Graph's `error.code` (e.g. Authorization_RequestDenied when Application.Read.All is missing)."""
    try:
        error = response.json().get("error")
    except (ValueError, AttributeError, RecursionError):
        return "no error code"
    code = error.get("code") if isinstance(error, dict) else None
    return code if isinstance(code, str) else "no error code"
