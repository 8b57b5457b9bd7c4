"""A hand-driven clock for tests: time moves only when a test calls `advance`."""

from __future__ import annotations

# A fixed, realistic epoch (2027-01-15) so token times in failures are readable and runs are repeatable.
DEFAULT_EPOCH = 1_800_000_000.0


class FakeClock:
    """Implements `authz.clock.Clock`; wall and monotonic time advance together."""

    def __init__(self, now: float = DEFAULT_EPOCH) -> None:
        self._now = now
        self._monotonic = 10_000.0

    def now(self) -> float:
        return self._now

    def monotonic(self) -> float:
        return self._monotonic

    def advance(self, seconds: float) -> None:
        self._now += seconds
        self._monotonic += seconds
