"""The attack catalogue of entra-tokens.md §3 as data, reusable at every layer.

Each case builds raw ASGI request headers (and, for one case, a query string) from a `FakeEntra`, so the
same list drives the validator tests and, later, requests through the HTTP app. `status` is what the HTTP
API must answer: 401 (invalid token or request), 403 (valid token, refused by caller policy) or 200 for
the positive controls that prove the harness is not rejecting everything.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from tests.support.entra import (
    API_APP_ID,
    API_APP_ID_URI,
    GRAPH_RESOURCE,
    OTHER_API_APP_ID,
    OTHER_CLIENT_ID,
    OTHER_TENANT_ID,
    REMOVE,
    FakeEntra,
    b64url,
    compact,
    encode_segment,
    kid_of,
    public_jwk,
    rsa_key,
)

Headers = list[tuple[bytes, bytes]]


@dataclass(frozen=True)
class AttackCase:
    id: str
    category: str  # the §3 class
    build: Callable[[FakeEntra], Headers]
    status: int  # 401, 403, or 200 for positive controls
    reason: str | None  # stable reason code; None when the request must succeed
    query: Callable[[FakeEntra], dict[str, str]] | None = None  # extra query parameters to send

    @property
    def token_valid(self) -> bool:
        """Whether the validator itself must accept the token (200 and 403 cases)."""
        return self.status != 401


def bearer(token: str) -> Headers:
    return [(b"authorization", f"Bearer {token}".encode())]


def attacker_key_kid() -> str:
    return kid_of(rsa_key("attacker"))


@functools.cache
def _ec_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _hs256(secret: bytes) -> Callable[[bytes], bytes]:
    return lambda data: hmac.new(secret, data, hashlib.sha256).digest()


def _public_pem(fake: FakeEntra) -> bytes:
    return (
        fake.private_key()
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )


def _unsigned(header: Any, payload: Any) -> str:
    return f"{encode_segment(header)}.{encode_segment(payload)}."


def _with_segment(token: str, index: int, segment: str) -> str:
    parts = token.split(".")
    parts[index] = segment
    return ".".join(parts)


def _json_with_duplicate(members: dict[str, Any], name: str, value: Any) -> bytes:
    """Compact JSON of `members` with a second, later `name` member (the stdlib keeps the last silently)."""
    text = json.dumps(members, separators=(",", ":"))
    return f"{text[:-1]},{json.dumps(name)}:{json.dumps(value)}}}".encode()


def _noncanonical_signature(fake: FakeEntra) -> str:
    # A 256-byte RSA signature is 342 base64url characters; the last one carries 4 unused bits. Setting
    # one decodes to the same bytes, so without a canonical check this re-spelled token would verify.
    token = fake.mint_user_token()
    head, _, signature = token.rpartition(".")
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    last = alphabet[alphabet.index(signature[-1]) | 1]
    return f"{head}.{signature[:-1]}{last}"


def _spliced(fake: FakeEntra) -> str:
    user, app = fake.mint_user_token().split("."), fake.mint_app_token().split(".")
    return f"{user[0]}.{app[1]}.{user[2]}"


def _altered_payload(fake: FakeEntra) -> str:
    token = fake.mint_user_token()
    payload = fake.user_claims(oid="00000000-0000-4000-8000-000000000001", roles=["Admin"])
    return _with_segment(token, 1, encode_segment(payload))


def _truncated_signature(fake: FakeEntra) -> str:
    token = fake.mint_user_token()
    signature = base64.urlsafe_b64decode(token.rpartition(".")[2] + "==")
    return _with_segment(token, 2, b64url(signature[:-1]))


def _flipped_signature(fake: FakeEntra) -> str:
    token = fake.mint_user_token()
    signature = bytearray(base64.urlsafe_b64decode(token.rpartition(".")[2] + "=="))
    signature[10] ^= 0x01
    return _with_segment(token, 2, b64url(bytes(signature)))


def _rs384(fake: FakeEntra) -> str:
    key = fake.private_key()
    return compact(
        fake.header(alg="RS384"),
        fake.user_claims(),
        lambda d: key.sign(d, padding.PKCS1v15(), hashes.SHA384()),
    )


def _ps256(fake: FakeEntra) -> str:
    key = fake.private_key()
    pss = padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=32)
    return compact(fake.header(alg="PS256"), fake.user_claims(), lambda d: key.sign(d, pss, hashes.SHA256()))


def _es256(fake: FakeEntra) -> str:
    def sign(data: bytes) -> bytes:
        r, s = decode_dss_signature(_ec_key().sign(data, ec.ECDSA(hashes.SHA256())))
        return r.to_bytes(32, "big") + s.to_bytes(32, "big")

    return compact(fake.header(alg="ES256"), fake.user_claims(), sign)


def _signed_by_attacker(fake: FakeEntra, **header: Any) -> str:
    return fake.mint(header=fake.header(**header), payload=fake.user_claims(), key=rsa_key("attacker"))


def _deep_arrays(depth: int) -> bytes:
    return b'{"x":' + b"[" * depth + b"]" * depth + b"}"


def _token(
    case_id: str, category: str, make: Callable[[FakeEntra], str], reason: str | None, status: int = 401
) -> AttackCase:
    return AttackCase(case_id, category, lambda fake: bearer(make(fake)), status, reason)


def _header_case(
    case_id: str, make: Callable[[FakeEntra], Headers], reason: str | None, status: int = 401
) -> AttackCase:
    return AttackCase(case_id, "authorization-header", make, status, reason)


def _claims(
    case_id: str, reason: str, status: int = 401, *, app: bool = False, **overrides: Any
) -> AttackCase:
    def make(fake: FakeEntra) -> str:
        return fake.mint_app_token(**overrides) if app else fake.mint_user_token(**overrides)

    return _token(case_id, "claims", make, reason, status)


def _times(case_id: str, reason: str, **offsets_or_values: Any) -> AttackCase:
    """Time claims given as offsets from the fake's now (ints) or as literal values (anything else)."""

    def make(fake: FakeEntra) -> str:
        now = int(fake.clock.now())
        claims = {
            name: now + value if type(value) is int else value for name, value in offsets_or_values.items()
        }
        return fake.mint_user_token(**claims)

    return _token(case_id, "time", make, reason)


