"""Every expected failure of the `lkps` command, run as a real process: a short `lkps: ...` line that says
what to do, its own exit status, no traceback, and nothing of a running `lkps dev` changed."""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from gateway.dev import dev_environment
from lkps.commands import ExitCode
from tests.support.dev_service import DevService, clean_environment, free_port


def lkps(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run `lkps ARGS` in `cwd` with no `LKPS_*` variable but those in `env`."""
    return subprocess.run(
        [sys.executable, "-m", "gateway.cli", *args],
        cwd=cwd,
        env=clean_environment() | (env or {}),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def assert_short_failure(result: subprocess.CompletedProcess[str], code: ExitCode, *needles: str) -> None:
    assert result.returncode == code, (result.returncode, result.stderr)
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert 1 <= len(lines) <= 2, result.stderr
    assert lines[0].startswith("lkps: "), result.stderr
    for needle in needles:
        assert needle in result.stderr


def _written_while_running(path: Path) -> bool:
    """The running `lkps dev`'s own output: its logs (the demo agent's, LiveKit's) and its SQLite database
    with the WAL and shared-memory files SQLite keeps beside it."""
    return path.suffix == ".log" or path.name.startswith("lkps.db")


def state_files(directory: Path) -> dict[str, tuple[int, bytes]]:
    """Every file of a dev state a second `lkps dev` could change (the lock and its holder, the issuer's
    identity, keys and certificates, the service's addresses, LiveKit's configuration): modification time
    and content."""
    return {
        str(path.relative_to(directory)): (path.stat().st_mtime_ns, path.read_bytes())
        for path in directory.rglob("*")
        if path.is_file() and not _written_while_running(path)
    }


def port_of(url: str) -> int:
    port = urlsplit(url).port
    assert port is not None
    return port


class TestBusyPortsAndTheStateLock:
    def test_a_second_dev_on_the_same_state_refuses_and_changes_nothing(
        self, lkps_dev: DevService, tmp_path: Path
    ) -> None:
        """A second `lkps dev` on a running one's state directory (even on free ports) exits 6 and leaves
        every file of that state as it was (the running one's logs and database aside, which it writes
        itself); the running one still issues tokens that work."""
        before = state_files(lkps_dev.state.dir)
        assert {"lock", "identity.json", "authority", "url"} <= set(before)
        result = lkps(
            "dev", "--port", str(free_port()), "--issuer-port", str(free_port()),
            "--state-dir", str(lkps_dev.state.dir), cwd=tmp_path,
        )  # fmt: skip
        assert_short_failure(result, ExitCode.DEV_STATE, "another `lkps dev`", "--state-dir")
        assert state_files(lkps_dev.state.dir) == before
        token = lkps("dev", "token", "--state-dir", str(lkps_dev.state.dir), cwd=tmp_path)
        assert token.returncode == 0, token.stderr
        assert token.stdout.count(".") == 2

    @pytest.mark.parametrize("which", ["--port", "--issuer-port"])
    def test_a_busy_dev_port_names_the_port_and_its_flag(
        self, lkps_dev: DevService, tmp_path: Path, which: str
    ) -> None:
        """`lkps dev` on a busy lkps or issuer port exits 3 naming the port and the flag; it creates no state."""
        busy = port_of(lkps_dev.url) if which == "--port" else port_of(lkps_dev.authority)
        ports = {"--port": str(free_port()), "--issuer-port": str(free_port())} | {which: str(busy)}
        state = tmp_path / "state"
        result = lkps(
            "dev", *(x for pair in ports.items() for x in pair), "--state-dir", str(state), cwd=tmp_path
        )
        assert_short_failure(result, ExitCode.PORT_BUSY, f"port {busy} ", f"{which} <another port>")
        assert not state.exists()

    def test_serve_on_a_busy_port_is_one_line(self, lkps_dev: DevService, tmp_path: Path) -> None:
        """`lkps serve` on a port in use exits 3 with one line naming it and `--port`, before granian starts."""
        busy = port_of(lkps_dev.url)
        env = dev_environment(lkps_dev.state, lkps_dev.authority)
        result = lkps("serve", "--host", "127.0.0.1", "--port", str(busy), cwd=tmp_path, env=env)
        assert_short_failure(result, ExitCode.PORT_BUSY, f"port {busy} ", "--port <another port>")


class TestDatabaseCommands:
    @pytest.mark.parametrize("command", [["migrate"], ["prune", "--dry-run"]])
    def test_an_unreachable_database_is_one_line(self, tmp_path: Path, command: list[str]) -> None:
        """`lkps migrate` / `prune` against a database nobody answers exits 4 naming it, without its password."""
        url = "postgresql+asyncpg://lkps:hunter2@127.0.0.1:1/lkps"
        result = lkps(*command, cwd=tmp_path, env={"LKPS_DATABASE_URL": url})
        assert_short_failure(result, ExitCode.DATABASE_UNAVAILABLE, "127.0.0.1:1", "LKPS_DATABASE_URL")
        assert "hunter2" not in result.stderr

    @pytest.mark.parametrize(
        "url", ["postgresql+asyncpg://lkps@127.0.0.1:notaport/lkps", "mysql://lkps@127.0.0.1/lkps"]
    )
    def test_a_bad_database_url_is_a_setting_problem(self, tmp_path: Path, url: str) -> None:
        """A database URL that cannot be parsed, or of another kind, exits 2 naming LKPS_DATABASE_URL."""
        result = lkps("migrate", cwd=tmp_path, env={"LKPS_DATABASE_URL": url})
        assert_short_failure(result, ExitCode.SETTINGS, "LKPS_DATABASE_URL")


class TestStateDirectoryFromAnywhere:
    def test_dev_token_without_a_state_says_how_to_find_one(self, tmp_path: Path) -> None:
        """`lkps dev token` where no `lkps dev` ran exits 6 naming the flag and the variable."""
        result = lkps("dev", "token", cwd=tmp_path)
        assert_short_failure(result, ExitCode.DEV_STATE, "--state-dir", "LKPS_DEV_STATE_DIR")

    def test_flag_and_variable_name_the_state_on_every_command(
        self, lkps_dev: DevService, tmp_path: Path
    ) -> None:
        """From another directory, `--state-dir` (on `dev token` and `session start`) and
        LKPS_DEV_STATE_DIR find the running `lkps dev`."""
        state = str(lkps_dev.state.dir)
        for args, env in (
            (["dev", "token", "--state-dir", state, "--admin"], {}),
            (["dev", "--state-dir", state, "token"], {}),
            (["dev", "token", "--app"], {"LKPS_DEV_STATE_DIR": state}),
        ):
            result = lkps(*args, cwd=tmp_path, env=env)
            assert result.returncode == 0, result.stderr
            assert result.stdout.count(".") == 2
        for env, args in (({}, ["--state-dir", state]), ({"LKPS_DEV_STATE_DIR": state}, [])):
            started = lkps("session", "start", *args, "--agent", lkps_dev.agent_id, cwd=tmp_path, env=env)
            assert started.returncode == 0, started.stderr
            assert json.loads(started.stdout)["room_name"]

    def test_the_printed_commands_work_from_any_directory(self, lkps_dev: DevService, tmp_path: Path) -> None:
        """The token and session commands `lkps dev` prints run as printed from another directory."""
        printed = (lkps_dev.directory / "lkps-dev.log").read_text()
        token_command = re.search(r"TOKEN=\$\((.+ dev token .+--user alice)\)", printed)
        session_command = re.search(r"Python client, as the demo backend service: (.+)", printed)
        assert token_command, printed
        assert session_command, printed
        for command in (token_command[1], session_command[1]):
            result = subprocess.run(
                ["bash", "-c", command], cwd=tmp_path, env=clean_environment(),
                capture_output=True, text=True, timeout=60, check=False,
            )  # fmt: skip
            assert result.returncode == 0, (command, result.stderr)
        assert json.loads(result.stdout)["participant_identity"].startswith("app-")


class TestClientCommands:
    def test_a_non_guid_agent_names_the_flag(self, lkps_dev: DevService) -> None:
        """`lkps session start --agent demo` is refused by the command line, naming `--agent`, exit 64."""
        result = lkps("session", "start", "--agent", "demo", cwd=lkps_dev.directory)
        assert result.returncode == ExitCode.USAGE
        assert "argument --agent: 'demo' is not an Entra application id" in result.stderr
        assert "agent_entra_app_id" not in result.stderr
        assert "Traceback" not in result.stderr

    def test_an_unreachable_lkps_is_two_lines(self, lkps_dev: DevService) -> None:
        """A client command whose lkps does not answer exits 5 saying so and pointing at `--url`."""
        url = f"http://127.0.0.1:{free_port()}"
        result = lkps(
            "session", "start", "--agent", lkps_dev.agent_id, "--dev", "--url", url, cwd=lkps_dev.directory
        )
        assert_short_failure(result, ExitCode.UNREACHABLE, url, "--url")

    @pytest.mark.parametrize("url", ["notaurl", "ftp://lkps.example.com", "http://[bad", "http://lkps:port"])
    def test_a_bad_lkps_url_is_a_setting_problem(self, lkps_dev: DevService, url: str) -> None:
        """A `--url` (or LKPS_CLIENT_URL) that is no http(s) URL exits 2 naming both, not "cannot be reached"."""
        result = lkps(
            "session", "start", "--agent", lkps_dev.agent_id, "--dev", "--url", url, cwd=lkps_dev.directory
        )
        assert_short_failure(result, ExitCode.SETTINGS, "LKPS_CLIENT_URL (--url)", repr(url))

    def test_an_unreachable_issuer_is_two_lines(self, lkps_dev: DevService, tmp_path: Path) -> None:
        """A client command whose Entra issuer does not answer exits 5 without a traceback, asking whether
        `lkps dev` runs there."""
        state = tmp_path / "another-dev"
        shutil.copytree(lkps_dev.state.dir, state, ignore=shutil.ignore_patterns("*.db*"))
        (state / "authority").write_text(f"https://127.0.0.1:{free_port()}")
        result = lkps(
            "session", "start", "--agent", lkps_dev.agent_id, "--dev", "--state-dir", str(state), cwd=tmp_path
        )
        assert_short_failure(
            result,
            ExitCode.UNREACHABLE,
            "Entra could not be reached",
            f"is `lkps dev` running with its state in {state}?",
        )

    def test_a_stopped_dev_says_to_start_it(self, lkps_dev: DevService, tmp_path: Path) -> None:
        """The state of a `lkps dev` that has stopped: `session start` and `agent run` say to start it, not
        that Entra gave no token."""
        state = tmp_path / "stopped-dev"
        shutil.copytree(lkps_dev.state.dir, state, ignore=shutil.ignore_patterns("lock", "*.db*"))
        started = lkps(
            "session", "start", "--agent", lkps_dev.agent_id, "--dev", "--state-dir", str(state), cwd=tmp_path
        )
        assert_short_failure(
            started, ExitCode.SETTINGS, f"no `lkps dev` is running with its state in {state}"
        )
        run = lkps(
            "agent",
            "run",
            "--dev",
            "--state-dir",
            str(state),
            "--",
            "python",
            "agent.py",
            "start",
            cwd=tmp_path,
        )
        assert run.returncode == 2
        [line] = run.stderr.splitlines()
        assert line.startswith(
            f"lkps agent run: the agent is not configured: no `lkps dev` is running with its state in {state}"
        )
        assert "start `lkps dev` there" in line

    def test_agent_register_in_dev_keeps_sessions_working(self, lkps_dev: DevService, tmp_path: Path) -> None:
        """`lkps agent register` on a dev state registers without client authorization (no Graph in dev),
        says so, and sessions with the agent still start; `--enforce-client-authz` warns what it breaks."""
        state = ["--state-dir", str(lkps_dev.state.dir)]
        registered = lkps("agent", "register", *state, cwd=tmp_path)
        assert registered.returncode == 0, registered.stderr
        assert "client authorization off" in registered.stderr
        started = lkps("session", "start", *state, "--agent", lkps_dev.agent_id, cwd=tmp_path)
        assert started.returncode == 0, started.stderr
        enforcing = lkps("agent", "register", *state, "--enforce-client-authz", cwd=tmp_path)
        assert enforcing.returncode == 0, enforcing.stderr
        assert "answer 503" in enforcing.stderr
        refused = lkps("session", "start", *state, "--agent", lkps_dev.agent_id, cwd=tmp_path)
        assert refused.returncode == ExitCode.REFUSED
        assert json.loads(refused.stderr[refused.stderr.index("{") :])["status"] == 503
        restored = lkps("agent", "register", *state, cwd=tmp_path)  # the suite's dev service as it was
        assert restored.returncode == 0, restored.stderr

    def test_a_usage_error_has_its_own_status(self, tmp_path: Path) -> None:
        """A wrong command line exits 64 (not the settings' 2) with argparse's usage and one error line."""
        result = lkps("serve", "--port", "eighty", cwd=tmp_path)
        assert result.returncode == ExitCode.USAGE
        assert "argument --port: invalid int value" in result.stderr
        assert "Traceback" not in result.stderr


def test_dev_token_loads_neither_the_server_nor_the_client(lkps_dev: DevService, tmp_path: Path) -> None:
    """`lkps dev token` imports only the issuer's keys: no SQLAlchemy, Alembic, Litestar, granian, httpx
    or MSAL (what made it take 2.5 s)."""
    heavy = ("sqlalchemy", "alembic", "litestar", "granian", "httpx", "msal")
    probe = (
        "import sys\nfrom gateway.cli import main\n"
        f"assert main(['dev', 'token', '--state-dir', {str(lkps_dev.state.dir)!r}]) == 0\n"
        f"print(sorted({{m.split('.')[0] for m in sys.modules}} & {set(heavy)!r}), file=sys.stderr)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], cwd=tmp_path, env=clean_environment(),
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stderr.strip() == "[]"


def test_every_flag_has_help_and_shows_its_default() -> None:
    """Each option of each `lkps` command has help text, and one with a default shows it in `--help`."""
    from gateway.cli import parser  # noqa: PLC0415 - the parser is what is under test

    def walk(parser: argparse.ArgumentParser) -> Iterator[argparse.ArgumentParser]:
        yield parser
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for child in action.choices.values():
                    yield from walk(child)

    parsers = list(walk(parser()))
    assert len(parsers) > 10  # serve, migrate, prune, dev, dev token, session start / end, agent register...
    for command in parsers:
        text = command.format_help()
        for action in command._actions:
            if not action.option_strings or isinstance(action, argparse._HelpAction):
                continue
            assert action.help, f"{command.prog} {action.option_strings[0]} has no help"
            if action.default not in (None, False, argparse.SUPPRESS):
                assert f"(default: {action.default})" in " ".join(text.split()), (command.prog, action.dest)
