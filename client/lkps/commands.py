"""What every `lkps` command shares: its exit codes, the one-line failure, and where the `lkps dev` state is.

Kept free of heavy imports: `lkps dev token` loads this and the dev issuer's keys, nothing else.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Mapping
from enum import IntEnum
from pathlib import Path
from typing import Any, NoReturn

STATE_DIR_VARIABLE = "LKPS_DEV_STATE_DIR"
DEFAULT_STATE_DIR = Path(".lkps-dev")


class ExitCode(IntEnum):
    """The exit status of every `lkps` command; each expected failure has its own (docs/reference/cli.md)."""

    OK = 0
    REFUSED = 1  # lkps answered with an error (its error JSON is on stderr)
    SETTINGS = 2  # a setting is missing or invalid (all of them listed)
    PORT_BUSY = 3  # a port to listen on is in use
    DATABASE_UNAVAILABLE = 4  # the database cannot be reached or opened
    UNREACHABLE = 5  # lkps or the Entra issuer cannot be reached, or gives no token
    DEV_STATE = 6  # no `lkps dev` state there, or another `lkps dev` runs on it
    LIVEKIT = 7  # the dev LiveKit server did not start (its log says why)
    USAGE = 64  # the command line itself is wrong (sysexits' EX_USAGE)


class CommandError(Exception):
    """An expected failure: `lkps: <message>` on stderr, and `code` as the exit status."""

    def __init__(self, code: ExitCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class _DefaultsInHelp(argparse.ArgumentDefaultsHelpFormatter):
    """Each flag's default after its help, unless there is none to show (an unset option, a switch)."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default is None or action.default is False:
            return action.help
        return super()._get_help_string(action)


class RawDescriptionWithDefaults(argparse.RawDescriptionHelpFormatter, _DefaultsInHelp):
    """For a command whose description and epilog are laid out by hand (a table), with the defaults too."""


class Parser(argparse.ArgumentParser):
    """argparse with every flag's default in its help, and usage errors under their own exit status."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", _DefaultsInHelp)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(ExitCode.USAGE, f"{self.prog}: error: {message}\n")


def add_state_dir_argument(parser: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    """`--state-dir`, the same on every command that uses a `lkps dev` state (absent unless given, so
    `lkps dev --state-dir X token` and `lkps dev token --state-dir X` mean the same)."""
    parser.add_argument(
        "--state-dir",
        type=Path,
        default=argparse.SUPPRESS,
        help=f"the `lkps dev` state directory (default: ${STATE_DIR_VARIABLE}, else ./{DEFAULT_STATE_DIR})",
    )


def state_dir(args: argparse.Namespace, environ: Mapping[str, str] = os.environ) -> Path:
    """The flag, else the environment variable, else `.lkps-dev` in the current directory; absolute."""
    given: Path | None = getattr(args, "state_dir", None)
    variable = (environ.get(STATE_DIR_VARIABLE) or "").strip()
    return (given or (Path(variable) if variable else DEFAULT_STATE_DIR)).expanduser().absolute()
