"""Entra access-token validation: happy paths, the §3 attack catalogue, claim rules and TLS wiring."""

from __future__ import annotations

import random
import re
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import jwt
import pytest

from authz.bearer import bearer_token
from authz.caller import Caller, CallerKind
from authz.entra import EntraValidator, build_validator
from authz.errors import AccessDenied, AuthUnavailable, TokenRejected
from authz.jwks import JwksCache, SigningKey, build_http_client
from authz.policy import CallerPolicy
from config.settings import Settings
from tests.support.attacks import CASES, CATEGORIES, AttackCase
from tests.support.clock import FakeClock
from tests.support.entra import (
    API_APP_ID,
    API_APP_ID_URI,
    CLIENT_ASSERTION_TYPE,
    CLIENT_ROLE,
    CLIENT_SCOPE,
    REMOVE,
    SERVICE_CLIENT_ID,
    SERVICE_OID,
    SERVICE_SECRET,
    SPA_CLIENT_ID,
    TENANT_ID,
    USER_OID,
    FakeEntra,
    FakeEntraServer,
    FakeResponse,
    make_settings,
    public_jwk,
    rsa_key,
)

pytestmark = pytest.mark.anyio

SETTINGS = make_settings()
CERT_CLIENT_ID = "5a6b7c8d-9e0f-4a1b-8c2d-3e4f5a6b7c8d"


async def reason_of(validator: EntraValidator, token: str) -> str:
    with pytest.raises(TokenRejected) as caught:
        await validator.validate(token)
    return caught.value.reason


@pytest.fixture
async def v1_validator(http: httpx.AsyncClient, clock: FakeClock) -> AsyncIterator[EntraValidator]:
    started = build_validator(make_settings(entra_allow_v1=True), http, clock)
    await started.start()
    yield started
    await started.aclose()


