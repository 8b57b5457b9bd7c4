"""Test groups that need something outside the suite (a PostgreSQL server, Redis, a LiveKit server binary).

A group that cannot run is skipped with its reason, `[group] ...`, so the run's summary can say which groups
did not run and why (tests/conftest.py). `LKPS_TEST_REQUIRE="postgres,redis,livekit"` (CI) makes a missing
group fail the run instead.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import pytest

REQUIRE_VARIABLE = "LKPS_TEST_REQUIRE"
_REASON = re.compile(r"\[(?P<group>[a-z]+)\] ")


def _set(variable: str) -> Callable[[str], str | None]:
    return lambda value: None if value else f"{variable} is not set"


def _executable(value: str) -> str | None:
    if not value:
        return "LKPS_LIVEKIT_SERVER_BIN is not set (scripts/livekit-server finds or builds one)"
    if not (Path(value).is_file() and os.access(value, os.X_OK)):
        return f"LKPS_LIVEKIT_SERVER_BIN={value} is not an executable file"
    return None


@dataclass(frozen=True)
class Group:
    name: str
    variable: str
    covers: str
    problem: Callable[[str], str | None]  # the variable's value -> why the group cannot run, or None


GROUPS = {
    group.name: group
    for group in (
        Group(
            "postgres",
            "LKPS_TEST_POSTGRES_URL",
            "every database test on PostgreSQL, and the database drills",
            _set("LKPS_TEST_POSTGRES_URL"),
        ),
        Group(
            "redis", "LKPS_TEST_REDIS_URL", "the rate limit shared through Redis", _set("LKPS_TEST_REDIS_URL")
        ),
        Group("livekit", "LKPS_LIVEKIT_SERVER_BIN", "tests against a real LiveKit server", _executable),
    )
}


def unavailable(name: str, environ: Mapping[str, str] = os.environ) -> str | None:
    """Why group `name` cannot run here, or None when it can."""
    group = GROUPS[name]
    return group.problem((environ.get(group.variable) or "").strip())


def skip_unless_available(name: str) -> None:
    """Skip the calling test or fixture, naming the group and the reason, if the group cannot run."""
    reason = unavailable(name)
    if reason is not None:
        pytest.skip(f"[{name}] {reason}")


def needs(name: str) -> pytest.MarkDecorator:
    """A mark that skips a test whose group cannot run (the same reason as `skip_unless_available`)."""
    reason = unavailable(name)
    return pytest.mark.skipif(reason is not None, reason=f"[{name}] {reason}")


def required(environ: Mapping[str, str] = os.environ) -> list[str]:
    """The groups LKPS_TEST_REQUIRE names; pytest.UsageError for a name that is not a group."""
    names = [name.strip() for name in (environ.get(REQUIRE_VARIABLE) or "").split(",") if name.strip()]
    unknown = [name for name in names if name not in GROUPS]
    if unknown:
        raise pytest.UsageError(
            f"{REQUIRE_VARIABLE}: unknown group(s) {', '.join(unknown)}; known: {', '.join(GROUPS)}"
        )
    return names


def group_of_skip(reason: str) -> str | None:
    """The group a skip reason names (`[postgres] ...`), if any."""
    match = _REASON.search(reason)
    return match["group"] if match and match["group"] in GROUPS else None
