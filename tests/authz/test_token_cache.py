"""The verified-token cache: hits, expiry, key removal, bounds and what it stores."""

from __future__ import annotations

import hashlib

import httpx
import pytest

from authz.caller import Caller
from authz.entra import EntraValidator
from authz.errors import TokenRejected
from authz.jwks import JwksCache
from authz.token_cache import VerifiedTokenCache
from config.settings import Settings
from tests.support.callers import make_caller
from tests.support.clock import FakeClock
from tests.support.entra import FakeEntra, make_settings

LEEWAY = 60


def caller(expires_at: int, version: str = "2.0") -> Caller:
    return make_caller(expires_at=expires_at, version=version)


class Keys:
    """A stand-in for the key sets: which (version, kid) pairs are currently published."""

    def __init__(self) -> None:
        self.present = {("2.0", "kid-1"), ("1.0", "kid-1")}

    def __call__(self, version: str, kid: str) -> bool:
        return (version, kid) in self.present


key = VerifiedTokenCache.key


def make_cache(clock: FakeClock, max_entries: int = 100, keys: Keys | None = None) -> VerifiedTokenCache:
    return VerifiedTokenCache(max_entries, LEEWAY, clock, keys or Keys())


class TestHits:
    def test_hit_returns_the_stored_caller(self, clock: FakeClock) -> None:
        """A token put in the cache is returned as the very same Caller."""
        cache = make_cache(clock)
        stored = caller(int(clock.now()) + 600)
        cache.put(key("a.b.c"), stored, "kid-1")
        assert cache.get(key("a.b.c")) is stored

    def test_other_tokens_miss(self, clock: FakeClock) -> None:
        """Only exactly the same token string hits."""
        cache = make_cache(clock)
        cache.put(key("a.b.c"), caller(int(clock.now()) + 600), "kid-1")
        assert cache.get(key("a.b.d")) is None
        assert cache.get(key("a.b.c ")) is None

    def test_key_is_a_hash_never_the_token(self, clock: FakeClock) -> None:
        """Entries are keyed by SHA-256 of the token and the token itself is stored nowhere."""
        cache = make_cache(clock)
        token = "eyJhbGciOiJSUzI1NiJ9.eyJzZWNyZXQiOnRydWV9.c2lnbmF0dXJlLWJ5dGVz"
        cache.put(key(token), caller(int(clock.now()) + 600), "kid-1")
        assert list(cache._entries) == [hashlib.sha256(token.encode()).digest()]
        assert key(token) == hashlib.sha256(token.encode()).digest()
        assert token not in repr(cache._entries)
        assert "c2lnbmF0dXJl" not in repr(cache._entries)


class TestValidity:
    def test_expiry_is_honoured_with_leeway(self, clock: FakeClock) -> None:
        """An entry is served up to exp + leeway and dropped right after."""
        cache = make_cache(clock)
        cache.put(key("t"), caller(int(clock.now()) + 10), "kid-1")
        clock.advance(10 + LEEWAY)
        assert cache.get(key("t")) is not None
        clock.advance(1)
        assert cache.get(key("t")) is None
        assert len(cache) == 0

    def test_removed_kid_invalidates_immediately(self, clock: FakeClock) -> None:
        """When the signing key leaves the key set, cached tokens signed with it stop hitting at once."""
        keys = Keys()
        cache = make_cache(clock, keys=keys)
        cache.put(key("t"), caller(int(clock.now()) + 600), "kid-1")
        keys.present.discard(("2.0", "kid-1"))
        assert cache.get(key("t")) is None
        keys.present.add(("2.0", "kid-1"))
        assert cache.get(key("t")) is None  # the entry is gone, not merely hidden

    def test_kid_is_checked_in_the_tokens_own_version(self, clock: FakeClock) -> None:
        """A v1 entry is judged against the v1 key set."""
        keys = Keys()
        cache = make_cache(clock, keys=keys)
        cache.put(key("t"), caller(int(clock.now()) + 600, version="1.0"), "kid-1")
        keys.present.discard(("1.0", "kid-1"))
        assert cache.get(key("t")) is None


