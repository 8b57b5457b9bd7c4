"""A fake Microsoft Graph served by `FakeEntra` (one extra route per agent) and MSAL's side of the fake.

`FakeGraph` serves application objects (entra-tokens.md §2.3), counts calls, fails on demand and accepts only
Graph tokens FakeEntra issued. `MsalTransport` lets MSAL talk to FakeEntra without a socket (§5.3).
"""

from __future__ import annotations

import datetime as dt
import threading
import uuid
from pathlib import Path
from typing import Any

import httpx
import jwt
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from tests.support.entra import FakeEntra, FakeRequest, FakeResponse, compact, rs256, rsa_key

GRAPH_URL = "https://graph.fake.test"
GRAPH_ROLE = "Application.Read.All"
LKPS_CLIENT_ID = (
    "5f6a7b8c-9d0e-4f1a-8b2c-3d4e5f6a7b8c"  # lkps's own confidential client (LKPS_ENTRA_CLIENT_ID)
)
LKPS_CLIENT_OID = "6a7b8c9d-0e1f-4a2b-9c3d-4e5f6a7b8c9d"
LKPS_CLIENT_SECRET = "fake-lkps-graph-secret-value"
AGENT_ID = "0a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d"
OTHER_AGENT_ID = "1b2c3d4e-5f6a-4b7c-9d8e-0f1a2b3c4d5e"
SCOPE_ID = "a1b2c3d4-e5f6-4a7b-8c9d-0e1f2a3b4c5d"  # the agent's access_as_client scope
OTHER_SCOPE_ID = "b2c3d4e5-f6a7-4b8c-9d0e-1f2a3b4c5d6e"  # another delegated scope of the agent


def scope(
    value: str = "access_as_client", scope_id: str = SCOPE_ID, *, enabled: bool = True
) -> dict[str, Any]:
    return {
        "id": scope_id,
        "value": value,
        "type": "User",
        "isEnabled": enabled,
        "adminConsentDisplayName": f"Use {value}",
        "adminConsentDescription": "Lets the client start sessions with the agent.",
        "userConsentDisplayName": None,
        "userConsentDescription": None,
    }


def application(
    agent_id: str = AGENT_ID,
    *,
    scopes: list[Any] | None = None,
    preauthorized: dict[str, list[str]] | None = None,
    field: str = "delegatedPermissionIds",
    version: int | None = 2,
) -> dict[str, Any]:
    """An application object as `GET /v1.0/applications(appId=...)?$select=appId,api` returns it.

    `field="permissionIds"` gives the beta/manifest spelling of the pre-authorization list.
    """
    return {
        "appId": agent_id,
        "api": {
            "requestedAccessTokenVersion": version,
            "acceptMappedClaims": None,
            "knownClientApplications": [],
            "oauth2PermissionScopes": [scope()] if scopes is None else scopes,
            "preAuthorizedApplications": [
                {"appId": client, field: ids} for client, ids in (preauthorized or {}).items()
            ],
        },
    }


class FakeGraph:
    """`GET {url}/v1.0/applications(appId='...')` on FakeEntra's router: route group "graph"."""

    def __init__(self, entra: FakeEntra, url: str = GRAPH_URL) -> None:
        self.entra = entra
        self.url = url.rstrip("/")
        entra.resources[self.url] = self.url  # Entra issues tokens for this resource (scope {url}/.default)
        self.applications: dict[str, dict[str, Any]] = {}
        self.received_tokens: list[str] = []
        self.rejections: list[str] = []  # why a bearer token was refused; a correct client causes none
        self._timeouts = 0
        self._lock = threading.Lock()

    @property
    def calls(self) -> int:
        return self.entra.count("graph")

    def put(self, document: dict[str, Any]) -> None:
        """Serve `document` (see `application`) for its appId."""
        agent_id = document["appId"]
        self.applications[agent_id] = document
        self.route(agent_id)

    def remove(self, agent_id: str) -> None:
        """Answer 404 for `agent_id` from now on (the app registration was deleted or never existed)."""
        self.applications.pop(agent_id, None)
        self.route(agent_id)

    def route(self, agent_id: str) -> None:
        self.entra.add_route(
            "GET",
            f"/v1.0/applications(appId='{agent_id}')",
            lambda r: self._serve(agent_id, r),
            group="graph",
        )

    def fail(self, status: int = 500, times: int = 1, *, retry_after: int | None = None) -> None:
        self.entra.fail("graph", status, times, retry_after=retry_after)

    def time_out(self, times: int = 1) -> None:
        """The next `times` requests raise httpx.ReadTimeout (MockTransport only: no socket to stall)."""
        with self._lock:
            self._timeouts += times

    def _serve(self, agent_id: str, request: FakeRequest) -> FakeResponse:
        with self._lock:
            if self._timeouts:
                self._timeouts -= 1
                raise httpx.ReadTimeout("the fake Graph did not answer")
        problem = self._token_problem(request.headers.get("authorization", ""))
        if problem is not None:
            self.rejections.append(problem)
            return _graph_error(401, "InvalidAuthenticationToken", problem)
        if request.query.get("$select") != "appId,api":
            return _graph_error(400, "BadRequest", "lkps always selects appId,api")
        document = self.applications.get(agent_id)
        if document is None:
            return _graph_error(404, "Request_ResourceNotFound", f"Resource '{agent_id}' does not exist.")
        context = f"{self.url}/v1.0/$metadata#applications(appId,api)/$entity"
        return FakeResponse.json(
            200, {"@odata.context": context, **document}, {"request-id": str(uuid.uuid4())}
        )

    def _token_problem(self, authorization: str) -> str | None:
        """Why Graph would refuse this Authorization header, or None for a valid FakeEntra Graph token."""
        scheme, _, token = authorization.partition(" ")
        if scheme != "Bearer" or not token:
            return "no bearer token"
        self.received_tokens.append(token)
        try:
            key = self.entra._published[jwt.get_unverified_header(token)["kid"]].public_key()
            # Times are checked against FakeEntra's clock below, not the wall clock.
            claims = jwt.decode(
                token,
                key,
                algorithms=["RS256"],
                audience=self.url,
                issuer=self.entra.issuer_v2,
                options={"verify_exp": False, "verify_nbf": False, "verify_iat": False},
            )
        except (jwt.PyJWTError, KeyError) as exc:
            return f"invalid token: {type(exc).__name__}: {exc}"
        if claims["exp"] <= self.entra.clock.now():
            return "token expired"
        if claims.get("idtyp") != "app" or GRAPH_ROLE not in claims.get("roles", []):
            return f"not an app token with {GRAPH_ROLE}"
        return None


