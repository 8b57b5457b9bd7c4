"""Dev mode: the embedded issuer is a real OIDC/JWKS endpoint MSAL can use, and `lkps dev` works as printed."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import subprocess
import sys
import urllib.parse
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path

import jwt
import msal
import pytest
import requests

from authz.clock import SystemClock
from authz.dev_issuer import DEMO_AGENT, DEMO_OPERATOR, DevIssuer, DevState
from authz.dev_login import CODE_LIFETIME_SECONDS, BrowserLogin, LoginRefused
from authz.entra import build_validator
from authz.jwks import build_http_client
from config import Settings
from gateway.dev import DEMO_BACKEND, dev_environment, instructions
from lkps.dev_state import DevStateError, read_identity
from tests.support.dev_service import (
    clean_environment,
    free_port,
    free_port_run,
    wait_for,
    wait_for_demo_agent,
)
from tests.support.livekit_server import require_livekit


@pytest.fixture
def issuer(tmp_path: Path) -> Iterator[DevIssuer]:
    running = DevIssuer(DevState(tmp_path / "state")).start()
    yield running
    running.stop()


def _msal_app(issuer: DevIssuer, client_id: str, secret: str) -> msal.ConfidentialClientApplication:
    session = requests.Session()
    session.trust_env = False  # REQUESTS_CA_BUNDLE in the environment must not override the dev CA
    session.verify = str(issuer.state.ca_path)
    return msal.ConfidentialClientApplication(
        client_id,
        client_credential=secret,
        authority=f"{issuer.authority}/{issuer.state.identity.tenant_id}",
        instance_discovery=False,
        http_client=session,
    )


class TestEmbeddedIssuer:
    @pytest.mark.anyio
    async def test_msal_token_validates_through_discovery_and_jwks(
        self, issuer: DevIssuer, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """MSAL gets a client-credentials token from the dev issuer, and lkps validates it as production would."""
        monkeypatch.delenv("MSAL_FORCE_REGION", raising=False)
        backend = issuer.state.client(DEMO_BACKEND)
        app = _msal_app(issuer, backend.client_id, backend.secret)
        result = app.acquire_token_for_client(scopes=[f"{issuer.state.identity.api_uri}/.default"])
        assert "access_token" in result, result
        assert (
            app.acquire_token_for_client(scopes=[f"{issuer.state.identity.api_uri}/.default"])["token_source"]
            == "cache"
        )

        settings = Settings.from_env(dev_environment(issuer.state, issuer.authority))
        http = build_http_client(settings)
        validator = build_validator(settings, http, SystemClock())
        try:
            await validator.start()
            caller = await validator.validate(result["access_token"])
        finally:
            await validator.aclose()
            await http.aclose()
        assert caller.client_app_id == backend.client_id
        assert caller.roles == frozenset(backend.roles)
        assert caller.kind.value == "app"

    def test_wrong_secret_is_refused_like_entra(self, issuer: DevIssuer) -> None:
        """A wrong client secret gets Entra's `invalid_client` error, which MSAL returns as an error dict."""
        backend = issuer.state.client(DEMO_BACKEND)
        result = _msal_app(issuer, backend.client_id, "wrong").acquire_token_for_client(
            scopes=[f"{issuer.state.identity.api_uri}/.default"]
        )
        assert result.get("error") == "invalid_client"

    def test_scope_must_be_lkps_default(self, issuer: DevIssuer) -> None:
        """Requesting another resource, or a scope without /.default, is `invalid_scope`."""
        backend = issuer.state.client(DEMO_BACKEND)
        result = _msal_app(issuer, backend.client_id, backend.secret).acquire_token_for_client(
            scopes=["api://someone-else/.default"]
        )
        assert result.get("error") == "invalid_scope"

    def test_state_survives_restarts(self, tmp_path: Path) -> None:
        """Keys, CA and identities are reused from the state directory, so earlier tokens stay valid."""
        first = DevState(tmp_path / "s")
        second = DevState(tmp_path / "s")
        assert first.kid == second.kid
        assert first.identity == second.identity
        assert (tmp_path / "s" / "signing-key.pem").stat().st_mode & 0o077 == 0

    def test_an_older_state_directory_gains_the_operator_and_keeps_the_rest(self, tmp_path: Path) -> None:
        """A state written before dev mode had an admin app gets the operator (with the admin role, saved
        once); its tenant, secrets and other apps stay as they were."""
        path = tmp_path / "s" / "identity.json"
        DevState(tmp_path / "s")
        raw = json.loads(path.read_text())
        del raw["admin_role"]
        raw["clients"] = {k: v for k, v in raw["clients"].items() if v["description"] != DEMO_OPERATOR}
        path.write_text(json.dumps(raw))

        upgraded = DevState(tmp_path / "s").identity
        operator = next(c for c in upgraded.clients.values() if c.description == DEMO_OPERATOR)
        assert operator.roles == [upgraded.admin_role] == ["Lkps.Admin"]
        kept = asdict(upgraded)
        assert kept.pop("admin_role") == "Lkps.Admin"
        assert kept["clients"] == raw["clients"] | {operator.client_id: asdict(operator)}
        assert kept == raw | {"clients": kept["clients"]}
        assert DevState(tmp_path / "s").identity == upgraded


