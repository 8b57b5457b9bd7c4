"""The server's `lkps` commands: `serve`, `migrate`, `prune`, `dev` (and `dev token`).

The `lkps` console script belongs to the client distribution (lkps-client, `lkps.cli:main`, with `session`
and `agent`); this distribution adds its commands through the `lkps.commands` entry point, so one `lkps`
has them all wherever the server is installed.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Coroutine, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import lkps.cli
from config import ConfigError, Settings
from config.settings import MAX_RETENTION_DAYS, database_url_from_env, retention_from_env
from lkps.commands import CommandError, ExitCode, add_state_dir_argument, state_dir
from lkps.dev_state import AGENT_NAME_RULE, DEMO_AGENT_NAME

T = TypeVar("T")


def main(argv: list[str] | None = None, environ: Mapping[str, str] = os.environ) -> int:
    """`lkps` with the server's and the client's commands, whatever the installed entry points say."""
    return lkps.cli.main(argv, command_sets=[add_server_commands], environ=environ)


def parser() -> argparse.ArgumentParser:
    """The whole `lkps` command line, with the server's commands."""
    return lkps.cli.build_parser([add_server_commands])


def add_server_commands(commands: argparse._SubParsersAction[Any]) -> None:
    """The `lkps.commands` entry point: add `serve`, `migrate`, `prune` and `dev` to the `lkps` command."""
    serve = commands.add_parser(
        "serve",
        help="run the production server (configured by LKPS_* variables)",
        description="Run the production server. Everything but the listening address comes from LKPS_* "
        "environment variables (each secret also from <NAME>_FILE); every problem is listed at start-up. "
        "See the configuration reference in the README.",
    )
    # A container's server listens on all interfaces.
    serve.add_argument("--host", default="0.0.0.0", help="address to listen on")  # noqa: S104
    serve.add_argument("--port", type=int, default=8000, help="port to listen on")
    serve.add_argument("--workers", type=int, default=1, help="granian worker processes")
    serve.set_defaults(
        run=_settings(lambda args, environ: _serve(args.host, args.port, args.workers, environ))
    )

    migrate = commands.add_parser("migrate", help="bring the database schema to the head revision")
    migrate.set_defaults(run=_settings(lambda _, environ: _migrate(environ)))

    prune = commands.add_parser(
        "prune", help="delete rows older than the retention period (LKPS_RETENTION_DAYS), in batches"
    )
    prune.add_argument("--days", type=_days, help="override LKPS_RETENTION_DAYS")
    prune.add_argument("--batch-size", type=_positive, default=1000, help="rows per transaction")
    prune.add_argument("--dry-run", action="store_true", help="count what would be deleted, delete nothing")
    prune.set_defaults(
        run=_settings(lambda args, environ: _prune(args.days, args.batch_size, args.dry_run, environ))
    )

    dev = commands.add_parser("dev", help="run a self-contained development service")
    dev.add_argument("--port", type=int, default=8000, help="port of lkps (on 127.0.0.1)")
    dev.add_argument(
        "--issuer-port", type=int, default=8001, help="port of the embedded Entra-compatible issuer"
    )
    dev.add_argument(
        "--livekit-port",
        type=int,
        default=7880,
        help="port of the dev LiveKit server; WebRTC media uses the next two (TCP, UDP)",
    )
    add_state_dir_argument(dev)
    dev.add_argument(
        "--no-demo-agent",
        dest="demo_agent",
        action="store_false",
        help="run no demo agent worker (and do not register it): only your own agents take sessions",
    )
    dev.add_argument(
        "--cors-origin",
        action="append",
        help="a browser origin allowed to call lkps (repeatable; default: the examples/spa dev server's, "
        "as http://127.0.0.1:5173 and http://localhost:5173)",
    )
    dev.set_defaults(run=_settings(_run_dev))
    dev_commands = dev.add_subparsers(dest="dev_command")
    token = dev_commands.add_parser("token", help="print an access token from the dev issuer")
    add_state_dir_argument(token)
    kind = token.add_mutually_exclusive_group()
    kind.add_argument("--user", default="alice", help="a delegated (SPA) token for this user")
    for flag, holder in (("app", "demo backend service"), ("admin", "demo operator (admin API)")):
        kind.add_argument(
            f"--{flag}",
            dest="kind",
            action="store_const",
            const=flag,
            default=argparse.SUPPRESS,  # a user token unless one of these is given
            help=f"an app-only token of the {holder}",
        )
    kind.add_argument(
        "--agent",
        nargs="?",
        const=DEMO_AGENT_NAME,
        metavar="NAME",
        help=f"an app-only token of the agent NAME (`lkps dev agent list`; without NAME: {DEMO_AGENT_NAME})",
    )

    agent = dev_commands.add_parser("agent", help="your own agents in dev mode: add one, list them")
    agent_commands = agent.add_subparsers(dest="agent_command", required=True)
    add = agent_commands.add_parser(
        "add",
        help="add an agent (its Entra application in the dev issuer) and print its app id; idempotent",
        description="Add the agent NAME to the dev issuer, also while `lkps dev` runs, and print its app id "
        "(the same for the same name). Run its worker with: lkps agent run --dev --agent NAME -- python "
        "agent.py start",
    )
    add.add_argument("name", metavar="NAME", help=f"the agent's name: {AGENT_NAME_RULE}")
    add_state_dir_argument(add)
    listing = agent_commands.add_parser("list", help="list the dev agents: name and app id")
    add_state_dir_argument(listing)


