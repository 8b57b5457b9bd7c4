"""A websocket client speaking ASGI to the app directly: the test sees exactly what the app sends (an HTTP
refusal instead of the upgrade, frames, close codes), with the `websocket.http.response` extension on."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any


@dataclass
class AsgiWebSocket:
    app: Any
    headers: list[tuple[bytes, bytes]]
    path: str = "/worker/agent"
    to_app: asyncio.Queue[dict[str, Any]] = field(default_factory=asyncio.Queue)
    from_app: asyncio.Queue[dict[str, Any]] = field(default_factory=asyncio.Queue)
    task: asyncio.Task[None] | None = None

    async def connect(self) -> dict[str, Any]:
        """Start the handshake; returns the app's first message (accept, HTTP response start, or close)."""
        scope = {
            "type": "websocket",
            "asgi": {"version": "3.0", "spec_version": "2.3"},
            "http_version": "1.1",
            "scheme": "ws",
            "path": self.path,
            "raw_path": self.path.encode(),
            "query_string": b"",
            "root_path": "",
            "headers": self.headers,
            "client": ("127.0.0.1", 50000),
            "server": ("testserver", 80),
            "subprotocols": [],
            "extensions": {"websocket.http.response": {}},
        }
        await self.to_app.put({"type": "websocket.connect"})
        self.task = asyncio.ensure_future(self.app(scope, self.to_app.get, self.from_app.put))
        return await self.next(5)

    async def next(self, seconds: float) -> dict[str, Any]:
        async with asyncio.timeout(seconds):
            return await self.from_app.get()

    async def send(self, data: bytes | str) -> None:
        """A binary frame, or a TEXT frame for a str."""
        frame = {"bytes": data} if isinstance(data, bytes) else {"text": data}
        await self.to_app.put({"type": "websocket.receive", **frame})

    async def disconnect(self, code: int = 1000) -> None:
        await self.to_app.put({"type": "websocket.disconnect", "code": code})
        if self.task is not None:
            await asyncio.wait_for(self.task, 10)
