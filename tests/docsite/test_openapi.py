"""The API reference: the committed OpenAPI document is the one the app serves, and every operation is on
the page."""

from __future__ import annotations

import pytest

from docsite import openapi
from docsite.hooks import expand

pytestmark = pytest.mark.slow


def test_the_committed_document_is_the_served_one() -> None:
    """docs/reference/openapi.json equals the app's document (run `scripts/docs openapi` after a route change)."""
    assert openapi.committed() == openapi.served_document(), "run scripts/docs openapi"


def test_every_operation_and_schema_is_rendered() -> None:
    """The page has a section for each path and method, and for each named schema, linked from its uses."""
    document = openapi.committed()
    page = expand("<!-- generated: openapi -->")
    for path, item in document["paths"].items():
        for method in item.keys() & set(openapi.METHODS):
            assert f"### `{method.upper()} {path}`" in page
    for name in document["components"]["schemas"]:
        assert f"### {name}\n" in page
    assert "[SessionStartRequest](#sessionstartrequest)" in page
