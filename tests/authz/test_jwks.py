"""The signing-key cache: loading, rollover, rate-limited refresh, stale-if-error and document hygiene."""

from __future__ import annotations

import asyncio
import json
import secrets
from collections.abc import AsyncIterator

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from authz.errors import AuthUnavailable, TokenRejected
from authz.jwks import MAX_DOCUMENT_BYTES, JwksCache, build_http_client
from tests.support.clock import FakeClock
from tests.support.entra import TENANT_ID, FakeEntra, FakeResponse, make_settings, public_jwk, rsa_key

TTL = 3600.0
COOLDOWN = 60.0
MAX_STALE = 7200.0
PAST_TTL = TTL * 1.06  # beyond the TTL plus its up-to-5 % jitter

pytestmark = pytest.mark.anyio


def make_cache(
    fake: FakeEntra, http: httpx.AsyncClient, clock: FakeClock, cooldown: float = COOLDOWN
) -> JwksCache:
    return JwksCache(
        fake.discovery_url_v2,
        TENANT_ID,
        http,
        clock,
        ttl_seconds=TTL,
        refresh_cooldown_seconds=cooldown,
        max_stale_seconds=MAX_STALE,
    )


@pytest.fixture
async def cache(fake: FakeEntra, http: httpx.AsyncClient, clock: FakeClock) -> AsyncIterator[JwksCache]:
    keys = make_cache(fake, http, clock)
    yield keys
    await keys.aclose()


@pytest.fixture
async def started(cache: JwksCache) -> JwksCache:
    await cache.start()
    return cache


def random_kid() -> str:
    return secrets.token_urlsafe(20)


class TestLoading:
    async def test_start_loads_discovery_then_jwks(self, cache: JwksCache, fake: FakeEntra) -> None:
        """start() fetches discovery and the JWKS once and makes the cache ready."""
        await cache.start()
        assert cache.ready
        assert cache.expected_issuer == fake.issuer_v2
        assert cache.has_kid(fake.signing_kid)
        assert cache.age_seconds == 0
        assert cache.refresh_count == 1
        assert cache.last_error is None
        assert fake.calls == [
            ("GET", f"/{TENANT_ID}/v2.0/.well-known/openid-configuration"),
            ("GET", fake.jwks_path_v2),
        ]

    async def test_known_kid_is_served_without_io(self, started: JwksCache, fake: FakeEntra) -> None:
        """Looking up a loaded kid makes no HTTP call and returns the key with its issuer."""
        calls = len(fake.calls)
        for _ in range(100):
            key = await started.key(fake.signing_kid)
        assert len(fake.calls) == calls
        assert key.public_key.public_numbers() == fake.private_key().public_key().public_numbers()
        assert key.issuer == f"{fake.authority}/{{tenantid}}/v2.0"

    async def test_templated_discovery_issuer_gets_the_configured_tenant(
        self, cache: JwksCache, fake: FakeEntra
    ) -> None:
        """An issuer of the form .../{tenantid}/v2.0 (common endpoint style) is pinned to the configured tenant."""
        fake.override(
            "discovery",
            FakeResponse.json(
                200,
                {
                    "issuer": f"{fake.authority}/{{tenantid}}/v2.0",
                    "jwks_uri": f"{fake.authority}{fake.jwks_path_v2}",
                },
            ),
        )
        await cache.start()
        assert cache.expected_issuer == fake.issuer_v2

    @pytest.mark.parametrize("issuer", [None, "", 42])
    async def test_a_discovery_document_without_an_issuer_is_refused(
        self, cache: JwksCache, fake: FakeEntra, issuer: object
    ) -> None:
        """A discovery document whose issuer is missing, empty or not a string loads nothing: there would be
        no issuer to hold tokens to."""
        document = {"jwks_uri": f"{fake.authority}{fake.jwks_path_v2}"}
        if issuer is not None:
            document["issuer"] = issuer  # type: ignore[assignment]
        fake.override("discovery", FakeResponse.json(200, document))
        with pytest.raises(AuthUnavailable, match="no issuer"):
            await cache.start()
        assert not cache.ready

    async def test_a_document_of_exactly_the_size_limit_is_read(
        self, cache: JwksCache, fake: FakeEntra
    ) -> None:
        """The size limit is inclusive: a JWKS document of exactly MAX_DOCUMENT_BYTES bytes loads."""
        jwks = {"keys": [public_jwk(rsa_key("primary"), kid=fake.signing_kid)], "padding": ""}
        room = MAX_DOCUMENT_BYTES - len(json.dumps(jwks).encode())
        jwks["padding"] = "x" * room
        body = json.dumps(jwks).encode()
        assert len(body) == MAX_DOCUMENT_BYTES
        fake.override("jwks", FakeResponse(200, body))
        await cache.start()
        assert cache.ready

    async def test_no_keys_at_start_means_not_ready(self, cache: JwksCache, fake: FakeEntra) -> None:
        """When the first load fails, start() raises AuthUnavailable and the cache is not ready."""
        fake.fail("discovery", 503)
        with pytest.raises(AuthUnavailable) as caught:
            await cache.start()
        assert caught.value.reason == "keys_unavailable"
        assert not cache.ready
        assert cache.age_seconds is None
        assert "503" in (cache.last_error or "")

    async def test_lookup_without_keys_is_unavailable_not_unknown(
        self, cache: JwksCache, fake: FakeEntra
    ) -> None:
        """With no keys ever loaded a lookup is a 503-style AuthUnavailable, never kid_unknown."""
        fake.fail("discovery", 503)
        with pytest.raises(AuthUnavailable):
            await cache.start()
        with pytest.raises(AuthUnavailable):
            await cache.key(fake.signing_kid)

    async def test_failed_start_retries_after_the_cooldown(
        self, cache: JwksCache, fake: FakeEntra, clock: FakeClock
    ) -> None:
        """After a failed start the cache stays usable: within the cooldown no retry, after it one retry."""
        fake.fail("discovery", 503)
        with pytest.raises(AuthUnavailable):
            await cache.start()
        with pytest.raises(AuthUnavailable):
            await cache.key(fake.signing_kid)
        assert fake.discovery_fetches == 1
        clock.advance(COOLDOWN)
        assert (await cache.key(fake.signing_kid)).issuer is not None
        assert cache.ready
        assert fake.discovery_fetches == 2

    @pytest.mark.parametrize(("cooldown", "retry_after"), [(0.3, 1), (2.5, 3), (60.0, 60)])
    async def test_unavailable_keys_ask_for_a_retry_after_the_cooldown_rounded_up(
        self, fake: FakeEntra, http: httpx.AsyncClient, clock: FakeClock, cooldown: float, retry_after: int
    ) -> None:
        """While keys cannot be loaded, the answer's Retry-After is the refresh cooldown in whole seconds,
        rounded up and never below one second (a zero would invite a retry storm)."""
        fake.fail("discovery", 503)
        keys = make_cache(fake, http, clock, cooldown)
        try:
            with pytest.raises(AuthUnavailable) as failed:
                await keys.start()
            assert failed.value.retry_after == retry_after
        finally:
            await keys.aclose()


