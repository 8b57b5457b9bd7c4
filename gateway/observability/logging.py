"""structlog configuration: one event per line on stdout (JSON rendered by orjson, or console), exceptions
without frame locals, and secrets masked twice: by field name, and in the rendered line itself. In the
console format every value has its control characters escaped, so no value can forge a line or drive the
terminal."""

from __future__ import annotations

import json
import logging
import re
import sys
import time
from collections.abc import Callable, Iterable, MutableMapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, AnyStr, Generic
from urllib.parse import unquote, urlsplit

import orjson
import structlog

if TYPE_CHECKING:
    from config import Settings

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
_MASK = "[redacted]"
# Shorter configured values are not masked by value: masking "lkps" everywhere would make logs unreadable.
# The URL form of a short password is still masked by its position (`://user:<password>@`).
MIN_MASKED_SECRET_LENGTH = 8
# A bearer credential: the scheme word is kept so the line still says what was masked.
_BEARER = r"(?i)(bearer\s+)[^\s\"'\\,;]+"
# A JWS/JWT compact serialisation: its first segment is base64url JSON, so it starts with `{` -> "ey"/"ew".
_JWT = r"e[wy][A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{2,}\.[A-Za-z0-9_-]*"
# The password of a URL's userinfo (a database or Redis URL in a driver's error message).
_URL_PASSWORD = r"(://[^/\s:@\"']*:)[^/\s@\"']+(?=@)"  # noqa: S105 - a pattern, not a password


# C0 controls, DEL, C1 controls and the Unicode line separators: in a console line each could end the line
# early (the rest passing for another event) or reach the terminal as an escape sequence. JSON escapes C0.
_CONTROLS = [*range(0x20), *range(0x7F, 0xA0), 0x2028, 0x2029]
_ESCAPES = {code: f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}" for code in _CONTROLS}
_ESCAPES |= {ord("\n"): "\\n", ord("\r"): "\\r", ord("\t"): "\\t"}
_ESCAPES_BUT_NEWLINE = {code: escape for code, escape in _ESCAPES.items() if code != ord("\n")}
# Multi-line values the console renderer prints below the event: their lines stay, indented.
_BLOCKS = frozenset({"exception", "stack"})


def escape_controls(text: str) -> str:
    """`text` with every control character written as its backslash escape."""
    return text.translate(_ESCAPES)


class _EscapedRepr:
    """A non-string value, shown as the console renderer would (its repr), with control characters escaped."""

    __slots__ = ("value",)

    def __init__(self, value: object) -> None:
        self.value = value

    def __repr__(self) -> str:
        return escape_controls(repr(self.value))


