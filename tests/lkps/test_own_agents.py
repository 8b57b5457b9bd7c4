"""An agent team's own agents in dev mode, as docs/agents/dev-mode.md walks it: `lkps dev --no-demo-agent`,
`lkps dev agent add`, and stock workers started by `lkps agent run --dev --agent` from a virtualenv that holds
only the client built from client/ (no server), with a session started by that client's `lkps session start`."""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from lkps.dev_state import AGENT_NAME_RULE
from tests.support.client_venv import build_client_wheel, client_only_venv
from tests.support.dev_service import (
    DevService,
    clean_environment,
    free_port,
    lkps_command,
    running_dev_service,
)
from tests.support.livekit import verify_python
from tests.support.livekit_server import Participant, require_livekit

pytestmark = pytest.mark.slow

STOCK_WORKER = Path(__file__).resolve().parents[1] / "relay" / "stock_worker.py"


@pytest.fixture(scope="module")
def client_scripts(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The scripts directory of a virtualenv with `lkps-client[agents]` (a wheel built from client/) alone."""
    require_livekit()
    wheel = build_client_wheel(tmp_path_factory.mktemp("dist"))
    return client_only_venv(tmp_path_factory.mktemp("team") / "venv", wheel, "agents")


@pytest.fixture(scope="module")
def dev_without_demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevService]:
    require_livekit()
    with running_dev_service(
        tmp_path_factory.mktemp("lkps-dev"), f"http://127.0.0.1:{free_port()}", demo_agent=False
    ) as service:
        yield service


def fresh_shell(**extra: str) -> dict[str, str]:
    """A shell in which no virtualenv is activated: `python` on PATH is not the team's."""
    return clean_environment() | {"PATH": "/usr/bin:/bin", **extra}


@dataclass
class TeamWorker:
    process: subprocess.Popen[bytes]
    log: Path
    jobs: Path

    def rooms(self) -> list[str]:
        return self.jobs.read_text().split() if self.jobs.exists() else []

    def wait_until_registered(self, timeout: float = 90) -> None:
        deadline = time.monotonic() + timeout
        while '"registered worker"' not in self.log.read_text(errors="replace"):
            assert self.process.poll() is None, self.log.read_text(errors="replace")
            assert time.monotonic() < deadline, f"the worker did not register; see {self.log}"
            time.sleep(0.2)

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, 9)
            self.process.wait(timeout=10)


@pytest.fixture
def team_worker(client_scripts: Path, dev_without_demo: DevService, tmp_path: Path) -> Iterator[object]:
    """Start `<client venv>/lkps agent run --dev --state-dir D --agent NAME -- python stock_worker.py start`
    from a fresh shell outside the repository; every worker started is stopped at the end."""
    started: list[TeamWorker] = []

    def start(name: str) -> TeamWorker:
        log, jobs = tmp_path / f"{name}.log", tmp_path / f"{name}-jobs.txt"
        state = str(dev_without_demo.state.dir)
        command = [
            str(client_scripts / "lkps"),
            "agent",
            "run",
            "--dev",
            "--state-dir",
            state,
            "--agent",
            name,
        ]
        command += ["--", "python", str(STOCK_WORKER), "start"]
        with log.open("wb") as out:
            process = subprocess.Popen(
                command,
                cwd=tmp_path,
                env=fresh_shell(RELAY_TEST_JOBS=str(jobs)),
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        worker = TeamWorker(process, log, jobs)
        started.append(worker)
        return worker

    yield start
    for worker in started:
        worker.stop()


def test_agent_add_is_idempotent_and_lists_every_agent(dev_without_demo: DevService, tmp_path: Path) -> None:
    """Adding a name twice prints the same app id; `agent list` names it and the demo agent; a bad name is
    one line that says what a name may hold."""
    state = ("--state-dir", str(dev_without_demo.state.dir))
    first = lkps_command("dev", "agent", "add", "weather", *state, cwd=tmp_path)
    again = lkps_command("dev", "agent", "add", "weather", *state, cwd=tmp_path)
    assert first.returncode == again.returncode == 0, first.stderr
    assert first.stdout == again.stdout
    assert "lkps agent run --dev" in first.stderr
    listed = dict(
        line.split("\t")
        for line in lkps_command("dev", "agent", "list", *state, cwd=tmp_path).stdout.split("\n")
        if line
    )
    assert listed["weather"] == first.stdout.strip()
    assert listed["demo"] == dev_without_demo.agent_id
    refused = lkps_command("dev", "agent", "add", "Weather_Bot", *state, cwd=tmp_path)
    assert refused.returncode == 64
    assert refused.stderr.splitlines() == [f"lkps: agent name 'Weather_Bot': use {AGENT_NAME_RULE}"]


def test_own_worker_from_the_light_client_gets_its_agents_session_only(
    dev_without_demo: DevService, client_scripts: Path, team_worker: object, tmp_path: Path
) -> None:
    """With the demo agent off, two agents added while `lkps dev` runs each run a stock worker through the
    light client; a session for one, started with the light client, is dispatched to its worker alone."""
    state = str(dev_without_demo.state.dir)
    ids = {}
    for name in ("weather", "billing"):
        added = lkps_command("dev", "agent", "add", name, "--state-dir", state, cwd=tmp_path)
        assert added.returncode == 0, added.stderr
        ids[name] = added.stdout.strip()
    weather, billing = team_worker("weather"), team_worker("billing")  # type: ignore[operator]
    weather.wait_until_registered()
    billing.wait_until_registered()
    assert f"registered agent {ids['weather']}" in weather.log.read_text()

    started = lkps_command(
        *("session", "start", "--dev", "--state-dir", state, "--agent", ids["weather"]),
        cwd=tmp_path,
        program=(str(client_scripts / "lkps"),),  # the light client's own `lkps`
        env=fresh_shell(),
    )
    assert started.returncode == 0, started.stderr
    session = json.loads(started.stdout)
    identity = dev_without_demo.state.identity
    claims = verify_python(
        session["participant_token"], identity.livekit_api_key, identity.livekit_api_secret
    )
    assert claims.room_config is not None
    assert [a.agent_name for a in claims.room_config.agents] == [ids["weather"]]

    user = Participant(session["livekit_url"], session["participant_token"], tmp_path / "user.log")
    try:
        user.expect("connected")
        greeting = user.expect("text", timeout=60)
        assert greeting["text"] == "hello from the agent"
    finally:
        user.close()
    assert weather.rooms() == [session["room_name"]]
    assert billing.rooms() == []
