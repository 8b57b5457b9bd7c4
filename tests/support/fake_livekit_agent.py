"""LiveKit's `/agent` endpoint played by a test: a loopback aiohttp websocket server that checks the relay's
handshake JWT the way LiveKit does (a LiveKit key, the `video.agent` grant), answers `register` with a
worker id, records every frame it receives as raw bytes, and lets the test send frames or close."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from aiohttp import WSMsgType, web
from livekit import api
from livekit.protocol import agent

from tests.support.livekit import API_KEY, API_SECRET


@dataclass
class FakeWorkerLink:
    """One worker connection as LiveKit sees it."""

    ws: web.WebSocketResponse
    received: asyncio.Queue[bytes] = field(default_factory=asyncio.Queue)
    closed: asyncio.Event = field(default_factory=asyncio.Event)

    async def send(self, data: bytes) -> None:
        await self.ws.send_bytes(data)


class FakeAgentService:
    def __init__(self, *, answer_register: bool = True) -> None:
        self.links: asyncio.Queue[FakeWorkerLink] = asyncio.Queue()
        self.handshakes: list[api.access_token.Claims] = []
        self.answer_register = answer_register
        self._verifier = api.TokenVerifier(API_KEY, API_SECRET)

    async def _agent(self, request: web.Request) -> web.StreamResponse:
        header = request.headers.get("Authorization", "")
        try:
            claims = self._verifier.verify(header.removeprefix("Bearer "))
        except Exception:
            return web.Response(status=401)
        if claims.video is None or not claims.video.agent:
            return web.Response(status=401)
        self.handshakes.append(claims)
        ws = web.WebSocketResponse(max_msg_size=8 * 1024 * 1024)
        await ws.prepare(request)
        link = FakeWorkerLink(ws)
        await self.links.put(link)
        first = True
        async for message in ws:
            if message.type != WSMsgType.BINARY:
                continue
            await link.received.put(message.data)
            if first and self.answer_register:
                answer = agent.ServerMessage()
                answer.register.worker_id = "AW_fake"
                await ws.send_bytes(answer.SerializeToString())
            first = False
        link.closed.set()
        return ws

    @asynccontextmanager
    async def running(self) -> AsyncIterator[str]:
        """Serve on a free loopback port; yields the ws:// URL LKPS_LIVEKIT_URL would name."""
        app = web.Application()
        app.router.add_get("/agent", self._agent)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = runner.addresses[0][1]
        try:
            yield f"ws://127.0.0.1:{port}"
        finally:
            await runner.cleanup()
