"""The clock seam: product code asks an injected clock for the time so tests control it."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Protocol


class Clock(Protocol):
    def now(self) -> float:
        """Seconds since the epoch (wall clock, used for token times)."""
        ...

    def monotonic(self) -> float:
        """Seconds on a monotonic clock (used for cache ages and cooldowns)."""
        ...


class SystemClock:
    def now(self) -> float:
        return time.time()

    def monotonic(self) -> float:
        return time.monotonic()


def utc_now(clock: Clock) -> datetime:
    """The clock's wall time as an aware UTC datetime (what the database columns store)."""
    return datetime.fromtimestamp(clock.now(), UTC)
