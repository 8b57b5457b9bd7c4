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
import uuid
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from lkps.commands import CommandError, ExitCode, add_state_dir_argument, state_dir

if TYPE_CHECKING:
    from lkps.client import AgentRegistration, LkpsClient, Session
    from lkps.config import ClientConfig, Role

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
_FLAG_HELP = {
    "url": "lkps base URL, e.g. https://lkps.example.com (with a dev state: the running `lkps dev`'s)",
    "authority": "Entra authority host (default: https://login.microsoftonline.com)",
    "tenant_id": "the Entra tenant GUID",
    "client_id": "your application's client id",
    "client_secret_file": "file holding its client secret",
    "certificate": "PEM file with its private key and certificate, instead of a secret",
    "scope": "lkps's App ID URI + /.default, e.g. api://lkps/.default",
    "ca_bundle": "PEM file trusted instead of the system store, for Entra and lkps",
}

_CREDENTIALS = frozenset({"LKPS_CLIENT_SECRET", "LKPS_CLIENT_SECRET_FILE", "LKPS_CLIENT_CERTIFICATE"})

# The API's field names in lkps's 400 messages, as the flags that set them on this command line.
_FIELD_FLAGS = {'"agent_entra_app_id"': "--agent", '"metadata"': "--metadata"}


def add_client_commands(commands: argparse._SubParsersAction[Any]) -> None:
    """Add `session start`, `session end` and `agent register` to the `lkps` command."""
    connection = argparse.ArgumentParser(add_help=False)
    group = connection.add_argument_group("connection (flags override LKPS_CLIENT_* variables)")
    for dest, variable in _FLAGS.items():
        group.add_argument(
            f"--{dest.replace('_', '-')}", dest=dest, help=f"{_FLAG_HELP[dest]}; instead of {variable}"
        )
    group.add_argument("--dev", action="store_true", help="use the demo credentials of a running `lkps dev`")
    add_state_dir_argument(group)

    session = commands.add_parser("session", help="start sessions as a backend service (client credentials)")
    session_commands = session.add_subparsers(dest="session_command", required=True)
    start = session_commands.add_parser(
        "start", parents=[connection], help="start a session with an agent and print it as JSON"
    )
    start.add_argument(
        "--agent", required=True, type=_app_id, help="the agent's Entra application (client) id, a GUID"
    )
    start.add_argument(
        "--metadata", type=_json_object, help='JSON object for the agent, e.g. \'{"language": "en"}\''
    )
    start.set_defaults(client_command=_start_session, dev_role="backend")
    end = session_commands.add_parser("end", parents=[connection], help="end a session this client started")
    end.add_argument("room_name", help="the room_name `session start` printed")
    end.set_defaults(
        client_command=lambda client, args, _dev: client.end_session(args.room_name), dev_role="backend"
    )

    agent = commands.add_parser("agent", help="register an agent with its own credentials")
    register = agent.add_subparsers(dest="agent_command", required=True).add_parser(
        "register",
        parents=[connection],
        help="register (or renew) the agent and print its agent token as JSON",
    )
    register.add_argument(
        "--enforce-client-authz",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="only clients pre-authorized on the agent's app registration may start sessions with it "
        "(default: on; off with a `lkps dev` state, which has no Microsoft Graph to ask)",
    )
    register.add_argument("--display-name", help="shown to administrators (GET /api/admin/agents)")
    register.add_argument("--description", help="what the agent does, for administrators")
    register.add_argument("--agent-version", help="the agent's own version, for administrators")
    register.set_defaults(client_command=_register_agent, dev_role="agent")


