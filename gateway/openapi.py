"""OpenAPI helpers: document bodies that handlers decode themselves, and the shared error responses."""

from __future__ import annotations

from typing import Any

import msgspec
from litestar.datastructures import CacheControlHeader, ResponseHeader
from litestar.di import Provide
from litestar.openapi.datastructures import ResponseSpec

from gateway.errors import ErrorBody

# Route options for a response that carries a token: no browser, proxy or CDN may keep a copy (RFC 6749
# §5.1 asks the same of OAuth token responses; Pragma is for HTTP/1.0 caches).
NOT_CACHED: dict[str, Any] = {
    "cache_control": CacheControlHeader(no_store=True),
    "response_headers": [
        ResponseHeader(name="Pragma", value="no-cache", description="The response carries a token.")
    ],
}


def documented_body(struct: type[msgspec.Struct]) -> dict[str, Provide]:
    """Dependencies that make Litestar document `struct` as the route's JSON request body.

    Handlers decode bodies themselves, after authentication, so a bad body from an unauthenticated
    caller is a 401, not a 400. Litestar documents a request body from the `data` parameter of any
    dependency in scope; this one is never consumed by a handler and so never runs.
    """

    async def body_schema(data: Any) -> None:  # noqa: ARG001 - exists only to be documented
        return None

    body_schema.__annotations__ = {"data": struct, "return": None}
    return {"body_schema": Provide(body_schema)}


def error_responses(*statuses: int) -> dict[int, ResponseSpec]:
    descriptions = {
        400: "Invalid request body (the message names the field and the fix).",
        401: "Missing or invalid access token (see WWW-Authenticate).",
        403: "Authenticated, but not allowed.",
        404: "Unknown agent or resource.",
        413: "Request body too large.",
        415: "Unsupported content type.",
        429: "Rate limited (see Retry-After).",
        502: "LiveKit could not be reached or refused the call.",
        503: "A dependency is unavailable; retry after Retry-After.",
    }
    return {
        status: ResponseSpec(
            data_container=ErrorBody, description=descriptions[status], generate_examples=False
        )
        for status in statuses
    }
