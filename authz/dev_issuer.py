"""The embedded development issuer: a real OIDC/JWKS endpoint and token endpoint over HTTPS on loopback.

`lkps dev` points the gateway at it exactly as production points at Entra (discovery, JWKS, issuer and
audience checks all run unchanged), and MSAL can use it with `instance_discovery=False` (client
credentials) or, in a browser, with the authority in `knownAuthorities` (sign-in: `authz.dev_login`). MSAL
only talks to https authorities, so the issuer has its own CA; clients trust `ca.pem` from the state
directory.
Key material persists there so tokens and trust survive restarts. It binds to 127.0.0.1 only.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import ssl
import threading
import time
import uuid
from dataclasses import asdict
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from authz.dev_login import BrowserLogin, LoginRefused, SignIn, loopback_url

# The state directory's files are the client's documented contract; the server writes what it reads.
from lkps.dev_state import (
    AGENT_NAME,
    AGENT_NAME_RULE,
    CA_FILE,
    DEMO_AGENT,
    DEMO_AGENT_NAME,
    DEMO_BACKEND,
    DEMO_OPERATOR,
    IDENTITY_FILE,
    DevClient,
    DevIdentity,
    DevStateError,
    identity_from_json,
)

__all__ = ["DEMO_AGENT", "DEMO_BACKEND", "DEMO_OPERATOR", "DevClient", "DevIdentity", "DevIssuer", "DevState"]

_DEV_NAMESPACE = uuid.UUID("6b1d3a52-5a43-4b5e-9f0a-6c6b7073a1d1")  # stable ids across restarts
TOKEN_LIFETIME_SECONDS = 3600


class DevState:
    """Key material and identities under one directory, created on first use."""

    def __init__(self, directory: Path) -> None:
        self.dir = directory
        self.dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.ca_path = self.dir / CA_FILE
        self._identity_path = self.dir / IDENTITY_FILE
        self.identity = self._identity()
        self.signing_key = self._rsa_key("signing-key.pem")
        self.kid = _kid(self.signing_key.public_key())
        self._ensure_tls()

    @property
    def server_cert_path(self) -> Path:
        return self.dir / "server.pem"

    @property
    def server_key_path(self) -> Path:
        return self.dir / "server-key.pem"

    def _identity(self) -> DevIdentity:
        if self._identity_path.exists():
            identity = self._read_identity()
            if any(c.description == DEMO_OPERATOR for c in identity.clients.values()):
                return identity
            # A state directory from before the admin API came to dev mode: add its operator once.
            _add_operator(identity)
        else:
            identity = _new_identity()
        self._write_identity(identity)
        return identity

    def _read_identity(self) -> DevIdentity:
        return identity_from_json(json.loads(self._identity_path.read_text()))

    def _write_identity(self, identity: DevIdentity) -> None:
        # Whole or not at all: a running issuer and the clients read this file while an agent is added.
        temporary = self._identity_path.with_name(f".{IDENTITY_FILE}.{os.getpid()}")
        temporary.write_text(json.dumps(asdict(identity), indent=2))
        temporary.chmod(0o600)
        temporary.replace(self._identity_path)

    def reload(self) -> None:
        """Take in the applications another process (`lkps dev agent add`) has added since."""
        self.identity = self._read_identity()

    def client(self, description: str) -> DevClient:
        return self.identity.client(description)

    def add_agent(self, name: str) -> DevClient:
        """The agent application named `name`, added if new; its app id depends on the name alone, so adding
        it again (or in another state directory) gives the same id. `demo` is the demo agent."""
        if not AGENT_NAME.match(name):
            raise DevStateError(f"agent name {name!r}: use {AGENT_NAME_RULE}")
        self.reload()
        existing = self.identity.agents().get(name)
        if existing is not None:
            return existing
        agent_id = str(uuid.uuid5(_DEV_NAMESPACE, f"agent:{name}"))
        agent = DevClient(agent_id, _secret(), [self.identity.agent_role], f"dev agent {name}", agent=name)
        self.identity.clients[agent_id] = agent
        self._write_identity(self.identity)
        return agent

    def _rsa_key(self, name: str) -> rsa.RSAPrivateKey:
        path = self.dir / name
        if path.exists():
            key = serialization.load_pem_private_key(path.read_bytes(), password=None)
            assert isinstance(key, rsa.RSAPrivateKey)
            return key
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        path.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
        )
        path.chmod(0o600)
        return key

    def _ensure_tls(self) -> None:
        if self.ca_path.exists() and self.server_cert_path.exists() and self.server_key_path.exists():
            return
        # Certificates are made once per state directory: `lkps dev token` never loads cryptography.x509.
        from authz.loopback_tls import issue_loopback_tls  # noqa: PLC0415

        ca_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        tls = issue_loopback_tls(ca_key, self._rsa_key("server-key.pem"), days=825, name="lkps dev")
        self.server_cert_path.write_bytes(tls.server_certificate_pem)
        self.ca_path.write_bytes(tls.ca_pem)

    # --- tokens -------------------------------------------------------------------------------------

    def issuer(self, authority: str) -> str:
        return f"{authority}/{self.identity.tenant_id}/v2.0"

    def _sign(self, claims: dict[str, Any]) -> str:
        # RS256 by hand rather than PyJWT, whose import (cryptography.x509) was most of `lkps dev token`'s time.
        header = {"alg": "RS256", "kid": self.kid, "typ": "JWT"}
        signing_input = f"{_b64_json(header)}.{_b64_json(claims)}".encode()
        signature = self.signing_key.sign(signing_input, padding.PKCS1v15(), hashes.SHA256())
        return f"{signing_input.decode()}.{_b64(signature)}"

    def _base_claims(self, authority: str, lifetime: int) -> dict[str, Any]:
        now = int(time.time())
        return {
            "aud": self.identity.api_app_id,
            "iss": self.issuer(authority),
            "iat": now,
            "nbf": now,
            "exp": now + lifetime,
            "tid": self.identity.tenant_id,
            "ver": "2.0",
            "uti": base64.urlsafe_b64encode(os.urandom(16)).decode().rstrip("="),
        }

    def app_token(self, authority: str, client: DevClient, lifetime: int = TOKEN_LIFETIME_SECONDS) -> str:
        """What Entra issues to a confidential client (client credentials flow): idtyp=app, roles, no scp."""
        principal = str(uuid.uuid5(_DEV_NAMESPACE, f"sp:{client.client_id}"))
        claims = self._base_claims(authority, lifetime) | {
            "azp": client.client_id,
            "azpacr": "1",
            "idtyp": "app",
            "oid": principal,
            "sub": principal,
            "roles": client.roles,
        }
        return self._sign(claims)

    def user_object_id(self, user: str) -> str:
        return str(uuid.uuid5(_DEV_NAMESPACE, f"user:{user}"))

    def _user_claims(self, user: str) -> dict[str, Any]:
        """The signed-in user's ids and names, shared by their access and id tokens."""
        oid = self.user_object_id(user)
        return {
            "oid": oid,
            "sub": base64.urlsafe_b64encode(hashlib.sha256(oid.encode()).digest()[:24]).decode(),
            "name": user.title(),
            "preferred_username": f"{user}@dev.lkps.invalid",
        }

    def user_token(self, authority: str, user: str, lifetime: int = TOKEN_LIFETIME_SECONDS) -> str:
        """What Entra issues to the SPA for a signed-in user (delegated): idtyp=user, scp, the user's ids."""
        claims = self._base_claims(authority, lifetime) | self._user_claims(user)
        claims |= {
            "azp": self.identity.spa_client_id,
            "azpacr": "0",
            "idtyp": "user",
            "scp": self.identity.user_scope,
            "cwid": user.upper(),
        }
        return self._sign(claims)

    def browser_token_response(self, authority: str, sign_in: SignIn) -> dict[str, Any]:
        """Entra's answer to the SPA's code redemption: lkps access token, id token and `client_info`."""
        id_claims = self._base_claims(authority, TOKEN_LIFETIME_SECONDS) | self._user_claims(sign_in.user)
        id_claims["aud"] = self.identity.spa_client_id
        if sign_in.nonce is not None:
            id_claims["nonce"] = sign_in.nonce  # MSAL refuses an id token without the nonce it sent
        client_info = {"uid": self.user_object_id(sign_in.user), "utid": self.identity.tenant_id}
        return {
            "token_type": "Bearer",
            "scope": self.identity.delegated_scope,
            "expires_in": TOKEN_LIFETIME_SECONDS - 1,
            "ext_expires_in": TOKEN_LIFETIME_SECONDS - 1,
            "access_token": self.user_token(authority, sign_in.user),
            "id_token": self._sign(id_claims),
            # MSAL builds the account's home id (`<uid>.<utid>`) from this.
            "client_info": base64.urlsafe_b64encode(json.dumps(client_info).encode()).decode().rstrip("="),
        }

    def discovery(self, authority: str) -> dict[str, Any]:
        base = f"{authority}/{self.identity.tenant_id}"
        return {
            "issuer": self.issuer(authority),
            "authorization_endpoint": f"{base}/oauth2/v2.0/authorize",
            "token_endpoint": f"{base}/oauth2/v2.0/token",
            "end_session_endpoint": f"{base}/oauth2/v2.0/logout",
            "jwks_uri": f"{base}/discovery/v2.0/keys",
            "response_types_supported": ["code"],
            "response_modes_supported": ["query", "fragment"],
            "code_challenge_methods_supported": ["S256"],
            "scopes_supported": ["openid", "profile", "offline_access"],
            "subject_types_supported": ["pairwise"],
            "id_token_signing_alg_values_supported": ["RS256"],
            "token_endpoint_auth_methods_supported": ["client_secret_post", "none"],
            "grant_types_supported": ["client_credentials", "authorization_code"],
            "tenant_region_scope": "dev",
        }

    def jwks(self, authority: str) -> dict[str, Any]:
        numbers = self.signing_key.public_key().public_numbers()
        jwk = {"kty": "RSA", "n": _b64_uint(numbers.n), "e": _b64_uint(numbers.e)}
        authority_template = "{tenantid}"
        return {
            "keys": [
                jwk
                | {
                    "kid": self.kid,
                    "use": "sig",
                    # Entra templates the issuer per key; validators substitute the token's tenant.
                    "issuer": f"{authority}/{authority_template}/v2.0",
                }
            ]
        }

    def token_response(self, authority: str, form: dict[str, str]) -> tuple[int, dict[str, Any]]:
        """The OAuth2 client credentials grant (with a client secret), with Entra's error shapes."""
        if form.get("grant_type") != "client_credentials":
            return 400, _oauth_error(
                "unsupported_grant_type", "Only client_credentials and authorization_code are supported here."
            )
        client_id = form.get("client_id", "")
        if client_id not in self.identity.clients:
            self.reload()  # an agent added while `lkps dev` runs is known at once
        client = self.identity.clients.get(client_id)
        secret = form.get("client_secret", "")
        if client is None or not hmac.compare_digest(secret.encode(), client.secret.encode()):
            return 401, _oauth_error("invalid_client", "Unknown client or wrong client secret.")
        scope = form.get("scope", "")
        resource = scope.removesuffix("/.default")
        if not scope.endswith("/.default") or resource not in self.identity.audiences:
            return 400, _oauth_error(
                "invalid_scope", f"Request '{self.identity.api_uri}/.default' (client credentials)."
            )
        return 200, {
            "token_type": "Bearer",
            "expires_in": TOKEN_LIFETIME_SECONDS - 1,
            "ext_expires_in": TOKEN_LIFETIME_SECONDS - 1,
            "access_token": self.app_token(authority, client),
        }


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _b64_json(value: dict[str, Any]) -> str:
    return _b64(json.dumps(value, separators=(",", ":")).encode())


