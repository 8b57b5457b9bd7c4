"""`lkps dev`: a working service with nothing else installed.

It starts the embedded issuer, configures the gateway through the same environment contract as
production (so every production check runs), migrates an SQLite database, registers a demo agent and
prints commands that start a session. Dev mode is not a switch in the gateway: it only exists as this
command, which binds to loopback and writes its own state directory.
"""

from __future__ import annotations

import asyncio
import os
import shlex
import sys
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from authz.clock import SystemClock
from authz.dev_issuer import DEMO_AGENT, DEMO_BACKEND, DEMO_OPERATOR, DevIssuer, DevState
from gateway.dev_livekit import LiveKitConfig, LiveKitNotReady, LiveKitProcess, find_binary
from gateway.persistence.agents import AgentRegistry, NewRegistration
from gateway.persistence.db import create_engine
from gateway.persistence.migrate import upgrade

DEMO_AGENT_REGISTRATION_DAYS = 30
SPA_EXAMPLE_ORIGIN = "http://127.0.0.1:5173"  # where examples/spa's dev server listens
DEFAULT_LIVEKIT_PORT = 7880  # LiveKit's own default; media on the next two ports
NO_LIVEKIT = (
    "lkps dev: no LiveKit server binary found, so none is started: sessions and tokens work, but nothing can "
    "join their rooms and ending a session answers 502. Get one with scripts/livekit-server (builds it once "
    "with Go), or set LKPS_LIVEKIT_SERVER_BIN."
)


def dev_environment(
    state: DevState,
    authority: str,
    cors_origins: Sequence[str] | None = None,
    livekit_url: str = f"ws://127.0.0.1:{DEFAULT_LIVEKIT_PORT}",
) -> dict[str, str]:
    """The `LKPS_*` variables that point a gateway at the embedded issuer and the dev LiveKit server
    (CORS: the SPA example's origin)."""
    identity = state.identity
    return {
        "LKPS_ENVIRONMENT": "dev",
        "LKPS_ENTRA_TENANT_ID": identity.tenant_id,
        "LKPS_ENTRA_AUTHORITY": authority,
        "LKPS_ENTRA_CA_BUNDLE": str(state.ca_path),
        "LKPS_ENTRA_AUDIENCES": ",".join(identity.audiences),
        "LKPS_CLIENT_SCOPES": identity.user_scope,
        "LKPS_CLIENT_ROLES": identity.client_role,
        "LKPS_AGENT_ROLES": identity.agent_role,
        "LKPS_ADMIN_ROLES": identity.admin_role,
        "LKPS_LIVEKIT_URL": livekit_url,
        "LKPS_LIVEKIT_API_KEY": identity.livekit_api_key,
        "LKPS_LIVEKIT_API_SECRET": identity.livekit_api_secret,
        "LKPS_DATABASE_URL": f"sqlite+aiosqlite:///{state.dir.resolve() / 'lkps.db'}",
        "LKPS_LOG_FORMAT": "console",
        "LKPS_CORS_ALLOWED_ORIGINS": ",".join(cors_origins or (SPA_EXAMPLE_ORIGIN,)),
    }


async def prepare_database(state: DevState, database_url: str) -> str:
    """Migrate the dev database and (re)register the demo agent; return the demo agent's app id."""
    engine = create_engine(database_url, pool_size=1)
    try:
        await upgrade(engine)
        agent = state.client(DEMO_AGENT)
        registry = AgentRegistry(engine, SystemClock())
        expires = datetime.now(UTC) + timedelta(days=DEMO_AGENT_REGISTRATION_DAYS)
        await registry.register(
            NewRegistration(
                agent_app_id=agent.client_id,
                tenant_id=state.identity.tenant_id,
                requester_object_id=str(uuid.uuid5(uuid.NAMESPACE_URL, "lkps-dev")),
                enforce_client_authz=False,  # no Microsoft Graph in dev mode
                display_name="Demo agent (lkps dev)",
                description="Registered by `lkps dev`; no worker is attached.",
                agent_version=None,
                request_id="lkps-dev",
            ),
            expires_at=int(expires.timestamp()),
        )
        return agent.client_id
    finally:
        await engine.dispose()


@dataclass
class DevServices:
    """What `lkps dev` runs beside the gateway: the issuer, and LiveKit when a binary was found."""

    issuer: DevIssuer
    livekit: LiveKitProcess | None
    env: dict[str, str]
    agent_id: str

    def stop(self) -> None:
        if self.livekit is not None:
            self.livekit.stop()
        self.issuer.stop()


