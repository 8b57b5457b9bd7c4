"""The verified-token cache: a token that passed every check is not verified again until it expires.

Keyed by the SHA-256 of the token (the token itself is never kept). An entry dies with its token's `exp`
(plus leeway) or as soon as its signing key leaves the key set (or the set grows older than its maximum
staleness), so caching never extends what Entra signed.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable

from authz.caller import Caller
from authz.clock import Clock

# A full sweep for expired entries costs O(size); when the cache is full it runs at most this often and
# the oldest entry is evicted in between, which keeps every insert amortised O(1).
_SWEEP_INTERVAL_SECONDS = 1.0


class VerifiedTokenCache:
    """Bounded map from token hash to the `Caller` it produced; `max_entries == 0` disables caching."""

    def __init__(
        self,
        max_entries: int,
        leeway_seconds: float,
        clock: Clock,
        key_present: Callable[[str, str], bool],
    ) -> None:
        """`key_present(version, kid)` says whether the signing key is still in that version's key set."""
        self._max_entries = max_entries
        self._leeway = leeway_seconds
        self._clock = clock
        self._key_present = key_present
        self._entries: dict[bytes, tuple[Caller, str]] = {}  # insertion order = age
        self._next_sweep = 0.0

    def __len__(self) -> int:
        return len(self._entries)

    @staticmethod
    def key(token: str) -> bytes:
        """The cache key of a token: its SHA-256, computed once per request by the caller."""
        return hashlib.sha256(token.encode()).digest()

    def get(self, key: bytes) -> Caller | None:
        """The cached `Caller` of exactly this token while within `exp` and while its signing key exists."""
        entry = self._entries.get(key)
        if entry is None:
            return None
        caller, kid = entry
        if self._clock.now() <= caller.expires_at + self._leeway and self._key_present(caller.version, kid):
            return caller
        del self._entries[key]
        return None

    def put(self, key: bytes, caller: Caller, kid: str) -> None:
        """Remember a token that passed every check, signed with `kid`."""
        if not self._max_entries:
            return
        self._entries.pop(key, None)
        if len(self._entries) >= self._max_entries:
            self._make_room()
        self._entries[key] = (caller, kid)

    def clear(self) -> None:
        self._entries.clear()

    def _make_room(self) -> None:
        monotonic = self._clock.monotonic()
        if monotonic >= self._next_sweep:
            self._next_sweep = monotonic + _SWEEP_INTERVAL_SECONDS
            cutoff = self._clock.now() - self._leeway
            for digest in [d for d, (caller, _) in self._entries.items() if caller.expires_at < cutoff]:
                del self._entries[digest]
        if len(self._entries) >= self._max_entries:
            del self._entries[next(iter(self._entries))]
