"""Strict compact-JWS parsing: structure, base64url, JSON and header rules, with no crypto or I/O."""

from __future__ import annotations

import base64
import contextlib
import json
import random
from typing import Any

import pytest

from authz.errors import TokenRejected
from authz.jws import b64url_decode, parse_jws
from tests.support.entra import REMOVE, FakeEntra, b64url, encode_segment, with_overrides

SIGNATURE = b64url(b"\x01" * 256)
PAYLOAD = {"aud": "x", "exp": 1}
DEFAULT: Any = object()


def token(header: Any = DEFAULT, payload: Any = DEFAULT, signature: str = SIGNATURE) -> str:
    header = {"alg": "RS256", "typ": "JWT", "kid": "abc"} if header is DEFAULT else header
    return (
        f"{encode_segment(header)}.{encode_segment(PAYLOAD if payload is DEFAULT else payload)}.{signature}"
    )


def header(**overrides: Any) -> dict[str, Any]:
    return with_overrides({"alg": "RS256", "typ": "JWT", "kid": "abc"}, overrides)


def reason_of(value: str) -> str:
    with pytest.raises(TokenRejected) as caught:
        parse_jws(value)
    return caught.value.reason


class TestBase64url:
    @pytest.mark.parametrize("length", range(1, 8))
    def test_round_trip_of_every_length(self, length: int) -> None:
        """Unpadded base64url of any byte length decodes back to the same bytes."""
        data = bytes(range(200, 200 + length))
        assert b64url_decode(b64url(data)) == data

    @pytest.mark.parametrize(
        "segment",
        ["QQ==", "QQ=", "QUI=", "a+b/", "ab c", "ab\n", "A", "AAAAA", "é"],
        ids=[
            "padding-2",
            "padding-1",
            "padding-3",
            "standard-alphabet",
            "space",
            "newline",
            "one-char",
            "five-chars",
            "non-ascii",
        ],
    )
    def test_rejects_anything_but_strict_unpadded_base64url(self, segment: str) -> None:
        """Padding, the standard alphabet, whitespace and impossible lengths are refused."""
        with pytest.raises(ValueError):
            b64url_decode(segment)

    @pytest.mark.parametrize("segment", ["QR", "QUJ", "Qf"], ids=["2-chars", "3-chars", "2-chars-high"])
    def test_rejects_non_canonical_trailing_bits(self, segment: str) -> None:
        """A final character with unused bits set is refused, so one value has exactly one spelling."""
        assert base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))  # the lenient decoder accepts it
        with pytest.raises(ValueError):
            b64url_decode(segment)


class TestStructure:
    def test_parses_a_well_formed_token(self) -> None:
        """A valid token yields its header, payload, kid, signature bytes and the exact signing input."""
        value = token()
        parsed = parse_jws(value)
        assert parsed.header == {"alg": "RS256", "typ": "JWT", "kid": "abc"}
        assert parsed.payload == PAYLOAD
        assert parsed.kid == "abc"
        assert parsed.signature == b"\x01" * 256
        assert parsed.signing_input == value.rpartition(".")[0].encode()

    @pytest.mark.parametrize("count", [1, 2, 4, 6, 7])
    def test_wrong_segment_count(self, count: int) -> None:
        """Only exactly three segments form a JWS."""
        assert reason_of(".".join(["eyJ9"] * count)) == "token_malformed"

    def test_five_segments_are_refused_as_jwe(self) -> None:
        """A five-part token (JWE) is refused with a message naming encryption."""
        with pytest.raises(TokenRejected) as caught:
            parse_jws(".".join([encode_segment({"alg": "RSA-OAEP", "enc": "A256GCM"})] + ["AAAA"] * 4))
        assert caught.value.reason == "token_malformed"
        assert "JWE" in caught.value.detail

    @pytest.mark.parametrize("index", [0, 1, 2])
    def test_empty_segment(self, index: int) -> None:
        """Each of the three segments must be non-empty."""
        parts = token().split(".")
        parts[index] = ""
        assert reason_of(".".join(parts)) == "token_malformed"

    @pytest.mark.parametrize("index", [0, 1, 2])
    def test_padded_segment(self, index: int) -> None:
        """A padded segment is refused (Entra never pads)."""
        parts = token().split(".")
        parts[index] += "="
        assert reason_of(".".join(parts)) == "token_malformed"


