"""`lkps agent run`: a real wrapper process against a fake lkps registration endpoint and a fake Entra tenant.

It registers with the agent's Entra credential, runs the worker with the worker settings (and nothing of
that credential), renews without restarting it, passes signals and the exit status through, and turns
every expected failure into one line and an exit status of its own, never printing a secret.
"""

from __future__ import annotations

import fcntl
import json
import os
import pty
import signal
import subprocess
import sys
import termios
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.clock import FakeClock
from tests.support.dev_service import clean_environment, free_port
from tests.support.entra import API_APP_ID_URI, SERVICE_CLIENT_ID, SERVICE_SECRET, FakeEntraServer
from tests.support.registrar import WORKER_API_KEY, WORKER_API_SECRET, WORKER_URL, FakeRegistrar

pytestmark = pytest.mark.slow

# Records its environment (one line per start), waits for a signal, records every signal delivered to it
# (the wakeup fd gets a byte per delivery, even when Python runs the handler once for two), exits argv[2].
# With argv[3] == "own-group" it leaves the wrapper's process group first.
WORKER = """
import json, os, signal, sys, time
record, status = sys.argv[1], int(sys.argv[2])
if sys.argv[3:] == ["own-group"]:
    os.setpgid(0, 0)
received = []
for signum in (signal.SIGTERM, signal.SIGINT):
    signal.signal(signum, lambda signum, _: received.append(signum))
deliveries, wakeup = os.pipe()
os.set_blocking(wakeup, False)
os.set_blocking(deliveries, False)
signal.set_wakeup_fd(wakeup, warn_on_full_buffer=False)
names = ("LIVEKIT_", "LKPS_")
with open(record + ".env", "a") as out:
    out.write(json.dumps({k: v for k, v in os.environ.items() if k.startswith(names)}) + "\\n")
while not received:
    time.sleep(0.01)
time.sleep(0.5)  # long enough for a second copy of the signal to arrive
with open(record + ".signals", "w") as out:
    json.dump(list(os.read(deliveries, 64)), out)
sys.exit(status)
"""


@pytest.fixture
def entra(tmp_path: Path) -> Iterator[FakeEntraServer]:
    with FakeEntraServer(tmp_path, clock=FakeClock(time.time())) as server:
        yield server


def agent_environment(server: FakeEntraServer, **overrides: str) -> dict[str, str]:
    """Only the agent's Entra credential and where lkps is (the fake serves both on one address)."""
    environment = clean_environment() | {
        "LKPS_CLIENT_URL": server.authority,
        "LKPS_CLIENT_AUTHORITY": server.authority,
        "LKPS_CLIENT_TENANT_ID": server.entra.tenant_id,
        "LKPS_CLIENT_ID": SERVICE_CLIENT_ID,
        "LKPS_CLIENT_SECRET": SERVICE_SECRET,
        "LKPS_CLIENT_SCOPE": f"{API_APP_ID_URI}/.default",
        "LKPS_CLIENT_CA_BUNDLE": str(server.ca_path),
    }
    environment.pop("MSAL_FORCE_REGION", None)  # MSAL would switch to regional endpoints
    return environment | overrides


def wrapper(
    environment: dict[str, str], *command: str, options: tuple[str, ...] = ()
) -> subprocess.Popen[str]:
    """`lkps agent run [options] -- command...` in a session of its own (no controlling terminal)."""
    return subprocess.Popen(
        [sys.executable, "-m", "lkps", "agent", "run", *options, "--", *command],
        env=environment,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )


def worker(record: Path, status: int, *flags: str) -> tuple[str, ...]:
    return (sys.executable, "-c", WORKER, str(record), str(status), *flags)


def wait_for_file(path: Path, process: subprocess.Popen[str], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.02)


def assert_no_secret(output: str) -> None:
    for secret in (WORKER_API_SECRET, SERVICE_SECRET, "eyJ"):  # "eyJ": any JWT, such as the Entra token
        assert secret not in output


