"""The session lifecycle: webhook events stored once each and folded monotonically into the session row."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.persistence.db import create_engine
from gateway.persistence.lifecycle import LifecycleEvent, SessionLifecycle
from gateway.persistence.tables import session_events, sessions
from tests.support.clock import FakeClock
from tests.support.sessions import insert_sessions, session_row

pytestmark = pytest.mark.anyio
T0 = datetime(2027, 1, 15, 8, 0, tzinfo=UTC)


@pytest.fixture
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(database_url, pool_size=2)
    yield engine
    await engine.dispose()


def lifecycle(engine: AsyncEngine) -> SessionLifecycle:
    return SessionLifecycle(engine, FakeClock(T0.timestamp() + 3600))


def ev(
    event: str,
    room: str,
    seconds: int,
    *,
    identity: str | None = None,
    kind: str | None = None,
    event_id: str = "",
) -> LifecycleEvent:
    return LifecycleEvent(
        id=event_id or f"EV_{event}_{room}_{seconds}_{identity}",
        event=event,
        room_name=room,
        participant_identity=identity,
        participant_kind=kind,
        occurred_at=T0 + timedelta(seconds=seconds),
        received_at=T0 + timedelta(seconds=seconds + 1),
        details={"room_sid": "RM_1"},
    )


def conversation(room: str) -> list[LifecycleEvent]:
    """A whole session: room up at +0, user at +1, agent at +2, room closed at +60."""
    return [
        ev("room_started", room, 0),
        ev("participant_joined", room, 1, identity="ADA0001", kind="STANDARD"),
        ev("participant_joined", room, 2, identity="agent-x", kind="AGENT"),
        ev("participant_left", room, 50, identity="ADA0001", kind="STANDARD"),
        ev("room_finished", room, 60),
    ]


async def test_a_conversation_takes_the_session_from_issued_to_ended(engine: AsyncEngine) -> None:
    """In order, the events make the session active, record the agent's join, then end it with a duration."""
    await insert_sessions(engine, session_row("room-a", created_at=T0 - timedelta(seconds=5)))
    store = lifecycle(engine)
    states = []
    for event in conversation("room-a"):
        assert (await store.record(event)).new is True
        state = await store.session("room-a")
        assert state is not None
        states.append(state.status)
    assert states == ["active", "active", "active", "active", "ended"]
    final = await store.session("room-a")
    assert final is not None
    assert (final.started_at, final.agent_joined_at, final.ended_at, final.ended_by) == (
        T0,
        T0 + timedelta(seconds=2),
        T0 + timedelta(seconds=60),
        "webhook",
    )
    assert final.duration_seconds == 60.0


async def test_every_delivery_order_ends_in_the_same_state(engine: AsyncEngine) -> None:
    """All 24 orders of the four state-changing events leave identical rows (no corruption by reordering)."""
    events = [event for event in conversation("x") if event.event != "participant_left"]
    orders = list(itertools.permutations(range(len(events))))
    await insert_sessions(engine, *(session_row(f"room-{n}") for n in range(len(orders))))
    store = lifecycle(engine)
    finals = set()
    for n, order in enumerate(orders):
        room = f"room-{n}"
        for index in order:
            await store.record(replace(events[index], id=f"{events[index].id}-{n}", room_name=room))
        state = await store.session(room)
        assert state is not None
        finals.add((state.status, state.started_at, state.agent_joined_at, state.ended_at, state.ended_by))
    assert finals == {("ended", T0, T0 + timedelta(seconds=2), T0 + timedelta(seconds=60), "webhook")}


async def test_a_redelivered_event_changes_nothing(engine: AsyncEngine) -> None:
    """A second delivery of an event id is refused as a duplicate, even if its content differs."""
    await insert_sessions(engine, session_row("room-a"))
    store = lifecycle(engine)
    assert (await store.record(ev("room_started", "room-a", 10, event_id="EV_same"))).new is True
    assert (await store.record(ev("room_finished", "room-a", 20, event_id="EV_same"))).new is False
    state = await store.session("room-a")
    assert state is not None
    assert (state.status, state.started_at) == ("active", T0 + timedelta(seconds=10))
    async with engine.connect() as conn:
        assert await conn.scalar(select(func.count()).select_from(session_events)) == 1


async def test_a_late_room_started_never_reopens_an_ended_session(engine: AsyncEngine) -> None:
    """room_started after room_finished fills in the start time but the session stays ended."""
    await insert_sessions(engine, session_row("room-a"))
    store = lifecycle(engine)
    await store.record(ev("room_finished", "room-a", 60))
    await store.record(ev("room_started", "room-a", 0))
    state = await store.session("room-a")
    assert state is not None
    assert (state.status, state.started_at, state.ended_at) == (
        "ended",
        T0,
        T0 + timedelta(seconds=60),
    )
    assert state.duration_seconds == 60.0


