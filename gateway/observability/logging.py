"""structlog configuration: one JSON object per line on stdout, rendered by orjson, secrets redacted."""

from __future__ import annotations

import logging
import sys
from collections.abc import MutableMapping
from typing import Any

import orjson
import structlog

# Defence in depth: whatever a future call site passes, these keys never reach a log line.
_SECRET_KEYS = frozenset(
    {
        "authorization",
        "token",
        "access_token",
        "participant_token",
        "agent_token",
        "graph_token",
        "client_secret",
        "client_assertion",
        "secret",
        "api_secret",
        "worker_api_secret",
        "password",
    }
)
_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}


def redact_secrets(_: Any, __: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    for key in _SECRET_KEYS.intersection(event_dict):
        event_dict[key] = "[redacted]"
    return event_dict


def configure_logging(level: str = "info", fmt: str = "json") -> None:
    """Configure structlog and route stdlib loggers (granian, sqlalchemy, httpx) through it."""
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        redact_secrets,
    ]
    if fmt == "console":
        renderer: Any = structlog.dev.ConsoleRenderer()
        factory: Any = structlog.PrintLoggerFactory(sys.stdout)
    else:
        # The renderer must produce bytes because the factory writes bytes (see ecosystem.md §4.1 pitfall 1).
        renderer = structlog.processors.JSONRenderer(serializer=orjson.dumps)
        factory = structlog.BytesLoggerFactory(sys.stdout.buffer)
    structlog.configure(
        processors=[*shared, structlog.processors.dict_tracebacks, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(_LEVELS[level]),
        logger_factory=factory,
        cache_logger_on_first_use=True,
    )
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=shared,
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                structlog.processors.JSONRenderer() if fmt == "json" else structlog.dev.ConsoleRenderer(),
            ],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    # Library chatter (httpx request lines, sqlalchemy) stays at warning unless debugging.
    root.setLevel(_LEVELS[level] if level == "debug" else logging.WARNING)
    # These log request/response internals at debug level; tokens travel in those, so they stay quiet.
    for noisy in ("httpx", "httpcore", "msal", "urllib3", "hpack"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
