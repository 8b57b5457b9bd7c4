"""The relay's allow-list (gateway/relay/frames.py), property-based: random worker and LiveKit messages of
every kind, in binary and protojson, with random unknown fields, and random bytes and text, run through one
connection's policy in random order. Nothing outside the allow-list reaches the other side, and every
allowed message arrives semantically unchanged except the documented rewrites."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

import pytest
from google.protobuf import json_format
from hypothesis import HealthCheck, assume, event, given, settings
from hypothesis import strategies as st
from livekit.protocol import agent

from gateway.relay.frames import (
    MAX_ATTRIBUTE_KEY_CHARS,
    MAX_ATTRIBUTES,
    MAX_ATTRIBUTES_BYTES,
    MAX_METADATA_BYTES,
    PRODUCT_PERMISSIONS,
    SERVER_KINDS,
    WORKER_KINDS,
    ConnectionPolicy,
    Outcome,
    Violation,
    bound_register,
    parse_register,
)

AGENT = "5b7d9f1a-3c5e-4a7b-9d1f-2a4c6e8b0d2f"
OTHER = "0f1e2d3c-4b5a-4978-8695-a4b3c2d1e0f9"
PUBLIC_URL = "wss://livekit.example.com"
OWN_ROOMS = {"alice-own-1", "bob-own-2"}
SESSION_ROOMS = {**dict.fromkeys(OWN_ROOMS, AGENT), "carol-other-3": OTHER}
JOB_IDS = ["AJ_1", "AJ_2", "AJ_3"]

_text = st.text(st.characters(exclude_categories=["Cs"]), max_size=24)
_rooms = st.sampled_from([*SESSION_ROOMS, "", "never-created"]) | _text
_job_ids = st.sampled_from(JOB_IDS) | _text
_attributes = st.dictionaries(st.sampled_from(["lkps.role", "lkps.", "mine", "lk.agent.name"]) | _text, _text)


def _field(number: int, payload: bytes) -> bytes:
    """A length-delimited protobuf field (numbers here stay below 2048: two-byte keys at most)."""
    key = (number << 3) | 2
    head = bytes([key]) if key < 0x80 else bytes([(key & 0x7F) | 0x80, key >> 7])
    length = len(payload)
    size = bytes([length]) if length < 0x80 else bytes([(length & 0x7F) | 0x80, length >> 7])
    return head + size + payload


@st.composite
def jobs(draw: st.DrawFn) -> agent.Job:
    job = agent.Job(id=draw(_job_ids), agent_name=draw(st.sampled_from([AGENT, AGENT, OTHER, ""])))
    job.room.name = draw(_rooms)
    job.metadata = draw(_text)
    return job


def _worker_kinds(draw: st.DrawFn) -> agent.WorkerMessage:
    return _worker_kinds_of(
        draw, draw(st.sampled_from([f.name for f in agent.WorkerMessage.DESCRIPTOR.fields]))
    )


def _worker_kinds_of(draw: st.DrawFn, kind: str) -> agent.WorkerMessage:
    message = agent.WorkerMessage()
    if kind == "register":
        message.register.agent_name = draw(st.sampled_from([AGENT, OTHER]))
        message.register.allowed_permissions.hidden = draw(st.booleans())
    elif kind == "availability":
        answer = message.availability
        answer.job_id = draw(_job_ids)
        answer.available = draw(st.booleans())
        answer.terminate = draw(st.booleans())
        answer.supports_resume = draw(st.booleans())
        answer.participant_identity = draw(st.sampled_from(["ADA0001", "app-x"]) | _text)
        answer.participant_name = draw(_text)
        answer.participant_metadata = draw(_text)
        answer.participant_attributes.update(draw(_attributes))
    elif kind == "update_worker":
        message.update_worker.load = draw(st.floats(0, 1, width=32))
        message.update_worker.job_count = draw(st.integers(0, 100))
    elif kind == "update_job":
        message.update_job.job_id = draw(_job_ids)
        message.update_job.status = draw(st.sampled_from(agent.JobStatus.values()))
        message.update_job.error = draw(_text)
    elif kind == "ping":
        message.ping.timestamp = draw(st.integers(0, 2**62))
    elif kind == "simulate_job":
        if draw(st.booleans()):
            message.simulate_job.room.name = draw(_rooms)
        else:
            message.simulate_job.type = agent.JT_ROOM
    else:
        message.migrate_job.job_ids.extend(draw(st.lists(_job_ids, max_size=3)))
    return message


def _server_kinds(draw: st.DrawFn) -> agent.ServerMessage:
    kind = draw(st.sampled_from([f.name for f in agent.ServerMessage.DESCRIPTOR.fields]))
    message = agent.ServerMessage()
    if kind == "register":
        message.register.worker_id = draw(_text)
        message.register.server_info.version = draw(_text)
    elif kind == "availability":
        message.availability.job.CopyFrom(draw(jobs()))
        message.availability.resuming = draw(st.booleans())
    elif kind == "assignment":
        message.assignment.job.CopyFrom(draw(jobs()))
        message.assignment.token = draw(_text)
        if draw(st.booleans()):
            message.assignment.url = draw(_text)
    elif kind == "termination":
        message.termination.job_id = draw(_job_ids)
    elif kind == "pong":
        message.pong.last_timestamp = draw(st.integers(0, 2**62))
        message.pong.timestamp = draw(st.integers(0, 2**62))
    else:
        message.go_away.reason = draw(_text)
    return message


@dataclass(frozen=True)
class Frame:
    """One frame as sent, and the message it carries (None: not a message of the pinned protocol)."""

    from_worker: bool
    data: bytes | str
    message: agent.WorkerMessage | agent.ServerMessage | None


@st.composite
def frames(draw: st.DrawFn) -> Frame:
    from_worker = draw(st.booleans())
    message = _worker_kinds(draw) if from_worker else _server_kinds(draw)
    encoding = draw(st.sampled_from(["binary", "binary", "binary", "nested_unknown", "top_unknown", "json"]))
    if encoding == "json":
        return Frame(from_worker, json_format.MessageToJson(message), None)
    data = message.SerializeToString()
    (descriptor, inner), *_ = message.ListFields()
    if encoding == "nested_unknown":  # an unknown field inside the message: dropped, the message passes
        unknown = _field(draw(st.integers(100, 2000)), draw(st.binary(max_size=8)))
        data = _field(descriptor.number, inner.SerializeToString() + unknown)
    elif encoding == "top_unknown":  # an unknown member beside the known one: not this protocol
        data += _field(draw(st.integers(8, 2000)), draw(st.binary(max_size=8)))
        message = None
    return Frame(from_worker, data, message)


_noise = st.builds(Frame, st.booleans(), st.binary(max_size=40) | _text, st.none())


@st.composite
def job_flows(draw: st.DrawFn) -> list[Frame]:
    """LiveKit offers a job, the worker answers, LiveKit assigns: each step as any of the random frames
    would be, but about one job (so acceptances and assignments happen, not only refusals)."""
    job = draw(jobs())
    if draw(st.booleans()):
        job.agent_name, job.room.name = AGENT, draw(st.sampled_from(sorted(OWN_ROOMS)))
    offer = agent.ServerMessage()
    offer.availability.job.CopyFrom(job)
    answer = agent.WorkerMessage()
    answer.availability.CopyFrom(_worker_kinds_of(draw, "availability").availability)
    answer.availability.job_id = job.id
    answer.availability.available = draw(st.booleans() | st.just(True))
    assignment = agent.ServerMessage()
    assignment.assignment.job.CopyFrom(job)
    assignment.assignment.token = draw(_text)
    return [
        Frame(False, offer.SerializeToString(), offer),
        Frame(True, answer.SerializeToString(), answer),
        Frame(False, assignment.SerializeToString(), assignment),
    ]


@dataclass
class Model:
    """What the relay may forward: jobs LiveKit offered for the agent's own sessions, and those accepted."""

    offered: dict[str, str] = field(default_factory=dict)
    accepted: dict[str, str] = field(default_factory=dict)


