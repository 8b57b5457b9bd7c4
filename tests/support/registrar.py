"""A fake lkps agent registration endpoint (`POST /api/agent/register`), served by `FakeEntraServer`.

Served over the fake tenant's own TLS listener, so a real `lkps agent run` process gets a real Entra token
from the fake issuer and registers with the same base URL; answers are lkps's, failures lkps's error shape.
"""

from __future__ import annotations

import json
import threading
import time
from typing import Any

import jwt

from tests.support.entra import FakeEntraServer, FakeRequest, FakeResponse

WORKER_URL = "https://lkps.example.test/agent-worker"
WORKER_API_KEY = "wk-fake-agent"
WORKER_API_SECRET = "worker-secret-that-must-never-be-printed"


class FakeRegistrar:
    """Registers the caller for `lifetime` seconds; `refuse()` queues lkps errors for the next calls."""

    def __init__(self, server: FakeEntraServer, *, lifetime: int = 3600) -> None:
        self.lifetime = lifetime
        self.bodies: list[dict[str, Any]] = []
        self.registered = threading.Condition()
        self._failures: list[FakeResponse] = []
        self._entra = server.entra
        server.entra.add_route("POST", "/api/agent/register", self.handle, group="register")

    @property
    def registrations(self) -> int:
        with self.registered:
            return len(self.bodies)

    def refuse(self, status: int, code: str, *, times: int = 1, retry_after: int | None = None) -> None:
        headers = {"Retry-After": str(retry_after)} if retry_after is not None else {}
        body = {"error": code, "message": f"refused by the fake ({code}).", "request_id": "req-fake"}
        with self.registered:
            self._failures.extend([FakeResponse.json(status, body, headers)] * times)

    def wait_for(self, registrations: int, timeout: float = 15.0) -> bool:
        with self.registered:
            return self.registered.wait_for(lambda: len(self.bodies) >= registrations, timeout)

    def handle(self, request: FakeRequest) -> FakeResponse:
        token = request.headers.get("authorization", "").removeprefix("Bearer ")
        claims = jwt.decode(token, options={"verify_signature": False})  # issued by the fake tenant itself
        if claims.get("idtyp") != "app":
            return FakeResponse.json(
                401, {"error": "invalid_token", "message": "app-only", "request_id": "r"}
            )
        with self.registered:
            if self._failures:
                return self._failures.pop(0)
            self.bodies.append(json.loads(request.body or b"{}"))
            number = len(self.bodies)
            self.registered.notify_all()
        return FakeResponse.json(
            200,
            {
                "worker_url": WORKER_URL,
                "worker_api_key": WORKER_API_KEY,
                "worker_api_secret": WORKER_API_SECRET,
                "expires_at": int(time.time()) + self.lifetime,
                "agent_name": claims["azp"],
                "registration_id": f"r-{number}",
            },
        )
