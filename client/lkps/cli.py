"""The `lkps` command of the client: `session start|end`, `agent register` (JSON) and `agent run`.

Where the server is installed, its commands (`serve`, `migrate`, `prune`, `dev`) join through the
`lkps.commands` entry point group. Configured by flags and `LKPS_CLIENT_*` variables (see `lkps.config`).
With `--dev`, or automatically when no `LKPS_CLIENT_*` variable or flag is given and a `lkps dev` state
directory exists, the commands use the demo backend service's (or demo agent's) credentials from that
state, through the real client credentials flow against the embedded issuer.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from importlib.metadata import entry_points
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lkps.agent_run import EXIT_HELP, EXIT_NOT_CONFIGURED, run_agent
from lkps.client import AgentRegistration, LkpsClient, Session
from lkps.config import ClientConfig, ClientConfigError, Role
from lkps.errors import LkpsError
from lkps.worker_settings import WorkerSettingsProvider

if TYPE_CHECKING:
    Commands = argparse._SubParsersAction[argparse.ArgumentParser]  # noqa: SLF001 - argparse names it nowhere else
    CommandSet = Callable[[Commands], None]

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


def main(argv: Sequence[str] | None = None, command_sets: Sequence[CommandSet] | None = None) -> int:
    """`lkps`: the client's commands plus `command_sets` (default: the installed `lkps.commands`)."""
    parser = argparse.ArgumentParser(prog="lkps", description="LiveKit Platform Service")
    commands = parser.add_subparsers(dest="command", required=True)
    if command_sets is None:
        command_sets = [entry.load() for entry in entry_points(group="lkps.commands")]
    for add in command_sets:
        add(commands)
    add_client_commands(commands)
    args = parser.parse_args(argv)
    status: int = args.run(args)
    return status


def add_client_commands(commands: Commands) -> None:
    """Add `session start`, `session end`, `agent register` and `agent run` to the `lkps` command."""
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
    start.set_defaults(run=run_client_command, client_command=_start_session, dev_role="backend")
    end = session_commands.add_parser("end", parents=[connection], help="end a session this client started")
    end.add_argument("room_name", help="the room_name `session start` printed")
    end.set_defaults(
        run=run_client_command,
        client_command=lambda client, args: client.end_session(args.room_name),
        dev_role="backend",
    )

    registration = argparse.ArgumentParser(add_help=False)
    registration.add_argument(
        "--no-enforce-client-authz",
        dest="enforce_client_authz",
        action="store_false",
        help="let any allowed client start sessions, not only those pre-authorized on the agent's app",
    )
    registration.add_argument("--display-name")
    registration.add_argument("--description")
    registration.add_argument("--agent-version")

    agent = commands.add_parser(
        "agent", help="register an agent, or run its worker, with its own credentials"
    )
    agent_commands = agent.add_subparsers(dest="agent_command", required=True)
    register = agent_commands.add_parser(
        "register",
        parents=[connection, registration],
        help="register (or renew) the agent once and print its worker settings as JSON",
    )
    register.set_defaults(run=run_client_command, client_command=_register_agent, dev_role="agent")
    run = agent_commands.add_parser(
        "run",
        parents=[connection, registration],
        help="register the agent and run an unmodified LiveKit Agents worker, renewing in the background",
        description="Register the agent, run COMMAND with LIVEKIT_URL, LIVEKIT_API_KEY, LIVEKIT_API_SECRET "
        "and LIVEKIT_AGENT_NAME(_OVERRIDE) set to its worker settings, renew before every expiry (the worker "
        "keeps running), pass signals on, and exit with the worker's status.",
        epilog=EXIT_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        usage="lkps agent run [options] -- COMMAND [ARG...]",
    )
    run.add_argument(
        "--renew-before",
        type=_positive_seconds,
        default=300.0,
        help="renew when this many seconds of the registration are left (default 300; at most half its lifetime)",
    )
    run.add_argument(
        "worker_command", nargs=argparse.REMAINDER, help="the worker, e.g. python agent.py start"
    )
    run.set_defaults(run=run_agent_command, dev_role="agent")


def run_agent_command(args: argparse.Namespace, environ: Mapping[str, str] = os.environ) -> int:
    """`lkps agent run`: every expected failure is one line on stderr and its own exit status."""
    command = args.worker_command[1:] if args.worker_command[:1] == ["--"] else args.worker_command
    if not command:
        _say("no worker command: lkps agent run [options] -- python agent.py start")
        return EXIT_NOT_CONFIGURED
    try:
        client = client_config(args, environ).client()
    except ClientConfigError as error:
        _say(f"the agent is not configured: {'; '.join(error.problems)}")
        return EXIT_NOT_CONFIGURED
    provider = WorkerSettingsProvider(
        client,
        enforce_client_authz=args.enforce_client_authz,
        display_name=args.display_name,
        description=args.description,
        agent_version=args.agent_version,
        renew_before=args.renew_before,
    )
    with client:
        try:
            return run_agent(provider, command, environ=environ, say=_say)
        except KeyboardInterrupt:  # Ctrl-C while registering, before there is a worker to stop
            return 130


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
    # Printing the worker settings (with their secret) is this command's purpose: a script consumes the JSON.
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


def _say(line: str) -> None:
    print(f"lkps agent run: {line}", file=sys.stderr, flush=True)  # noqa: T201


def _positive_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{value} is not a positive number of seconds")
    return value


def _json_object(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise argparse.ArgumentTypeError(f"not JSON: {exc}") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError("must be a JSON object")
    return value
