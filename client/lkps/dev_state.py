"""The `lkps dev` state directory, as every other process reads it: a documented contract
(docs/agents/dev-mode.md), so the light client works against a running `lkps dev` without the server.

`lkps dev` writes the directory; the client only reads it. Its files:

    identity.json  the tenant, lkps's App ID URI, the roles, and every application of the embedded issuer
                   (`clients`: client id -> client_id, secret, roles, description, agent) (mode 0600)
    authority      the embedded issuer's base URL, e.g. https://127.0.0.1:8001 (rewritten by each `lkps dev`)
    url            lkps's base URL, e.g. http://127.0.0.1:8000 (rewritten by each `lkps dev`)
    ca.pem         the CA that signed the issuer's certificate: trust it for the issuer
    lock           held (flock) by the running `lkps dev`; holds its process id
    lkps.db, signing-key.pem, server.pem, server-key.pem, demo-agent.log, livekit.log: the server's own

Light on imports on purpose: `lkps dev token` and the `lkps` command's parser load this.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

IDENTITY_FILE = "identity.json"
AUTHORITY_FILE = "authority"
URL_FILE = "url"
CA_FILE = "ca.pem"
LOCK_FILE = "lock"

# The descriptions the demo applications are found by (states written before agents had names have only these).
DEMO_AGENT = "demo agent"
DEMO_BACKEND = "demo backend service"
DEMO_OPERATOR = "demo operator"  # holds the admin role, for the admin API
DEMO_AGENT_NAME = "demo"  # the demo agent's name among the dev agents
# An agent's name in dev mode: what a team types (`lkps agent run --dev --agent NAME`), so kept plain.
AGENT_NAME = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$")
AGENT_NAME_RULE = "lowercase letters, digits and inner dashes, at most 63 characters, e.g. weather-bot"


class DevStateError(Exception):
    """The state directory cannot serve the request; `message` says what to do."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


@dataclass
class DevClient:
    client_id: str
    secret: str
    roles: list[str]
    description: str
    agent: str | None = None  # the agent's name, for the agents' applications


@dataclass
class DevIdentity:
    """What the issuer, the gateway and the clients must agree on: `identity.json`."""

    tenant_id: str
    api_app_id: str  # lkps's own app registration: the v2 `aud`
    api_uri: str  # its App ID URI
    spa_client_id: str  # the public client user tokens are issued to
    user_scope: str
    client_role: str
    agent_role: str
    livekit_api_key: str
    livekit_api_secret: str
    clients: dict[str, DevClient] = field(default_factory=dict)
    admin_role: str = "Lkps.Admin"

    @property
    def audiences(self) -> tuple[str, str]:
        return (self.api_app_id, self.api_uri)

    @property
    def delegated_scope(self) -> str:
        """The scope an SPA requests to call lkps for its signed-in user."""
        return f"{self.api_uri}/{self.user_scope}"

    @property
    def client_credentials_scope(self) -> str:
        return f"{self.api_uri}/.default"

    def client(self, description: str) -> DevClient:
        return next(c for c in self.clients.values() if c.description == description)

    def agents(self) -> dict[str, DevClient]:
        """Every agent application by name, the demo agent as `demo`."""
        named = {c.agent: c for c in self.clients.values() if c.agent is not None}
        demo = next((c for c in self.clients.values() if c.description == DEMO_AGENT), None)
        if demo is not None:
            named.setdefault(DEMO_AGENT_NAME, demo)
        return dict(sorted(named.items()))

    def agent(self, name: str, directory: Path) -> DevClient:
        """The agent named `name`, or DevStateError saying how to add it."""
        found = self.agents().get(name)
        if found is None:
            known = ", ".join(self.agents()) or "none"
            raise DevStateError(
                f"no agent {name!r} in the `lkps dev` state {directory} (agents: {known}): "
                f"add it with `lkps dev agent add {name} --state-dir {directory}`"
            )
        return found


def identity_from_json(raw: dict[str, Any]) -> DevIdentity:
    """`identity.json` as written by any `lkps dev`: fields it does not know yet are ignored."""
    known = {f.name for f in fields(DevClient)}
    clients = {
        key: DevClient(**{k: v for k, v in c.items() if k in known}) for key, c in raw["clients"].items()
    }
    identity_fields = {f.name for f in fields(DevIdentity)} - {"clients"}
    return DevIdentity(**{k: v for k, v in raw.items() if k in identity_fields}, clients=clients)


def read_identity(directory: Path) -> DevIdentity:
    try:
        return identity_from_json(json.loads((directory / IDENTITY_FILE).read_text()))
    except FileNotFoundError:
        raise DevStateError(never_ran(directory)) from None
    except (ValueError, KeyError, TypeError) as exc:
        raise DevStateError(
            f"{directory / IDENTITY_FILE} is not a `lkps dev` identity ({type(exc).__name__}: {exc}): "
            "pass --state-dir to the directory `lkps dev` uses"
        ) from None


def never_ran(directory: Path) -> str:
    return (
        f"no `lkps dev` has run with its state in {directory}: start `lkps dev` first, "
        "or pass --state-dir (or set LKPS_DEV_STATE_DIR) to where it runs"
    )


def authority(directory: Path) -> str:
    """The issuer of the `lkps dev` that runs (or last ran) on `directory`."""
    try:
        return (directory / AUTHORITY_FILE).read_text().strip()
    except FileNotFoundError:
        raise DevStateError(never_ran(directory)) from None


def base_url(directory: Path) -> str:
    """Where the `lkps dev` that runs (or last ran) on `directory` serves lkps."""
    try:
        return (directory / URL_FILE).read_text().strip()
    except FileNotFoundError:
        raise DevStateError(never_ran(directory)) from None


def running_pid(directory: Path) -> int | None:
    """The process id of the `lkps dev` running on `directory`, or None when none runs.

    Read-only on purpose (no probe of the flock, which could make a starting `lkps dev` think another one
    holds it): the lock file keeps its last holder's pid, and a process of that id must still exist.
    """
    try:
        pid = int((directory / LOCK_FILE).read_text().strip())
    except (FileNotFoundError, ValueError):
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        return pid  # someone else's process: it exists
    return pid


def require_running(directory: Path) -> None:
    """DevStateError with what to do unless a `lkps dev` runs on `directory`."""
    authority(directory)  # never ran: that message first
    if running_pid(directory) is None:
        raise DevStateError(
            f"no `lkps dev` is running with its state in {directory} (lkps was at {base_url(directory)}): "
            "start `lkps dev` there, or pass --state-dir (or set LKPS_DEV_STATE_DIR) to where it runs"
        )