def _b64_uint(value: int) -> str:
    """A JWK integer: big-endian bytes without leading zeros (RFC 7518 section 6.3.1)."""
    return _b64(value.to_bytes((value.bit_length() + 7) // 8, "big"))


def _oauth_error(code: str, description: str) -> dict[str, Any]:
    return {"error": code, "error_description": description, "error_codes": [], "timestamp": ""}


def _new_identity() -> DevIdentity:
    agent_id = str(uuid.uuid5(_DEV_NAMESPACE, "demo-agent"))
    client_id = str(uuid.uuid5(_DEV_NAMESPACE, "demo-backend"))
    identity = DevIdentity(
        tenant_id=str(uuid.uuid5(_DEV_NAMESPACE, "tenant")),
        api_app_id=str(uuid.uuid5(_DEV_NAMESPACE, "lkps-api")),
        api_uri="api://lkps-dev",
        spa_client_id=str(uuid.uuid5(_DEV_NAMESPACE, "demo-spa")),
        user_scope="access_as_user",
        client_role="Session.Start",
        agent_role="Agent.Register",
        livekit_api_key="lkps-dev",
        livekit_api_secret=base64.urlsafe_b64encode(os.urandom(33)).decode(),
        clients={
            client_id: DevClient(client_id, _secret(), ["Session.Start"], DEMO_BACKEND),
            agent_id: DevClient(agent_id, _secret(), ["Agent.Register"], DEMO_AGENT, agent=DEMO_AGENT_NAME),
        },
    )
    _add_operator(identity)
    return identity


def _add_operator(identity: DevIdentity) -> None:
    operator_id = str(uuid.uuid5(_DEV_NAMESPACE, "demo-operator"))
    identity.clients[operator_id] = DevClient(operator_id, _secret(), [identity.admin_role], DEMO_OPERATOR)


def _secret() -> str:
    return base64.urlsafe_b64encode(os.urandom(24)).decode().rstrip("=")


def _kid(public_key: rsa.RSAPublicKey) -> str:
    der = public_key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return base64.urlsafe_b64encode(hashlib.sha256(der).digest()).decode().rstrip("=")[:27]


class DevIssuer:
    """Serves a `DevState` over HTTPS on 127.0.0.1 from a daemon thread."""

    def __init__(self, state: DevState, port: int = 0) -> None:
        self.state = state
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(state.server_cert_path, state.server_key_path)
        self._server = ThreadingHTTPServer(("127.0.0.1", port), _handler_for(self))
        self._server.socket = context.wrap_socket(self._server.socket, server_side=True)
        self._server.daemon_threads = True
        self.authority = f"https://127.0.0.1:{self._server.server_address[1]}"
        self.login = BrowserLogin(state.identity.spa_client_id, state.identity.delegated_scope)
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="lkps-dev-issuer", daemon=True
        )

    def start(self) -> DevIssuer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


class _Handler(BaseHTTPRequestHandler):
    """The issuer's HTTP surface; `_handler_for` binds it to one running `DevIssuer`."""

    server_version = "lkps-dev-issuer"
    issuer: DevIssuer

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002, ARG002 - stdlib signature
        return  # requests carry client secrets in bodies; nothing is logged

    def _send(self, status: int, body: dict[str, Any]) -> None:
        payload = json.dumps(body).encode()
        self.send_response(status)
        self._allow_origin()
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("Pragma", "no-cache")
        self.end_headers()
        self.wfile.write(payload)

    def _redirect(self, location: str) -> None:
        self.send_response(302)
        self.send_header("Location", location)
        self.send_header("Content-Length", "0")
        self.send_header("Cache-Control", "no-store")
        self.end_headers()

    def _allow_origin(self) -> None:
        """MSAL Browser reads discovery and redeems codes with fetch() from the SPA's loopback origin."""
        origin = self.headers.get("Origin")
        if origin and loopback_url(origin):
            self.send_header("Access-Control-Allow-Origin", origin)
            self.send_header("Vary", "Origin")

    def do_OPTIONS(self) -> None:
        # MSAL Browser's token request carries telemetry headers, so the browser asks first.
        self.send_response(204)
        self._allow_origin()
        self.send_header("Access-Control-Allow-Methods", "GET, POST")
        if requested := self.headers.get("Access-Control-Request-Headers"):
            self.send_header("Access-Control-Allow-Headers", requested)
        self.send_header("Access-Control-Max-Age", "600")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def do_GET(self) -> None:
        state, authority = self.issuer.state, self.issuer.authority
        tenant = state.identity.tenant_id
        path, _, raw_query = self.path.partition("?")
        query = {key: values[0] for key, values in parse_qs(raw_query).items()}
        if path == f"/{tenant}/v2.0/.well-known/openid-configuration":
            self._send(200, state.discovery(authority))
        elif path == f"/{tenant}/discovery/v2.0/keys":
            self._send(200, state.jwks(authority))
        elif path == f"/{tenant}/oauth2/v2.0/authorize":
            try:
                self._redirect(self.issuer.login.authorize(query))
            except LoginRefused as exc:
                self._send(exc.status, _oauth_error(exc.error, exc.description))
        elif path == f"/{tenant}/oauth2/v2.0/logout":
            # Nothing to forget: the dev issuer keeps no sign-in session.
            target = query.get("post_logout_redirect_uri", "")
            if loopback_url(target):
                self._redirect(target)
            else:
                self._send(200, {"signed_out": True})
        else:
            self._send(404, {"error": "not_found"})

    def do_POST(self) -> None:
        state, authority = self.issuer.state, self.issuer.authority
        if self.path.split("?", 1)[0] != f"/{state.identity.tenant_id}/oauth2/v2.0/token":
            self._send(404, {"error": "not_found"})
            return
        length = int(self.headers.get("Content-Length") or 0)
        if length > 64 * 1024:
            self._send(413, _oauth_error("invalid_request", "Body too large."))
            return
        raw = self.rfile.read(length).decode("utf-8", "replace")
        form = {key: values[0] for key, values in parse_qs(raw).items()}
        if form.get("grant_type") != "authorization_code":
            self._send(*state.token_response(authority, form))
            return
        try:
            sign_in = self.issuer.login.redeem(form)
        except LoginRefused as exc:
            self._send(exc.status, _oauth_error(exc.error, exc.description))
            return
        self._send(200, state.browser_token_response(authority, sign_in))


def _handler_for(issuer: DevIssuer) -> type[BaseHTTPRequestHandler]:
    return type("Handler", (_Handler,), {"issuer": issuer})