class TestHappyPaths:
    async def test_user_token(self, validator: EntraValidator, fake: FakeEntra) -> None:
        """A delegated v2 token yields a USER caller with every field taken from the right claim."""
        caller = await validator.validate(fake.mint_user_token())
        assert caller == Caller(
            tenant_id=TENANT_ID,
            object_id=USER_OID,
            client_app_id=SPA_CLIENT_ID,
            kind=CallerKind.USER,
            user_id="ADA0001",
            display_name="Ada Lovelace",
            scopes=frozenset({CLIENT_SCOPE}),
            roles=frozenset(),
            token_id="AbCdEfGhIjKlMnOpQrStUv",
            expires_at=int(fake.clock.now()) + 3600,
            version="2.0",
        )
        assert caller.identity == "ADA0001"

    async def test_app_token(self, validator: EntraValidator, fake: FakeEntra) -> None:
        """An app-only v2 token yields an APP caller identified by its client id."""
        caller = await validator.validate(fake.mint_app_token())
        assert caller.kind is CallerKind.APP
        assert caller.client_app_id == SERVICE_CLIENT_ID
        assert caller.object_id == SERVICE_OID
        assert caller.user_id == SERVICE_CLIENT_ID
        assert caller.display_name == SERVICE_CLIENT_ID
        assert caller.roles == frozenset({CLIENT_ROLE})
        assert caller.scopes == frozenset()
        assert caller.identity == f"app-{SERVICE_CLIENT_ID}"

    async def test_user_token_without_idtyp_but_with_scp(
        self, validator: EntraValidator, fake: FakeEntra
    ) -> None:
        """A token with scp but no idtyp (include_user_token not configured) is a USER token."""
        caller = await validator.validate(fake.mint_user_token(idtyp=REMOVE))
        assert caller.kind is CallerKind.USER

    async def test_uri_audience_is_accepted_when_configured(
        self, validator: EntraValidator, fake: FakeEntra
    ) -> None:
        """Every configured audience is accepted, exactly as written."""
        assert (await validator.validate(fake.mint_user_token(aud=API_APP_ID_URI))).version == "2.0"

    async def test_scopes_split_on_single_spaces(self, validator: EntraValidator, fake: FakeEntra) -> None:
        """scp is split on spaces and empty pieces are dropped."""
        caller = await validator.validate(fake.mint_user_token(scp="a  b c "))
        assert caller.scopes == frozenset({"a", "b", "c"})

    async def test_v1_user_token_when_enabled(self, v1_validator: EntraValidator, fake: FakeEntra) -> None:
        """With v1 enabled a v1 token is checked against the v1 issuer and its client comes from appid."""
        claims = fake.user_claims(v1=True)
        assert claims["iss"] == fake.issuer_v1
        assert "azp" not in claims
        caller = await v1_validator.validate(fake.mint_user_token(v1=True))
        assert caller.version == "1.0"
        assert caller.client_app_id == SPA_CLIENT_ID
        assert caller.kind is CallerKind.USER
        assert caller.display_name == "Ada Lovelace"

    async def test_v1_app_token_when_enabled(self, v1_validator: EntraValidator, fake: FakeEntra) -> None:
        """A v1 app-only token takes its client id from appid."""
        caller = await v1_validator.validate(fake.mint_app_token(v1=True))
        assert (caller.version, caller.kind, caller.client_app_id) == (
            "1.0",
            CallerKind.APP,
            SERVICE_CLIENT_ID,
        )

    async def test_v1_enabled_still_accepts_v2(self, v1_validator: EntraValidator, fake: FakeEntra) -> None:
        """Enabling v1 keeps v2 tokens working, each against its own metadata."""
        assert (await v1_validator.validate(fake.mint_user_token())).version == "2.0"
        assert fake.discovery_fetches == 2

    async def test_v1_token_with_v2_issuer_is_refused(
        self, v1_validator: EntraValidator, fake: FakeEntra
    ) -> None:
        """A v1 token must carry the v1 issuer; the v2 issuer does not pass for it."""
        assert (
            await reason_of(v1_validator, fake.mint_user_token(v1=True, iss=fake.issuer_v2))
            == "issuer_invalid"
        )

    async def test_v1_token_with_azp_only_is_refused(
        self, v1_validator: EntraValidator, fake: FakeEntra
    ) -> None:
        """A v1 token's client id must be in appid; azp is not read for v1."""
        token = fake.mint_user_token(v1=True, appid=REMOVE, azp=SPA_CLIENT_ID)
        assert await reason_of(v1_validator, token) == "claim_missing"

    async def test_v1_cache_is_not_built_when_v1_is_disabled(
        self, validator: EntraValidator, fake: FakeEntra
    ) -> None:
        """Without entra_allow_v1 only the v2 metadata is ever fetched."""
        assert set(validator.key_caches) == {"2.0"}
        assert fake.discovery_fetches == 1

    async def test_ready_and_age(self, validator: EntraValidator, clock: FakeClock) -> None:
        """A started validator is ready and reports the age of its key sets."""
        assert validator.ready
        clock.advance(5)
        assert validator.age_seconds == 5


class TestLeeway:
    @pytest.mark.parametrize(("offset", "accepted"), [(-30, True), (-60, True), (-61, False), (-3600, False)])
    async def test_exp_edges(
        self, validator: EntraValidator, fake: FakeEntra, offset: int, accepted: bool
    ) -> None:
        """exp in the past is accepted within the 60 s leeway and refused beyond it."""
        now = int(fake.clock.now())
        token = fake.mint_user_token(exp=now + offset, iat=now - 7200, nbf=now - 7200)
        if accepted:
            assert (await validator.validate(token)).expires_at == now + offset
        else:
            assert await reason_of(validator, token) == "token_expired"

    @pytest.mark.parametrize(("claim", "reason"), [("nbf", "token_not_yet_valid"), ("iat", "iat_in_future")])
    async def test_future_times_within_leeway(
        self, validator: EntraValidator, fake: FakeEntra, claim: str, reason: str
    ) -> None:
        """nbf and iat may be up to the leeway in the future, not a second more."""
        now = int(fake.clock.now())
        await validator.validate(fake.mint_user_token(**{claim: now + 60}))
        assert await reason_of(validator, fake.mint_user_token(**{claim: now + 61})) == reason

    async def test_leeway_is_configurable(
        self, http: httpx.AsyncClient, clock: FakeClock, fake: FakeEntra
    ) -> None:
        """With a 0 s leeway a token expired one second ago is refused."""
        strict = build_validator(make_settings(entra_leeway_seconds=0), http, clock)
        await strict.start()
        now = int(clock.now())
        assert (
            await reason_of(strict, fake.mint_user_token(exp=now - 1, iat=now - 100, nbf=now - 100))
            == "token_expired"
        )
        assert (await strict.validate(fake.mint_user_token(exp=now))).expires_at == now


