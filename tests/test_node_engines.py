"""Every npm package the lock files install supports the Node version the README names, so `npm ci` never
warns EBADENGINE (livekit-client 2.23 pulled in machina 7, which wants Node >= 22.22)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LOCKS = [ROOT / "examples" / "spa" / "package-lock.json", ROOT / "tests" / "node" / "package-lock.json"]

# npm's own range semantics, from the semver copy that ships inside npm.
CHECK = """
const semver = require(require("path").join(process.argv[1], "npm", "node_modules", "semver"));
const [version, ranges] = JSON.parse(require("fs").readFileSync(0, "utf8"));
const refused = Object.entries(ranges).filter(([, range]) => !semver.satisfies(version, range));
process.stdout.write(JSON.stringify(Object.fromEntries(refused)));
"""


def readme_node() -> str:
    """The oldest Node the README asks for, e.g. `Node 20 (20.20 or later)` -> 20.20.0."""
    match = re.search(r"Node (\d+) \((\d+)\.(\d+) or later\)", (ROOT / "README.md").read_text())
    assert match, "the README names the Node version as `Node N (N.M or later)`"
    return f"{match[2]}.{match[3]}.0"


@pytest.mark.parametrize("lock", LOCKS, ids=lambda path: path.parent.name)
def test_every_locked_package_supports_the_readmes_node(lock: Path) -> None:
    """No package in the lock file declares an `engines.node` range that excludes the README's Node."""
    node, npm = shutil.which("node"), shutil.which("npm")
    assert node, "node is required"
    assert npm, "npm is required"
    packages = json.loads(lock.read_text())["packages"]
    ranges = {
        name: entry["engines"]["node"]
        for name, entry in packages.items()
        if "node" in entry.get("engines", {})
    }
    assert ranges  # the lock does declare engines, so the check has something to refuse
    npm_root = subprocess.run(
        [npm, "root", "-g"], capture_output=True, text=True, check=True, timeout=60
    ).stdout
    refused = subprocess.run(
        [node, "-e", CHECK, npm_root.strip()],
        input=json.dumps([readme_node(), ranges]), capture_output=True, text=True, check=True, timeout=60,
    )  # fmt: skip
    assert json.loads(refused.stdout) == {}
