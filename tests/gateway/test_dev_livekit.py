"""The LiveKit server of `lkps dev`: found (never downloaded), configured for loopback with the state
directory's key and webhooks to lkps, used for real by the sessions dev mode hands out."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests
import yaml

from authz.dev_issuer import DEMO_OPERATOR
from gateway.dev import start_livekit
from gateway.dev_livekit import LIVEKIT_SERVER_VERSION, LiveKitConfig, LiveKitProcess, find_binary
from tests.support.dev_service import (
    DevService,
    clean_environment,
    free_port,
    free_port_run,
    wait_for,
    wait_for_demo_agent,
)
from tests.support.livekit_server import Participant, require_livekit


def executable(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("#!/bin/sh\n")
    path.chmod(0o755)
    return path


def test_the_configured_binary_wins_then_path_then_the_build_cache(tmp_path: Path) -> None:
    """LKPS_LIVEKIT_SERVER_BIN comes first, then `livekit-server` on PATH, then scripts/livekit-server's
    cache of the pinned release; with none of them there is no binary (and nothing is fetched)."""
    configured = executable(tmp_path / "configured" / "server")
    on_path = executable(tmp_path / "bin" / "livekit-server")
    cached = executable(tmp_path / "cache" / "livekit-server" / LIVEKIT_SERVER_VERSION / "server")
    everything = {
        "LKPS_LIVEKIT_SERVER_BIN": str(configured),
        "PATH": str(on_path.parent),
        "LKPS_CACHE_DIR": str(tmp_path / "cache"),
    }
    assert find_binary(everything) == configured
    assert find_binary({**everything, "LKPS_LIVEKIT_SERVER_BIN": ""}) == on_path
    assert find_binary({"PATH": "/nonexistent", "LKPS_CACHE_DIR": str(tmp_path / "cache")}) == cached
    assert find_binary({"PATH": "/nonexistent", "XDG_CACHE_HOME": str(tmp_path / "empty")}) is None


def test_the_launcher_looks_where_the_build_script_builds() -> None:
    """scripts/livekit-server builds the same pinned release that `lkps dev` looks for in the cache."""
    script = (Path(__file__).resolve().parents[2] / "scripts" / "livekit-server").read_text()
    assert f"VERSION={LIVEKIT_SERVER_VERSION} " in script


def test_a_configured_binary_that_cannot_run_is_not_used(tmp_path: Path) -> None:
    """LKPS_LIVEKIT_SERVER_BIN naming a file that is not executable finds nothing, even with one on PATH."""
    (tmp_path / "server").write_text("not a program")
    on_path = executable(tmp_path / "bin" / "livekit-server")
    environ = {"LKPS_LIVEKIT_SERVER_BIN": str(tmp_path / "server"), "PATH": str(on_path.parent)}
    assert find_binary(environ) is None


def test_config_keeps_everything_on_loopback_with_the_given_key_and_webhooks() -> None:
    """The config binds 127.0.0.1, advertises 127.0.0.1 for media (UDP port + 2, TCP fallback port + 1),
    never looks up a public address, knows exactly one key, and signs webhooks to lkps with it."""
    config = LiveKitConfig(
        port=7880, api_key="lkps-dev", api_secret="s" * 44, webhook_urls=("http://127.0.0.1:8000/hook",)
    )
    parsed = yaml.safe_load(config.yaml())
    assert parsed["port"] == 7880
    assert parsed["bind_addresses"] == ["127.0.0.1"]
    assert parsed["rtc"] == {
        "tcp_port": 7881,
        "udp_port": 7882,
        "use_external_ip": False,
        "node_ip": "127.0.0.1",
        "enable_loopback_candidate": True,
    }
    assert parsed["keys"] == {"lkps-dev": "s" * 44}
    assert parsed["webhook"] == {"api_key": "lkps-dev", "urls": ["http://127.0.0.1:8000/hook"]}
    assert config.url == "ws://127.0.0.1:7880"


def test_config_file_is_private_and_the_server_answers(tmp_path: Path) -> None:
    """The launcher writes the config (it holds the secret) readable by its owner only, starts the real
    server, waits until it answers, and stops it."""
    binary = require_livekit()
    config = LiveKitConfig(port=free_port_run(3), api_key="k", api_secret="x" * 40)
    with LiveKitProcess(binary, config, tmp_path) as livekit:
        assert requests.get(config.api_url, timeout=5).status_code == 200
        mode = (tmp_path / f"livekit-{config.port}.yaml").stat().st_mode
        assert stat.S_IMODE(mode) == 0o600
        assert livekit.running()
    assert not livekit.running()


def recorded_events(lkps_dev: DevService, room: str) -> list[str]:
    """The LiveKit events lkps recorded for `room`, through the admin API as the demo operator."""
    state = lkps_dev.state
    token = state.app_token(lkps_dev.authority, state.client(DEMO_OPERATOR))
    response = requests.get(
        f"{lkps_dev.url}/api/admin/sessions/{room}", headers={"Authorization": f"Bearer {token}"}, timeout=10
    )
    assert response.status_code == 200, response.text
    return [event["event"] for event in response.json()["events"]]


@pytest.mark.slow
def test_dev_mode_sessions_join_a_real_room_meet_the_demo_agent_and_end_for_real(
    lkps_dev: DevService, tmp_path: Path
) -> None:
    """A session from `lkps dev` points at its LiveKit server; the token joins, the demo agent (a stock
    LiveKit Agents worker that `lkps dev` runs through lkps's relay) joins too and greets the user, the
    server's webhooks reach lkps, and ending the session disconnects the participant."""
    require_livekit()
    token = lkps_dev.user_token("alice")
    started = requests.post(
        f"{lkps_dev.url}/api/session/start",
        headers={"Authorization": f"Bearer {token}"},
        json={"agent_entra_app_id": lkps_dev.agent_id, "metadata": {"language": "de"}},
        timeout=10,
    ).json()
    assert started["livekit_url"] == lkps_dev.livekit_url
    participant = Participant(started["livekit_url"], started["participant_token"], tmp_path / "p.log")
    try:
        assert participant.expect("connected", "connect_failed")["event"] == "connected"
        agent = participant.expect("participant_connected", timeout=60)
        assert agent["kind"] == "PARTICIPANT_KIND_AGENT"
        assert agent["attributes"]["lk.agent.name"] == lkps_dev.agent_id
        greeting = participant.expect("text", timeout=30)
        assert greeting["sender"] == agent["identity"]
        assert greeting["text"].startswith("Hello Alice, this is the lkps demo agent")
        assert "language=de" in greeting["text"]
        deadline = time.monotonic() + 20
        while "participant_joined" not in recorded_events(lkps_dev, started["room_name"]):
            assert time.monotonic() < deadline, "LiveKit's participant_joined webhook never reached lkps"
            time.sleep(0.2)
        ended = requests.delete(
            f"{lkps_dev.url}/api/session/{started['room_name']}",
            headers={"Authorization": f"Bearer {token}"},
            timeout=10,
        )
        assert ended.status_code == 200, ended.text
        assert participant.expect("disconnected")["reason"] == "ROOM_DELETED"
    finally:
        participant.close()


@pytest.mark.slow
def test_dev_mode_without_a_binary_says_so_in_one_line_and_carries_on(tmp_path: Path) -> None:
    """With no LiveKit server to be found, `lkps dev` prints one line saying what still works and how to
    get one, and serves anyway."""
    port = free_port()
    env = {**clean_environment(), "PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin"}
    env["XDG_CACHE_HOME"] = str(tmp_path / "no-cache")
    command = [
        sys.executable,
        "-m",
        "gateway.cli",
        "dev",
        "--port",
        str(port),
        "--issuer-port",
        str(free_port()),
    ]
    command += ["--livekit-port", str(free_port_run(3))]
    with (tmp_path / "dev.log").open("w") as log:
        process = subprocess.Popen(command, cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            wait_for(f"http://127.0.0.1:{port}/api/health/ready", process)
        finally:
            process.terminate()
            process.wait(timeout=30)
    output = (tmp_path / "dev.log").read_text()
    notices = [line for line in output.splitlines() if "no LiveKit server" in line]
    assert len(notices) == 1, output
    assert "scripts/livekit-server" in notices[0]
    assert "LKPS_LIVEKIT_SERVER_BIN" in notices[0]
    assert "Traceback" not in output
    assert "LiveKit server: not running" in output


def test_a_misconfigured_binary_is_named_in_the_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """LKPS_LIVEKIT_SERVER_BIN naming something that cannot run: dev mode starts no LiveKit and its one line
    names the variable and its value, what still works and how to get a server."""
    config = LiveKitConfig(port=free_port_run(3), api_key="k", api_secret="x" * 40)
    environ = {"LKPS_LIVEKIT_SERVER_BIN": str(tmp_path / "missing"), "PATH": "/nonexistent"}
    assert start_livekit(config, tmp_path, environ) is None
    [line] = capsys.readouterr().err.splitlines()
    assert line.startswith(
        f"lkps dev: LKPS_LIVEKIT_SERVER_BIN={tmp_path / 'missing'} is not an executable file"
    )
    assert "session starts answer 404 agent_not_connected" in line
    assert "scripts/livekit-server" in line


@pytest.mark.slow
def test_ctrl_c_stops_the_demo_agent_before_lkps(tmp_path: Path) -> None:
    """Ctrl-C in the terminal (SIGINT to `lkps dev`'s whole process group): the demo agent's worker drains
    and stops while lkps still relays it, so its log has no failed reconnect; `lkps dev` exits 0."""
    require_livekit()
    port = free_port()
    command = [sys.executable, "-m", "gateway.cli", "dev", "--port", str(port)]
    command += ["--issuer-port", str(free_port()), "--livekit-port", str(free_port_run(3))]
    binary = {k: v for k, v in os.environ.items() if k == "LKPS_LIVEKIT_SERVER_BIN"}
    with (tmp_path / "dev.log").open("w") as log:
        process = subprocess.Popen(
            command,
            cwd=tmp_path,
            env=clean_environment() | binary,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own group, as a foreground job's in a terminal
        )
        try:
            wait_for(f"http://127.0.0.1:{port}/api/health/ready", process)
            wait_for_demo_agent(tmp_path / ".lkps-dev" / "demo-agent.log", process)
            os.killpg(process.pid, signal.SIGINT)
            assert process.wait(timeout=60) == 0
        finally:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=10)
    agent_log = (tmp_path / ".lkps-dev" / "demo-agent.log").read_text()
    assert '"draining worker"' in agent_log
    assert "failed to connect" not in agent_log
    assert '"level": "ERROR"' not in agent_log