class TestBounds:
    def test_bound_is_respected_evicting_the_oldest(self, clock: FakeClock) -> None:
        """With a full cache the oldest entry makes room for the new one."""
        cache = make_cache(clock, max_entries=3)
        for index in range(5):
            cache.put(key(f"t{index}"), caller(int(clock.now()) + 600), "kid-1")
        assert len(cache) == 3
        assert [cache.get(key(f"t{index}")) is not None for index in range(5)] == [
            False,
            False,
            True,
            True,
            True,
        ]

    def test_expired_entries_are_evicted_first(self, clock: FakeClock) -> None:
        """An expired entry is evicted before an older live one."""
        cache = make_cache(clock, max_entries=3)
        now = int(clock.now())
        cache.put(key("live-old"), caller(now + 6000), "kid-1")
        cache.put(key("short"), caller(now + 10), "kid-1")
        cache.put(key("live-new"), caller(now + 6000), "kid-1")
        clock.advance(10 + LEEWAY + 1)
        cache.put(key("newest"), caller(now + 6000), "kid-1")
        assert cache.get(key("live-old")) is not None
        assert cache.get(key("live-new")) is not None
        assert cache.get(key("newest")) is not None
        assert len(cache) == 3

    def test_putting_the_same_token_again_does_not_grow_the_cache(self, clock: FakeClock) -> None:
        """Re-inserting a token replaces its entry."""
        cache = make_cache(clock, max_entries=3)
        for _ in range(5):
            cache.put(key("t"), caller(int(clock.now()) + 600), "kid-1")
        assert len(cache) == 1

    def test_size_zero_disables_caching(self, clock: FakeClock) -> None:
        """With max_entries 0 nothing is stored and nothing hits."""
        cache = make_cache(clock, max_entries=0)
        cache.put(key("t"), caller(int(clock.now()) + 600), "kid-1")
        assert len(cache) == 0
        assert cache.get(key("t")) is None


class CountingValidator(EntraValidator):
    """Counts full (uncached) validations: parsing, key lookup, signature and claim checks."""

    full_validations = 0

    async def _validate_uncached(self, token: str) -> tuple[Caller, str]:
        self.full_validations += 1
        return await super()._validate_uncached(token)


@pytest.fixture
async def counting(http: httpx.AsyncClient, clock: FakeClock) -> CountingValidator:
    return await counting_validator(make_settings(), http, clock)


async def counting_validator(
    settings: Settings, http: httpx.AsyncClient, clock: FakeClock
) -> CountingValidator:
    keys = JwksCache(
        f"{settings.authority_host}/{settings.entra_tenant_id}/v2.0/.well-known/openid-configuration",
        settings.entra_tenant_id,
        http,
        clock,
        ttl_seconds=settings.entra_jwks_ttl_seconds,
        refresh_cooldown_seconds=settings.entra_jwks_refresh_cooldown_seconds,
        max_stale_seconds=settings.entra_jwks_max_stale_seconds,
    )
    validator = CountingValidator(settings, keys, None, clock)
    await validator.start()
    return validator


@pytest.mark.anyio
class TestThroughTheValidator:
    async def test_hit_skips_parsing_and_crypto(self, counting: CountingValidator, fake: FakeEntra) -> None:
        """The second validation of the same token neither parses nor verifies it."""
        token = fake.mint_user_token()
        first = await counting.validate(token)
        assert await counting.validate(token) is first
        assert counting.full_validations == 1

    async def test_expired_cached_token_is_rejected_as_expired(
        self, counting: CountingValidator, fake: FakeEntra, clock: FakeClock
    ) -> None:
        """A cached token past exp + leeway goes through full validation again and is token_expired."""
        token = fake.mint_user_token()
        await counting.validate(token)
        clock.advance(3600 + LEEWAY + 1)
        with pytest.raises(TokenRejected) as caught:
            await counting.validate(token)
        assert caught.value.reason == "token_expired"
        assert counting.full_validations == 2

    async def test_removed_key_invalidates_cached_tokens(
        self, counting: CountingValidator, fake: FakeEntra, clock: FakeClock
    ) -> None:
        """Once a refresh drops the signing key, a cached token signed with it is refused."""
        token = fake.mint_user_token()
        await counting.validate(token)
        old_kid = fake.signing_kid
        fake.add_key("secondary", sign=True)
        fake.remove_key(old_kid)
        clock.advance(60)
        await counting.validate(fake.mint_user_token())  # a token with the new kid triggers the refresh
        with pytest.raises(TokenRejected) as caught:
            await counting.validate(token)
        assert caught.value.reason == "kid_unknown"

    async def test_disabled_cache_verifies_every_time(
        self, fake: FakeEntra, http: httpx.AsyncClient, clock: FakeClock
    ) -> None:
        """With verified_token_cache_size 0 every validation is a full one."""
        uncached = await counting_validator(make_settings(verified_token_cache_size=0), http, clock)
        token = fake.mint_user_token()
        await uncached.validate(token)
        await uncached.validate(token)
        assert uncached.full_validations == 2
