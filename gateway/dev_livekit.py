"""A real LiveKit server beside `lkps dev` (and the suite): loopback only, the dev state's own key,
webhooks to lkps, media on loopback.

The binary is found, never downloaded: `LKPS_LIVEKIT_SERVER_BIN`, then `livekit-server` on PATH, then the
cache that `scripts/livekit-server` builds into with `go install` (the pinned release below).
"""

from __future__ import annotations

import ctypes
import json
import os
import shutil
import signal
import subprocess
import time
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import IO, Self

LIVEKIT_SERVER_VERSION = "v1.13.5"  # keep in step with scripts/livekit-server
READY_TIMEOUT_SECONDS = 30.0
_PR_SET_PDEATHSIG = 1


def answers(url: str) -> bool:
    """Whether a loopback server answers `url` with 200 (a readiness poll of the dev servers)."""
    try:
        with urllib.request.urlopen(url, timeout=1) as response:  # noqa: S310 - lkps dev's own loopback servers
            return bool(response.status == 200)
    except OSError:
        return False


def cached_binary(environ: Mapping[str, str]) -> Path:
    """Where `scripts/livekit-server` leaves its build ($LKPS_CACHE_DIR, else the user's cache dir)."""
    cache = environ.get("LKPS_CACHE_DIR") or str(
        Path(environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "lkps"
    )
    return Path(cache) / "livekit-server" / LIVEKIT_SERVER_VERSION / "server"


def find_binary(environ: Mapping[str, str]) -> Path | None:
    """The LiveKit server to run, or None when there is none (see the module's docstring for the order)."""
    configured = environ.get("LKPS_LIVEKIT_SERVER_BIN")
    if configured:
        return Path(configured) if os.access(configured, os.X_OK) else None
    on_path = shutil.which("livekit-server", path=environ.get("PATH"))
    if on_path:
        return Path(on_path)
    cached = cached_binary(environ)
    return cached if os.access(cached, os.X_OK) else None


@dataclass(frozen=True)
class LiveKitConfig:
    """One single-node LiveKit server on 127.0.0.1: signalling and API on `port`, WebRTC media over one
    UDP port (`port + 2`) with the TCP fallback on `port + 1`."""

    port: int
    api_key: str
    api_secret: str
    webhook_urls: tuple[str, ...] = ()

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def rtc_tcp_port(self) -> int:
        return self.port + 1

    @property
    def rtc_udp_port(self) -> int:
        return self.port + 2

    def yaml(self) -> str:
        """The server's config file. JSON is valid YAML, and json.dumps quotes every value safely."""
        config: dict[str, object] = {
            "port": self.port,
            "bind_addresses": ["127.0.0.1"],
            "rtc": {
                "tcp_port": self.rtc_tcp_port,
                "udp_port": self.rtc_udp_port,
                # Media stays on loopback: advertise 127.0.0.1, never look up a public address.
                "use_external_ip": False,
                "node_ip": "127.0.0.1",
                "enable_loopback_candidate": True,
            },
            "keys": {self.api_key: self.api_secret},
            "logging": {"level": "info", "json": True},
        }
        if self.webhook_urls:
            config["webhook"] = {"api_key": self.api_key, "urls": list(self.webhook_urls)}
        return json.dumps(config, indent=2) + "\n"


class LiveKitNotReady(Exception):
    """The server exited or did not answer in time; the message says which and where its log is."""


def die_with_parent() -> None:
    # A dev server killed with SIGKILL must not leave its LiveKit (or lkps) behind holding the ports (Linux).
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


class LiveKitProcess:
    """A running LiveKit server: config and log in `directory`, stopped on exit of the `with` block."""

    def __init__(self, binary: Path, config: LiveKitConfig, directory: Path) -> None:
        self.binary = binary
        self.config = config
        self.directory = directory
        self.log_path = directory / f"livekit-{config.port}.log"
        self._process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    def start(self) -> Self:
        self.directory.mkdir(parents=True, exist_ok=True)
        config_path = self.directory / f"livekit-{self.config.port}.yaml"
        # The file holds the API secret: readable by its owner only, like the rest of the state directory.
        config_path.touch(mode=0o600, exist_ok=True)
        config_path.chmod(0o600)
        config_path.write_text(self.config.yaml())
        if self._log is not None:  # a restart after kill()
            self._log.close()
        self._log = self.log_path.open("ab")
        self._process = subprocess.Popen(  # noqa: S603 - the binary is the operator's own LiveKit server
            [str(self.binary), "--config", str(config_path)],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            preexec_fn=die_with_parent,  # noqa: PLW1509 - only prctl, safe before exec
        )
        try:
            self.wait_ready()
        except LiveKitNotReady:
            self.stop()
            raise
        return self

    @property
    def pid(self) -> int:
        assert self._process is not None
        return self._process.pid

    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def wait_ready(self, timeout: float = READY_TIMEOUT_SECONDS) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._process is None or self._process.poll() is not None:
                raise LiveKitNotReady(f"the LiveKit server exited at start; its log: {self.log_path}")
            if answers(self.config.api_url):
                return
            time.sleep(0.1)
        raise LiveKitNotReady(
            f"the LiveKit server did not answer within {timeout:.0f} s; its log: {self.log_path}"
        )

    def kill(self) -> None:
        """SIGKILL, as a crash would: no goodbye to connected clients."""
        if self._process is not None and self._process.poll() is None:
            os.killpg(self._process.pid, signal.SIGKILL)
            self._process.wait(timeout=10)

    def stop(self) -> None:
        if self._process is not None and self._process.poll() is None:
            os.killpg(self._process.pid, signal.SIGTERM)
            try:
                self._process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.kill()
        if self._log is not None:
            self._log.close()
            self._log = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.stop()