class TestDevAgents:
    def test_an_agent_added_while_the_issuer_runs_gets_tokens_at_once(
        self, issuer: DevIssuer, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """`lkps dev agent add` in another process: the running issuer issues the new agent a token with the
        agent role at its first request, through MSAL like any agent."""
        monkeypatch.delenv("MSAL_FORCE_REGION", raising=False)
        added = DevState(issuer.state.dir).add_agent("weather")  # another process's view of the state
        result = _msal_app(issuer, added.client_id, added.secret).acquire_token_for_client(
            scopes=[f"{issuer.state.identity.api_uri}/.default"]
        )
        assert "access_token" in result, result
        claims = jwt.decode(result["access_token"], options={"verify_signature": False})
        assert (claims["azp"], claims["roles"]) == (added.client_id, [issuer.state.identity.agent_role])

    def test_adding_is_idempotent_and_the_id_depends_on_the_name_alone(self, tmp_path: Path) -> None:
        """The same name gives the same app id and secret, again or in another state; `demo` is the demo
        agent; the agents are listed by name."""
        state = DevState(tmp_path / "a")
        first = state.add_agent("weather")
        assert DevState(tmp_path / "a").add_agent("weather") == first
        assert DevState(tmp_path / "b").add_agent("weather").client_id == first.client_id
        demo = state.client(DEMO_AGENT)
        assert state.add_agent("demo") == demo
        assert read_identity(tmp_path / "a").agents() == {"demo": demo, "weather": first}

    @pytest.mark.parametrize("name", ["", "Weather", "weather_bot", "-weather", "weather-", "a" * 64, "wé"])
    def test_a_name_that_is_not_plain_is_refused_saying_what_a_name_holds(
        self, tmp_path: Path, name: str
    ) -> None:
        """Names are lowercase letters, digits and inner dashes, up to 63: anything else is refused, unchanged."""
        state = DevState(tmp_path / "s")
        before = (tmp_path / "s" / "identity.json").read_text()
        with pytest.raises(DevStateError, match="lowercase letters, digits and inner dashes"):
            state.add_agent(name)
        assert (tmp_path / "s" / "identity.json").read_text() == before


def _pkce() -> tuple[str, str]:
    verifier = base64.urlsafe_b64encode(os.urandom(32)).decode().rstrip("=")
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).decode().rstrip("=")
    return verifier, challenge