async def test_departures_do_not_end_a_session(engine: AsyncEngine) -> None:
    """participant_left and participant_connection_aborted are history only: the session stays active."""
    await insert_sessions(engine, session_row("room-a"))
    store = lifecycle(engine)
    await store.record(ev("room_started", "room-a", 0))
    await store.record(ev("participant_left", "room-a", 5, identity="ADA0001", kind="STANDARD"))
    await store.record(ev("participant_connection_aborted", "room-a", 6, identity="agent-x", kind="AGENT"))
    state = await store.session("room-a")
    assert state is not None
    assert (state.status, state.ended_at, state.agent_joined_at) == ("active", None, None)


async def test_the_earliest_start_and_agent_join_win(engine: AsyncEngine) -> None:
    """Later joins (a reconnect, or an earlier join delivered late) keep the earliest times."""
    await insert_sessions(engine, session_row("room-a"))
    store = lifecycle(engine)
    await store.record(ev("participant_joined", "room-a", 30, identity="ADA0001", kind="STANDARD"))
    await store.record(ev("participant_joined", "room-a", 40, identity="agent-x", kind="AGENT"))
    await store.record(ev("participant_joined", "room-a", 3, identity="agent-x", kind="AGENT"))
    await store.record(ev("participant_joined", "room-a", 2, identity="ADA0001", kind="STANDARD"))
    state = await store.session("room-a")
    assert state is not None
    assert (state.started_at, state.agent_joined_at) == (T0 + timedelta(seconds=2), T0 + timedelta(seconds=3))


async def test_an_agent_alone_does_not_start_the_session(engine: AsyncEngine) -> None:
    """The agent joining is recorded, but only the room starting or a person joining makes it active."""
    await insert_sessions(engine, session_row("room-a"))
    store = lifecycle(engine)
    await store.record(ev("participant_joined", "room-a", 3, identity="agent-x", kind="AGENT"))
    state = await store.session("room-a")
    assert state is not None
    assert (state.status, state.started_at, state.agent_joined_at) == (
        "issued",
        None,
        T0 + timedelta(seconds=3),
    )


async def test_events_of_unknown_rooms_are_kept(engine: AsyncEngine) -> None:
    """An event for a room lkps never issued is stored, and no session row appears."""
    store = lifecycle(engine)
    assert (await store.record(ev("room_started", "not-ours", 0))).new is True
    async with engine.connect() as conn:
        assert (await conn.execute(select(session_events.c.room_name))).scalars().all() == ["not-ours"]
        assert await conn.scalar(select(func.count()).select_from(sessions)) == 0


async def test_ending_keeps_the_first_end(engine: AsyncEngine) -> None:
    """A session ended by its caller keeps that end when room_finished arrives, and ending again is a no-op."""
    await insert_sessions(engine, session_row("room-a"))
    store = lifecycle(engine)
    await store.record(ev("room_started", "room-a", 0))
    ended = await store.end("room-a", "caller")
    assert ended is not None
    assert (ended.status, ended.ended_by, ended.ended_at) == ("ended", "caller", T0 + timedelta(hours=1))
    await store.record(ev("room_finished", "room-a", 7200))
    again = await store.end("room-a", "admin")
    assert again == ended
    assert await store.end("no-such-room", "caller") is None


async def test_the_room_finished_of_an_own_deletion_leaves_the_end_to_who_deleted(
    engine: AsyncEngine,
) -> None:
    """LiveKit's room_finished for the room an ender is deleting may be recorded before the ender marks the
    row: the end is still the ender's (at the webhook's time); a room_finished before the deletion began is
    an end of its own."""
    await insert_sessions(engine, session_row("room-a"), session_row("room-b"))
    store = lifecycle(engine)
    await store.record(ev("room_finished", "room-a", 10))
    ended = await store.end("room-a", "caller", since=T0 + timedelta(seconds=9))
    assert ended is not None
    assert (ended.status, ended.ended_by, ended.ended_at) == ("ended", "caller", T0 + timedelta(seconds=10))
    await store.record(ev("room_finished", "room-b", 10))
    earlier = await store.end("room-b", "caller", since=T0 + timedelta(seconds=11))
    assert earlier is not None
    assert (earlier.ended_by, earlier.ended_at) == ("webhook", T0 + timedelta(seconds=10))
