"""LiveKit's worker protocol spoken by hand (types from `livekit-protocol`): what a worker that does more than
the stock one would send, such as `simulate_job` or another agent's name."""

from __future__ import annotations

import asyncio

import aiohttp
from google.protobuf import json_format
from livekit import api
from livekit.protocol import agent


def worker_jwt(key: str, secret: str) -> str:
    """The handshake JWT exactly as livekit-agents 1.8 builds it."""
    return api.AccessToken(key, secret).with_grants(api.VideoGrants(agent=True)).to_jwt()


async def open_worker(
    session: aiohttp.ClientSession, url: str, key: str, secret: str
) -> aiohttp.ClientWebSocketResponse:
    """`url` is what the worker gets as LIVEKIT_URL; the worker appends /agent."""
    return await session.ws_connect(
        url.rstrip("/") + "/agent", headers={"Authorization": f"Bearer {worker_jwt(key, secret)}"}
    )


def register_frame(agent_name: str) -> bytes:
    message = agent.WorkerMessage()
    message.register.type = agent.JT_ROOM
    message.register.agent_name = agent_name
    message.register.version = "relay-test"
    return message.SerializeToString()


def simulate_frame(room: str) -> bytes:
    message = agent.WorkerMessage()
    message.simulate_job.type = agent.JT_ROOM
    message.simulate_job.room.name = room
    return message.SerializeToString()


async def next_server_message(
    ws: aiohttp.ClientWebSocketResponse, seconds: float
) -> agent.ServerMessage | None:
    """The next frame as a ServerMessage (binary, or protojson text as LiveKit answers a worker that spoke
    JSON); None after `seconds` or on close."""
    try:
        async with asyncio.timeout(seconds):
            message = await ws.receive()
    except TimeoutError:
        return None
    parsed = agent.ServerMessage()
    if message.type == aiohttp.WSMsgType.TEXT:
        return json_format.Parse(message.data, parsed, ignore_unknown_fields=True)
    if message.type != aiohttp.WSMsgType.BINARY:
        return None
    parsed.ParseFromString(message.data)
    return parsed


async def register(ws: aiohttp.ClientWebSocketResponse, agent_name: str) -> agent.RegisterWorkerResponse:
    await ws.send_bytes(register_frame(agent_name))
    answer = await next_server_message(ws, 10)
    assert answer is not None, "no register answer"
    assert answer.HasField("register"), answer
    return answer.register
