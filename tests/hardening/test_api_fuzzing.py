"""Schemathesis against the OpenAPI document the app itself serves: every documented operation, with valid
credentials, with invalid or missing ones, and with invalid input. Whatever is sent, the answer is never a
5xx, matches the documented status codes, content types and schemas, and every error body is exactly
`{"error", "message", "request_id"}` with the request id of the response.

The app is the real one built by `running_gateway` (fake Entra tenant, a migrated SQLite and PostgreSQL
database, registered agent, a fake LiveKit server API for ending sessions). It runs on an event loop in a
helper thread so that Hypothesis drives plain synchronous tests; the number of examples is bounded to keep
the module fast.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import anyio
import httpx
import pytest
import schemathesis
from anyio.abc import TaskStatus
from anyio.from_thread import BlockingPortal, start_blocking_portal
from hypothesis import HealthCheck, given, reject, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.gateway.conftest import AGENT_ID, Gateway, running_gateway
from tests.support.attacks import attacker_key_kid
from tests.support.db import DB_KINDS, TestDatabases
from tests.support.entra import OTHER_API_APP_ID, REMOVE, SERVICE_CLIENT_ID
from tests.support.livekit_webhooks import CONTENT_TYPE, sign_body
from tests.support.twirp import FakeRoomService

ADMIN_ROLE = "LKPS.Admin"
# Per operation and mode: about 12 operations x 3 modes stay well under a minute. Raise it for a deeper
# run: LKPS_FUZZ_EXAMPLES=500 pytest tests/hardening/test_api_fuzzing.py
EXAMPLES = int(os.environ.get("LKPS_FUZZ_EXAMPLES", "20"))
WEBHOOK = "/api/livekit/webhook"
PUBLIC = {"/api/health"}
# What the document must keep offering; new operations are fuzzed as soon as they are documented.
EXPECTED_OPERATIONS = {
    "POST /api/session/start",
    "POST /api/livekit/token",
    "POST /api/agent/register",
    "GET /api/health",
}
LIFECYCLE_EVENTS = [
    "room_started",
    "participant_joined",
    "participant_left",
    "room_finished",
    "track_published",
]
SCHEMA_CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]
Case = schemathesis.Case[Any]
FUZZ_SETTINGS = settings(
    max_examples=EXAMPLES,
    deadline=None,
    database=None,  # no .hypothesis directory in the work tree
    suppress_health_check=list(HealthCheck),
    print_blob=True,
)


@dataclass
class Fuzzed:
    """The running app, reached through `send` from the test's (synchronous) thread."""

    portal: BlockingPortal
    gateway: Gateway
    schema: Any
    rooms: list[str] = field(default_factory=list)  # rooms started during the run, for path parameters

    def send(self, request: dict[str, Any]) -> httpx.Response:
        return self.portal.call(lambda: self.gateway.client.request(**request))

    def token(self, kind: str) -> str:
        entra = self.gateway.entra
        minters: dict[str, Callable[[], str]] = {
            "user": entra.mint_user_token,
            "service": entra.mint_app_token,
            "agent": self.gateway.agent_token,
            "admin": lambda: entra.mint_app_token(roles=[ADMIN_ROLE]),
        }
        return minters[kind]()


@contextmanager
def gateway_in_thread(database_url: str, livekit_url: str) -> Iterator[tuple[BlockingPortal, Gateway]]:
    """`running_gateway` on an event loop in a helper thread, with the agent registered."""
    with start_blocking_portal() as portal:
        stop = portal.call(anyio.Event)

        async def serve(*, task_status: TaskStatus[Gateway]) -> None:
            async for gateway in running_gateway(
                database_url,
                admin_roles=(ADMIN_ROLE,),
                admin_client_app_ids=(SERVICE_CLIENT_ID,),
                livekit_api_url=livekit_url,
            ):
                await gateway.register_agent()
                task_status.started(gateway)
                await stop.wait()

        future, gateway = portal.start_task(serve)
        try:
            yield portal, gateway
        finally:
            portal.call(stop.set)
            future.result(timeout=30)


@pytest.fixture(scope="module", params=DB_KINDS)
def fuzzed(
    request: pytest.FixtureRequest, test_databases: TestDatabases, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Fuzzed]:
    """The app on SQLite, and on PostgreSQL when available: PostgreSQL refuses text SQLite stores (NUL),
    so only there does unstorable caller text show up as a 5xx."""
    url = test_databases.fresh(request.param, Path(tmp_path_factory.mktemp("fuzz")))
    with FakeRoomService().running() as livekit_url, gateway_in_thread(url, livekit_url) as (portal, gateway):
        document = portal.call(lambda: gateway.client.get("/schema/openapi.json")).json()
        yield Fuzzed(portal, gateway, schemathesis.openapi.from_dict(document))