def test_catalogue_covers_every_attack_class() -> None:
    """The catalogue has several concrete cases for each class of entra-tokens.md §3."""
    assert {"algorithm", "key-selection", "structure", "time", "claims", "authorization-header"} == CATEGORIES
    for category in CATEGORIES:
        assert sum(case.category == category for case in CASES) >= 4, category
    assert any(case.status == 403 for case in CASES)
    assert any(case.status == 200 for case in CASES)


async def outcome(
    validator: EntraValidator, headers: list[tuple[bytes, bytes]]
) -> tuple[int, str | None, str]:
    """(HTTP status, reason, message) for a request, as the gateway would map them."""
    policy = CallerPolicy(SETTINGS.client_scopes, SETTINGS.client_roles, SETTINGS.client_app_ids, ())
    try:
        caller = await validator.validate(bearer_token(headers, SETTINGS.max_token_bytes))
        policy.check_session_caller(caller)
    except TokenRejected as exc:
        return 401, exc.reason, str(exc)
    except AccessDenied as exc:
        return 403, exc.reason, str(exc)
    return 200, None, ""


class TestAttackCatalogue:
    @pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
    async def test_case(self, validator: EntraValidator, fake: FakeEntra, case: AttackCase) -> None:
        """Every catalogue case gets its expected outcome, with no key fetch for tokens refused on their form."""
        fetches = fake.jwks_fetches + fake.discovery_fetches
        headers = case.build(fake)
        status, reason, message = await outcome(validator, headers)
        assert (status, reason) == (case.status, case.reason)
        # A refusal never quotes what was sent (any long run of token characters).
        for fragment in re.findall(rb"[A-Za-z0-9_-]{16,}", b"".join(value for _, value in headers)):
            assert fragment.decode() not in message
        # Keys were loaded within the refresh cooldown, so not even kid_unknown may fetch here.
        assert fake.jwks_fetches + fake.discovery_fetches == fetches

    async def test_unknown_kid_after_the_cooldown_costs_one_refresh(
        self, validator: EntraValidator, fake: FakeEntra, clock: FakeClock
    ) -> None:
        """An unknown but well-formed kid may trigger one refresh, and repeated ones no more per cooldown."""
        clock.advance(60)
        attacker = rsa_key("attacker")
        for index in range(20):
            token = fake.mint(
                header=fake.header(kid=f"attacker-kid-{index}"), payload=fake.user_claims(), key=attacker
            )
            assert await reason_of(validator, token) == "kid_unknown"
        assert fake.jwks_fetches == 2


class TestKeyIssuer:
    async def test_key_published_for_another_issuer_is_refused(
        self, http: httpx.AsyncClient, clock: FakeClock, fake: FakeEntra
    ) -> None:
        """A key whose own issuer (tenant substituted) differs from the token's iss cannot vouch for it."""
        fake.override(
            "jwks",
            FakeResponse.json(
                200, {"keys": [public_jwk(fake.private_key(), issuer="https://other.test/{tenantid}/v2.0")]}
            ),
        )
        keyed = build_validator(SETTINGS, http, clock)
        await keyed.start()
        assert await reason_of(keyed, fake.mint_user_token()) == "issuer_invalid"

    async def test_key_without_issuer_is_accepted(
        self, http: httpx.AsyncClient, clock: FakeClock, fake: FakeEntra
    ) -> None:
        """Keys that carry no issuer (the v1 keys document) skip that check."""
        fake.override("jwks", FakeResponse.json(200, {"keys": [public_jwk(fake.private_key())]}))
        plain = build_validator(SETTINGS, http, clock)
        await plain.start()
        assert (await plain.validate(fake.mint_user_token())).kind is CallerKind.USER


