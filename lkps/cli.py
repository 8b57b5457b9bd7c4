"""`lkps session start` and `lkps agent register`: the Python client on the command line, printing JSON.

Configured by flags and `LKPS_CLIENT_*` variables (see `lkps.config`). With `--dev`, or automatically when
no `LKPS_CLIENT_*` variable or flag is given and a `lkps dev` state directory exists, the commands use the
demo backend service's (or demo agent's) credentials from that state, through the real client credentials
flow against the embedded issuer.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from lkps.client import AgentRegistration, LkpsClient, Session
from lkps.config import ClientConfig, ClientConfigError, Role
from lkps.errors import LkpsError

# flag destination -> the variable it stands in for
_FLAGS = {
    "url": "LKPS_CLIENT_URL",
    "authority": "LKPS_CLIENT_AUTHORITY",
    "tenant_id": "LKPS_CLIENT_TENANT_ID",
    "client_id": "LKPS_CLIENT_ID",
    "client_secret_file": "LKPS_CLIENT_SECRET_FILE",
    "certificate": "LKPS_CLIENT_CERTIFICATE",
    "scope": "LKPS_CLIENT_SCOPE",
    "ca_bundle": "LKPS_CLIENT_CA_BUNDLE",
}

_CREDENTIALS = frozenset({"LKPS_CLIENT_SECRET", "LKPS_CLIENT_SECRET_FILE", "LKPS_CLIENT_CERTIFICATE"})


def add_client_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `session start`, `session end` and `agent register` to the `lkps` command."""
    connection = argparse.ArgumentParser(add_help=False)
    group = connection.add_argument_group("connection (flags override LKPS_CLIENT_* variables)")
    for dest, variable in _FLAGS.items():
        group.add_argument(f"--{dest.replace('_', '-')}", dest=dest, help=f"instead of {variable}")
    group.add_argument("--dev", action="store_true", help="use the demo credentials of a running `lkps dev`")
    group.add_argument(
        "--state-dir", type=Path, default=Path(".lkps-dev"), help="the `lkps dev` state directory"
    )

    session = commands.add_parser("session", help="start sessions as a backend service (client credentials)")
    session_commands = session.add_subparsers(dest="session_command", required=True)
    start = session_commands.add_parser(
        "start", parents=[connection], help="start a session with an agent and print it as JSON"
    )
    start.add_argument("--agent", required=True, help="the agent's Entra application (client) id")
    start.add_argument(
        "--metadata", type=_json_object, help='JSON object for the agent, e.g. \'{"language": "en"}\''
    )
    start.set_defaults(client_command=_start_session, dev_role="backend")
    end = session_commands.add_parser("end", parents=[connection], help="end a session this client started")
    end.add_argument("room_name", help="the room_name `session start` printed")
    end.set_defaults(
        client_command=lambda client, args: client.end_session(args.room_name), dev_role="backend"
    )

    agent = commands.add_parser("agent", help="register an agent with its own credentials")
    register = agent.add_subparsers(dest="agent_command", required=True).add_parser(
        "register",
        parents=[connection],
        help="register (or renew) the agent and print its agent token as JSON",
    )
    register.add_argument(
        "--no-enforce-client-authz",
        dest="enforce_client_authz",
        action="store_false",
        help="let any allowed client start sessions, not only those pre-authorized on the agent's app",
    )
    register.add_argument("--display-name")
    register.add_argument("--description")
    register.add_argument("--agent-version")
    register.set_defaults(client_command=_register_agent, dev_role="agent")


def run_client_command(args: argparse.Namespace, environ: Mapping[str, str] = os.environ) -> int:
    """Run the parsed command: 0 with the result on stdout, 1 with lkps's error, 2 if not configured."""
    try:
        client = client_config(args, environ).client()
    except ClientConfigError as error:
        listing = "\n".join(f"  - {problem}" for problem in error.problems)
        print(f"lkps: the client is not configured:\n{listing}", file=sys.stderr)  # noqa: T201
        return 2
    try:
        with client:
            result = args.client_command(client, args)
    except LkpsError as error:
        failure = {
            "error": error.code,
            "message": error.message,
            "status": error.status,
            "request_id": error.request_id,
        }
        print(json.dumps(failure, indent=2), file=sys.stderr)  # noqa: T201
        return 1
    # Printing the token is this command's purpose: the JSON is what a script consumes.
    print(json.dumps(dataclasses.asdict(result), indent=2))  # noqa: T201
    return 0


def client_config(args: argparse.Namespace, environ: Mapping[str, str]) -> ClientConfig:
    """Flags over `LKPS_CLIENT_*`, or a `lkps dev` state (`--url` may still point at another dev port)."""
    flags = {variable: getattr(args, dest) for dest, variable in _FLAGS.items() if getattr(args, dest)}
    configured = bool(flags.keys() - {"LKPS_CLIENT_URL"}) or any(
        name.startswith("LKPS_CLIENT_") for name in environ
    )
    dev_role: Role = args.dev_role
    if args.dev or (not configured and (args.state_dir / "authority").is_file()):
        if not args.dev:
            note = f"lkps: no LKPS_CLIENT_* settings; using the `lkps dev` state in {args.state_dir}"
            print(note, file=sys.stderr)  # noqa: T201
        return ClientConfig.from_dev_state(args.state_dir, dev_role).with_url(args.url)
    merged = dict(environ)
    if flags.keys() & _CREDENTIALS:
        # A credential given as a flag replaces the environment's, whichever form that one has.
        for name in _CREDENTIALS:
            merged.pop(name, None)
    return ClientConfig.from_env(merged | flags)


def _start_session(client: LkpsClient, args: argparse.Namespace) -> Session:
    return client.start_session(args.agent, args.metadata)


def _register_agent(client: LkpsClient, args: argparse.Namespace) -> AgentRegistration:
    return client.register_agent(
        enforce_client_authz=args.enforce_client_authz,
        display_name=args.display_name,
        description=args.description,
        agent_version=args.agent_version,
    )


def _json_object(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise argparse.ArgumentTypeError(f"not JSON: {exc}") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError("must be a JSON object")
    return value
