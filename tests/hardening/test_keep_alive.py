"""Keep-alive under early answers: a request lkps refuses before reading its body (401) leaves the
connection usable, even when the body arrives after the answer was decided. This was the soak's rare
`ReadError`: granian closed such a connection while the client was already sending its next request."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from bench.harness import Deployment, Server

BODY = b'{"agent_entra_app_id": "5b7d9f1a-3c5e-4a7b-9d1f-2a4c6e8b0d2f"}'
HEAD = (
    "POST /api/session/start HTTP/1.1\r\nHost: lkps\r\nAuthorization: Bearer not-a-jwt\r\n"
    f"Content-Type: application/json\r\nContent-Length: {len(BODY)}\r\n\r\n"
).encode()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with (
        Deployment.create(Path(tmp_path_factory.mktemp("keep-alive"))) as deployment,
        deployment.server() as served,
    ):
        yield served


def read_response(sock: socket.socket) -> bytes:
    """One whole response (headers and a Content-Length body); b"" if the server closed the connection."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            return data
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    length = next(
        int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length")
    )
    while len(rest) < length:
        rest += sock.recv(65536)
    return head


@pytest.mark.parametrize("body_delay", [0.0, 0.05])
def test_a_refused_request_with_a_late_body_keeps_the_connection(server: Server, body_delay: float) -> None:
    """Headers, then the body after a pause, then a 401: the next request on the same connection is
    answered too (the server drained the body instead of closing the connection under the client)."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
        for _ in range(3):
            sock.sendall(HEAD)
            time.sleep(body_delay)
            sock.sendall(BODY)
            assert read_response(sock).startswith(b"HTTP/1.1 401")
            time.sleep(0.05)  # the server's close, if any, lands before the next request


def test_a_body_that_never_comes_does_not_hold_the_answer(server: Server) -> None:
    """A client announcing a body it never sends gets its 401 after the bounded drain, not never."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        began = time.monotonic()
        sock.sendall(HEAD)
        assert read_response(sock).startswith(b"HTTP/1.1 401")
        assert time.monotonic() - began < 5