def _owner_lookup(room: str) -> asyncio.Future[bool]:
    future: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
    future.set_result(SESSION_ROOMS.get(room) == AGENT)
    return future


def _check_worker(frame: Frame, outcome: Outcome | None, model: Model) -> None:
    message = frame.message
    kind = message.WhichOneof("message") if isinstance(message, agent.WorkerMessage) else None
    if kind not in {*WORKER_KINDS, "migrate_job"}:
        assert outcome is None, f"{kind or 'a frame outside the protocol'} was not refused"
        return
    assert outcome is not None
    assert isinstance(message, agent.WorkerMessage)
    if kind == "migrate_job":
        assert outcome.forward is None
        return
    if kind != "availability":
        assert outcome.forward is not None
        message.DiscardUnknownFields()
        assert agent.WorkerMessage.FromString(outcome.forward) == message
        return
    answer = message.availability
    room = model.offered.pop(answer.job_id, None)
    if room is None:
        assert outcome.forward is None, "an answer for a job never offered went on"
        return
    assert outcome.forward is not None
    sent = agent.WorkerMessage.FromString(outcome.forward).availability
    assert sent.job_id == answer.job_id
    if not sent.available:
        assert (not answer.available or answer.terminate) or outcome.event == "oversized_answer"
        return
    assert sent.participant_identity == f"agent-{answer.job_id}"
    assert not any(key.startswith("lkps.") for key in sent.participant_attributes)
    assert dict(sent.participant_attributes) == {
        k: v for k, v in answer.participant_attributes.items() if not k.startswith("lkps.")
    }
    assert sent.participant_metadata == answer.participant_metadata
    assert sent.participant_name == sent.participant_name.strip()
    assert sent.participant_name.isprintable() or not sent.participant_name.isascii()
    assert sent.supports_resume == answer.supports_resume
    model.accepted[answer.job_id] = room


