"""The settings reference: a row for every variable the parser reads, defaults and ranges from its calls."""

from __future__ import annotations

import re

from config.reference import (
    SETTINGS_SOURCE,
    documented,
    read_calls,
    read_names,
    settings_markdown,
)

SOURCE = SETTINGS_SOURCE.read_text(encoding="utf-8")
ADDED = """
class _Parser:
    def parse(self):
        return self.number("LKPS_NEW_LIMIT", 2 * 30, int, 1, MAX_RETENTION_DAYS)

    def mode(self):
        name = "LKPS_NEW_MODE"
        return (self.raw(name) or "fast").lower(), self.words("LKPS_NEW_LIST", ("a", "b"))
"""


def test_every_variable_the_parser_reads_has_a_row() -> None:
    """The names config/settings.py reads and the rows of config/reference.py are the same set."""
    names = read_names(SOURCE)
    assert len(names) > 40  # the scan itself finds the settings
    assert names - set(documented()) == set(), "add a Setting row to config/reference.py"
    assert set(documented()) - names == set(), "config/settings.py no longer reads these"


def test_a_new_setting_is_found_with_its_default_and_range() -> None:
    """A variable added to the parser is read from its call: name, default, range, module constants, a
    name held in a local variable, an `or` default, a list default."""
    assert read_names(ADDED) == {"LKPS_NEW_LIMIT", "LKPS_NEW_MODE", "LKPS_NEW_LIST"}
    calls = read_calls(ADDED)
    assert (calls["LKPS_NEW_LIMIT"].default, calls["LKPS_NEW_LIMIT"].range) == ("60", "1 to 3650")
    assert calls["LKPS_NEW_MODE"].default == "`fast`"  # through a local variable and `or`
    assert calls["LKPS_NEW_LIST"].default == "`a,b`"


def test_defaults_the_code_defines_are_not_restated() -> None:
    """A row never restates a default the parser's own call or `or` expression defines (it would drift)."""
    calls = read_calls(SOURCE)
    restated = {
        name
        for name, row in documented().items()
        if row.default is not None and name in calls and calls[name].default is not None
    }
    assert restated == set()


def test_every_row_has_a_default() -> None:
    """Each setting shows a default: the row's text, or the one read from the parser's call."""
    calls = read_calls(SOURCE)
    missing = {
        name
        for name, row in documented().items()
        if row.default is None and (name not in calls or calls[name].default is None)
    }
    assert missing == set()


def test_the_page_lists_every_setting_once_with_the_code_defaults() -> None:
    """The rendered tables have one row per setting; e.g. the pool size shows the parser's 10, 1 to 200."""
    page = settings_markdown()
    rows = re.findall(r"^\| `(LKPS_[A-Z0-9_]+)`", page, flags=re.MULTILINE)
    assert sorted(rows) == sorted(documented())
    assert "| `LKPS_DATABASE_POOL_SIZE` | 10 | 1 to 200 |" in page
    assert "| `LKPS_LIVEKIT_API_SECRET` (or `LKPS_LIVEKIT_API_SECRET_FILE`) | required |" in page
    assert "| `LKPS_ENTRA_ALLOW_V1` | `false` |" in page
    assert "| `LKPS_DATABASE_URL` (or `LKPS_DATABASE_URL_FILE`) | `sqlite+aiosqlite:///./lkps.db` |" in page
