"""OpenAPI helpers: document bodies that handlers decode themselves, the shared error responses, and the
documentation UI served from the package (no CDN: the docs work on an air-gapped network)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import msgspec
from litestar.datastructures import CacheControlHeader, ResponseHeader
from litestar.di import Provide
from litestar.openapi.datastructures import ResponseSpec
from litestar.openapi.plugins import SwaggerRenderPlugin
from litestar.router import Router
from litestar.static_files import create_static_files_router

from gateway.errors import ErrorBody

# swagger-ui-dist from npm, vendored by scripts/vendor-openapi-ui; the version is in the URL, so browsers
# may cache the assets for good.
SWAGGER_UI_VERSION = "5.35.0"
UI_ASSETS_PATH = f"/schema/assets/swagger-ui-{SWAGGER_UI_VERSION}"
_UI_ASSETS = Path(__file__).with_name("openapi_ui") / f"swagger-ui-{SWAGGER_UI_VERSION}"

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
        500: "lkps is misconfigured (`configuration_error`: the message names the setting its operators must fix).",
        502: "LiveKit could not be reached or refused the call.",
        503: "A dependency is unavailable; retry after Retry-After.",
    }
    return {
        status: ResponseSpec(
            data_container=ErrorBody, description=descriptions[status], generate_examples=False
        )
        for status in statuses
    }


def documentation_ui() -> tuple[SwaggerRenderPlugin, Router]:
    """The OpenAPI UI at `/schema` (and `/schema/swagger`), and the route that serves its assets."""
    plugin = SwaggerRenderPlugin(
        js_url=f"{UI_ASSETS_PATH}/swagger-ui-bundle.js",
        css_url=f"{UI_ASSETS_PATH}/swagger-ui.css",
        standalone_preset_js_url=f"{UI_ASSETS_PATH}/swagger-ui-standalone-preset.js",
        favicon=f"<link rel='icon' type='image/png' href='{UI_ASSETS_PATH}/favicon-32x32.png'>",
    )
    assets = create_static_files_router(
        path=UI_ASSETS_PATH,
        directories=[_UI_ASSETS],
        include_in_schema=False,
        cache_control=CacheControlHeader(max_age=365 * 86400, public=True),
        name="openapi_ui_assets",
    )
    return plugin, assets