def _check_server(frame: Frame, outcome: Outcome | None, model: Model) -> None:
    message = frame.message
    kind = message.WhichOneof("message") if isinstance(message, agent.ServerMessage) else None
    if kind not in SERVER_KINDS or kind is None:
        assert outcome is None, f"{kind or 'a frame outside the protocol'} was not refused"
        return
    assert outcome is not None
    assert isinstance(message, agent.ServerMessage)
    message.DiscardUnknownFields()
    if kind == "availability":
        job = message.availability.job
        own = job.agent_name == AGENT and SESSION_ROOMS.get(job.room.name) == AGENT
        if not own:
            assert outcome.forward is None, f"a job for {job.room.name!r} reached the worker"
            assert outcome.event == "foreign_job"
            assert outcome.reply is not None
            refused = agent.WorkerMessage.FromString(outcome.reply).availability
            assert (refused.job_id, refused.available) == (job.id, False)
            return
        model.offered[job.id] = job.room.name
    if kind == "assignment":
        job = message.assignment.job
        if model.accepted.pop(job.id, None) != job.room.name:
            assert outcome.forward is None, "an assignment the worker never accepted reached it"
            assert outcome.event == "foreign_job"
            return
        message.assignment.url = PUBLIC_URL
    assert outcome.forward is not None
    assert agent.ServerMessage.FromString(outcome.forward) == message


def _check_any(frame: Frame, outcome: Outcome | None) -> None:
    """What holds for every frame: text never passes, and what passes is one allowed kind with nothing
    unknown riding along (dropping unknown fields from it changes nothing)."""
    if isinstance(frame.data, str):
        assert outcome is None, "a text frame was not refused"
    if outcome is None or outcome.forward is None:
        return
    kind_type = agent.WorkerMessage if frame.from_worker else agent.ServerMessage
    forwarded = kind_type.FromString(outcome.forward)
    assert forwarded.WhichOneof("message") in (WORKER_KINDS if frame.from_worker else SERVER_KINDS)
    known = kind_type.FromString(outcome.forward)
    known.DiscardUnknownFields()
    assert forwarded.SerializeToString(deterministic=True) == known.SerializeToString(deterministic=True)


async def _run(sequence: list[Frame]) -> None:
    policy = ConnectionPolicy(AGENT, PUBLIC_URL, _owner_lookup)
    model = Model()
    registered = False
    for frame in sequence:
        if (
            isinstance(frame.message, agent.ServerMessage)
            and frame.message.WhichOneof("message") == "register"
            and registered
        ):
            frame = Frame(frame.from_worker, frame.data, None)  # noqa: PLW2901 - LiveKit registers once
        outcome: Outcome | None
        try:
            outcome = (
                policy.from_worker(frame.data) if frame.from_worker else await policy.from_livekit(frame.data)
            )
        except Violation:
            outcome = None
        _check_any(frame, outcome)
        event(
            f"{'worker' if frame.from_worker else 'livekit'} {outcome.kind if outcome else 'refused'}"
            f"{' forwarded' if outcome and outcome.forward else ''}"
        )
        if frame.message is None and not isinstance(frame.data, str) and outcome is not None:
            # Random bytes that happen to be a message: only jobs would change what may pass next.
            assume(outcome.kind not in {"availability", "assignment"})
            continue
        (_check_worker if frame.from_worker else _check_server)(frame, outcome, model)
        if outcome is not None and outcome.kind == "register":
            registered = True


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists((frames() | _noise).map(lambda frame: [frame]) | job_flows(), max_size=20))
def test_only_the_allow_list_passes_and_allowed_messages_arrive_unchanged(steps: list[list[Frame]]) -> None:
    """Through one connection's policy, in any order: text frames, unknown kinds, malformed bytes,
    `simulate_job`, `register` and LiveKit's unknown kinds are refused; other messages arrive equal to
    what was sent minus unknown fields, except the documented rewrites (lkps's availability answers,
    LiveKit's URL in assignments, jobs only for the agent's own sessions)."""
    asyncio.run(_run([frame for step in steps for frame in step]))