def test_worker_runs_with_the_worker_settings_renews_and_stops_on_sigterm(
    entra: FakeEntraServer, tmp_path: Path
) -> None:
    """The worker gets LIVEKIT_* from the registration; renewals (one failing) keep it running; SIGTERM is
    passed on once and its exit status comes back."""
    registrar = FakeRegistrar(entra, lifetime=2)  # renewal due after a second
    record = tmp_path / "worker"
    process = wrapper(
        agent_environment(entra),
        *worker(record, 7),
        options=("--agent-version", "1.4.0", "--no-enforce-client-authz"),
    )
    wait_for_file(tmp_path / "worker.env", process)
    assert registrar.wait_for(2)
    registrar.refuse(503, "database_unavailable")
    assert registrar.wait_for(3)  # the failed renewal was retried
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=20)
    assert process.returncode == 7, stderr
    [environment] = [json.loads(line) for line in (tmp_path / "worker.env").read_text().splitlines()]
    assert environment == {
        "LIVEKIT_URL": WORKER_URL,
        "LIVEKIT_API_KEY": WORKER_API_KEY,
        "LIVEKIT_API_SECRET": WORKER_API_SECRET,
        "LIVEKIT_AGENT_NAME": SERVICE_CLIENT_ID,
        "LIVEKIT_AGENT_NAME_OVERRIDE": SERVICE_CLIENT_ID,
    }
    assert json.loads((tmp_path / "worker.signals").read_text()) == [signal.SIGTERM]
    assert registrar.bodies[0] == {"enforce_client_authz": False, "agent_version": "1.4.0"}
    lines = stderr.splitlines()
    assert lines[0].startswith(f"lkps agent run: registered agent {SERVICE_CLIENT_ID} (registration r-1,")
    [failed] = [line for line in lines if "renewing the registration failed" in line]
    assert "database_unavailable" in failed
    assert "retry 1 in" in failed
    assert any("renewed (registration r-3," in line for line in lines)
    assert_no_secret(stderr)


def test_sigint_sent_to_the_wrapper_reaches_the_worker_once(entra: FakeEntraServer, tmp_path: Path) -> None:
    """Without a terminal in between, a SIGINT to the wrapper is passed on to the worker exactly once."""
    FakeRegistrar(entra)
    process = wrapper(agent_environment(entra), *worker(tmp_path / "worker", 0))
    wait_for_file(tmp_path / "worker.env", process)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=20)
    assert process.returncode == 0, stderr
    assert json.loads((tmp_path / "worker.signals").read_text()) == [signal.SIGINT]


@pytest.mark.parametrize("group", ["same-group", "own-group"])
def test_ctrl_c_in_a_terminal_is_left_to_the_terminal(
    entra: FakeEntraServer, tmp_path: Path, group: str
) -> None:
    """Ctrl-C on the wrapper's terminal reaches a worker in its process group once; the wrapper does not send
    it again (a worker that left the group gets none), while SIGTERM is still passed on."""
    FakeRegistrar(entra)
    controller, terminal = pty.openpty()

    def own_terminal() -> None:  # the wrapper leads a new session whose controlling terminal is the pty
        fcntl.ioctl(0, termios.TIOCSCTTY, 0)

    command = [sys.executable, "-m", "lkps", "agent", "run", "--", *worker(tmp_path / "worker", 0, group)]
    process = subprocess.Popen(
        command,
        env=agent_environment(entra),
        stdin=terminal,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
        preexec_fn=own_terminal,  # noqa: PLW1509 - the only way to give the child a controlling terminal
    )
    os.close(terminal)
    try:
        wait_for_file(tmp_path / "worker.env", process)
        os.write(controller, b"\x03")  # the terminal's interrupt character
        if group == "own-group":
            time.sleep(1)  # a forwarded SIGINT would have arrived by now
            process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=20)
    finally:
        os.close(controller)
    assert process.returncode == 0, stderr
    expected = [signal.SIGINT] if group == "same-group" else [signal.SIGTERM]
    assert json.loads((tmp_path / "worker.signals").read_text()) == expected


def test_the_worker_exit_status_passes_through(entra: FakeEntraServer) -> None:
    """A worker that exits by itself with 3 makes the wrapper exit with 3; killed by a signal N, with 128+N."""
    FakeRegistrar(entra)
    exited = wrapper(agent_environment(entra), sys.executable, "-c", "raise SystemExit(3)")
    killed = wrapper(agent_environment(entra), sys.executable, "-c", "import os; os.kill(os.getpid(), 9)")
    assert (exited.wait(timeout=20), killed.wait(timeout=20)) == (3, 128 + 9)


def test_a_revoked_agent_is_refused_in_one_line_and_its_worker_never_starts(
    entra: FakeEntraServer, tmp_path: Path
) -> None:
    """403 agent_revoked at registration: one line naming the refusal, exit status 77, no worker."""
    FakeRegistrar(entra).refuse(403, "agent_revoked")
    process = wrapper(agent_environment(entra), *worker(tmp_path / "worker", 0))
    stdout, stderr = process.communicate(timeout=20)
    assert process.returncode == 77
    [line] = stderr.splitlines()
    assert line.startswith("lkps agent run: lkps refused the agent (403): agent_revoked: refused by the fake")
    assert "(HTTP 403, request id req-fake)" in line
    assert stdout == ""
    assert not (tmp_path / "worker.env").exists()


