"""The real LiveKit server (v1.13.5, `LKPS_LIVEKIT_SERVER_BIN` or `scripts/livekit-server`'s cache) on free
loopback ports, for the tests that need LiveKit itself. (A minimal stand-in until the integrator's fixture
of the same name lands; it keeps the same shape: a `livekit_server` fixture yielding URL, key and secret.)"""

from __future__ import annotations

import os
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from bench.harness import livekit_env
from tests.support.dev_service import free_port

DEFAULT_BIN = Path("/root/.cache/lkps/livekit-server/v1.13.5/server")
KEY = "APIrelaytest"
SECRET = "relay-test-secret-that-is-long-enough-for-livekit"


@dataclass(frozen=True)
class LiveKitServer:
    port: int
    key: str = KEY
    secret: str = SECRET

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def lkps_env(self, **extra: str) -> dict[str, str]:
        """The environment of an lkps pointed at this server."""
        return livekit_env(self.ws_url, self.key, self.secret, **extra)


@pytest.fixture(scope="session")
def livekit_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveKitServer]:
    binary = Path(os.environ.get("LKPS_LIVEKIT_SERVER_BIN") or DEFAULT_BIN)
    if not binary.is_file():
        pytest.skip(f"no LiveKit server binary at {binary} (run scripts/livekit-server)")
    work = tmp_path_factory.mktemp("livekit")
    server = LiveKitServer(free_port())
    udp = free_port()
    config = work / "livekit.yaml"
    config.write_text(
        f"port: {server.port}\n"
        "rtc:\n"
        f"  tcp_port: {free_port()}\n"
        f"  udp_port: {udp}\n"
        "  use_external_ip: false\n"
        "  node_ip: 127.0.0.1\n"
        f"keys:\n  {KEY}: {SECRET}\n"
        "logging:\n  level: info\n"
    )
    log = (work / "livekit.log").open("wb")
    process = subprocess.Popen(
        [str(binary), "--config", str(config), "--bind", "127.0.0.1", "--node-ip", "127.0.0.1"],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with socket.create_connection(("127.0.0.1", server.port), timeout=1):
                    break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"LiveKit did not start; see {work / 'livekit.log'}") from None
                time.sleep(0.1)
        yield server
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
        log.close()
