"""Health endpoints: `live` answers with no I/O (restarts only a wedged process), `ready` reports
whether this replica should receive traffic (database answers at the schema's head revision, signing keys
loaded, not draining). They answer without credentials: the database check is cached for a second, and
the answer names neither the version nor the environment (those are in the `started` log line)."""

from __future__ import annotations

from typing import Any

import msgspec
from litestar import Request, Response, get
from litestar.openapi.datastructures import ResponseSpec

from gateway.services import services_of


class Health(msgspec.Struct):
    status: str
    checks: dict[str, str]


async def _checks(request: Request[Any, Any, Any]) -> dict[str, str]:
    services = services_of(request)
    return {
        "database": await services.database_status.status(),
        "signing_keys": "ok" if services.validator.ready else "unavailable",
        "draining": "yes" if services.draining else "no",
    }


def _report(checks: dict[str, str]) -> Response[Health]:
    healthy = checks["database"] == "ok" and checks["signing_keys"] == "ok" and checks["draining"] == "no"
    body = Health(status="ok" if healthy else "unavailable", checks=checks)
    return Response(body, status_code=200 if healthy else 503, headers={"Cache-Control": "no-store"})


@get(
    "/api/health",
    operation_id="health",
    tags=["health"],
    summary="Service status for people and probes",
    # `[{}]` is OpenAPI for "no credentials": it overrides the document-wide bearer requirement.
    security=[{}],
    responses={503: ResponseSpec(Health, description="Not ready: `checks` names what is failing.")},
)
async def health(request: Request[Any, Any, Any]) -> Response[Health]:
    return _report(await _checks(request))


@get("/api/health/ready", include_in_schema=False)
async def ready(request: Request[Any, Any, Any]) -> Response[Health]:
    return _report(await _checks(request))


@get("/api/health/live", include_in_schema=False)
async def live() -> dict[str, str]:
    return {"status": "ok"}
