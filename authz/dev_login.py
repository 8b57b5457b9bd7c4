"""Browser sign-in for the embedded dev issuer: the authorization code flow with PKCE that MSAL Browser runs.

There is no login page. An authorize request from the dev SPA client, redirecting to a loopback address,
is signed in at once as a demo user (`alice`, or the name in `login_hint`) and sent back with a code, which
the token endpoint redeems only with the matching PKCE verifier, once, within a minute.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlencode, urlsplit

from config.settings import is_loopback_host

CODE_LIFETIME_SECONDS = 60
DEFAULT_USER = "alice"
_USER = re.compile(r"^[a-z][a-z0-9._-]{0,31}$")
_PKCE = re.compile(r"^[A-Za-z0-9._~-]{43,128}$")  # RFC 7636 §4.1 verifier / §4.2 S256 challenge alphabet


class LoginRefused(Exception):
    """A refused authorize or code redemption, as an OAuth error code and description."""

    def __init__(self, error: str, description: str, status: int = 400) -> None:
        super().__init__(description)
        self.error = error
        self.description = description
        self.status = status


@dataclass(frozen=True, slots=True)
class SignIn:
    """Who signed in with a redeemed code, and the nonce the SPA expects in its id token."""

    user: str
    nonce: str | None


@dataclass(frozen=True, slots=True)
class _Grant:
    sign_in: SignIn
    redirect_uri: str
    code_challenge: str
    expires_at: float


class BrowserLogin:
    """Issues and redeems authorization codes for the dev SPA client; thread-safe (the server is threaded)."""

    def __init__(
        self, spa_client_id: str, api_scope: str, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.spa_client_id = spa_client_id
        self.api_scope = api_scope  # the delegated lkps scope an authorize request must ask for
        self._clock = clock
        self._codes: dict[str, _Grant] = {}
        self._lock = threading.Lock()

    def authorize(self, query: dict[str, str]) -> str:
        """The redirect URL carrying a fresh code for MSAL's authorize request `query`; or LoginRefused."""
        if query.get("client_id") != self.spa_client_id:
            raise LoginRefused(
                "unauthorized_client", f"Only the dev SPA client {self.spa_client_id} signs in here."
            )
        redirect_uri = query.get("redirect_uri", "")
        target = urlsplit(redirect_uri)
        if not loopback_url(redirect_uri) or target.fragment:
            raise LoginRefused(
                "invalid_request", "redirect_uri must be an http(s) URL on a loopback address."
            )
        if query.get("response_type") != "code":
            raise LoginRefused("unsupported_response_type", "Only response_type=code is supported.")
        if query.get("code_challenge_method") != "S256" or not _PKCE.match(query.get("code_challenge", "")):
            raise LoginRefused(
                "invalid_request", "PKCE is required: code_challenge with code_challenge_method=S256."
            )
        if self.api_scope not in query.get("scope", "").split():
            raise LoginRefused("invalid_scope", f"Request the scope {self.api_scope}.")
        response_mode = query.get("response_mode", "query")
        if response_mode not in {"query", "fragment"}:
            raise LoginRefused("invalid_request", "response_mode must be query or fragment.")
        grant = _Grant(
            sign_in=SignIn(_user(query.get("login_hint")), query.get("nonce")),
            redirect_uri=redirect_uri,
            code_challenge=query["code_challenge"],
            expires_at=self._clock() + CODE_LIFETIME_SECONDS,
        )
        code = base64.urlsafe_b64encode(os.urandom(32)).decode().rstrip("=")
        with self._lock:
            now = self._clock()
            self._codes = {key: kept for key, kept in self._codes.items() if kept.expires_at > now}
            self._codes[code] = grant
        answer = {"code": code} | ({"state": query["state"]} if "state" in query else {})
        separator = "#" if response_mode == "fragment" else ("&" if target.query else "?")
        return f"{redirect_uri}{separator}{urlencode(answer)}"

    def redeem(self, form: dict[str, str]) -> SignIn:
        """The token endpoint's `authorization_code` grant: who signed in, or LoginRefused (Entra's codes)."""
        with self._lock:
            grant = self._codes.pop(form.get("code", ""), None)  # single use, even when redemption fails
        if form.get("client_id") != self.spa_client_id:
            raise LoginRefused("invalid_client", "Only the dev SPA client redeems codes here.", status=401)
        if grant is None or grant.expires_at <= self._clock():
            raise LoginRefused("invalid_grant", "The code is unknown, used or expired; sign in again.")
        if form.get("redirect_uri") != grant.redirect_uri:
            raise LoginRefused("invalid_grant", "redirect_uri differs from the one of the authorize request.")
        verifier = form.get("code_verifier", "")
        challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).decode().rstrip("=")
        if not _PKCE.match(verifier) or not hmac.compare_digest(challenge, grant.code_challenge):
            raise LoginRefused("invalid_grant", "The PKCE code_verifier does not match the code_challenge.")
        return grant.sign_in


def loopback_url(url: str) -> bool:
    """An http(s) URL on this machine: the only place dev sign-ins and their CORS answers may go."""
    parts = urlsplit(url)
    return parts.scheme in {"http", "https"} and is_loopback_host(parts.hostname)


def _user(login_hint: str | None) -> str:
    """The demo user to sign in: the local part of `login_hint` (`bob` or `bob@...`), else alice."""
    if not login_hint:
        return DEFAULT_USER
    user = login_hint.split("@", 1)[0].lower()
    if not _USER.match(user):
        raise LoginRefused("invalid_request", "login_hint must be a demo user name such as alice or bob.")
    return user
