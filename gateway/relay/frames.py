"""The worker protocol as the relay allows it: every frame decoded into the pinned `livekit.protocol.agent`
messages, checked against an allow-list, and re-encoded from the decoded message, so no unknown field, no
unknown message kind and no second encoding (LiveKit's `/agent` also speaks protojson) passes.

Pinned: livekit-server v1.13.5 behind the relay, livekit-agents 1.8.9 / livekit-protocol 1.1.29 in front.

Worker -> LiveKit: `register` (the first frame, exactly once, rebuilt with the bound agent name and the
product's permissions), `availability` (lkps's answer, see `_answer`), `update_job`, `update_worker`,
`ping`. `migrate_job` is consumed here: a stock worker sends it after every reconnect with running jobs and
LiveKit v1.13.5 ignores it. LiveKit -> worker: `register`, `availability` and `assignment` (only for this
agent's own sessions), `termination`, `pong`. Anything else is a `Violation`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from google.protobuf.message import DecodeError
from livekit.protocol import agent, models

from authz.entra import clean_display_name

WORKER_KINDS = frozenset({"availability", "update_job", "update_worker", "ping"})
SERVER_KINDS = frozenset({"register", "availability", "assignment", "termination", "pong"})
_ABSORBED = frozenset({"migrate_job"})
_WORKER_NUMBERS = {f.number: f.name for f in agent.WorkerMessage.DESCRIPTOR.fields}
_SERVER_NUMBERS = {f.number: f.name for f in agent.ServerMessage.DESCRIPTOR.fields}

AGENT_IDENTITY_PREFIX = "agent-"  # no user or app identity can start with it (authz/entra.py)
RESERVED_ATTRIBUTE_PREFIX = "lkps."
MAX_METADATA_BYTES = 16 * 1024
MAX_ATTRIBUTES = 32
MAX_ATTRIBUTE_KEY_CHARS = 128
MAX_ATTRIBUTES_BYTES = 16 * 1024
MAX_DEPLOYMENT_BYTES = 64  # LiveKit's MaxDeploymentLength
MAX_VERSION_CHARS = 64
_PENDING_JOBS = 1024  # offers and acceptances remembered per connection (LiveKit times them out in seconds)

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


class Violation(Exception):
    """A frame outside the allow-list; `kind` is a bounded metric label. The connection is closed."""

    def __init__(self, kind: str) -> None:
        super().__init__(kind)
        self.kind = kind


@dataclass(frozen=True, slots=True)
class Outcome:
    """What one frame becomes: a re-encoded frame for the other side, lkps's own answer back to the sender,
    and a security event to record without closing (a foreign job, an answer over the bounds)."""

    kind: str
    forward: bytes | None = None
    reply: bytes | None = None
    event: str | None = None
    decoded: agent.WorkerMessage | agent.ServerMessage | None = None  # what `forward` encodes


def _varint(data: bytes, at: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if at >= len(data) or shift > 63:
            raise Violation("malformed_frame")
        byte = data[at]
        at += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, at
        shift += 7


def field_numbers(data: bytes) -> list[int]:
    """The top-level field numbers of a serialized message, in order (a wire-format walk, no decoding):
    a parser keeps only the last member of a oneof, so what it would discard is seen here."""
    numbers: list[int] = []
    at = 0
    while at < len(data):
        key, at = _varint(data, at)
        number, wire = key >> 3, key & 7
        if number == 0:
            raise Violation("malformed_frame")
        numbers.append(number)
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
            raise Violation("malformed_frame")
        if at > len(data):
            raise Violation("malformed_frame")
    return numbers


def _kind_of(data: bytes, names: dict[int, str]) -> str:
    """The one message kind a frame carries; several, none or an unknown one is a violation."""
    numbers = set(field_numbers(data))
    if len(numbers) != 1:
        raise Violation("unknown_kind" if not numbers else "malformed_frame")
    kind = names.get(numbers.pop())
    if kind is None:
        raise Violation("unknown_kind")
    return kind


def _decode(data: bytes, message: agent.WorkerMessage | agent.ServerMessage, names: dict[int, str]) -> str:
    """Parse `data` into `message`, keeping no unknown field; the one kind it carries. The wire walk and the
    parser must agree (a member with the wrong wire type parses as an unknown field: no kind at all)."""
    kind = _kind_of(data, names)
    try:
        message.ParseFromString(data)
    except DecodeError:
        raise Violation("malformed_frame") from None
    if message.WhichOneof("message") != kind:
        raise Violation("malformed_frame")
    message.DiscardUnknownFields()
    return kind


def decode_worker(data: bytes) -> tuple[str, agent.WorkerMessage]:
    message = agent.WorkerMessage()
    return _decode(data, message, _WORKER_NUMBERS), message


def decode_server(data: bytes) -> tuple[str, agent.ServerMessage]:
    message = agent.ServerMessage()
    return _decode(data, message, _SERVER_NUMBERS), message


def valid_deployment(deployment: str) -> bool:
    """LiveKit's ValidateDeployment: at most 64 bytes, no `_`, no whitespace or control byte."""
    raw = deployment.encode()
    return len(raw) <= MAX_DEPLOYMENT_BYTES and not any(b == 0x5F or b <= 0x20 or b == 0x7F for b in raw)


def parse_register(data: bytes | str) -> agent.RegisterWorkerRequest:
    """The worker's first frame, which must be exactly a well-formed binary `register`."""
    if isinstance(data, str):
        raise Violation("text_frame")
    kind, message = decode_worker(data)
    register = message.register
    if (
        kind != "register"
        or register.type not in agent.JobType.values()
        or not valid_deployment(register.deployment)
        or len(register.version) > MAX_VERSION_CHARS
    ):
        raise Violation("malformed_register")
    return register


