"""Suite-wide fixtures: the anyio backend and a migrated database per test (SQLite, and PostgreSQL when
LKPS_TEST_POSTGRES_URL names a server)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.db import DB_KINDS, TestDatabases


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
