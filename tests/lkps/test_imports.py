"""The client and the server reach into each other nowhere: the client imports nothing of the server, and
the server uses only the client modules that are its interfaces to the server."""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SERVER_PACKAGES = ("config", "authz", "gateway")
# What the server may use of the client (documented in client/README.md): the `lkps` command it adds its
# commands to, the commands' shared exit codes and failure, the dev state contract, and MSAL's HTTP.
CLIENT_INTERFACES = frozenset({"lkps.cli", "lkps.commands", "lkps.dev_state", "lkps.msal_transport"})


def imported_modules(path: Path) -> set[str]:
    """Every module `path` imports, at the top or inside a function."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return found


def test_the_client_imports_nothing_of_the_server() -> None:
    """No module of client/lkps imports config, authz or gateway (the light distribution has none of them)."""
    offenders = {
        f"{path.relative_to(REPO)}: {module}"
        for path in (REPO / "client" / "lkps").rglob("*.py")
        for module in imported_modules(path)
        if module.split(".")[0] in SERVER_PACKAGES
    }
    assert offenders == set()


def test_the_server_uses_only_the_clients_interfaces() -> None:
    """config, authz and gateway import from lkps only its interface modules."""
    used = {
        f"{path.relative_to(REPO)}: {module}"
        for package in SERVER_PACKAGES
        for path in (REPO / package).rglob("*.py")
        for module in imported_modules(path)
        if module.split(".")[0] == "lkps" and module not in CLIENT_INTERFACES
    }
    assert used == set()


def test_the_check_sees_an_import_inside_a_function(tmp_path: Path) -> None:
    """A deferred import counts: the client's dev-state import of the issuer once was one."""
    module = tmp_path / "m.py"
    module.write_text("def f():\n    from authz.dev_issuer import DevState\n")
    assert imported_modules(module) == {"authz.dev_issuer"}
