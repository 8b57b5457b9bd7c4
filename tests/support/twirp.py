"""A LiveKit RoomService over Twirp on 127.0.0.1: what lkps's `livekit-api` client talks to in tests.

It decodes the protobuf request with `livekit.protocol`, verifies the `Authorization: Bearer` token with
`livekit-api`'s TokenVerifier and requires exactly the grant DeleteRoom needs (`roomCreate`, nothing else),
records each call, and can be switched to answer not_found, fail with 500, or stall. It serves from its own
thread and event loop: the Litestar test client blocks the test's loop while the app calls out.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from enum import StrEnum

from aiohttp import web
from livekit import api
from livekit.protocol.room import DeleteRoomRequest, DeleteRoomResponse

from tests.support.livekit import API_KEY, API_SECRET

_STALL_SECONDS = 2.0  # well beyond the timeout tests give lkps


class Mode(StrEnum):
    OK = "ok"
    NOT_FOUND = "not_found"  # the room is already gone
    FAIL = "fail"  # 500 internal
    STALL = "stall"  # answers only after the client gave up


@dataclass(frozen=True)
class DeleteRoomCall:
    room: str
    claims: api.access_token.Claims


class FakeRoomService:
    def __init__(self, key: str = API_KEY, secret: str = API_SECRET) -> None:
        self.mode = Mode.OK
        self.calls: list[DeleteRoomCall] = []
        self.refusals: list[str] = []  # why requests were refused (token or grant)
        self._verifier = api.TokenVerifier(key, secret)

    @contextmanager
    def running(self) -> Iterator[str]:
        """Serve until the block ends; yields the base URL (what LKPS_LIVEKIT_API_URL would be)."""
        loop = asyncio.new_event_loop()
        thread = threading.Thread(target=loop.run_forever, name="twirp-stub", daemon=True)
        thread.start()
        runner, url = asyncio.run_coroutine_threadsafe(self._start(), loop).result(timeout=10)
        try:
            yield url
        finally:
            asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(timeout=10)
            loop.call_soon_threadsafe(loop.stop)
            thread.join(timeout=10)
            loop.close()

    async def _start(self) -> tuple[web.AppRunner, str]:
        app = web.Application()
        app.router.add_post("/twirp/livekit.RoomService/DeleteRoom", self._delete_room)
        runner = web.AppRunner(app, shutdown_timeout=0.1)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = runner.addresses[0][1]
        return runner, f"http://127.0.0.1:{port}"

    async def _delete_room(self, request: web.Request) -> web.Response:
        header = request.headers.get("Authorization", "")
        if not header.startswith("Bearer "):
            return self._refuse(401, "unauthenticated", "no bearer token")
        try:
            claims = self._verifier.verify(header.removeprefix("Bearer "))
        except Exception as exc:
            return self._refuse(401, "unauthenticated", f"invalid token: {exc}")
        video = claims.video
        granted = {
            name: getattr(video, name)
            for name in (
                "room_create",
                "room_list",
                "room_record",
                "room_admin",
                "room_join",
                "agent",
                "recorder",
            )
            if video is not None and getattr(video, name)
        }
        if granted != {"room_create": True} or (video is not None and video.room):
            return self._refuse(
                403, "permission_denied", f"DeleteRoom needs exactly roomCreate, got {granted}"
            )
        if request.content_type != "application/protobuf":
            return self._refuse(415, "malformed", f"content type {request.content_type}")
        delete = DeleteRoomRequest.FromString(await request.read())
        self.calls.append(DeleteRoomCall(delete.room, claims))
        if self.mode is Mode.STALL:
            await asyncio.sleep(_STALL_SECONDS)
        if self.mode is Mode.FAIL:
            return web.json_response({"code": "internal", "msg": "database is down"}, status=500)
        if self.mode is Mode.NOT_FOUND:
            return web.json_response(
                {"code": "not_found", "msg": "requested room does not exist"}, status=404
            )
        return web.Response(
            body=DeleteRoomResponse().SerializeToString(), content_type="application/protobuf"
        )

    def _refuse(self, status: int, code: str, message: str) -> web.Response:
        self.refusals.append(message)
        return web.json_response({"code": code, "msg": message}, status=status)
