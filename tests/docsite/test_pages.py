"""The README is a short front door whose links resolve; the pages name every setting read outside the
settings module, and describe the product, not how it was built."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import yaml

from config.reference import NAME, SETTINGS_SOURCE, read_names

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
DOCS = ROOT / "docs"
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
HEADING = re.compile(r"^#{1,6} (.+)$", re.MULTILINE)
# Wording about how the product was made, never what it is.
# A repository path a page names in backticks, e.g. `tests/relay/test_relay_protocol.py`.
REPOSITORY_PATH = re.compile(
    r"`((?:bench|authz|client|config|docs|docsite|examples|gateway|helm|scripts|tests)/[^`\s{}<>*]*)`"
)
NOT_PRODUCT = re.compile(
    r"previous session|this session's run|the helper|we found|were measured here", re.IGNORECASE
)


def slug(heading: str) -> str:
    """GitHub's and MkDocs' anchor of a heading: lower case, punctuation dropped, spaces as hyphens."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def broken_links(page: Path) -> list[str]:
    broken = []
    for target in LINK.findall(page.read_text(encoding="utf-8")):
        if re.match(r"^[a-z]+:", target):
            continue  # http(s), mailto: not this repository's to check
        file_part, _, anchor = target.partition("#")
        resolved = (page.parent / file_part).resolve() if file_part else page
        if not resolved.exists():
            broken.append(target)
        elif anchor and resolved.suffix == ".md":
            anchors = {slug(heading) for heading in HEADING.findall(resolved.read_text(encoding="utf-8"))}
            if anchor not in anchors:
                broken.append(target)
    return broken


def pages() -> list[Path]:
    return [README, ROOT / "CHANGELOG.md", *sorted(DOCS.rglob("*.md"))]


def test_readme_is_a_front_door() -> None:
    """The README stays short (at most 200 lines) and points into the documentation."""
    text = README.read_text(encoding="utf-8")
    assert len(text.splitlines()) <= 200
    assert "docs/clients/index.md" in text
    assert "docs/operators/index.md" in text
    assert "docs/agents/index.md" in text


def test_every_relative_link_of_the_readme_and_changelog_resolves() -> None:
    """Each relative link (and its #anchor) of README.md and CHANGELOG.md names something that exists."""
    assert broken_links(README) == []
    assert broken_links(ROOT / "CHANGELOG.md") == []


def test_broken_links_are_found(tmp_path: Path) -> None:
    """The link check reports a missing file and a missing anchor, and accepts good ones."""
    (tmp_path / "a.md").write_text("# Title\n\n## Two words\n")
    page = tmp_path / "b.md"
    page.write_text("[ok](a.md) [ok](a.md#two-words) [x](gone.md) [x](a.md#nothing) [web](https://x.y)\n")
    assert broken_links(page) == ["gone.md", "a.md#nothing"]


def test_every_page_is_in_the_nav() -> None:
    """mkdocs.yml's nav lists every Markdown page of docs/ (the strict build refuses orphans too)."""
    text = (ROOT / "mkdocs.yml").read_text(encoding="utf-8")
    nav = yaml.safe_load(re.sub(r"!!python/\S+", "", text))["nav"]

    def files(entries: list[object]) -> set[str]:
        found: set[str] = set()
        for entry in entries:
            if isinstance(entry, str):
                found.add(entry)
            elif isinstance(entry, dict):
                for value in entry.values():
                    found |= files(value) if isinstance(value, list) else {value}
        return found

    assert {str(page.relative_to(DOCS)) for page in DOCS.rglob("*.md")} == files(nav)


def test_every_setting_read_outside_the_settings_module_is_documented() -> None:
    """The client's LKPS_CLIENT_* variables, LKPS_DEV_STATE_DIR and the like are named on some page."""
    others: set[str] = set()
    for source in ("client/lkps", "gateway", "authz"):
        for path in sorted((ROOT / source).rglob("*.py")):
            others |= read_names(path.read_text(encoding="utf-8"))
    others -= read_names(SETTINGS_SOURCE.read_text(encoding="utf-8"))
    assert {"LKPS_CLIENT_URL", "LKPS_DEV_STATE_DIR"} <= others
    text = "\n".join(page.read_text(encoding="utf-8") for page in DOCS.rglob("*.md"))
    assert {name for name in others if f"`{name}`" not in text} == set()
    assert all(NAME.fullmatch(name) for name in others)


def test_every_repository_path_a_page_names_exists() -> None:
    """A file or directory named in backticks (a test, a bench, a module) is in the repository, or is one of
    its ignored outputs (a screenshot a test writes)."""
    named = {
        match.split("::")[0].rstrip("/")
        for page in pages()
        for match in REPOSITORY_PATH.findall(page.read_text(encoding="utf-8"))
    }
    missing = sorted(path for path in named if not (ROOT / path).exists())
    ignored = subprocess.run(
        ["git", "check-ignore", "--no-index", *missing], cwd=ROOT, capture_output=True, text=True, check=False
    ).stdout.split()
    assert len(named) > 40  # the scan itself finds the paths
    assert sorted(set(missing) - set(ignored)) == []


def test_pages_describe_the_product() -> None:
    """No page says how or by whom the product was built ("previous session", "the helper", ...)."""
    found = {
        str(page.relative_to(ROOT)): match.group(0)
        for page in pages()
        if (match := NOT_PRODUCT.search(page.read_text(encoding="utf-8")))
    }
    assert found == {}
