"""Raw ASGI requests: HTTP test clients merge duplicate headers, so header attacks need the raw list."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

import orjson
from anyio.from_thread import BlockingPortal


@dataclass(frozen=True)
class RawResponse:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return orjson.loads(self.body)


async def raw_request(
    app: Any,
    method: str,
    path: str,
    headers: list[tuple[bytes, bytes]],
    body: bytes = b"",
    query: dict[str, str] | None = None,
) -> RawResponse:
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": urlencode(query or {}).encode(),
        "root_path": "",
        "headers": [(b"content-type", b"application/json"), *headers],
        "client": ("127.0.0.1", 50000),
        "server": ("testserver", 80),
    }
    messages = [{"type": "http.request", "body": body, "more_body": False}]
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await app(scope, receive, send)
    start = next(m for m in sent if m["type"] == "http.response.start")
    return RawResponse(
        status=start["status"],
        headers={k.decode().lower(): v.decode() for k, v in start.get("headers", [])},
        body=b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body"),
    )


@dataclass(frozen=True)
class RawRequest:
    method: str
    path: str
    headers: list[tuple[bytes, bytes]]
    body: bytes = b""


def all_at_once(portal: BlockingPortal, app: Any, requests: Sequence[RawRequest]) -> list[RawResponse]:
    """Send `requests` concurrently on the event loop the app runs on (a test client's `blocking_portal`).

    A Litestar test client serves its requests one at a time, so `asyncio.gather` over client calls is not
    concurrency; this is. It blocks the calling thread until every response is in.
    """

    async def send_all() -> list[RawResponse]:
        return await asyncio.gather(
            *(raw_request(app, r.method, r.path, r.headers, r.body) for r in requests)
        )

    return portal.call(send_all)
