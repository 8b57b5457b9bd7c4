"""Agent tokens that never run out: register with lkps, and register again before each expiry.

An agent's registration and its LiveKit agent token expire together; lkps treats an agent without a current
registration as not connected (sessions with it are refused with 404). `AgentTokenProvider` renews when
`renew_before` seconds (at most half the lifetime) remain, so a caller always gets a token with time left;
`AsyncAgentTokenProvider` does the same for asyncio programs such as LiveKit Agents workers and can renew in
the background.
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
from typing import Self

from lkps.client import AgentRegistration, LkpsClient
from lkps.errors import LkpsError

log = logging.getLogger("lkps.agent_token")


@dataclass(frozen=True, slots=True)
class _Held:
    registration: AgentRegistration
    renew_at: float


class AgentTokenProvider:
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
                registration = self._register()
            except LkpsError as exc:
                # The error's code and request id identify the cause; it carries no token.
                log.warning("agent registration failed: %s", exc)
                if held is not None and now < held.registration.expires_at:
                    return held.registration
                raise
            margin = min(self._renew_before, (registration.expires_at - now) / 2)
            self._held = _Held(registration, registration.expires_at - margin)
            return registration

    def token(self) -> str:
        """A LiveKit agent token with at least `renew_before` seconds (or half its lifetime) left."""
        return self.registration().agent_token

    def seconds_until_renewal(self) -> float:
        """How long the held registration is good for before it is renewed (0 if there is none yet)."""
        with self._lock:
            return 0.0 if self._held is None else max(0.0, self._held.renew_at - self._clock())


class AsyncAgentTokenProvider:
    """`AgentTokenProvider` for asyncio: renewals run in a worker thread, never on the event loop.

    `async with provider:` registers at once and keeps renewing in the background until the block ends.
    """

    def __init__(self, provider: AgentTokenProvider, *, retry_seconds: float = 15.0) -> None:
        self._provider = provider
        self._retry_seconds = retry_seconds
        self._task: asyncio.Task[None] | None = None

    async def registration(self) -> AgentRegistration:
        return await asyncio.to_thread(self._provider.registration)

    async def token(self) -> str:
        return (await self.registration()).agent_token

    async def run(self) -> None:
        """Renew before every expiry, forever; a failed renewal (logged by the provider) is retried every
        `retry_seconds`, and the held token stays usable until its own expiry."""
        while True:
            with contextlib.suppress(LkpsError):
                await self.registration()
            await asyncio.sleep(self._provider.seconds_until_renewal() or self._retry_seconds)

    async def __aenter__(self) -> Self:
        await self.registration()  # fail fast: a worker should not start without a registration
        self._task = asyncio.create_task(self.run(), name="lkps-agent-token-renewal")
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
