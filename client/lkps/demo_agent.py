"""The lkps demo agent: a stock LiveKit Agents worker that joins the room it is dispatched to and answers.

No model and no network besides LiveKit. It greets every participant who joins with a text stream on the
`lk.chat` topic (naming the dispatch metadata the session was started with) and answers each text they
send there, so a browser shows an agent that really joined. Like any agent under lkps it sets no agent
name, URL, key or secret in its code: `lkps agent run` provides them.

    pip install "./client[agents]"                           # from a clone of the lkps repository
    lkps agent run -- python -m lkps.demo_agent start       # LKPS_CLIENT_* of the agent's app
    lkps agent run --dev -- python -m lkps.demo_agent dev   # next to a running `lkps dev`
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable

from livekit import rtc
from livekit.agents import AgentServer, JobContext, cli

CHAT_TOPIC = "lk.chat"  # the topic livekit-client's chat and LiveKit Agents' text input use
MAX_CHATS = 10  # rooms one demo worker serves at once (at the default load threshold 0.7: 7)

log = logging.getLogger("lkps.demo_agent")

Send = Callable[[str, str], Awaitable[None]]  # (text, destination identity)


def greeting(agent_name: str, participant: str, metadata: str) -> str:
    """What the agent says to a participant who joins: who it is, and the session's dispatch metadata."""
    text = f"Hello {participant}, this is the lkps demo agent {agent_name}."
    try:
        details = json.loads(metadata) if metadata else {}
    except json.JSONDecodeError:
        details = None
    if isinstance(details, dict) and details:
        text += (
            " Session metadata: "
            + ", ".join(f"{key}={value}" for key, value in sorted(details.items()))
            + "."
        )
    elif details is None:
        text += " (The session metadata is not JSON.)"
    return text


def reply(text: str) -> str:
    """The answer to a text a participant sent on `lk.chat`."""
    said = " ".join(text.split())
    if not said:
        return "Say something and I will answer."
    words = len(said.split())
    return (
        f'You said: "{said}" ({words} word{"" if words == 1 else "s"}). I am a demo: no model, just LiveKit.'
    )


class DemoChat:
    """Greets each participant once and answers their texts; `send` is the room's text stream."""

    def __init__(self, agent_name: str, metadata: str, send: Send) -> None:
        self._agent_name = agent_name
        self._metadata = metadata
        self._send = send
        self._greeted: set[str] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    def on_participant(self, participant: rtc.RemoteParticipant) -> None:
        """`participant_connected` (and everyone already there after connecting): greet people, not agents."""
        if participant.kind == rtc.ParticipantKind.PARTICIPANT_KIND_AGENT:
            return
        if participant.identity in self._greeted:
            return
        self._greeted.add(participant.identity)
        name = participant.name or participant.identity
        self._spawn(self._send(greeting(self._agent_name, name, self._metadata), participant.identity))

    def on_text(self, reader: rtc.TextStreamReader, sender: str) -> None:
        """The `lk.chat` text stream handler: read the whole text, then answer the sender."""
        self._spawn(self._answer(reader, sender))

    async def drain(self) -> None:
        """Wait for every greeting and answer under way (their failures are logged, not raised)."""
        while self._tasks:
            await asyncio.wait(set(self._tasks))

    async def _answer(self, reader: rtc.TextStreamReader, sender: str) -> None:
        await self._send(reply(await reader.read_all()), sender)

    def _spawn(self, work: Awaitable[None]) -> None:
        task = asyncio.ensure_future(work)
        self._tasks.add(task)
        task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.warning("sending to the room failed: %r", task.exception())


async def entrypoint(ctx: JobContext) -> None:
    """One job: join the dispatched room and chat until the room closes."""
    room = ctx.room

    async def send(text: str, identity: str) -> None:
        await room.local_participant.send_text(text, topic=CHAT_TOPIC, destination_identities=[identity])

    chat = DemoChat(ctx.job.agent_name, ctx.job.metadata, send)
    # Handlers first, so nobody who joins or writes while the agent connects is missed.
    room.on("participant_connected", chat.on_participant)
    room.register_text_stream_handler(CHAT_TOPIC, chat.on_text)
    await ctx.connect()
    for participant in list(room.remote_participants.values()):
        chat.on_participant(participant)
    ctx.add_shutdown_callback(chat.drain)


def load(server: AgentServer) -> float:
    """The worker's load as LiveKit sees it: the share of MAX_CHATS it is serving (each job is a process)."""
    return len(server.active_jobs) / MAX_CHATS


def main() -> None:
    """`python -m lkps.demo_agent start|dev|...`: the stock LiveKit Agents command line."""
    # URL, key, secret and agent name come from the environment `lkps agent run` sets. Its load is its
    # share of MAX_CHATS, not the machine's CPU: answering texts costs next to nothing, and a busy shared
    # machine (CI) must not make LiveKit skip it. The health endpoint listens on loopback and a free
    # port, so several demo agents can share one machine.
    server = AgentServer(load_fnc=load, host="127.0.0.1", port=0)
    server.rtc_session(entrypoint)
    cli.run_app(server)


if __name__ == "__main__":
    main()
