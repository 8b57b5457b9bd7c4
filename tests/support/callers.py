"""Validated callers built directly, for tests of what takes a Caller without a token behind it."""

from __future__ import annotations

from typing import Any

from authz.caller import Caller, CallerKind


def make_caller(**overrides: Any) -> Caller:
    """A user caller with placeholder facts; `overrides` sets any field."""
    fields: dict[str, Any] = {
        "tenant_id": "t",
        "object_id": "o",
        "client_app_id": "c",
        "kind": CallerKind.USER,
        "user_id": "u",
        "display_name": "d",
        "scopes": frozenset({"s"}),
        "roles": frozenset(),
        "token_id": None,
        "expires_at": 0,
        "version": "2.0",
        **overrides,
    }
    return Caller(**fields)
