"""Query parameters of the admin session listing: checked one by one with messages naming the parameter,
and the opaque cursor (base64url of the last row's `created_at` and id) of its keyset pagination."""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Iterable
from datetime import UTC, datetime

import msgspec

from config.settings import is_guid
from gateway.errors import ApiError, bad_request
from gateway.persistence.admin_queries import SessionQuery
from gateway.persistence.lifecycle import SessionState
from gateway.schemas import forbidden_character

STATUSES = ("issued", "active", "ended")
DEFAULT_LIMIT = 50
MAX_LIMIT = 500
PARAMETERS = ("agent", "client_app", "user", "status", "since", "until", "limit", "cursor")
_MAX_USER = 128
_MAX_CURSOR = 256  # an encoded cursor is ~100 characters
_DIGITS = re.compile(r"[0-9]{1,6}")  # ASCII only: "²".isdigit() is true, and int() refuses it


def check_parameters(parameters: Iterable[tuple[str, str]]) -> None:
    """Refuse a parameter the listing does not know (a misspelt filter must not silently list
    everything), and any value with control characters (`datetime.fromisoformat` stops at a NUL)."""
    for name, value in parameters:
        if name not in PARAMETERS:
            shown = name if len(name) <= 32 and forbidden_character(name) is None else "(unprintable)"
            raise bad_request(
                f'Unknown query parameter "{shown}"; the parameters are: {", ".join(PARAMETERS)}',
                reason="invalid_query",
            )
        if (found := forbidden_character(value)) is not None:
            raise _invalid(name, f"must be text without control characters (found {found})")


def session_query(
    *,
    agent: str | None,
    client_app: str | None,
    user: str | None,
    status: str | None,
    since: str | None,
    until: str | None,
    limit: str | None,
    cursor: str | None,
) -> SessionQuery:
    if user is not None and not 0 < len(user) <= _MAX_USER:
        raise _invalid("user", f"must be a user id or object id of 1 to {_MAX_USER} characters")
    if status is not None and status not in STATUSES:
        raise _invalid("status", f"must be one of {', '.join(STATUSES)}")
    return SessionQuery(
        agent_app_id=_guid("agent", agent),
        client_app_id=_guid("client_app", client_app),
        user=user,
        status=status,
        since=_moment("since", since),
        until=_moment("until", until),
        limit=_limit(limit),
        after=None if cursor is None else decode_cursor(cursor),
    )


def encode_cursor(last: SessionState) -> str:
    raw = msgspec.json.encode([last.created_at.isoformat(), last.id])
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    position = _cursor_position(cursor) if len(cursor) <= _MAX_CURSOR else None
    if position is None:
        raise _invalid("cursor", "is not a cursor from this API; pass next_cursor unchanged")
    return position


def _cursor_position(cursor: str) -> tuple[datetime, str] | None:
    try:
        raw = base64.b64decode(cursor + "=" * (-len(cursor) % 4), altchars=b"-_", validate=True)
        created_at, session_id = msgspec.json.decode(raw, type=tuple[datetime, str])
        # A cursor this API wrote has an offset, a time in datetime's range, and a session id (a UUID).
        if created_at.tzinfo is None or not is_guid(session_id):
            return None
        return created_at.astimezone(UTC), session_id
    except (binascii.Error, ValueError, OverflowError, msgspec.DecodeError):
        return None


def _guid(name: str, value: str | None) -> str | None:
    if value is None:
        return None
    if not is_guid(value.lower()):
        raise _invalid(name, "must be an application (client) id: a UUID")
    return value.lower()


def _moment(name: str, value: str | None) -> datetime | None:
    if value is None:
        return None
    try:
        moment = datetime.fromisoformat(value)
        # A time without an offset is taken as UTC, the zone of every time this API returns. An offset can
        # move a time past year 1 or 9999, which datetime cannot hold (OverflowError).
        return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
    except (ValueError, OverflowError):
        raise _invalid(
            name, "must be an RFC 3339 time between the years 1 and 9999 in UTC, such as 2026-01-31T12:00:00Z"
        ) from None


def _limit(value: str | None) -> int:
    if value is None:
        return DEFAULT_LIMIT
    if not _DIGITS.fullmatch(value) or not 1 <= int(value) <= MAX_LIMIT:
        raise _invalid("limit", f"must be a whole number from 1 to {MAX_LIMIT}")
    return int(value)


def _invalid(name: str, problem: str) -> ApiError:
    return bad_request(f'Query parameter "{name}" {problem}', reason="invalid_query")
