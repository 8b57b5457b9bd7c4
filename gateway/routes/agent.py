"""`POST /api/agent/register`: an agent proves itself with its own app-only token and gets the credentials its
stock LiveKit Agents worker runs with (see gateway/relay/credentials.py); never a LiveKit token."""

from __future__ import annotations

from typing import Any

from litestar import Request, post

from config.settings import is_loopback_host
from gateway.auth import agent_caller
from gateway.errors import ApiError, database_errors, database_unavailable
from gateway.observability.context import context_of
from gateway.openapi import NOT_CACHED, documented_body, error_responses
from gateway.persistence.agents import AgentRevoked, NewRegistration
from gateway.relay.relay import WORKER_PREFIX, websocket_url
from gateway.schemas import AgentRegisterRequest, AgentRegisterResponse, decode_body
from gateway.services import services_of


@post(
    "/api/agent/register",
    status_code=200,
    dependencies=documented_body(AgentRegisterRequest),
    request_max_body_size=16 * 1024,
    **NOT_CACHED,
    responses=error_responses(400, 401, 403, 413, 500, 503),
    operation_id="registerAgent",
    tags=["agents"],
    summary="Register the calling agent",
    description="The agent's client app id is its agent id and the LiveKit agent name it must register its "
    "worker under. Run the worker with LIVEKIT_URL=`worker_url`, LIVEKIT_API_KEY=`worker_api_key`, "
    "LIVEKIT_API_SECRET=`worker_api_secret`: lkps relays it to LiveKit. Call again before `expires_at` to "
    "renew (the worker keeps its credentials), or with `rotate_worker_credentials` to get new ones (the "
    "previous key stays in force for LKPS_WORKER_KEY_GRACE_SECONDS); every call is recorded. A revoked agent "
    "is refused with 403 `agent_revoked`; a deployment without LKPS_PUBLIC_URL answers 500 "
    "`configuration_error` (except to a loopback host).",
)
async def register_agent(request: Request[Any, Any, Any]) -> AgentRegisterResponse:
    caller = await agent_caller(request)
    services = services_of(request)
    ctx = context_of(request.scope)
    body = decode_body(await request.body(), AgentRegisterRequest)
    agent_id = caller.client_app_id
    ctx.fields["agent_id"] = agent_id
    relay_url = worker_url(services.settings.public_url, request)  # before anything is written
    with database_errors("The agent registry could not be read; retry shortly."):
        revoked = await services.registry.revoked(agent_id)
    if revoked:  # refused before any token exists; `register` re-checks atomically for a racing revocation
        raise agent_revoked(agent_id)
    expires_at = int(services.clock.now()) + services.settings.agent_token_ttl_seconds
    try:
        registration = await services.registry.register(
            NewRegistration(
                agent_app_id=agent_id,
                tenant_id=caller.tenant_id,
                requester_object_id=caller.object_id,
                enforce_client_authz=body.enforce_client_authz,
                display_name=body.display_name,
                description=body.description,
                agent_version=body.agent_version,
                request_id=ctx.request_id,
            ),
            expires_at=expires_at,
            rotate_key_grace_seconds=(
                services.settings.worker_key_grace_seconds if body.rotate_worker_credentials else None
            ),
        )
    except AgentRevoked:
        raise agent_revoked(agent_id) from None
    except Exception as exc:
        raise database_unavailable("The registration could not be recorded; retry shortly.", exc) from exc
    ctx.fields["registration_id"] = registration.id
    return AgentRegisterResponse(
        worker_url=relay_url,
        worker_api_key=registration.worker_key_id,
        worker_api_secret=services.credentials.secret(registration.worker_key_id),
        expires_at=expires_at,
        agent_name=agent_id,
        registration_id=registration.id,
        enforce_client_authz=registration.enforce_client_authz,
    )


def worker_url(public_url: str | None, request: Request[Any, Any, Any]) -> str:
    """LKPS_PUBLIC_URL as a websocket URL plus the relay's prefix. Without it, a request to a loopback host
    (`lkps dev`, a local run) names its own base URL; any other host is a proxy's or a pod's address,
    which workers must not be sent to (possibly in plaintext), so the registration fails instead."""
    if public_url is None:
        if not is_loopback_host(request.url.hostname):
            raise public_url_missing()
        public_url = str(request.base_url)
    return websocket_url(public_url) + WORKER_PREFIX


def public_url_missing() -> ApiError:
    # 500, not 503: nothing transient, no retry helps; only an operator can fix it, and the caller did
    # nothing wrong (no 4xx).
    return ApiError(
        500,
        "configuration_error",
        "lkps does not know the URL agents' workers reach it at: its operators must set LKPS_PUBLIC_URL "
        "(e.g. https://lkps.example.com). Nothing was registered.",
        reason="public_url_missing",
    )


def agent_revoked(agent_id: str) -> ApiError:
    return ApiError(
        403,
        "agent_revoked",
        f"Agent '{agent_id}' has been revoked by an lkps administrator and cannot register; "
        "ask the lkps operators to lift the revocation.",
    )
