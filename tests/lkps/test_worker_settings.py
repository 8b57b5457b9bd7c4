"""Worker settings renewal: register once, renew before expiry, share renewals, renew in the background."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from lkps import (
    AsyncWorkerSettingsProvider,
    LkpsClient,
    ServiceUnavailable,
    WorkerSettingsProvider,
    worker_environment,
)
from tests.lkps.test_client import REGISTRATION, StaticToken
from tests.support.clock import FakeClock


class Lkps:
    """Answers agent registrations with a fresh registration valid for `lifetime` seconds of `clock`."""

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
        body = REGISTRATION | {"registration_id": f"r-{number}", "expires_at": expires_at}
        return httpx.Response(200, json=body)

    def client(self) -> LkpsClient:
        http = httpx.Client(transport=httpx.MockTransport(self.handle))
        return LkpsClient("https://lkps.example.com", StaticToken(), http=http)


def test_registration_is_renewed_only_when_renew_before_seconds_remain() -> None:
    """The held registration is reused until `renew_before` seconds are left, then the agent registers again."""
    clock = FakeClock()
    lkps = Lkps(clock.now)
    provider = WorkerSettingsProvider(lkps.client(), renew_before=300, clock=clock.now)
    assert provider.registration().registration_id == "r-1"
    clock.advance(3600 - 301)
    assert provider.registration().registration_id == "r-1"
    assert provider.seconds_until_renewal() == 1
    clock.advance(1)
    assert provider.registration().registration_id == "r-2"
    assert lkps.calls == 2


def test_short_lifetimes_renew_at_half_time() -> None:
    """With a lifetime shorter than twice `renew_before`, renewal happens halfway through it."""
    clock = FakeClock()
    provider = WorkerSettingsProvider(
        Lkps(clock.now, lifetime=400).client(), renew_before=300, clock=clock.now
    )
    provider.registration()
    assert provider.seconds_until_renewal() == 200


def test_concurrent_callers_share_one_renewal() -> None:
    """Eight threads asking at once cause a single registration."""
    lkps = Lkps(time.time)
    provider = WorkerSettingsProvider(lkps.client())
    with ThreadPoolExecutor(8) as pool:
        registrations = set(pool.map(lambda _: provider.registration().registration_id, range(8)))
    assert (registrations, lkps.calls) == ({"r-1"}, 1)


@pytest.mark.anyio
async def test_async_provider_renews_in_the_background_and_retries_failures(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """`async with` registers at once, renews before expiry without being asked, and retries a failed renewal."""
    lkps = Lkps(time.time, lifetime=2)  # renewal due after about one second
    provider = WorkerSettingsProvider(lkps.client(), clock=time.time)
    async with AsyncWorkerSettingsProvider(provider, retry_seconds=0.05) as settings:
        assert (await settings.registration()).registration_id == "r-1"
        lkps.failures = 1
        assert await asyncio.to_thread(lkps.renewed.wait, 5)
    assert lkps.calls == 2
    assert lkps.failures == 0
    [warning] = [record for record in caplog.records if record.name == "lkps.worker_settings"]
    assert "database_unavailable" in warning.getMessage()
    assert REGISTRATION["worker_api_secret"] not in caplog.text


def test_failed_renewal_falls_back_to_the_held_registration_until_it_expires(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A renewal failure keeps the still-valid registration (logged, retried next call); with none it raises."""
    clock = FakeClock()
    lkps = Lkps(clock.now)
    provider = WorkerSettingsProvider(lkps.client(), renew_before=300, clock=clock.now)
    assert provider.registration().registration_id == "r-1"
    clock.advance(3600 - 100)
    lkps.failures = 1
    assert provider.registration().registration_id == "r-1"
    assert "database_unavailable" in caplog.text
    assert provider.registration().registration_id == "r-2"
    clock.advance(3600)
    lkps.failures = 1
    with pytest.raises(ServiceUnavailable):
        provider.registration()


def test_renew_registers_now_and_raises_on_failure_keeping_the_held_one() -> None:
    """`renew()` registers even when not due and raises a refusal; the held registration stays until expiry."""
    clock = FakeClock()
    lkps = Lkps(clock.now)
    provider = WorkerSettingsProvider(lkps.client(), clock=clock.now)
    assert provider.renew().registration_id == "r-1"
    assert provider.renew().registration_id == "r-2"
    lkps.failures = 1
    with pytest.raises(ServiceUnavailable):
        provider.renew()
    assert provider.seconds_until_expiry() == 3600
    assert provider.registration().registration_id == "r-2"


def test_worker_environment_is_what_a_stock_worker_reads() -> None:
    """The registration maps to LIVEKIT_URL/API_KEY/API_SECRET and forces the agent name on the worker."""
    provider = WorkerSettingsProvider(Lkps(time.time).client())
    assert worker_environment(provider.registration()) == {
        "LIVEKIT_URL": REGISTRATION["worker_url"],
        "LIVEKIT_API_KEY": REGISTRATION["worker_api_key"],
        "LIVEKIT_API_SECRET": REGISTRATION["worker_api_secret"],
        "LIVEKIT_AGENT_NAME": REGISTRATION["agent_name"],
        "LIVEKIT_AGENT_NAME_OVERRIDE": REGISTRATION["agent_name"],
    }


WORKER_PROBE = """
import json
from livekit.agents import AgentServer
server = AgentServer()
async def entrypoint(ctx): ...
server.rtc_session(entrypoint, agent_name="a-name-in-the-agent-code")
print(json.dumps([server._ws_url, server._api_key, server._api_secret, server._agent_name]))
"""


@pytest.mark.slow
def test_a_stock_livekit_agents_worker_takes_the_environment_over_its_code() -> None:
    """livekit-agents 1.8 reads the URL, key and secret from it, and its agent name beats the one in the code."""
    registration = WorkerSettingsProvider(Lkps(time.time).client()).registration()
    environment = {"PATH": os.environ.get("PATH", ""), **worker_environment(registration)}
    probe = subprocess.run(
        [sys.executable, "-c", WORKER_PROBE], env=environment, capture_output=True, text=True, check=True
    )
    assert json.loads(probe.stdout.splitlines()[-1]) == [
        registration.worker_url,
        registration.worker_api_key,
        registration.worker_api_secret,
        registration.agent_name,
    ]
