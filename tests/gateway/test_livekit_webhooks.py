"""What lkps keeps of a verified LiveKit event: its time as precisely as LiveKit gives it."""

from __future__ import annotations

from datetime import UTC, datetime

from gateway.livekit_webhooks import lifecycle_event
from tests.support.livekit_webhooks import event

RECEIVED = datetime(2026, 12, 3, 12, 0, 30, tzinfo=UTC)
SECOND = 1796212800  # the event's whole second
PRECISE_MS = SECOND * 1000 + 734


def test_a_join_happened_at_the_participants_millisecond_join_time() -> None:
    """participant_joined takes the participant's joinedAtMs, not the event's whole second: activity in the
    same second as a session's end is still ordered against it."""
    joined = event("participant_joined", "room-1", created_at=SECOND, identity="ada")
    joined.participant.joined_at_ms = PRECISE_MS
    kept = lifecycle_event(joined, joined.SerializeToString(), RECEIVED)
    assert kept is not None
    assert kept.occurred_at == datetime.fromtimestamp(PRECISE_MS / 1000, UTC)


def test_a_room_started_at_its_millisecond_creation_time() -> None:
    """room_started takes the room's creationTimeMs."""
    started = event("room_started", "room-1", created_at=SECOND)
    started.room.creation_time_ms = PRECISE_MS
    kept = lifecycle_event(started, started.SerializeToString(), RECEIVED)
    assert kept is not None
    assert kept.occurred_at == datetime.fromtimestamp(PRECISE_MS / 1000, UTC)


def test_other_events_take_their_whole_second_and_none_the_receipt_time() -> None:
    """A departure has no finer time than the event's second; an event without a usable time is dated
    when lkps received it."""
    left = event("participant_left", "room-1", created_at=SECOND, identity="ada")
    left.participant.joined_at_ms = PRECISE_MS  # when it joined, not when it left
    kept = lifecycle_event(left, left.SerializeToString(), RECEIVED)
    assert kept is not None
    assert kept.occurred_at == datetime.fromtimestamp(SECOND, UTC)
    undated = event("room_finished", "room-1", created_at=0)
    kept = lifecycle_event(undated, undated.SerializeToString(), RECEIVED)
    assert kept is not None
    assert kept.occurred_at == RECEIVED
