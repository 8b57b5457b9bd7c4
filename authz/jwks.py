"""The signing-key cache for one Entra token version: discovery, JWKS, rollover and stale-if-error.

Refreshes are single-flight and rate-limited, so a flood of unknown `kid`s cannot turn lkps into an
amplifier against the JWKS endpoint (entra-tokens.md §1.5). Known keys are served without any I/O.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import random
import ssl
from typing import Any, NamedTuple
from urllib.parse import urlsplit

import certifi
import httpx
import structlog
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey, RSAPublicNumbers

from authz.clock import Clock
from authz.errors import AuthUnavailable, TokenRejected
from authz.jws import KID_PATTERN, b64url_decode
from config.settings import Settings

log = structlog.get_logger("lkps.jwks")

MAX_DOCUMENT_BYTES = 256 * 1024
MAX_KEYS = 50
MIN_RSA_BITS = 2048
TENANT_TEMPLATE = "{tenantid}"
# IdentityModel adds up to 5 % to its refresh interval so that replicas started together spread out.
_TTL_JITTER = 0.05


class SigningKey(NamedTuple):
    public_key: RSAPublicKey
    issuer: str | None  # the key's own `issuer` (may contain {tenantid}); the token's iss must match it


class _DocumentError(Exception):
    """A discovery or JWKS response that lkps will not use (the last good key set stays in place)."""


def build_http_client(settings: Settings) -> httpx.AsyncClient:
    """The HTTP client for discovery and JWKS: the configured CA only, no redirects, nothing from the env.

    `trust_env=False` keeps REQUESTS_CA_BUNDLE, SSL_CERT_FILE and proxy variables from overriding the CA that
    the operator configured; an explicit `cafile` also keeps OpenSSL from reading its default paths.
    """
    cafile = str(settings.entra_ca_bundle) if settings.entra_ca_bundle else certifi.where()
    return httpx.AsyncClient(
        verify=ssl.create_default_context(cafile=cafile),
        follow_redirects=False,
        trust_env=False,
        timeout=httpx.Timeout(settings.entra_http_timeout_seconds),
        headers={"User-Agent": "lkps", "Accept": "application/json", "Accept-Encoding": "identity"},
    )


class JwksCache:
    """Signing keys of one Entra metadata endpoint, refreshed on TTL and on unknown `kid` (rate-limited)."""

    def __init__(
        self,
        discovery_url: str,
        tenant_id: str,
        http: httpx.AsyncClient,
        clock: Clock,
        *,
        ttl_seconds: float,
        refresh_cooldown_seconds: float,
        max_stale_seconds: float,
    ) -> None:
        self._discovery_url = discovery_url
        self._tenant_id = tenant_id
        self._http = http
        self._clock = clock
        self._ttl = ttl_seconds
        self._cooldown = refresh_cooldown_seconds
        self._max_stale = max_stale_seconds
        self._keys: dict[str, SigningKey] = {}
        self._expected_issuer: str | None = None
        self._loaded_at: float | None = None  # monotonic time of the last successful load
        self._refresh_at = 0.0  # monotonic time after which the set counts as old
        self._last_attempt: float | None = None  # monotonic time the last refresh started (the cooldown)
        self._inflight: asyncio.Task[None] | None = None
        self._refresh_count = 0
        self._last_error: str | None = None

    @property
    def discovery_url(self) -> str:
        return self._discovery_url

    @property
    def expected_issuer(self) -> str | None:
        """The `iss` every token verified with these keys must carry (from discovery, tenant substituted)."""
        return self._expected_issuer

    @property
    def ready(self) -> bool:
        """Keys are loaded and not older than the maximum staleness."""
        age = self.age_seconds
        return age is not None and age <= self._max_stale

    @property
    def age_seconds(self) -> float | None:
        """Seconds since the last successful load, or None if keys were never loaded."""
        return None if self._loaded_at is None else self._clock.monotonic() - self._loaded_at

    @property
    def refresh_count(self) -> int:
        """How many refreshes (discovery + JWKS fetches) were attempted, successful or not."""
        return self._refresh_count

    @property
    def last_error(self) -> str | None:
        """Why the most recent refresh failed, or None if it succeeded."""
        return self._last_error

    def has_kid(self, kid: str) -> bool:
        """Whether `kid` is in the current key set (no I/O; used to revalidate cached tokens)."""
        return kid in self._keys

    async def start(self) -> None:
        """Load the keys now; raise `AuthUnavailable` if that fails (later calls to `key` retry)."""
        await self._shared_refresh()
        if not self.ready:
            raise AuthUnavailable(
                "keys_unavailable",
                f"could not load Entra signing keys from {self._discovery_url}: {self._last_error}",
                retry_after=self._retry_after,
            )

    async def key(self, kid: str) -> SigningKey:
        """The key for `kid`: from memory when known, else after at most one shared, rate-limited refresh."""
        if self._loaded_at is None or self._clock.monotonic() >= self._refresh_at:
            await self._refresh_unless_cooling_down()
        found = self._keys.get(kid)
        if found is None:
            # Rollover: Entra may start signing with a new key before our TTL ends. The cooldown (measured
            # from the last attempt) makes this at most one refresh per window, however many kids arrive.
            await self._refresh_unless_cooling_down()
            found = self._keys.get(kid)
        if not self.ready:
            raise AuthUnavailable(
                "keys_unavailable",
                "lkps cannot currently obtain Entra signing keys to check tokens; retry shortly",
                retry_after=self._retry_after,
            )
        if found is None:
            raise TokenRejected(
                "kid_unknown", "the token is signed with a key that is not among the tenant's signing keys"
            )
        return found

    async def aclose(self) -> None:
        """Stop an in-flight refresh; the HTTP client belongs to whoever created it."""
        task = self._inflight
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    @property
    def _retry_after(self) -> int:
        return max(1, math.ceil(self._cooldown))

    async def _refresh_unless_cooling_down(self) -> None:
        if (
            self._inflight is None
            and self._last_attempt is not None
            and self._clock.monotonic() - self._last_attempt < self._cooldown
        ):
            return
        await self._shared_refresh()

    async def _shared_refresh(self) -> None:
        task = self._inflight
        if task is None:
            task = self._inflight = asyncio.create_task(self._refresh())
        # Shielded: a caller that gives up (client disconnect) must not cancel the refresh others await.
        await asyncio.shield(task)

    async def _refresh(self) -> None:
        self._last_attempt = self._clock.monotonic()
        self._refresh_count += 1
        try:
            issuer, keys = await self._fetch()
        except Exception as exc:
            self._last_error = f"{type(exc).__name__}: {exc}"
            log.warning(
                "jwks_refresh_failed",
                discovery_url=self._discovery_url,
                error=self._last_error,
                key_age_seconds=self.age_seconds,
                serving_stale=self.ready,
            )
        else:
            now = self._clock.monotonic()
            self._keys = keys
            self._expected_issuer = issuer
            self._loaded_at = now
            self._refresh_at = now + self._ttl * (1 + random.uniform(0, _TTL_JITTER))  # noqa: S311 - spread, not secrecy
            self._last_error = None
            log.info("jwks_refreshed", discovery_url=self._discovery_url, kids=sorted(keys))
        finally:
            self._inflight = None

    async def _fetch(self) -> tuple[str, dict[str, SigningKey]]:
        discovery = await self._get_json(self._discovery_url)
        issuer = discovery.get("issuer")
        jwks_uri = discovery.get("jwks_uri")
        if not isinstance(issuer, str) or not issuer:
            raise _DocumentError("the discovery document has no issuer")
        if not isinstance(jwks_uri, str) or not _is_https_url(jwks_uri):
            raise _DocumentError("the discovery document's jwks_uri is not an https URL")
        keys = _signing_keys(await self._get_json(jwks_uri))
        return issuer.replace(TENANT_TEMPLATE, self._tenant_id), keys

    async def _get_json(self, url: str) -> dict[str, Any]:
        async with self._http.stream("GET", url, follow_redirects=False) as response:
            if response.status_code != 200:
                hint = " (redirects are not followed)" if response.is_redirect else ""
                raise _DocumentError(f"GET {url} answered HTTP {response.status_code}{hint}")
            body = bytearray()
            async for chunk in response.aiter_bytes():
                body += chunk
                if len(body) > MAX_DOCUMENT_BYTES:
                    raise _DocumentError(f"GET {url} returned more than {MAX_DOCUMENT_BYTES} bytes")
        try:
            document = json.loads(body)
        except (ValueError, RecursionError):
            raise _DocumentError(f"GET {url} did not return JSON") from None
        if not isinstance(document, dict):
            raise _DocumentError(f"GET {url} did not return a JSON object")
        return document


def _is_https_url(url: str) -> bool:
    parts = urlsplit(url)
    return parts.scheme == "https" and bool(parts.hostname)


def _signing_keys(document: dict[str, Any]) -> dict[str, SigningKey]:
    entries = document.get("keys")
    if not isinstance(entries, list):
        raise _DocumentError("the JWKS has no 'keys' list")
    if len(entries) > MAX_KEYS:
        raise _DocumentError(f"the JWKS has more than {MAX_KEYS} keys")
    keys: dict[str, SigningKey] = {}
    for entry in entries:
        parsed = _signing_key(entry)
        if parsed is not None:
            keys.setdefault(*parsed)
    if not keys:
        raise _DocumentError("the JWKS has no usable RSA signing key")
    return keys


def _signing_key(entry: Any) -> tuple[str, SigningKey] | None:
    """`(kid, key)` for an RSA signature key lkps can use; None for anything else (it is skipped)."""
    if not isinstance(entry, dict) or entry.get("kty") != "RSA":
        return None
    kid, modulus, exponent, issuer = (entry.get(name) for name in ("kid", "n", "e", "issuer"))
    if not (
        entry.get("use", "sig") == "sig"
        and entry.get("alg", "RS256") == "RS256"
        and isinstance(kid, str)
        and KID_PATTERN.fullmatch(kid) is not None
        and isinstance(modulus, str)
        and isinstance(exponent, str)
        and (issuer is None or isinstance(issuer, str))
    ):
        return None
    try:
        public_key = RSAPublicNumbers(
            int.from_bytes(b64url_decode(exponent), "big"), int.from_bytes(b64url_decode(modulus), "big")
        ).public_key()
    except ValueError:
        return None
    return (kid, SigningKey(public_key, issuer)) if public_key.key_size >= MIN_RSA_BITS else None
