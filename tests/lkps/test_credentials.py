"""`EntraCredential`: MSAL client credentials (secret or certificate) over real TLS, cached, with typed errors."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import certifi
import jwt
import pytest

from lkps import CredentialError, EntraCredential
from tests.support.clock import FakeClock
from tests.support.entra import API_APP_ID_URI, SERVICE_CLIENT_ID, SERVICE_SECRET, FakeEntraServer, rsa_key
from tests.support.graph import write_certificate

SCOPE = f"{API_APP_ID_URI}/.default"
CERT_CLIENT_ID = "9e8d7c6b-5a49-4382-9170-6f5e4d3c2b1a"


@pytest.fixture
def server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeEntraServer]:
    # With a client credential MSAL reads MSAL_FORCE_REGION and would switch to regional endpoints.
    monkeypatch.delenv("MSAL_FORCE_REGION", raising=False)
    # A CA in the environment that does not trust the fake: the explicit ca_bundle must win over it.
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", certifi.where())
    # The fake judges certificate assertions on its clock; MSAL signs them with the wall clock.
    with FakeEntraServer(tmp_path, clock=FakeClock(time.time())) as running:
        yield running


def credential(server: FakeEntraServer, **overrides: object) -> EntraCredential:
    values: dict[str, object] = {
        "tenant_id": server.entra.tenant_id,
        "client_id": SERVICE_CLIENT_ID,
        "client_secret": SERVICE_SECRET,
        "scope": SCOPE,
        "authority": server.authority,
        "ca_bundle": server.ca_path,
    }
    return EntraCredential(**(values | overrides))  # type: ignore[arg-type]


def test_secret_gets_an_app_token_for_lkps_once_then_from_cache(server: FakeEntraServer) -> None:
    """A client secret yields an app-only token for lkps's audience; the second call needs no request."""
    tokens = credential(server)
    first, second = tokens.token(), tokens.token()
    assert first == second
    claims = jwt.decode(first, options={"verify_signature": False})
    assert (claims["azp"], claims["idtyp"], claims["iss"]) == (
        SERVICE_CLIENT_ID,
        "app",
        server.entra.issuer_v2,
    )
    assert server.entra.count("token") == 1


def test_certificate_gets_a_token(server: FakeEntraServer, tmp_path: Path) -> None:
    """A PEM file with the private key and its certificate authenticates with a signed client assertion."""
    key = rsa_key("lkps-client-certificate")
    server.entra.register_client(CERT_CLIENT_ID, object_id=CERT_CLIENT_ID, certificate_key=key.public_key())
    path = tmp_path / "client.pem"
    write_certificate(path, key, password="pw")
    tokens = credential(
        server, client_id=CERT_CLIENT_ID, client_secret=None, certificate=path, certificate_password="pw"
    )
    assert jwt.decode(tokens.token(), options={"verify_signature": False})["azp"] == CERT_CLIENT_ID


def test_refusals_and_outages_are_credential_errors(server: FakeEntraServer) -> None:
    """Entra's refusal keeps its code (`invalid_client`); an unreachable authority is `entra_unreachable`."""
    with pytest.raises(CredentialError) as refused:
        credential(server, client_secret="wrong").token()
    assert (refused.value.code, refused.value.status) == ("invalid_client", None)
    with pytest.raises(CredentialError) as unreachable:
        credential(server, authority="https://127.0.0.1:9").token()
    assert unreachable.value.code == "entra_unreachable"


def test_exactly_one_secret_or_certificate(server: FakeEntraServer, tmp_path: Path) -> None:
    """Neither or both credential forms is a ValueError at construction, before any network call."""
    with pytest.raises(ValueError, match="exactly one"):
        credential(server, client_secret=None)
    with pytest.raises(ValueError, match="exactly one"):
        credential(server, certificate=tmp_path / "client.pem")