def run_client_command(args: argparse.Namespace, environ: Mapping[str, str] = os.environ) -> int:
    """Run the parsed command: 0 with the result on stdout, 1 with lkps's error JSON on stderr; raise
    CommandError when it is not configured (2) or lkps or Entra cannot be reached (5)."""
    # Loaded here, not at import: the `lkps` command's parser and `lkps dev token` never need them.
    from lkps.config import ClientConfigError  # noqa: PLC0415
    from lkps.errors import ConnectionFailed, CredentialError, InvalidRequest, LkpsError  # noqa: PLC0415

    dev = uses_dev_state(args, environ)
    try:
        client = client_config(args, environ).client()
    except ClientConfigError as error:
        listing = "\n".join(f"  - {problem}" for problem in error.problems)
        raise CommandError(ExitCode.SETTINGS, f"the client is not configured:\n{listing}") from None
    try:
        with client:
            result = args.client_command(client, args, dev)
    except (ConnectionFailed, CredentialError) as error:
        hint = (
            "is lkps running there? (--url)"
            if isinstance(error, ConnectionFailed)
            else "check the Entra settings"
        )
        raise CommandError(ExitCode.UNREACHABLE, f"{error.message}\n  {hint}") from None
    except LkpsError as error:
        message = error.message
        if isinstance(error, InvalidRequest):
            for field, flag in _FIELD_FLAGS.items():
                message = message.replace(field, flag)
        failure = {
            "error": error.code,
            "message": message,
            "status": error.status,
            "request_id": error.request_id,
        }
        print(json.dumps(failure, indent=2), file=sys.stderr)  # noqa: T201
        return ExitCode.REFUSED
    # Printing the token is this command's purpose: the JSON is what a script consumes.
    print(json.dumps(dataclasses.asdict(result), indent=2))  # noqa: T201
    return ExitCode.OK


def uses_dev_state(args: argparse.Namespace, environ: Mapping[str, str]) -> bool:
    """`--dev`, or nothing configured (no LKPS_CLIENT_* variable, no flag but `--url`) and a dev state there."""
    if args.dev:
        return True
    flags = {variable for dest, variable in _FLAGS.items() if getattr(args, dest)}
    configured = bool(flags - {"LKPS_CLIENT_URL"}) or any(name.startswith("LKPS_CLIENT_") for name in environ)
    return not configured and (state_dir(args, environ) / "authority").is_file()


def client_config(args: argparse.Namespace, environ: Mapping[str, str]) -> ClientConfig:
    """Flags over `LKPS_CLIENT_*`, or a `lkps dev` state (`--url` may still point at another dev port)."""
    from lkps.config import ClientConfig  # noqa: PLC0415 - see run_client_command

    if uses_dev_state(args, environ):
        directory = state_dir(args, environ)
        if not args.dev:
            note = f"lkps: no LKPS_CLIENT_* settings; using the `lkps dev` state in {directory}"
            print(note, file=sys.stderr)  # noqa: T201
        dev_role: Role = args.dev_role
        return ClientConfig.from_dev_state(directory, dev_role).with_url(args.url)
    flags = {variable: getattr(args, dest) for dest, variable in _FLAGS.items() if getattr(args, dest)}
    merged = dict(environ)
    if flags.keys() & _CREDENTIALS:
        # A credential given as a flag replaces the environment's, whichever form that one has.
        for name in _CREDENTIALS:
            merged.pop(name, None)
    return ClientConfig.from_env(merged | flags)


def _start_session(client: LkpsClient, args: argparse.Namespace, _dev: bool) -> Session:
    return client.start_session(args.agent, args.metadata)


def _register_agent(client: LkpsClient, args: argparse.Namespace, dev: bool) -> AgentRegistration:
    enforce: bool | None = args.enforce_client_authz
    if enforce is None:
        # lkps dev has no Microsoft Graph credential: an enforcing agent would make every session start 503.
        enforce = not dev
        if dev:
            note = "lkps: dev state: registering with client authorization off (no Microsoft Graph in dev)"
            print(note, file=sys.stderr)  # noqa: T201
    elif enforce and dev:
        note = "lkps: client authorization on: in `lkps dev` (no Microsoft Graph) session starts to it answer 503"
        print(note, file=sys.stderr)  # noqa: T201
    return client.register_agent(
        enforce_client_authz=enforce,
        display_name=args.display_name,
        description=args.description,
        agent_version=args.agent_version,
    )


def _app_id(text: str) -> str:
    try:
        return str(uuid.UUID(text))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not an Entra application id (a GUID; `lkps dev` prints its demo agent's)"
        ) from None


def _json_object(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise argparse.ArgumentTypeError(f"not JSON: {exc}") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError("must be a JSON object")
    return value
