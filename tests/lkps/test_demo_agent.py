"""The demo agent's chat: one greeting per person who joins (with the dispatch metadata), an answer per text."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import pytest
from livekit import rtc

from lkps.demo_agent import MAX_CHATS, DemoChat, greeting, load, reply

AGENT = "5b7d9f1a-3c5e-4a7b-9d1f-2a4c6e8b0d2f"


def participant(identity: str, name: str = "", *, agent: bool = False) -> SimpleNamespace:
    kind = (
        rtc.ParticipantKind.PARTICIPANT_KIND_AGENT if agent else rtc.ParticipantKind.PARTICIPANT_KIND_STANDARD
    )
    return SimpleNamespace(identity=identity, name=name, kind=kind)


class Reader:
    """A text stream as the room hands it to the `lk.chat` handler."""

    def __init__(self, text: str) -> None:
        self.text = text

    async def read_all(self) -> str:
        await asyncio.sleep(0)
        return self.text


def test_greeting_names_the_participant_the_agent_and_the_metadata() -> None:
    """The greeting says who joined, which agent answers, and the session's metadata keys in order."""
    assert greeting(AGENT, "Ada", '{"topic": "billing", "language": "en"}') == (
        f"Hello Ada, this is the lkps demo agent {AGENT}. Session metadata: language=en, topic=billing."
    )
    assert greeting(AGENT, "Ada", "") == f"Hello Ada, this is the lkps demo agent {AGENT}."
    assert greeting(AGENT, "Ada", "not json").endswith("(The session metadata is not JSON.)")


def test_reply_quotes_the_text_and_prompts_on_empty_input() -> None:
    """A text is quoted back with its whitespace collapsed and its word count; blank text gets a prompt."""
    assert (
        reply("  hello   there\n")
        == 'You said: "hello there" (2 words). I am a demo: no model, just LiveKit.'
    )
    assert reply("hi") == 'You said: "hi" (1 word). I am a demo: no model, just LiveKit.'
    assert reply(" \n ") == "Say something and I will answer."


@pytest.mark.anyio
async def test_chat_greets_each_person_once_and_answers_their_texts() -> None:
    """Joining twice greets once, another agent is not greeted, and each text is answered to its sender."""
    sent: list[tuple[str, str]] = []

    async def send(text: str, identity: str) -> None:
        sent.append((identity, text))

    chat = DemoChat(AGENT, '{"language": "en"}', send)
    chat.on_participant(participant("alice", "Alice"))
    chat.on_participant(participant("alice", "Alice"))
    chat.on_participant(participant("agent-other", agent=True))
    chat.on_text(Reader("hi"), "alice")  # type: ignore[arg-type]
    await chat.drain()
    assert sent == [
        ("alice", f"Hello Alice, this is the lkps demo agent {AGENT}. Session metadata: language=en."),
        ("alice", reply("hi")),
    ]


@pytest.mark.anyio
async def test_a_failed_send_is_logged_and_does_not_stop_the_chat(caplog: pytest.LogCaptureFixture) -> None:
    """When the room refuses a text, the failure is logged and later texts are still answered."""
    sent: list[str] = []

    async def send(text: str, identity: str) -> None:
        if not sent:
            sent.append("failed")
            raise ConnectionError("room gone")
        sent.append(identity)

    chat = DemoChat(AGENT, "", send)
    chat.on_participant(participant("bob"))
    await chat.drain()
    chat.on_text(Reader("again"), "bob")  # type: ignore[arg-type]
    await chat.drain()
    assert sent == ["failed", "bob"]
    assert "room gone" in caplog.text


def test_load_is_the_share_of_chats_served_not_the_machine_cpu() -> None:
    """LiveKit sees the demo worker's load as its running jobs over MAX_CHATS, so a busy machine does not
    make it skip the demo agent."""
    assert load(SimpleNamespace(active_jobs=[])) == 0.0  # type: ignore[arg-type]
    assert load(SimpleNamespace(active_jobs=["job"] * MAX_CHATS)) == 1.0  # type: ignore[arg-type]
