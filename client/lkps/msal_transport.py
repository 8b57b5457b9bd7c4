"""What MSAL needs from lkps's client and from lkps's own Graph credential alike.

`MsalSession` pins MSAL's HTTP to one trust store with a timeout; `certificate_credential` turns one PEM
file (key and certificate) into MSAL's certificate credential.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import requests
from cryptography import x509
from cryptography.hazmat.primitives import serialization


class MsalSession(requests.Session):
    """requests for MSAL: the configured CA only and a timeout on every call.

    `trust_env=False` is what keeps REQUESTS_CA_BUNDLE / CURL_CA_BUNDLE (and proxy variables) from replacing
    `verify` (entra-tokens.md §5.2), and requests has no session-wide timeout, hence the override.
    """

    def __init__(self, verify: str | bool, timeout_seconds: float) -> None:
        super().__init__()
        self.trust_env = False
        self.verify = verify
        self._timeout_seconds = timeout_seconds

    def request(self, method: str | bytes, url: str | bytes, *args: Any, **kwargs: Any) -> requests.Response:
        kwargs.setdefault("timeout", self._timeout_seconds)
        return super().request(method, url, *args, **kwargs)


def certificate_credential(path: Path, password: str | None) -> dict[str, Any]:
    """MSAL's certificate form from one PEM file holding the private key and its certificate (plus chain).

    With `public_certificate` MSAL signs PS256 with `x5t#S256` and sends `x5c` (subject name/issuer auth).
    """
    pem = path.read_bytes()
    try:
        key = serialization.load_pem_private_key(pem, password.encode() if password else None)
        certificates = x509.load_pem_x509_certificates(pem)
    except (ValueError, TypeError) as exc:
        raise ValueError(
            f"{path}: expected a PEM file with the private key (encrypted only if a password is set) "
            f"and its certificate ({type(exc).__name__})"
        ) from None
    leaf = next((cert for cert in certificates if cert.public_key() == key.public_key()), None)
    if leaf is None:
        raise ValueError(f"{path}: no certificate in the file matches the private key")
    return {
        "private_key": pem.decode("ascii"),
        "public_certificate": leaf.public_bytes(serialization.Encoding.PEM).decode("ascii"),
        "passphrase": password,
    }
