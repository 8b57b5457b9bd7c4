"""`GET /metrics`: Prometheus exposition of this process's registry."""

from __future__ import annotations

from typing import Any

from litestar import Request, Response, get
from prometheus_client import generate_latest

from gateway.services import services_of

# Prometheus's text format 0.0.4; Litestar adds the `charset` parameter itself to a text/* media type, so
# prometheus_client's CONTENT_TYPE_LATEST (which carries one already) would send it twice.
MEDIA_TYPE = "text/plain; version=0.0.4"


@get("/metrics", include_in_schema=False)
async def metrics(request: Request[Any, Any, Any]) -> Response[bytes]:
    services = services_of(request)
    # Key-cache state is read at scrape time rather than pushed on every refresh.
    age = services.validator.age_seconds
    if age is not None:
        services.metrics.jwks_age.set(age)
    services.metrics.jwks_refreshes.set(services.validator.refresh_count)
    return Response(generate_latest(services.metrics.registry), media_type=MEDIA_TYPE)
