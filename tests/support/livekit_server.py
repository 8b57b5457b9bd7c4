"""A real LiveKit server for the suite, with a real `lkps serve` in front of it.

`LiveKitStack` is what a deployment is: the dev issuer (real RS256 tokens over HTTPS), a migrated
database with the demo agent registered, a LiveKit server started by lkps's own launcher
(`gateway.dev_livekit`) on free ports with the deployment's key, and `lkps serve` pointed at it. LiveKit
sends its webhooks both to lkps and to a recorder, so tests can replay and tamper with the server's own
requests. Participants are the official realtime SDK in processes of their own (`rtc_participant`).

They belong to the `livekit` test group (tests/support/groups.py): without a server binary at
`LKPS_LIVEKIT_SERVER_BIN` they skip with one reason in the summary; with `LKPS_TEST_REQUIRE` naming
`livekit` (CI) the run fails instead.
"""

from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx

from authz.dev_issuer import DEMO_OPERATOR
from bench.harness import Deployment, Server
from gateway.dev_livekit import LiveKitConfig, LiveKitProcess, find_binary
from tests.support.dev_service import free_port_run
from tests.support.groups import skip_unless_available

REPO = Path(__file__).resolve().parents[2]


def require_livekit() -> Path:
    """The server binary of the `livekit` group, or skip the calling test with the group's reason."""
    skip_unless_available("livekit")
    binary = find_binary(os.environ)
    assert binary is not None  # the group is available: LKPS_LIVEKIT_SERVER_BIN is an executable
    return binary


@dataclass(frozen=True)
class RecordedWebhook:
    body: bytes
    authorization: str
    content_type: str

    @property
    def event(self) -> dict[str, Any]:
        return json.loads(self.body)  # type: ignore[no-any-return]


class WebhookRecorder:
    """An HTTP endpoint LiveKit also sends its webhooks to: every request, byte for byte."""

    def __init__(self) -> None:
        self.received: queue.Queue[RecordedWebhook] = queue.Queue()
        recorder = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                recorder.received.put(
                    RecordedWebhook(
                        body, self.headers.get("Authorization", ""), self.headers.get("Content-Type", "")
                    )
                )
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                """Quiet."""

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def wait_for(self, event: str, room: str, timeout: float = 20) -> RecordedWebhook:
        """The next recorded `event` of `room` (others of that room and other rooms are dropped)."""
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            try:
                hook = self.received.get(timeout=left)
            except queue.Empty:
                break
            if hook.event.get("event") == event and hook.event.get("room", {}).get("name") == room:
                return hook
        raise AssertionError(f"LiveKit sent no {event} webhook for {room} within {timeout} s")

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


class Participant:
    """One realtime-SDK participant process; `events` are what it reported, in order."""

    def __init__(self, url: str, token: str, log: Path) -> None:
        self._log = log.open("ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tests.support.rtc_participant", url],
            cwd=REPO,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._log,
        )
        assert self.process.stdin is not None
        self.process.stdin.write(token.encode() + b"\n")
        self.process.stdin.flush()
        self.events: list[dict[str, Any]] = []
        self._returned: set[int] = set()
        self._lines: queue.Queue[dict[str, Any] | None] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self._lines.put(json.loads(line))
        self._lines.put(None)

    def expect(self, *events: str, timeout: float = 20) -> dict[str, Any]:
        """The first reported event whose name is one of `events` that no earlier `expect` returned (events
        of other names stay available: a greeting may arrive before its sender's join event)."""
        deadline = time.monotonic() + timeout
        while True:
            for position, item in enumerate(self.events):
                if position not in self._returned and item["event"] in events:
                    self._returned.add(position)
                    return item
            left = deadline - time.monotonic()
            if left <= 0:
                break
            try:
                item = self._lines.get(timeout=left)
            except queue.Empty:
                break
            if item is None:
                raise AssertionError(f"participant exited before {events}; saw {self.events}")
            self.events.append(item)
        raise AssertionError(f"participant reported none of {events} within {timeout} s; saw {self.events}")

    def command(self, line: str) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(line.encode() + b"\n")
        self.process.stdin.flush()

    def close(self) -> None:
        if self.process.poll() is None:
            try:
                self.command("leave")
                self.process.wait(timeout=10)
            except (BrokenPipeError, subprocess.TimeoutExpired):
                self.process.kill()
                self.process.wait(timeout=10)
        self._log.close()