ALGORITHM_CASES = [
    *(
        _token(
            f"alg-{alg}",
            "algorithm",
            lambda f, a=alg: _unsigned(f.header(alg=a), f.user_claims()),
            "alg_not_allowed",
        )
        for alg in ("none", "None", "NONE", "nOnE")
    ),
    _token(
        "alg-none-with-signature",
        "algorithm",
        lambda f: _with_segment(f.mint_user_token(), 0, encode_segment(f.header(alg="none"))),
        "alg_not_allowed",
    ),
    _token(
        "alg-missing",
        "algorithm",
        lambda f: f.mint(header=f.header(alg=REMOVE), payload=f.user_claims()),
        "alg_not_allowed",
    ),
    _token(
        "alg-null",
        "algorithm",
        lambda f: f.mint(header=f.header(alg=None), payload=f.user_claims()),
        "alg_not_allowed",
    ),
    _token(
        "alg-rs256-lowercase",
        "algorithm",
        lambda f: f.mint(header=f.header(alg="rs256"), payload=f.user_claims()),
        "alg_not_allowed",
    ),
    _token(
        "hs256-public-key-pem",
        "algorithm",
        lambda f: compact(f.header(alg="HS256"), f.user_claims(), _hs256(_public_pem(f))),
        "alg_not_allowed",
    ),
    _token(
        "hs256-public-jwk-json",
        "algorithm",
        lambda f: compact(
            f.header(alg="HS256"),
            f.user_claims(),
            _hs256(json.dumps(public_jwk(f.private_key())).encode()),
        ),
        "alg_not_allowed",
    ),
    _token(
        "hs256-blank-secret",
        "algorithm",
        lambda f: compact(f.header(alg="HS256"), f.user_claims(), _hs256(b"")),
        "alg_not_allowed",
    ),
    _token("rs384", "algorithm", _rs384, "alg_not_allowed"),
    _token("ps256", "algorithm", _ps256, "alg_not_allowed"),
    _token("es256", "algorithm", _es256, "alg_not_allowed"),
    _token("other-key-signature-with-our-kid", "algorithm", _signed_by_attacker, "signature_invalid"),
    _token("spliced-header-payload", "algorithm", _spliced, "signature_invalid"),
    _token("altered-payload-same-signature", "algorithm", _altered_payload, "signature_invalid"),
    _token("signature-bit-flipped", "algorithm", _flipped_signature, "signature_invalid"),
    _token("signature-truncated", "algorithm", _truncated_signature, "signature_invalid"),
    _token(
        "signature-stripped",
        "algorithm",
        lambda f: f.mint_user_token().rpartition(".")[0] + ".",
        "token_malformed",
    ),
    _token("signature-non-canonical-base64url", "algorithm", _noncanonical_signature, "token_malformed"),
]