class TestUserId:
    @pytest.mark.parametrize(
        ("claims", "expected"),
        [
            ({"cwid": "ADA0001"}, "ADA0001"),
            ({"cwid": "ada.lovelace_1-x"}, "ada.lovelace_1-x"),
            ({"cwid": "x" * 64}, "x" * 64),
            ({"cwid": "A.B C/D@e\u00e9\u200bF"}, USER_OID),
            ({"cwid": "J.O'NEIL"}, USER_OID),
            ({"cwid": "x" * 65}, USER_OID),
            ({"cwid": "é@ /"}, USER_OID),
            ({"cwid": ""}, USER_OID),
            ({"cwid": 12345}, USER_OID),
            ({"cwid": ["A1"]}, USER_OID),
            ({"cwid": REMOVE}, USER_OID),
            ({"cwid": "agent-AJ_x1"}, USER_OID),
            ({"cwid": "Agent-AJ_x1"}, USER_OID),
            ({"cwid": "app-0f1e2d3c"}, USER_OID),
            ({"cwid": "agentsmith"}, "agentsmith"),
        ],
        ids=[
            "plain",
            "allowed-punctuation",
            "longest",
            "would-need-cleaning",
            "apostrophe",
            "too-long",
            "sanitises-to-empty",
            "empty",
            "int",
            "list",
            "absent",
            "agent-identity",
            "agent-identity-any-case",
            "app-identity",
            "agent-without-dash",
        ],
    )
    async def test_first_configured_claim_sanitised_else_oid(
        self, validator: EntraValidator, fake: FakeEntra, claims: dict[str, object], expected: str
    ) -> None:
        """user_id is the first configured claim that is already [A-Za-z0-9._-]{1,64} and does not start with
        an identity prefix lkps gives apps or agents (`app-`, `agent-`), else oid: never a cleaned or
        truncated value."""
        assert (await validator.validate(fake.mint_user_token(**claims))).user_id == expected

    async def test_values_that_differ_only_in_dropped_characters_stay_different_people(
        self, validator: EntraValidator, fake: FakeEntra
    ) -> None:
        """`J.O'NEIL` and `J.ONEIL` (and two ids sharing their first 64 characters) never share a user id."""
        other_oid = "0a9b8c7d-6e5f-4a3b-9c2d-1e0f9a8b7c6d"
        pairs = [("J.O'NEIL", "J.ONEIL"), ("x" * 64 + "1", "x" * 64 + "2")]
        for first, second in pairs:
            one = await validator.validate(fake.mint_user_token(cwid=first))
            two = await validator.validate(fake.mint_user_token(cwid=second, oid=other_oid))
            assert one.user_id != two.user_id
            assert one.identity != two.identity

    async def test_an_unusable_claim_falls_back_to_the_next_configured_one(
        self, http: httpx.AsyncClient, clock: FakeClock, fake: FakeEntra
    ) -> None:
        """A value cleaning would change is skipped for the next claim of LKPS_USER_ID_CLAIMS, oid last."""
        custom = build_validator(make_settings(user_id_claims=("employeeid", "cwid", "oid")), http, clock)
        await custom.start()
        assert (await custom.validate(fake.mint_user_token(employeeid="E 42"))).user_id == "ADA0001"
        assert (await custom.validate(fake.mint_user_token(employeeid="E/42", cwid="Ö1"))).user_id == USER_OID
        await custom.aclose()

    async def test_claim_order_follows_the_settings(
        self, http: httpx.AsyncClient, clock: FakeClock, fake: FakeEntra
    ) -> None:
        """Claims are tried in the configured order and skipped when absent."""
        custom = build_validator(make_settings(user_id_claims=("employeeid", "cwid", "oid")), http, clock)
        await custom.start()
        assert (await custom.validate(fake.mint_user_token(employeeid="E-42"))).user_id == "E-42"
        assert (await custom.validate(fake.mint_user_token())).user_id == "ADA0001"

    async def test_app_callers_use_the_client_id(self, validator: EntraValidator, fake: FakeEntra) -> None:
        """An app-only token's user_id is its client id even if it carries a user id claim."""
        assert (await validator.validate(fake.mint_app_token(cwid="EVIL"))).user_id == SERVICE_CLIENT_ID

    async def test_upper_case_client_id_is_normalised(
        self, validator: EntraValidator, fake: FakeEntra
    ) -> None:
        """A GUID client id in upper case is accepted and lower-cased for comparisons."""
        caller = await validator.validate(fake.mint_user_token(azp=SPA_CLIENT_ID.upper()))
        assert caller.client_app_id == SPA_CLIENT_ID


