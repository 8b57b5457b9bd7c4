"""A LiveKit participant as its own process: the official realtime SDK (`livekit` on PyPI) joining a real
server, reporting what it sees as one JSON object per stdout line.

    python -m tests.support.rtc_participant <server url>      # the token comes on stdin's first line

Events: `connected` (room, identity, name, attributes, metadata, the participants already there),
`connect_failed` (error), `participant_connected` / `participant_disconnected` (identity, kind,
attributes), `text` (topic, sender, text: text streams and data packets), `disconnected` (reason).
Stdin after the token: `leave` disconnects and exits; end of input does too.

The SDK's native library runs its own threads; it lives in this process so that nothing of it outlives a
test inside pytest, and the process leaves with os._exit once it has said goodbye.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from typing import Any

from livekit import rtc


def emit(event: str, **fields: Any) -> None:
    sys.stdout.write(json.dumps({"event": event, **fields}) + "\n")
    sys.stdout.flush()


def describe(participant: rtc.RemoteParticipant) -> dict[str, Any]:
    return {
        "identity": participant.identity,
        "name": participant.name,
        "kind": rtc.ParticipantKind.Name(participant.kind),
        "attributes": dict(participant.attributes),
    }


async def run(url: str, token: str) -> None:
    room = rtc.Room()
    gone = asyncio.Event()

    @room.on("participant_connected")
    def _joined(participant: rtc.RemoteParticipant) -> None:
        emit("participant_connected", **describe(participant))

    @room.on("participant_disconnected")
    def _left(participant: rtc.RemoteParticipant) -> None:
        emit("participant_disconnected", **describe(participant))

    @room.on("data_received")
    def _data(packet: rtc.DataPacket) -> None:
        sender = packet.participant.identity if packet.participant else None
        emit("text", topic=packet.topic, sender=sender, text=packet.data.decode(errors="replace"))

    @room.on("disconnected")
    def _disconnected(reason: int) -> None:
        emit("disconnected", reason=rtc.DisconnectReason.Name(reason))
        gone.set()

    def _text_stream(reader: rtc.TextStreamReader, sender: str) -> None:
        async def read() -> None:
            emit("text", topic=reader.info.topic, sender=sender, text=await reader.read_all())

        asyncio.get_running_loop().create_task(read())

    room.register_text_stream_handler("lk.chat", _text_stream)
    try:
        await room.connect(url, token, rtc.RoomOptions(auto_subscribe=True))
    except rtc.ConnectError as error:
        emit("connect_failed", error=str(error))
        return
    local = room.local_participant
    emit(
        "connected",
        room=room.name,
        identity=local.identity,
        name=local.name,
        attributes=dict(local.attributes),
        metadata=local.metadata,
        participants=[describe(p) for p in room.remote_participants.values()],
    )
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    wait_gone = asyncio.ensure_future(gone.wait())
    while not gone.is_set():
        wait_line = asyncio.ensure_future(reader.readline())
        done, _ = await asyncio.wait({wait_line, wait_gone}, return_when=asyncio.FIRST_COMPLETED)
        if wait_line in done:
            command = wait_line.result().decode().strip()
            if command in {"leave", ""}:
                await room.disconnect()
                break
        else:
            wait_line.cancel()
    # Give the native library a moment to finish its goodbye before the process ends under it.
    await asyncio.sleep(0.3)


def main() -> None:
    url = sys.argv[1]
    # Unbuffered: whatever follows the token on stdin stays there for the command loop.
    token = sys.stdin.buffer.raw.readline().decode().strip()
    try:
        asyncio.run(run(url, token))
    finally:
        sys.stdout.flush()
        os._exit(0)


if __name__ == "__main__":
    main()
