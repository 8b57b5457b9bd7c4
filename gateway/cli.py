"""The `lkps` command: `serve`, `migrate`, `prune`, `dev` (and `dev token`), and the client's `session` and
`agent`."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Coroutine, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

from config import ConfigError, Settings
from config.settings import MAX_RETENTION_DAYS, database_url_from_env, retention_from_env
from lkps.cli import add_client_commands, run_client_command
from lkps.commands import CommandError, ExitCode, Parser, add_state_dir_argument, state_dir

T = TypeVar("T")


def main(argv: list[str] | None = None, environ: Mapping[str, str] = os.environ) -> int:
    """Run one command; an expected failure is `lkps: <what to do>` on stderr and its own exit status."""
    args = _parser().parse_args(argv)
    try:
        return _run(args, environ)
    except CommandError as error:
        print(f"lkps: {error.message}", file=sys.stderr)  # noqa: T201
        return error.code
    except ConfigError as error:
        print(f"lkps: {error}", file=sys.stderr)  # noqa: T201
        return ExitCode.SETTINGS


def _parser() -> argparse.ArgumentParser:
    parser = Parser(prog="lkps", description="LiveKit Platform Service")
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="run the production server (configured by LKPS_* variables)")
    # A container's server listens on all interfaces.
    serve.add_argument("--host", default="0.0.0.0", help="address to listen on")  # noqa: S104
    serve.add_argument("--port", type=int, default=8000, help="port to listen on")
    serve.add_argument("--workers", type=int, default=1, help="granian worker processes")

    commands.add_parser("migrate", help="bring the database schema to the head revision")

    prune = commands.add_parser(
        "prune", help="delete rows older than the retention period (LKPS_RETENTION_DAYS), in batches"
    )
    prune.add_argument("--days", type=_days, help="override LKPS_RETENTION_DAYS")
    prune.add_argument("--batch-size", type=_positive, default=1000, help="rows per transaction")
    prune.add_argument("--dry-run", action="store_true", help="count what would be deleted, delete nothing")

    dev = commands.add_parser("dev", help="run a self-contained development service")
    dev.add_argument("--port", type=int, default=8000, help="port of lkps (on 127.0.0.1)")
    dev.add_argument(
        "--issuer-port", type=int, default=8001, help="port of the embedded Entra-compatible issuer"
    )
    add_state_dir_argument(dev)
    dev.add_argument(
        "--cors-origin",
        action="append",
        help="a browser origin allowed to call lkps (repeatable; default: the examples/spa dev server's, "
        "as http://127.0.0.1:5173 and http://localhost:5173)",
    )
    dev_commands = dev.add_subparsers(dest="dev_command")
    token = dev_commands.add_parser("token", help="print an access token from the dev issuer")
    add_state_dir_argument(token)
    kind = token.add_mutually_exclusive_group()
    kind.add_argument("--user", default="alice", help="a delegated (SPA) token for this user")
    for flag, holder in (
        ("app", "demo backend service"),
        ("agent", "demo agent"),
        ("admin", "demo operator (admin API)"),
    ):
        kind.add_argument(
            f"--{flag}",
            dest="kind",
            action="store_const",
            const=flag,
            help=f"an app-only token of the {holder}",
        )
    token.set_defaults(kind="user")
    add_client_commands(commands)
    return parser


def _run(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    if "client_command" in args:
        return run_client_command(args, environ)
    if args.command == "serve":
        return _serve(args.host, args.port, args.workers, environ)
    if args.command == "migrate":
        return _migrate(environ)
    if args.command == "prune":
        return _prune(args.days, args.batch_size, args.dry_run, environ)
    if args.dev_command == "token":
        from gateway.dev_state import mint  # noqa: PLC0415 - dev-only imports stay out of `serve`

        print(mint(state_dir(args, environ), args.kind, args.user))  # noqa: T201 - the token is the output
        return ExitCode.OK
    from gateway.dev import running  # noqa: PLC0415

    with running(state_dir(args, environ), args.port, args.issuer_port, args.cors_origin) as env:
        os.environ.update(env)  # granian's workers build the app from the environment, like `serve`
        return _serve("127.0.0.1", args.port, 1, os.environ)


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
