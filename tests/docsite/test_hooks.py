"""The build-time hook: generated text replaces its marker, notes for repository readers leave the site."""

from __future__ import annotations

from docsite.hooks import expand


def test_markers_become_the_generated_text() -> None:
    """`<!-- generated: settings -->` becomes the settings tables; text around it is kept."""
    page = expand("# Settings\n\n<!-- generated: settings -->\n\nAfter.\n")
    assert page.startswith("# Settings\n\n### Entra ID")
    assert "| `LKPS_ENTRA_TENANT_ID` |" in page
    assert page.endswith("\n\nAfter.\n")
    assert "generated:" not in page


def test_repository_only_notes_are_dropped() -> None:
    """A note between repository-only markers is shown in the repository but not on the site."""
    page = expand("Before.\n<!-- repository-only -->\n> Read the site.\n<!-- /repository-only -->\nAfter.\n")
    assert page == "Before.\nAfter.\n"