def bound_register(request: agent.RegisterWorkerRequest) -> bytes:
    """The register frame LiveKit gets: the worker's type, name, version and deployment (LiveKit dispatches
    by name and deployment), the product's permissions, nothing else."""
    message = agent.WorkerMessage()
    message.register.type = request.type
    message.register.agent_name = request.agent_name
    message.register.version = request.version
    message.register.deployment = request.deployment
    message.register.allowed_permissions.CopyFrom(PRODUCT_PERMISSIONS)
    return message.SerializeToString()


def not_available(job_id: str, *, terminate: bool = False) -> bytes:
    message = agent.WorkerMessage()
    message.availability.job_id = job_id
    message.availability.available = False
    message.availability.terminate = terminate
    return message.SerializeToString()


def job_refused(job_id: str) -> bytes:
    """lkps's answer to an assignment it does not pass on: the job failed at this worker."""
    message = agent.WorkerMessage()
    message.update_job.job_id = job_id
    message.update_job.status = agent.JS_FAILED
    message.update_job.error = "lkps: not a session of this agent"
    return message.SerializeToString()


def _within_bounds(answer: agent.AvailabilityResponse, attributes: dict[str, str]) -> bool:
    return (
        len(answer.participant_metadata.encode()) <= MAX_METADATA_BYTES
        and len(attributes) <= MAX_ATTRIBUTES
        and all(len(key) <= MAX_ATTRIBUTE_KEY_CHARS for key in attributes)
        and sum(len(key.encode()) + len(value.encode()) for key, value in attributes.items())
        <= MAX_ATTRIBUTES_BYTES
    )


def _remember(jobs: dict[str, str], job_id: str, room: str) -> None:
    if len(jobs) >= _PENDING_JOBS:
        del jobs[next(iter(jobs))]
    jobs[job_id] = room


class ConnectionPolicy:
    """The allow-list of one relayed connection, with what it remembers between frames: whether LiveKit
    answered the register, the jobs offered to the worker and the jobs it accepted."""

    def __init__(
        self, agent_name: str, public_url: str, owns_room: Callable[[str], Awaitable[bool | None]]
    ) -> None:
        self.agent_name = agent_name
        self._public_url = public_url
        self._owns_room = owns_room
        self._registered = False
        self._offered: dict[str, str] = {}
        self._accepted: dict[str, str] = {}

    def from_worker(self, data: bytes | str) -> Outcome:
        if isinstance(data, str):  # protojson: stock workers never send it, LiveKit would answer in kind
            raise Violation("text_frame")
        kind, message = decode_worker(data)
        if kind in _ABSORBED:
            return Outcome(kind)
        if kind not in WORKER_KINDS:
            raise Violation("second_register" if kind == "register" else kind)
        if kind == "availability":
            return self._answer(message.availability)
        return Outcome(kind, forward=message.SerializeToString(), decoded=message)

    def _answer(self, answer: agent.AvailabilityResponse) -> Outcome:
        """The worker's answer as lkps sends it: for a job offered to this worker only; an acceptance gets
        the identity `agent-<job id>`, the name cleaned as Entra names are, the attributes without
        `lkps.*` keys, and metadata and attributes within bounds (else the job is declined)."""
        room = self._offered.pop(answer.job_id, None)
        if room is None:
            return Outcome("availability")
        if not answer.available or answer.terminate:
            return Outcome("availability", forward=not_available(answer.job_id, terminate=answer.terminate))
        attributes = {
            key: value
            for key, value in answer.participant_attributes.items()
            if not key.startswith(RESERVED_ATTRIBUTE_PREFIX)
        }
        if not _within_bounds(answer, attributes):
            return Outcome("availability", forward=not_available(answer.job_id), event="oversized_answer")
        message = agent.WorkerMessage()
        rewritten = message.availability
        rewritten.job_id = answer.job_id
        rewritten.available = True
        rewritten.supports_resume = answer.supports_resume
        rewritten.participant_identity = AGENT_IDENTITY_PREFIX + answer.job_id
        rewritten.participant_name = clean_display_name(answer.participant_name)
        rewritten.participant_metadata = answer.participant_metadata
        rewritten.participant_attributes.update(attributes)
        _remember(self._accepted, answer.job_id, room)
        return Outcome("availability", forward=message.SerializeToString())

    async def from_livekit(self, data: bytes | str) -> Outcome:
        if isinstance(data, str):
            raise Violation("server_text_frame")
        kind, message = decode_server(data)
        if kind not in SERVER_KINDS:
            raise Violation(f"server_{kind}")
        if kind == "register":
            if self._registered:
                raise Violation("server_second_register")
            self._registered = True
        elif kind == "availability":
            job = message.availability.job
            own = job.agent_name == self.agent_name and await self._owns_room(job.room.name)
            if not own:  # None: the room could not be looked up; refused all the same, no event
                return Outcome(
                    kind, reply=not_available(job.id), event=None if own is None else "foreign_job"
                )
            _remember(self._offered, job.id, job.room.name)
        elif kind == "assignment":
            job = message.assignment.job
            if self._accepted.pop(job.id, None) != job.room.name:
                return Outcome(kind, reply=job_refused(job.id), event="foreign_job")
            message.assignment.url = self._public_url
        return Outcome(kind, forward=message.SerializeToString(), decoded=message)
