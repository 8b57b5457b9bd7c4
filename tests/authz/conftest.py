"""Fixtures for the authz tests: the anyio backend, a fake clock, a fake Entra tenant and a started validator."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from authz.entra import EntraValidator, build_validator
from tests.support.clock import FakeClock
from tests.support.entra import FakeEntra, make_settings


@pytest.fixture(scope="session")
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def fake(clock: FakeClock) -> FakeEntra:
    return FakeEntra(clock=clock)


@pytest.fixture
async def http(fake: FakeEntra) -> AsyncIterator[httpx.AsyncClient]:
    async with fake.client() as client:
        yield client


@pytest.fixture
async def validator(http: httpx.AsyncClient, clock: FakeClock) -> AsyncIterator[EntraValidator]:
    """A validator built like the product's, with its keys loaded from the fake tenant."""
    started = build_validator(make_settings(), http, clock)
    await started.start()
    yield started
    await started.aclose()
