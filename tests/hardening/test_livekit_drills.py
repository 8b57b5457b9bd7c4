"""Fault drill for LiveKit's server API on `DELETE /api/session/{room_name}`: a LiveKit that stalls.

tests/gateway/test_end_session.py shows the outcome (502 livekit_unavailable, the session stays open, a
retry succeeds). This drill proves the bound: with `LKPS_LIVEKIT_API_TIMEOUT_SECONDS` at 0.5 s and LiveKit
answering only after 2 s, the caller has its 502 within the timeout, lkps made one call (no retry storm on
a struggling LiveKit), and session starts sent at the same moment are served meanwhile instead of
queueing behind the stalled call.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

import orjson
import pytest

from tests.gateway.conftest import AGENT_ID, Gateway, running_gateway
from tests.support.asgi import RawResponse, raw_request
from tests.support.attacks import bearer
from tests.support.twirp import FakeRoomService, Mode

pytestmark = pytest.mark.anyio

TIMEOUT = 0.5  # LKPS_LIVEKIT_API_TIMEOUT_SECONDS for the drill; the stalled LiveKit answers after 2 s


@dataclass
class Rig:
    gateway: Gateway
    livekit: FakeRoomService


@pytest.fixture
async def rig(database_url: str) -> AsyncIterator[Rig]:
    livekit = FakeRoomService()
    with livekit.running() as url:
        async for gateway in running_gateway(
            database_url, livekit_api_url=url, livekit_api_timeout_seconds=TIMEOUT
        ):
            await gateway.register_agent()
            yield Rig(gateway, livekit)


async def test_stalled_livekit_costs_the_caller_at_most_the_timeout_and_blocks_nobody(rig: Rig) -> None:
    """Ending a session against a stalled LiveKit answers 502 livekit_unavailable within the configured
    timeout after a single call, while session starts sent at the same moment complete meanwhile."""
    gateway = rig.gateway
    token = gateway.entra.mint_user_token()
    room = (await gateway.start(token)).json()["room_name"]
    rig.livekit.mode = Mode.STALL
    start = orjson.dumps({"agent_entra_app_id": AGENT_ID})

    async def timed(method: str, path: str, body: bytes = b"") -> tuple[RawResponse, float]:
        began = time.monotonic()
        response = await raw_request(gateway.app, method, path, bearer(token), body)
        return response, time.monotonic() - began

    async def scenario() -> list[tuple[RawResponse, float]]:
        ending = asyncio.ensure_future(timed("DELETE", f"/api/session/{room}"))
        await asyncio.sleep(0.05)  # the DELETE is now waiting on LiveKit
        starts = await asyncio.gather(*(timed("POST", "/api/session/start", start) for _ in range(5)))
        return [await ending, *starts]

    # On the app's own loop, so the requests really overlap (the test client serves one at a time).
    (ended, ended_after), *starts = gateway.client.blocking_portal.call(scenario)

    assert ended.status == 502, ended.body
    assert ended.json()["error"] == "livekit_unavailable"
    assert int(ended.headers["retry-after"]) >= 1
    assert TIMEOUT - 0.1 <= ended_after < TIMEOUT + 1.0, f"{ended_after:.2f} s with a {TIMEOUT} s timeout"
    assert [call.room for call in rig.livekit.calls] == [room]
    assert [response.status for response, _ in starts] == [200] * 5
    assert max(seconds for _, seconds in starts) < TIMEOUT, "session starts waited for the stalled LiveKit"
