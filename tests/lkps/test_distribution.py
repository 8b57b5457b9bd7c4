"""lkps-client is a light distribution: its wheel declares Python >= 3.10, installs without any of the
server's dependencies, and its `lkps` command works there; the code type-checks as Python 3.10."""

from __future__ import annotations

import email.parser
import json
import re
import sys
import zipfile
from pathlib import Path

import pytest

from tests.support.client_venv import build_client_wheel, client_only_venv, run, uv

pytestmark = pytest.mark.slow

SERVER_ONLY = ("litestar", "sqlalchemy", "asyncpg", "granian", "alembic", "aiosqlite", "structlog")


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_client_wheel(tmp_path_factory.mktemp("dist"))


def test_wheel_declares_python_3_10_and_only_client_dependencies(wheel: Path) -> None:
    """The metadata says Requires-Python >=3.10, names no server dependency, and keeps livekit-agents optional."""
    with zipfile.ZipFile(wheel) as archive:
        [metadata_name] = [name for name in archive.namelist() if name.endswith(".dist-info/METADATA")]
        metadata = email.parser.Parser().parsestr(archive.read(metadata_name).decode())
        packages = {name.split("/")[0] for name in archive.namelist() if not name.endswith(".dist-info/")}
    assert metadata["Requires-Python"] == ">=3.10"
    requirements = metadata.get_all("Requires-Dist") or []
    names = {re.match(r"[A-Za-z0-9._-]+", requirement).group(0).lower() for requirement in requirements}  # type: ignore[union-attr]
    assert names
    assert not names & set(SERVER_ONLY)
    [agents] = [r for r in requirements if r.startswith("livekit-agents")]
    assert "extra == 'agents'" in agents
    assert packages == {"lkps", metadata_name.split("/")[0]}  # the client package and its metadata only


def test_wheel_installs_alone_and_its_command_runs(wheel: Path, tmp_path: Path) -> None:
    """In a fresh venv the client imports, `lkps --help` lists only client commands, and no server dependency
    was installed."""
    venv = tmp_path / "venv"
    python = client_only_venv(venv, wheel) / "python"
    run(str(python), "-c", "import lkps, lkps.agent_run, lkps.cli, lkps.worker_settings", cwd=tmp_path)
    usage = run(str(venv / "bin" / "lkps"), "--help", cwd=tmp_path).stdout
    assert "{session,agent}" in usage
    assert "serve" not in usage
    assert (
        "lkps agent run [options] -- COMMAND"
        in run(str(venv / "bin" / "lkps"), "agent", "run", "--help").stdout
    )
    listed = json.loads(run(uv(), "pip", "list", "--format", "json", "--python", str(python)).stdout)
    installed = {package["name"].lower() for package in listed}
    assert "lkps-client" in installed
    assert not installed & set(SERVER_ONLY)
    assert "lkps" not in installed  # the server distribution


def test_the_client_type_checks_as_python_3_10() -> None:
    """mypy (strict, as for the whole project) finds nothing newer than Python 3.10 in the lkps package."""
    run(sys.executable, "-m", "mypy", "--python-version", "3.10", "--follow-imports", "silent", "-p", "lkps")
