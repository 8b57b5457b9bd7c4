"""The demo agent of `lkps dev`: a stock LiveKit Agents worker run the way agent teams run theirs,
`lkps agent run -- python -m lkps.demo_agent start`, with the demo agent's own Entra credentials from the
dev state, through lkps's worker relay to the dev LiveKit server.

It starts once lkps answers (the wrapper registers first, and lkps serves only after this module's caller
hands over to granian) and stops with `lkps dev`. Its output goes to `<state>/demo-agent.log`.
"""

from __future__ import annotations

import importlib.util
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import IO

from gateway.dev_livekit import answers

READY_TIMEOUT_SECONDS = 60.0
STOP_GRACE_SECONDS = 5.0
NO_AGENTS_PACKAGE = (
    "lkps dev: livekit-agents is not installed, so no demo agent runs (session starts answer 404 "
    "agent_not_connected); install it in lkps's virtualenv with: pip install './client[agents]' "
    "(from the repository)"
)


def agents_installed() -> bool:
    return importlib.util.find_spec("livekit.agents") is not None


class DemoAgent:
    """`lkps agent run --dev` of the demo agent, started in the background once lkps is ready."""

    def __init__(self, state_dir: Path, base_url: str) -> None:
        self.command = [
            sys.executable,  # this interpreter's `lkps`, whatever the path of its script
            "-m",
            "gateway.cli",
            "agent",
            "run",
            "--dev",
            "--state-dir",
            str(state_dir),
            "--url",
            base_url,
            "--",
            sys.executable,
            "-m",
            "lkps.demo_agent",
            "start",
        ]
        self.log_path = state_dir / "demo-agent.log"
        self._ready_url = f"{base_url}/api/health/ready"
        self._process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="lkps-dev-demo-agent", daemon=True)

    def start(self) -> DemoAgent:
        self._thread.start()
        return self

    def _run(self) -> None:
        deadline = time.monotonic() + READY_TIMEOUT_SECONDS
        while not self._stopping.is_set() and time.monotonic() < deadline:
            if answers(self._ready_url):
                break
            self._stopping.wait(0.2)
        if self._stopping.is_set():
            return
        self._log = self.log_path.open("ab")
        # The worker gets only what the wrapper gives it: no LKPS_* of this process (LiveKit's secret).
        env = {k: v for k, v in os.environ.items() if not k.startswith(("LKPS_", "LIVEKIT_"))}
        self._process = subprocess.Popen(  # noqa: S603 - lkps's own command
            self.command,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            start_new_session=True,  # its own process group: the worker's job processes go with it
        )

    def stop(self) -> None:
        self._stopping.set()
        self._thread.join(timeout=5)
        if self._process is not None and self._process.poll() is None:
            # SIGTERM drains the worker (the wrapper passes it on), but a draining worker waits for its
            # jobs, and the dev rooms end with `lkps dev` anyway: a short grace, then the whole group goes.
            self._process.send_signal(signal.SIGTERM)
            try:
                self._process.wait(timeout=STOP_GRACE_SECONDS)
            except subprocess.TimeoutExpired:
                os.killpg(self._process.pid, signal.SIGKILL)
                self._process.wait(timeout=5)
        if self._log is not None:
            self._log.close()
