"""A fake LiveKit server API on 127.0.0.1: Twirp `RoomService/DeleteRoom`, as `livekit-api` calls it.

It checks each call's token (lkps's API key and secret, the `roomCreate` grant), records the rooms it
deleted, and can be made slow (`delay`, to prove lkps's timeout bounds the call) or failing (`status`).
Point lkps at it with `livekit_api_url=server.url`.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Self

from livekit import api

from tests.support.livekit import API_KEY, API_SECRET

DELETE_ROOM = "/twirp/livekit.RoomService/DeleteRoom"


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    fake: FakeLiveKitServer


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def do_POST(self) -> None:
        fake = self.server.fake
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        token = self.headers.get("Authorization", "").removeprefix("Bearer ")
        with fake.lock:
            fake.calls += 1
            fake.tokens.append(token)
            delay, status = fake.delay, fake.status
        if delay:
            fake.released.wait(delay)  # returns early when the server stops
        if self.path != DELETE_ROOM:
            self._answer(404, {"code": "bad_route", "msg": f"no handler for {self.path}"})
            return
        if status != 200:
            self._answer(status, {"code": "unavailable", "msg": "the fake LiveKit is failing"})
            return
        try:
            claims = api.TokenVerifier(fake.api_key, fake.api_secret).verify(token)
        except Exception:
            self._answer(401, {"code": "unauthenticated", "msg": "invalid token"})
            return
        if claims.video is None or not claims.video.room_create:
            self._answer(403, {"code": "permission_denied", "msg": "roomCreate grant required"})
            return
        room = api.DeleteRoomRequest.FromString(body).room
        with fake.lock:
            fake.deleted.append(room)
        self.send_response(200)
        self.send_header("Content-Type", "application/protobuf")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def _answer(self, status: int, document: dict[str, Any]) -> None:
        payload = json.dumps(document).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the stdlib's signature
        """Keep test output quiet."""


class FakeLiveKitServer:
    """Serves DeleteRoom on 127.0.0.1:<free port> in a thread while used as a context manager."""

    def __init__(self, api_key: str = API_KEY, api_secret: str = API_SECRET) -> None:
        self.api_key = api_key
        self.api_secret = api_secret
        self.delay = 0.0  # seconds every call waits before it is answered
        self.status = 200  # anything else: every call fails with this status (Twirp JSON error)
        self.calls = 0
        self.deleted: list[str] = []
        self.tokens: list[str] = []  # the server-API tokens lkps presented
        self.lock = threading.Lock()
        self.released = threading.Event()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        assert self._server is not None, "use FakeLiveKitServer as a context manager"
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def __enter__(self) -> Self:
        server = _Server(("127.0.0.1", 0), _Handler)
        server.fake = self
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, name="fake-livekit", daemon=True
        )
        self._thread.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.released.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
