"""The application factory: `create_app(settings)` builds a ready-to-serve Litestar app; nothing is read
from the environment here, so tests build as many differently configured apps as they need."""

from __future__ import annotations

import gc
import os
from importlib.metadata import version
from typing import Any

import structlog
from litestar import Litestar
from litestar.config.cors import CORSConfig
from litestar.openapi import OpenAPIConfig
from litestar.openapi.spec import Components, SecurityScheme
from opentelemetry.sdk.trace import TracerProvider

from config import Settings
from gateway.body_drain import BodyDrainLayer
from gateway.errors import render_error
from gateway.observability.access import AccessLayer
from gateway.observability.tracing import build_tracer_provider, tracing_plugin
from gateway.openapi import documentation_ui
from gateway.relay.relay import WorkerRelayLayer
from gateway.routes.admin import ADMIN_ROUTES
from gateway.routes.agent import register_agent
from gateway.routes.health import health, live, ready
from gateway.routes.livekit_token import livekit_token
from gateway.routes.metrics import metrics
from gateway.routes.session import start_session
from gateway.routes.session_end import end_session
from gateway.routes.webhook import livekit_webhook
from gateway.routes.worker_api import worker_twirp
from gateway.services import Services, build_services

log = structlog.get_logger("lkps.app")


def create_app(
    settings: Settings, services: Services | None = None, tracer_provider: TracerProvider | None = None
) -> Litestar:
    """Build the app; pass `services` (see `build_services`) to inject fakes at the external seams, and
    `tracer_provider` to trace into something other than the configured OTLP endpoint."""
    services = services or build_services(settings)
    tracer_provider = tracer_provider or build_tracer_provider(settings)

    async def on_startup() -> None:
        try:
            await services.validator.start()
        except Exception as exc:
            # Not fatal: the pod stays unready (readiness reports signing_keys) and retries on demand.
            log.warning("signing_keys_unavailable_at_start", error=str(exc))
        # Start-up objects live for the process; freezing them keeps the GC from rescanning them.
        gc.collect()
        gc.freeze()
        log.info("started", environment=settings.environment, version=version("lkps"), pid=os.getpid())

    async def on_shutdown() -> None:
        if tracer_provider is not None:
            tracer_provider.shutdown()  # flushes the spans still batched
        await services.aclose()
        log.info("stopped")

    ui, ui_assets = documentation_ui()
    app = Litestar(
        route_handlers=[
            ui_assets,
            start_session,
            livekit_token,
            register_agent,
            end_session,
            livekit_webhook,
            worker_twirp,
            *ADMIN_ROUTES,
            health,
            ready,
            live,
            metrics,
        ],
        exception_handlers={Exception: render_error},
        cors_config=cors_config(settings.cors_allowed_origins),
        on_startup=[on_startup],
        on_shutdown=[on_shutdown],
        plugins=[tracing_plugin(tracer_provider)] if tracer_provider is not None else [],
        openapi_config=OpenAPIConfig(
            title="lkps — LiveKit Platform Service",
            version=version("lkps"),
            description="Entra ID to LiveKit token gateway. Every error body is "
            '`{"error": code, "message": text, "request_id": id}`.',
            path="/schema",
            render_plugins=[ui],
            components=Components(
                security_schemes={
                    "entra": SecurityScheme(
                        type="http",
                        scheme="bearer",
                        bearer_format="JWT",
                        description="An Entra ID access token for lkps's API.",
                    ),
                    "livekit_webhook": SecurityScheme(
                        type="apiKey",
                        name="Authorization",
                        security_scheme_in="header",
                        description="The JWT LiveKit signs each webhook with (no Bearer prefix): HS256 with "
                        "the secret of LKPS_LIVEKIT_API_KEY, `sha256` claim over the exact body.",
                    ),
                }
            ),
            security=[{"entra": []}],
        ),
        logging_config=None,
        debug=False,
    )
    app.state.services = services
    # Outermost layer, so it sees every response, including 404s and rendered exceptions.
    app.asgi_handler = AccessLayer(
        WorkerRelayLayer(BodyDrainLayer(app.asgi_handler), services.relay), services.metrics
    )
    return app


def cors_config(origins: tuple[str, ...]) -> CORSConfig | None:
    """Browsers on `origins` may call the API with a bearer token; no cookies, so no credentials mode."""
    if not origins:
        return None
    return CORSConfig(
        allow_origins=list(origins),
        allow_methods=["POST", "DELETE", "OPTIONS"],  # DELETE: a browser app ends its own session
        allow_headers=["Authorization", "Content-Type"],
        allow_credentials=False,
        expose_headers=["X-Request-ID"],
    )


def app_from_env() -> Any:
    """Granian's factory target: settings from the process environment (already validated by the CLI)."""
    from gateway.observability.logging import configure_logging, logged_secrets  # noqa: PLC0415

    settings = Settings.from_env(os.environ)
    configure_logging(settings.log_level, settings.log_format, logged_secrets(settings))
    return create_app(settings)
