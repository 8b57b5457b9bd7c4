"""The Dockerfile agrees with the chart (UID, port, entrypoint) and keeps build tools out of the runtime image."""

from __future__ import annotations

import json
import re

import helm_python as helm
import pytest

from tests.helm.conftest import CHART_DIR

ROOT = CHART_DIR.parents[1]
DOCKERFILE = ROOT / "Dockerfile"
# Package managers, compilers and installers that must not run in (or be copied into) the runtime stage.
BUILD_TOOLS = re.compile(
    r"\b(apt-get|apt|apk|dpkg|gcc|cc|clang|make|build-essential|python3-dev|libpq-dev|pip|uv)\b"
)

Instruction = tuple[str, str]


def parse(text: str) -> list[list[Instruction]]:
    """Dockerfile instructions grouped by build stage (continuations joined, comments dropped)."""
    joined = re.sub(
        r"\\\n", " ", "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#"))
    )
    stages: list[list[Instruction]] = [[]]
    for line in joined.splitlines():
        if not line.strip():
            continue
        keyword, _, argument = line.strip().partition(" ")
        if keyword.upper() == "FROM":
            stages.append([])
        stages[-1].append((keyword.upper(), " ".join(argument.split())))
    return stages


@pytest.fixture(scope="module")
def stages() -> list[list[Instruction]]:
    return parse(DOCKERFILE.read_text(encoding="utf-8"))


def arguments(stage: list[Instruction], keyword: str) -> list[str]:
    return [argument for name, argument in stage if name == keyword]


def test_final_stage_runs_as_the_chart_uid(stages: list[list[Instruction]], chart: helm.Chart) -> None:
    """The runtime stage's numeric USER equals the chart's runAsUser (pod and container)."""
    (user,) = arguments(stages[-1], "USER")
    uid = int(user.split(":")[0])
    assert (
        uid == chart.values["securityContext"]["runAsUser"] == chart.values["podSecurityContext"]["runAsUser"]
    )
    assert uid != 0


def test_entrypoint_is_lkps_serve(stages: list[list[Instruction]]) -> None:
    """The image's entrypoint is the `lkps` console script and its default command is `serve`."""
    assert [json.loads(entry) for entry in arguments(stages[-1], "ENTRYPOINT")] == [["lkps"]]
    assert [json.loads(entry) for entry in arguments(stages[-1], "CMD")] == [["serve"]]


def test_exposed_port_is_the_chart_container_port(stages: list[list[Instruction]], chart: helm.Chart) -> None:
    """EXPOSE in the runtime stage equals the chart's containerPort (and `lkps serve`'s default)."""
    assert arguments(stages[-1], "EXPOSE") == [str(chart.values["containerPort"])]


def test_runtime_stage_has_no_build_tools(stages: list[list[Instruction]]) -> None:
    """The runtime stage is python:3.11-slim, installs no compilers or packages, and has no curl healthcheck."""
    runtime = stages[-1]
    assert arguments(runtime, "FROM") == ["python:3.11-slim AS runtime"]
    for command in arguments(runtime, "RUN"):
        assert not BUILD_TOOLS.search(command), command
    assert arguments(runtime, "HEALTHCHECK") == []
    copies = arguments(runtime, "COPY")
    assert copies == ["--from=builder /app/.venv /app/.venv"]


def test_builder_installs_from_the_lock_file(stages: list[list[Instruction]]) -> None:
    """A builder stage installs with `uv sync --frozen --no-dev` using the uv version scripts/bootstrap pins."""
    (bootstrap_version,) = re.findall(
        r"^UV_VERSION=(\S+)$", (ROOT / "scripts" / "bootstrap").read_text(), re.MULTILINE
    )
    assert arguments(stages[0], "ARG") == [f"UV_VERSION={bootstrap_version}"]
    builder = next(stage for stage in stages if arguments(stage, "FROM") == ["python:3.11-slim AS builder"])
    syncs = [command for command in arguments(builder, "RUN") if "uv sync" in command]
    assert syncs
    assert all("--frozen" in command and "--no-dev" in command for command in syncs)


def test_dockerignore_keeps_local_state_out() -> None:
    """.dockerignore starts from an empty context and admits only the sources the build copies."""
    lines = [
        line
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line and not line.startswith("#")
    ]
    assert lines[0] == "*"
    assert {"!pyproject.toml", "!uv.lock", "!config/", "!authz/", "!gateway/"} <= set(lines)
    assert not any(
        line.startswith("!") and (".venv" in line or ".git" in line or "tests" in line) for line in lines
    )


def test_parser_reads_continuations_and_stages() -> None:
    """The Dockerfile reader joins continued lines and splits stages at FROM."""
    text = "ARG X=1\nFROM a AS b\nRUN one \\\n    two\n# note\nFROM c\nUSER 5\n"
    assert parse(text) == [
        [("ARG", "X=1")],
        [("FROM", "a AS b"), ("RUN", "one two")],
        [("FROM", "c"), ("USER", "5")],
    ]