def _answer_own_job(
    identity: str = "",
    name: str = "",
    metadata: str = "",
    attributes: dict[str, str] | None = None,
) -> Outcome:
    """What the policy makes of a worker accepting a job of its agent's own session with this answer."""

    async def scenario() -> Outcome:
        policy = ConnectionPolicy(AGENT, PUBLIC_URL, _owner_lookup)
        offer = agent.ServerMessage()
        offer.availability.job.id = "AJ_own"
        offer.availability.job.agent_name = AGENT
        offer.availability.job.room.name = "alice-own-1"
        assert (await policy.from_livekit(offer.SerializeToString())).forward is not None
        answer = agent.WorkerMessage()
        answer.availability.job_id = "AJ_own"
        answer.availability.available = True
        answer.availability.participant_identity = identity
        answer.availability.participant_name = name
        answer.availability.participant_metadata = metadata
        answer.availability.participant_attributes.update(attributes or {})
        return policy.from_worker(answer.SerializeToString())

    return asyncio.run(scenario())


def test_a_worker_answer_for_its_own_job_is_rewritten() -> None:
    """An acceptance of an offered job reaches LiveKit with identity `agent-<job id>`, no `lkps.*`
    attribute, the name cleaned, metadata and the other attributes as sent."""
    outcome = _answer_own_job(
        "ADA0001", " Helper\u202e\u200b bot ", '{"v": 1}', {"lkps.role": "admin", "mine": "yes"}
    )
    assert outcome.forward is not None
    sent = agent.WorkerMessage.FromString(outcome.forward).availability
    assert sent.participant_identity == "agent-AJ_own"
    assert sent.participant_name == "Helper bot"
    assert dict(sent.participant_attributes) == {"mine": "yes"}
    assert sent.participant_metadata == '{"v": 1}'


@pytest.mark.parametrize(
    ("metadata", "attributes", "within"),
    [
        ("x" * MAX_METADATA_BYTES, {}, True),
        ("x" * (MAX_METADATA_BYTES + 1), {}, False),
        ("", {f"k{i}": "" for i in range(MAX_ATTRIBUTES)}, True),
        ("", {f"k{i}": "" for i in range(MAX_ATTRIBUTES + 1)}, False),
        ("", {"k" * MAX_ATTRIBUTE_KEY_CHARS: ""}, True),
        ("", {"k" * (MAX_ATTRIBUTE_KEY_CHARS + 1): ""}, False),
        ("", {"a": "v" * (MAX_ATTRIBUTES_BYTES - 1)}, True),
        ("", {"a": "v" * MAX_ATTRIBUTES_BYTES}, False),
    ],
    ids=[
        "metadata-at-limit",
        "metadata-over",
        "attributes-at-limit",
        "attributes-over",
        "key-at-limit",
        "key-over",
        "attribute-bytes-at-limit",
        "attribute-bytes-over",
    ],
)
def test_an_answer_is_bounded_at_exactly_its_limits(
    metadata: str, attributes: dict[str, str], within: bool
) -> None:
    """Metadata, the number of attributes, a key's length and the attributes' bytes may reach their limits;
    one over declines the job towards LiveKit as an `oversized_answer`."""
    outcome = _answer_own_job(metadata=metadata, attributes=attributes)
    assert outcome.forward is not None
    sent = agent.WorkerMessage.FromString(outcome.forward).availability
    assert (sent.available, outcome.event) == ((True, None) if within else (False, "oversized_answer"))


@pytest.mark.parametrize(
    ("deployment", "valid"),
    [
        ("", True),
        ("staging", True),
        ("eu-west.2", True),
        ("a_b", False),
        ("a b", False),
        ("x\x01", False),
        ("x" * 64, True),
        ("x" * 65, False),
    ],
)
def test_the_register_keeps_a_valid_deployment_and_refuses_others(deployment: str, valid: bool) -> None:
    """A register's deployment passes as sent when LiveKit's ValidateDeployment would accept it (at most 64
    bytes, no `_`, no whitespace or control byte); otherwise the register is malformed."""
    message = agent.WorkerMessage()
    message.register.agent_name = AGENT
    message.register.deployment = deployment
    message.register.version = "1.8.9"
    message.register.type = agent.JT_PUBLISHER
    if not valid:
        with pytest.raises(Violation):
            parse_register(message.SerializeToString())
        return
    rebuilt = agent.WorkerMessage.FromString(
        bound_register(parse_register(message.SerializeToString()))
    ).register
    assert (rebuilt.agent_name, rebuilt.deployment, rebuilt.version, rebuilt.type) == (
        AGENT,
        deployment,
        "1.8.9",
        agent.JT_PUBLISHER,
    )
    assert rebuilt.allowed_permissions == PRODUCT_PERMISSIONS
