"""Agent token renewal: register once, renew before expiry, share renewals, renew in the background."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from lkps import AgentTokenProvider, AsyncAgentTokenProvider, LkpsClient, ServiceUnavailable
from tests.lkps.test_client import REGISTRATION, StaticToken
from tests.support.clock import FakeClock


class Lkps:
    """Answers agent registrations with a fresh token valid for `lifetime` seconds of `clock`."""

    def __init__(self, clock: Callable[[], float], lifetime: int = 3600) -> None:
        self.clock = clock
        self.lifetime = lifetime
        self.calls = 0
        self.failures = 0
        self.renewed = threading.Event()  # set by the second successful registration
        self._lock = threading.Lock()

    def handle(self, request: httpx.Request) -> httpx.Response:
        with self._lock:
            if self.failures:
                self.failures -= 1
                return httpx.Response(
                    503, json={"error": "database_unavailable", "message": "m", "request_id": "r"}
                )
            self.calls += 1
            number = self.calls
        if number == 2:
            self.renewed.set()
        time.sleep(0.01)  # long enough for concurrent callers to pile up behind one renewal
        expires_at = int(self.clock()) + self.lifetime
        body = REGISTRATION | {"agent_token": f"token-{number}", "expires_at": expires_at}
        return httpx.Response(200, json=body)

    def client(self) -> LkpsClient:
        http = httpx.Client(transport=httpx.MockTransport(self.handle))
        return LkpsClient("https://lkps.example.com", StaticToken(), http=http)


def test_token_is_renewed_only_when_renew_before_seconds_remain() -> None:
    """The held token is reused until `renew_before` seconds are left, then the agent registers again."""
    clock = FakeClock()
    lkps = Lkps(clock.now)
    provider = AgentTokenProvider(lkps.client(), renew_before=300, clock=clock.now)
    assert provider.token() == "token-1"
    clock.advance(3600 - 301)
    assert provider.token() == "token-1"
    assert provider.seconds_until_renewal() == 1
    clock.advance(1)
    assert provider.token() == "token-2"
    assert lkps.calls == 2


def test_short_lifetimes_renew_at_half_time() -> None:
    """With a lifetime shorter than twice `renew_before`, renewal happens halfway through it."""
    clock = FakeClock()
    provider = AgentTokenProvider(Lkps(clock.now, lifetime=400).client(), renew_before=300, clock=clock.now)
    provider.token()
    assert provider.seconds_until_renewal() == 200


def test_concurrent_callers_share_one_renewal() -> None:
    """Eight threads asking at once cause a single registration."""
    lkps = Lkps(time.time)
    provider = AgentTokenProvider(lkps.client())
    with ThreadPoolExecutor(8) as pool:
        tokens = set(pool.map(lambda _: provider.token(), range(8)))
    assert (tokens, lkps.calls) == ({"token-1"}, 1)


@pytest.mark.anyio
async def test_async_provider_renews_in_the_background_and_retries_failures(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """`async with` registers at once, renews before expiry without being asked, and retries a failed renewal."""
    lkps = Lkps(time.time, lifetime=2)  # renewal due after about one second
    provider = AgentTokenProvider(lkps.client(), clock=time.time)
    async with AsyncAgentTokenProvider(provider, retry_seconds=0.05) as tokens:
        assert await tokens.token() == "token-1"
        lkps.failures = 1
        assert await asyncio.to_thread(lkps.renewed.wait, 5)
    assert lkps.calls == 2
    assert lkps.failures == 0
    [warning] = [record for record in caplog.records if record.name == "lkps.agent_token"]
    assert "database_unavailable" in warning.getMessage()
    assert "token-" not in warning.getMessage()


def test_failed_renewal_falls_back_to_the_held_token_until_it_expires(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A renewal failure keeps the still-valid token (logged, retried next call); with none valid it raises."""
    clock = FakeClock()
    lkps = Lkps(clock.now)
    provider = AgentTokenProvider(lkps.client(), renew_before=300, clock=clock.now)
    assert provider.token() == "token-1"
    clock.advance(3600 - 100)
    lkps.failures = 1
    assert provider.token() == "token-1"
    assert "database_unavailable" in caplog.text
    assert provider.token() == "token-2"
    clock.advance(3600)
    lkps.failures = 1
    with pytest.raises(ServiceUnavailable):
        provider.token()
