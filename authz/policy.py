"""Caller policy: which validated callers may start sessions, register as agents, or administer lkps.

Entra issues a token for lkps's API to any client that has consent (delegated) or any confidential client
in the tenant (app-only, when no role assignment is required), so a valid token alone proves nothing
about permission. Scopes and roles are the tenant admin's grant; the allow-list is lkps's own.
"""

from __future__ import annotations

from dataclasses import dataclass

from authz.caller import Caller, CallerKind
from authz.errors import AccessDenied


@dataclass(frozen=True, slots=True)
class CallerPolicy:
    client_scopes: tuple[str, ...]
    client_roles: tuple[str, ...]
    client_app_ids: tuple[str, ...]
    agent_roles: tuple[str, ...]
    admin_roles: tuple[str, ...] = ()
    admin_client_app_ids: tuple[str, ...] = ()
    admin_scopes: tuple[str, ...] = ()

    def check_session_caller(self, caller: Caller) -> None:
        """Raise AccessDenied unless `caller` may start sessions.

        User tokens need one of the configured scopes (any delegated token for lkps when none is
        configured: Entra only issues those with consent). App-only tokens need one of the configured
        roles, and with no role configured no app may start sessions: fail closed.
        """
        if caller.kind is CallerKind.USER:
            if self.client_scopes and caller.scopes.isdisjoint(self.client_scopes):
                raise AccessDenied(
                    "scope_missing",
                    f"The token lacks a required scope (one of: {', '.join(self.client_scopes)}).",
                )
        elif not self.client_roles:
            raise AccessDenied(
                "app_callers_disabled",
                "App-only callers cannot start sessions here: no client role is configured (LKPS_CLIENT_ROLES).",
            )
        elif caller.roles.isdisjoint(self.client_roles):
            raise AccessDenied(
                "role_missing",
                f"The token lacks a required app role (one of: {', '.join(self.client_roles)}); "
                "ask the lkps owners to assign it to your application.",
            )
        if self.client_app_ids and caller.client_app_id not in self.client_app_ids:
            raise AccessDenied(
                "client_not_allowed",
                f"Client application '{caller.client_app_id}' is not allowed to use this service.",
            )

    def check_agent_caller(self, caller: Caller) -> None:
        """Raise AccessDenied unless `caller` is an app-only token carrying a configured agent role."""
        if caller.kind is not CallerKind.APP:
            raise AccessDenied(
                "app_token_required",
                "Agent registration needs an app-only token (client credentials) of the agent itself.",
            )
        if not self.agent_roles:
            raise AccessDenied(
                "agent_registration_disabled",
                "Agent registration is disabled: no agent role is configured (LKPS_AGENT_ROLES).",
            )
        if caller.roles.isdisjoint(self.agent_roles):
            raise AccessDenied(
                "role_missing",
                f"The token lacks a required app role (one of: {', '.join(self.agent_roles)}); "
                "ask the lkps owners to assign it to your agent's application.",
            )

    def check_admin(self, caller: Caller) -> None:
        """Raise AccessDenied unless `caller` may use the admin API (nothing configured: nobody may).

        An admin role alone is not enough: Entra puts a user's app roles into a delegated token for *any*
        client the user signs in to, so the client must be on the admin allow-list too (an app-only
        caller is its own client), and a delegated token must carry a configured admin scope.
        """
        if not self.admin_roles or not self.admin_client_app_ids:
            raise AccessDenied(
                "admin_disabled",
                "The admin API is disabled: it needs an admin role (LKPS_ADMIN_ROLES) and the client "
                "applications allowed to use it (LKPS_ADMIN_CLIENT_APP_IDS).",
            )
        if caller.client_app_id not in self.admin_client_app_ids:
            raise AccessDenied(
                "admin_client_not_allowed",
                f"Client application '{caller.client_app_id}' may not use the admin API; the lkps owners "
                "list admin clients in LKPS_ADMIN_CLIENT_APP_IDS.",
            )
        if caller.kind is CallerKind.USER:
            if not self.admin_scopes:
                raise AccessDenied(
                    "admin_delegated_disabled",
                    "User tokens cannot use the admin API here: no admin scope is configured "
                    "(LKPS_ADMIN_SCOPES); use the operator application's app-only token.",
                )
            if caller.scopes.isdisjoint(self.admin_scopes):
                raise AccessDenied(
                    "scope_missing",
                    f"The token lacks an admin scope (one of: {', '.join(self.admin_scopes)}).",
                )
        if caller.roles.isdisjoint(self.admin_roles):
            raise AccessDenied(
                "role_missing",
                f"The token lacks an admin app role (one of: {', '.join(self.admin_roles)}); "
                "ask the lkps owners to assign it.",
            )
