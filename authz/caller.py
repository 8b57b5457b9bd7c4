"""The validated identity of whoever presented an Entra access token."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class CallerKind(StrEnum):
    USER = "user"  # delegated token (SPA with MSAL): idtyp=user or scp present
    APP = "app"  # app-only token (client credentials): idtyp=app, roles, no scp


@dataclass(frozen=True, slots=True)
class Caller:
    """Facts taken from a token that passed every check; nothing here is caller-chosen after validation."""

    tenant_id: str
    object_id: str  # oid: the user, or the service principal of an app-only caller
    client_app_id: str  # azp (v2) / appid (v1): the calling application's client id
    kind: CallerKind
    user_id: str  # first of LKPS_USER_ID_CLAIMS usable verbatim (else oid); the client id for apps
    display_name: str
    scopes: frozenset[str]
    roles: frozenset[str]
    token_id: str | None  # uti, for correlation in logs only
    expires_at: int  # exp of the presented token (bounds how long this Caller may be cached)
    version: str  # "2.0" or "1.0"

    @property
    def identity(self) -> str:
        """The LiveKit participant identity: the user id, or `app-<client id>` for app-only callers."""
        return self.user_id if self.kind is CallerKind.USER else f"app-{self.client_app_id}"