def _graph_error(status: int, code: str, message: str) -> FakeResponse:
    return FakeResponse.json(status, {"error": {"code": code, "message": message}})


class MsalTransport:
    """MSAL's `http_client` over FakeEntra's MockTransport; records token-request forms and threads.

    With `token_lifetime` below MSAL's 5-minute refresh margin, every token call goes back to the token
    endpoint, which is how tests see a credential used again after MSAL's cached token "expires".
    """

    def __init__(self, entra: FakeEntra, *, token_lifetime: int | None = None) -> None:
        self._client = httpx.Client(transport=entra.transport(), follow_redirects=False)
        self._token_lifetime = token_lifetime
        self.token_forms: list[dict[str, str]] = []
        self.threads: set[int] = set()

    def get(self, url: str, params: Any = None, headers: Any = None, **_: Any) -> httpx.Response:
        self.threads.add(threading.get_ident())
        return self._client.get(url, params=params, headers=headers)

    def post(
        self, url: str, params: Any = None, data: Any = None, headers: Any = None, **_: Any
    ) -> httpx.Response:
        self.threads.add(threading.get_ident())
        if isinstance(data, dict):
            # MSAL hands over certificate assertions as bytes; httpx would send their repr (§5.2 G).
            data = {k: v.decode() if isinstance(v, bytes) else v for k, v in data.items()}
            self.token_forms.append(data)
        response = self._client.post(url, params=params, data=data, headers=headers)
        if self._token_lifetime is None or response.status_code != 200:
            return response
        return httpx.Response(
            200, json={**response.json(), "expires_in": self._token_lifetime}, request=response.request
        )

    def close(self) -> None:
        self._client.close()


def register_lkps(entra: FakeEntra, certificate_key: rsa.RSAPrivateKey | None = None) -> None:
    """lkps's own app in the fake tenant, with the Graph permission it needs and optionally a certificate."""
    entra.register_client(
        LKPS_CLIENT_ID,
        object_id=LKPS_CLIENT_OID,
        secret=LKPS_CLIENT_SECRET,
        certificate_key=None if certificate_key is None else certificate_key.public_key(),
        roles=(GRAPH_ROLE,),
    )


def write_certificate(path: Path, key: rsa.RSAPrivateKey, *, password: str | None = None) -> x509.Certificate:
    """A PEM file with `key` (encrypted when `password` is given) and a self-signed certificate for it."""
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "lkps graph client")])
    now = dt.datetime.now(dt.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=30))
        .sign(key, hashes.SHA256())
    )
    encryption = (
        serialization.BestAvailableEncryption(password.encode()) if password else serialization.NoEncryption()
    )
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption)
    path.write_bytes(key_pem + certificate.public_bytes(serialization.Encoding.PEM))
    return certificate


def federated_token(entra: FakeEntra, key: rsa.RSAPrivateKey, jti: str) -> str:
    """A token as the workload-identity webhook projects it, shaped so FakeEntra accepts it as an assertion.

    FakeEntra checks assertions the certificate way (signed by the client's registered key, iss = sub =
    client id, aud = token endpoint); real Entra would check the cluster's OIDC issuer instead.
    """
    now = int(entra.clock.now())
    claims = {
        "iss": LKPS_CLIENT_ID,
        "sub": LKPS_CLIENT_ID,
        "aud": entra.token_endpoint,
        "iat": now,
        "nbf": now,
        "exp": now + 3600,
        "jti": jti,
    }
    return compact({"alg": "RS256", "typ": "JWT"}, claims, rs256(key))


def client_key() -> rsa.RSAPrivateKey:
    """lkps's certificate / federation key (cached per test session like every fake key)."""
    return rsa_key("lkps-graph-client")
