"""`lkps dev` as a real process on free ports: what client teams, backend teams and agent teams start from."""

from __future__ import annotations

import base64
import hashlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from authz.dev_issuer import DEMO_AGENT, DevState


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def free_port_run(count: int = 3) -> int:
    """A port P such that P..P+count-1 are free for TCP and UDP on 127.0.0.1 (LiveKit's signal, TCP and
    UDP media ports)."""
    for _ in range(200):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            base = int(probe.getsockname()[1])
        if base + count > 65535:
            continue
        try:
            for port in range(base, base + count):
                for kind in (socket.SOCK_STREAM, socket.SOCK_DGRAM):
                    with socket.socket(socket.AF_INET, kind) as sock:
                        sock.bind(("127.0.0.1", port))
        except OSError:
            continue
        return base
    raise AssertionError("no run of free ports found")


# Only against a hang: a starting process is waited for as long as it lives, however loaded the machine is
# (`lkps dev` can take more than 30 s to start on a loaded machine), and given up on once it exits.
HANG_GUARD_SECONDS = 600.0


def _until(done: Callable[[], bool], process: subprocess.Popen[Any], what: str) -> None:
    """Poll `done` until it holds; fail at once, naming `what`, when `process` exits first."""
    deadline = time.monotonic() + HANG_GUARD_SECONDS
    while not done():
        if process.poll() is not None:
            raise AssertionError(f"{what}: the process exited with {process.returncode} first")
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: still not there after {HANG_GUARD_SECONDS:.0f} s (hung?)")
        time.sleep(0.2)


def _answers_200(url: str) -> bool:
    try:
        return requests.get(url, timeout=5).status_code == 200
    except requests.RequestException:  # refused while starting, or slow to answer on a loaded machine
        return False


def wait_for(url: str, process: subprocess.Popen[Any]) -> None:
    """Until `url` answers 200, while `process` (the server behind it) runs."""
    _until(lambda: _answers_200(url), process, f"{url} did not become ready")


@dataclass(frozen=True)
class DevService:
    directory: Path  # the working directory `lkps dev` runs in; its state is `.lkps-dev/` below it
    url: str
    spa_origin: str  # the browser origin it allows (LKPS_CORS_ALLOWED_ORIGINS)
    livekit_url: str  # where its LiveKit server listens (when a binary was found)
    state: DevState

    @property
    def authority(self) -> str:
        return (self.state.dir / "authority").read_text().strip()

    @property
    def agent_id(self) -> str:
        return self.state.client(DEMO_AGENT).client_id

    def user_token(self, user: str = "alice") -> str:
        """What MSAL would hold in an SPA for `user` (the same token `lkps dev token --user` prints)."""
        return self.state.user_token(self.authority, user)

    def issuer_spki_hash(self) -> str:
        """base64 SHA-256 of the issuer certificate's public key, for Chromium's certificate pinning flag."""
        certificate = x509.load_pem_x509_certificate(self.state.server_cert_path.read_bytes())
        spki = certificate.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        return base64.b64encode(hashlib.sha256(spki).digest()).decode()


def clean_environment() -> dict[str, str]:
    """The test process's environment without any `LKPS_*` variable: `lkps dev` must need none."""
    return {k: v for k, v in os.environ.items() if not k.startswith("LKPS_")}


SERVER_LKPS = (sys.executable, "-m", "gateway.cli")  # the `lkps` where the server is installed


def lkps_command(
    *args: str, cwd: Path, program: tuple[str, ...] = SERVER_LKPS, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run `lkps` (the server's, unless `program` is another one) as a user would, with no `LKPS_*`
    variable unless `env` is given."""
    return subprocess.run(
        [*program, *args],
        cwd=cwd,
        env=clean_environment() if env is None else env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def wait_for_demo_agent(log: Path, process: subprocess.Popen[Any]) -> None:
    """Until the demo agent's worker has registered with LiveKit through lkps's relay (`process` is the
    `lkps dev` that runs it): LiveKit dispatches a room's agent once, when the room starts, and never again
    to a worker that registers later."""
    _until(
        lambda: log.exists() and '"registered worker"' in log.read_text(),
        process,
        f"the demo agent did not register; see {log}",
    )


@contextmanager
def running_dev_service(directory: Path, spa_origin: str, *, demo_agent: bool = True) -> Iterator[DevService]:
    """Start `lkps dev` in `directory` (output in `lkps-dev.log` there), with `--no-demo-agent` unless
    `demo_agent`, and stop it afterwards."""
    port = free_port()
    command = [sys.executable, "-m", "gateway.cli", "dev", "--port", str(port)]
    if not demo_agent:
        command.append("--no-demo-agent")
    livekit_port = free_port_run(3)
    command += ["--issuer-port", str(free_port()), "--livekit-port", str(livekit_port)]
    command += ["--cors-origin", spa_origin]
    # The one variable passed on: the suite's LiveKit server binary, wherever the run found it.
    binary = {k: v for k, v in os.environ.items() if k == "LKPS_LIVEKIT_SERVER_BIN"}
    with (directory / "lkps-dev.log").open("w") as log:
        process = subprocess.Popen(
            command, cwd=directory, env=clean_environment() | binary, stdout=log, stderr=subprocess.STDOUT
        )
        try:
            url = f"http://127.0.0.1:{port}"
            wait_for(f"{url}/api/health/ready", process)
            state = DevState(directory / ".lkps-dev")
            if binary and demo_agent:
                wait_for_demo_agent(state.dir / "demo-agent.log", process)
            yield DevService(directory, url, spa_origin, f"ws://127.0.0.1:{livekit_port}", state)
        finally:
            process.terminate()
            process.wait(timeout=30)
