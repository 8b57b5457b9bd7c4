"""The backend and agent teams' documented paths (docs/clients, docs/agents), end to end against a
running `lkps dev`."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from pathlib import Path

import pytest
from livekit import api

from authz.dev_issuer import DEMO_AGENT, DEMO_BACKEND
from lkps import AsyncWorkerSettingsProvider, EntraCredential, LkpsClient, NotFound, WorkerSettingsProvider
from lkps.config import ClientConfig
from tests.support.clock import FakeClock
from tests.support.dev_service import DevService, lkps_command
from tests.support.livekit import verify_python

pytestmark = pytest.mark.slow


def verify(service: DevService, token: str) -> api.access_token.Claims:
    identity = service.state.identity
    return verify_python(token, identity.livekit_api_key, identity.livekit_api_secret)


def test_backend_service_starts_a_session_from_python(lkps_dev: DevService) -> None:
    """EntraCredential (client credentials against the dev issuer) plus LkpsClient start a verified session."""
    backend = lkps_dev.state.client(DEMO_BACKEND)
    credential = EntraCredential(
        tenant_id=lkps_dev.state.identity.tenant_id,
        client_id=backend.client_id,
        client_secret=backend.secret,
        scope=f"{lkps_dev.state.identity.api_uri}/.default",
        authority=lkps_dev.authority,
        ca_bundle=lkps_dev.state.ca_path,
    )
    with LkpsClient(lkps_dev.url, credential) as lkps:
        session = lkps.start_session(lkps_dev.agent_id, {"language": "en"})
        with pytest.raises(NotFound) as missing:
            lkps.start_session(str(uuid.uuid4()))
    assert missing.value.code == "agent_not_connected"
    claims = verify(lkps_dev, session.participant_token)
    assert claims.identity == session.participant_identity == f"app-{backend.client_id}"
    assert claims.video is not None
    assert claims.video.room == session.room_name
    assert claims.room_config is not None
    assert [(a.agent_name, json.loads(a.metadata)) for a in claims.room_config.agents] == [
        (lkps_dev.agent_id, {"language": "en"})
    ]


@pytest.mark.anyio
async def test_agent_renews_its_worker_settings_before_expiry(lkps_dev: DevService) -> None:
    """The demo agent registers with its own credential and renews when due; no LiveKit credential comes back."""
    clock = FakeClock(time.time())
    config = ClientConfig.from_dev_state(lkps_dev.state.dir, "agent")
    with config.client() as lkps:
        provider = WorkerSettingsProvider(
            lkps, enforce_client_authz=False, agent_version="test", clock=clock.now
        )
        async with AsyncWorkerSettingsProvider(provider) as settings:
            first = await settings.registration()
            await asyncio.sleep(1)  # expiries are whole seconds: a later expiry needs a later second
            clock.advance(provider.seconds_until_renewal())
            renewed = await settings.registration()
    assert renewed.registration_id != first.registration_id
    assert renewed.expires_at > first.expires_at
    assert renewed.agent_name == lkps_dev.state.client(DEMO_AGENT).client_id
    # A renewal keeps the credentials the running worker was started with.
    assert (renewed.worker_api_key, renewed.worker_api_secret) == (
        first.worker_api_key,
        first.worker_api_secret,
    )
    identity = lkps_dev.state.identity
    for registration in (first, renewed):
        assert registration.worker_url == "ws" + lkps_dev.url.removeprefix("http") + "/worker"
        assert registration.worker_api_key != identity.livekit_api_key
        assert registration.worker_api_secret != identity.livekit_api_secret


def test_cli_session_start_uses_the_dev_state_when_nothing_is_configured(lkps_dev: DevService) -> None:
    """In the `lkps dev` directory, `lkps session start --agent` needs no settings and prints the session JSON."""
    done = lkps_command(
        "session", "start", "--agent", lkps_dev.agent_id, "--metadata", '{"a": 1}', cwd=lkps_dev.directory
    )
    assert done.returncode == 0, done.stderr
    assert "using the `lkps dev` state" in done.stderr
    session = json.loads(done.stdout)
    video = verify(lkps_dev, session["participant_token"]).video
    assert video is not None
    assert video.room == session["room_name"]


def test_cli_agent_register_and_lkps_errors(lkps_dev: DevService, tmp_path: Path) -> None:
    """`lkps agent register --dev --state-dir` prints the worker settings; an lkps refusal exits 1 with its error."""
    state = str(lkps_dev.state.dir)
    done = lkps_command(
        "agent", "register", "--no-enforce-client-authz", "--dev", "--state-dir", state, cwd=tmp_path
    )
    assert done.returncode == 0, done.stderr
    registration = json.loads(done.stdout)
    assert set(registration) == {
        "worker_url",
        "worker_api_key",
        "worker_api_secret",
        "expires_at",
        "agent_name",
        "registration_id",
    }
    assert registration["agent_name"] == lkps_dev.agent_id
    refused = lkps_command(
        "session", "start", "--dev", "--state-dir", state, "--agent", str(uuid.uuid4()), cwd=tmp_path
    )
    assert refused.returncode == 1
    error = json.loads(refused.stderr)
    assert (error["error"], error["status"]) == ("agent_not_connected", 404)
    assert error["request_id"]
