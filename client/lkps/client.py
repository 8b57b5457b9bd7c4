"""The lkps API for Python services: start sessions and register agents, with typed results and errors."""

from __future__ import annotations

import ipaddress
import ssl
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib.metadata import version
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import quote, urlsplit

import httpx
import msgspec

from lkps.credentials import TokenProvider
from lkps.errors import ConnectionFailed, LkpsError, error_from_response

if TYPE_CHECKING:
    from typing_extensions import Self  # typing.Self is Python 3.11+

T = TypeVar("T")


def plaintext_problem(url: str) -> str | None:
    """Why lkps at `url` cannot be sent credentials: plaintext http to a host other than this machine's
    loopback (the bearer token, and the worker secret in the answer, would cross the network unencrypted)."""
    parts = urlsplit(url)
    if parts.scheme != "http":
        return None
    try:
        loopback = parts.hostname == "localhost" or ipaddress.ip_address(parts.hostname or "").is_loopback
    except ValueError:
        loopback = False
    return None if loopback else f"{url!r} is plaintext http to a non-loopback host: use https://"


@dataclass(frozen=True, slots=True)
class Session:
    """A started session: connect to `livekit_url` with `participant_token` before `expires_at`."""

    room_name: str
    livekit_url: str
    participant_token: str
    participant_identity: str
    expires_at: int


@dataclass(frozen=True, slots=True)
class AgentRegistration:
    """An agent's registration: the settings its LiveKit Agents worker connects to lkps with.

    Run the worker with LIVEKIT_URL=`worker_url`, LIVEKIT_API_KEY=`worker_api_key`,
    LIVEKIT_API_SECRET=`worker_api_secret` under the agent name `agent_name` (`worker_environment()`). The
    agent counts as connected until `expires_at`; registering again before then renews it, and the worker
    keeps the settings it started with. They are bound to this agent and useless at LiveKit itself.
    """

    worker_url: str
    worker_api_key: str
    worker_api_secret: str = field(repr=False)
    expires_at: int
    agent_name: str  # the agent's app id
    registration_id: str


@dataclass(frozen=True, slots=True)
class EndedSession:
    """A session ended by its starter: LiveKit closed the room at `ended_at` (RFC 3339)."""

    room_name: str
    status: str
    ended_at: str


class LkpsClient:
    """Calls lkps with a bearer token from `credential` (usually an `EntraCredential`).

    Thread-safe, like the `httpx.Client` underneath; close it (or use `with`) to release connections.
    """

    def __init__(
        self,
        url: str,
        credential: TokenProvider,
        *,
        ca_bundle: Path | None = None,
        timeout_seconds: float = 10.0,
        http: httpx.Client | None = None,
    ) -> None:
        """`url` is lkps's base URL (https, or http on loopback only); `ca_bundle` replaces the system trust;
        `http` overrides the transport."""
        if problem := plaintext_problem(url):
            raise ValueError(f"lkps URL {problem}")
        self._credential = credential
        self._owns_http = http is None
        self._http = http or httpx.Client(
            verify=ssl.create_default_context(cafile=ca_bundle) if ca_bundle else True,
            timeout=timeout_seconds,
            follow_redirects=False,  # the bearer token goes to lkps and nowhere else
        )
        self._base = url.rstrip("/")
        self._user_agent = f"lkps-python/{version('lkps-client')}"

    def start_session(self, agent_id: str, metadata: Mapping[str, Any] | None = None) -> Session:
        """A LiveKit token for a fresh room with the agent dispatched (`POST /api/session/start`)."""
        body: dict[str, Any] = {"agent_entra_app_id": agent_id}
        if metadata is not None:
            body["metadata"] = dict(metadata)
        return self._call("POST", "/api/session/start", body, Session)

    def end_session(self, room_name: str) -> EndedSession:
        """Close a room this client started (`DELETE /api/session/{room_name}`); ending twice is fine."""
        return self._call("DELETE", f"/api/session/{quote(room_name, safe='')}", None, EndedSession)

    def register_agent(
        self,
        *,
        enforce_client_authz: bool = True,
        display_name: str | None = None,
        description: str | None = None,
        agent_version: str | None = None,
    ) -> AgentRegistration:
        """Register (or renew) the calling agent with its own credential (`POST /api/agent/register`)."""
        body: dict[str, Any] = {"enforce_client_authz": enforce_client_authz}
        optional = {"display_name": display_name, "description": description, "agent_version": agent_version}
        body.update({name: value for name, value in optional.items() if value is not None})
        return self._call("POST", "/api/agent/register", body, AgentRegistration)

    def close(self) -> None:
        if self._owns_http:
            self._http.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.close()

    def _call(self, method: str, path: str, body: dict[str, Any] | None, result: type[T]) -> T:
        headers = {"Authorization": f"Bearer {self._credential.token()}", "User-Agent": self._user_agent}
        try:
            response = self._http.request(method, self._base + path, json=body, headers=headers)
        except httpx.HTTPError as exc:
            raise ConnectionFailed(
                f"lkps at {self._base} could not be reached ({type(exc).__name__}).",
                status=None,
                code="connection_failed",
            ) from exc
        if not response.is_success:
            raise error_from_response(response.status_code, response.headers, response.content)
        try:
            return msgspec.json.decode(response.content, type=result)
        except msgspec.MsgspecError as exc:
            raise LkpsError(
                f"lkps answered {response.status_code} with an unexpected body ({exc}).",
                status=response.status_code,
                code="unexpected_response",
                request_id=response.headers.get("x-request-id"),
            ) from exc