class TestRollover:
    async def test_new_kid_is_picked_up_after_one_refresh(
        self, started: JwksCache, fake: FakeEntra, clock: FakeClock
    ) -> None:
        """A key Entra starts signing with is found after exactly one refresh once the cooldown allows it."""
        new_kid = fake.add_key("secondary", sign=True)
        clock.advance(COOLDOWN)
        key = await started.key(new_kid)
        assert key.public_key.public_numbers() == rsa_key("secondary").public_key().public_numbers()
        assert fake.jwks_fetches == 2

    async def test_unknown_kid_within_the_cooldown_makes_no_fetch(
        self, started: JwksCache, fake: FakeEntra
    ) -> None:
        """Right after a load, an unknown kid is refused without fetching again."""
        new_kid = fake.add_key("secondary")
        with pytest.raises(TokenRejected) as caught:
            await started.key(new_kid)
        assert caught.value.reason == "kid_unknown"
        assert fake.jwks_fetches == 1

    async def test_removed_key_disappears_after_the_ttl_refresh(
        self, started: JwksCache, fake: FakeEntra, clock: FakeClock
    ) -> None:
        """A key removed from the JWKS stops being served once the set is refreshed."""
        old_kid = fake.signing_kid
        fake.add_key("secondary", sign=True)
        fake.remove_key(old_kid)
        clock.advance(PAST_TTL)
        with pytest.raises(TokenRejected):
            await started.key(old_kid)
        assert not started.has_kid(old_kid)
        assert started.has_kid(fake.signing_kid)

    async def test_ttl_refresh_happens_once_the_set_is_old(
        self, started: JwksCache, fake: FakeEntra, clock: FakeClock
    ) -> None:
        """A known kid triggers no fetch before the TTL and one fetch after it."""
        clock.advance(TTL * 0.9)
        await started.key(fake.signing_kid)
        assert fake.jwks_fetches == 1
        clock.advance(PAST_TTL - TTL * 0.9)
        await started.key(fake.signing_kid)
        await started.key(fake.signing_kid)
        assert fake.jwks_fetches == 2
        assert started.age_seconds == 0


