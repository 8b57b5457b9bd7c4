"""Validation of Entra ID access tokens in the order of entra-tokens.md §1.2: cheapest first, fail closed.

PyJWT's `decode` is not used on this hot path: it costs about four times the RSA verify itself, and most of
the claim rules Entra needs are not in it anyway. The verify is called directly and every rule is written
out once, here.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import httpx
import structlog
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding

from authz.bearer import check_token_size
from authz.caller import Caller, CallerKind
from authz.clock import Clock
from authz.errors import AuthUnavailable, AuthzError, TokenRejected
from authz.jwks import TENANT_TEMPLATE, JwksCache, SigningKey
from authz.jws import Jws, parse_jws
from authz.token_cache import VerifiedTokenCache
from config.settings import Settings

log = structlog.get_logger("lkps.entra")

V2 = "2.0"
V1 = "1.0"
_REQUIRED_CLAIMS = ("exp", "nbf", "iat", "iss", "aud", "tid", "ver", "oid", "sub")
_CLIENT_CLAIM = {V2: "azp", V1: "appid"}
_DISPLAY_CLAIMS = ("name", "preferred_username", "upn")
# What LiveKit identities and room names can carry verbatim. A value outside it is refused, not cleaned:
# cleaning merges people (`J.O'NEIL` and `J.ONEIL`), so the next configured claim is used instead.
_USER_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")
# Identities lkps gives others: `app-<client id>` to app-only callers, `agent-<job id>` to relayed agents
# (gateway/relay/frames.py). A user id starting with one could take theirs (LiveKit then disconnects one of
# the two as a duplicate), so it is not usable either.
_RESERVED_IDENTITY = re.compile(r"(?i)(app|agent)-")
# Control and invisible formatting characters (bidi overrides, zero-width, line separators) and lone
# surrogates, which JSON escapes can produce and which no UTF-8 encoder downstream would accept.
_DISPLAY_DROP = re.compile("[\x00-\x1f\x7f-\x9f\u200b-\u200f\u2028-\u202e\u2066-\u2069\ufeff\ud800-\udfff]")
_DISPLAY_MAX = 128
_SURROGATE = re.compile("[\ud800-\udfff]")
_NO_SCOPE = frozenset({""})  # what splitting leaves for doubled, leading or trailing spaces
# The canonical 8-4-4-4-12 form `config.settings.is_guid` accepts, as a regex: uuid.UUID costs ~5 µs a call.
_GUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
_TOKEN_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")  # uti goes into logs, so only its expected shape is kept
_PKCS1V15 = padding.PKCS1v15()
_SHA256 = hashes.SHA256()


class EntraValidator:
    """Turns an Entra access token into a `Caller`, or raises `TokenRejected` / `AuthUnavailable`."""

    def __init__(
        self, settings: Settings, keys_v2: JwksCache, keys_v1: JwksCache | None, clock: Clock
    ) -> None:
        self._keys: dict[str, JwksCache] = {V2: keys_v2}
        if settings.entra_allow_v1 and keys_v1 is not None:
            self._keys[V1] = keys_v1
        self._clock = clock
        self._tenant_id = settings.entra_tenant_id
        self._audiences = frozenset(settings.entra_audiences)
        self._leeway = settings.entra_leeway_seconds
        self._max_token_bytes = settings.max_token_bytes
        self._user_id_claims = settings.user_id_claims
        self._cache = VerifiedTokenCache(
            settings.verified_token_cache_size, settings.entra_leeway_seconds, clock, self._key_present
        )

    @property
    def ready(self) -> bool:
        """Every enabled token version has usable signing keys."""
        return all(keys.ready for keys in self._keys.values())

    @property
    def age_seconds(self) -> float | None:
        """Age of the oldest key set, or None while any set has never loaded (for the JWKS-age metric)."""
        ages = [keys.age_seconds for keys in self._keys.values()]
        return max(age for age in ages if age is not None) if None not in ages else None

    @property
    def refresh_count(self) -> int:
        """Key-set refresh attempts since start, over every version (for the JWKS-refresh metric)."""
        return sum(keys.refresh_count for keys in self._keys.values())

    @property
    def key_caches(self) -> Mapping[str, JwksCache]:
        """The key cache of each accepted token version ("2.0", and "1.0" when enabled), for health checks."""
        return dict(self._keys)

    async def start(self) -> None:
        """Load every key set; raise the first `AuthUnavailable` after trying them all."""
        failures: list[AuthUnavailable] = []
        for keys in self._keys.values():
            try:
                await keys.start()
            except AuthUnavailable as exc:
                failures.append(exc)
        if failures:
            raise failures[0]

    async def aclose(self) -> None:
        for keys in self._keys.values():
            await keys.aclose()

    async def validate(self, token: str) -> Caller:
        """The `Caller` of a token (as extracted by `bearer_token`) that passes every check."""
        check_token_size(token, self._max_token_bytes)
        cache_key = VerifiedTokenCache.key(token)
        cached = self._cache.get(cache_key)
        if cached is not None:
            return cached
        try:
            caller, kid = await self._validate_uncached(token)
        except AuthzError:
            raise
        except Exception as exc:
            # Fail closed: whatever a hostile token provokes, the answer is a 401, never a 500.
            # No traceback: exception messages can quote token content, which must never reach a log.
            log.error("token_validation_unexpected_error", error_type=type(exc).__name__)  # noqa: TRY400
            raise TokenRejected("token_malformed", "the token could not be processed") from None
        self._cache.put(cache_key, caller, kid)
        return caller

    async def _validate_uncached(self, token: str) -> tuple[Caller, str]:
        jws = parse_jws(token)
        version, keys = self._version(jws.payload)
        key = await keys.key(jws.kid)
        _verify_signature(key, jws)
        assert keys.expected_issuer is not None  # a key was served, so discovery has loaded
        return self._caller(jws.payload, version, keys.expected_issuer, key.issuer), jws.kid

    def _key_present(self, version: str, kid: str) -> bool:
        """Whether a cached verification still stands: its key is in the set and the set is not older than
        the maximum staleness (past it, an uncached check answers 503, and so must a cached one)."""
        keys = self._keys.get(version)
        return keys is not None and keys.ready and keys.has_kid(kid)

    def _version(self, claims: dict[str, Any]) -> tuple[str, JwksCache]:
        """Pick the key set by the (not yet verified) `ver`; the signature then binds the choice."""
        if "ver" not in claims:
            raise TokenRejected("claim_missing", "the token lacks the required claim(s): ver")
        version = claims["ver"]
        keys = self._keys.get(version) if isinstance(version, str) else None
        if keys is None:
            accepted = " and ".join(sorted(self._keys, reverse=True))
            raise TokenRejected(
                "version_unsupported",
                f"lkps accepts Entra access tokens of version {accepted}; set requestedAccessTokenVersion "
                "to 2 on the API app registration",
            )
        return version, keys

    def _caller(
        self, claims: dict[str, Any], version: str, expected_issuer: str, key_issuer: str | None
    ) -> Caller:
        missing = [name for name in _REQUIRED_CLAIMS if name not in claims]
        if missing:
            raise TokenRejected(
                "claim_missing", f"the token lacks the required claim(s): {', '.join(missing)}"
            )
        exp = self._check_times(claims)
        self._check_audience_and_issuer(claims, expected_issuer, key_issuer)
        client_app_id = _client_app_id(claims, _CLIENT_CLAIM[version])
        object_id = claims["oid"]
        if not isinstance(object_id, str) or _GUID.fullmatch(object_id) is None:
            raise TokenRejected("claim_type_invalid", "the oid claim must be a GUID")
        object_id = object_id.lower()
        if not isinstance(claims["sub"], str) or not claims["sub"]:
            raise TokenRejected("claim_type_invalid", "the sub claim must be a non-empty string")
        kind = _kind(claims)
        scopes, roles = _scopes_and_roles(claims)
        user_id = client_app_id if kind is CallerKind.APP else self._user_id(claims, object_id)
        uti = claims.get("uti")
        return Caller(
            tenant_id=self._tenant_id,
            object_id=object_id,
            client_app_id=client_app_id,
            kind=kind,
            user_id=user_id,
            display_name=_display_name(claims, user_id),
            scopes=scopes,
            roles=roles,
            token_id=uti if isinstance(uti, str) and _TOKEN_ID.fullmatch(uti) else None,
            expires_at=exp,
            version=version,
        )

    def _check_times(self, claims: dict[str, Any]) -> int:
        for name in ("exp", "nbf", "iat"):
            if type(claims[name]) is not int:  # not bool, not float, not a numeric string (PyJWT calls int())
                raise TokenRejected(
                    "claim_type_invalid", f"the {name} claim must be an integer (NumericDate)"
                )
        exp: int = claims["exp"]
        now = self._clock.now()
        if now > exp + self._leeway:
            raise TokenRejected("token_expired", "the access token has expired; acquire a new one")
        if claims["nbf"] > now + self._leeway:
            raise TokenRejected("token_not_yet_valid", "the access token is not valid yet; check the clocks")
        if claims["iat"] > now + self._leeway:
            raise TokenRejected("iat_in_future", "the access token claims to be issued in the future")
        return exp

    def _check_audience_and_issuer(
        self, claims: dict[str, Any], expected_issuer: str, key_issuer: str | None
    ) -> None:
        audience = claims["aud"]
        if not isinstance(audience, str) or audience not in self._audiences:
            raise TokenRejected(
                "audience_invalid", "the token is for another API (aud); request a token for lkps's audience"
            )
        if claims["tid"] != self._tenant_id:
            raise TokenRejected("tenant_invalid", "the token was issued by another Entra tenant")
        issuer = claims["iss"]
        if issuer != expected_issuer:
            raise TokenRejected("issuer_invalid", "the token was not issued by this tenant's Entra issuer")
        # IdentityModel's signing-key issuer check: a key published for one issuer must not vouch for another.
        if key_issuer is not None and key_issuer.replace(TENANT_TEMPLATE, self._tenant_id) != issuer:
            raise TokenRejected("issuer_invalid", "the token's signing key belongs to another issuer")

    def _user_id(self, claims: dict[str, Any], object_id: str) -> str:
        """The first configured claim usable as it is, else the oid (a GUID, always usable)."""
        for name in self._user_id_claims:
            value = claims.get(name)
            if isinstance(value, str) and _USER_ID.fullmatch(value) and not _RESERVED_IDENTITY.match(value):
                return object_id if name == "oid" else value
            if value is not None:
                log.info("user_id_claim_unusable", claim=name)  # the value is personal data: not logged
        return object_id


def _verify_signature(key: SigningKey, jws: Jws) -> None:
    try:
        key.public_key.verify(jws.signature, jws.signing_input, _PKCS1V15, _SHA256)
    except InvalidSignature:
        raise TokenRejected("signature_invalid", "the token signature does not verify") from None


def _client_app_id(claims: dict[str, Any], claim: str) -> str:
    if claim not in claims:
        raise TokenRejected("claim_missing", f"the token lacks the {claim} claim (the calling client's id)")
    value = claims[claim]
    if not isinstance(value, str) or _GUID.fullmatch(value) is None:
        raise TokenRejected("client_app_invalid", f"the {claim} claim is not a client id GUID")
    return value.lower()


def _kind(claims: dict[str, Any]) -> CallerKind:
    """App-only or delegated, from `idtyp` and `scp` (entra-tokens.md §1.4); anything unclear is refused."""
    has_scp = "scp" in claims
    if "idtyp" not in claims:
        if has_scp:
            return CallerKind.USER
        raise TokenRejected(
            "token_type_ambiguous",
            "the token has neither idtyp nor scp; add the idtyp optional claim to the API app registration",
        )
    idtyp = claims["idtyp"]
    if idtyp == "app" and not has_scp:
        return CallerKind.APP
    if idtyp == "user" and has_scp:
        return CallerKind.USER
    raise TokenRejected("token_type_ambiguous", "the token's idtyp does not agree with its scp claim")


def _scopes_and_roles(claims: dict[str, Any]) -> tuple[frozenset[str], frozenset[str]]:
    scp = claims.get("scp", "")
    if not isinstance(scp, str) or not _encodable(scp):
        raise TokenRejected("claim_type_invalid", "the scp claim must be a space-separated string")
    roles = claims.get("roles", [])
    if not isinstance(roles, list) or not all(isinstance(role, str) and _encodable(role) for role in roles):
        raise TokenRejected("claim_type_invalid", "the roles claim must be a list of strings")
    return frozenset(scp.split(" ")) - _NO_SCOPE, frozenset(roles)


def _encodable(value: str) -> bool:
    """No lone surrogates (JSON escapes can produce them; no UTF-8 encoder downstream would accept them)."""
    return value.isascii() or _SURROGATE.search(value) is None


def clean_display_name(value: str) -> str:
    """A name as LiveKit shows it to others: without control or invisible formatting characters (bidi
    overrides, zero-width, line separators) or lone surrogates, trimmed, at most 128 characters; "" when
    nothing is left. Names from Entra claims and the token endpoint's `participant_name` alike."""
    if not (value.isascii() and value.isprintable()):
        value = _DISPLAY_DROP.sub("", value)
    return value.strip()[:_DISPLAY_MAX].rstrip()


def _display_name(claims: dict[str, Any], fallback: str) -> str:
    for name in _DISPLAY_CLAIMS:
        value = claims.get(name)
        if isinstance(value, str) and (cleaned := clean_display_name(value)):
            return cleaned
    return fallback


def build_validator(settings: Settings, http: httpx.AsyncClient, clock: Clock) -> EntraValidator:
    """The product wiring: v2 keys from the tenant's v2.0 metadata, v1 keys only when v1 is enabled."""
    tenant_base = f"{settings.authority_host}/{settings.entra_tenant_id}"

    def key_cache(discovery_url: str) -> JwksCache:
        return JwksCache(
            discovery_url,
            settings.entra_tenant_id,
            http,
            clock,
            ttl_seconds=settings.entra_jwks_ttl_seconds,
            refresh_cooldown_seconds=settings.entra_jwks_refresh_cooldown_seconds,
            max_stale_seconds=settings.entra_jwks_max_stale_seconds,
        )

    keys_v1 = (
        key_cache(f"{tenant_base}/.well-known/openid-configuration") if settings.entra_allow_v1 else None
    )
    return EntraValidator(
        settings, key_cache(f"{tenant_base}/v2.0/.well-known/openid-configuration"), keys_v1, clock
    )
