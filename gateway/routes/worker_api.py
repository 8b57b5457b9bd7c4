"""LiveKit's server API as a relayed worker sees it (`<prefix>/twirp/...`, what `JobContext.api` calls).

The worker signs each call with its worker credentials; lkps performs, signed with its own LiveKit key, only
what an agent needs for its own sessions: DeleteRoom and RemoveParticipant in rooms lkps started a session
in for that agent. Everything else is refused as Twirp `permission_denied`, in Twirp's error format so the
worker's `livekit-api` client raises a TwirpError with that code.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson
from google.protobuf import json_format
from google.protobuf.message import DecodeError, Message
from litestar import Request, Response, post
from livekit.protocol.room import (
    DeleteRoomRequest,
    DeleteRoomResponse,
    RemoveParticipantResponse,
    RoomParticipantIdentity,
)

from gateway.livekit_rooms import LiveKitNotFound, LiveKitRefused, LiveKitUnavailable
from gateway.observability.context import context_of
from gateway.relay.credentials import HandshakeRefused
from gateway.relay.relay import WORKER_PREFIX
from gateway.services import Services, services_of

_PROTOBUF = "application/protobuf"
_JSON = "application/json"


class TwirpError(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code


def _twirp_error(error: TwirpError) -> Response[bytes]:
    return Response(
        orjson.dumps({"code": error.code, "msg": str(error)}),
        status_code=error.status,
        media_type=_JSON,
    )


def _denied(message: str) -> TwirpError:
    return TwirpError(403, "permission_denied", message)


async def _agent_of(request: Request[Any, Any, Any], services: Services) -> str:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise TwirpError(
            401, "unauthenticated", "send Authorization: Bearer <JWT signed with the worker secret>"
        )
    try:
        verified = services.credentials.verify(token.strip(), now=services.clock.now())
    except HandshakeRefused as exc:
        raise TwirpError(401, "unauthenticated", f"worker credentials refused: {exc}") from None
    try:
        key = await services.workers.key_in_force(verified.key_id)
    except Exception as exc:
        raise TwirpError(503, "unavailable", "lkps could not check the worker credentials; retry") from exc
    if key is None:
        raise TwirpError(
            401, "unauthenticated", "the worker credentials are revoked or expired; register again"
        )
    return key.agent_app_id


def _decode(request_type: type[Message], body: bytes, content_type: str) -> Any:
    message = request_type()
    try:
        if content_type == _JSON:
            json_format.Parse(body or b"{}", message, ignore_unknown_fields=True)
        else:
            message.ParseFromString(body)
    except (DecodeError, json_format.ParseError, UnicodeDecodeError) as exc:  # JSON must be UTF-8
        raise TwirpError(400, "malformed", f"the body is not a {request_type.__name__}") from exc
    return message


def _encode(message: Message, content_type: str) -> Response[bytes]:
    if content_type == _JSON:
        return Response(json_format.MessageToJson(message).encode(), media_type=_JSON)
    return Response(message.SerializeToString(), media_type=_PROTOBUF)


async def _own_room(services: Services, agent_id: str, room: str) -> None:
    try:
        owner = await services.workers.room_agent(room)
    except Exception as exc:
        raise TwirpError(503, "unavailable", "lkps could not read its sessions; retry") from exc
    if owner != agent_id:
        raise _denied(f"room {room!r} is not a session of agent {agent_id}")


async def _upstream(call: Callable[[], Any]) -> None:
    try:
        await call()
    except LiveKitNotFound as exc:
        raise TwirpError(404, "not_found", str(exc) or "not found") from exc
    except LiveKitUnavailable as exc:
        raise TwirpError(503, "unavailable", "LiveKit could not be reached; retry") from exc
    except LiveKitRefused as exc:
        raise TwirpError(500, "internal", "LiveKit refused lkps's call") from exc


@post(
    f"{WORKER_PREFIX}/twirp/{{service:str}}/{{method:str}}",
    include_in_schema=False,
    request_max_body_size=64 * 1024,
    status_code=200,
)
async def worker_twirp(request: Request[Any, Any, Any], service: str, method: str) -> Response[bytes]:
    services = services_of(request)
    ctx = context_of(request.scope)
    content_type = request.headers.get("content-type", _PROTOBUF).split(";")[0].strip().lower()
    try:
        agent_id = await _agent_of(request, services)
        ctx.fields["agent_id"] = agent_id
        body = await request.body()
        if service != "livekit.RoomService" or method not in {"DeleteRoom", "RemoveParticipant"}:
            raise _denied(f"{service}/{method} is not available to agents through lkps")
        if method == "DeleteRoom":
            delete: DeleteRoomRequest = _decode(DeleteRoomRequest, body, content_type)
            await _own_room(services, agent_id, delete.room)
            await _upstream(lambda: services.rooms.delete_room(delete.room))
            return _encode(DeleteRoomResponse(), content_type)
        remove: RoomParticipantIdentity = _decode(RoomParticipantIdentity, body, content_type)
        await _own_room(services, agent_id, remove.room)
        await _upstream(lambda: services.rooms.remove_participant(remove.room, remove.identity))
        return _encode(RemoveParticipantResponse(), content_type)
    except TwirpError as error:
        ctx.reason = error.code
        return _twirp_error(error)
