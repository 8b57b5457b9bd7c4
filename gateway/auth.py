"""Route guards: authenticate the bearer token, then apply the route's caller policy.

Guards run before Litestar resolves the body, so an unauthenticated request is a 401 whatever its body.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from authz.bearer import bearer_token
from authz.caller import Caller
from authz.errors import TokenRejected
from gateway.observability.context import context_of
from gateway.services import services_of

if TYPE_CHECKING:
    from litestar.connection import ASGIConnection
    from litestar.handlers.base import BaseRouteHandler


async def _authenticate(connection: ASGIConnection[Any, Any, Any, Any]) -> Caller:
    services = services_of(connection)
    ctx = context_of(connection.scope)
    try:
        token = bearer_token(connection.scope["headers"], services.settings.max_token_bytes)
        caller = await services.validator.validate(token)
    except TokenRejected as exc:
        services.metrics.token_rejections.labels(exc.reason).inc()
        raise
    ctx.caller = caller
    ctx.fields.update(
        tid=caller.tenant_id, oid=caller.object_id, azp=caller.client_app_id, caller_kind=caller.kind.value
    )
    if caller.token_id:
        ctx.fields["uti"] = caller.token_id
    return caller


async def session_caller(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
    caller = await _authenticate(connection)
    services_of(connection).policy.check_session_caller(caller)


async def agent_caller(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
    caller = await _authenticate(connection)
    services_of(connection).policy.check_agent_caller(caller)


def caller_of(connection: ASGIConnection[Any, Any, Any, Any]) -> Caller:
    caller = context_of(connection.scope).caller
    assert caller is not None, "route is missing its authentication guard"
    return caller