class TestFlood:
    async def test_thousand_unknown_kids_make_at_most_one_fetch_per_cooldown(
        self, started: JwksCache, fake: FakeEntra, clock: FakeClock
    ) -> None:
        """1000 random kids cause exactly one JWKS fetch per cooldown window, however they are spread."""
        for window in range(3):
            clock.advance(COOLDOWN)
            for _ in range(1000):
                with pytest.raises(TokenRejected):
                    await started.key(random_kid())
                clock.advance(COOLDOWN / 2000)  # the flood spans half a window
            assert fake.jwks_fetches == 1 + (window + 1)

    async def test_concurrent_misses_share_one_fetch(self, fake: FakeEntra, clock: FakeClock) -> None:
        """Concurrent unknown-kid lookups all await the same refresh instead of starting their own."""
        async with fake.client(latency=0.01) as slow_http:
            keys = make_cache(fake, slow_http, clock)
            await keys.start()
            new_kid = fake.add_key("secondary", sign=True)
            clock.advance(COOLDOWN)
            results = await asyncio.gather(
                *(keys.key(new_kid) for _ in range(50)),
                *(keys.key(random_kid()) for _ in range(50)),
                return_exceptions=True,
            )
            await keys.aclose()
        assert all(not isinstance(result, BaseException) for result in results[:50])
        assert all(isinstance(result, TokenRejected) for result in results[50:])
        assert fake.jwks_fetches == 2
        assert keys.refresh_count == 2


class TestStaleIfError:
    async def test_jwks_500_keeps_the_old_keys(
        self, started: JwksCache, fake: FakeEntra, clock: FakeClock
    ) -> None:
        """A failing refresh keeps serving the last good set and records the error."""
        clock.advance(PAST_TTL)
        fake.fail("jwks", 500)
        key = await started.key(fake.signing_kid)
        assert key.issuer is not None
        assert started.ready
        assert started.refresh_count == 2
        assert "500" in (started.last_error or "")

    async def test_recovery_clears_the_error(
        self, started: JwksCache, fake: FakeEntra, clock: FakeClock
    ) -> None:
        """After a failed refresh, the next successful one clears last_error and resets the age."""
        clock.advance(PAST_TTL)
        fake.fail("jwks", 500)
        await started.key(fake.signing_kid)
        clock.advance(COOLDOWN)
        await started.key(fake.signing_kid)
        assert started.last_error is None
        assert started.age_seconds == 0

    async def test_beyond_max_staleness_is_unavailable(
        self, started: JwksCache, fake: FakeEntra, clock: FakeClock
    ) -> None:
        """Once the last good set is older than the maximum staleness, lookups raise AuthUnavailable."""
        fake.fail("jwks", 500, times=1000)
        clock.advance(MAX_STALE - 1)
        await started.key(fake.signing_kid)
        assert started.ready
        clock.advance(2)
        with pytest.raises(AuthUnavailable) as caught:
            await started.key(fake.signing_kid)
        assert caught.value.reason == "keys_unavailable"
        assert caught.value.retry_after == COOLDOWN
        assert not started.ready

    @pytest.mark.parametrize(
        "response",
        [
            FakeResponse(200, b"<html>maintenance</html>", {"Content-Type": "text/html"}),
            FakeResponse(200, b'{"keys": {"kid": "x"}}'),
            FakeResponse(200, b'{"keys": "none"}'),
            FakeResponse(200, b'{"no_keys": []}'),
            FakeResponse(200, b'{"keys": []}'),
            FakeResponse(200, b"[]"),
            FakeResponse(200, b'{"keys": [{"kty": "RSA", "kid": "x", "n": "AQAB", "e": "AQAB"}]}'),
            FakeResponse.json(
                200, {"keys": [public_jwk(rsa_key("secondary"), kid=f"k{i}") for i in range(51)]}
            ),
            FakeResponse(200, b'{"keys": [], "padding": "' + b"x" * MAX_DOCUMENT_BYTES + b'"}'),
            FakeResponse(200, b"[" * 100_000 + b"]" * 100_000),
            FakeResponse(302, b"", {"Location": "https://attacker.example/keys"}),
            FakeResponse(404, b"{}"),
        ],
        ids=[
            "not-json",
            "keys-object",
            "keys-string",
            "keys-absent",
            "keys-empty",
            "not-an-object",
            "only-weak-key",
            "too-many-keys",
            "too-large",
            "deeply-nested",
            "redirect",
            "not-found",
        ],
    )
    async def test_bad_jwks_documents_keep_the_last_good_set(
        self, started: JwksCache, fake: FakeEntra, clock: FakeClock, response: FakeResponse
    ) -> None:
        """A JWKS response lkps will not use is a failed refresh: the previous keys stay in service."""
        fake.override("jwks", response)
        clock.advance(PAST_TTL)
        await started.key(fake.signing_kid)
        assert started.last_error is not None
        assert started.has_kid(fake.signing_kid)
        assert started.ready

    @pytest.mark.parametrize(
        "document",
        [
            {"issuer": "https://login.fake.test/t/v2.0", "jwks_uri": "http://login.fake.test/keys"},
            {"issuer": "https://login.fake.test/t/v2.0", "jwks_uri": "file:///etc/passwd"},
            {"issuer": "https://login.fake.test/t/v2.0"},
            {"jwks_uri": "https://login.fake.test/keys"},
            {"issuer": 1, "jwks_uri": "https://login.fake.test/keys"},
        ],
        ids=["http-jwks-uri", "file-jwks-uri", "no-jwks-uri", "no-issuer", "issuer-not-string"],
    )
    async def test_bad_discovery_documents_are_refused(
        self, cache: JwksCache, fake: FakeEntra, document: dict[str, object]
    ) -> None:
        """Discovery must name an issuer and an https jwks_uri, or nothing is loaded from it."""
        fake.override("discovery", FakeResponse.json(200, document))
        with pytest.raises(AuthUnavailable):
            await cache.start()
        assert fake.jwks_fetches == 0
        assert ("GET", "/etc/passwd") not in fake.calls