class TestDisplayName:
    @pytest.mark.parametrize(
        ("claims", "expected"),
        [
            ({}, "Ada Lovelace"),
            ({"name": REMOVE}, "ada.lovelace@contoso.example"),
            ({"name": REMOVE, "preferred_username": REMOVE, "upn": "ada@corp.example"}, "ada@corp.example"),
            ({"name": REMOVE, "preferred_username": REMOVE}, "ADA0001"),
            ({"name": "Ada\x00\x1b[31m\u202eLovelace\u200b\ud800"}, "Ada[31mLovelace"),
            ({"name": "\x00\x01 \u200b"}, "ada.lovelace@contoso.example"),
            ({"name": "  Ada  "}, "Ada"),
            ({"name": "A" * 300}, "A" * 128),
            ({"name": 42}, "ada.lovelace@contoso.example"),
        ],
        ids=[
            "name",
            "preferred-username",
            "upn",
            "user-id",
            "control-chars",
            "only-control-chars",
            "trimmed",
            "capped",
            "not-a-string",
        ],
    )
    async def test_display_name(
        self, validator: EntraValidator, fake: FakeEntra, claims: dict[str, object], expected: str
    ) -> None:
        """display_name is name, else preferred_username, else upn, else user_id; cleaned and capped at 128."""
        assert (await validator.validate(fake.mint_user_token(**claims))).display_name == expected


class TestTokenFields:
    @pytest.mark.parametrize(
        ("uti", "expected"),
        [("AbC-_1", "AbC-_1"), ("a b", None), (5, None), (REMOVE, None), ("x" * 65, None)],
    )
    async def test_token_id_only_keeps_a_plain_uti(
        self, validator: EntraValidator, fake: FakeEntra, uti: object, expected: str | None
    ) -> None:
        """token_id is uti when it has the expected base64url shape (it goes into logs), else None."""
        assert (await validator.validate(fake.mint_user_token(uti=uti))).token_id == expected

    async def test_scope_with_a_lone_surrogate_is_refused(
        self, validator: EntraValidator, fake: FakeEntra
    ) -> None:
        """A scope value no UTF-8 encoder could write later is refused up front."""
        assert (
            await reason_of(validator, fake.mint_user_token(scp="access_as_client \ud800"))
            == "claim_type_invalid"
        )


