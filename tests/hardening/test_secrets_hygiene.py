"""Secrets hygiene: real traffic through every path that handles a credential, with the app's own logging
at debug level, and not one secret in any log line or error body.

The traffic: session starts (both endpoints) through Graph pre-authorization (MSAL with lkps's client
secret, Graph tokens), a refusal by Graph, Graph failing, agent registration, invalid Entra tokens of
several kinds (also in the query string), ending a session (a LiveKit server-API token), and LiveKit
webhooks, valid and forged. The secrets: every Entra token sent, the LiveKit API secret, every LiveKit
token minted, every Graph token Entra issued to lkps, lkps's client secret, the webhook signatures and the
server-API tokens. Rendered lines are read from stdout; the structured events from `capture_logs`.

An unhandled exception is provoked too, in both log formats: its traceback must be logged without frame
locals (they hold the request's headers) and with every credential its message quotes masked.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
import structlog
from aiohttp import web
from structlog.testing import capture_logs

from config.settings import GraphCredential
from gateway.observability.logging import Redactor, logged_secrets
from tests.gateway.conftest import AGENT_ID, Gateway, running_gateway
from tests.gateway.test_preauthorization import Enforcing, enforcing_gateway
from tests.support.entra import OTHER_API_APP_ID, SPA_CLIENT_ID, make_settings
from tests.support.graph import LKPS_CLIENT_ID, LKPS_CLIENT_SECRET, SCOPE_ID, application
from tests.support.livekit import API_SECRET
from tests.support.livekit_webhooks import CONTENT_TYPE, sign_body
from tests.support.twirp import FakeRoomService

pytestmark = pytest.mark.anyio


@dataclass
class Traffic:
    """What was sent and received, and so what must never be seen again in a log or an error body."""

    secrets: set[str] = field(default_factory=set)
    error_bodies: list[str] = field(default_factory=list)
    requests: int = 0

    def keep(self, *values: str) -> None:
        """Remember secrets (and a JWT's signature on its own); stand-ins like "x" are not secrets."""
        for value in values:
            if len(value) >= 16:
                self.secrets.add(value)
            parts = value.split(".")
            if len(parts) == 3 and len(parts[2]) >= 16:
                self.secrets.add(parts[2])

    def saw(self, response: httpx.Response) -> httpx.Response:
        self.requests += 1
        if response.status_code >= 400:
            self.error_bodies.append(response.text)
        return response

    def leaks(self, text: str) -> list[str]:
        return sorted(secret[:16] + "..." for secret in self.secrets if secret in text)


class RecordingRoomService(FakeRoomService):
    """The fake LiveKit RoomService, also keeping the server-API tokens lkps presented (secrets too)."""

    def __init__(self) -> None:
        super().__init__()
        self.tokens: list[str] = []

    async def _delete_room(self, request: web.Request) -> web.Response:
        self.tokens.append(request.headers.get("Authorization", "").removeprefix("Bearer "))
        return await super()._delete_room(request)


@pytest.fixture
async def setup(database_url: str) -> Any:
    livekit = RecordingRoomService()
    with livekit.running() as url:
        async for enforcing in enforcing_gateway(database_url, token_lifetime=60, livekit_api_url=url):
            enforcing.graph.put(application(AGENT_ID, preauthorized={SPA_CLIENT_ID: [SCOPE_ID]}))
            yield enforcing, livekit


def webhook(room: str, secret: str = API_SECRET) -> tuple[bytes, str]:
    body = json.dumps({"event": "room_started", "id": f"EV_{room[-8:]}", "room": {"name": room}}).encode()
    return body, sign_body(body, secret=secret)


async def exercise(enforcing: Enforcing, livekit: RecordingRoomService, traffic: Traffic) -> None:
    """One round of traffic over every credential-handling path, recording the secrets involved."""
    gateway, entra = enforcing.gateway, enforcing.gateway.entra
    client = gateway.client

    async def post(path: str, token: str, body: Any, **params: str) -> httpx.Response:
        traffic.keep(token)
        return traffic.saw(
            await client.post(path, headers={"Authorization": f"Bearer {token}"}, json=body, params=params)
        )

    start = {"agent_entra_app_id": AGENT_ID}
    user = await post("/api/session/start", entra.mint_user_token(), start)
    assert user.status_code == 200, user.text
    room = user.json()["room_name"]
    traffic.keep(user.json()["participant_token"])
    denied = await post("/api/session/start", entra.mint_app_token(), start)  # not pre-authorized
    assert denied.status_code == 403
    lk = await post(
        "/api/livekit/token", entra.mint_user_token(), {"room_config": {"agents": [{"agent_name": AGENT_ID}]}}
    )
    assert lk.status_code == 201, lk.text
    traffic.keep(lk.json()["participant_token"])

    registered = await post("/api/agent/register", gateway.agent_token(), {"enforce_client_authz": True})
    assert registered.status_code == 200
    traffic.keep(registered.json()["worker_api_secret"])

    valid = entra.mint_user_token()
    invalid = [
        valid[:-6] + ("AAAAAA" if not valid.endswith("AAAAAA") else "BBBBBB"),  # tampered signature
        entra.mint_user_token(exp=int(entra.clock.now()) - 3600),
        entra.mint_user_token(aud=OTHER_API_APP_ID),
        entra.mint_user_token(scp="something.else"),
        "eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0.",
    ]
    for token in invalid:
        assert (await post("/api/session/start", token, start)).status_code in {401, 403}
    traffic.keep(valid)
    assert (await post("/api/session/start", "x", start, access_token=valid)).status_code == 401

    ended = traffic.saw(
        await client.delete(f"/api/session/{room}", headers={"Authorization": f"Bearer {valid}"})
    )
    assert ended.status_code == 200, ended.text
    traffic.keep(*livekit.tokens)

    for secret, status in ((API_SECRET, 200), ("a-forged-secret-of-sufficient-length", 401)):
        body, signature = webhook(room, secret)
        traffic.keep(signature)
        response = await client.post(
            "/api/livekit/webhook",
            content=body,
            headers={"Authorization": signature, "Content-Type": CONTENT_TYPE},
        )
        assert traffic.saw(response).status_code == status, response.text

    enforcing.graph.fail(500, times=2)  # Graph failing: the cached decision is served, the failure logged
    gateway.clock.advance(400)
    assert (await post("/api/session/start", entra.mint_user_token(), start)).status_code == 200
    traffic.keep(*enforcing.graph.received_tokens)


async def test_no_secret_reaches_a_log_line_or_an_error_body(
    setup: Any, debug_logging: Callable[[], None], capfd: pytest.CaptureFixture[str]
) -> None:
    """With logging at debug level, no bearer token, LiveKit secret or token, Graph token, client secret or
    webhook signature appears in any rendered log line, structured log event or error body."""
    enforcing, livekit = setup
    traffic = Traffic()
    traffic.keep(API_SECRET, LKPS_CLIENT_SECRET)

    debug_logging()
    await exercise(enforcing, livekit, traffic)
    out, err = capfd.readouterr()
    lines = [line for line in (out + err).splitlines() if line.strip()]
    events = [json.loads(line) for line in lines if line.startswith("{")]
    assert sum(1 for event in events if event.get("event") == "request") >= traffic.requests
    assert any(event.get("level") == "debug" for event in events), "debug logging is not on"
    assert enforcing.graph.received_tokens, "Graph was not called"
    assert livekit.tokens, "LiveKit's server API was not called"
    assert [line for line in lines if traffic.leaks(line)] == []

    with capture_logs() as logs:
        await exercise(enforcing, livekit, traffic)
    assert logs
    assert traffic.leaks(repr(logs)) == []
    assert traffic.leaks("\n".join(traffic.error_bodies)) == []


class FaultyRooms:
    """A RoomControl with a bug: deleting a room raises an exception nobody expects, whose message quotes
    what a careless library might (the caller's Authorization header and lkps's LiveKit secret)."""

    def __init__(self) -> None:
        self.message = "room service bug"

    async def delete_room(self, room: str) -> None:
        raise RuntimeError(f"{self.message} while deleting {room}")

    async def aclose(self) -> None:
        return None


@pytest.mark.parametrize("log_format", ["json", "console"])
async def test_an_unhandled_exception_is_logged_with_its_cause_and_no_secret(
    database_url: str, log_format: str, debug_logging: Callable[..., None], capfd: pytest.CaptureFixture[str]
) -> None:
    """In either log format, an unhandled exception answers 500 with the error shape and its request id,
    and its log line names the exception and its message but holds no token and no configured secret."""
    rooms = FaultyRooms()
    async for gateway in running_gateway(database_url, rooms=rooms, log_level="debug", log_format=log_format):
        await gateway.register_agent()
        traffic = Traffic()
        token = gateway.entra.mint_user_token()
        started = await gateway.start(token)
        assert started.status_code == 200, started.text
        traffic.keep(token, started.json()["participant_token"], gateway.settings.livekit_api_secret)
        rooms.message = f"room service bug (sent Bearer {token}, signed with {API_SECRET})"

        debug_logging(gateway.settings)
        response = await end(gateway, started.json()["room_name"], token)
        out, err = capfd.readouterr()

    assert response.status_code == 500
    assert response.json() == {
        "error": "internal_error",
        "message": response.json()["message"],
        "request_id": response.headers["x-request-id"],
    }
    logged = out + err
    assert "unhandled_exception" in logged
    assert "RuntimeError" in logged
    assert "room service bug" in logged
    assert response.headers["x-request-id"] in logged
    assert "TypeError" not in logged  # the renderer itself did not fail
    assert traffic.leaks(logged) == []
    if log_format == "json":
        events = [json.loads(line) for line in logged.splitlines() if line.startswith("{")]
        [failure] = [event for event in events if event["event"] == "unhandled_exception"]
        assert failure["request_id"] == response.headers["x-request-id"]
        assert failure["exception"][0]["exc_type"] == "RuntimeError"
        assert all("locals" not in frame for frame in failure["exception"][0]["frames"])


async def end(gateway: Gateway, room: str, token: str) -> httpx.Response:
    return await gateway.client.delete(f"/api/session/{room}", headers={"Authorization": f"Bearer {token}"})


_JWT = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhZGEifQ.c2lnbmF0dXJlLW9mLXRoZS10b2tlbg"


@pytest.mark.parametrize("kind", [str, bytes])
def test_the_redactor_masks_credentials_wherever_they_stand(kind: type) -> None:
    """Bearer credentials, JWTs, URL passwords and configured secrets are masked in a rendered line,
    in text and in bytes, while the rest of the line is kept."""
    redactor = Redactor(["a-configured-secret-value", "short"])
    line = (
        f'{{"event":"x","header":"bearer opaque-credential","jwt":"{_JWT}","a":"id={_JWT}",'
        '"url":"postgresql+asyncpg://lkps:p%40ss@db:5432/lkps","b":"a-configured-secret-value!",'
        '"kept":"login.microsoftonline.com short"}'
    )
    masked = redactor(line.encode() if kind is bytes else line)
    text = masked.decode() if isinstance(masked, bytes) else masked
    assert text == (
        '{"event":"x","header":"bearer [redacted]","jwt":"[redacted]","a":"id=[redacted]",'
        '"url":"postgresql+asyncpg://lkps:[redacted]@db:5432/lkps","b":"[redacted]!",'
        '"kept":"login.microsoftonline.com short"}'
    )


def test_configured_secrets_are_the_ones_masked() -> None:
    """The LiveKit secret, lkps's Entra client secret and certificate password, and the passwords of the
    database and Redis URLs (also percent-decoded) are the configured secrets every log line is masked of."""
    settings = make_settings(
        graph=GraphCredential(
            client_id=LKPS_CLIENT_ID, client_secret="entra-client-secret", certificate_password="pem-pass"
        ),
        database_url="postgresql+asyncpg://lkps:db%2Fpassword@db/lkps",
        redis_url="rediss://:redis-password@redis:6380/0",
    )
    assert set(logged_secrets(settings)) == {
        settings.livekit_api_secret,
        "entra-client-secret",
        "pem-pass",
        "db%2Fpassword",
        "db/password",
        "redis-password",
    }


def test_a_library_log_record_is_rendered_without_locals_and_masked(
    debug_logging: Callable[..., None], capfd: pytest.CaptureFixture[str]
) -> None:
    """A stdlib logger's record with an exception (sqlalchemy, granian) becomes one JSON line with a
    structured traceback, no frame locals, and its secrets masked."""
    settings = make_settings(database_url="postgresql+asyncpg://lkps:db-password@db/lkps")
    debug_logging(settings)
    secret_local = f"Bearer {_JWT}"  # noqa: F841 - what a frame's locals would show
    try:
        raise ConnectionError(f"cannot reach {settings.database_url} as {settings.livekit_api_secret}")
    except ConnectionError:
        logging.getLogger("sqlalchemy.pool").exception("connection failed")
    out, _ = capfd.readouterr()
    [line] = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    assert line["event"] == "connection failed"
    assert line["exception"][0]["exc_type"] == "ConnectionError"
    assert all("locals" not in frame for frame in line["exception"][0]["frames"])
    assert "db-password" not in out
    assert settings.livekit_api_secret not in out
    assert _JWT not in out


def test_secret_fields_are_redacted_in_the_rendered_line(
    debug_logging: Callable[..., None], capfd: pytest.CaptureFixture[str]
) -> None:
    """A log event that carries a secret under a secret's name (a future call site's mistake) reaches
    stdout with the event kept and the values gone."""
    debug_logging()
    bearer = "Bearer eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJsZWFrIn0.c2lnbmF0dXJlLW9mLWEtbGVha2VkLXRva2Vu"
    structlog.get_logger("lkps.test").warning(
        "outbound_call", authorization=bearer, client_secret=LKPS_CLIENT_SECRET, password="pg-password-42"
    )
    out, _ = capfd.readouterr()
    assert "outbound_call" in out
    for value in (bearer.removeprefix("Bearer "), LKPS_CLIENT_SECRET, "pg-password-42"):
        assert value not in out


# Quotes, a backslash, non-ASCII letters and DEL: each renderer escapes them its own way (orjson, the standard
# library's ASCII-only JSON, Python's repr in the console format, which escapes a single quote only when
# the value also holds a double one). The ASCII tail shows through any escaping.
_TAIL = "correct-horse-battery-staple"
_AWKWARD_SECRETS = ["p\u00e4\"ss\\w\u00f6rd's-" + _TAIL, "p\u00e4ss\\w\u00f6rd's\u007f-" + _TAIL]


@pytest.mark.parametrize("secret", _AWKWARD_SECRETS, ids=["quotes", "delete-character"])
@pytest.mark.parametrize("fmt", ["json", "console"])
def test_a_configured_secret_is_masked_in_every_escaped_form(
    fmt: str, secret: str, debug_logging: Callable[..., None], capfd: pytest.CaptureFixture[str]
) -> None:
    """A configured secret holding quotes, a backslash, non-ASCII letters or DEL is masked however the line's
    renderer escapes it: lkps's own events, library records and exception text, in both log formats."""
    debug_logging(make_settings(livekit_api_secret=secret, log_format=fmt, log_level="debug"))
    structlog.get_logger("lkps.test").warning("outbound_call", detail=f"sent {secret}!")
    logging.getLogger("sqlalchemy.pool").warning("library says %s", secret)
    try:
        raise ConnectionError(secret)
    except ConnectionError:
        logging.getLogger("sqlalchemy.pool").exception("library failed")
        structlog.get_logger("lkps.test").exception("lkps failed")
    out, _ = capfd.readouterr()
    for event in ("outbound_call", "library says", "library failed", "lkps failed"):
        assert event in out
    assert _TAIL not in out
