"""LiveKit down or restarted under a running lkps: the documented answers, no partial writes, recovery
without anyone's help."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.livekit_server import LiveKitStack, livekit_stack

pytestmark = pytest.mark.slow


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[LiveKitStack]:
    """A stack of its own: these tests kill its LiveKit server."""
    with livekit_stack(tmp_path) as running:
        yield running


@pytest.fixture(autouse=True)
def _leave_rooms() -> None:
    """The stack above is per test; nothing to clean between tests."""


def status(stack: LiveKitStack, room: str) -> str:
    return str(stack.session_detail(room)["session"]["status"])


def test_livekit_down_then_back_ends_the_session_on_retry(stack: LiveKitStack) -> None:
    """With LiveKit killed, ending a session answers 502 livekit_unavailable with Retry-After and leaves the
    session open; once LiveKit is back, the same request ends it, with no restart of lkps."""
    token = stack.deployment.user_token("ada")
    started = stack.start_session(token)
    room = started["room_name"]
    stack.join(started["participant_token"]).expect("connected")
    stack.livekit.kill()

    refused = stack.end_session(room, token)
    assert refused.status_code == 502
    assert refused.json()["error"] == "livekit_unavailable"
    assert int(refused.headers["Retry-After"]) > 0
    assert status(stack, room) != "ended"

    stack.close_participants()
    stack.livekit.start()
    ended = stack.end_session(room, token)
    assert ended.status_code == 200, ended.text
    assert status(stack, room) == "ended"


def test_sessions_start_and_join_again_after_a_livekit_restart(stack: LiveKitStack) -> None:
    """Session starts do not depend on LiveKit being up (the token is minted by lkps alone); after a
    restart the server knows no old room, a new session's token joins, and ending an old session whose
    room vanished with the restart counts as ended."""
    token = stack.deployment.user_token("grace")
    before = stack.start_session(token)
    stack.join(before["participant_token"]).expect("connected")
    stack.livekit.kill()
    during = stack.start_session(token)
    stack.close_participants()
    stack.livekit.start()

    joined = stack.join(during["participant_token"]).expect("connected", "connect_failed")
    assert joined["event"] == "connected", joined
    assert joined["room"] == during["room_name"]
    ended = stack.end_session(before["room_name"], token)
    assert ended.status_code == 200, ended.text
    assert status(stack, before["room_name"]) == "ended"