def test_a_refused_renewal_stops_the_worker(entra: FakeEntraServer, tmp_path: Path) -> None:
    """Revoked while running: the renewal's 403 stops the worker with SIGTERM and the wrapper exits 77."""
    registrar = FakeRegistrar(entra, lifetime=2)
    process = wrapper(agent_environment(entra), *worker(tmp_path / "worker", 0))
    wait_for_file(tmp_path / "worker.env", process)
    registrar.refuse(403, "agent_revoked")
    _, stderr = process.communicate(timeout=20)
    assert process.returncode == 77, stderr
    assert json.loads((tmp_path / "worker.signals").read_text()) == [signal.SIGTERM]
    assert "agent_revoked" in stderr.splitlines()[-1]
    assert stderr.splitlines()[-1].endswith("; stopping the worker")
    assert_no_secret(stderr)


@pytest.mark.parametrize(
    ("change", "status", "start"),
    [
        (
            {"LKPS_CLIENT_ID": ""},
            2,
            "lkps agent run: the agent is not configured: LKPS_CLIENT_ID is required",
        ),
        (
            {"LKPS_CLIENT_SECRET": "wrong"},
            67,
            "lkps agent run: Entra gave no token for the agent: invalid_client",
        ),
        (
            {"LKPS_CLIENT_URL": f"https://127.0.0.1:{free_port()}"},
            69,
            "lkps agent run: lkps could not be reached",
        ),
    ],
    ids=["not-configured", "bad-secret", "lkps-unreachable"],
)
def test_expected_failures_are_one_line_and_a_distinct_status(
    entra: FakeEntraServer, change: dict[str, str], status: int, start: str
) -> None:
    """No client id, a wrong secret, lkps unreachable: each one line on stderr with its own exit status."""
    FakeRegistrar(entra)
    process = wrapper(agent_environment(entra, **change), sys.executable, "-c", "")
    _, stderr = process.communicate(timeout=30)
    assert process.returncode == status
    [line] = stderr.splitlines()
    assert line.startswith(start)
    assert_no_secret(line.replace("wrong", ""))


def test_a_missing_worker_command_is_one_line(entra: FakeEntraServer, tmp_path: Path) -> None:
    """No command after `--` exits 2; a command that does not exist exits 127; both in one line."""
    FakeRegistrar(entra)
    nothing = wrapper(agent_environment(entra))
    missing = wrapper(agent_environment(entra), str(tmp_path / "no-such-worker"))
    assert nothing.wait(timeout=20) == 2
    assert missing.wait(timeout=20) == 127
    assert nothing.stderr is not None
    assert missing.stderr is not None
    assert nothing.stderr.read().startswith("lkps agent run: no worker command")
    assert missing.stderr.read().splitlines()[-1] == (
        f"lkps agent run: the worker command was not found: {tmp_path / 'no-such-worker'}"
    )


def test_livekit_settings_in_the_environment_are_replaced(entra: FakeEntraServer, tmp_path: Path) -> None:
    """LIVEKIT_* already in the environment (e.g. a real LiveKit secret) are replaced by the worker settings."""
    FakeRegistrar(entra)
    stale = {"LIVEKIT_API_SECRET": "a-real-livekit-secret", "LIVEKIT_URL": "wss://livekit.example.com"}
    process = wrapper(agent_environment(entra, **stale), *worker(tmp_path / "worker", 0))
    wait_for_file(tmp_path / "worker.env", process)
    process.send_signal(signal.SIGTERM)
    process.communicate(timeout=20)
    environment = json.loads((tmp_path / "worker.env").read_text())
    assert (environment["LIVEKIT_URL"], environment["LIVEKIT_API_SECRET"]) == (WORKER_URL, WORKER_API_SECRET)
    assert not any(name.startswith("LKPS_") for name in environment)


def test_python_in_the_worker_command_is_the_virtualenvs(entra: FakeEntraServer, tmp_path: Path) -> None:
    """`lkps agent run -- python ...` from a shell where the virtualenv is not activated runs that
    virtualenv's python (where lkps-client[agents] is), and the first line names it; --deployment reaches
    the worker as LIVEKIT_AGENT_DEPLOYMENT."""
    assert sys.prefix != sys.base_prefix, "the suite runs in the project's virtualenv"
    FakeRegistrar(entra)
    record = tmp_path / "worker"
    script = f"import os, sys; open({str(record)!r}, 'w').write(sys.prefix + ' ' + os.environ['LIVEKIT_AGENT_DEPLOYMENT'])"
    process = wrapper(
        agent_environment(entra, PATH="/usr/bin:/bin"),
        "python",
        "-c",
        script,
        options=("--deployment", "staging"),
    )
    _, stderr = process.communicate(timeout=30)
    assert process.returncode == 0, stderr
    assert record.read_text() == f"{sys.prefix} staging"
    first = stderr.splitlines()[0]
    assert f"starting the worker (deployment staging): {Path(sys.executable).parent / 'python'} -c" in first
