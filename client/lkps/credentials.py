"""Entra access tokens for lkps from a backend service or an agent: MSAL client credentials, cached.

One `EntraCredential` per process: MSAL keeps the token in its in-memory cache and only asks Entra again
shortly before it expires, so calling `token()` before every request is cheap.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any, Protocol

import msal

from lkps.errors import CredentialError
from lkps.msal_transport import MsalSession, certificate_credential

DEFAULT_AUTHORITY = "https://login.microsoftonline.com"  # Microsoft's public cloud


class TokenProvider(Protocol):
    """Anything that hands out a current Entra access token for lkps (e.g. a managed identity wrapper)."""

    def token(self) -> str: ...


class EntraCredential:
    """The client credentials flow with a client secret or a certificate (PEM with key and certificate)."""

    def __init__(
        self,
        *,
        tenant_id: str,
        client_id: str,
        scope: str,
        client_secret: str | None = None,
        certificate: Path | None = None,
        certificate_password: str | None = None,
        authority: str = DEFAULT_AUTHORITY,
        ca_bundle: Path | None = None,
        timeout_seconds: float = 10.0,
    ) -> None:
        """`scope` is lkps's App ID URI plus `/.default`; `ca_bundle` replaces the system trust for Entra."""
        self._credential: str | dict[str, Any]
        if client_secret is not None and certificate is None:
            self._credential = client_secret
        elif certificate is not None and client_secret is None:
            self._credential = certificate_credential(certificate, certificate_password)
        else:
            raise ValueError("give exactly one of client_secret and certificate")
        self._client_id = client_id
        authority = authority.rstrip("/")
        self._authority = f"{authority}/{tenant_id}"
        # Any host but Microsoft's public cloud (a national cloud, `lkps dev`) is trusted as configured
        # instead of being validated through login.microsoftonline.com.
        self._instance_discovery = None if authority == DEFAULT_AUTHORITY else False
        # Explicit trust must not be overridden by REQUESTS_CA_BUNDLE from the environment.
        self._http = MsalSession(str(ca_bundle), timeout_seconds) if ca_bundle is not None else None
        self._scopes = [scope]
        self._app: msal.ConfidentialClientApplication | None = None
        self._lock = threading.Lock()

    def token(self) -> str:
        """A valid access token (from MSAL's cache while it lasts); CredentialError if Entra refuses."""
        try:
            result = self._application().acquire_token_for_client(scopes=self._scopes)
        except Exception as exc:  # MSAL raises requests' and its own errors alike when Entra is unreachable
            raise CredentialError(
                f"Entra could not be reached for a token ({type(exc).__name__}: {exc}).",
                status=None,
                code="entra_unreachable",
            ) from exc
        access_token = result.get("access_token") if isinstance(result, dict) else None
        if not isinstance(access_token, str) or not access_token:
            result = result if isinstance(result, dict) else {}
            raise CredentialError(
                str(result.get("error_description") or "Entra returned no access token."),
                status=None,
                code=str(result.get("error") or "no_access_token"),
                request_id=result.get("correlation_id"),
            )
        return access_token

    def _application(self) -> msal.ConfidentialClientApplication:
        # Built on first use: MSAL's constructor already fetches the tenant's metadata.
        with self._lock:
            if self._app is None:
                self._app = msal.ConfidentialClientApplication(
                    self._client_id,
                    client_credential=self._credential,
                    authority=self._authority,
                    instance_discovery=self._instance_discovery,
                    http_client=self._http,
                    token_cache=msal.TokenCache(),
                )
            return self._app
