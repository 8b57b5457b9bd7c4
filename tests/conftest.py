"""Suite-wide fixtures: the anyio backend and a migrated database per test (SQLite, and PostgreSQL when
LKPS_TEST_POSTGRES_URL names a server)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.db import DB_KINDS, TestDatabases
from tests.support.dev_service import DevService, free_port, running_dev_service


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
    """A migrated, empty database URL, once per backend."""
    return test_databases.fresh(request.param, tmp_path)


@pytest.fixture(scope="session")
def lkps_dev(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevService]:
    """One real `lkps dev` process for the suite, allowing a browser origin on a free port."""
    with running_dev_service(
        tmp_path_factory.mktemp("lkps-dev"), f"http://127.0.0.1:{free_port()}"
    ) as service:
        yield service