class TestFailClosed:
    async def test_no_keys_is_unavailable_not_unauthorised(
        self, http: httpx.AsyncClient, clock: FakeClock, fake: FakeEntra
    ) -> None:
        """Without signing keys a well-formed token gets AuthUnavailable (503), not a 401."""
        fake.fail("discovery", 503)
        cold = build_validator(SETTINGS, http, clock)
        with pytest.raises(AuthUnavailable):
            await cold.start()
        assert not cold.ready
        with pytest.raises(AuthUnavailable) as caught:
            await cold.validate(fake.mint_user_token())
        assert caught.value.reason == "keys_unavailable"

    async def test_tokens_refused_on_form_need_no_keys(
        self, http: httpx.AsyncClient, clock: FakeClock, fake: FakeEntra
    ) -> None:
        """Even with no keys loaded, a malformed token is a 401 and causes no fetch."""
        fake.fail("discovery", 503)
        cold = build_validator(SETTINGS, http, clock)
        with pytest.raises(AuthUnavailable):
            await cold.start()
        assert (
            await reason_of(cold, fake.mint(header=fake.header(alg="none"), payload=fake.user_claims()))
            == "alg_not_allowed"
        )
        assert fake.discovery_fetches == 1

    async def test_unexpected_errors_become_token_malformed(
        self, http: httpx.AsyncClient, clock: FakeClock, fake: FakeEntra
    ) -> None:
        """A bug provoked by a token surfaces as a 401 token_malformed, never as an unhandled exception."""

        class ExplodingKey:
            def verify(self, *_: object) -> None:
                raise RuntimeError("a bug, not a bad token")

        class ExplodingKeys(JwksCache):
            async def key(self, kid: str) -> SigningKey:
                return SigningKey(ExplodingKey(), None)  # type: ignore[arg-type]

        keys = ExplodingKeys(
            fake.discovery_url_v2,
            TENANT_ID,
            http,
            clock,
            ttl_seconds=60,
            refresh_cooldown_seconds=60,
            max_stale_seconds=60,
        )
        assert (
            await reason_of(EntraValidator(SETTINGS, keys, None, clock), fake.mint_user_token())
            == "token_malformed"
        )

    async def test_oversized_token_is_refused_before_hashing(self, validator: EntraValidator) -> None:
        """validate() enforces max_token_bytes itself too."""
        assert await reason_of(validator, "a" * (SETTINGS.max_token_bytes + 1)) == "token_too_large"

    async def test_random_corruptions_only_raise_token_rejected(
        self, validator: EntraValidator, fake: FakeEntra
    ) -> None:
        """Randomly corrupted valid tokens are refused with a reason code and never crash or pass."""
        valid = fake.mint_user_token()
        rng = random.Random(7)
        for _ in range(300):
            chars = list(valid)
            for _ in range(rng.randint(1, 3)):
                chars[rng.randrange(len(chars))] = rng.choice("AQgw-_.0z")
            corrupted = "".join(chars)
            if corrupted == valid:
                continue
            with pytest.raises(TokenRejected):
                await validator.validate(corrupted)


class TestFakeTokenEndpoint:
    async def test_client_secret_grant_yields_a_valid_app_token(
        self, validator: EntraValidator, http: httpx.AsyncClient, fake: FakeEntra
    ) -> None:
        """The fake's client-credentials endpoint issues an app token the validator accepts."""
        response = await http.post(
            fake.token_endpoint,
            data={
                "grant_type": "client_credentials",
                "client_id": SERVICE_CLIENT_ID,
                "client_secret": SERVICE_SECRET,
                "scope": f"{API_APP_ID_URI}/.default",
            },
        )
        assert response.status_code == 200
        body = response.json()
        assert (body["token_type"], body["expires_in"], body["ext_expires_in"]) == ("Bearer", 3599, 3599)
        caller = await validator.validate(body["access_token"])
        assert (caller.kind, caller.client_app_id, caller.roles) == (
            CallerKind.APP,
            SERVICE_CLIENT_ID,
            {CLIENT_ROLE},
        )

    async def test_client_assertion_grant(self, http: httpx.AsyncClient, fake: FakeEntra) -> None:
        """A PS256 client assertion signed with the registered certificate key is accepted."""
        key = rsa_key("client-certificate")
        fake.register_client(CERT_CLIENT_ID, object_id=SERVICE_OID, certificate_key=key.public_key())
        now = int(fake.clock.now())
        assertion = jwt.encode(
            {
                "aud": fake.token_endpoint,
                "iss": CERT_CLIENT_ID,
                "sub": CERT_CLIENT_ID,
                "exp": now + 600,
                "iat": now,
                "jti": "j",
            },
            key,
            algorithm="PS256",
        )
        response = await http.post(
            fake.token_endpoint,
            data={
                "grant_type": "client_credentials",
                "client_id": CERT_CLIENT_ID,
                "client_assertion_type": CLIENT_ASSERTION_TYPE,
                "client_assertion": assertion,
                "scope": f"{API_APP_ID}/.default",
            },
        )
        assert response.status_code == 200, response.text

    @pytest.mark.parametrize(
        ("form", "status", "error"),
        [
            ({"client_secret": "wrong"}, 401, "invalid_client"),
            ({"client_id": "unknown"}, 401, "invalid_client"),
            ({"client_secret": REMOVE}, 401, "invalid_client"),
            ({"scope": f"{API_APP_ID_URI}/access_as_client"}, 400, "invalid_scope"),
            ({"scope": "api://unknown/.default"}, 400, "invalid_resource"),
            ({"grant_type": "password"}, 400, "unsupported_grant_type"),
        ],
        ids=[
            "wrong-secret",
            "unknown-client",
            "no-credential",
            "not-default-scope",
            "unknown-resource",
            "other-grant",
        ],
    )
    async def test_token_endpoint_errors(
        self, http: httpx.AsyncClient, fake: FakeEntra, form: dict[str, object], status: int, error: str
    ) -> None:
        """Bad credentials are 401 invalid_client and a bad scope is 400, in Entra's error shape."""
        base = {
            "grant_type": "client_credentials",
            "client_id": SERVICE_CLIENT_ID,
            "client_secret": SERVICE_SECRET,
            "scope": f"{API_APP_ID_URI}/.default",
        }
        data = {name: value for name, value in {**base, **form}.items() if value is not REMOVE}
        response = await http.post(fake.token_endpoint, data=data)
        assert (response.status_code, response.json()["error"]) == (status, error)

    async def test_throttling_switch(self, http: httpx.AsyncClient, fake: FakeEntra) -> None:
        """fail() answers the next requests with the given status and Retry-After, then recovers."""
        fake.fail("token", 429, retry_after=2)
        data = {
            "grant_type": "client_credentials",
            "client_id": SERVICE_CLIENT_ID,
            "client_secret": SERVICE_SECRET,
            "scope": f"{API_APP_ID}/.default",
        }
        throttled = await http.post(fake.token_endpoint, data=data)
        assert (throttled.status_code, throttled.headers["Retry-After"]) == (429, "2")
        assert (await http.post(fake.token_endpoint, data=data)).status_code == 200
        assert fake.count("token") == 2


