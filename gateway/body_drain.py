"""An ASGI layer that reads what is left of a request body before the response goes out.

lkps answers many requests without reading their body: a 401 comes before the body is decoded, and so do
403, 404 and 429. When the body has not fully arrived by then, granian (hyper) cannot reuse the keep-alive
connection and closes it, with the rest of the body still to come; a client that has meanwhile sent its
next request on that connection gets a reset (httpx `ReadError`), and the unread bytes can even turn the
close into a reset that destroys the response itself. Draining first keeps the connection usable.

The drain is bounded in bytes and time, so a client that announces a body and never sends it cannot hold
the response: past either bound the response goes out anyway (and granian closes the connection).
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING

from litestar.enums import ScopeType

if TYPE_CHECKING:
    from litestar.types import ASGIApp, Message, Receive, ReceiveMessage, Scope, Send

MAX_DRAIN_BYTES = 1024 * 1024  # the largest body any route accepts (the LiveKit webhook)
MAX_DRAIN_SECONDS = 1.0


class BodyDrainLayer:
    def __init__(
        self, app: ASGIApp, max_bytes: int = MAX_DRAIN_BYTES, max_seconds: float = MAX_DRAIN_SECONDS
    ) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.max_seconds = max_seconds

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != ScopeType.HTTP or not has_body(scope):
            await self.app(scope, receive, send)
            return
        done = False

        async def tracking_receive() -> ReceiveMessage:
            nonlocal done
            message = await receive()
            if message["type"] != "http.request" or not message.get("more_body", False):
                done = True
            return message

        async def draining_send(message: Message) -> None:
            if message["type"] == "http.response.start" and not done:
                await drain(tracking_receive, self.max_bytes, self.max_seconds)
            await send(message)

        await self.app(scope, tracking_receive, draining_send)


async def drain(
    receive: Receive, max_bytes: int = MAX_DRAIN_BYTES, max_seconds: float = MAX_DRAIN_SECONDS
) -> None:
    """Read and drop what is left of a request body, up to `max_bytes` and `max_seconds`."""
    drained = 0
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(max_seconds):
            while drained <= max_bytes:
                message = await receive()
                if message["type"] != "http.request":
                    return
                drained += len(message.get("body", b""))
                if not message.get("more_body", False):
                    return


def has_body(scope: Scope) -> bool:
    for name, value in scope["headers"]:
        if name == b"content-length":
            return value.strip() not in {b"", b"0"}
        if name == b"transfer-encoding":
            return True
    return False