class TestJson:
    @pytest.mark.parametrize(
        "value", [["RS256"], "RS256", 256, None, True], ids=["array", "string", "number", "null", "bool"]
    )
    def test_header_must_be_an_object(self, value: Any) -> None:
        """A header that is valid JSON but not an object is malformed."""
        assert reason_of(token(header=value)) == "token_malformed"

    @pytest.mark.parametrize(
        "value", [["x"], "x", 1, None, False], ids=["array", "string", "number", "null", "bool"]
    )
    def test_payload_must_be_an_object(self, value: Any) -> None:
        """A payload that is valid JSON but not an object is malformed."""
        assert reason_of(token(payload=value)) == "token_malformed"

    @pytest.mark.parametrize(
        ("raw_header", "raw_payload"),
        [
            (b'{"alg":"none","alg":"RS256","kid":"abc"}', b"{}"),
            (b'{"alg":"RS256","kid":"abc","kid":"def"}', b"{}"),
            (b'{"alg":"RS256","kid":"abc"}', b'{"aud":"other","aud":"x"}'),
            (b'{"alg":"RS256","kid":"abc"}', b'{"a":{"b":1,"b":2}}'),
        ],
        ids=["header-alg", "header-kid", "payload-aud", "payload-nested"],
    )
    def test_duplicate_members_are_refused(self, raw_header: bytes, raw_payload: bytes) -> None:
        """A member name appearing twice in any object is refused instead of silently keeping the last."""
        assert reason_of(token(header=raw_header, payload=raw_payload)) == "token_malformed"

    @pytest.mark.parametrize(
        "raw_payload",
        [
            b"[" * 100_000 + b"]" * 100_000,
            b'{"a":' * 5_000 + b"1" + b"}" * 5_000,
            b"\xff\xfe{}",
            b'\xef\xbb\xbf{"a":1}',
            b'{"exp":NaN}',
            b'{"exp":Infinity}',
            b'{"exp":-Infinity}',
            b'{"big":' + b"9" * 5_000 + b"}",
            b'{"a":1}x',
            b"{'a':1}",
        ],
        ids=[
            "deep-arrays",
            "deep-objects",
            "not-utf8",
            "bom",
            "nan",
            "infinity",
            "minus-infinity",
            "huge-int",
            "trailing",
            "single-quotes",
        ],
    )
    def test_hostile_payloads_are_malformed(self, raw_payload: bytes) -> None:
        """Deep nesting, bad encodings, non-JSON constants and oversized numbers are token_malformed."""
        parts = token().split(".")
        parts[1] = b64url(raw_payload)
        assert reason_of(".".join(parts)) == "token_malformed"

    def test_deep_nesting_in_the_header(self) -> None:
        """Recursion exhaustion while parsing the header is token_malformed, not a crash."""
        assert (
            reason_of(token(header=b'{"alg":"RS256","x":' + b"[" * 5_000 + b"]" * 5_000 + b"}"))
            == "token_malformed"
        )


