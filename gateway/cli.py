"""The server's `lkps` commands: `serve`, `migrate`, `prune`, `dev` (and `dev token`).

The `lkps` console script belongs to the client distribution (lkps-client, `lkps.cli:main`, with `session`
and `agent`); this distribution adds its commands through the `lkps.commands` entry point, so one `lkps`
has them all wherever the server is installed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import lkps.cli
from config import ConfigError, Settings
from config.settings import MAX_RETENTION_DAYS, database_url_from_env, retention_from_env


def main(argv: list[str] | None = None) -> int:
    """`lkps` with the server's and the client's commands, whatever the installed entry points say."""
    return lkps.cli.main(argv, command_sets=[add_server_commands])


def add_server_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """The `lkps.commands` entry point: add `serve`, `migrate`, `prune` and `dev` to the `lkps` command."""
    serve = commands.add_parser("serve", help="run the production server (configured by LKPS_* variables)")
    serve.add_argument("--host", default="0.0.0.0")  # noqa: S104 - a container's server listens on all interfaces
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--workers", type=int, default=1)
    serve.set_defaults(run=lambda args: _serve(args.host, args.port, args.workers, os.environ))

    migrate = commands.add_parser("migrate", help="bring the database schema to the head revision")
    migrate.set_defaults(run=lambda _: _migrate())

    prune = commands.add_parser(
        "prune", help="delete rows older than the retention period (LKPS_RETENTION_DAYS), in batches"
    )
    prune.add_argument("--days", type=_days, help="override LKPS_RETENTION_DAYS")
    prune.add_argument(
        "--batch-size", type=_positive, default=1000, help="rows per transaction (default 1000)"
    )
    prune.add_argument("--dry-run", action="store_true", help="count what would be deleted, delete nothing")
    prune.set_defaults(run=lambda args: _prune(args.days, args.batch_size, args.dry_run))

    dev = commands.add_parser("dev", help="run a self-contained development service")
    dev.add_argument("--port", type=int, default=8000)
    dev.add_argument("--issuer-port", type=int, default=8001)
    dev.add_argument(
        "--livekit-port",
        type=int,
        default=7880,
        help="the dev LiveKit server's port; WebRTC media uses the next two (TCP, UDP) (default 7880)",
    )
    dev.add_argument("--state-dir", type=Path, default=Path(".lkps-dev"))
    dev.add_argument(
        "--cors-origin",
        action="append",
        help="a browser origin allowed to call lkps (repeatable; default: the examples/spa dev server's)",
    )
    dev.set_defaults(run=_run_dev)
    dev_commands = dev.add_subparsers(dest="dev_command")
    token = dev_commands.add_parser("token", help="print an access token from the dev issuer")
    kind = token.add_mutually_exclusive_group()
    kind.add_argument("--user", default="alice", help="a delegated (SPA) token for this user (default)")
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


def _run_dev(args: argparse.Namespace) -> int:
    if args.dev_command == "token":
        from gateway.dev import mint  # noqa: PLC0415 - dev-only imports stay out of `serve`

        print(mint(args.state_dir, args.kind, args.user))  # noqa: T201 - the token is the command's output
        return 0
    return _dev(args.port, args.issuer_port, args.livekit_port, args.state_dir, args.cors_origin)


def _fail(error: ConfigError) -> int:
    print(f"lkps: {error}", file=sys.stderr)  # noqa: T201
    return 2


def _serve(host: str, port: int, workers: int, environ: dict[str, str] | os._Environ[str]) -> int:
    try:
        Settings.from_env(environ)  # refuse to start with every problem listed, before forking workers
    except ConfigError as error:
        return _fail(error)
    from granian import Granian  # noqa: PLC0415 - imported only by the command that runs it
    from granian.constants import Interfaces, Loops  # noqa: PLC0415

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
    return 0


def _migrate() -> int:
    from gateway.persistence.migrate import upgrade_url  # noqa: PLC0415

    try:
        url = database_url_from_env(os.environ)
    except ConfigError as error:
        return _fail(error)
    revision = asyncio.run(upgrade_url(url))
    print(f"lkps: database at revision {revision}")  # noqa: T201
    return 0


def _prune(days: int | None, batch_size: int, dry_run: bool) -> int:
    from gateway.persistence.db import create_engine  # noqa: PLC0415
    from gateway.persistence.retention import prune  # noqa: PLC0415

    try:
        url, configured_days = retention_from_env(os.environ)
    except ConfigError as error:
        return _fail(error)
    cutoff = datetime.now(UTC) - timedelta(days=days or configured_days)

    async def run() -> dict[str, int]:
        engine = create_engine(url, pool_size=1)
        try:
            return await prune(engine, cutoff, batch_size, dry_run=dry_run)
        finally:
            await engine.dispose()

    counts = asyncio.run(run())
    report = {
        "cutoff": cutoff.isoformat(),
        "dry_run": dry_run,
        "would_delete" if dry_run else "deleted": counts,
    }
    print(json.dumps(report))  # noqa: T201 - the report is the command's output (CronJob logs)
    return 0


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is not a positive number")
    return value


def _days(text: str) -> int:
    value = _positive(text)
    if value > MAX_RETENTION_DAYS:
        raise argparse.ArgumentTypeError(f"{value} is more than {MAX_RETENTION_DAYS}")
    return value


def _dev(
    port: int, issuer_port: int, livekit_port: int, state_dir: Path, cors_origins: list[str] | None
) -> int:
    from gateway.dev import instructions, start  # noqa: PLC0415

    services = start(
        state_dir, issuer_port=issuer_port, port=port, livekit_port=livekit_port, cors_origins=cors_origins
    )
    try:
        os.environ.update(services.env)  # granian's workers build the app from the environment, like `serve`
        # The printed commands must work in a fresh shell, where this virtualenv is not activated.
        script = Path(sys.executable).with_name("lkps")
        lkps = str(script) if script.exists() else shutil.which("lkps") or f"{sys.executable} -m gateway.cli"
        base_url = f"http://127.0.0.1:{port}"
        (state_dir / "url").write_text(base_url)  # where `lkps session start --dev` finds this service
        print(instructions(services, base_url, lkps))  # noqa: T201
        return _serve("127.0.0.1", port, 1, os.environ)
    finally:
        services.stop()


if __name__ == "__main__":
    sys.exit(main())
