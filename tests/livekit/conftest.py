"""One real LiveKit server and one real `lkps serve` per module and database backend."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.db import DB_KINDS, POSTGRES_SERVER
from tests.support.livekit_server import LiveKitStack, livekit_stack


@pytest.fixture(scope="module", params=DB_KINDS)
def stack(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveKitStack]:
    with livekit_stack(tmp_path_factory.mktemp("livekit"), request.param, POSTGRES_SERVER or "") as running:
        yield running


@pytest.fixture(autouse=True)
def _leave_rooms(stack: LiveKitStack) -> Iterator[None]:
    """Each test starts with no participant of an earlier one still connected."""
    yield
    stack.close_participants()
