"""Suite-wide fixtures: the anyio backend and a migrated database per test (SQLite, and PostgreSQL when
LKPS_TEST_POSTGRES_URL names a server); the summary of the groups that did not run, and LKPS_TEST_REQUIRE;
the app's own logging configuration, switched on for one test."""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Iterator

import pytest
import structlog

from config import Settings
from gateway.observability.logging import configure_logging, logged_secrets
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
    """Name every group that did not run, why, and how many of its tests were skipped."""
    skipped: Counter[str] = Counter()
    for report in terminalreporter.stats.get("skipped", []):
        longrepr = report.longrepr
        reason = longrepr[2] if isinstance(longrepr, tuple) else str(longrepr)
        if (group := group_of_skip(reason)) is not None:
            skipped[group] += 1
    lines = [
        f"{name}: {skipped[name]} tests skipped ({group.covers}): {reason}"
        for name, group in GROUPS.items()
        if (reason := unavailable(name)) is not None
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


_NOISY = ("httpx", "httpcore", "msal", "urllib3", "hpack", "_granian")


@pytest.fixture
def debug_logging() -> Iterator[Callable[..., None]]:
    """Switches the app's own logging configuration on at debug level (call it inside the test, where
    `capfd` has its final stdout), and undoes it afterwards so other tests are unaffected. Given the
    gateway's settings, it configures logging exactly as `app_from_env` does (format and secrets).

    Logger caching is turned off so that no module-level logger stays bound to this configuration.
    """
    root = logging.getLogger()
    saved_root = (root.handlers[:], root.level)
    saved = {name: (logging.getLogger(name).level, logging.getLogger(name).handlers[:]) for name in _NOISY}

    def enable(settings: Settings | None = None) -> None:
        if settings is None:
            configure_logging("debug", "json")
        else:
            configure_logging(settings.log_level, settings.log_format, logged_secrets(settings))
        structlog.configure(cache_logger_on_first_use=False)

    yield enable
    structlog.reset_defaults()
    root.handlers[:], level = saved_root
    root.setLevel(level)
    for name, (saved_level, handlers) in saved.items():
        logging.getLogger(name).setLevel(saved_level)
        logging.getLogger(name).handlers[:] = handlers