KEY_SELECTION_CASES = [
    *(
        _token(
            f"kid-injection-{label}",
            "key-selection",
            lambda f, k=kid: _signed_by_attacker(f, kid=k),
            "kid_invalid",
        )
        for label, kid in (
            ("path-traversal", "../../../../../../dev/null"),
            ("dev-null", "/dev/null"),
            ("invalid-path", "/invalid_path"),
            ("command", "|sleep 10"),
            ("curl", "| curl http://attacker.example/"),
            ("sql", "x' UNION SELECT '1';--"),
            ("blank", ""),
            ("too-long", "a" * 129),
            ("newline", "abc\n"),
        )
    ),
    _token(
        "kid-missing",
        "key-selection",
        lambda f: f.mint(header=f.header(kid=REMOVE), payload=f.user_claims()),
        "kid_invalid",
    ),
    *(
        _token(
            f"kid-not-a-string-{label}",
            "key-selection",
            lambda f, k=kid: f.mint(header=f.header(kid=k), payload=f.user_claims()),
            "kid_invalid",
        )
        for label, kid in (
            ("int", 123),
            ("null", None),
            ("list", ["a"]),
            ("object", {"kid": "a"}),
            ("bool", True),
        )
    ),
    _token(
        "kid-unknown",
        "key-selection",
        lambda f: _signed_by_attacker(f, kid=attacker_key_kid()),
        "kid_unknown",
    ),
    _token(
        "jwk-inline-attacker-key",
        "key-selection",
        lambda f: _signed_by_attacker(f, kid=attacker_key_kid(), jwk=public_jwk(rsa_key("attacker"))),
        "header_param_forbidden",
    ),
    *(
        _token(
            f"header-{name}",
            "key-selection",
            lambda f, n=name, v=value: _signed_by_attacker(f, **{n: v}),
            "header_param_forbidden",
        )
        for name, value in (
            ("jku", "https://attacker.example/jwks.json"),
            ("x5u", "https://attacker.example/cert.pem"),
            ("x5c", ["MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEA"]),
            ("crit", ["exp"]),
            ("nonce", "AQABAAAAAAD--DLA3VO7QrddgJg7WevrqYfr"),
            ("b64", False),
            ("zip", "DEF"),
            ("enc", "A256GCM"),
            ("cty", "JWT"),
            ("x5t#S256", "c29tZQ"),
            ("foo", "bar"),
        )
    ),
    _token(
        "typ-not-jwt",
        "key-selection",
        lambda f: f.mint(header=f.header(typ="at+jwt"), payload=f.user_claims()),
        "header_param_forbidden",
    ),
]


def _nested_jwt_payload(fake: FakeEntra) -> str:
    inner = fake.mint_user_token()
    return fake.mint(payload=inner.encode())


