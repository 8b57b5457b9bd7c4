"""The settings reference: what each `LKPS_*` variable means, beside the code that reads it.

The documentation site renders this table (`docs/operators/settings.md`); defaults, ranges and `_FILE`
support are read from the parser's own code in `config/settings.py`, so they cannot drift. A variable
the parser reads without a row here, or a row for a variable it no longer reads, fails
`tests/config/test_reference.py`.
"""

from __future__ import annotations

import ast
import operator
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from config import settings as settings_module

SETTINGS_SOURCE = Path(settings_module.__file__)
PREFIX = "LKPS_"
NAME = re.compile(r"LKPS_[A-Z0-9_]*[A-Z0-9]")


@dataclass(frozen=True, slots=True)
class Setting:
    """One variable: its default as prose (None: read from the parser's call) and what it means."""

    name: str
    meaning: str
    default: str | None = None


@dataclass(frozen=True, slots=True)
class Parsed:
    """What the parser's own call says about a variable."""

    default: str | None = None
    range: str | None = None
    secret_file: bool = False  # also read from the file named by `<NAME>_FILE`


NONE = "none"

SECTIONS: tuple[tuple[str, tuple[Setting, ...]], ...] = (
    (
        "Entra ID: which tokens are accepted",
        (
            Setting("LKPS_ENTRA_TENANT_ID", "tenant GUID (lowercase) whose tokens are accepted", "required"),
            Setting(
                "LKPS_ENTRA_AUDIENCES",
                "comma-separated accepted `aud` values: lkps's application (client) id, which Entra v2.0 "
                "tokens always carry (a list without a GUID is refused at start), and the App ID URI if "
                "v1.0 tokens are accepted; wildcards are refused",
                "required",
            ),
            Setting(
                "LKPS_ENTRA_AUTHORITY",
                "authority host (national clouds); https only",
            ),
            Setting("LKPS_ENTRA_CA_BUNDLE", "PEM file trusted for the authority and Graph", "system trust"),
            Setting("LKPS_ENTRA_ALLOW_V1", "also accept v1.0 tokens"),
            Setting("LKPS_ENTRA_CLOCK_SKEW_SECONDS", "leeway for `exp`, `nbf` and `iat`"),
            Setting(
                "LKPS_ENTRA_JWKS_TTL_SECONDS", "how long signing keys are used before they are refreshed"
            ),
            Setting(
                "LKPS_ENTRA_JWKS_REFRESH_COOLDOWN_SECONDS",
                "at most one key refresh per this period when tokens name an unknown key id",
            ),
            Setting(
                "LKPS_ENTRA_JWKS_MAX_STALE_SECONDS",
                "how long the last good keys keep serving while Entra is unreachable; then 503 and unready",
            ),
            Setting(
                "LKPS_ENTRA_HTTP_TIMEOUT_SECONDS",
                "bound on each call to Entra (discovery, keys, tokens) and Microsoft Graph",
            ),
            Setting("LKPS_MAX_TOKEN_BYTES", "largest bearer token accepted"),
            Setting(
                "LKPS_VERIFIED_TOKEN_CACHE_SIZE",
                "how many validated tokens are remembered until their `exp` (0: verify every request)",
            ),
            Setting(
                "LKPS_USER_ID_CLAIMS",
                "ordered claims for the user id in room names and identities: the first whose value is "
                "already 1-64 characters of `[A-Za-z0-9._-]` (a value that would need cleaning is skipped, "
                "never cleaned; `oid` is always the last resort)",
            ),
        ),
    ),
    (
        "Callers: who may start sessions, register agents, administer",
        (
            Setting(
                "LKPS_CLIENT_SCOPES",
                "a user (delegated) token must carry one of these scopes (none: any delegated token for lkps)",
                NONE,
            ),
            Setting(
                "LKPS_CLIENT_ROLES",
                "an app-only caller must carry one of these app roles (none: app-only callers are refused)",
                NONE,
            ),
            Setting(
                "LKPS_CLIENT_APP_IDS", "if set, only these client application ids may start sessions", NONE
            ),
            Setting(
                "LKPS_AGENT_ROLES",
                "app role an agent's token must carry to register (none: registration is refused)",
                NONE,
            ),
            Setting(
                "LKPS_ADMIN_ROLES", "app roles that make a caller an administrator", "none (admin API off)"
            ),
            Setting(
                "LKPS_ADMIN_CLIENT_APP_IDS",
                "client application ids whose tokens may use the admin API (an app-only operator tool lists "
                "its own app id)",
                "none (admin API off)",
            ),
            Setting(
                "LKPS_ADMIN_SCOPES",
                "a user token must carry one of these scopes to use the admin API (none: user tokens never "
                "reach it)",
                "`LKPS_CLIENT_SCOPES`",
            ),
            Setting(
                "LKPS_CORS_ALLOWED_ORIGINS",
                "comma-separated browser origins that may call the API, e.g. `https://app.example.com`; "
                "`*` is refused",
                "none (CORS off)",
            ),
        ),
    ),
    (
        "Sessions and rate limits",
        (
            Setting("LKPS_PARTICIPANT_TOKEN_TTL_SECONDS", "lifetime of a participant token"),
            Setting(
                "LKPS_RATE_LIMIT_PER_MINUTE",
                "ceiling of session starts per client application a minute, shared by all its callers "
                "(0 disables)",
            ),
            Setting("LKPS_RATE_LIMIT_BURST", "burst above that steady rate"),
            Setting(
                "LKPS_USER_RATE_LIMIT_PER_MINUTE",
                "session starts a minute per user of one client application, every attempt counted "
                "(0 disables; not above the client ceiling); app-only callers have only the client ceiling",
            ),
            Setting("LKPS_USER_RATE_LIMIT_BURST", "burst above the user's steady rate"),
            Setting(
                "LKPS_REDIS_URL",
                "share both rate limits across replicas (`redis://`, `rediss://`, `unix://`); a busy key "
                "is decided from the replica's copy and reconciled with Redis in the background; if Redis "
                "fails, requests are allowed and `lkps_rate_limit_store_errors_total` counts it. Also "
                "carries each replica's agent registry changes to the others (a revocation is seen "
                "everywhere at once, not within LKPS_AGENT_CACHE_TTL_SECONDS)",
                "none (per replica)",
            ),
        ),
    ),
    (
        "Agents and the worker relay",
        (
            Setting(
                "LKPS_AGENT_TOKEN_TTL_SECONDS",
                "how long an agent registration (and so its worker credentials) lasts without renewal",
            ),
            Setting(
                "LKPS_AGENT_CACHE_TTL_SECONDS",
                'how long a replica caches "agent X is connected": the bound on how late another replica\'s '
                "revocation is seen without Redis, or when its announcement through Redis is lost",
            ),
            Setting(
                "LKPS_PUBLIC_URL",
                "lkps's public base URL as workers reach it (`https://lkps.example.com`; http only to "
                "loopback); `worker_url` is it as `wss://` plus `/worker`. Required in any deployment: "
                "without it a registration to any other host answers 500 `configuration_error` (a proxy's "
                "or a pod's address is no URL to send workers to). `lkps dev` and the Helm chart set it",
                "none: only a registration sent to a loopback host works",
            ),
            Setting(
                "LKPS_WORKER_CHECK_INTERVAL_SECONDS",
                "how often each process re-checks the keys of its relayed workers: the bound on how late a "
                "revocation or expiry closes a live worker",
            ),
            Setting(
                "LKPS_WORKER_REFUSAL_HOLD_SECONDS",
                "how long a worker registering under another agent's name is held before it is closed: a "
                "refused stock worker retries once per period",
            ),
            Setting(
                "LKPS_WORKER_PRESENCE_GRACE_SECONDS",
                "how long a worker still counts as connected after its connection ended: session starts need "
                "a connected worker ([Presence and dispatch](../agents/presence-and-dispatch.md))",
            ),
            Setting(
                "LKPS_AGENT_JOIN_TIMEOUT_SECONDS",
                "how long after the user's join (or a dispatch) an agent must have joined before lkps "
                "dispatches it again",
            ),
            Setting(
                "LKPS_AGENT_DISPATCH_ATTEMPTS",
                "dispatches per session in all, the room's own included; then the agent is `unavailable`",
            ),
            Setting(
                "LKPS_MAX_SESSION_SECONDS",
                "a session's age at which lkps deletes its room and ends it (`max_duration`); 0: no limit",
            ),
            Setting(
                "LKPS_WORKER_MAX_CONNECTIONS_PER_AGENT",
                "relayed worker connections one agent may hold on one replica; beyond, handshakes get 429 "
                "with `Retry-After`",
            ),
            Setting(
                "LKPS_WORKER_HANDSHAKES_PER_MINUTE",
                "worker handshakes per minute per worker key on one replica, as a burst and then a steady "
                "rate; beyond, 429 with `Retry-After`",
            ),
            Setting(
                "LKPS_WORKER_KEY_GRACE_SECONDS",
                "how long the previous worker key stays in force after `rotate_worker_credentials`",
            ),
        ),
    ),
    (
        "LiveKit",
        (
            Setting("LKPS_LIVEKIT_URL", "the LiveKit URL clients connect to (`wss://`)", "required"),
            Setting("LKPS_LIVEKIT_API_KEY", "LiveKit API key lkps signs tokens with", "required"),
            Setting("LKPS_LIVEKIT_API_SECRET", "its secret, at least 32 characters", "required"),
            Setting(
                "LKPS_LIVEKIT_PREVIOUS_API_SECRET",
                "while rotating `LKPS_LIVEKIT_API_SECRET`: the previous secret, so worker secrets derived from "
                "it keep working until the workers re-register ([the worker relay](../agents/relay.md))",
                "none",
            ),
            Setting(
                "LKPS_LIVEKIT_API_URL",
                "LiveKit's server API (Twirp), e.g. an in-cluster `http://livekit:7880` (plaintext only to "
                "loopback or with `LKPS_ALLOW_PLAINTEXT_LIVEKIT_URL`)",
                "the LiveKit URL, `wss` made `https`",
            ),
            Setting(
                "LKPS_LIVEKIT_API_TIMEOUT_SECONDS", "bound on each LiveKit server API call (ending a session)"
            ),
            Setting(
                "LKPS_ALLOW_PLAINTEXT_LIVEKIT_URL",
                "explicit opt-in for a `ws://` / `http://` LiveKit URL to a non-loopback host",
            ),
        ),
    ),
    (
        "Database and retention",
        (
            Setting(
                "LKPS_DATABASE_URL",
                "`postgresql+asyncpg://...` in production",
            ),
            Setting("LKPS_DATABASE_POOL_SIZE", "fixed connection pool per process (no overflow)"),
            Setting(
                "LKPS_DATABASE_POOL_TIMEOUT_SECONDS",
                "how long a request waits for a pooled connection before it gets 503 `database_unavailable`",
            ),
            Setting(
                "LKPS_SESSION_BATCH_MAX", "most session rows the writer commits in one batch (group commit)"
            ),
            Setting("LKPS_RETENTION_DAYS", "rows older than this are deleted by `lkps prune`"),
        ),
    ),
    (
        "Microsoft Graph: client-to-agent authorization",
        (
            Setting(
                "LKPS_ENTRA_CLIENT_ID",
                "lkps's own app registration, for Microsoft Graph; needs exactly one of the three "
                "credentials below",
                NONE,
            ),
            Setting("LKPS_ENTRA_CLIENT_SECRET", "its client secret", NONE),
            Setting(
                "LKPS_ENTRA_CLIENT_CERTIFICATE", "its certificate: a PEM file with key and certificate", NONE
            ),
            Setting(
                "LKPS_ENTRA_CLIENT_CERTIFICATE_PASSWORD", "password of that key, if it is encrypted", NONE
            ),
            Setting(
                "LKPS_ENTRA_FEDERATED_TOKEN_FILE",
                "workload identity: the projected token file, read afresh for every token",
                NONE,
            ),
            Setting("LKPS_GRAPH_URL", "Graph base URL"),
            Setting(
                "LKPS_GRAPH_SCOPE_VALUE",
                "the delegated scope agents expose for client authorization",
            ),
            Setting(
                "LKPS_GRAPH_CACHE_TTL_SECONDS",
                "how long a pre-authorization answer is reused (the delay before a de-authorized client is "
                "refused)",
            ),
            Setting(
                "LKPS_GRAPH_CACHE_MAX_STALE_SECONDS", "how long a cached answer serves while Graph fails"
            ),
            Setting("LKPS_GRAPH_NEGATIVE_TTL_SECONDS", "how long an unknown agent application is remembered"),
        ),
    ),
    (
        "Logs, traces and labels",
        (
            Setting("LKPS_LOG_LEVEL", "`debug`, `info`, `warning` or `error`"),
            Setting("LKPS_LOG_FORMAT", "`json` or `console`; structured logs on stdout"),
            Setting("LKPS_ENVIRONMENT", "label in logs and traces (e.g. `prod-eu`)"),
            Setting(
                "LKPS_OTEL_EXPORTER_OTLP_ENDPOINT",
                "OTLP/HTTP collector for traces; an incoming `traceparent` is continued; no headers are "
                "recorded",
                "none (tracing off)",
            ),
            Setting("LKPS_OTEL_SERVICE_NAME", "service name on the traces"),
        ),
    ),
)


