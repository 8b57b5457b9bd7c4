"""Worker settings that stay valid: register with lkps, and register again before each expiry.

lkps answers a registration with the settings a stock LiveKit Agents worker connects with (`worker_url`,
`worker_api_key`, `worker_api_secret`, `agent_name`); an agent without a current registration counts as
not connected, and its worker is refused. Renewing does not change what a running worker holds: the
settings it started with keep working while the agent stays registered, so renewal never restarts it.

`WorkerSettingsProvider` renews when `renew_before` seconds (at most half the lifetime) remain;
`AsyncWorkerSettingsProvider` does the same from asyncio, in the background. `lkps agent run` uses the
former around an unmodified worker process (`lkps.agent_run`).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING

from lkps.client import AgentRegistration, LkpsClient
from lkps.errors import LkpsError

if TYPE_CHECKING:
    from typing_extensions import Self  # typing.Self is Python 3.11+

log = logging.getLogger("lkps.worker_settings")


def worker_environment(registration: AgentRegistration) -> dict[str, str]:
    """The variables a stock livekit-agents worker (1.8) reads instead of options in its code.

    `LIVEKIT_AGENT_NAME_OVERRIDE` takes precedence over an `agent_name` written in the agent's code (lkps
    accepts only this agent's own name); `LIVEKIT_AGENT_NAME` covers workers that read only that one.
    """
    return {
        "LIVEKIT_URL": registration.worker_url,
        "LIVEKIT_API_KEY": registration.worker_api_key,
        "LIVEKIT_API_SECRET": registration.worker_api_secret,
        "LIVEKIT_AGENT_NAME": registration.agent_name,
        "LIVEKIT_AGENT_NAME_OVERRIDE": registration.agent_name,
    }


@dataclass(frozen=True, slots=True)
class _Held:
    registration: AgentRegistration
    renew_at: float


class WorkerSettingsProvider:
    """Keeps one agent registered; thread-safe, and concurrent callers share a single renewal."""

    def __init__(
        self,
        client: LkpsClient,
        *,
        enforce_client_authz: bool = True,
        display_name: str | None = None,
        description: str | None = None,
        agent_version: str | None = None,
        renew_before: float = 300.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._register = functools.partial(
            client.register_agent,
            enforce_client_authz=enforce_client_authz,
            display_name=display_name,
            description=description,
            agent_version=agent_version,
        )
        self._renew_before = renew_before
        self._clock = clock
        self._held: _Held | None = None
        self._lock = threading.Lock()

    def registration(self) -> AgentRegistration:
        """The current registration, renewed first if it is due.

        A failed renewal is logged and the held registration returned while it is still valid (the next
        call tries again); LkpsError is raised only when there is no valid registration to fall back on.
        """
        with self._lock:
            held = self._held
            now = self._clock()
            if held is not None and now < held.renew_at:
                return held.registration
            try:
                return self._renew_locked(now)
            except LkpsError as exc:
                # The error's code and request id identify the cause; it carries no secret.
                log.warning("agent registration failed: %s", exc)
                if held is not None and now < held.registration.expires_at:
                    return held.registration
                raise

    def renew(self) -> AgentRegistration:
        """Register again now, due or not; LkpsError if lkps refuses (the held registration is kept)."""
        with self._lock:
            return self._renew_locked(self._clock())

    def environment(self) -> dict[str, str]:
        """`worker_environment()` of the current registration."""
        return worker_environment(self.registration())

    def seconds_until_renewal(self) -> float:
        """How long the held registration is good for before it is renewed (0 if there is none yet)."""
        with self._lock:
            return 0.0 if self._held is None else max(0.0, self._held.renew_at - self._clock())

    def seconds_until_expiry(self) -> float:
        """How long the held registration keeps the agent connected (0 if there is none)."""
        with self._lock:
            return 0.0 if self._held is None else max(0.0, self._held.registration.expires_at - self._clock())

    def _renew_locked(self, now: float) -> AgentRegistration:
        registration = self._register()
        margin = min(self._renew_before, (registration.expires_at - now) / 2)
        self._held = _Held(registration, registration.expires_at - margin)
        return registration


class AsyncWorkerSettingsProvider:
    """`WorkerSettingsProvider` for asyncio: renewals run in a worker thread, never on the event loop.

    `async with provider:` registers at once and keeps renewing in the background until the block ends;
    for a worker started in the same process (`AgentServer(ws_url=..., api_key=..., api_secret=...)`).
    """

    def __init__(self, provider: WorkerSettingsProvider, *, retry_seconds: float = 15.0) -> None:
        self._provider = provider
        self._retry_seconds = retry_seconds
        self._task: asyncio.Task[None] | None = None

    async def registration(self) -> AgentRegistration:
        return await asyncio.to_thread(self._provider.registration)

    async def run(self) -> None:
        """Renew before every expiry, forever; a failed renewal (logged by the provider) is retried every
        `retry_seconds`, and the held registration stays usable until its own expiry."""
        while True:
            with contextlib.suppress(LkpsError):
                await self.registration()
            await asyncio.sleep(self._provider.seconds_until_renewal() or self._retry_seconds)

    async def __aenter__(self) -> Self:
        await self.registration()  # fail fast: a worker should not start without a registration
        self._task = asyncio.create_task(self.run(), name="lkps-agent-renewal")
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
