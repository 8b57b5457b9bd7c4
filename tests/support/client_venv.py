"""The light client as a team installs it: a wheel built from client/ in a virtualenv of its own, holding
nothing of the server (dependencies as uv.lock pins them, offline from the cache `uv sync` filled)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def uv() -> str:
    """scripts/bootstrap's uv (or one on PATH): the tool the project builds and installs with."""
    bundled = REPO / ".tools" / "bin" / "uv"
    found = str(bundled) if bundled.exists() else shutil.which("uv")
    if found is None:
        pytest.fail("no uv: run scripts/bootstrap")
    return found


def run(
    *command: str, cwd: Path = REPO, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, f"{command}: {done.stdout}\n{done.stderr}"
    return done


def build_client_wheel(out: Path) -> Path:
    run(uv(), "build", "--package", "lkps-client", "--wheel", "--out-dir", str(out), "--quiet")
    [built] = out.glob("lkps_client-*.whl")
    return built


def client_only_venv(venv: Path, wheel: Path, *extras: str) -> Path:
    """A virtualenv at `venv` with the client wheel (and `extras`) only; returns its scripts directory.
    `uv pip check` proves nothing it requires is missing."""
    environment = os.environ | {"UV_PROJECT_ENVIRONMENT": str(venv)}
    extra_flags = [flag for extra in extras for flag in ("--extra", extra)]
    run(
        uv(), "sync", "--quiet", "--frozen", "--offline", "--package", "lkps-client", *extra_flags, "--no-dev",
        "--no-install-workspace", "--python", sys.executable, env=environment,
    )  # fmt: skip
    python = venv / "bin" / "python"
    run(uv(), "pip", "install", "--quiet", "--offline", "--no-deps", "--python", str(python), str(wheel))
    run(uv(), "pip", "check", "--quiet", "--python", str(python))
    return venv / "bin"
