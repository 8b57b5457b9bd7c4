"""A fake Entra ID issuer for the whole test suite (entra-tokens.md §5): discovery, JWKS, token endpoint, minting.

`FakeEntra.handle` is the one routing implementation. `FakeEntra.transport()` serves it to httpx without a
socket; `FakeEntraServer` serves the very same handler over real TLS on 127.0.0.1 with a throwaway CA.
"""

from __future__ import annotations

import asyncio
import base64
import functools
import hashlib
import hmac
import json
import ssl
import threading
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import httpx
import jwt
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from authz.clock import Clock
from authz.loopback_tls import issue_loopback_tls
from config.settings import Settings
from tests.support.clock import FakeClock

FAKE_AUTHORITY = "https://login.fake.test"
TENANT_ID = "4a7c9e1d-2b3f-4c5d-8e6f-1a2b3c4d5e6f"
OTHER_TENANT_ID = "9d8c7b6a-5f4e-4d3c-9b2a-1f0e9d8c7b6a"
API_APP_ID = "6e1f2a3b-4c5d-4e6f-8a9b-0c1d2e3f4a5b"  # lkps's own app registration: the audience
API_APP_ID_URI = f"api://{API_APP_ID}"
OTHER_API_APP_ID = "0f1e2d3c-4b5a-4968-8776-5a4b3c2d1e0f"
SPA_CLIENT_ID = "1c2d3e4f-5a6b-4c7d-8e9f-0a1b2c3d4e5f"
SERVICE_CLIENT_ID = "2d3e4f5a-6b7c-4d8e-9f0a-1b2c3d4e5f6a"
OTHER_CLIENT_ID = "3e4f5a6b-7c8d-4e9f-8a1b-2c3d4e5f6a7b"
SERVICE_SECRET = "fake-service-secret"
USER_OID = "7a8b9c0d-1e2f-4a3b-8c4d-5e6f7a8b9c0d"
SERVICE_OID = "8b9c0d1e-2f3a-4b4c-9d5e-6f7a8b9c0d1e"
CLIENT_SCOPE = "access_as_client"
CLIENT_ROLE = "Agent.Invoke"
GRAPH_RESOURCE = "https://graph.microsoft.com"
CLIENT_ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"


class _Remove:
    def __repr__(self) -> str:
        return "REMOVE"


REMOVE: Any = _Remove()
"""Pass as a claim or header value to leave that member out entirely."""


def make_settings(**overrides: Any) -> Settings:
    """Settings pointing at `FakeEntra` defaults; nothing is read from the process environment."""
    values: dict[str, Any] = {
        "entra_tenant_id": TENANT_ID,
        "entra_audiences": (API_APP_ID, API_APP_ID_URI),
        "livekit_url": "wss://livekit.fake.test",
        "public_url": "https://lkps.fake.test",  # a deployment's; the tests of deriving it set None
        "livekit_api_key": "APIfaketestkey",
        "livekit_api_secret": "fake-livekit-secret-that-is-long-enough",
        "entra_authority": FAKE_AUTHORITY,
        "client_scopes": (CLIENT_SCOPE,),
        "client_roles": (CLIENT_ROLE,),
        "client_app_ids": (SPA_CLIENT_ID, SERVICE_CLIENT_ID),
        # Off unless a test is about it: the fake clock stands still, so one user's 11th session start in
        # any test would be refused. tests/gateway/test_ratelimit.py sets both budgets.
        "user_rate_limit_per_minute": 0,
    }
    values.update(overrides)
    return Settings(**values)


# ---- JOSE helpers shared by the fake and the attack catalogue ------------------------------------------


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def encode_segment(value: Any) -> str:
    """Bytes are taken as the raw segment content; anything else is serialised as compact JSON."""
    raw = value if isinstance(value, bytes) else json.dumps(value, separators=(",", ":")).encode()
    return b64url(raw)


def compact(header: Any, payload: Any, sign: Callable[[bytes], bytes]) -> str:
    signing_input = f"{encode_segment(header)}.{encode_segment(payload)}"
    return f"{signing_input}.{b64url(sign(signing_input.encode('ascii')))}"


def rs256(key: rsa.RSAPrivateKey) -> Callable[[bytes], bytes]:
    return lambda data: key.sign(data, padding.PKCS1v15(), hashes.SHA256())