@dataclass
class LiveKitStack:
    deployment: Deployment
    livekit: LiveKitProcess
    server: Server
    webhooks: WebhookRecorder
    work: Path
    participants: list[Participant] = field(default_factory=list)

    @property
    def url(self) -> str:
        return self.server.url

    @property
    def livekit_url(self) -> str:
        return self.livekit.config.url

    @property
    def api_key(self) -> str:
        return self.livekit.config.api_key

    @property
    def api_secret(self) -> str:
        return self.livekit.config.api_secret

    def http(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=30)

    def start_session(self, token: str, metadata: dict[str, Any] | None = None) -> dict[str, Any]:
        with self.http() as http:
            response = http.post(
                "/api/session/start",
                headers={"Authorization": f"Bearer {token}"},
                json={"agent_entra_app_id": self.deployment.agent, "metadata": metadata or {}},
            )
        assert response.status_code == 200, response.text
        return response.json()  # type: ignore[no-any-return]

    def admin_token(self) -> str:
        state = self.deployment.state
        return state.app_token(self.deployment.issuer.authority, state.client(DEMO_OPERATOR))

    def session_detail(self, room: str) -> dict[str, Any]:
        """The admin API's view of `room`: the session row and the LiveKit events recorded for it."""
        with self.http() as http:
            response = http.get(
                f"/api/admin/sessions/{room}", headers={"Authorization": f"Bearer {self.admin_token()}"}
            )
        assert response.status_code == 200, response.text
        return response.json()  # type: ignore[no-any-return]

    def wait_for_session(
        self, room: str, check: Callable[[dict[str, Any]], bool], timeout: float = 20
    ) -> dict[str, Any]:
        """Poll the admin view of `room` until `check(detail)` holds (webhooks arrive asynchronously)."""
        deadline = time.monotonic() + timeout
        while True:
            detail = self.session_detail(room)
            if check(detail) or time.monotonic() > deadline:
                return detail
            time.sleep(0.2)

    def end_session(self, room: str, token: str) -> httpx.Response:
        with self.http() as http:
            return http.delete(f"/api/session/{room}", headers={"Authorization": f"Bearer {token}"})

    def join(self, token: str, url: str | None = None) -> Participant:
        participant = Participant(
            url or self.livekit_url, token, self.work / f"participant-{len(self.participants)}.log"
        )
        self.participants.append(participant)
        return participant

    def close_participants(self) -> None:
        for participant in self.participants:
            participant.close()
        self.participants.clear()


@contextmanager
def livekit_stack(work: Path, db: str = "sqlite", postgres_url: str = "") -> Iterator[LiveKitStack]:
    """Everything above, started on free ports and stopped afterwards."""
    binary = require_livekit()
    recorder = WebhookRecorder()
    lkps_port = free_port_run(1)
    livekit_port = free_port_run(3)
    with Deployment.create(
        work,
        db,
        postgres_url,
        extra_env={
            "LKPS_LIVEKIT_URL": f"ws://127.0.0.1:{livekit_port}",
            "LKPS_RATE_LIMIT_PER_MINUTE": "0",
            "LKPS_USER_RATE_LIMIT_PER_MINUTE": "0",
        },
    ) as deployment:
        identity = deployment.state.identity
        config = LiveKitConfig(
            port=livekit_port,
            api_key=identity.livekit_api_key,
            api_secret=identity.livekit_api_secret,
            webhook_urls=(f"http://127.0.0.1:{lkps_port}/api/livekit/webhook", recorder.url),
        )
        try:
            with (
                LiveKitProcess(binary, config, work) as livekit,
                deployment.server(port=lkps_port) as server,
            ):
                stack = LiveKitStack(deployment, livekit, server, recorder, work)
                try:
                    yield stack
                finally:
                    stack.close_participants()
        finally:
            recorder.close()
