"""Typed, frozen settings parsed once from the environment (12-factor).

Every problem is collected and reported together (oauth2-proxy style), so an operator fixes a broken
deployment in one round instead of one variable per restart. Secrets may come from `<NAME>_FILE`.
"""

from __future__ import annotations

import ipaddress
import re
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar
from urllib.parse import urlsplit

T = TypeVar("T")

DEFAULT_AUTHORITY = "https://login.microsoftonline.com"
DEFAULT_GRAPH_URL = "https://graph.microsoft.com"
DEFAULT_DATABASE_URL = "sqlite+aiosqlite:///./lkps.db"
MIN_LIVEKIT_SECRET_LENGTH = 32  # LiveKit refuses shorter secrets outside its --dev mode.
MAX_LEEWAY_SECONDS = 300  # IdentityModel's default clock skew is the most any Entra validator allows.
DEFAULT_RETENTION_DAYS = 90
MAX_RETENTION_DAYS = 3650
_CLAIM_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,99}$")
_TOKEN_WORD = re.compile(
    r"^[!#-\[\]-~]{1,256}$"
)  # a scope or role value: printable, no space/quote/backslash


class ConfigError(Exception):
    """The environment does not describe a usable lkps; `problems` lists every reason at once."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("invalid configuration:\n" + "\n".join(f"  - {p}" for p in problems))


@dataclass(frozen=True, slots=True)
class GraphCredential:
    """How lkps authenticates to Entra to read Microsoft Graph (exactly one form is set)."""

    client_id: str
    client_secret: str | None = field(default=None, repr=False)
    certificate_path: Path | None = None
    certificate_password: str | None = field(default=None, repr=False)
    federated_token_file: Path | None = None


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything lkps needs at run time; built by `Settings.from_env` or directly in tests."""

    entra_tenant_id: str
    entra_audiences: tuple[str, ...]
    livekit_url: str
    livekit_api_key: str
    livekit_api_secret: str = field(repr=False)
    entra_authority: str = DEFAULT_AUTHORITY
    entra_ca_bundle: Path | None = None
    entra_allow_v1: bool = False
    entra_leeway_seconds: int = 60
    entra_jwks_ttl_seconds: int = 12 * 3600
    entra_jwks_refresh_cooldown_seconds: float = 60.0
    entra_jwks_max_stale_seconds: int = 24 * 3600
    entra_http_timeout_seconds: float = 5.0
    max_token_bytes: int = 16 * 1024
    verified_token_cache_size: int = 10_000
    user_id_claims: tuple[str, ...] = ("cwid", "oid")
    client_roles: tuple[str, ...] = ()
    client_scopes: tuple[str, ...] = ()
    client_app_ids: tuple[str, ...] = ()
    agent_roles: tuple[str, ...] = ()
    participant_token_ttl_seconds: int = 600
    agent_token_ttl_seconds: int = 3600
    agent_cache_ttl_seconds: float = 1.0
    database_url: str = field(default=DEFAULT_DATABASE_URL, repr=False)
    database_pool_size: int = 10
    database_pool_timeout_seconds: float = 5.0
    session_batch_max: int = 256
    graph: GraphCredential | None = None
    graph_url: str = DEFAULT_GRAPH_URL
    graph_scope_value: str = "access_as_client"
    graph_cache_ttl_seconds: int = 300
    graph_cache_max_stale_seconds: int = 3600
    graph_negative_ttl_seconds: int = 60
    log_level: str = "info"
    log_format: str = "json"
    environment: str = "default"
    rate_limit_per_minute: int = 3000
    rate_limit_burst: int = 100
    user_rate_limit_per_minute: int = 30
    user_rate_limit_burst: int = 10
    redis_url: str | None = field(default=None, repr=False)
    otel_exporter_endpoint: str | None = None
    otel_service_name: str = "lkps"
    cors_allowed_origins: tuple[str, ...] = ()
    livekit_api_url: str | None = None  # LiveKit's server API; None: derived from livekit_url
    livekit_api_timeout_seconds: float = 5.0
    admin_roles: tuple[str, ...] = ()
    admin_client_app_ids: tuple[str, ...] = ()
    admin_scopes: tuple[str, ...] = ()
    retention_days: int = DEFAULT_RETENTION_DAYS
    public_url: str | None = None  # lkps's own base URL as workers reach it; None: from a loopback request
    worker_check_interval_seconds: float = 2.0
    worker_refusal_hold_seconds: float = 30.0
    worker_max_connections_per_agent: int = 100
    worker_handshakes_per_minute: int = 120
    worker_key_grace_seconds: int = 3600
    # The LiveKit secret before a rotation: worker secrets derived from it stay valid while it is set.
    livekit_previous_api_secret: str | None = field(default=None, repr=False)

    @property
    def authority_host(self) -> str:
        return self.entra_authority.rstrip("/")

    @property
    def is_postgres(self) -> bool:
        return self.database_url.startswith("postgresql")

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> Settings:
        """Parse and validate every `LKPS_*` variable; raise `ConfigError` listing all problems."""
        return _Parser(environ).parse()