def with_overrides(members: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    result = dict(members)
    for name, value in overrides.items():
        if value is REMOVE:
            result.pop(name, None)
        else:
            result[name] = value
    return result


@functools.cache
def rsa_key(name: str) -> rsa.RSAPrivateKey:
    """A 2048-bit key per name, generated once per test session (generation is the slow part)."""
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def kid_of(key: rsa.RSAPrivateKey) -> str:
    """A 27-character base64url thumbprint, the shape of a real Entra kid."""
    der = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return b64url(hashlib.sha256(der).digest()[:20])


def public_jwk(key: rsa.RSAPrivateKey, **extra: Any) -> dict[str, Any]:
    numbers = key.public_key().public_numbers()
    return {
        "kty": "RSA",
        "use": "sig",
        "kid": kid_of(key),
        "n": b64url(numbers.n.to_bytes((numbers.n.bit_length() + 7) // 8, "big")),
        "e": b64url(numbers.e.to_bytes((numbers.e.bit_length() + 7) // 8, "big")),
        **extra,
    }


# ---- the fake issuer ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class FakeRequest:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]  # lower-case names
    body: bytes


@dataclass(frozen=True)
class FakeResponse:
    status: int
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)

    @classmethod
    def json(cls, status: int, document: Any, headers: dict[str, str] | None = None) -> FakeResponse:
        return cls(
            status, json.dumps(document).encode(), {"Content-Type": "application/json", **(headers or {})}
        )


@dataclass
class FakeClient:
    """A confidential client registered in the fake tenant (client credentials)."""

    client_id: str
    object_id: str
    secret: str | None = None
    certificate_key: rsa.RSAPublicKey | None = None
    roles: tuple[str, ...] = ()


Handler = Callable[[FakeRequest], FakeResponse]


class FakeEntra:
    """One fake tenant: serves metadata and keys, issues app tokens, and mints any token a test needs."""

    def __init__(
        self,
        tenant_id: str = TENANT_ID,
        authority: str = FAKE_AUTHORITY,
        *,
        audience: str = API_APP_ID,
        clock: Clock | None = None,
    ) -> None:
        self.tenant_id = tenant_id
        self.authority = authority.rstrip("/")
        self.audience = audience
        self.clock: Clock = clock or FakeClock()
        self.calls: list[tuple[str, str]] = []
        self.clients: dict[str, FakeClient] = {}
        self.resources = {audience: audience, f"api://{audience}": audience, GRAPH_RESOURCE: GRAPH_RESOURCE}
        self._lock = threading.Lock()
        self._published: dict[str, rsa.RSAPrivateKey] = {}
        self._failures: dict[str, list[FakeResponse]] = {}
        self._overrides: dict[str, FakeResponse] = {}
        self.signing_kid = self.add_key("primary")
        self.register_client(
            SERVICE_CLIENT_ID, object_id=SERVICE_OID, secret=SERVICE_SECRET, roles=(CLIENT_ROLE,)
        )
        base = f"/{tenant_id}"
        # (method, path) -> (route group for fail()/override(), handler)
        self._routes: dict[tuple[str, str], tuple[str, Handler]] = {
            ("GET", f"{base}/v2.0/.well-known/openid-configuration"): (
                "discovery",
                lambda _: self._discovery_v2(),
            ),
            ("GET", f"{base}/.well-known/openid-configuration"): (
                "discovery",
                lambda _: self._discovery_v1(),
            ),
            ("GET", f"{base}/discovery/v2.0/keys"): ("jwks", lambda _: self._jwks(with_issuer=True)),
            ("GET", f"{base}/discovery/keys"): ("jwks", lambda _: self._jwks(with_issuer=False)),
            ("POST", f"{base}/oauth2/v2.0/token"): ("token", self._token),
        }

    # -- addresses --

    @property
    def issuer_v2(self) -> str:
        return f"{self.authority}/{self.tenant_id}/v2.0"

    @property
    def issuer_v1(self) -> str:
        return f"https://sts.fake.test/{self.tenant_id}/"  # v1 issuers live on another host (sts.windows.net)

    @property
    def discovery_url_v2(self) -> str:
        return f"{self.authority}/{self.tenant_id}/v2.0/.well-known/openid-configuration"

    @property
    def discovery_url_v1(self) -> str:
        return f"{self.authority}/{self.tenant_id}/.well-known/openid-configuration"

    @property
    def jwks_path_v2(self) -> str:
        return f"/{self.tenant_id}/discovery/v2.0/keys"

    @property
    def token_endpoint(self) -> str:
        return f"{self.authority}/{self.tenant_id}/oauth2/v2.0/token"

    # -- test hooks --

    def add_route(self, method: str, path: str, handler: Handler, group: str = "extra") -> None:
        """Serve another endpoint (e.g. a fake Graph) through the same routing, call log and switches."""
        self._routes[(method, path)] = (group, handler)

    def fail(self, group: str, status: int = 500, times: int = 1, *, retry_after: int | None = None) -> None:
        """Answer the next `times` requests of a route group ("discovery", "jwks", "token") with `status`."""
        headers = {"Retry-After": str(retry_after)} if retry_after is not None else {}
        failure = FakeResponse.json(status, {"error": "temporarily_unavailable"}, headers)
        with self._lock:
            self._failures.setdefault(group, []).extend([failure] * times)

    def override(self, group: str, response: FakeResponse | None) -> None:
        """Serve `response` for a route group until called again with None (e.g. non-JSON JWKS, a redirect)."""
        with self._lock:
            if response is None:
                self._overrides.pop(group, None)
            else:
                self._overrides[group] = response

    def add_key(self, name: str, *, sign: bool = False) -> str:
        """Publish the session key called `name`; with `sign`, new tokens are signed with it. Returns its kid."""
        key = rsa_key(name)
        kid = kid_of(key)
        with self._lock:
            self._published[kid] = key
        if sign:
            self.signing_kid = kid
        return kid

    def remove_key(self, kid: str) -> None:
        with self._lock:
            del self._published[kid]

    @property
    def published_kids(self) -> list[str]:
        return list(self._published)

    def private_key(self, kid: str | None = None) -> rsa.RSAPrivateKey:
        """The published key for `kid` (default: the current signing key)."""
        return self._published[kid or self.signing_kid]

    def register_client(
        self,
        client_id: str,
        *,
        object_id: str,
        secret: str | None = None,
        certificate_key: rsa.RSAPublicKey | None = None,
        roles: tuple[str, ...] = (),
    ) -> FakeClient:
        client = FakeClient(client_id, object_id, secret, certificate_key, roles)
        self.clients[client_id] = client
        return client

    def count(self, group: str) -> int:
        """How many requests reached a route group ("discovery", "jwks", "token", ...) so far."""
        return sum(1 for method, path in self.calls if self._routes.get((method, path), ("",))[0] == group)

    @property
    def jwks_fetches(self) -> int:
        return self.count("jwks")

    @property
    def discovery_fetches(self) -> int:
        return self.count("discovery")

    # -- minting --

    def header(self, **overrides: Any) -> dict[str, Any]:
        return with_overrides({"typ": "JWT", "alg": "RS256", "kid": self.signing_kid}, overrides)

    def user_claims(self, *, v1: bool = False, **overrides: Any) -> dict[str, Any]:
        """A delegated (SPA) token's claims as Entra issues them with idtyp and include_user_token."""
        now = int(self.clock.now())
        claims = {
            "aud": self.audience,
            "iss": self.issuer_v2,
            "iat": now,
            "nbf": now,
            "exp": now + 3600,
            "azp": SPA_CLIENT_ID,
            "azpacr": "0",
            "idtyp": "user",
            "name": "Ada Lovelace",
            "oid": USER_OID,
            "preferred_username": "ada.lovelace@contoso.example",
            "scp": CLIENT_SCOPE,
            "sub": "kX9p2vQm7rT4wZ1yB6nC3dF8gH5jL0sA2eU4iO7tY9",
            "tid": self.tenant_id,
            "uti": "AbCdEfGhIjKlMnOpQrStUv",
            "ver": "2.0",
            "cwid": "ADA0001",
        }
        return with_overrides(self._as_v1(claims) if v1 else claims, overrides)

    def app_claims(self, *, v1: bool = False, **overrides: Any) -> dict[str, Any]:
        """An app-only (client credentials) token's claims."""
        now = int(self.clock.now())
        claims = {
            "aud": self.audience,
            "iss": self.issuer_v2,
            "iat": now,
            "nbf": now,
            "exp": now + 3600,
            "azp": SERVICE_CLIENT_ID,
            "azpacr": "1",
            "idtyp": "app",
            "oid": SERVICE_OID,
            "sub": SERVICE_OID,
            "tid": self.tenant_id,
            "uti": "ZyXwVuTsRqPoNmLkJiHgFe",
            "ver": "2.0",
            "roles": [CLIENT_ROLE],
        }
        return with_overrides(self._as_v1(claims) if v1 else claims, overrides)

    def mint(self, *, payload: Any, header: Any = None, key: rsa.RSAPrivateKey | None = None) -> str:
        """Sign `payload` (and `header`, default `self.header()`) RS256 with `key` or the key its kid names."""
        header = self.header() if header is None else header
        if key is None:
            kid = header.get("kid") if isinstance(header, dict) else None
            key = self._published.get(kid) if isinstance(kid, str) else None
            key = key or self.private_key()
        return compact(header, payload, rs256(key))

    def mint_user_token(self, *, v1: bool = False, **claim_overrides: Any) -> str:
        return self.mint(payload=self.user_claims(v1=v1, **claim_overrides))

    def mint_app_token(self, *, v1: bool = False, **claim_overrides: Any) -> str:
        return self.mint(payload=self.app_claims(v1=v1, **claim_overrides))

    def _as_v1(self, claims: dict[str, Any]) -> dict[str, Any]:
        renamed = {"azp": "appid", "azpacr": "appidacr", "preferred_username": "upn"}
        v1 = {renamed.get(name, name): value for name, value in claims.items()}
        v1.update(aud=f"api://{self.audience}", iss=self.issuer_v1, ver="1.0")
        return v1

    # -- serving --

    def handle(self, request: FakeRequest) -> FakeResponse:
        """The single router behind both the MockTransport and the TLS server."""
        with self._lock:
            self.calls.append((request.method, request.path))
            route = self._routes.get((request.method, request.path))
            if route is None:
                return FakeResponse.json(404, {"error": "not_found"})
            group, handler = route
            pending = self._failures.get(group)
            if pending:
                return pending.pop(0)
            override = self._overrides.get(group)
        return override if override is not None else handler(request)

    def transport(self, *, latency: float = 0.0) -> httpx.MockTransport:
        """Serve `handle` to httpx without a socket; `latency` makes every answer yield to the event loop."""
        if not latency:
            return httpx.MockTransport(self._serve_httpx)

        async def slow(request: httpx.Request) -> httpx.Response:
            await asyncio.sleep(latency)
            return self._serve_httpx(request)

        return httpx.MockTransport(slow)

    def client(self, *, latency: float = 0.0) -> httpx.AsyncClient:
        """An async client on the MockTransport, configured like the product's (no redirects)."""
        return httpx.AsyncClient(transport=self.transport(latency=latency), follow_redirects=False)

    def _serve_httpx(self, request: httpx.Request) -> httpx.Response:
        response = self.handle(
            FakeRequest(
                method=request.method,
                path=request.url.path,
                query=dict(urllib.parse.parse_qsl(request.url.query.decode())),
                headers={name.lower(): value for name, value in request.headers.items()},
                body=request.read(),
            )
        )
        return httpx.Response(response.status, headers=response.headers, content=response.body)

    def _discovery_v2(self) -> FakeResponse:
        base = f"{self.authority}/{self.tenant_id}"
        return FakeResponse.json(
            200,
            {
                "issuer": self.issuer_v2,
                "authorization_endpoint": f"{base}/oauth2/v2.0/authorize",
                "token_endpoint": f"{base}/oauth2/v2.0/token",
                "jwks_uri": f"{base}/discovery/v2.0/keys",
                "id_token_signing_alg_values_supported": ["RS256"],
                "response_types_supported": ["code", "id_token", "code id_token", "id_token token"],
                "subject_types_supported": ["pairwise"],
                "tenant_region_scope": None,
            },
        )

    def _discovery_v1(self) -> FakeResponse:
        base = f"{self.authority}/{self.tenant_id}"
        return FakeResponse.json(
            200,
            {
                "issuer": self.issuer_v1,
                "authorization_endpoint": f"{base}/oauth2/authorize",
                "token_endpoint": f"{base}/oauth2/token",
                "jwks_uri": f"{base}/discovery/keys",
                "id_token_signing_alg_values_supported": ["RS256"],
                "response_types_supported": ["code", "id_token", "code id_token", "token id_token", "token"],
                "subject_types_supported": ["pairwise"],
            },
        )

    def _jwks(self, *, with_issuer: bool) -> FakeResponse:
        # Like Entra: v2 keys name their (templated) issuer, v1 keys carry none.
        extra = {"issuer": f"{self.authority}/{{tenantid}}/v2.0"} if with_issuer else {}
        with self._lock:
            keys = [public_jwk(key, x5t=kid_of(key), **extra) for key in self._published.values()]
        return FakeResponse.json(200, {"keys": keys})

    def _token(self, request: FakeRequest) -> FakeResponse:
        form = dict(urllib.parse.parse_qsl(request.body.decode(), keep_blank_values=True))
        if form.get("grant_type") != "client_credentials":
            return _oauth_error(400, "unsupported_grant_type", "the fake implements client_credentials only")
        client = self.clients.get(form.get("client_id", ""))
        if client is None or not self._authenticated(client, form):
            return _oauth_error(401, "invalid_client", "AADSTS7000215: Invalid client secret provided.")
        scope = form.get("scope", "")
        if not scope.endswith("/.default") or " " in scope:
            return _oauth_error(400, "invalid_scope", "AADSTS1002012: scope must be <resource>/.default")
        audience = self.resources.get(scope.removesuffix("/.default"))
        if audience is None:
            return _oauth_error(400, "invalid_resource", "AADSTS500011: resource principal not found")
        token = self.mint(
            payload=self.app_claims(
                aud=audience,
                azp=client.client_id,
                oid=client.object_id,
                sub=client.object_id,
                roles=list(client.roles) if client.roles else REMOVE,
            )
        )
        return FakeResponse.json(
            200, {"token_type": "Bearer", "expires_in": 3599, "ext_expires_in": 3599, "access_token": token}
        )

    def _authenticated(self, client: FakeClient, form: dict[str, str]) -> bool:
        if "client_secret" in form:
            return client.secret is not None and hmac.compare_digest(
                form["client_secret"].encode(), client.secret.encode()
            )
        if form.get("client_assertion_type") != CLIENT_ASSERTION_TYPE or client.certificate_key is None:
            return False
        try:
            claims = jwt.decode(
                form.get("client_assertion", ""),
                client.certificate_key,
                algorithms=["PS256", "RS256"],
                audience=self.token_endpoint,
                issuer=client.client_id,
                # Times are judged on the fake's clock, which need not be the wall clock.
                options={"require": ["exp", "aud", "iss", "sub"], "verify_exp": False, "verify_iat": False},
            )
        except jwt.PyJWTError:
            return False
        # A client assertion's exp may be fractional (RFC 7519 NumericDate; MSAL sends time.time() + 600).
        exp = claims["exp"]
        fresh = isinstance(exp, int | float) and not isinstance(exp, bool) and exp > self.clock.now()
        return claims["sub"] == client.client_id and fresh


def _oauth_error(status: int, error: str, description: str) -> FakeResponse:
    return FakeResponse.json(status, {"error": error, "error_description": description})


# ---- the same fake over real TLS ---------------------------------------------------------------------


class _TlsServer(ThreadingHTTPServer):
    daemon_threads = True
    entra: FakeEntra


class _RequestHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _TlsServer

    def do_GET(self) -> None:
        self._serve()

    def do_POST(self) -> None:
        self._serve()

    def _serve(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        parts = urllib.parse.urlsplit(self.path)
        response = self.server.entra.handle(
            FakeRequest(
                method=self.command,
                path=parts.path,
                query=dict(urllib.parse.parse_qsl(parts.query)),
                headers={name.lower(): value for name, value in self.headers.items()},
                body=self.rfile.read(length) if length else b"",
            )
        )
        self.send_response(response.status)
        for name, value in response.headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(response.body)))
        self.end_headers()
        self.wfile.write(response.body)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the stdlib's signature
        """Keep test output quiet."""


class FakeEntraServer:
    """`FakeEntra` over HTTPS on 127.0.0.1:<random port>; `ca_path` is the PEM clients must trust."""

    def __init__(self, directory: Path, *, tenant_id: str = TENANT_ID, clock: Clock | None = None) -> None:
        self.ca_path = directory / "fake-entra-ca.pem"
        self._certificate_path = directory / "fake-entra-server.pem"
        self._key_path = directory / "fake-entra-key.pem"
        self._tenant_id = tenant_id
        self._clock = clock
        self._server: _TlsServer | None = None
        self._thread: threading.Thread | None = None
        self.authority = ""
        self.entra: FakeEntra

    def __enter__(self) -> Self:
        tls = issue_loopback_tls(
            rsa_key("fake-entra-ca"), rsa_key("fake-entra-tls"), days=7, name="fake Entra"
        )
        self.ca_path.write_bytes(tls.ca_pem)
        self._certificate_path.write_bytes(tls.server_certificate_pem)
        self._key_path.write_bytes(tls.server_key_pem)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(self._certificate_path, self._key_path)
        server = _TlsServer(("127.0.0.1", 0), _RequestHandler)
        server.socket = context.wrap_socket(server.socket, server_side=True)
        self.authority = f"https://127.0.0.1:{server.server_address[1]}"
        self.entra = FakeEntra(self._tenant_id, self.authority, clock=self._clock)
        server.entra = self.entra
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, name="fake-entra-tls", daemon=True
        )
        self._thread.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
