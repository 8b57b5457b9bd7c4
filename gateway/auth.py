"""Authentication at the top of each handler: the bearer token, then the route's caller policy.

Handlers call these before reading the body, so an unauthenticated request is a 401 whatever its body.
They are plain calls rather than Litestar guards because Litestar copies the route handler object for
every guard invocation (~60 µs a request, measured), which the hot path cannot afford.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from authz.bearer import bearer_token
from authz.caller import Caller
from authz.errors import TokenRejected
from gateway.observability.context import context_of
from gateway.services import Services, services_of

if TYPE_CHECKING:
    from litestar.connection import ASGIConnection
    from litestar.handlers.base import BaseRouteHandler

    Connection = ASGIConnection[Any, Any, Any, Any]


async def authenticate(connection: Connection) -> Caller:
    """The validated caller of this request (any policy); records who it is for the access log."""
    return await authenticate_scope(services_of(connection), connection.scope)


async def authenticate_scope(services: Services, scope: Any) -> Caller:
    """`authenticate` for a request served outside Litestar's router (see gateway.session_http)."""
    ctx = context_of(scope)
    try:
        token = bearer_token(scope["headers"], services.settings.max_token_bytes)
        caller = await services.validator.validate(token)
    except TokenRejected as exc:
        services.metrics.token_rejections.labels(exc.reason).inc()
        raise
    ctx.caller = caller
    fields = ctx.fields
    fields["tid"] = caller.tenant_id
    fields["oid"] = caller.object_id
    fields["azp"] = caller.client_app_id
    fields["caller_kind"] = caller.kind.value
    if caller.token_id:
        fields["uti"] = caller.token_id
    return caller


async def session_caller(connection: Connection) -> Caller:
    """A caller allowed to start sessions (scope or role, client allow-list)."""
    return await session_caller_in(services_of(connection), connection.scope)


async def session_caller_in(services: Services, scope: Any) -> Caller:
    """`session_caller` for a request served outside Litestar's router."""
    caller = await authenticate_scope(services, scope)
    services.policy.check_session_caller(caller)
    return caller


async def agent_caller(connection: Connection) -> Caller:
    """An agent authenticating as itself (app-only token with an agent role)."""
    caller = await authenticate(connection)
    services_of(connection).policy.check_agent_caller(caller)
    return caller


async def admin_caller(connection: Connection) -> Caller:
    """A caller with an admin app role (LKPS_ADMIN_ROLES)."""
    caller = await authenticate(connection)
    services_of(connection).policy.check_admin(caller)
    return caller


async def admin_guard(connection: Connection, _: BaseRouteHandler) -> None:
    """Guard form of `admin_caller`: the admin API is off the hot path."""
    await admin_caller(connection)


def caller_of(connection: Connection) -> Caller:
    caller = context_of(connection.scope).caller
    assert caller is not None, "route handler did not authenticate"
    return caller
