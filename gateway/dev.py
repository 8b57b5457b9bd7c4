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
import shutil
import signal
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from authz.clock import SystemClock
from authz.dev_issuer import DEMO_AGENT, DEMO_BACKEND, DEMO_OPERATOR, DevIssuer, DevState
from gateway.dev_agent import NO_AGENTS_PACKAGE, DemoAgent, agents_installed
from gateway.dev_livekit import LiveKitConfig, LiveKitNotReady, LiveKitProcess, die_with_parent, find_binary
from gateway.dev_state import StateLock
from gateway.persistence.agents import AgentRegistry, NewRegistration
from gateway.persistence.db import create_engine
from gateway.persistence.migrate import upgrade
from gateway.ports import require_free
from lkps.commands import CommandError, ExitCode
from lkps.dev_state import AUTHORITY_FILE, URL_FILE

DEMO_AGENT_REGISTRATION_DAYS = 30
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
# Where examples/spa's dev server listens, under both loopback spellings a browser may be pointed at.
SPA_EXAMPLE_ORIGINS = ("http://127.0.0.1:5173", "http://localhost:5173")
DEFAULT_LIVEKIT_PORT = 7880  # LiveKit's own default; media on the next two ports
NO_LIVEKIT = (
    "lkps dev: {why}, so no LiveKit server is started and no demo agent runs: session starts answer 404 "
    "agent_not_connected (no worker is connected) and ending a session answers 502. Get one with "
    "scripts/livekit-server (builds it once with Go), or set LKPS_LIVEKIT_SERVER_BIN."
)


def dev_environment(
    state: DevState,
    authority: str,
    cors_origins: Sequence[str] | None = None,
    livekit_url: str = f"ws://127.0.0.1:{DEFAULT_LIVEKIT_PORT}",
) -> dict[str, str]:
    """The `LKPS_*` variables that point a gateway at the embedded issuer and the dev LiveKit server
    (CORS: the SPA example's origins)."""
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
        "LKPS_ADMIN_CLIENT_APP_IDS": state.client(DEMO_OPERATOR).client_id,
        "LKPS_LIVEKIT_URL": livekit_url,
        "LKPS_LIVEKIT_API_KEY": identity.livekit_api_key,
        "LKPS_LIVEKIT_API_SECRET": identity.livekit_api_secret,
        "LKPS_DATABASE_URL": f"sqlite+aiosqlite:///{state.dir.resolve() / 'lkps.db'}",
        "LKPS_LOG_FORMAT": "console",
        "LKPS_CORS_ALLOWED_ORIGINS": ",".join(cors_origins or SPA_EXAMPLE_ORIGINS),
    }


async def prepare_database(state: DevState, database_url: str, *, demo_agent: bool = True) -> str:
    """Migrate the dev database and (re)register the demo agent (unless `demo_agent` is off); return the
    demo agent's app id."""
    engine = create_engine(database_url, pool_size=1)
    agent = state.client(DEMO_AGENT)
    try:
        await upgrade(engine)
        if not demo_agent:
            return agent.client_id
        registry = AgentRegistry(engine, SystemClock())
        expires = datetime.now(UTC) + timedelta(days=DEMO_AGENT_REGISTRATION_DAYS)
        await registry.register(
            NewRegistration(
                agent_app_id=agent.client_id,
                tenant_id=state.identity.tenant_id,
                requester_object_id=str(uuid.uuid5(uuid.NAMESPACE_URL, "lkps-dev")),
                enforce_client_authz=False,  # no Microsoft Graph in dev mode
                display_name="Demo agent (lkps dev)",
                description="Registered by `lkps dev`; its worker is lkps.demo_agent, through the relay.",
                agent_version=None,
                request_id="lkps-dev",
            ),
            expires_at=int(expires.timestamp()),
        )
        return agent.client_id
    finally:
        await engine.dispose()