class TestRealTls:
    @staticmethod
    def settings_for(server: FakeEntraServer, **overrides: object) -> Settings:
        return make_settings(entra_authority=server.authority, entra_ca_bundle=server.ca_path, **overrides)

    async def test_validates_against_the_https_issuer_with_the_configured_ca(
        self, tmp_path: Path, clock: FakeClock
    ) -> None:
        """Over real TLS, discovery and JWKS load with the CA from LKPS_ENTRA_CA_BUNDLE and tokens validate."""
        with FakeEntraServer(tmp_path, clock=clock) as server:
            settings = self.settings_for(server, entra_allow_v1=True)
            async with build_http_client(settings) as http:
                validator = build_validator(settings, http, clock)
                await validator.start()
                assert validator.ready
                assert (await validator.validate(server.entra.mint_user_token())).user_id == "ADA0001"
                assert (await validator.validate(server.entra.mint_app_token(v1=True))).version == "1.0"
                await validator.aclose()
        assert server.entra.jwks_fetches == 2

    async def test_environment_ca_variables_do_not_override_the_configured_ca(
        self, tmp_path: Path, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """REQUESTS_CA_BUNDLE and SSL_CERT_FILE pointing elsewhere, and a proxy variable, change nothing."""
        elsewhere = tmp_path / "elsewhere"
        elsewhere.mkdir()
        bogus = elsewhere / "other-ca.pem"
        bogus.write_text("not a certificate\n")
        monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(bogus))
        monkeypatch.setenv("SSL_CERT_FILE", str(bogus))
        monkeypatch.setenv("HTTPS_PROXY", "http://127.0.0.1:9")
        with FakeEntraServer(tmp_path, clock=clock) as server:
            settings = self.settings_for(server)
            async with build_http_client(settings) as http:
                validator = build_validator(settings, http, clock)
                await validator.start()
                assert (await validator.validate(server.entra.mint_app_token())).kind is CallerKind.APP

    async def test_untrusted_certificate_is_refused(self, tmp_path: Path, clock: FakeClock) -> None:
        """Without the fake's CA configured, TLS verification fails and no keys are loaded."""
        with FakeEntraServer(tmp_path, clock=clock) as server:
            settings = make_settings(entra_authority=server.authority)
            async with build_http_client(settings) as http:
                validator = build_validator(settings, http, clock)
                with pytest.raises(AuthUnavailable) as caught:
                    await validator.start()
        assert "ConnectError" in caught.value.detail
        assert server.entra.calls == []
