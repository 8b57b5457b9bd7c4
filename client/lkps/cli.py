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
import uuid
from collections.abc import Callable, Mapping, Sequence
from importlib.metadata import entry_points
from typing import TYPE_CHECKING, Any

from lkps.commands import (
    CommandError,
    ExitCode,
    Parser,
    RawDescriptionWithDefaults,
    add_state_dir_argument,
    state_dir,
)

if TYPE_CHECKING:
    from lkps.client import AgentRegistration, LkpsClient, Session
    from lkps.config import ClientConfig, Role

    Commands = argparse._SubParsersAction[Any]  # noqa: SLF001 - argparse names it nowhere else
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

DEV_HINT = (
    "or, against a running `lkps dev`: pass --dev --state-dir <its state directory, .lkps-dev where it runs> "
    "(or set LKPS_DEV_STATE_DIR)"
)
DEV_AGENT_WITHOUT_DEV = (
    "--agent names an agent of `lkps dev`: add --dev (and --state-dir), or drop it and configure the agent's "
    "own LKPS_CLIENT_ID"
)

_CREDENTIALS = frozenset({"LKPS_CLIENT_SECRET", "LKPS_CLIENT_SECRET_FILE", "LKPS_CLIENT_CERTIFICATE"})

# The API's field names in lkps's 400 messages, as the flags that set them on this command line.
_FIELD_FLAGS = {'"agent_entra_app_id"': "--agent", '"metadata"': "--metadata", '"deployment"': "--deployment"}


def main(
    argv: Sequence[str] | None = None,
    command_sets: Sequence[CommandSet] | None = None,
    environ: Mapping[str, str] = os.environ,
) -> int:
    """`lkps`: the client's commands plus `command_sets` (default: the installed `lkps.commands`); an
    expected failure is `lkps: <what to do>` on stderr and its own exit status (see `ExitCode`)."""
    args = build_parser(command_sets).parse_args(argv)
    try:
        status: int = args.run(args, environ)
    except CommandError as error:
        print(f"lkps: {error.message}", file=sys.stderr)  # noqa: T201
        return error.code
    return status


def build_parser(command_sets: Sequence[CommandSet] | None = None) -> argparse.ArgumentParser:
    """The `lkps` command line: the client's commands plus `command_sets` (default: the installed ones)."""
    parser = Parser(prog="lkps", description="LiveKit Platform Service")
    commands = parser.add_subparsers(dest="command", required=True)
    if command_sets is None:
        command_sets = [entry.load() for entry in entry_points(group="lkps.commands")]
    for add in command_sets:
        add(commands)
    add_client_commands(commands)
    return parser


def add_client_commands(commands: Commands) -> None:
    """Add `session start`, `session end`, `agent register` and `agent run` to the `lkps` command."""
    connection = argparse.ArgumentParser(add_help=False)
    group = connection.add_argument_group("connection (flags override LKPS_CLIENT_* variables)")
    for dest, variable in _FLAGS.items():
        group.add_argument(
            f"--{dest.replace('_', '-')}", dest=dest, help=f"{_FLAG_HELP[dest]}; instead of {variable}"
        )
    group.add_argument(
        "--dev",
        action="store_true",
        help="use the credentials of a running `lkps dev` (its demo backend; an agent's with agent commands)",
    )
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
    start.add_argument(
        "--deployment",
        help="the agent's LiveKit deployment whose workers get the job, e.g. staging (default: the workers "
        "started without one)",
    )
    start.set_defaults(run=run_client_command, client_command=_start_session, dev_role="backend")
    end = session_commands.add_parser("end", parents=[connection], help="end a session this client started")
    end.add_argument("room_name", help="the room_name `session start` printed")
    end.set_defaults(
        run=run_client_command,
        client_command=lambda client, args, _dev: client.end_session(args.room_name),
        dev_role="backend",
    )

    registration = argparse.ArgumentParser(add_help=False)
    registration.add_argument(
        "--enforce-client-authz",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="only clients pre-authorized on the agent's app registration may start sessions with it "
        "(default: on; off with a `lkps dev` state, which has no Microsoft Graph to ask)",
    )
    registration.add_argument("--display-name", help="shown to administrators (GET /api/admin/agents)")
    registration.add_argument("--description", help="what the agent does, for administrators")
    registration.add_argument("--agent-version", help="the agent's own version, for administrators")
    registration.add_argument(
        "--agent",
        dest="dev_agent",
        metavar="NAME",
        help="with a `lkps dev` state: act as its agent NAME (`lkps dev agent add NAME`; default: demo)",
    )

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
    from lkps.agent_run import EXIT_HELP  # noqa: PLC0415 - only its help text; kept out of `dev token`

    run = agent_commands.add_parser(
        "run",
        parents=[connection, registration],
        help="register the agent and run an unmodified LiveKit Agents worker, renewing in the background",
        description="Register the agent, run COMMAND with LIVEKIT_URL, LIVEKIT_API_KEY, LIVEKIT_API_SECRET "
        "and LIVEKIT_AGENT_NAME(_OVERRIDE) set to its worker settings, renew before every expiry (the worker "
        "keeps running), pass signals on, and exit with the worker's status.",
        epilog=EXIT_HELP,
        formatter_class=RawDescriptionWithDefaults,
        usage="lkps agent run [options] -- COMMAND [ARG...]",
    )
    run.add_argument(
        "--renew-before",
        type=_positive_seconds,
        default=300.0,
        help="renew when this many seconds of the registration are left (at most half its lifetime)",
    )
    run.add_argument(
        "--deployment",
        help="the LiveKit deployment the worker serves, e.g. staging (sets LIVEKIT_AGENT_DEPLOYMENT; default: "
        "the worker's own, else none)",
    )
    run.add_argument(
        "worker_command",
        nargs=argparse.REMAINDER,
        help="the worker, e.g. python agent.py start (`python` is this virtualenv's when lkps runs from one)",
    )
    run.set_defaults(run=run_agent_command, dev_role="agent")