def instructions(
    state: DevState,
    authority: str,
    base_url: str,
    agent_id: str,
    lkps_script: str,
    *,
    livekit: LiveKitProcess | None,
    demo_agent: bool = True,
) -> str:
    """The ready-to-paste commands; `lkps_script` is the `lkps` executable, made to work from anywhere."""
    backend = state.client(DEMO_BACKEND)
    state_flag = f"--state-dir {shlex.quote(str(state.dir))}"
    token = f"{lkps_script} dev token {state_flag}"
    client = f"{lkps_script} {{command}} {state_flag}"
    token_url = f"{authority}/{state.identity.tenant_id}/oauth2/v2.0/token"
    if demo_agent:
        body = shlex.quote(f'{{"agent_entra_app_id": "{agent_id}", "metadata": {{"language": "en"}}}}')
        pick_agent, session_agent = "", agent_id
    else:  # the session goes to an agent of the team's, once its worker runs
        body = '"{\\"agent_entra_app_id\\": \\"$AGENT\\", \\"metadata\\": {\\"language\\": \\"en\\"}}"'
        pick_agent = (
            f"AGENT=$({lkps_script} dev agent add my-agent {state_flag})   # run its worker first (above)\n"
        )
        session_agent = "$AGENT"
    livekit_line = (
        f"LiveKit server: {livekit.config.url}   (webhooks to lkps; log {livekit.log_path})"
        if livekit
        else "LiveKit server: not running (see the line above)"
    )
    if not demo_agent:
        agent_line = "Demo agent worker: off (--no-demo-agent); the demo agent is not registered"
    elif livekit:
        log = state.dir / "demo-agent.log"
        agent_line = f"Demo agent worker: lkps agent run -- python -m lkps.demo_agent start   (log {log})"
    else:
        agent_line = "Demo agent worker: not running (it needs the LiveKit server)"
    own_agent = (
        f"{lkps_script} agent run --dev {state_flag} --agent NAME -- /path/to/venv/bin/python agent.py start"
    )
    return f"""
lkps dev is running: {base_url}   (API docs: {base_url}/schema)
Embedded Entra-compatible issuer: {authority}/{state.identity.tenant_id}/v2.0   (trust {state.ca_path})
{livekit_line}
Demo agent (client authorization off): {agent_id}
{agent_line}
Your own agent: {lkps_script} dev agent add NAME {state_flag}   (prints its app id), then its stock worker:
  {own_agent}
Python client, as the demo backend service: {client.format(command="session start")} --agent {session_agent}
(from any directory; or export LKPS_DEV_STATE_DIR={shlex.quote(str(state.dir))} and drop --state-dir)

# 1. A user token (what an MSAL SPA would hold), then start a session:
{pick_agent}TOKEN=$({token} --user alice)
SESSION=$(curl -s -X POST {base_url}/api/session/start -H "Authorization: Bearer $TOKEN" \\
     -H 'Content-Type: application/json' -d {body}); echo "$SESSION"

# 2. Or start it as a backend service (no signed-in user): the demo backend's app-only token, through the
#    real client-credentials flow, for the same session start as step 1:
TOKEN=$(curl -s --cacert {state.ca_path} {token_url} \\
     -d grant_type=client_credentials -d client_id={backend.client_id} \\
     -d client_secret={backend.secret} -d scope={state.identity.api_uri}/.default \\
     | python3 -c 'import json,sys; print(json.load(sys.stdin)["access_token"])')

# 3. Register the demo agent yourself (an agent's app-only token):
curl -s -X POST {base_url}/api/agent/register -H "Authorization: Bearer $({token} --agent)" \\
     -H 'Content-Type: application/json' -d '{{"enforce_client_authz": false}}'

# 4. The admin API, as the demo operator app (role {state.identity.admin_role}): the sessions so far
curl -s -H "Authorization: Bearer $({token} --admin)" {base_url}/api/admin/sessions

# 5. End alice's session of step 1: lkps deletes its LiveKit room, disconnecting whoever joined it
ROOM=$(echo "$SESSION" | python3 -c 'import json,sys; print(json.load(sys.stdin)["room_name"])')
curl -s -X DELETE {base_url}/api/session/$ROOM -H "Authorization: Bearer $({token} --user alice)"
"""


@dataclass(frozen=True, slots=True)
class DevRun:
    """A running `lkps dev`: the gateway's environment, and how to stop the workers it started."""

    environment: dict[str, str]  # the gateway's LKPS_* settings
    demo_agent: DemoAgent | None

    def serve(self, port: int) -> int:
        """`lkps serve` on 127.0.0.1:`port` with this environment until SIGINT or SIGTERM, then stop the demo
        agent's worker first and lkps after it.

        lkps runs in a session of its own: a terminal's Ctrl-C reaches the whole foreground process group, and
        granian's workers would stop at once, cutting off the demo agent's relayed connection while it drains
        (it then logs failed reconnects).
        """
        stop = threading.Event()
        handlers = {signum: signal.signal(signum, lambda *_: stop.set()) for signum in STOP_SIGNALS}
        try:
            server = subprocess.Popen(  # noqa: S603 - this interpreter's own lkps
                [sys.executable, "-m", "gateway.cli", "serve", "--host", "127.0.0.1", "--port", str(port)],
                env=os.environ | self.environment,
                start_new_session=True,
                preexec_fn=die_with_parent,  # noqa: PLW1509 - only prctl, safe before exec
            )
            while server.poll() is None and not stop.wait(0.2):
                pass
            if server.poll() is not None:
                return server.returncode  # lkps stopped by itself: its own line said why
            if self.demo_agent is not None:
                self.demo_agent.stop()
            server.terminate()
            server.wait()
            return ExitCode.OK
        finally:
            for signum, handler in handlers.items():
                signal.signal(signum, handler)


