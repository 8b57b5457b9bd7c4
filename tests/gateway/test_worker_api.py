"""The relayed worker's server API (`/worker/twirp/...`): malformed bodies are Twirp client errors."""

from __future__ import annotations

import pytest

from tests.gateway.conftest import Gateway
from tests.support.worker_protocol import worker_jwt

pytestmark = pytest.mark.anyio

_DELETE_ROOM = "/worker/twirp/livekit.RoomService/DeleteRoom"


async def _call(gateway: Gateway, body: bytes, content_type: str):  # type: ignore[no-untyped-def]
    registration = await gateway.register_agent()
    token = worker_jwt(registration["worker_api_key"], registration["worker_api_secret"])
    return await gateway.client.post(
        _DELETE_ROOM,
        content=body,
        headers={"Authorization": f"Bearer {token}", "Content-Type": content_type},
    )


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        (b'{"room": "\xff\xfe"}', "application/json"),
        (b"\xc3\x28", "application/json; charset=utf-8"),
        (b'{"room": "a"', "application/json"),
        (b"\xff\xff\xff", "application/protobuf"),
    ],
    ids=["json-not-utf8", "json-invalid-utf8-sequence", "json-truncated", "protobuf-garbage"],
)
async def test_an_undecodable_body_is_a_twirp_malformed_400(
    gateway: Gateway, body: bytes, content_type: str
) -> None:
    """A body that is not UTF-8 JSON (or not protobuf) answers 400 `malformed` in Twirp's error shape."""
    response = await _call(gateway, body, content_type)
    assert response.status_code == 400, response.text
    assert response.json() == {"code": "malformed", "msg": "the body is not a DeleteRoomRequest"}
