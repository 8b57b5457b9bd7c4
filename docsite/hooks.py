"""MkDocs hooks (mkdocs.yml `hooks:`): a page's `<!-- generated: NAME -->` line becomes the generated text."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from config.reference import settings_markdown
from docsite import openapi

GENERATORS: dict[str, Callable[[], str]] = {
    "settings": settings_markdown,
    "openapi": lambda: openapi.render(openapi.committed()),
}


# A note for readers of the Markdown file in the repository, where the generated text is not.
REPOSITORY_ONLY = re.compile(r"<!-- repository-only -->.*?<!-- /repository-only -->\n?", re.DOTALL)


def expand(markdown: str) -> str:
    markdown = REPOSITORY_ONLY.sub("", markdown)
    for name, generate in GENERATORS.items():
        marker = f"<!-- generated: {name} -->"
        if marker in markdown:
            markdown = markdown.replace(marker, generate())
    return markdown


def on_page_markdown(markdown: str, **_: Any) -> str:
    return expand(markdown)