@contextmanager
def running(
    state_dir: Path,
    port: int,
    issuer_port: int,
    livekit_port: int = DEFAULT_LIVEKIT_PORT,
    cors_origins: Sequence[str] | None = None,
    *,
    demo_agent: bool = True,
) -> Iterator[DevRun]:
    """Hold the state directory, start the issuer, prepare the database, start LiveKit (when there is a
    binary) with webhooks to lkps on `port`, start the demo agent's worker (unless `demo_agent` is off),
    and print the instructions; yield the gateway's environment (and the workers) while lkps serves on
    `port`.

    The lock and the port checks come before anything is written, so a second `lkps dev` on the same
    state, or on a busy port, changes nothing of the one running.
    """
    lock = StateLock(state_dir)
    if state_dir.exists():
        lock.acquire()  # another `lkps dev` on this state is the first thing to say, before its ports
    try:
        require_free("127.0.0.1", port, "--port")
        require_free("127.0.0.1", issuer_port, "--issuer-port", "the dev issuer")
        for livekit_port_used in (livekit_port, livekit_port + 1):
            require_free("127.0.0.1", livekit_port_used, "--livekit-port", "the dev LiveKit server")
        if not lock.held:
            lock.acquire()  # a new state directory is created only once the ports are known to be free
        issuer = DevIssuer(DevState(state_dir), port=issuer_port).start()
        try:
            (state_dir / AUTHORITY_FILE).write_text(issuer.authority)  # where the clients find the issuer
            base_url = f"http://127.0.0.1:{port}"
            (state_dir / URL_FILE).write_text(base_url)  # and this service
            identity = issuer.state.identity
            livekit_config = LiveKitConfig(
                port=livekit_port,
                api_key=identity.livekit_api_key,
                api_secret=identity.livekit_api_secret,
                webhook_urls=(f"{base_url}/api/livekit/webhook",),
            )
            env = dev_environment(issuer.state, issuer.authority, cors_origins, livekit_config.url)
            env["LKPS_PUBLIC_URL"] = base_url  # registrations hand out ws://127.0.0.1:<port>/worker
            agent_id = asyncio.run(
                prepare_database(issuer.state, env["LKPS_DATABASE_URL"], demo_agent=demo_agent)
            )
            livekit = start_livekit(livekit_config, state_dir)
            agent = start_demo_agent(state_dir, base_url) if livekit is not None and demo_agent else None
            try:
                print(  # noqa: T201
                    instructions(
                        issuer.state,
                        issuer.authority,
                        base_url,
                        agent_id,
                        lkps_script(),
                        livekit=livekit,
                        demo_agent=demo_agent,
                    )
                )
                yield DevRun(env, agent)
            finally:
                if agent is not None:
                    agent.stop()
                if livekit is not None:
                    livekit.stop()
        finally:
            issuer.stop()
    finally:
        lock.release()


def start_livekit(
    config: LiveKitConfig, state_dir: Path, environ: Mapping[str, str] | None = None
) -> LiveKitProcess | None:
    """The dev LiveKit server, started and answering; None (said in one line) when there is no binary."""
    environ = os.environ if environ is None else environ
    binary = find_binary(environ)
    if binary is None:
        configured = environ.get("LKPS_LIVEKIT_SERVER_BIN")
        why = (
            f"LKPS_LIVEKIT_SERVER_BIN={configured} is not an executable file"
            if configured
            else "no binary found"
        )
        print(NO_LIVEKIT.format(why=why), file=sys.stderr)  # noqa: T201 - dev mode's one line for a missing piece
        return None
    try:
        return LiveKitProcess(binary, config, state_dir).start()
    except LiveKitNotReady as error:
        raise CommandError(
            ExitCode.LIVEKIT, f"{error} (another LiveKit on its ports? try --livekit-port)"
        ) from None


def start_demo_agent(state_dir: Path, base_url: str) -> DemoAgent | None:
    """The demo agent's worker through lkps's relay; None (said in one line) without livekit-agents."""
    if not agents_installed():
        print(NO_AGENTS_PACKAGE, file=sys.stderr)  # noqa: T201
        return None
    return DemoAgent(state_dir, base_url).start()


def lkps_script() -> str:
    """The `lkps` executable by absolute path: the printed commands must work in a fresh shell, where this
    virtualenv is not activated, and from any directory."""
    script = Path(sys.executable).with_name("lkps")
    return str(script) if script.exists() else shutil.which("lkps") or f"{sys.executable} -m gateway.cli"