STRUCTURE_CASES = [
    _token("two-segments", "structure", lambda f: f.mint_user_token().rpartition(".")[0], "token_malformed"),
    _token("four-segments", "structure", lambda f: f.mint_user_token() + ".AAAA", "token_malformed"),
    _token(
        "five-segments-jwe",
        "structure",
        lambda f: ".".join(
            [
                encode_segment({"alg": "RSA-OAEP-256", "enc": "A256GCM", "kid": f.signing_kid}),
                "AAAA",
                "AAAA",
                "AAAA",
                "AAAA",
            ]
        ),
        "token_malformed",
    ),
    _token(
        "empty-header-segment",
        "structure",
        lambda f: _with_segment(f.mint_user_token(), 0, ""),
        "token_malformed",
    ),
    _token(
        "empty-payload-segment",
        "structure",
        lambda f: _with_segment(f.mint_user_token(), 1, ""),
        "token_malformed",
    ),
    _token("only-dots", "structure", lambda f: "..", "token_malformed"),
    _token("single-dot", "structure", lambda f: ".", "token_malformed"),
    _token(
        "bad-base64url-character",
        "structure",
        lambda f: f.mint_user_token().replace(".", ".!", 1),
        "token_malformed",
    ),
    _token(
        "standard-base64-plus",
        "structure",
        lambda f: f.mint_user_token().replace(".", ".+", 1),
        "token_malformed",
    ),
    _token(
        "standard-base64-slash",
        "structure",
        lambda f: f.mint_user_token().replace(".", "./", 1),
        "token_malformed",
    ),
    _token(
        "base64url-impossible-length",
        "structure",
        lambda f: _with_segment(f.mint_user_token(), 2, "A" * 341),
        "token_malformed",
    ),
    _token(
        "padding-in-payload",
        "structure",
        lambda f: f.mint_user_token().replace(".", "=.", 2),
        "token_malformed",
    ),
    _token("padding-after-signature", "structure", lambda f: f.mint_user_token() + "==", "token_malformed"),
    _token(
        "space-inside", "structure", lambda f: f.mint_user_token().replace(".", ". ", 1), "token_malformed"
    ),
    _token(
        "tab-inside", "structure", lambda f: f.mint_user_token().replace(".", ".\t", 1), "token_malformed"
    ),
    _token(
        "nul-inside", "structure", lambda f: f.mint_user_token().replace(".", ".\x00", 1), "token_malformed"
    ),
    _token(
        "del-inside", "structure", lambda f: f.mint_user_token().replace(".", ".\x7f", 1), "token_malformed"
    ),
    _token(
        "non-ascii-inside",
        "structure",
        lambda f: f.mint_user_token().replace(".", ".é", 1),
        "token_malformed",
    ),
    _token(
        "one-mebibyte-token",
        "structure",
        lambda f: f.mint_user_token(padding="A" * (1024 * 1024)),
        "token_too_large",
    ),
    _token(
        "200-kib-header",
        "structure",
        lambda f: f.mint(header=f.header(x5t="A" * (200 * 1024)), payload=f.user_claims()),
        "token_too_large",
    ),
    _token(
        "10000-nested-arrays", "structure", lambda f: f.mint(payload=_deep_arrays(10_000)), "token_too_large"
    ),
    _token(
        "5000-nested-arrays-under-size-cap",
        "structure",
        lambda f: f.mint(payload=_deep_arrays(5_000)),
        "token_malformed",
    ),
    _token(
        "deeply-nested-header",
        "structure",
        lambda f: f.mint(
            header=b'{"alg":"RS256","x":' + b"[" * 3000 + b"]" * 3000 + b"}", payload=f.user_claims()
        ),
        "token_malformed",
    ),
    *(
        _token(
            f"header-json-{label}",
            "structure",
            lambda f, h=header: f.mint(header=json.dumps(h).encode(), payload=f.user_claims()),
            "token_malformed",
        )
        for label, header in (
            ("array", ["RS256"]),
            ("string", "RS256"),
            ("number", 256),
            ("null", None),
            ("true", True),
        )
    ),
    *(
        _token(
            f"payload-json-{label}", "structure", lambda f, p=payload: f.mint(payload=p), "token_malformed"
        )
        for label, payload in (
            ("array", [API_APP_ID]),
            ("string", "hello"),
            ("number", 1),
            ("null", None),
            ("false", False),
        )
    ),
    _token("nested-jwt-as-payload", "structure", _nested_jwt_payload, "token_malformed"),
    _token(
        "nested-jwt-as-json-string-payload",
        "structure",
        lambda f: f.mint(payload=f.mint_user_token()),
        "token_malformed",
    ),
    _token(
        "duplicate-alg-in-header",
        "structure",
        lambda f: f.mint(
            header=_json_with_duplicate(f.header(alg="none"), "alg", "RS256"), payload=f.user_claims()
        ),
        "token_malformed",
    ),
    _token(
        "duplicate-kid-in-header",
        "structure",
        lambda f: f.mint(
            header=_json_with_duplicate(f.header(), "kid", attacker_key_kid()), payload=f.user_claims()
        ),
        "token_malformed",
    ),
    _token(
        "duplicate-aud-in-payload",
        "structure",
        lambda f: f.mint(
            payload=_json_with_duplicate(f.user_claims(aud=OTHER_API_APP_ID), "aud", API_APP_ID)
        ),
        "token_malformed",
    ),
    _token(
        "duplicate-exp-in-payload",
        "structure",
        lambda f: f.mint(payload=_json_with_duplicate(f.user_claims(), "exp", 9_999_999_999)),
        "token_malformed",
    ),
    _token(
        "payload-not-utf8",
        "structure",
        lambda f: f.mint(payload=b"\xff" + json.dumps(f.user_claims()).encode()),
        "token_malformed",
    ),
    _token(
        "payload-utf8-bom",
        "structure",
        lambda f: f.mint(payload=b"\xef\xbb\xbf" + json.dumps(f.user_claims()).encode()),
        "token_malformed",
    ),
    _token(
        "payload-trailing-garbage",
        "structure",
        lambda f: f.mint(payload=json.dumps(f.user_claims()).encode() + b"x"),
        "token_malformed",
    ),
    _token(
        "payload-nan",
        "structure",
        lambda f: f.mint(
            payload=json.dumps(f.user_claims()).encode().replace(b'"exp":', b'"exp":NaN,"x":', 1)
        ),
        "token_malformed",
    ),
    _token(
        "payload-huge-integer",
        "structure",
        lambda f: f.mint(payload=json.dumps(f.user_claims())[:-1].encode() + b',"big":' + b"9" * 5000 + b"}"),
        "token_malformed",
    ),
]