def operations(fuzzed: Fuzzed) -> list[Any]:
    found = [result.ok() for result in fuzzed.schema.get_all_operations()]
    assert {operation.label for operation in found} >= EXPECTED_OPERATIONS
    return found


def error_shape(ctx: Any, response: schemathesis.Response, case: Case) -> bool | None:
    """Every error body is exactly the documented three strings, naming the response's own request id."""
    if response.status_code < 400:
        return None
    body = response.json()
    assert isinstance(body, dict), f"error body is not an object: {response.text[:200]}"
    assert set(body) == {"error", "message", "request_id"}, f"error body has fields {sorted(body)}"
    assert all(isinstance(value, str) and value for value in body.values()), body
    request_ids = response.headers.get("x-request-id") or response.headers.get("X-Request-ID") or []
    assert body["request_id"] in request_ids, (body["request_id"], request_ids)
    return True


def to_httpx(case: Case, authorization: str | None) -> dict[str, Any]:
    """The case as keyword arguments for httpx; `authorization` replaces the generated header (None: drop)."""
    kwargs = case.as_transport_kwargs(base_url="http://testserver.local")
    headers = {k: v for k, v in kwargs.pop("headers", {}).items() if k.lower() != "authorization"}
    if authorization is not None:
        headers["Authorization"] = authorization
    try:  # what no HTTP client can put on the wire is not a request lkps can receive
        encoded = [(name.encode("ascii"), str(value).encode("latin-1")) for name, value in headers.items()]
    except UnicodeEncodeError:
        reject()
    request: dict[str, Any] = {
        "method": kwargs["method"],
        "url": kwargs["url"],
        "headers": encoded,
        "params": kwargs.get("params") or None,
    }
    if "json" in kwargs:
        request["content"] = json.dumps(kwargs["json"]).encode()
    elif kwargs.get("data") is not None:
        data = kwargs["data"]
        request["content"] = data.encode() if isinstance(data, str) else data
    return request


def webhook_bodies(rooms: list[str]) -> st.SearchStrategy[bytes]:
    """LiveKit-shaped events (some for real rooms) and arbitrary JSON, for a correctly signed webhook."""
    names = st.sampled_from(rooms) if rooms else st.text(max_size=40)
    event = st.fixed_dictionaries(
        {"event": st.sampled_from(LIFECYCLE_EVENTS), "room": st.fixed_dictionaries({"name": names})},
        optional={
            "id": st.text(max_size=80),
            "createdAt": st.one_of(st.integers(), st.text(max_size=12)),
            "participant": st.fixed_dictionaries({"identity": st.text(max_size=40)}),
        },
    )
    anything = st.recursive(
        st.none() | st.booleans() | st.integers() | st.text(max_size=20),
        lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
        max_leaves=10,
    )
    return st.one_of(event, anything).map(lambda document: json.dumps(document).encode())


def invalid_authorizations(fuzzed: Fuzzed) -> st.SearchStrategy[str | None]:
    """Missing, malformed and invalid credentials of every kind the validator distinguishes."""
    entra = fuzzed.gateway.entra
    return st.one_of(
        st.none(),
        st.sampled_from(["Bearer", "Bearer ", "Basic dXNlcjpwYXNz", "bearer x.y.z", "Bearer a.b"]),
        st.text(alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E), max_size=60).map(
            lambda text: f"Bearer {text}"
        ),
        st.builds(lambda: f"Bearer {entra.mint_user_token(exp=int(entra.clock.now()) - 3600)}"),
        st.builds(lambda: f"Bearer {entra.mint_user_token(aud=OTHER_API_APP_ID)}"),
        st.builds(lambda: f"Bearer {entra.mint_user_token(oid=REMOVE)}"),
        st.builds(lambda: f"Bearer {entra.mint_user_token()[:-4]}AAAA"),
        st.builds(
            lambda: (
                "Bearer "
                + entra.mint(payload=entra.user_claims(), header=entra.header(kid=attacker_key_kid()))
            )
        ),
    )


