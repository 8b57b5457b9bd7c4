"""`GET /metrics`: Prometheus exposition of this process's registry."""

from __future__ import annotations

from typing import Any

from litestar import Request, Response, get
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from gateway.services import services_of


@get("/metrics", include_in_schema=False)
async def metrics(request: Request[Any, Any, Any]) -> Response[bytes]:
    services = services_of(request)
    keys = services.validator
    age = getattr(keys, "age_seconds", None)
    if age is not None:
        services.metrics.jwks_age.set(age)
    return Response(generate_latest(services.metrics.registry), media_type=CONTENT_TYPE_LATEST)