def database_url_from_env(environ: Mapping[str, str]) -> str:
    """Only the database URL, for `lkps migrate`: the migration job needs no other secret."""
    parser = _Parser(environ)
    url = parser.database_url()
    if parser.problems:
        raise ConfigError(parser.problems)
    return url


def retention_from_env(environ: Mapping[str, str]) -> tuple[str, int]:
    """Only the database URL and retention period, for `lkps prune`: the CronJob needs nothing else."""
    parser = _Parser(environ)
    url = parser.database_url()
    days = parser.retention_days()
    if parser.problems:
        raise ConfigError(parser.problems)
    return url, days


def is_guid(value: str) -> bool:
    try:
        parsed = uuid.UUID(value)
    except ValueError:
        return False
    return str(parsed) == value.lower() and len(value) == 36


def is_loopback_host(host: str | None) -> bool:
    if not host:
        return False
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class _Parser:
    """Reads variables, records problems instead of raising, and builds `Settings` at the end."""

    def __init__(self, environ: Mapping[str, str]) -> None:
        self.env = environ
        self.problems: list[str] = []

    def raw(self, name: str) -> str | None:
        value = self.env.get(name)
        return None if value is None or value.strip() == "" else value.strip()

    def secret(self, name: str) -> str | None:
        """A secret from `NAME` or from the file named by `NAME_FILE` (never both)."""
        direct, file_name = self.raw(name), self.raw(f"{name}_FILE")
        if direct is not None and file_name is not None:
            self.problems.append(f"{name} and {name}_FILE are both set; set only one")
            return None
        if file_name is None:
            return direct
        try:
            content = Path(file_name).read_text(encoding="utf-8").strip()
        except OSError as exc:
            self.problems.append(f"{name}_FILE: cannot read {file_name!r} ({exc.strerror or exc})")
            return None
        if not content:
            self.problems.append(f"{name}_FILE: {file_name!r} is empty")
            return None
        return content

    def required(self, name: str, *, secret: bool = False) -> str:
        known = len(self.problems)
        value = self.secret(name) if secret else self.raw(name)
        if value is None and len(self.problems) == known:  # a bad _FILE is reported once, by secret()
            hint = f" (or {name}_FILE)" if secret else ""
            self.problems.append(f"{name}{hint} is required")
        return value or ""

    def number(self, name: str, default: T, convert: Callable[[str], T], low: float, high: float) -> T:
        text = self.raw(name)
        if text is None:
            return default
        try:
            value = convert(text)
        except ValueError:
            self.problems.append(f"{name}: {text!r} is not a number")
            return default
        if not low <= float(value) <= high:  # type: ignore[arg-type]
            self.problems.append(f"{name}: {text} is out of range [{low:g}, {high:g}]")
            return default
        return value

    def boolean(self, name: str, *, default: bool) -> bool:
        text = self.raw(name)
        if text is None:
            return default
        lowered = text.lower()
        if lowered in {"1", "true", "yes", "on"}:
            return True
        if lowered in {"0", "false", "no", "off"}:
            return False
        self.problems.append(f"{name}: {text!r} is not a boolean (use true or false)")
        return default

    def words(
        self, name: str, default: tuple[str, ...] = (), pattern: re.Pattern[str] = _TOKEN_WORD
    ) -> tuple[str, ...]:
        text = self.raw(name)
        if text is None:
            return default
        items = tuple(part.strip() for part in text.split(",") if part.strip())
        bad = [item for item in items if not pattern.match(item)]
        if bad:
            self.problems.append(f"{name}: invalid value(s) {', '.join(map(repr, bad))}")
        return items

    def guids(self, name: str) -> tuple[str, ...]:
        items = self.words(name)
        bad = [item for item in items if not is_guid(item)]
        if bad:
            self.problems.append(f"{name}: not lowercase GUIDs: {', '.join(map(repr, bad))}")
        return tuple(item.lower() for item in items)

    def existing_file(self, name: str) -> Path | None:
        text = self.raw(name)
        if text is None:
            return None
        path = Path(text)
        if not path.is_file():
            self.problems.append(f"{name}: {text!r} is not a readable file")
        return path

    def https_url(self, name: str, default: str) -> str:
        text = self.raw(name) or default
        parts = urlsplit(text)
        if parts.scheme != "https" or not parts.hostname:
            self.problems.append(f"{name}: {text!r} must be an https:// URL")
        elif parts.query or parts.fragment:
            self.problems.append(f"{name}: {text!r} must not carry a query or fragment")
        return text.rstrip("/")

    def parse(self) -> Settings:  # noqa: C901 - one linear pass over the contract reads best
        tenant = self.required("LKPS_ENTRA_TENANT_ID")
        if tenant and not is_guid(tenant):
            self.problems.append(
                f"LKPS_ENTRA_TENANT_ID: {tenant!r} must be the tenant GUID in lowercase "
                "(multi-tenant values such as 'common' or 'organizations' are not accepted)"
            )
        authority = self.https_url("LKPS_ENTRA_AUTHORITY", DEFAULT_AUTHORITY)
        # Entra writes the client id in lowercase; an uppercase one configured would never match.
        audiences = tuple(aud.lower() if is_guid(aud) else aud for aud in self.words("LKPS_ENTRA_AUDIENCES"))
        if not audiences:
            self.problems.append("LKPS_ENTRA_AUDIENCES is required (the App ID URI and/or client id of lkps)")
        if any("*" in aud for aud in audiences):
            self.problems.append("LKPS_ENTRA_AUDIENCES: wildcards are not allowed")
        elif audiences and not any(is_guid(aud) for aud in audiences):
            self.problems.append(
                "LKPS_ENTRA_AUDIENCES lists no GUID, but Entra v2.0 access tokens carry lkps's "
                "application (client) id in aud, so every v2.0 token would be refused; add lkps's client id "
                "(keep the App ID URI for v1.0 tokens)"
            )

        livekit_url = self.required("LKPS_LIVEKIT_URL")
        if livekit_url:
            parts = urlsplit(livekit_url)
            if parts.scheme not in {"wss", "https", "ws", "http"} or not parts.hostname:
                self.problems.append(f"LKPS_LIVEKIT_URL: {livekit_url!r} must be a wss:// or https:// URL")
            elif parts.scheme in {"ws", "http"} and not self.plaintext_allowed(parts.hostname):
                self.problems.append(
                    f"LKPS_LIVEKIT_URL: {livekit_url!r} is plaintext to a non-loopback host; clients would send "
                    "their tokens unencrypted. Use wss:// or set LKPS_ALLOW_PLAINTEXT_LIVEKIT_URL=true"
                )
        api_key = self.required("LKPS_LIVEKIT_API_KEY", secret=True)
        api_secret = self.required("LKPS_LIVEKIT_API_SECRET", secret=True)
        if api_secret and len(api_secret) < MIN_LIVEKIT_SECRET_LENGTH:
            self.problems.append(
                f"LKPS_LIVEKIT_API_SECRET must be at least {MIN_LIVEKIT_SECRET_LENGTH} characters "
                "(LiveKit refuses shorter secrets)"
            )

        user_id_claims = self.words("LKPS_USER_ID_CLAIMS", ("cwid", "oid"), _CLAIM_NAME)
        if "oid" not in user_id_claims:
            user_id_claims = (*user_id_claims, "oid")

        database_url = self.database_url()

        graph = self._graph_credential()
        log_format = (self.raw("LKPS_LOG_FORMAT") or "json").lower()
        if log_format not in {"json", "console"}:
            self.problems.append(f"LKPS_LOG_FORMAT: {log_format!r} must be json or console")
        log_level = (self.raw("LKPS_LOG_LEVEL") or "info").lower()
        if log_level not in {"debug", "info", "warning", "error"}:
            self.problems.append(f"LKPS_LOG_LEVEL: {log_level!r} must be debug, info, warning or error")

        client_rate, user_rate = self.rate_limits()
        client_scopes = self.words("LKPS_CLIENT_SCOPES")
        settings = Settings(
            entra_tenant_id=tenant.lower(),
            entra_audiences=audiences,
            livekit_url=livekit_url,
            livekit_api_key=api_key,
            livekit_api_secret=api_secret,
            entra_authority=authority,
            entra_ca_bundle=self.existing_file("LKPS_ENTRA_CA_BUNDLE"),
            entra_allow_v1=self.boolean("LKPS_ENTRA_ALLOW_V1", default=False),
            entra_leeway_seconds=self.number("LKPS_ENTRA_CLOCK_SKEW_SECONDS", 60, int, 0, MAX_LEEWAY_SECONDS),
            entra_jwks_ttl_seconds=self.number("LKPS_ENTRA_JWKS_TTL_SECONDS", 12 * 3600, int, 300, 7 * 86400),
            entra_jwks_refresh_cooldown_seconds=self.number(
                "LKPS_ENTRA_JWKS_REFRESH_COOLDOWN_SECONDS", 60.0, float, 1, 3600
            ),
            entra_jwks_max_stale_seconds=self.number(
                "LKPS_ENTRA_JWKS_MAX_STALE_SECONDS", 24 * 3600, int, 300, 7 * 86400
            ),
            entra_http_timeout_seconds=self.number("LKPS_ENTRA_HTTP_TIMEOUT_SECONDS", 5.0, float, 0.1, 60),
            max_token_bytes=self.number("LKPS_MAX_TOKEN_BYTES", 16 * 1024, int, 1024, 256 * 1024),
            verified_token_cache_size=self.number(
                "LKPS_VERIFIED_TOKEN_CACHE_SIZE", 10_000, int, 0, 1_000_000
            ),
            user_id_claims=user_id_claims,
            client_roles=self.words("LKPS_CLIENT_ROLES"),
            client_scopes=client_scopes,
            client_app_ids=self.guids("LKPS_CLIENT_APP_IDS"),
            agent_roles=self.words("LKPS_AGENT_ROLES"),
            participant_token_ttl_seconds=self.number(
                "LKPS_PARTICIPANT_TOKEN_TTL_SECONDS", 600, int, 60, 86400
            ),
            agent_token_ttl_seconds=self.number("LKPS_AGENT_TOKEN_TTL_SECONDS", 3600, int, 300, 86400),
            agent_cache_ttl_seconds=self.number("LKPS_AGENT_CACHE_TTL_SECONDS", 1.0, float, 0, 60),
            database_url=database_url,
            database_pool_size=self.number("LKPS_DATABASE_POOL_SIZE", 10, int, 1, 200),
            database_pool_timeout_seconds=self.number(
                "LKPS_DATABASE_POOL_TIMEOUT_SECONDS", 5.0, float, 0.1, 60
            ),
            session_batch_max=self.number("LKPS_SESSION_BATCH_MAX", 256, int, 1, 5000),
            graph=graph,
            graph_url=self.https_url("LKPS_GRAPH_URL", DEFAULT_GRAPH_URL),
            graph_scope_value=(self.words("LKPS_GRAPH_SCOPE_VALUE", ("access_as_client",)) or ("",))[0],
            graph_cache_ttl_seconds=self.number("LKPS_GRAPH_CACHE_TTL_SECONDS", 300, int, 1, 86400),
            graph_cache_max_stale_seconds=self.number(
                "LKPS_GRAPH_CACHE_MAX_STALE_SECONDS", 3600, int, 0, 7 * 86400
            ),
            graph_negative_ttl_seconds=self.number("LKPS_GRAPH_NEGATIVE_TTL_SECONDS", 60, int, 1, 3600),
            log_level=log_level,
            log_format=log_format,
            environment=self.raw("LKPS_ENVIRONMENT") or "default",
            rate_limit_per_minute=client_rate,
            rate_limit_burst=self.number("LKPS_RATE_LIMIT_BURST", 100, int, 0, 100_000),
            user_rate_limit_per_minute=user_rate,
            user_rate_limit_burst=self.number("LKPS_USER_RATE_LIMIT_BURST", 10, int, 0, 100_000),
            redis_url=self.redis_url(),
            otel_exporter_endpoint=self.otel_endpoint(),
            otel_service_name=self.raw("LKPS_OTEL_SERVICE_NAME") or "lkps",
            cors_allowed_origins=self.origins("LKPS_CORS_ALLOWED_ORIGINS"),
            livekit_api_url=self.livekit_api_url(),
            livekit_api_timeout_seconds=self.number("LKPS_LIVEKIT_API_TIMEOUT_SECONDS", 5.0, float, 0.1, 60),
            admin_roles=self.words("LKPS_ADMIN_ROLES"),
            admin_client_app_ids=self.guids("LKPS_ADMIN_CLIENT_APP_IDS"),
            admin_scopes=self.words("LKPS_ADMIN_SCOPES") or client_scopes,
            retention_days=self.retention_days(),
            public_url=self.public_url(),
            # At most 4 s: a revocation must close live worker connections within 5 s on every replica.
            worker_check_interval_seconds=self.number(
                "LKPS_WORKER_CHECK_INTERVAL_SECONDS", 2.0, float, 0.1, 4
            ),
            worker_refusal_hold_seconds=self.number("LKPS_WORKER_REFUSAL_HOLD_SECONDS", 30.0, float, 1, 600),
            worker_max_connections_per_agent=self.number(
                "LKPS_WORKER_MAX_CONNECTIONS_PER_AGENT", 100, int, 1, 100_000
            ),
            worker_handshakes_per_minute=self.number(
                "LKPS_WORKER_HANDSHAKES_PER_MINUTE", 120, int, 1, 100_000
            ),
            worker_key_grace_seconds=self.number("LKPS_WORKER_KEY_GRACE_SECONDS", 3600, int, 0, 7 * 86400),
            livekit_previous_api_secret=self.previous_livekit_secret(api_secret),
        )
        if self.problems:
            raise ConfigError(self.problems)
        return settings

    def previous_livekit_secret(self, current: str) -> str | None:
        """The LiveKit secret before a rotation, whose worker secrets stay valid while it is set."""
        previous = self.secret("LKPS_LIVEKIT_PREVIOUS_API_SECRET")
        if previous is not None and previous == current:
            self.problems.append(
                "LKPS_LIVEKIT_PREVIOUS_API_SECRET equals LKPS_LIVEKIT_API_SECRET; set it to the secret before "
                "the rotation, or unset it once every worker runs with its new secret"
            )
        return previous

    def rate_limits(self) -> tuple[int, int]:
        """(per client, per user and client) session starts a minute; the client's is the ceiling above."""
        client = self.number("LKPS_RATE_LIMIT_PER_MINUTE", 3000, int, 0, 1_000_000)
        user = self.number("LKPS_USER_RATE_LIMIT_PER_MINUTE", 30, int, 0, 1_000_000)
        if client and user > client:
            self.problems.append(
                f"LKPS_USER_RATE_LIMIT_PER_MINUTE ({user}) is above LKPS_RATE_LIMIT_PER_MINUTE ({client}), the "
                "ceiling all users of one client application share; lower it or raise the ceiling"
            )
        return client, user

    def origins(self, name: str) -> tuple[str, ...]:
        """Exact browser origins (`scheme://host[:port]`), lower-cased as browsers send them."""
        items = tuple(item.lower() for item in self.words(name))
        if any("*" in item for item in items):
            self.problems.append(
                f"{name}: wildcards are not allowed; list each origin that may call lkps from a browser "
                "(for example https://app.example.com)"
            )
            return ()
        for item in items:
            parts = urlsplit(item)
            if (
                parts.scheme not in {"http", "https"}
                or not parts.hostname
                or "@" in parts.netloc
                or item != f"{parts.scheme}://{parts.netloc}"
            ):
                self.problems.append(
                    f"{name}: {item!r} is not an origin; write scheme://host[:port] with no path, "
                    "for example https://app.example.com"
                )
        return items

    def plaintext_allowed(self, host: str | None) -> bool:
        """Plaintext to LiveKit only on loopback, or with the explicit opt-in."""
        return is_loopback_host(host) or self.boolean("LKPS_ALLOW_PLAINTEXT_LIVEKIT_URL", default=False)

    def livekit_api_url(self) -> str | None:
        """LiveKit's server API (Twirp), when it is not reachable at LKPS_LIVEKIT_URL (e.g. in-cluster)."""
        name = "LKPS_LIVEKIT_API_URL"
        text = self.raw(name)
        if text is None:
            return None
        parts = urlsplit(text)
        if parts.scheme not in {"https", "http"} or not parts.hostname:
            self.problems.append(f"{name}: {text!r} must be an https:// URL")
        elif parts.query or parts.fragment:
            self.problems.append(f"{name}: {text!r} must not carry a query or fragment")
        elif parts.scheme == "http" and not self.plaintext_allowed(parts.hostname):
            self.problems.append(
                f"{name}: {text!r} is plaintext to a non-loopback host; lkps's server API tokens would travel "
                "unencrypted. Use https:// or set LKPS_ALLOW_PLAINTEXT_LIVEKIT_URL=true"
            )
        return text.rstrip("/")

    def public_url(self) -> str | None:
        """lkps's public base URL (the worker URL is it plus /worker): https, or http on loopback only."""
        name = "LKPS_PUBLIC_URL"
        text = self.raw(name)
        if text is None:
            return None
        parts = urlsplit(text)
        if parts.scheme not in {"https", "http"} or not parts.hostname:
            self.problems.append(f"{name}: {text!r} must be an https:// URL (lkps as workers reach it)")
        elif parts.query or parts.fragment:
            self.problems.append(f"{name}: {text!r} must not carry a query or fragment")
        elif parts.scheme == "http" and not is_loopback_host(parts.hostname):
            self.problems.append(
                f"{name}: {text!r} is plaintext to a non-loopback host; workers would send their handshake "
                "tokens unencrypted. Use https://"
            )
        return text.rstrip("/")

    def retention_days(self) -> int:
        return self.number("LKPS_RETENTION_DAYS", DEFAULT_RETENTION_DAYS, int, 1, MAX_RETENTION_DAYS)

    def otel_endpoint(self) -> str | None:
        text = self.raw("LKPS_OTEL_EXPORTER_OTLP_ENDPOINT")
        if text is None:
            return None
        parts = urlsplit(text)
        if parts.scheme not in {"http", "https"} or not parts.hostname:
            self.problems.append(f"LKPS_OTEL_EXPORTER_OTLP_ENDPOINT: {text!r} must be an http(s) URL")
        return text.rstrip("/")

    def redis_url(self) -> str | None:
        url = self.secret("LKPS_REDIS_URL")
        if url is not None and not url.startswith(("redis://", "rediss://", "unix://")):
            self.problems.append("LKPS_REDIS_URL must start with redis://, rediss:// or unix://")
        return url

    def database_url(self) -> str:
        url = self.secret("LKPS_DATABASE_URL") or DEFAULT_DATABASE_URL
        if not url.startswith(("sqlite+aiosqlite://", "postgresql+asyncpg://")):
            self.problems.append(
                "LKPS_DATABASE_URL must start with sqlite+aiosqlite:// or postgresql+asyncpg://"
            )
            return url
        from sqlalchemy.engine import make_url  # noqa: PLC0415 - only where a database is configured

        try:
            make_url(url).port  # noqa: B018 - parsing the port is what refuses `host:notaport`
        except ValueError as exc:  # sqlalchemy's ArgumentError is a ValueError too
            self.problems.append(f"LKPS_DATABASE_URL is not a valid URL ({exc})")
        return url

    def _graph_credential(self) -> GraphCredential | None:
        client_id = self.raw("LKPS_ENTRA_CLIENT_ID")
        secret = self.secret("LKPS_ENTRA_CLIENT_SECRET")
        certificate = self.existing_file("LKPS_ENTRA_CLIENT_CERTIFICATE")
        federated = self.raw("LKPS_ENTRA_FEDERATED_TOKEN_FILE")
        given = [
            name
            for name, value in (
                ("LKPS_ENTRA_CLIENT_SECRET", secret),
                ("LKPS_ENTRA_CLIENT_CERTIFICATE", certificate),
                ("LKPS_ENTRA_FEDERATED_TOKEN_FILE", federated),
            )
            if value is not None
        ]
        if client_id is None:
            if given:
                self.problems.append(f"{given[0]} is set but LKPS_ENTRA_CLIENT_ID is not")
            return None
        if not is_guid(client_id.lower()):
            self.problems.append(f"LKPS_ENTRA_CLIENT_ID: {client_id!r} is not a GUID")
        if len(given) != 1:
            self.problems.append(
                "LKPS_ENTRA_CLIENT_ID needs exactly one of LKPS_ENTRA_CLIENT_SECRET(_FILE), "
                f"LKPS_ENTRA_CLIENT_CERTIFICATE, LKPS_ENTRA_FEDERATED_TOKEN_FILE (got {len(given)})"
            )
        return GraphCredential(
            client_id=client_id.lower(),
            client_secret=secret,
            certificate_path=certificate,
            certificate_password=self.secret("LKPS_ENTRA_CLIENT_CERTIFICATE_PASSWORD"),
            # Read fresh at every token request: AKS rotates the projected token file.
            federated_token_file=Path(federated) if federated else None,
        )