TIME_CASES = [
    _times("expired-an-hour-ago", "token_expired", exp=-3600, iat=-7200, nbf=-7200),
    _times("expired-beyond-leeway", "token_expired", exp=-61, iat=-3661, nbf=-3661),
    _times("not-yet-valid", "token_not_yet_valid", nbf=3600, exp=7200),
    _times("not-yet-valid-beyond-leeway", "token_not_yet_valid", nbf=61, exp=3600),
    _times("iat-in-future", "iat_in_future", iat=3600, exp=7200),
    _times("exp-as-string", "claim_type_invalid", exp="9999999999"),
    _times("exp-as-float-string", "claim_type_invalid", exp="9999999999.0"),
    _times("exp-as-float", "claim_type_invalid", exp=9_999_999_999.5),
    _times("exp-as-bool", "claim_type_invalid", exp=True),
    _times("exp-as-null", "claim_type_invalid", exp=None),
    _times("nbf-as-string", "claim_type_invalid", nbf="0"),
    _times("iat-as-bool", "claim_type_invalid", iat=False),
    _times("exp-missing", "claim_missing", exp=REMOVE),
    _times("nbf-missing", "claim_missing", nbf=REMOVE),
    _times("iat-missing", "claim_missing", iat=REMOVE),
]

CLAIM_CASES = [
    _claims("aud-other-api", "audience_invalid", aud=OTHER_API_APP_ID),
    _claims("aud-graph", "audience_invalid", aud=GRAPH_RESOURCE),
    _claims("aud-list-with-ours", "audience_invalid", aud=[API_APP_ID]),
    _claims("aud-list-with-ours-and-other", "audience_invalid", aud=[OTHER_API_APP_ID, API_APP_ID]),
    _claims("aud-trailing-slash", "audience_invalid", aud=f"{API_APP_ID_URI}/"),
    _claims("aud-upper-case-guid", "audience_invalid", aud=API_APP_ID.upper()),
    _claims("aud-upper-case-uri", "audience_invalid", aud=API_APP_ID_URI.upper()),
    _claims("aud-prefix", "audience_invalid", aud=API_APP_ID[:-1]),
    _claims("aud-missing", "claim_missing", aud=REMOVE),
    _claims("tid-other-tenant-good-iss", "tenant_invalid", tid=OTHER_TENANT_ID),
    _claims("tid-missing", "claim_missing", tid=REMOVE),
    _claims("tid-not-a-string", "tenant_invalid", tid=1),
    _token(
        "iss-other-host",
        "claims",
        lambda f: f.mint_user_token(iss=f"https://login.evil.test/{f.tenant_id}/v2.0"),
        "issuer_invalid",
    ),
    _token(
        "iss-other-tenant",
        "claims",
        lambda f: f.mint_user_token(iss=f"{f.authority}/{OTHER_TENANT_ID}/v2.0"),
        "issuer_invalid",
    ),
    _token(
        "iss-trailing-slash", "claims", lambda f: f.mint_user_token(iss=f"{f.issuer_v2}/"), "issuer_invalid"
    ),
    _token(
        "iss-v1-form-on-v2-token", "claims", lambda f: f.mint_user_token(iss=f.issuer_v1), "issuer_invalid"
    ),
    _token(
        "iss-templated",
        "claims",
        lambda f: f.mint_user_token(iss=f"{f.authority}/{{tenantid}}/v2.0"),
        "issuer_invalid",
    ),
    _claims("iss-missing", "claim_missing", iss=REMOVE),
    _token(
        "v1-token-when-v1-disabled", "claims", lambda f: f.mint_user_token(v1=True), "version_unsupported"
    ),
    _token(
        "v1-app-token-when-v1-disabled", "claims", lambda f: f.mint_app_token(v1=True), "version_unsupported"
    ),
    _claims("ver-unknown", "version_unsupported", ver="3.0"),
    _claims("ver-number", "version_unsupported", ver=2.0),
    _claims("ver-missing", "claim_missing", ver=REMOVE),
    _claims("azp-missing", "claim_missing", azp=REMOVE),
    _claims("azp-not-a-guid", "client_app_invalid", azp="my-spa"),
    _claims("azp-not-a-string", "client_app_invalid", azp=12345),
    _claims("azp-braced-guid", "client_app_invalid", azp="{1c2d3e4f-5a6b-4c7d-8e9f-0a1b2c3d4e5f}"),
    _claims("oid-missing", "claim_missing", oid=REMOVE),
    _claims("oid-not-a-guid", "claim_type_invalid", oid="ada"),
    _claims("sub-missing", "claim_missing", sub=REMOVE),
    _claims("sub-empty", "claim_type_invalid", sub=""),
    _claims("idtyp-app-with-scp", "token_type_ambiguous", app=True, scp="access_as_client"),
    _claims("no-idtyp-no-scp", "token_type_ambiguous", app=True, idtyp=REMOVE),
    _claims("idtyp-user-without-scp", "token_type_ambiguous", scp=REMOVE),
    _claims("idtyp-unknown", "token_type_ambiguous", idtyp="device"),
    _claims("scp-as-list", "claim_type_invalid", scp=["access_as_client"]),
    _claims("roles-as-string", "claim_type_invalid", app=True, roles="Agent.Invoke"),
    _claims("roles-with-non-string", "claim_type_invalid", app=True, roles=["Agent.Invoke", 1]),
]

