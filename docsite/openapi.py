"""The API reference page, rendered from the OpenAPI document the app serves.

`docs/reference/openapi.json` is that document, committed; `tests/docsite/test_openapi.py` fails when it
differs from what the app serves at `/schema/openapi.json`, and `scripts/docs openapi` rewrites it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
DOCUMENT = ROOT / "docs" / "reference" / "openapi.json"
METHODS = ("get", "post", "put", "patch", "delete")
# The page's sections, in the order most readers look for them; a tag not listed follows these.
TAG_TITLES = {
    "sessions": "Sessions",
    "agents": "Agents",
    "livekit": "LiveKit",
    "admin": "Admin",
    "health": "Health",
}
TAG_ORDER = tuple(TAG_TITLES)
# Placeholders only: the document depends on the routes, never on the deployment's settings.
_GUID = "00000000-0000-4000-8000-000000000000"


def served_document() -> dict[str, Any]:
    """The document `/schema/openapi.json` answers, built without starting the app."""
    from config import Settings  # noqa: PLC0415 - the docs build renders without importing the server
    from gateway.app import create_app  # noqa: PLC0415

    settings = Settings(
        entra_tenant_id=_GUID,
        entra_audiences=(_GUID,),
        livekit_url="wss://livekit.example.com",
        livekit_api_key="documentation",
        livekit_api_secret="documentation-" + "0" * 32,
    )
    return create_app(settings).openapi_schema.to_schema()


def dump(document: dict[str, Any]) -> str:
    return json.dumps(document, indent=2, ensure_ascii=False, sort_keys=True) + "\n"


def _type(schema: dict[str, Any]) -> str:
    """A schema as a short phrase; named schemas link to their section below."""
    if "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[-1]
        return f"[{name}](#{name.lower()})"
    options = schema.get("oneOf", schema.get("anyOf"))
    if options is not None:
        return " or ".join(_type(option) for option in options)
    if "enum" in schema:
        return " \\| ".join(f"`{json.dumps(value)}`" for value in schema["enum"])
    return _plain(schema)


def _plain(schema: dict[str, Any]) -> str:
    kind = schema.get("type", "any")
    if isinstance(kind, list):
        return " or ".join(kind)
    if kind == "array":
        return f"array of {_type(schema.get('items', {}))}"
    if "format" in schema:
        return f"{kind} ({schema['format']})"
    return str(kind)


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def _limits(schema: dict[str, Any]) -> str:
    words = [
        f"{label} {schema[key]}"
        for key, label in (
            ("minLength", "min length"),
            ("maxLength", "max length"),
            ("minimum", "min"),
            ("maximum", "max"),
        )
        if key in schema
    ]
    if "pattern" in schema:
        words.append(f"pattern `{schema['pattern']}`")
    return "; ".join(words)


def _authorization(requirements: list[dict[str, Any]], schemes: dict[str, Any]) -> str:
    """What `Authorization` an operation needs, from its security requirements (or the document's)."""
    names = [name for requirement in requirements for name in requirement]
    if not names:
        return "Authorization: none."
    return "Authorization: " + "; or ".join(
        _cell(schemes.get(name, {}).get("description", name)) for name in names
    )


def _operation(method: str, path: str, operation: dict[str, Any], document: dict[str, Any]) -> list[str]:
    lines = [f"### `{method.upper()} {path}`", "", f"**{operation.get('summary', '')}**", ""]
    if operation.get("description"):
        lines += [operation["description"], ""]
    requirements = operation.get("security", document.get("security", []))
    schemes = document.get("components", {}).get("securitySchemes", {})
    lines += [_authorization(requirements, schemes), ""]
    parameters = operation.get("parameters", [])
    if parameters:
        lines += ["| parameter | in | type | required | meaning |", "|---|---|---|---|---|"]
        lines += [
            f"| `{p['name']}` | {p['in']} | {_type(p.get('schema', {}))} | "
            f"{'yes' if p.get('required') else 'no'} | {_cell(p.get('description', ''))} |"
            for p in parameters
        ]
        lines.append("")
    body = operation.get("requestBody")
    if body:
        kinds = ", ".join(f"`{kind}`" for kind in body.get("content", {}))
        schemas = {_type(content.get("schema", {})) for content in body.get("content", {}).values()}
        lines += [f"Request body ({kinds}): {', '.join(sorted(schemas))}", ""]
    lines += ["| status | meaning | body |", "|---|---|---|"]
    for status, response in operation.get("responses", {}).items():
        contents = response.get("content", {})
        shown = ", ".join(sorted({_type(content.get("schema", {})) for content in contents.values()}))
        lines.append(f"| {status} | {_cell(response.get('description', ''))} | {shown} |")
    return [*lines, ""]


def _schema(name: str, schema: dict[str, Any]) -> list[str]:
    lines = [f"### {name}", ""]
    if schema.get("description"):
        lines += [_cell(schema["description"]), ""]
    properties = schema.get("properties", {})
    if not properties:
        return [*lines, f"Type: {_type(schema)}", ""]
    required = set(schema.get("required", []))
    lines += ["| field | type | required | meaning |", "|---|---|---|---|"]
    for field, spec in properties.items():
        meaning = "; ".join(part for part in (_cell(spec.get("description", "")), _limits(spec)) if part)
        lines.append(f"| `{field}` | {_type(spec)} | {'yes' if field in required else 'no'} | {meaning} |")
    return [*lines, ""]


def render(document: dict[str, Any]) -> str:
    """Every operation, grouped by tag (sessions first), and every named schema."""
    lines: list[str] = []
    by_tag: dict[str, list[str]] = {}
    for path, item in document.get("paths", {}).items():
        for method in METHODS:
            if method in item:
                tag = (item[method].get("tags") or ["other"])[0]
                by_tag.setdefault(tag, []).extend(_operation(method, path, item[method], document))
    ranked = sorted(by_tag, key=lambda tag: TAG_ORDER.index(tag) if tag in TAG_ORDER else len(TAG_ORDER))
    for tag in ranked:
        lines += [f"## {TAG_TITLES.get(tag, tag.capitalize())}", "", *by_tag[tag]]
    lines += ["## Schemas", ""]
    for name, schema in sorted(document.get("components", {}).get("schemas", {}).items()):
        lines += _schema(name, schema)
    return "\n".join(lines)


def committed() -> dict[str, Any]:
    return json.loads(DOCUMENT.read_text(encoding="utf-8"))  # type: ignore[no-any-return]


def main() -> None:
    """`scripts/docs openapi`: write the served document to docs/reference/openapi.json."""
    DOCUMENT.write_text(dump(served_document()), encoding="utf-8")


if __name__ == "__main__":
    main()