class TestBrowserSignIn:
    """The authorization code flow with PKCE that MSAL Browser runs against the embedded issuer."""

    REDIRECT = "http://127.0.0.1:5173/"

    @staticmethod
    def _session(issuer: DevIssuer) -> requests.Session:
        session = requests.Session()
        session.trust_env = False
        session.verify = str(issuer.state.ca_path)
        return session

    def _authorize(self, issuer: DevIssuer, challenge: str, **params: str) -> requests.Response:
        identity = issuer.state.identity
        query = {
            "client_id": identity.spa_client_id,
            "redirect_uri": self.REDIRECT,
            "response_type": "code",
            "response_mode": "fragment",
            "scope": f"{identity.delegated_scope} openid profile offline_access",
            "code_challenge": challenge,
            "code_challenge_method": "S256",
            "state": "s-1",
            "nonce": "n-1",
            **params,
        }
        return self._session(issuer).get(
            f"{issuer.authority}/{identity.tenant_id}/oauth2/v2.0/authorize",
            params=query,
            allow_redirects=False,
        )

    def _redeem(self, issuer: DevIssuer, code: str, verifier: str, **fields: str) -> requests.Response:
        identity = issuer.state.identity
        form = {
            "grant_type": "authorization_code",
            "client_id": identity.spa_client_id,
            "redirect_uri": self.REDIRECT,
            "code": code,
            "code_verifier": verifier,
            **fields,
        }
        return self._session(issuer).post(
            f"{issuer.authority}/{identity.tenant_id}/oauth2/v2.0/token",
            data=form,
            headers={"Origin": "http://127.0.0.1:5173"},
        )

    def _code(self, issuer: DevIssuer, challenge: str, **params: str) -> str:
        response = self._authorize(issuer, challenge, **params)
        assert response.status_code == 302, response.text
        location = urllib.parse.urlsplit(response.headers["Location"])
        assert location._replace(fragment="").geturl() == self.REDIRECT
        answer = dict(urllib.parse.parse_qsl(location.fragment))
        assert answer["state"] == "s-1"
        return answer["code"]

    @pytest.mark.anyio
    async def test_code_with_pkce_gives_a_user_token_lkps_accepts(self, issuer: DevIssuer) -> None:
        """The redeemed code yields a delegated lkps token, an id token for the SPA and client_info."""
        verifier, challenge = _pkce()
        response = self._redeem(issuer, self._code(issuer, challenge), verifier)
        assert response.status_code == 200, response.text
        assert response.headers["Access-Control-Allow-Origin"] == "http://127.0.0.1:5173"
        body = response.json()
        identity = issuer.state.identity
        assert body["token_type"] == "Bearer"
        assert body["scope"] == identity.delegated_scope
        id_claims = jwt.decode(body["id_token"], options={"verify_signature": False})
        assert id_claims["aud"] == identity.spa_client_id
        assert id_claims["nonce"] == "n-1"
        assert id_claims["iss"] == issuer.state.issuer(issuer.authority)
        client_info = json.loads(base64.urlsafe_b64decode(body["client_info"] + "=="))
        assert client_info == {"uid": id_claims["oid"], "utid": identity.tenant_id}

        settings = Settings.from_env(dev_environment(issuer.state, issuer.authority))
        http = build_http_client(settings)
        validator = build_validator(settings, http, SystemClock())
        try:
            await validator.start()
            caller = await validator.validate(body["access_token"])
        finally:
            await validator.aclose()
            await http.aclose()
        assert caller.kind.value == "user"
        assert caller.client_app_id == identity.spa_client_id
        assert caller.user_id == "ALICE"
        assert caller.object_id == id_claims["oid"]

    def test_login_hint_picks_the_demo_user(self, issuer: DevIssuer) -> None:
        """`login_hint=bob@...` signs in bob instead of alice."""
        verifier, challenge = _pkce()
        body = self._redeem(
            issuer, self._code(issuer, challenge, login_hint="bob@dev.lkps.invalid"), verifier
        )
        claims = jwt.decode(body.json()["access_token"], options={"verify_signature": False})
        assert claims["cwid"] == "BOB"

    def test_codes_are_single_use_and_need_the_verifier(self, issuer: DevIssuer) -> None:
        """A wrong verifier burns the code; a used code or another redirect_uri is `invalid_grant`."""
        verifier, challenge = _pkce()
        code = self._code(issuer, challenge)
        wrong = self._redeem(issuer, code, _pkce()[0])
        assert (wrong.status_code, wrong.json()["error"]) == (400, "invalid_grant")
        assert self._redeem(issuer, code, verifier).json()["error"] == "invalid_grant"
        other = self._redeem(
            issuer, self._code(issuer, challenge), verifier, redirect_uri="http://127.0.0.1:9/"
        )
        assert other.json()["error"] == "invalid_grant"
        used_code = self._code(issuer, challenge)
        assert self._redeem(issuer, used_code, verifier).status_code == 200
        assert self._redeem(issuer, used_code, verifier).json()["error"] == "invalid_grant"

    def test_codes_expire_after_a_minute(self) -> None:
        """A code redeemed after CODE_LIFETIME_SECONDS is refused even with the right verifier."""
        now = [1000.0]
        login = BrowserLogin("spa", "api://lkps-dev/access_as_user", clock=lambda: now[0])
        verifier, challenge = _pkce()
        query = {
            "client_id": "spa",
            "redirect_uri": self.REDIRECT,
            "response_type": "code",
            "scope": "api://lkps-dev/access_as_user",
            "code_challenge": challenge,
            "code_challenge_method": "S256",
        }
        code = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(login.authorize(query)).query))["code"]
        now[0] += CODE_LIFETIME_SECONDS + 1
        form = {"client_id": "spa", "redirect_uri": self.REDIRECT, "code": code, "code_verifier": verifier}
        with pytest.raises(LoginRefused) as refused:
            login.redeem(form)
        assert refused.value.error == "invalid_grant"

    @pytest.mark.parametrize(
        ("params", "error"),
        [
            ({"client_id": "3f0c8c43-0000-4000-8000-000000000000"}, "unauthorized_client"),
            ({"redirect_uri": "https://evil.example/cb"}, "invalid_request"),
            ({"code_challenge_method": "plain"}, "invalid_request"),
            ({"response_type": "token"}, "unsupported_response_type"),
            ({"scope": "openid profile"}, "invalid_scope"),
            ({"login_hint": "<script>"}, "invalid_request"),
        ],
    )
    def test_bad_authorize_requests_are_not_sent_back(
        self, issuer: DevIssuer, params: dict[str, str], error: str
    ) -> None:
        """Another client, a non-loopback redirect, no S256 PKCE or no lkps scope get a 400, no redirect."""
        response = self._authorize(issuer, _pkce()[1], **params)
        assert response.status_code == 400
        assert response.json()["error"] == error

    def test_token_responses_are_not_cached(self, issuer: DevIssuer) -> None:
        """The issuer's token endpoint answers with no-store and no-cache, as RFC 6749 §5.1 asks."""
        backend = issuer.state.client(DEMO_BACKEND)
        url = f"{issuer.authority}/{issuer.state.identity.tenant_id}/oauth2/v2.0/token"
        form = {
            "grant_type": "client_credentials",
            "client_id": backend.client_id,
            "client_secret": backend.secret,
            "scope": f"{issuer.state.identity.api_uri}/.default",
        }
        response = self._session(issuer).post(url, data=form)
        assert response.status_code == 200, response.text
        assert "access_token" in response.json()
        assert response.headers["Cache-Control"] == "no-store"
        assert response.headers["Pragma"] == "no-cache"

    def test_token_endpoint_answers_cors_for_loopback_origins_only(self, issuer: DevIssuer) -> None:
        """MSAL Browser's preflight from a loopback SPA is allowed; another site gets no allow-origin."""
        url = f"{issuer.authority}/{issuer.state.identity.tenant_id}/oauth2/v2.0/token"
        headers = {"Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "x-client-sku"}
        local = self._session(issuer).options(url, headers={"Origin": "http://localhost:5173", **headers})
        assert local.status_code == 204
        assert local.headers["Access-Control-Allow-Origin"] == "http://localhost:5173"
        assert local.headers["Access-Control-Allow-Headers"] == "x-client-sku"
        remote = self._session(issuer).options(url, headers={"Origin": "https://evil.example", **headers})
        assert "Access-Control-Allow-Origin" not in remote.headers

    def test_discovery_advertises_the_code_flow_and_logout_returns_home(self, issuer: DevIssuer) -> None:
        """Discovery lists authorize, end-session and PKCE; logout redirects back to a loopback page."""
        discovery = issuer.state.discovery(issuer.authority)
        assert "authorization_code" in discovery["grant_types_supported"]
        assert discovery["code_challenge_methods_supported"] == ["S256"]
        response = self._session(issuer).get(
            discovery["end_session_endpoint"],
            params={"post_logout_redirect_uri": self.REDIRECT},
            allow_redirects=False,
        )
        assert (response.status_code, response.headers["Location"]) == (302, self.REDIRECT)


@pytest.mark.slow
def test_printed_commands_start_a_session(tmp_path: Path) -> None:
    """`lkps dev` prints commands that, pasted into a shell, start sessions, register the agent and list
    the sessions through the admin API."""
    binary = require_livekit()  # without LiveKit no demo agent connects, and sessions answer 404
    port, issuer_port, livekit_port = free_port(), free_port(), free_port_run(3)
    process = subprocess.Popen(
        [
            *(sys.executable, "-m", "gateway.cli", "dev", "--port", str(port)),
            *("--issuer-port", str(issuer_port), "--livekit-port", str(livekit_port)),
        ],
        cwd=tmp_path,
        env=clean_environment() | {"LKPS_LIVEKIT_SERVER_BIN": str(binary)},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        wait_for(f"http://127.0.0.1:{port}/api/health/ready", process)
        assert process.stdout is not None
        printed = ""
        while "# 5." not in printed or "-X DELETE" not in printed.rstrip().splitlines()[-1]:
            printed += process.stdout.readline()
        blocks = re.split(r"\n# \d\. [^\n]*\n", printed)[1:]
        assert len(blocks) == 5
        # What each token is for, and the way to an agent of one's own.
        assert "as a backend service (no signed-in user)" in printed
        assert "dev agent add NAME" in printed
        assert "agent run --dev --state-dir" in printed
        wait_for_demo_agent(tmp_path / ".lkps-dev" / "demo-agent.log", process)
        session = subprocess.run(
            ["bash", "-c", blocks[0]], capture_output=True, text=True, check=True, cwd=tmp_path
        )
        assert '"participant_token"' in session.stdout, session.stdout + session.stderr
        agent = re.search(r"Demo agent[^:]*: (\S+)", printed)[1]  # type: ignore[index]
        app_session = subprocess.run(
            [
                "bash",
                "-c",
                blocks[1] + f"\ncurl -s -X POST http://127.0.0.1:{port}/api/session/start"
                f' -H "Authorization: Bearer $TOKEN" -d \'{{"agent_entra_app_id": "{agent}"}}\'',
            ],
            capture_output=True,
            text=True,
            check=True,
            cwd=tmp_path,
        )
        assert '"participant_identity":"app-' in app_session.stdout, app_session.stdout + app_session.stderr
        register = subprocess.run(
            ["bash", "-c", blocks[2]], capture_output=True, text=True, check=True, cwd=tmp_path
        )
        assert '"worker_api_secret"' in register.stdout, register.stdout + register.stderr
        listing = subprocess.run(
            ["bash", "-c", blocks[3]], capture_output=True, text=True, check=True, cwd=tmp_path
        )
        listed = {session["room_name"] for session in json.loads(listing.stdout)["items"]}
        assert listed == {
            json.loads(session.stdout)["room_name"],
            json.loads(app_session.stdout)["room_name"],
        }
        ended = subprocess.run(
            ["bash", "-c", blocks[0] + blocks[4]], capture_output=True, text=True, check=True, cwd=tmp_path
        )
        answers = [json.loads(line) for line in ended.stdout.splitlines()]
        assert [answer.get("status") for answer in answers] == [None, "ended"], ended.stdout + ended.stderr
        assert answers[1]["room_name"] == answers[0]["room_name"]
    finally:
        process.terminate()
        process.wait(timeout=30)


def test_dev_allows_both_loopback_spellings_of_the_example(tmp_path: Path) -> None:
    """Without --cors-origin, lkps dev allows the browser example at 127.0.0.1 and at localhost; with it,
    exactly the origins given."""
    state = DevState(tmp_path / "state")
    default = dev_environment(state, "https://127.0.0.1:8001")["LKPS_CORS_ALLOWED_ORIGINS"]
    assert default.split(",") == ["http://127.0.0.1:5173", "http://localhost:5173"]
    chosen = dev_environment(state, "https://127.0.0.1:8001", ["http://127.0.0.1:3000"])
    assert chosen["LKPS_CORS_ALLOWED_ORIGINS"] == "http://127.0.0.1:3000"
    assert Settings.from_env(dev_environment(state, "https://127.0.0.1:8001")).cors_allowed_origins == (
        "http://127.0.0.1:5173",
        "http://localhost:5173",
    )


def test_without_the_demo_agent_the_printed_session_start_names_the_teams_agent(tmp_path: Path) -> None:
    """With --no-demo-agent, step 1 adds an agent of the team's and starts the session with it (the shell
    expands its app id in the body), rather than with the demo agent, which is not registered."""
    state = DevState(tmp_path / "state")
    printed = instructions(
        state,
        "https://127.0.0.1:8001",
        "http://127.0.0.1:8000",
        "demo-id",
        "lkps",
        livekit=None,
        demo_agent=False,
    )
    step = re.split(r"\n# \d\. [^\n]*\n", printed)[1]
    assert "AGENT=$(lkps dev agent add my-agent --state-dir" in step
    assert "demo-id" not in step
    body = subprocess.run(
        ["bash", "-c", "AGENT=the-id; printf %s " + step.split(" -d ", 1)[1].split(")", 1)[0]],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    assert json.loads(body) == {"agent_entra_app_id": "the-id", "metadata": {"language": "en"}}
    assert "Demo agent worker: off (--no-demo-agent)" in printed