def escape_console_values(_: Any, __: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """Escape control characters in every value of a console event; a traceback keeps its line breaks, each
    of its lines indented, so that none of them can pass for an event of its own."""
    for key, value in event_dict.items():
        if key in _BLOCKS and isinstance(value, str):
            event_dict[key] = "\n".join(
                f"    {line}" for line in value.translate(_ESCAPES_BUT_NEWLINE).split("\n")
            )
        elif isinstance(value, str):
            event_dict[key] = escape_controls(value)
        else:
            event_dict[key] = _EscapedRepr(value)
    return event_dict


class Timestamp:
    """`timestamp` in UTC as structlog's `TimeStamper(fmt="iso", utc=True)` writes it
    (`2026-01-02T03:04:05.678901Z`, no fraction at a whole second), formatting the date and time once per
    second instead of building a `datetime` for every line."""

    __slots__ = ("_now", "_second")

    def __init__(self, now: Callable[[], float] = time.time) -> None:
        self._now = now
        # One attribute, replaced whole: a line logged on another thread never pairs a second with
        # another second's text.
        self._second: tuple[int, str] = (-1, "")

    def __call__(self, _: Any, __: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
        now = self._now()
        second = int(now)
        micros = round((now - second) * 1_000_000)  # rounded as `datetime.fromtimestamp` rounds
        if micros == 1_000_000:
            second, micros = second + 1, 0
        cached, prefix = self._second
        if second != cached:
            prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
            self._second = (second, prefix)
        event_dict["timestamp"] = f"{prefix}.{micros:06d}Z" if micros else f"{prefix}Z"
        return event_dict


class DirectInfo:
    """Writes an info event from a whole dict through structlog's configured processors and logger, without
    a bound logger's work per call (the lazy proxy, keyword arguments packed three times, the context copy),
    about a third of an access line. The configuration is read on every call, so the line is the one
    `log.info(**event)` would write, in either format and under `structlog.testing.capture_logs`."""

    __slots__ = ("_factory", "_logger")

    def __init__(self) -> None:
        self._factory: Any = None
        self._logger: Any = None

    def __call__(self, event: dict[str, Any]) -> None:
        config = structlog.get_config()
        if not config["wrapper_class"].is_enabled_for(None, logging.INFO):
            return
        factory = config["logger_factory"]
        if factory is not self._factory:
            self._factory, self._logger = factory, factory()
        try:
            for processor in config["processors"]:
                event = processor(self._logger, "info", event)
        except structlog.DropEvent:
            return
        if isinstance(event, dict):  # no renderer configured: the logger takes the fields
            self._logger.info(**event)
        else:
            self._logger.info(event)


def redact_secrets(_: Any, __: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    for key in _SECRET_KEYS.intersection(event_dict):
        event_dict[key] = _MASK
    return event_dict


@dataclass(frozen=True, slots=True)
class _Rules(Generic[AnyStr]):
    """The masking rules in one string type (the JSON renderer produces bytes, the others text)."""

    bearer_words: tuple[AnyStr, AnyStr]  # cheap guards for the case-insensitive pattern
    bearer: re.Pattern[AnyStr]
    jwt: re.Pattern[AnyStr]
    url_password: re.Pattern[AnyStr]
    kept_prefix: AnyStr  # replacement keeping group 1
    mask: AnyStr
    secrets: tuple[AnyStr, ...]

    def apply(self, line: AnyStr) -> AnyStr:
        # Separate guarded scans: one alternation of every rule costs ~24 µs per access line, these ~3 µs.
        for secret in self.secrets:
            if secret in line:
                line = line.replace(secret, self.mask)
        if self.bearer_words[0] in line or self.bearer_words[1] in line:
            line = self.bearer.sub(self.kept_prefix, line)
        if self.jwt.search(line):
            line = self.jwt.sub(self.mask, line)
        if self.url_password.search(line):
            line = self.url_password.sub(self.kept_prefix, line)
        return line


def _escaped(secret: str) -> set[str]:
    """`secret` as each renderer may write it: as is; as orjson escapes it (lkps's JSON lines); as the
    standard library's ASCII-only JSON does (library records); as Python's repr does inside either quote,
    with or without the console format's control-character escapes first (its values)."""
    forms = {secret, orjson.dumps(secret).decode()[1:-1], json.dumps(secret)[1:-1]}
    for text in (secret, escape_controls(secret)):
        python = "".join(repr(character)[1:-1] for character in text)  # a lone quote is never escaped
        forms.update((text, python, python.replace("'", "\\'")))
    return forms


class Redactor:
    """Masks bearer credentials, JWT-shaped strings, URL passwords and the configured secrets in a
    rendered log line, whichever field, message, exception text or library line they came in."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        forms = {
            form for secret in secrets if len(secret) >= MIN_MASKED_SECRET_LENGTH for form in _escaped(secret)
        }
        ordered = sorted(forms, key=len, reverse=True)  # a secret containing another is masked whole
        self.text = _Rules(
            ("earer", "EARER"),
            re.compile(_BEARER),
            re.compile(_JWT),
            re.compile(_URL_PASSWORD),
            rf"\1{_MASK}",
            _MASK,
            tuple(ordered),
        )
        self.bytes = _Rules(
            (b"earer", b"EARER"),
            re.compile(_BEARER.encode()),
            re.compile(_JWT.encode()),
            re.compile(_URL_PASSWORD.encode()),
            rf"\1{_MASK}".encode(),
            _MASK.encode(),
            tuple(form.encode() for form in ordered),
        )

    def __call__(self, line: AnyStr) -> AnyStr:
        if isinstance(line, bytes):
            return self.bytes.apply(line)
        return self.text.apply(line)


class _Redacted:
    """The last processor: render, then mask what the rendered line must not carry."""

    def __init__(self, renderer: Any, redactor: Redactor) -> None:
        self._renderer = renderer
        self._redactor = redactor

    def __call__(self, logger: Any, name: str, event_dict: MutableMapping[str, Any]) -> Any:
        return self._redactor(self._renderer(logger, name, event_dict))


def logged_secrets(settings: Settings) -> tuple[str, ...]:
    """The configured secrets no log line may contain: LiveKit's API secret, lkps's Entra credential, and
    the passwords of the database and Redis URLs."""
    values = [settings.livekit_api_secret]
    if settings.graph is not None:
        values += [settings.graph.client_secret or "", settings.graph.certificate_password or ""]
    for url in (settings.database_url, settings.redis_url or ""):
        password = urlsplit(url).password
        if password:
            values += [password, unquote(password)]
    return tuple(value for value in values if value)


def _before_rendering(fmt: str) -> list[Any]:
    """Tracebacks without frame locals (a frame's locals hold request headers, tokens and secrets), and in
    the console format, where a string is printed as is, every value escaped."""
    if fmt == "console":
        return [structlog.processors.format_exc_info, escape_console_values]
    return [
        structlog.processors.ExceptionRenderer(
            structlog.tracebacks.ExceptionDictTransformer(show_locals=False)
        )
    ]


def configure_logging(level: str = "info", fmt: str = "json", secrets: Iterable[str] = ()) -> None:
    """Configure structlog and route stdlib loggers (granian, sqlalchemy, httpx) through it; `secrets` are
    masked wherever they appear (see `logged_secrets`)."""
    redactor = Redactor(secrets)
    shared: list[Any] = [
        structlog.processors.add_log_level,
        Timestamp(),
        redact_secrets,
    ]
    if fmt == "console":
        console = structlog.dev.ConsoleRenderer(exception_formatter=structlog.dev.plain_traceback)
        renderer: Any = console
        library_renderer: Any = console
        factory: Any = structlog.PrintLoggerFactory(sys.stdout)
    else:
        # The renderer must produce bytes because the factory writes bytes (see ecosystem.md §4.1 pitfall 1).
        renderer = structlog.processors.JSONRenderer(serializer=orjson.dumps)
        library_renderer = structlog.processors.JSONRenderer()  # stdlib handlers write text
        factory = structlog.BytesLoggerFactory(sys.stdout.buffer)
    structlog.configure(
        processors=[*shared, *_before_rendering(fmt), _Redacted(renderer, redactor)],
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
                *_before_rendering(fmt),
                _Redacted(library_renderer, redactor),
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
    # granian's worker logs (e.g. an exception escaping the app) get the same format and masking.
    granian = logging.getLogger("_granian")
    granian.handlers[:] = [handler]
    granian.propagate = False
