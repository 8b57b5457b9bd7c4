"""The README documents every setting the code reads: the server's in its configuration table, the client's
and the dev commands' in the text."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NAME = re.compile(r"LKPS_[A-Z0-9_]*[A-Z0-9]")
SERVER_SETTINGS = ROOT / "config" / "settings.py"


def read_settings(*sources: Path) -> set[str]:
    """Every `"LKPS_..."` string literal in the product's source (a prefix like `"LKPS_CLIENT_"` is none)."""
    found: set[str] = set()
    for source in sources:
        files = [source] if source.is_file() else sorted(source.rglob("*.py"))
        for path in files:
            found |= set(re.findall(rf'"({NAME.pattern})"', path.read_text()))
    return found


def configuration_table() -> set[str]:
    """The names in the first column of the README's configuration table."""
    readme = (ROOT / "README.md").read_text()
    section = readme.split("\n## Configuration\n", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| `")]
    return {name for row in rows for name in NAME.findall(row.split("|")[1])}


def test_every_server_setting_is_in_the_configuration_table() -> None:
    """Each `LKPS_*` variable config/settings.py reads has a row (name, default, meaning) in the table."""
    server = read_settings(SERVER_SETTINGS)
    assert len(server) > 40  # the scan itself finds the settings
    assert server - configuration_table() == set()


def test_every_other_setting_is_described() -> None:
    """The client's `LKPS_CLIENT_*` variables and `LKPS_DEV_STATE_DIR` are named in the README's text."""
    others = read_settings(ROOT / "client" / "lkps", ROOT / "gateway", ROOT / "authz") - read_settings(
        SERVER_SETTINGS
    )
    assert {"LKPS_CLIENT_URL", "LKPS_DEV_STATE_DIR"} <= others
    readme = (ROOT / "README.md").read_text()
    assert {name for name in others if f"`{name}`" not in readme} == set()
