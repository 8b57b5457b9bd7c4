"""Strict compact-JWS parsing (RFC 7515 §7.1) with no cryptography and no network.

It runs before any key is looked up, so a token refused on its form never costs a JWKS fetch.
"""

from __future__ import annotations

import binascii
import json
import re
from typing import Any, NamedTuple

from authz.errors import TokenRejected

# base64url -> standard alphabet for the C decoder; '+', '/' and '=' become '!' so strict mode refuses them.
_URL_TO_STANDARD = bytes.maketrans(b"-_+/=", b"+/!!!")
_B64URL_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
KID_PATTERN = re.compile(r"[A-Za-z0-9_-]{1,128}")  # Entra kids are 27-character base64url thumbprints
_ALLOWED_HEADER = frozenset({"alg", "typ", "kid", "x5t"})
# Named in the refusal because they are well-known attacks or features lkps deliberately lacks: a key or
# key URL supplied by the token itself, critical extensions, unencoded payloads, compression, encryption,
# nested content, and the Graph-only `nonce`. Any other unknown parameter is refused without naming it.
_KNOWN_FORBIDDEN = frozenset({"jku", "x5u", "jwk", "x5c", "crit", "b64", "zip", "enc", "cty", "nonce"})


class Jws(NamedTuple):
    """A structurally valid, not yet verified, RS256 compact JWS (a NamedTuple: cheapest immutable record)."""

    header: dict[str, Any]
    payload: dict[str, Any]
    signing_input: bytes  # ASCII of `<header>.<payload>`, exactly as signed
    signature: bytes
    kid: str


def b64url_decode(segment: str) -> bytes:
    """Decode unpadded base64url strictly (alphabet only, no '=', canonical final bits); ValueError if not."""
    remainder = len(segment) % 4
    if not segment or remainder == 1:
        raise ValueError("impossible base64url length")
    data = binascii.a2b_base64(
        segment.encode("ascii").translate(_URL_TO_STANDARD) + b"=" * (-len(segment) % 4), strict_mode=True
    )
    # The last character of a 2- or 3-character group carries 4 or 2 unused bits, which must be zero;
    # otherwise several strings decode to the same bytes and a signature could be "re-spelled".
    if remainder and _B64URL_ALPHABET.index(segment[-1]) & (0x0F if remainder == 2 else 0x03):
        raise ValueError("non-canonical base64url")
    return data


def parse_jws(token: str) -> Jws:
    """Split, decode and check the header of a compact JWS; raise `TokenRejected` on any deviation."""
    segments = token.split(".", 5)
    if len(segments) != 3:
        raise TokenRejected(
            "token_malformed",
            "encrypted tokens (JWE) are not accepted"
            if len(segments) == 5
            else "a token has exactly three dot-separated parts",
        )
    header_b64, payload_b64, signature_b64 = segments
    header = _json_object(_decode(header_b64, "header"), "header")
    kid = _checked_kid(header)
    payload = _json_object(_decode(payload_b64, "payload"), "payload")
    signature = _decode(signature_b64, "signature")
    signing_input = f"{header_b64}.{payload_b64}".encode("ascii")
    return Jws(header=header, payload=payload, signing_input=signing_input, signature=signature, kid=kid)


def _decode(segment: str, part: str) -> bytes:
    if not segment:
        raise TokenRejected("token_malformed", f"the token {part} is empty")
    try:
        return b64url_decode(segment)
    except ValueError:
        raise TokenRejected("token_malformed", f"the token {part} is not unpadded base64url") from None


def _object_without_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    # The stdlib keeps the last duplicate silently; a second `aud` or `alg` must not pass unnoticed.
    members = dict(pairs)
    if len(members) != len(pairs):
        raise ValueError("duplicate member")
    return members


def _reject_constant(_: str) -> Any:
    raise ValueError("NaN and Infinity are not JSON")


# Built once: `json.loads` with a hook constructs a new decoder on every call, which is measurable here.
_JSON = json.JSONDecoder(object_pairs_hook=_object_without_duplicates, parse_constant=_reject_constant)


def _json_object(raw: bytes, part: str) -> dict[str, Any]:
    try:
        value = _JSON.decode(raw.decode("utf-8"))
    except (ValueError, RecursionError):  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        raise TokenRejected(
            "token_malformed", f"the token {part} is not UTF-8 JSON without duplicate members"
        ) from None
    if not isinstance(value, dict):
        raise TokenRejected("token_malformed", f"the token {part} is not a JSON object")
    return value


def _checked_kid(header: dict[str, Any]) -> str:
    """Apply the header rules (entra-tokens.md §1.2 step 3) and return the key id."""
    if header.get("alg") != "RS256":
        raise TokenRejected("alg_not_allowed", "only RS256-signed Entra access tokens are accepted")
    for name in header:
        if name not in _ALLOWED_HEADER:
            raise TokenRejected(
                "header_param_forbidden",
                f"the '{name}' header parameter is not accepted"
                if name in _KNOWN_FORBIDDEN
                else "the token header has a parameter lkps does not accept",
            )
    if "typ" in header and header["typ"] != "JWT":
        raise TokenRejected("header_param_forbidden", "the typ header parameter must be JWT when present")
    kid = header.get("kid")
    if not isinstance(kid, str) or KID_PATTERN.fullmatch(kid) is None:
        raise TokenRejected("kid_invalid", "the token header needs a kid of 1 to 128 base64url characters")
    return kid
