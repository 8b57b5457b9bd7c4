"""Dev mode: the embedded issuer is a real OIDC/JWKS endpoint MSAL can use, and `lkps dev` works as printed."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import msal
import pytest
import requests

from authz.clock import SystemClock
from authz.dev_issuer import DevIssuer, DevState
from authz.entra import build_validator
from authz.jwks import build_http_client
from config import Settings
from gateway.dev import DEMO_BACKEND, dev_environment


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


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_for(url: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if requests.get(url, timeout=1).status_code == 200:
                return
        except requests.ConnectionError:
            pass
        time.sleep(0.2)
    raise AssertionError(f"{url} did not become ready")


@pytest.mark.slow
def test_printed_commands_start_a_session(tmp_path: Path) -> None:
    """`lkps dev` prints commands that, pasted into a shell, start sessions and register the agent."""
    port, issuer_port = _free_port(), _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("LKPS_")}
    process = subprocess.Popen(
        [sys.executable, "-m", "gateway.cli", "dev", "--port", str(port), "--issuer-port", str(issuer_port)],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        _wait_for(f"http://127.0.0.1:{port}/api/health/ready")
        assert process.stdout is not None
        printed = ""
        while "# 3." not in printed or not printed.rstrip().endswith("}'"):
            printed += process.stdout.readline()
        blocks = re.split(r"\n# \d\. [^\n]*\n", printed)[1:]
        assert len(blocks) == 3
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
        assert '"agent_token"' in register.stdout, register.stdout + register.stderr
    finally:
        process.terminate()
        process.wait(timeout=30)