def run_agent_command(args: argparse.Namespace, environ: Mapping[str, str] = os.environ) -> int:
    """`lkps agent run`: every expected failure is one line on stderr and its own exit status (the
    statuses of `lkps.agent_run`, which stay clear of the worker's own)."""
    from lkps.agent_run import EXIT_NOT_CONFIGURED, run_agent, this_virtualenv  # noqa: PLC0415
    from lkps.config import ClientConfigError  # noqa: PLC0415
    from lkps.worker_settings import WorkerSettingsProvider  # noqa: PLC0415

    command = args.worker_command[1:] if args.worker_command[:1] == ["--"] else args.worker_command
    if not command:
        _say("no worker command: lkps agent run [options] -- python agent.py start")
        return EXIT_NOT_CONFIGURED
    dev = uses_dev_state(args, environ)
    try:
        client = client_config(args, environ).client()
    except ClientConfigError as error:
        _say(f"the agent is not configured: {'; '.join(_with_dev_hint(error.problems, dev, environ))}")
        return EXIT_NOT_CONFIGURED
    if args.deployment is not None:
        environ = {**environ, "LIVEKIT_AGENT_DEPLOYMENT": args.deployment}
    provider = WorkerSettingsProvider(
        client,
        enforce_client_authz=_enforcement(args.enforce_client_authz, dev),
        display_name=args.display_name,
        description=args.description,
        agent_version=args.agent_version,
        renew_before=args.renew_before,
    )
    with client:
        try:
            return run_agent(provider, command, environ=environ, say=_say, virtualenv=this_virtualenv())
        except KeyboardInterrupt:  # Ctrl-C while registering, before there is a worker to stop
            return 130


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
        listing = "\n".join(f"  - {problem}" for problem in _with_dev_hint(error.problems, dev, environ))
        raise CommandError(ExitCode.SETTINGS, f"the client is not configured:\n{listing}") from None
    try:
        with client:
            result = args.client_command(client, args, dev)
    except (ConnectionFailed, CredentialError) as error:
        if isinstance(error, ConnectionFailed) and (args.url or not dev):
            hint = "is lkps running there? (--url)"
        elif dev:
            hint = f"is `lkps dev` running with its state in {state_dir(args, environ)}?"
        else:
            hint = "check the Entra settings (LKPS_CLIENT_*)"
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
    # Printing the worker settings (with their secret) is this command's purpose: a script consumes the JSON.
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
    from lkps.config import ClientConfig, ClientConfigError  # noqa: PLC0415 - see run_client_command

    if uses_dev_state(args, environ):
        directory = state_dir(args, environ)
        if not args.dev:
            note = f"lkps: no LKPS_CLIENT_* settings; using the `lkps dev` state in {directory}"
            print(note, file=sys.stderr)  # noqa: T201
        dev_role: Role = args.dev_role
        agent = getattr(args, "dev_agent", None)
        return ClientConfig.from_dev_state(directory, dev_role, agent).with_url(args.url)
    if getattr(args, "dev_agent", None):
        raise ClientConfigError([DEV_AGENT_WITHOUT_DEV])
    flags = {variable: getattr(args, dest) for dest, variable in _FLAGS.items() if getattr(args, dest)}
    merged = dict(environ)
    if flags.keys() & _CREDENTIALS:
        # A credential given as a flag replaces the environment's, whichever form that one has.
        for name in _CREDENTIALS:
            merged.pop(name, None)
    return ClientConfig.from_env(merged | flags)


def _start_session(client: LkpsClient, args: argparse.Namespace, _dev: bool) -> Session:
    return client.start_session(args.agent, args.metadata, deployment=args.deployment)


def _with_dev_hint(problems: list[str], dev: bool, environ: Mapping[str, str]) -> list[str]:
    """Nothing configured outside dev mode: the way to a running `lkps dev` may be what was meant."""
    if dev or any(name.startswith("LKPS_CLIENT_") for name in environ):
        return problems
    return [*problems, DEV_HINT]


def _enforcement(flag: bool | None, dev: bool) -> bool:
    """`--[no-]enforce-client-authz`, else on, but off with a dev state: lkps dev has no Microsoft Graph
    credential, so an enforcing agent would make every session start answer 503. Said either way."""
    if flag is None:
        if dev:
            note = "lkps: dev state: registering with client authorization off (no Microsoft Graph in dev)"
            print(note, file=sys.stderr)  # noqa: T201
        return not dev
    if flag and dev:
        note = "lkps: client authorization on: in `lkps dev` (no Microsoft Graph) session starts to it answer 503"
        print(note, file=sys.stderr)  # noqa: T201
    return flag


def _register_agent(client: LkpsClient, args: argparse.Namespace, dev: bool) -> AgentRegistration:
    return client.register_agent(
        enforce_client_authz=_enforcement(args.enforce_client_authz, dev),
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
