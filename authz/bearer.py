"""Take the bearer token out of the raw ASGI headers, strictly (RFC 6750 §2.1, RFC 9110 §11.1).

Raw headers are inspected because frameworks comma-join repeated headers, which would hide a second one.
"""

from __future__ import annotations

from collections.abc import Iterable

from authz.errors import TokenRejected

_AUTHORIZATION = b"authorization"
_SCHEME = b"bearer"
# A compact JWS is base64url segments joined by dots; anything else (commas, '=', '+', '/', whitespace,
# control characters) cannot be an Entra token and is refused before any parsing.
_TOKEN_CHARS = bytes(sorted(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.-"))


def check_token_size(token: str | bytes, max_bytes: int) -> None:
    """Refuse an oversized token before anything spends time on it."""
    if len(token) > max_bytes:
        raise TokenRejected(
            "token_too_large", f"the bearer token is longer than the {max_bytes} bytes lkps accepts"
        )


def bearer_token(raw_headers: Iterable[tuple[bytes, bytes]], max_bytes: int) -> str:
    """Return the token of the single `Authorization: Bearer <token>` header or raise `TokenRejected`."""
    values = [value for name, value in raw_headers if name.lower() == _AUTHORIZATION]
    if not values:
        raise TokenRejected(
            "token_missing", "send an Entra access token in an 'Authorization: Bearer <token>' header"
        )
    if len(values) > 1:
        raise TokenRejected("invalid_request", "send exactly one Authorization header")
    scheme, space, rest = values[0].partition(b" ")
    if not space or scheme.lower() != _SCHEME:
        raise TokenRejected(
            "invalid_request",
            "use the Bearer scheme: 'Authorization: Bearer <token>' (one space, then the token)",
        )
    token = rest.lstrip(b" ")
    if not token:
        raise TokenRejected("invalid_request", "the Authorization header has no token after 'Bearer'")
    check_token_size(token, max_bytes)
    if token.translate(None, _TOKEN_CHARS):  # what is left is not a token character (4x cheaper than re)
        raise TokenRejected(
            "token_malformed",
            "the bearer token may only contain letters, digits, '-', '_' and '.' (no padding or whitespace)",
        )
    return token.decode("ascii")