def documented() -> dict[str, Setting]:
    return {setting.name: setting for _, rows in SECTIONS for setting in rows}


def read_names(source: str) -> set[str]:
    """Every `"LKPS_..."` string literal of the parser: the variables it reads."""
    return {
        node.value
        for node in ast.walk(ast.parse(source))
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and NAME.fullmatch(node.value)
    }


_OPERATORS: dict[type[ast.operator], Callable[[Any, Any], Any]] = {
    ast.Mult: operator.mul,
    ast.Add: operator.add,
    ast.Sub: operator.sub,
}


def _value(node: ast.expr) -> Any:
    """A default or bound as written in the parser: a literal, a module constant or simple arithmetic."""
    if isinstance(node, ast.Constant):
        return node.value
    if isinstance(node, ast.Name):
        return getattr(settings_module, node.id)
    if isinstance(node, ast.Tuple):
        return tuple(_value(element) for element in node.elts)
    if isinstance(node, ast.BinOp) and type(node.op) in _OPERATORS:
        return _OPERATORS[type(node.op)](_value(node.left), _value(node.right))
    raise ValueError(f"line {node.lineno}: {ast.unparse(node)} is not a literal")


def _number(value: Any) -> str:
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return str(value)


def _setting(node: ast.expr, local: dict[str, str]) -> str | None:
    """The variable a parser call reads: a literal name, or a local variable holding one."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str) and NAME.fullmatch(node.value):
        return node.value
    if isinstance(node, ast.Name):
        return local.get(node.id)
    return None


def _text(node: ast.expr) -> str | None:
    """A text default as written: a string literal or a module constant holding one."""
    try:
        value = _value(node)
    except (ValueError, AttributeError):
        return None
    return f"`{value}`" if isinstance(value, str) else None


def _from_call(call: ast.Call, local: dict[str, str]) -> tuple[str, Parsed] | None:
    """The variable a parser call reads and what the call says about it; None for other calls."""
    if not (isinstance(call.func, ast.Attribute) and call.args):
        return None
    name = _setting(call.args[0], local)
    return None if name is None else (name, _parsed(call.func.attr, call))


def _parsed(method: str, call: ast.Call) -> Parsed:
    rest = call.args[1:]
    keywords = {keyword.arg: keyword.value for keyword in call.keywords}
    if method == "number":
        default, low, high = (_value(call.args[index]) for index in (1, 3, 4))
        return Parsed(_number(default), f"{_number(low)} to {_number(high)}")
    if method == "boolean":
        return Parsed(f"`{str(_value(keywords['default'])).lower()}`")
    if method == "words" and rest and (words := _value(rest[0])):
        return Parsed(f"`{','.join(words)}`")
    if method == "https_url" and rest:
        return Parsed(_text(rest[0]))
    secret = method == "required" and "secret" in keywords and _value(keywords["secret"]) is True
    return Parsed(secret_file=method == "secret" or secret)


def _merge(old: Parsed | None, new: Parsed) -> Parsed:
    if old is None:
        return new
    return Parsed(old.default or new.default, old.range or new.range, old.secret_file or new.secret_file)


def read_calls(source: str) -> dict[str, Parsed]:
    """Defaults, ranges and `_FILE` support, from the parser's calls: `number`, `boolean`, `words`,
    `https_url` and `secret`, and `<read> or <default>` expressions."""
    found: dict[str, Parsed] = {}
    for function in ast.walk(ast.parse(source)):
        if not isinstance(function, ast.FunctionDef):
            continue
        local = {
            node.targets[0].id: node.value.value
            for node in ast.walk(function)
            if isinstance(node, ast.Assign)
            and len(node.targets) == 1
            and isinstance(node.targets[0], ast.Name)
            and isinstance(node.value, ast.Constant)
            and isinstance(node.value.value, str)
            and NAME.fullmatch(node.value.value)
        }
        for node in ast.walk(function):
            read: tuple[str, Parsed] | None = None
            if isinstance(node, ast.Call):
                read = _from_call(node, local)
            elif (
                isinstance(node, ast.BoolOp)
                and isinstance(node.op, ast.Or)
                and isinstance(node.values[0], ast.Call)
                and (first := _from_call(node.values[0], local)) is not None
            ):
                read = first[0], Parsed(_text(node.values[-1]))
            if read is not None:
                found[read[0]] = _merge(found.get(read[0]), read[1])
    return found


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def settings_markdown(source: str | None = None) -> str:
    """The reference tables, one per section: name, default, allowed range, meaning."""
    calls = read_calls(source if source is not None else SETTINGS_SOURCE.read_text(encoding="utf-8"))
    lines: list[str] = []
    for title, rows in SECTIONS:
        lines += [f"### {title}", "", "| variable | default | range | meaning |", "|---|---|---|---|"]
        for setting in rows:
            parsed = calls.get(setting.name, Parsed())
            name = f"`{setting.name}`"
            if parsed.secret_file:
                name += f" (or `{setting.name}_FILE`)"
            default = setting.default or parsed.default or NONE
            lines.append(f"| {name} | {_cell(default)} | {parsed.range or ''} | {_cell(setting.meaning)} |")
        lines.append("")
    return "\n".join(lines)
