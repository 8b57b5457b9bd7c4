"""What the relay needs to know about a worker protocol frame, parsing as little as it can.

Frames are `WorkerMessage` (worker to server) and `ServerMessage` (server to worker) protobufs whose one
field is a oneof. Most frames are relayed as the bytes they came as: only their top-level field numbers
are read (a wire-format walk, no decoding), so unknown fields and newer message kinds pass through. A
parser keeps the last of several oneof members, so every top-level field is looked at, not just the first.
"""

from __future__ import annotations

from livekit.protocol import agent, models

_WORKER = agent.WorkerMessage.DESCRIPTOR.fields_by_name
_SERVER = agent.ServerMessage.DESCRIPTOR.fields_by_name
WORKER_REGISTER = _WORKER["register"].number
WORKER_SIMULATE_JOB = _WORKER["simulate_job"].number
WORKER_UPDATE_JOB = _WORKER["update_job"].number
SERVER_REGISTER = _SERVER["register"].number
SERVER_ASSIGNMENT = _SERVER["assignment"].number

# What every relayed worker may do in its rooms, whatever it asks for: LiveKit's defaults for an agent,
# never hidden or a recorder. (The server builds each job's room token from these.)
PRODUCT_PERMISSIONS = models.ParticipantPermission(
    can_subscribe=True,
    can_publish=True,
    can_publish_data=True,
    can_update_metadata=True,
    hidden=False,
    recorder=False,
    agent=True,
)


class MalformedFrame(Exception):
    """Not protobuf wire format: LiveKit could not parse it either."""


def _varint(data: bytes, at: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if at >= len(data) or shift > 63:
            raise MalformedFrame
        byte = data[at]
        at += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, at
        shift += 7


def field_numbers(data: bytes) -> set[int]:
    """The top-level field numbers of a serialized protobuf message."""
    numbers: set[int] = set()
    at = 0
    while at < len(data):
        key, at = _varint(data, at)
        number, wire = key >> 3, key & 7
        if number == 0:
            raise MalformedFrame
        numbers.add(number)
        if wire == 0:
            _, at = _varint(data, at)
        elif wire == 1:
            at += 8
        elif wire == 2:
            length, at = _varint(data, at)
            at += length
        elif wire == 5:
            at += 4
        else:  # groups (3, 4) are not used by LiveKit's proto3 messages
            raise MalformedFrame
        if at > len(data):
            raise MalformedFrame
    return numbers


def parse_register(data: bytes) -> agent.RegisterWorkerRequest:
    """The worker's first frame, which must be exactly a `register`."""
    if field_numbers(data) != {WORKER_REGISTER}:
        raise MalformedFrame
    message = agent.WorkerMessage()
    message.ParseFromString(data)
    return message.register


def bound_register(request: agent.RegisterWorkerRequest) -> bytes:
    """The register frame to send to LiveKit: the worker's, with the product's permissions."""
    message = agent.WorkerMessage()
    message.register.CopyFrom(request)
    message.register.allowed_permissions.CopyFrom(PRODUCT_PERMISSIONS)
    return message.SerializeToString()


def parse_server(data: bytes) -> agent.ServerMessage:
    message = agent.ServerMessage()
    message.ParseFromString(data)
    return message


def parse_worker(data: bytes) -> agent.WorkerMessage:
    message = agent.WorkerMessage()
    message.ParseFromString(data)
    return message