Command = Callable[[argparse.Namespace, Mapping[str, str]], int]


def _settings(command: Command) -> Command:
    """The server's settings problems (all of them listed) as the settings' one failure and exit status."""

    def run(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
        try:
            return command(args, environ)
        except ConfigError as error:
            raise CommandError(ExitCode.SETTINGS, str(error)) from None

    return run


def _run_dev(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    if args.dev_command == "token":
        from gateway.dev_state import mint  # noqa: PLC0415 - dev-only imports stay out of `serve`

        kind = "agent" if args.agent else getattr(args, "kind", "user")
        token = mint(state_dir(args, environ), kind, args.user, args.agent or DEMO_AGENT_NAME)
        print(token)  # noqa: T201 - the token is the output
        return ExitCode.OK
    if args.dev_command == "agent":
        from gateway.dev_agents import add_agent, list_agents  # noqa: PLC0415

        directory = state_dir(args, environ)
        return add_agent(directory, args.name) if args.agent_command == "add" else list_agents(directory)
    from gateway.dev import running  # noqa: PLC0415

    directory = state_dir(args, environ)
    with running(
        directory,
        args.port,
        args.issuer_port,
        args.livekit_port,
        args.cors_origin,
        demo_agent=args.demo_agent,
    ) as dev:
        return dev.serve(args.port)


def _serve(host: str, port: int, workers: int, environ: Mapping[str, str]) -> int:
    Settings.from_env(environ)  # refuse to start with every problem listed, before forking workers
    from granian import Granian  # noqa: PLC0415 - imported only by the command that runs it
    from granian.constants import Interfaces, Loops  # noqa: PLC0415

    from gateway.ports import require_free  # noqa: PLC0415

    require_free(host, port, "--port")
    Granian(
        "gateway.app:app_from_env",
        factory=True,
        address=host,
        port=port,
        workers=workers,
        interface=Interfaces.ASGI,
        # Measured: uvloop's cheaper thread-safe wake-ups take ~25-40% more session starts per core.
        loop=Loops.uvloop,
        log_access=False,  # lkps writes its own access line with request id and outcome
        workers_kill_timeout=30,
    ).serve()
    return ExitCode.OK


def _migrate(environ: Mapping[str, str]) -> int:
    from gateway.persistence.migrate import upgrade_url  # noqa: PLC0415

    url = database_url_from_env(environ)
    revision = _on_database(url, lambda: upgrade_url(url))
    print(f"lkps: database at revision {revision}")  # noqa: T201
    return ExitCode.OK


def _prune(days: int | None, batch_size: int, dry_run: bool, environ: Mapping[str, str]) -> int:
    from gateway.persistence.db import create_engine  # noqa: PLC0415
    from gateway.persistence.retention import prune  # noqa: PLC0415

    url, configured_days = retention_from_env(environ)
    cutoff = datetime.now(UTC) - timedelta(days=days or configured_days)

    async def run() -> dict[str, int]:
        engine = create_engine(url, pool_size=1)
        try:
            return await prune(engine, cutoff, batch_size, dry_run=dry_run)
        finally:
            await engine.dispose()

    counts = _on_database(url, run)
    report = {
        "cutoff": cutoff.isoformat(),
        "dry_run": dry_run,
        "would_delete" if dry_run else "deleted": counts,
    }
    print(json.dumps(report))  # noqa: T201 - the report is the command's output (CronJob logs)
    return ExitCode.OK


def _on_database(url: str, work: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Run `work` against the database at `url`; a database that cannot be reached or opened is a
    CommandError naming it (password hidden) and the setting to check."""
    import asyncio  # noqa: PLC0415 - 0.15 s that `lkps dev token` does not need

    from sqlalchemy.engine import make_url  # noqa: PLC0415
    from sqlalchemy.exc import DBAPIError, SQLAlchemyError  # noqa: PLC0415

    try:
        return asyncio.run(work())
    except (SQLAlchemyError, OSError, TimeoutError) as exc:
        cause = exc.orig if isinstance(exc, DBAPIError) else exc
        reason = (str(cause).strip().splitlines() or [type(cause).__name__])[0]
        where = make_url(url).render_as_string(hide_password=True)
        message = f"the database {where} cannot be used ({reason}): is it running? check LKPS_DATABASE_URL"
        raise CommandError(ExitCode.DATABASE_UNAVAILABLE, message) from None


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is not a positive number")
    return value


def _days(text: str) -> int:
    value = _positive(text)
    if value > MAX_RETENTION_DAYS:
        raise argparse.ArgumentTypeError(f"{value} is more than {MAX_RETENTION_DAYS}")
    return value


if __name__ == "__main__":
    sys.exit(main())