def fuzz(fuzzed: Fuzzed, operation: Any, mode: str) -> None:
    """Run one operation through Hypothesis in one mode ("valid", "invalid" or "negative")."""
    if mode == "negative" and operation.path in PUBLIC:
        return  # no parameters, no body, no credentials: a public GET has nothing to negate
    generation = GenerationMode.NEGATIVE if mode == "negative" else GenerationMode.POSITIVE
    strategy = operation.as_strategy(generation_mode=generation)
    bad_auth = invalid_authorizations(fuzzed)
    checks: list[Callable[..., bool | None]] = [*SCHEMA_CHECKS, error_shape]
    if mode == "negative":
        checks.append(negative_data_rejection)

    @FUZZ_SETTINGS
    @given(data=st.data())
    def run(data: st.DataObject) -> None:
        case = data.draw(strategy, label="case")
        credentials = "invalid" if mode == "invalid" else "valid"
        if mode == "negative" and "authorization" not in {name.lower() for name in case.headers or {}}:
            credentials = "none"  # the negated component is the credential itself
        webhook_body: bytes | None = None
        authorization: str | None = None
        if operation.path == WEBHOOK:
            # LiveKit's own signature scheme: valid is lkps's key over these bytes, invalid anything else.
            webhook_body = data.draw(webhook_bodies(fuzzed.rooms), label="webhook body")
            if credentials == "valid":
                authorization = sign_body(webhook_body)
            elif credentials == "invalid":
                forged = [
                    sign_body(webhook_body, secret="not-lkps-secret" * 3),
                    sign_body(b"x" + webhook_body),
                ]
                authorization = data.draw(bad_auth | st.sampled_from(forged), label="authorization")
        elif credentials == "valid":
            kind = data.draw(st.sampled_from(["user", "service", "agent", "admin"]), label="token")
            authorization = f"Bearer {fuzzed.token(kind)}"
            if mode == "valid":  # a negative case keeps its invalid parts
                steer(case, data, fuzzed.rooms)
        elif credentials == "invalid":
            authorization = data.draw(bad_auth, label="authorization")
        request = to_httpx(case, authorization)
        if webhook_body is not None:
            request["content"] = webhook_body
            request["headers"].append((b"content-type", CONTENT_TYPE.encode()))
        response = fuzzed.send(request)
        if response.status_code == 200 and operation.path == "/api/session/start":
            fuzzed.rooms.append(response.json()["room_name"])
        case.validate_response(response, checks=checks)
        if mode == "invalid" and operation.path not in PUBLIC:
            assert response.status_code == 401, (operation.label, response.status_code, response.text)

    run()


# Text the schema allows but the database or datetime cannot hold; generated strings rarely contain them.
HOSTILE_TEXT = [
    "a\x00b",
    "\x1b[31m",
    "line\nbreak",
    "0001-01-01T00:00:00+01:00",
    "9999-12-31T23:59:59-01:00",
    "\u00b2",
    "r" * 300,
]


def steer(case: Case, data: st.DataObject, rooms: list[str]) -> None:
    """Now and then aim a valid case at what exists (the registered agent, a started room), so the
    fuzzer reaches the success paths and not only "not found"; now and then put hostile text in a path
    or query parameter."""
    for parameters, encode in ((case.path_parameters, True), (case.query, False)):
        if parameters and data.draw(st.integers(0, 3), label="hostile") == 0:
            name = data.draw(st.sampled_from(sorted(parameters)), label="hostile parameter")
            text = data.draw(st.sampled_from(HOSTILE_TEXT), label="hostile text")
            parameters[name] = (
                quote(text, safe="") if encode else text
            )  # the URL of a path carries it encoded
    if not data.draw(st.booleans(), label="steer"):
        return
    if isinstance(case.body, dict) and "agent_entra_app_id" in case.body:
        case.body["agent_entra_app_id"] = AGENT_ID
    for name in ("room_name", "app_id"):
        if case.path_parameters and name in case.path_parameters:
            existing = rooms if name == "room_name" else [AGENT_ID]
            if existing:
                case.path_parameters[name] = data.draw(st.sampled_from(existing), label=name)


@pytest.mark.parametrize("mode", ["valid", "invalid", "negative"])
def test_every_operation_answers_as_documented(fuzzed: Fuzzed, mode: str) -> None:
    """For every documented operation, generated requests (valid credentials, invalid or missing ones, or
    invalid input) get a documented non-5xx status whose body matches its schema and the error shape."""
    for operation in operations(fuzzed):
        fuzz(fuzzed, operation, mode)
