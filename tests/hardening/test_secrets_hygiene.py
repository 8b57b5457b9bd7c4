"""Secrets hygiene: real traffic through every path that handles a credential, with the app's own logging
at debug level, and not one secret in any log line or error body.

The traffic: session starts (both endpoints) through Graph pre-authorization (MSAL with lkps's client
secret, Graph tokens), a refusal by Graph, Graph failing, agent registration, invalid Entra tokens of
several kinds (also in the query string), ending a session (a LiveKit server-API token), and LiveKit
webhooks, valid and forged. The secrets: every Entra token sent, the LiveKit API secret, every LiveKit
token minted, every Graph token Entra issued to lkps, lkps's client secret, the webhook signatures and the
server-API tokens. Rendered lines are read from stdout; the structured events from `capture_logs`.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
import structlog
from aiohttp import web
from structlog.testing import capture_logs

from gateway.observability.logging import configure_logging
from tests.gateway.conftest import AGENT_ID
from tests.gateway.test_preauthorization import Enforcing, enforcing_gateway
from tests.support.entra import OTHER_API_APP_ID, SPA_CLIENT_ID
from tests.support.graph import LKPS_CLIENT_SECRET, SCOPE_ID, application
from tests.support.livekit import API_SECRET
from tests.support.livekit_webhooks import CONTENT_TYPE, sign_body
from tests.support.twirp import FakeRoomService

pytestmark = pytest.mark.anyio

_NOISY = ("httpx", "httpcore", "msal", "urllib3", "hpack")


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


@pytest.fixture
def debug_logging() -> Iterator[Callable[[], None]]:
    """Switches the app's own logging configuration on at debug level (call it inside the test, where
    `capfd` has its final stdout), and undoes it afterwards so other tests are unaffected.

    Logger caching is turned off so that no module-level logger stays bound to this configuration.
    """
    root = logging.getLogger()
    saved_root = (root.handlers[:], root.level)
    saved_levels = {name: logging.getLogger(name).level for name in _NOISY}

    def enable() -> None:
        configure_logging("debug", "json")
        structlog.configure(cache_logger_on_first_use=False)

    yield enable
    structlog.reset_defaults()
    root.handlers[:], level = saved_root
    root.setLevel(level)
    for name, saved in saved_levels.items():
        logging.getLogger(name).setLevel(saved)


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
