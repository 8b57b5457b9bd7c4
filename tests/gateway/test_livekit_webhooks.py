"""What lkps keeps of a verified LiveKit event: its time as precisely as LiveKit gives it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

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


def test_other_events_take_their_second_refined_by_the_receipt_within_it() -> None:
    """A departure has no finer time than the event's second: the receipt time refines it while it falls
    inside that second, and is clamped to the second's bounds when it does not (delivery delay, skew)."""
    left = event("participant_left", "room-1", created_at=SECOND, identity="ada")
    left.participant.joined_at_ms = PRECISE_MS  # when it joined, not when it left
    base = datetime.fromtimestamp(SECOND, UTC)
    within = base.replace(microsecond=250_000)
    for received, expected in [
        (within, within),
        (base + timedelta(seconds=5), base.replace(microsecond=999_999)),
        (base - timedelta(seconds=5), base),
    ]:
        kept = lifecycle_event(left, left.SerializeToString(), received)
        assert kept is not None
        assert kept.occurred_at == expected


def test_an_event_without_a_usable_time_is_dated_at_its_receipt() -> None:
    """createdAt missing (0) or absurd: the time lkps received it."""
    undated = event("room_finished", "room-1", created_at=0)
    kept = lifecycle_event(undated, undated.SerializeToString(), RECEIVED)
    assert kept is not None
    assert kept.occurred_at == RECEIVED