class TestHeader:
    @pytest.mark.parametrize(
        "alg",
        [
            "none",
            "None",
            "NONE",
            "nOnE",
            "HS256",
            "RS384",
            "RS512",
            "PS256",
            "ES256",
            "rs256",
            "RS256 ",
            "",
            None,
            256,
            ["RS256"],
            REMOVE,
        ],
    )
    def test_only_rs256_is_accepted(self, alg: Any) -> None:
        """Any alg other than exactly "RS256" (or none at all) is alg_not_allowed."""
        assert reason_of(token(header=header(alg=alg))) == "alg_not_allowed"

    def test_alg_is_checked_before_anything_else_in_the_header(self) -> None:
        """An alg downgrade is reported as such even when other header rules fail too."""
        assert reason_of(token(header=header(alg="none", jku="https://x", kid=REMOVE))) == "alg_not_allowed"

    @pytest.mark.parametrize(
        "name", ["jku", "x5u", "jwk", "x5c", "crit", "b64", "zip", "enc", "cty", "nonce"]
    )
    def test_known_dangerous_parameters_are_forbidden_by_name(self, name: str) -> None:
        """Key-supplying and processing-changing header parameters are refused and named."""
        with pytest.raises(TokenRejected) as caught:
            parse_jws(token(header=header(**{name: "x"})))
        assert caught.value.reason == "header_param_forbidden"
        assert f"'{name}'" in caught.value.detail

    def test_unknown_parameters_are_forbidden_without_echoing_them(self) -> None:
        """An unknown header parameter is refused and its attacker-chosen name is not repeated."""
        with pytest.raises(TokenRejected) as caught:
            parse_jws(token(header=header(**{"<script>": 1})))
        assert caught.value.reason == "header_param_forbidden"
        assert "<script>" not in caught.value.detail

    @pytest.mark.parametrize("typ", [REMOVE, "JWT"], ids=["absent", "JWT"])
    def test_typ_absent_or_jwt_is_accepted(self, typ: Any) -> None:
        """The typ parameter may be absent or exactly "JWT"."""
        assert parse_jws(token(header=header(typ=typ))).kid == "abc"

    @pytest.mark.parametrize("typ", ["at+jwt", "jwt", "JWE", None, 1])
    def test_other_typ_values_are_refused(self, typ: Any) -> None:
        """Any other typ value is refused."""
        assert reason_of(token(header=header(typ=typ))) == "header_param_forbidden"

    def test_x5t_is_allowed_and_ignored(self) -> None:
        """Entra's legacy x5t thumbprint does not cause a refusal."""
        assert parse_jws(token(header=header(x5t="not-even-the-kid"))).kid == "abc"

    @pytest.mark.parametrize("kid", ["a", "A" * 128, "nOaVdl-X_9Q3s2JnW4Zk1rB7aE0"])
    def test_valid_kids(self, kid: str) -> None:
        """Kids of 1 to 128 base64url characters are accepted."""
        assert parse_jws(token(header=header(kid=kid))).kid == kid

    @pytest.mark.parametrize(
        "kid",
        [
            "",
            "A" * 129,
            "../../dev/null",
            "|sleep 10",
            "x' UNION SELECT '1';--",
            "abc\n",
            "a.b",
            "a=",
            None,
            1,
            ["a"],
            REMOVE,
        ],
    )
    def test_invalid_kids(self, kid: Any) -> None:
        """A missing, non-string, oversized or non-base64url kid is kid_invalid."""
        assert reason_of(token(header=header(kid=kid))) == "kid_invalid"


class TestRobustness:
    def test_random_mutations_only_ever_raise_token_rejected(self) -> None:
        """Thousands of randomly corrupted tokens never raise anything but TokenRejected."""
        valid = FakeEntra().mint_user_token()
        rng = random.Random(20270115)
        alphabet = "ABCxyz019-_.=+/ \x00é{}\"'"
        for _ in range(3_000):
            chars = list(valid)
            for _ in range(rng.randint(1, 4)):
                position = rng.randrange(len(chars))
                operation = rng.random()
                if operation < 0.4:
                    chars[position] = rng.choice(alphabet)
                elif operation < 0.7:
                    del chars[position]
                else:
                    chars.insert(position, rng.choice(alphabet))
            with contextlib.suppress(TokenRejected):
                parse_jws("".join(chars))

    def test_random_json_values_in_every_header_member(self) -> None:
        """jwt_tool-style forced errors (None, True, False, "jwt_tool", 0) in each header member are refused."""
        for name in ("alg", "typ", "kid"):
            values = [None, True, False, 0, [], {}] + (["jwt_tool"] if name != "kid" else [])  # a valid kid
            for value in values:
                with pytest.raises(TokenRejected):
                    parse_jws(token(header=header(**{name: value})))

    def test_payload_json_is_decoded_as_is(self) -> None:
        """The payload dict is exactly the JSON object of the token (no normalisation)."""
        payload = {"scp": "a b", "roles": ["x"], "nested": {"k": [1, 2.5, None]}}
        assert parse_jws(token(payload=json.loads(json.dumps(payload)))).payload == payload