def instructions(services: DevServices, base_url: str, lkps: str) -> str:
    state, authority, agent_id, livekit = (
        services.issuer.state,
        services.issuer.authority,
        services.agent_id,
        services.livekit,
    )
    backend = state.client(DEMO_BACKEND)
    token_url = f"{authority}/{state.identity.tenant_id}/oauth2/v2.0/token"
    body = shlex.quote(f'{{"agent_entra_app_id": "{agent_id}", "metadata": {{"language": "en"}}}}')
    livekit_line = (
        f"LiveKit server: {livekit.config.url}   (webhooks to lkps; log {livekit.log_path})"
        if livekit
        else "LiveKit server: not running (see the line above)"
    )
    return f"""
lkps dev is running: {base_url}   (API docs: {base_url}/schema)
Embedded Entra-compatible issuer: {authority}/{state.identity.tenant_id}/v2.0   (trust {state.ca_path})
{livekit_line}
Demo agent (registered, client authorization off): {agent_id}
Python client, as the demo backend service: {lkps} session start --agent {agent_id}

# 1. A user token (what an MSAL SPA would hold), then start a session:
TOKEN=$({lkps} dev token --user alice)
SESSION=$(curl -s -X POST {base_url}/api/session/start -H "Authorization: Bearer $TOKEN" \\
     -H 'Content-Type: application/json' -d {body}); echo "$SESSION"

# 2. Or a backend service's token through the real client-credentials flow:
TOKEN=$(curl -s --cacert {state.ca_path} {token_url} \\
     -d grant_type=client_credentials -d client_id={backend.client_id} \\
     -d client_secret={backend.secret} -d scope={state.identity.api_uri}/.default \\
     | python3 -c 'import json,sys; print(json.load(sys.stdin)["access_token"])')

# 3. Register the demo agent yourself (an agent's app-only token):
curl -s -X POST {base_url}/api/agent/register -H "Authorization: Bearer $({lkps} dev token --agent)" \\
     -H 'Content-Type: application/json' -d '{{"enforce_client_authz": false}}'

# 4. The admin API, as the demo operator app (role {state.identity.admin_role}): the sessions so far
curl -s -H "Authorization: Bearer $({lkps} dev token --admin)" {base_url}/api/admin/sessions

# 5. End alice's session of step 1: lkps deletes its LiveKit room, disconnecting whoever joined it
ROOM=$(echo "$SESSION" | python3 -c 'import json,sys; print(json.load(sys.stdin)["room_name"])')
curl -s -X DELETE {base_url}/api/session/$ROOM -H "Authorization: Bearer $({lkps} dev token --user alice)"
"""


def start(
    state_dir: Path,
    *,
    issuer_port: int,
    port: int,
    livekit_port: int = DEFAULT_LIVEKIT_PORT,
    cors_origins: Sequence[str] | None = None,
    environ: Mapping[str, str] | None = None,
) -> DevServices:
    """Start the issuer and (when there is a binary) LiveKit with webhooks to lkps on `port`, remember the
    issuer's address for `lkps dev token`, prepare the database."""
    state_dir = state_dir.resolve()
    issuer = DevIssuer(DevState(state_dir), port=issuer_port).start()
    (state_dir / "authority").write_text(issuer.authority)
    identity = issuer.state.identity
    livekit_config = LiveKitConfig(
        port=livekit_port,
        api_key=identity.livekit_api_key,
        api_secret=identity.livekit_api_secret,
        webhook_urls=(f"http://127.0.0.1:{port}/api/livekit/webhook",),
    )
    env = dev_environment(issuer.state, issuer.authority, cors_origins, livekit_config.url)
    env["LKPS_PUBLIC_URL"] = f"http://127.0.0.1:{port}"  # registrations hand out ws://127.0.0.1:<port>/worker
    agent_id = asyncio.run(prepare_database(issuer.state, env["LKPS_DATABASE_URL"]))
    binary = find_binary(os.environ if environ is None else environ)
    livekit = None
    if binary is None:
        print(NO_LIVEKIT, file=sys.stderr)  # noqa: T201 - dev mode's one line for a missing piece
    else:
        try:
            livekit = LiveKitProcess(binary, livekit_config, state_dir).start()
        except LiveKitNotReady as error:
            issuer.stop()
            raise SystemExit(
                f"lkps dev: {error} (is port {livekit_port} busy? choose another with --livekit-port)"
            ) from None
    return DevServices(issuer, livekit, env, agent_id)


def mint(state_dir: Path, kind: str, user: str) -> str:
    """`lkps dev token`: a token from the running dev issuer's keys (user, or the backend, agent or
    operator app)."""
    state = DevState(state_dir)
    try:
        authority = (state_dir / "authority").read_text().strip()
    except FileNotFoundError:
        raise SystemExit(f"no dev issuer has run with state in {state_dir}; start `lkps dev` first") from None
    if kind == "user":
        return state.user_token(authority, user)
    clients = {"app": DEMO_BACKEND, "agent": DEMO_AGENT, "admin": DEMO_OPERATOR}
    return state.app_token(authority, state.client(clients[kind]))