class TestHygiene:
    async def test_redirects_are_not_followed_even_by_a_permissive_client(
        self, fake: FakeEntra, clock: FakeClock
    ) -> None:
        """A 3xx from the JWKS endpoint is a failure even if the injected client follows redirects."""
        fake.override(
            "jwks", FakeResponse(302, b"", {"Location": f"{fake.authority}/{TENANT_ID}/discovery/keys"})
        )
        async with httpx.AsyncClient(transport=fake.transport(), follow_redirects=True) as permissive:
            keys = make_cache(fake, permissive, clock)
            with pytest.raises(AuthUnavailable):
                await keys.start()
        assert ("GET", f"/{TENANT_ID}/discovery/keys") not in fake.calls
        assert "redirects are not followed" in (keys.last_error or "")

    async def test_only_usable_rsa_signature_keys_are_kept(self, cache: JwksCache, fake: FakeEntra) -> None:
        """EC keys, encryption keys, other algs, bad kids, bad numbers and short RSA keys are skipped."""
        good = public_jwk(rsa_key("primary"))
        weak = rsa.generate_private_key(public_exponent=65537, key_size=1024)
        fake.override(
            "jwks",
            FakeResponse.json(
                200,
                {
                    "keys": [
                        good,
                        {"kty": "EC", "crv": "P-256", "kid": "ec", "x": "AA", "y": "AA"},
                        {**public_jwk(rsa_key("secondary")), "kid": "enc", "use": "enc"},
                        {**public_jwk(rsa_key("secondary")), "kid": "ps", "alg": "PS256"},
                        {**public_jwk(rsa_key("secondary")), "kid": "../etc"},
                        {**public_jwk(rsa_key("secondary")), "kid": "padded", "n": good["n"] + "=="},
                        {**public_jwk(rsa_key("secondary")), "kid": "bad-issuer", "issuer": 5},
                        {**public_jwk(weak), "kid": "weak"},
                        {**public_jwk(rsa_key("secondary")), "kid": good["kid"]},  # duplicate: first wins
                        "not-an-object",
                    ]
                },
            ),
        )
        await cache.start()
        assert [
            kid for kid in ("ec", "enc", "ps", "../etc", "padded", "bad-issuer", "weak") if cache.has_kid(kid)
        ] == []
        key = await cache.key(good["kid"])
        assert key.public_key.public_numbers() == rsa_key("primary").public_key().public_numbers()
        assert key.issuer is None

    async def test_aclose_cancels_an_inflight_refresh(self, fake: FakeEntra, clock: FakeClock) -> None:
        """aclose() stops a refresh that is still waiting on the network."""
        async with fake.client(latency=10) as slow_http:
            keys = make_cache(fake, slow_http, clock)
            pending = asyncio.ensure_future(keys.start())
            await asyncio.sleep(0)
            await keys.aclose()
            with pytest.raises(asyncio.CancelledError):
                await pending
        assert not keys.ready

    async def test_product_http_client_ignores_the_environment_and_redirects(self) -> None:
        """build_http_client never follows redirects and never trusts proxy or CA environment variables."""
        async with build_http_client(make_settings(entra_http_timeout_seconds=2.5)) as client:
            assert client.follow_redirects is False
            assert client.trust_env is False
            assert client.timeout.connect == 2.5
