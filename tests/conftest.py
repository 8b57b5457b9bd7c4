"""Suite-wide fixtures: the anyio backend and a migrated database per test (SQLite, and PostgreSQL when
LKPS_TEST_POSTGRES_URL names a server); the summary of the groups that did not run, and LKPS_TEST_REQUIRE."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator

import pytest

from tests.support.db import DB_KINDS, TestDatabases
from tests.support.dev_service import DevService, free_port, running_dev_service
from tests.support.groups import (
    GROUPS,
    REQUIRE_VARIABLE,
    group_of_skip,
    required,
    skip_unless_available,
    unavailable,
)


def pytest_configure(config: pytest.Config) -> None:
    """A group LKPS_TEST_REQUIRE names that cannot run fails the run before any test, instead of skipping."""
    missing = [f"{name} ({reason})" for name in required() if (reason := unavailable(name)) is not None]
    if missing:
        raise pytest.UsageError(f"{REQUIRE_VARIABLE} requires groups that cannot run: {'; '.join(missing)}")


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Name every group whose tests were skipped, why, and how many (a group none of the selected tests
    needs is not named)."""
    skipped: Counter[str] = Counter()
    for report in terminalreporter.stats.get("skipped", []):
        longrepr = report.longrepr
        reason = longrepr[2] if isinstance(longrepr, tuple) else str(longrepr)
        if (group := group_of_skip(reason)) is not None:
            skipped[group] += 1
    lines = [
        f"{name}: {skipped[name]} tests skipped ({group.covers}): {reason}"
        for name, group in GROUPS.items()
        if skipped[name] and (reason := unavailable(name)) is not None
    ]
    if lines:
        terminalreporter.write_sep("=", "test groups that did not run", yellow=True)
        for line in lines:
            terminalreporter.write_line(line)


@pytest.fixture(scope="session")
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="session")
def test_databases(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestDatabases]:
    databases = TestDatabases(tmp_path_factory.mktemp("db"))
    yield databases
    databases.close()


@pytest.fixture(params=DB_KINDS)
def database_url(request: pytest.FixtureRequest, test_databases: TestDatabases, tmp_path) -> str:
    """A migrated, empty database URL, once per backend (PostgreSQL skipped, naming why, without a server)."""
    if request.param == "postgres":
        skip_unless_available("postgres")
    return test_databases.fresh(request.param, tmp_path)


@pytest.fixture(scope="session")
def lkps_dev(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevService]:
    """One real `lkps dev` process for the suite, allowing a browser origin on a free port."""
    with running_dev_service(
        tmp_path_factory.mktemp("lkps-dev"), f"http://127.0.0.1:{free_port()}"
    ) as service:
        yield service
