"""The suite's summary names the test groups whose tests were skipped, and LKPS_TEST_REQUIRE turns a group
that cannot run into a failure."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.groups import required, unavailable

ROOT = Path(__file__).resolve().parents[1]
SMALL = "tests/gateway/persistence/test_migrations.py"  # a database test, so PostgreSQL is a group of it


def run_pytest(**environ: str) -> subprocess.CompletedProcess[str]:
    """A small part of the suite in its own pytest process, without PostgreSQL, Redis or LiveKit settings."""
    groups = ("LKPS_TEST_POSTGRES_URL", "LKPS_TEST_REDIS_URL", "LKPS_LIVEKIT_SERVER_BIN", "LKPS_TEST_REQUIRE")
    env = {k: v for k, v in os.environ.items() if k not in groups} | environ
    return subprocess.run(
        [sys.executable, "-m", "pytest", SMALL, "-q", "-p", "no:cacheprovider"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip


def test_the_summary_names_each_group_that_did_not_run_and_why() -> None:
    """Without the servers, the run passes, and its summary lists postgres with its skipped tests and the
    variable that is missing; redis and livekit, which none of the selected tests needs, are not named."""
    result = run_pytest()
    assert result.returncode == 0, result.stdout
    summary = result.stdout[result.stdout.index("test groups that did not run") :]
    assert "postgres: 2 tests skipped" in summary
    assert "LKPS_TEST_POSTGRES_URL is not set" in summary
    assert "redis" not in summary
    assert "livekit" not in summary


def test_a_required_group_that_cannot_run_fails_the_run() -> None:
    """LKPS_TEST_REQUIRE=postgres without LKPS_TEST_POSTGRES_URL is an error before any test, not skips."""
    result = run_pytest(LKPS_TEST_REQUIRE="postgres,redis")
    assert result.returncode == pytest.ExitCode.USAGE_ERROR, result.stdout
    assert "LKPS_TEST_REQUIRE requires groups that cannot run" in result.stderr
    assert "postgres (LKPS_TEST_POSTGRES_URL is not set)" in result.stderr
    assert "redis (LKPS_TEST_REDIS_URL is not set)" in result.stderr


def test_livekit_needs_an_executable(tmp_path: Path) -> None:
    """The LiveKit group runs only when LKPS_LIVEKIT_SERVER_BIN names an executable file."""
    plain = tmp_path / "livekit-server"
    plain.write_text("#!/bin/sh\n")
    assert unavailable("livekit", {"LKPS_LIVEKIT_SERVER_BIN": str(plain)}) == (
        f"LKPS_LIVEKIT_SERVER_BIN={plain} is not an executable file"
    )
    plain.chmod(0o755)
    assert unavailable("livekit", {"LKPS_LIVEKIT_SERVER_BIN": str(plain)}) is None


def test_an_unknown_required_group_is_refused() -> None:
    """A name in LKPS_TEST_REQUIRE that is no group is a usage error naming the known groups."""
    assert required({"LKPS_TEST_REQUIRE": " postgres , livekit "}) == ["postgres", "livekit"]
    with pytest.raises(pytest.UsageError, match="unknown group"):
        required({"LKPS_TEST_REQUIRE": "postgress"})
