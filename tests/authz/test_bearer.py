"""Extraction of the bearer token from raw ASGI headers."""

from __future__ import annotations

import pytest

from authz.bearer import bearer_token
from authz.errors import TokenRejected

TOKEN = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJl"
MAX = 16 * 1024


def reason_of(headers: list[tuple[bytes, bytes]], max_bytes: int = MAX) -> str:
    with pytest.raises(TokenRejected) as caught:
        bearer_token(headers, max_bytes)
    return caught.value.reason


class TestAccepted:
    @pytest.mark.parametrize("scheme", [b"Bearer", b"bearer", b"BEARER", b"bEaReR"])
    def test_scheme_is_case_insensitive(self, scheme: bytes) -> None:
        """The Bearer scheme name matches in any letter case (RFC 9110 §11.1)."""
        assert bearer_token([(b"authorization", scheme + b" " + TOKEN.encode())], MAX) == TOKEN

    def test_several_spaces_after_the_scheme(self) -> None:
        """One or more spaces may separate the scheme from the token."""
        assert bearer_token([(b"authorization", b"Bearer    " + TOKEN.encode())], MAX) == TOKEN

    def test_header_name_is_case_insensitive(self) -> None:
        """A non-lower-case header name is still found."""
        assert bearer_token([(b"AUTHORIZATION", b"Bearer " + TOKEN.encode())], MAX) == TOKEN

    def test_other_headers_are_ignored(self) -> None:
        """Headers other than Authorization play no part."""
        headers = [
            (b"host", b"lkps"),
            (b"authorization", b"Bearer " + TOKEN.encode()),
            (b"x-auth", b"Bearer x"),
        ]
        assert bearer_token(headers, MAX) == TOKEN

    def test_token_of_exactly_the_maximum_length(self) -> None:
        """A token exactly `max_bytes` long is accepted."""
        assert bearer_token([(b"authorization", b"Bearer " + TOKEN.encode())], len(TOKEN)) == TOKEN


class TestRejected:
    def test_no_header_is_token_missing(self) -> None:
        """Without an Authorization header the reason is token_missing (no credentials at all)."""
        assert reason_of([(b"host", b"lkps")]) == "token_missing"

    def test_two_headers_are_invalid_request(self) -> None:
        """Two Authorization headers are refused even when both carry the same token."""
        header = (b"authorization", b"Bearer " + TOKEN.encode())
        assert reason_of([header, header]) == "invalid_request"

    def test_two_headers_with_differing_name_case(self) -> None:
        """Name case does not hide a second Authorization header."""
        assert (
            reason_of([(b"Authorization", b"Bearer a.b.c"), (b"authorization", b"Bearer a.b.c")])
            == "invalid_request"
        )

    @pytest.mark.parametrize(
        "value",
        [
            b"Basic dXNlcjpwYXNz",
            b"Bearer",
            b"Bearer ",
            b"Bearer   ",
            b"",
            b"Bearer" + TOKEN.encode(),
            b"Bearer\t" + TOKEN.encode(),
            TOKEN.encode(),
            b"Token " + TOKEN.encode(),
            b" Bearer " + TOKEN.encode(),
        ],
        ids=[
            "basic",
            "scheme-only",
            "scheme-space",
            "scheme-spaces",
            "empty",
            "no-space",
            "tab",
            "no-scheme",
            "token-scheme",
            "leading-space",
        ],
    )
    def test_malformed_header_is_invalid_request(self, value: bytes) -> None:
        """A wrong scheme, a missing separator or a missing token is an invalid request."""
        assert reason_of([(b"authorization", value)]) == "invalid_request"

    @pytest.mark.parametrize(
        "token",
        [
            TOKEN + "=",
            TOKEN.replace(".", "=.", 1),
            TOKEN + ", Bearer " + TOKEN,
            TOKEN + " ",
            TOKEN.replace(".", ". ", 1),
            TOKEN.replace(".", ".\t", 1),
            TOKEN.replace(".", ".\x00", 1),
            TOKEN.replace(".", ".\x1b", 1),
            TOKEN.replace(".", ".\x7f", 1),
            TOKEN.replace("e", "+", 1),
            TOKEN.replace("e", "/", 1),
            TOKEN.replace("e", "é", 1),
            TOKEN + '"',
        ],
        ids=[
            "trailing-equals",
            "inner-equals",
            "comma-joined",
            "trailing-space",
            "space",
            "tab",
            "nul",
            "esc",
            "del",
            "plus",
            "slash",
            "non-ascii",
            "quote",
        ],
    )
    def test_characters_outside_base64url_and_dot(self, token: str) -> None:
        """Anything but letters, digits, '-', '_' and '.' makes the token malformed."""
        assert reason_of([(b"authorization", b"Bearer " + token.encode())]) == "token_malformed"

    def test_oversized_token_is_refused_before_its_characters_are_inspected(self) -> None:
        """Length is checked first: a huge token of forbidden characters is token_too_large."""
        assert reason_of([(b"authorization", b"Bearer " + b"," * (MAX + 1))]) == "token_too_large"

    def test_one_byte_over_the_limit(self) -> None:
        """A token one byte over `max_bytes` is refused."""
        assert (
            reason_of([(b"authorization", b"Bearer " + TOKEN.encode())], len(TOKEN) - 1) == "token_too_large"
        )

    @pytest.mark.parametrize(
        "value",
        [b"Basic " + TOKEN.encode(), b"Bearer " + TOKEN.encode() + b"=", b"Bearer " + TOKEN.encode() * 1000],
        ids=["scheme", "charset", "size"],
    )
    def test_messages_never_echo_the_token(self, value: bytes) -> None:
        """Refusal messages are fixed text and never quote what the client sent."""
        with pytest.raises(TokenRejected) as caught:
            bearer_token([(b"authorization", value)], MAX)
        assert "eyJ" not in str(caught.value)
        assert caught.value.detail
