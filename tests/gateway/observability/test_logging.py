"""Log lines: in the console format, whatever a value holds, each event is one line and no value reaches the
terminal as a control character; timestamps and the access line's direct path write what structlog's
bound loggers write."""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable
from datetime import UTC, datetime

import pytest
import structlog

from gateway.observability.logging import DirectInfo, Redactor, Timestamp, escape_controls
from tests.support.entra import make_settings

# The renderer's own colours (SGR sequences); anything else that is a control character came from a value.
_COLOURS = re.compile(r"\x1b\[[0-9;]*m")
_CONTROL = re.compile(r"[\x00-\x09\x0b-\x1f\x7f-\x9f\u2028\u2029]")
_FORGED = "\n2026-01-01T00:00:00.000000Z [error    ] forged_event"
# One of each kind: line breaks, a terminal escape (clear screen, set the window title), C0, DEL and C1.
_HOSTILE = f"a{_FORGED}\r\x1b[2J\x1b]0;title\x07\x00\x7f\x85\x9b\u2028z"


def _console_lines(capfd: pytest.CaptureFixture[str]) -> list[str]:
    out, _ = capfd.readouterr()
    return _COLOURS.sub("", out).splitlines()


def test_every_value_is_escaped_on_one_line(
    debug_logging: Callable[..., None], capfd: pytest.CaptureFixture[str]
) -> None:
    """The event, string values, values of other types and a library record's message are written with
    their control characters escaped: one line per event, none forged, no raw control character."""
    debug_logging(make_settings(log_format="console", log_level="debug"))

    class Hostile:
        def __repr__(self) -> str:
            return _HOSTILE

    structlog.get_logger("lkps.test").warning(_HOSTILE, field=_HOSTILE, spaced=f"x {_HOSTILE}", obj=Hostile())
    logging.getLogger("sqlalchemy.pool").warning(_HOSTILE)
    lines = _console_lines(capfd)
    assert len(lines) == 2, lines
    for line in lines:
        assert not _CONTROL.search(line), line
        assert "forged_event" in line
        assert not line.startswith("2026-01-01")
    assert r"a\n2026-01-01T00:00:00.000000Z [error    ] forged_event\r\x1b[2J\x1b]0;title\x07" in lines[0]
    assert r"\x00\x7f\x85\x9b\u2028z" in lines[0]
    assert "obj=a\\n2026" in lines[0]


def test_a_traceback_keeps_its_lines_indented_and_escaped(
    debug_logging: Callable[..., None], capfd: pytest.CaptureFixture[str]
) -> None:
    """An exception whose message carries a forged line and a terminal escape is logged with every
    traceback line indented below the event, so no line passes for an event, and its controls escaped."""
    debug_logging(make_settings(log_format="console", log_level="debug"))
    try:
        raise ValueError(_HOSTILE)
    except ValueError:
        structlog.get_logger("lkps.test").exception("failed")
    event, *traceback = _console_lines(capfd)
    assert "failed" in event
    assert traceback[0].strip() == "Traceback (most recent call last):"
    assert all(line.startswith("    ") for line in traceback), traceback
    assert any(line.strip().startswith("2026-01-01") for line in traceback)  # the message's own line break
    assert not any(_CONTROL.search(line) for line in traceback)
    assert r"\r\x1b[2J" in traceback[-1]


def test_a_configured_secret_is_masked_in_its_escaped_form() -> None:
    """A configured secret holding a control character is still masked once the console escaped it."""
    secret = "pass\tword\x1b-with-controls"
    assert Redactor([secret])(f"url=db {escape_controls(secret)}!") == "url=db [redacted]!"


def test_the_timestamp_is_written_as_structlogs_iso_utc_stamper() -> None:
    """Each instant is written as `TimeStamper(fmt="iso", utc=True)` writes it, across and within seconds,
    backwards in time, at a whole second and where the microseconds round up into the next second."""
    instants = [
        1767322645.678901,
        1767322645.25,
        1767322645.0,
        1767322645.9999996,
        1767322646.5,
        1767322644.1,
    ]
    clock = iter(instants)
    stamp = Timestamp(now=lambda: next(clock))
    written = [stamp(None, "info", {})["timestamp"] for _ in instants]
    assert written == [datetime.fromtimestamp(t, UTC).isoformat().replace("+00:00", "Z") for t in instants]
    assert written[2] == "2026-01-02T02:57:25Z"


@pytest.mark.parametrize("log_format", ["json", "console"])
def test_a_direct_event_is_the_line_a_bound_logger_writes(
    debug_logging: Callable[..., None], capfd: pytest.CaptureFixture[str], log_format: str
) -> None:
    """`DirectInfo` writes the line `log.info` writes for the same fields (timestamp aside), secrets masked."""
    debug_logging(make_settings(log_format=log_format, log_level="info"))
    secret = make_settings().livekit_api_secret
    fields = {"request_id": "r1", "status": 200, "reason": None, "note": f"key {secret}", "token": "abc"}
    structlog.get_logger("lkps.test").info("request", **fields)
    DirectInfo()({**fields, "event": "request"})
    lines = _console_lines(capfd)
    assert len(lines) == 2
    assert secret not in "".join(lines)
    if log_format == "json":
        bound, direct = (json.loads(line) for line in lines)
        assert bound.pop("timestamp")
        assert direct.pop("timestamp")
        assert direct == bound
        assert list(direct) == [*fields, "event", "level"]
    else:
        assert [line.split(" ", 1)[1] for line in lines] == [lines[0].split(" ", 1)[1]] * 2


def test_direct_events_follow_the_configured_level_and_capture(
    debug_logging: Callable[..., None], capfd: pytest.CaptureFixture[str]
) -> None:
    """At level warning an info event is not written; under `capture_logs` it is captured as `log.info`'s."""
    debug_logging(make_settings(log_level="warning"))
    DirectInfo()({"request_id": "r1", "event": "request"})
    assert capfd.readouterr().out == ""
    debug_logging(make_settings(log_level="info"))
    with structlog.testing.capture_logs() as captured:
        DirectInfo()({"request_id": "r1", "event": "request"})
    assert captured == [{"request_id": "r1", "event": "request", "log_level": "info"}]