POLICY_CASES = [
    _claims("user-without-required-scope", "scope_missing", 403, scp="User.Read"),
    _claims("app-without-roles", "role_missing", 403, app=True, roles=REMOVE),
    _claims("app-with-other-role", "role_missing", 403, app=True, roles=["Agent.Read"]),
    _claims("client-not-allowed", "client_not_allowed", 403, azp=OTHER_CLIENT_ID),
]

AUTHORIZATION_HEADER_CASES = [
    _header_case("valid-user-token", lambda f: bearer(f.mint_user_token()), None, 200),
    _header_case("valid-app-token", lambda f: bearer(f.mint_app_token()), None, 200),
    _header_case(
        "valid-with-x5t-header",
        lambda f: bearer(f.mint(header=f.header(x5t=f.signing_kid), payload=f.user_claims())),
        None,
        200,
    ),
    _header_case(
        "scheme-lowercase-bearer",
        lambda f: [(b"authorization", f"bearer {f.mint_user_token()}".encode())],
        None,
        200,
    ),
    _header_case(
        "scheme-uppercase-bearer",
        lambda f: [(b"authorization", f"BEARER {f.mint_user_token()}".encode())],
        None,
        200,
    ),
    _header_case(
        "two-spaces-after-scheme",
        lambda f: [(b"authorization", f"Bearer  {f.mint_user_token()}".encode())],
        None,
        200,
    ),
    _header_case(
        "header-name-mixed-case",
        lambda f: [(b"Authorization", f"Bearer {f.mint_user_token()}".encode())],
        None,
        200,
    ),
    _header_case("no-authorization-header", lambda f: [], "token_missing"),
    _header_case("scheme-basic", lambda f: [(b"authorization", b"Basic dXNlcjpwYXNz")], "invalid_request"),
    _header_case(
        "scheme-basic-with-jwt",
        lambda f: [(b"authorization", f"Basic {f.mint_user_token()}".encode())],
        "invalid_request",
    ),
    _header_case("scheme-only", lambda f: [(b"authorization", b"Bearer")], "invalid_request"),
    _header_case("scheme-and-space-only", lambda f: [(b"authorization", b"Bearer ")], "invalid_request"),
    _header_case("empty-header-value", lambda f: [(b"authorization", b"")], "invalid_request"),
    _header_case(
        "no-space-after-scheme",
        lambda f: [(b"authorization", f"Bearer{f.mint_user_token()}".encode())],
        "invalid_request",
    ),
    _header_case(
        "tab-after-scheme",
        lambda f: [(b"authorization", f"Bearer\t{f.mint_user_token()}".encode())],
        "invalid_request",
    ),
    _header_case(
        "token-without-scheme",
        lambda f: [(b"authorization", f.mint_user_token().encode())],
        "invalid_request",
    ),
    _header_case(
        "two-authorization-headers",
        lambda f: [*bearer(f.mint_user_token()), *bearer(f.mint_app_token())],
        "invalid_request",
    ),
    _header_case(
        "two-authorization-headers-differing-case",
        lambda f: [
            (b"Authorization", f"Bearer {f.mint_user_token()}".encode()),
            *bearer(f.mint_user_token()),
        ],
        "invalid_request",
    ),
    _header_case(
        "comma-joined-values",
        lambda f: [(b"authorization", f"Bearer {f.mint_user_token()}, Bearer {f.mint_app_token()}".encode())],
        "token_malformed",
    ),
    _header_case("trailing-equals", lambda f: bearer(f.mint_user_token() + "="), "token_malformed"),
    _header_case("trailing-space", lambda f: bearer(f.mint_user_token() + " "), "token_malformed"),
    AttackCase(
        "token-in-query-string",
        "authorization-header",
        lambda f: [],
        401,
        "token_missing",
        query=lambda f: {"access_token": f.mint_user_token()},
    ),
]

CASES: tuple[AttackCase, ...] = (
    *ALGORITHM_CASES,
    *KEY_SELECTION_CASES,
    *STRUCTURE_CASES,
    *TIME_CASES,
    *CLAIM_CASES,
    *POLICY_CASES,
    *AUTHORIZATION_HEADER_CASES,
)
CATEGORIES = frozenset(case.category for case in CASES)
